import type { Backplane, BackplaneHealth } from '@bcast/core';
import type { ClientKind, RedisClientLike } from './clients.js';
import type { ProbeStats } from './LivenessProbe.js';
import type { DropReason } from './wire.js';

/** Where the backplane reports state changes and dropped messages. */
export interface RedisBackplaneLogger {
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
  info?(...args: unknown[]): void;
}

export interface RedisBackplaneOptions {
  /**
   * Redis URL; the backplane creates (and later quits) its own ioredis clients, configured to fail
   * fast while disconnected. Ignored when `client` is given.
   * @default 'redis://127.0.0.1:6379'
   */
  url?: string;
  /** Extra ioredis options for clients created from `url` (TLS, password...). The fail-fast settings win. */
  redisOptions?: Readonly<Record<string, unknown>>;
  /**
   * Your client (ioredis 5 or node-redis 5), used to publish. It is not quit on `close()`. Give it
   * fail-fast settings (ioredis `enableOfflineQueue: false`; node-redis `disableOfflineQueue: true`);
   * the backplane also refuses to publish whenever it is not ready, so nothing queues up.
   */
  client?: RedisClientLike;
  /** Your subscriber connection. @default a duplicate of the publishing client, owned by the backplane */
  subscriber?: RedisClientLike;
  /** The pub/sub channel every node of one cluster shares. @default 'bcast' */
  channel?: string;
  /** This node's id; must be unique in the cluster. @default crypto.randomUUID() */
  nodeId?: string;
  /** Interval of the liveness probe (a message to itself through Redis). 0 disables it. @default 30_000 */
  probeIntervalMs?: number;
  /** How long the probe waits for its own echo. @default Math.min(5_000, probeIntervalMs) */
  probeTimeoutMs?: number;
  /** First reconnect delay of the connections the backplane creates; doubles up to the cap. @default 100 */
  reconnectBaseDelayMs?: number;
  /** Cap of the reconnect delay. @default 5_000 */
  reconnectMaxDelayMs?: number;
  /** How long `subscribe()` waits for the first SUBSCRIBE before resolving anyway. @default 5_000 */
  readyTimeoutMs?: number;
  /** @default console */
  logger?: RedisBackplaneLogger;
  /** Called whenever `health().status` changes. A throw is logged and ignored. */
  onHealthChange?: (health: BackplaneHealth) => void;
}

/** Counters and states, as in `health().details`. */
export interface RedisBackplaneStats {
  readonly nodeId: string;
  readonly channel: string;
  readonly client: ClientKind | undefined;
  readonly publisher: string;
  readonly subscriber: string;
  readonly subscribed: boolean;
  readonly published: number;
  readonly publishErrors: number;
  /** Every message read from the channel, own echoes and probes included. */
  readonly received: number;
  /** Envelopes from other nodes handed to the broadcaster. */
  readonly delivered: number;
  /** This node's own envelopes, ignored. */
  readonly ownEchoes: number;
  /** Other nodes' liveness probes, ignored. */
  readonly probesFromOthers: number;
  readonly dropped: { readonly total: number } & Readonly<Record<DropReason, number>>;
  readonly probe: ProbeStats;
  /** Successful SUBSCRIBEs (the first one plus every resubscribe after a reconnect). */
  readonly subscriptions: number;
  /** Subscriber reconnects forced by a failed probe or SUBSCRIBE. */
  readonly subscriberRecoveries: number;
  /** Stale subscriber connections of this node found and killed after a reconnect. */
  readonly staleSubscribersKilled: number;
  readonly redisErrors: number;
  readonly lastError: string | undefined;
}

/** The Redis pub/sub implementation of the core `Backplane` port. */
export interface RedisBackplane extends Backplane {
  readonly channel: string;
  health(): BackplaneHealth;
  stats(): RedisBackplaneStats;
  /** Resolves true once subscribed to the channel, false after `timeoutMs` or on close. */
  ready(timeoutMs?: number): Promise<boolean>;
}
