export { BroadcastManager, USER_DEAD_CONNECTION_REASON, type BroadcastResult, type CompatStats } from './BroadcastManager.js';
export { ConnectionManager, type ConnectionInfo, type LegacyId } from './ConnectionManager.js';
export { RoomManager } from './RoomManager.js';
export type { CompatOptions, LegacyReliabilityConfig, SocketIoOptions } from './options.js';
