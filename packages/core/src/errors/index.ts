export { BcastError, isBcastError, toBcastError, type ErrorDetails } from './BcastError.js';
export { ErrorCode, CloseCode, CloseReason } from './codes.js';
export { ErrorClassifier, type ErrorCategory, type ErrorClassifierOptions } from './classify.js';
