// @bcast/core/adapter: what a transport adapter is built from. Applications import '@bcast/core'.
export type { Connection } from './connection/Connection.js';
export { EncodedMessage, encodeMessage } from './connection/EncodedMessage.js';
export { newConnectionId, resolveIdentity, isOriginAllowed, withDeadline, type AuthResult, type Identity, type OriginPolicy } from './adapter/identity.js';
