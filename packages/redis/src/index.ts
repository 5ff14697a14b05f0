export { createRedisBackplane } from './RedisBackplane.js';
export type { RedisBackplane, RedisBackplaneLogger, RedisBackplaneOptions, RedisBackplaneStats } from './types.js';
export type { ProbeStats } from './LivenessProbe.js';
export type { LatencySnapshot } from './LatencyWindow.js';
export type { ClientKind, IoRedisClient, NodeRedisClient, RedisClientLike } from './clients.js';
export { decodeMessage, encodeEnvelope, encodeProbe, type DropReason, type Inbound } from './wire.js';
