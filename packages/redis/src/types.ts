import type { Backplane, BackplaneHealth } from '@bcast/core/backplane';
import type { ClientKind, RedisClientLike } from './clients.js';
import type { LatencySnapshot } from './LatencyWindow.js';
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
   * Your client (ioredis (5, 6) or node-redis (5, 6)), used to publish. It is not quit on `close()`. Give it
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
  /**
   * The backplane's own bound on one PUBLISH: without a reply by then the publish rejects with
   * `BCAST_TIMEOUT` (`details.written: true`: it may still arrive) and the publishing connection,
   * which hangs or lost bytes, is dropped and replaced. A `signal` that aborts does the same sooner.
   * @default 250
   */
  publishTimeoutMs?: number;
  /**
   * "Slow" threshold: when the p99 of the last 100 publish round trips (of the last minute, at least
   * 5 of them) is above it, health is `degraded` with `publish slow (p99 … ms …)`. 0 disables it.
   * @default 100
   */
  slowPublishMs?: number;
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
  /**
   * `down`: not connected, or being replaced; publishes fail fast, not written. `slow`: replies come,
   * late (p99 over `slowPublishMs`). `ok` otherwise.
   */
  readonly publishing: 'ok' | 'slow' | 'down';
  /** Round trips of the last 100 publishes (liveness probes included) of the last minute. */
  readonly publishLatencyMs: LatencySnapshot & { readonly thresholdMs: number };
  readonly published: number;
  /** Publishes that rejected, whatever the reason (not connected, timeout, abort, error reply...). */
  readonly publishErrors: number;
  /** Publishes without a reply within `publishTimeoutMs`. */
  readonly publishTimeouts: number;
  /** Publishes whose `signal` aborted (before they were sent, or while waiting for the reply). */
  readonly publishAborts: number;
  /** Publisher connections dropped and replaced: a publish timeout or abort, or a probe without a PUBLISH reply. */
  readonly publisherResets: number;
  readonly lastPublisherReset: string | undefined;
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
  /** Resolves true once subscribed to the channel and able to publish, false after `timeoutMs` or on close. */
  ready(timeoutMs?: number): Promise<boolean>;
}
