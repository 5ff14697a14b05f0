export type { Connection } from './Connection.js';
export { EncodedMessage, encodeMessage, DEFAULT_MAX_MESSAGE_BYTES } from './EncodedMessage.js';
