import { BcastError, ErrorCode, type BackplaneEnvelope, type BackplaneHealth, type BackplaneHealthStatus } from '@bcast/core';
import { clientKind, ioredisFailFast, linkFor, type ClientKind, type LinkHooks, type OwnedSettings, type RedisLink } from './clients.js';
import { LivenessProbe } from './LivenessProbe.js';
import type { RedisBackplane, RedisBackplaneLogger, RedisBackplaneOptions, RedisBackplaneStats } from './types.js';
import { decodeMessage, encodeEnvelope, ownPrefix, ownProbePrefix, probeToken, type DropReason } from './wire.js';

/**
 * A backplane over Redis pub/sub: every node publishes its broadcasts on one channel and delivers
 * the envelopes of the other nodes to its own connections.
 *
 * @example
 * const broadcaster = new Broadcaster({ backplane: createRedisBackplane({ url: process.env.REDIS_URL }) });
 */
export function createRedisBackplane(options: RedisBackplaneOptions = {}): RedisBackplane {
  return new RedisPubSubBackplane(options);
}

const DROP_LOG_INTERVAL_MS = 10_000;

class RedisPubSubBackplane implements RedisBackplane {
  readonly nodeId: string;
  readonly channel: string;
  readonly #options: RedisBackplaneOptions;
  readonly #logger: RedisBackplaneLogger;
  readonly #probe: LivenessProbe;
  readonly #readyTimeoutMs: number;
  readonly #owned: OwnedSettings;
  readonly #ownPrefix: string;
  readonly #ownProbePrefix: string;
  readonly #handlers = new Set<(envelope: BackplaneEnvelope) => void>();
  readonly #waiters = new Set<(subscribed: boolean) => void>();
  readonly #started: Promise<void>;
  #publisher: RedisLink | undefined;
  #subscriber: RedisLink | undefined;
  #kind: ClientKind | undefined;
  #startError: string | undefined;
  #subscribed = false;
  #attempted = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  #status: BackplaneHealthStatus | undefined;
  /** Has been healthy at least once (so the next healthy state is a recovery). */
  #wasHealthy = false;
  #recoveryTimer: NodeJS.Timeout | undefined;
  #recoveries = 0;
  #lastDropLog = 0;
  #droppedSinceLog = 0;
  readonly #c = {
    published: 0,
    publishErrors: 0,
    received: 0,
    delivered: 0,
    ownEchoes: 0,
    probesFromOthers: 0,
    dropped: { invalidJson: 0, unknownVersion: 0, foreign: 0, malformed: 0 } as Record<DropReason, number>,
    subscriptions: 0,
    subscriberRecoveries: 0,
    staleSubscribersKilled: 0,
    redisErrors: 0,
    lastError: undefined as string | undefined,
  };

  constructor(options: RedisBackplaneOptions) {
    this.#options = options;
    this.#logger = options.logger ?? console;
    this.nodeId = nonEmpty('nodeId', options.nodeId ?? crypto.randomUUID());
    this.channel = nonEmpty('channel', options.channel ?? 'bcast');
    const probeIntervalMs = nonNegative('probeIntervalMs', options.probeIntervalMs ?? 30_000);
    const probeTimeoutMs = nonNegative('probeTimeoutMs', options.probeTimeoutMs ?? Math.min(5_000, probeIntervalMs || 5_000), 1);
    this.#readyTimeoutMs = nonNegative('readyTimeoutMs', options.readyTimeoutMs ?? 5_000);
    const base = nonNegative('reconnectBaseDelayMs', options.reconnectBaseDelayMs ?? 100, 1);
    const cap = nonNegative('reconnectMaxDelayMs', options.reconnectMaxDelayMs ?? 5_000, base);
    if (options.client !== undefined && clientKind(options.client) === undefined) throw invalid('client', 'an ioredis 5 or node-redis 5 client');
    if (options.subscriber !== undefined && clientKind(options.subscriber) === undefined) {
      throw invalid('subscriber', 'an ioredis 5 or node-redis 5 client');
    }
    this.#owned = {
      retryDelayMs: (attempt) => backoff(attempt, base, cap),
      connectionName: `bcast-sub:${this.nodeId}`.replace(/[^\w:.-]/g, '_'),
    };
    this.#ownPrefix = ownPrefix(this.nodeId);
    this.#ownProbePrefix = ownProbePrefix(this.nodeId);
    this.#probe = new LivenessProbe(this.nodeId, probeIntervalMs, probeTimeoutMs, {
      canProbe: () => this.#publisher?.isReady() === true && this.#subscriber?.isReady() === true && this.#subscribed,
      publish: (message) => {
        const publisher = this.#publisher;
        return publisher ? publisher.publish(this.channel, message) : Promise.reject(new Error('not connected'));
      },
      changed: () => this.#changed(),
      succeeded: () => {
        this.#recoveries = 0;
      },
      starved: (reason) => {
        if (this.#subscriber?.isReady()) this.#recoverSubscriber(reason);
      },
    });
    this.#started = this.#start();
  }

  // ---- the Backplane port ---------------------------------------------------------------------

  async publish(envelope: BackplaneEnvelope): Promise<void> {
    const publisher = this.#publisher;
    if (this.#closed) throw new BcastError(ErrorCode.BackplaneUnavailable, 'the Redis backplane is closed');
    if (!publisher || !publisher.isReady()) {
      this.#c.publishErrors += 1;
      throw new BcastError(ErrorCode.BackplaneUnavailable, `Redis is not connected (publisher ${publisher?.state() ?? 'starting'})`);
    }
    try {
      await publisher.publish(this.channel, encodeEnvelope(envelope));
      this.#c.published += 1;
    } catch (error) {
      this.#c.publishErrors += 1;
      throw new BcastError(ErrorCode.BackplaneUnavailable, `Redis PUBLISH failed: ${describe(error)}`, { cause: error });
    }
  }

  async subscribe(handler: (envelope: BackplaneEnvelope) => void): Promise<() => void> {
    if (this.#closed) throw new BcastError(ErrorCode.Shutdown, 'the Redis backplane is closed');
    this.#handlers.add(handler);
    if (!this.#attempted) await this.#wait(this.#readyTimeoutMs, true);
    return () => {
      this.#handlers.delete(handler);
    };
  }

  ready(timeoutMs: number = this.#readyTimeoutMs): Promise<boolean> {
    return this.#wait(timeoutMs, false);
  }

  async close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    this.#probe.stop();
    clearTimeout(this.#recoveryTimer);
    this.#handlers.clear();
    for (const resolve of [...this.#waiters]) resolve(false);
    this.#closing = (async () => {
      await this.#started;
      const subscriber = this.#subscriber;
      const publisher = this.#publisher;
      if (subscriber) {
        if (!subscriber.owned && subscriber.isReady()) await subscriber.unsubscribe(this.channel).catch(() => {});
        await subscriber.release();
      }
      if (publisher) await publisher.release();
      this.#subscribed = false;
    })();
    return this.#closing;
  }

  health(): BackplaneHealth {
    const reasons: string[] = [];
    let status: BackplaneHealthStatus = 'healthy';
    const details = this.stats() as unknown as Readonly<Record<string, unknown>>;
    if (this.#closed) return { status: 'unhealthy', reasons: ['closed'], details };
    if (this.#startError !== undefined) return { status: 'unhealthy', reasons: [`cannot start: ${this.#startError}`], details };
    const lastError = this.#c.lastError === undefined ? '' : `; last error: ${this.#c.lastError}`;
    const pub = this.#publisher;
    const sub = this.#subscriber;
    if (!pub || !pub.isReady()) reasons.push(`Redis publisher not connected (${pub?.state() ?? 'starting'})${lastError}`);
    if (!sub || !sub.isReady()) reasons.push(`Redis subscriber not connected (${sub?.state() ?? 'starting'})${pub?.isReady() ? lastError : ''}`);
    else if (!this.#subscribed) reasons.push(`Redis subscriber connected but not subscribed to "${this.channel}"`);
    if (this.#probe.consecutiveFailures > 0) {
      reasons.push(`liveness probe failed ${this.#probe.consecutiveFailures} time(s) in a row: ${this.#probe.lastFailure ?? 'unknown'}`);
    }
    if (reasons.length > 0) status = 'degraded';
    return { status, reasons, details };
  }

  stats(): RedisBackplaneStats {
    const c = this.#c;
    const d = c.dropped;
    return {
      nodeId: this.nodeId,
      channel: this.channel,
      client: this.#kind,
      publisher: this.#publisher?.state() ?? 'starting',
      subscriber: this.#subscriber?.state() ?? 'starting',
      subscribed: this.#subscribed,
      published: c.published,
      publishErrors: c.publishErrors,
      received: c.received,
      delivered: c.delivered,
      ownEchoes: c.ownEchoes,
      probesFromOthers: c.probesFromOthers,
      dropped: { total: d.invalidJson + d.unknownVersion + d.foreign + d.malformed, ...d },
      probe: this.#probe.stats(),
      subscriptions: c.subscriptions,
      subscriberRecoveries: c.subscriberRecoveries,
      staleSubscribersKilled: c.staleSubscribersKilled,
      redisErrors: c.redisErrors,
      lastError: c.lastError,
    };
  }

  // ---- connections ----------------------------------------------------------------------------

  async #start(): Promise<void> {
    const options = this.#options;
    try {
      let publisher: RedisLink;
      const hooks: LinkHooks = {
        ready: () => this.#changed(),
        down: () => this.#changed(),
        error: (error) => this.#onError(error),
      };
      if (options.client) {
        publisher = linkFor(options.client, false, hooks);
      } else {
        const { Redis } = await import('ioredis').catch((error: unknown) => {
          throw new Error(`no "client" was given and ioredis cannot be loaded (npm install ioredis): ${describe(error)}`);
        });
        if (this.#closed) return;
        const client = new Redis(options.url ?? 'redis://127.0.0.1:6379', {
          commandTimeout: 5_000,
          ...options.redisOptions,
          ...ioredisFailFast(this.#owned),
        });
        publisher = linkFor(client as never, true, hooks);
      }
      this.#publisher = publisher;
      this.#kind = publisher.kind;
      let subscriber: RedisLink | undefined;
      const hooksOfSubscriber = this.#subscriberHooks(() => subscriber);
      subscriber = options.subscriber ? linkFor(options.subscriber, false, hooksOfSubscriber) : publisher.duplicateForSubscriber(hooksOfSubscriber, this.#owned);
      this.#attach(subscriber);
    } catch (error) {
      this.#startError = describe(error);
      this.#log('error', `cannot start the Redis backplane: ${this.#startError}`);
      this.#settleAttempt();
      this.#changed();
    }
  }

  #subscriberHooks(self: () => RedisLink | undefined): LinkHooks {
    return {
      ready: () => {
        const link = self();
        if (link) void this.#onSubscriberReady(link);
      },
      down: () => {
        if (self() !== this.#subscriber) return;
        this.#subscribed = false;
        this.#settleAttempt();
        this.#changed();
      },
      error: (error) => {
        this.#onError(error);
        if (self() === this.#subscriber) this.#settleAttempt();
      },
      message: (raw) => this.#onRaw(raw),
    };
  }

  #attach(subscriber: RedisLink): void {
    this.#subscriber = subscriber;
    this.#subscribed = false;
    if (subscriber.isReady()) void this.#onSubscriberReady(subscriber);
    this.#changed();
  }

  async #onSubscriberReady(link: RedisLink): Promise<void> {
    if (this.#closed || link !== this.#subscriber) return;
    try {
      await link.subscribe(this.channel);
    } catch (error) {
      if (this.#closed || link !== this.#subscriber) return;
      this.#onError(error);
      this.#settleAttempt();
      if (link.isReady()) this.#recoverSubscriber(`SUBSCRIBE failed: ${describe(error)}`);
      return;
    }
    if (this.#closed || link !== this.#subscriber) return;
    this.#subscribed = true;
    this.#c.subscriptions += 1;
    this.#attempted = true;
    for (const resolve of [...this.#waiters]) resolve(true);
    this.#changed();
    if (link.owned && this.#c.subscriptions > 1) void this.#killStaleSubscribers();
    this.#probe.schedule(0);
  }

  /** Forces the subscriber to reconnect and resubscribe, with a backoff when that keeps happening. */
  #recoverSubscriber(reason: string): void {
    if (this.#closed || this.#recoveryTimer !== undefined) return;
    const delay = this.#recoveries === 0 ? 0 : this.#owned.retryDelayMs(this.#recoveries);
    this.#recoveries += 1;
    this.#c.subscriberRecoveries += 1;
    this.#subscribed = false;
    this.#log('warn', `subscriber looks starved (${reason}); reconnecting it${delay > 0 ? ` in ${delay} ms` : ''}`);
    this.#changed();
    this.#recoveryTimer = setTimeout(() => {
      this.#recoveryTimer = undefined;
      const link = this.#subscriber;
      if (this.#closed || !link) return;
      if (!link.isReady()) return; // already reconnecting on its own; it resubscribes when ready
      if (link.reconnect()) return;
      const publisher = this.#publisher;
      if (link.owned && publisher) {
        let fresh: RedisLink | undefined;
        fresh = publisher.duplicateForSubscriber(this.#subscriberHooks(() => fresh), this.#owned);
        this.#attach(fresh);
        void link.release();
        return;
      }
      void link
        .unsubscribe(this.channel)
        .catch(() => {})
        .then(() => this.#onSubscriberReady(link));
    }, delay);
    this.#recoveryTimer.unref();
  }

  /** After a resubscribe: kill older subscriber connections of this node still open on the server. */
  async #killStaleSubscribers(): Promise<void> {
    const publisher = this.#publisher;
    const name = this.#owned.connectionName;
    if (!publisher?.isReady() || name === undefined) return;
    try {
      const list = String(await publisher.command(['CLIENT', 'LIST', 'TYPE', 'pubsub']));
      const ids: number[] = [];
      for (const line of list.split('\n')) {
        const fields = new Map(line.trim().split(' ').map((kv) => kv.split('=', 2) as [string, string]));
        const id = Number(fields.get('id'));
        if (fields.get('name') === name && Number.isSafeInteger(id)) ids.push(id);
      }
      if (ids.length < 2) return;
      const newest = Math.max(...ids);
      for (const id of ids) {
        if (id === newest) continue;
        await publisher.command(['CLIENT', 'KILL', 'ID', String(id)]);
        this.#c.staleSubscribersKilled += 1;
      }
    } catch {
      // best effort: CLIENT may be forbidden by an ACL
    }
  }

  #onError(error: unknown): void {
    this.#c.redisErrors += 1;
    this.#c.lastError = describe(error);
    this.#changed();
  }

  // ---- inbound --------------------------------------------------------------------------------

  #onRaw(raw: string): void {
    if (this.#closed) return;
    this.#c.received += 1;
    if (raw.startsWith(this.#ownProbePrefix)) {
      this.#probe.echo(probeToken(raw));
      return;
    }
    if (raw.startsWith(this.#ownPrefix)) {
      this.#c.ownEchoes += 1;
      return;
    }
    const inbound = decodeMessage(raw);
    if (inbound.kind === 'probe') {
      if (inbound.nodeId === this.nodeId) this.#probe.echo(inbound.token);
      else this.#c.probesFromOthers += 1;
      return;
    }
    if (inbound.kind === 'dropped') {
      this.#drop(inbound.reason, inbound.detail);
      return;
    }
    if (inbound.envelope.nodeId === this.nodeId) {
      this.#c.ownEchoes += 1;
      return;
    }
    this.#c.delivered += 1;
    for (const handler of this.#handlers) {
      try {
        handler(inbound.envelope);
      } catch (error) {
        this.#log('error', `envelope handler threw: ${describe(error)}`);
      }
    }
  }

  #drop(reason: DropReason, detail: string): void {
    this.#c.dropped[reason] += 1;
    this.#droppedSinceLog += 1;
    const now = Date.now();
    if (now - this.#lastDropLog < DROP_LOG_INTERVAL_MS) return;
    this.#log('warn', `dropped ${this.#droppedSinceLog} message(s) on channel "${this.channel}" that are not bcast envelopes v1 (last: ${detail})`);
    this.#lastDropLog = now;
    this.#droppedSinceLog = 0;
  }

  // ---- state ----------------------------------------------------------------------------------

  #wait(timeoutMs: number, attemptOnly: boolean): Promise<boolean> {
    if (this.#subscribed) return Promise.resolve(true);
    if (this.#closed || (attemptOnly && this.#attempted)) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (subscribed: boolean): void => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        resolve(subscribed);
      };
      // `ready()` ignores a failed first attempt and keeps waiting; `subscribe()` does not.
      const waiter = attemptOnly ? done : (subscribed: boolean): void => (subscribed || this.#closed ? done(subscribed) : undefined);
      const timer = setTimeout(() => done(false), timeoutMs);
      timer.unref();
      this.#waiters.add(waiter);
    });
  }

  /** The first connection attempt is over (subscribed or failed): `subscribe()` may return. */
  #settleAttempt(): void {
    if (this.#attempted) return;
    this.#attempted = true;
    for (const resolve of [...this.#waiters]) resolve(this.#subscribed);
  }

  #changed(): void {
    if (this.#closed) return;
    const health = this.health();
    if (health.status === this.#status) return;
    const previous = this.#status;
    this.#status = health.status;
    if (health.status === 'healthy') {
      this.#log('info', this.#wasHealthy ? 'Redis backplane healthy again' : `Redis backplane connected (channel "${this.channel}")`);
      this.#wasHealthy = true;
    } else if (previous !== undefined || this.#attempted) {
      this.#log('warn', `Redis backplane ${health.status}: ${health.reasons.join('; ')}`);
    }
    const listener = this.#options.onHealthChange;
    if (listener) {
      try {
        listener(health);
      } catch (error) {
        this.#log('error', `onHealthChange threw: ${describe(error)}`);
      }
    }
  }

  #log(level: 'warn' | 'error' | 'info', message: string): void {
    try {
      const logger = this.#logger;
      const fn = level === 'info' ? (logger.info ?? logger.warn) : logger[level];
      fn.call(logger, `[bcast/redis] ${message}`);
    } catch {
      // logging never breaks anything
    }
  }
}

/** Exponential backoff with a little upward jitter: attempt 1 waits `base`..1.2×`base`, never more than `cap`. */
export function backoff(attempt: number, baseMs: number, capMs: number): number {
  const exp = baseMs * 2 ** Math.max(0, Math.min(attempt - 1, 30));
  return Math.round(Math.min(capMs, exp * (1 + Math.random() * 0.2)));
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

function invalid(option: string, expected: string, value?: unknown): BcastError {
  return new BcastError(ErrorCode.InvalidOption, `${option} must be ${expected}${value === undefined ? '' : `, got ${String(value)}`}`, {
    details: { option, ...(value === undefined ? {} : { value }) },
  });
}

function nonEmpty(option: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) throw invalid(option, 'a non-empty string', value);
  return value;
}

function nonNegative(option: string, value: unknown, min = 0): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) throw invalid(option, `a number >= ${min}`, value);
  return value;
}
