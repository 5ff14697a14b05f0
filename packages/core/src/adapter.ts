// @bcast/core/adapter: what a transport adapter is built from. Applications import '@bcast/core'.
export type { Connection } from './connection/Connection.js';
export { ConnectionBase } from './connection/ConnectionBase.js';
export type { FanOutObserver } from './connection/FanOutObserver.js';
export { EncodedMessage, encodeMessage } from './connection/EncodedMessage.js';
export type { ConnectionHandle } from './lifecycle/ConnectionLifecycle.js';
export { newConnectionId, resolveIdentity, isOriginAllowed, withDeadline, type AuthResult, type Identity, type OriginPolicy } from './adapter/identity.js';
export { ConnectionCaps, anonymous, createVerifier, type AdapterOptions, type Attachment, type ConnectionCapOptions, type Refusal, type Verdict, type Verifier } from './adapter/verify.js';
export { ConnectionTracker, type SocketControl } from './adapter/drain.js';
export { deliverInbound } from './adapter/inbound.js';
export { recommendedHttpServerOptions, refuseRequest, refuseUpgrade } from './adapter/http.js';
export { MAX_HELD_BYTES, WriteCoalescer, coalescerFor, type CorkableStream } from './adapter/WriteCoalescer.js';
