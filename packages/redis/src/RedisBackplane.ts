import { BcastError, ErrorCode } from '@bcast/core';
import type { BackplaneEnvelope, BackplaneHealth, BackplaneHealthStatus, PublishOptions } from '@bcast/core/backplane';
import { clientKind, ioredisFailFast, linkFor, type ClientKind, type LinkHooks, type OwnedSettings, type RedisLink } from './clients.js';
import { LatencyWindow, type LatencySnapshot } from './LatencyWindow.js';
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
/** Publish round trips kept for `publishLatencyMs`: the last 100, of the last minute. */
const LATENCY_WINDOW = 100;
const LATENCY_MAX_AGE_MS = 60_000;
/** Fewer round trips than this in the window never make "slow". */
const LATENCY_MIN_SAMPLES = 5;

/** What publishing costs right now, as in `health().details.publishing`. */
export type PublishingState = 'ok' | 'slow' | 'down';

class RedisPubSubBackplane implements RedisBackplane {
  readonly nodeId: string;
  readonly channel: string;
  readonly #options: RedisBackplaneOptions;
  readonly #logger: RedisBackplaneLogger;
  readonly #probe: LivenessProbe;
  readonly #readyTimeoutMs: number;
  readonly #publishTimeoutMs: number;
  readonly #slowPublishMs: number;
  readonly #latency = new LatencyWindow(LATENCY_WINDOW, LATENCY_MAX_AGE_MS);
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
  /** Set from a publisher reset until its replacement exists (a backoff when resets repeat). */
  #reset: { readonly reason: string; readonly timer: NodeJS.Timeout | undefined } | undefined;
  /** Publisher resets since the last PUBLISH that got its reply: the backoff of the next one. */
  #resetsInARow = 0;
  /** The publisher the current probe published through: the one to reset if it gets no reply. */
  #probeLink: RedisLink | undefined;
  /** Slowness last reported, so a change of it is reported once. */
  #slow = false;
  #lastDropLog = 0;
  #droppedSinceLog = 0;
  readonly #c = {
    published: 0,
    publishErrors: 0,
    publishTimeouts: 0,
    publishAborts: 0,
    publisherResets: 0,
    lastPublisherReset: undefined as string | undefined,
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
    this.#publishTimeoutMs = nonNegative('publishTimeoutMs', options.publishTimeoutMs ?? 250, 1);
    this.#slowPublishMs = nonNegative('slowPublishMs', options.slowPublishMs ?? 100);
    const base = nonNegative('reconnectBaseDelayMs', options.reconnectBaseDelayMs ?? 100, 1);
    const cap = nonNegative('reconnectMaxDelayMs', options.reconnectMaxDelayMs ?? 5_000, base);
    if (options.client !== undefined && clientKind(options.client) === undefined) throw invalid('client', 'an ioredis (5, 6) or node-redis (5, 6) client');
    if (options.subscriber !== undefined && clientKind(options.subscriber) === undefined) {
      throw invalid('subscriber', 'an ioredis (5, 6) or node-redis (5, 6) client');
    }
    this.#owned = {
      retryDelayMs: (attempt) => backoff(attempt, base, cap),
      connectionName: `bcast-sub:${this.nodeId}`.replace(/[^\w:.-]/g, '_'),
    };
    this.#ownPrefix = ownPrefix(this.nodeId);
    this.#ownProbePrefix = ownProbePrefix(this.nodeId);
    this.#probe = new LivenessProbe(this.nodeId, probeIntervalMs, probeTimeoutMs, {
      canProbe: () => this.#canPublish() && this.#subscriber?.isReady() === true && this.#subscribed,
      publish: (message) => {
        const link = this.#publisher;
        if (!link || !this.#canPublish()) return Promise.reject(new Error('publisher not connected'));
        this.#probeLink = link;
        const sentAt = performance.now();
        return link.publish(this.channel, message).then((receivers) => {
          this.#replied(link, performance.now() - sentAt);
          return receivers;
        });
      },
      changed: () => this.#changed(),
      succeeded: () => {
        this.#recoveries = 0;
      },
      starved: (reason) => {
        if (this.#subscriber?.isReady()) this.#recoverSubscriber(reason);
      },
      publisherFailed: (reason) => {
        const link = this.#probeLink;
        if (link) this.#resetPublisher(link, `liveness probe: ${reason}`);
      },
    });
    this.#started = this.#start();
  }

  // ---- the Backplane port ---------------------------------------------------------------------

  /**
   * PUBLISHes the envelope. Rejects with a BcastError whose `details.written` says whether the
   * envelope may have reached Redis: `false` (not connected, closed, aborted before sending) only
   * when it certainly did not, so that a retry cannot duplicate it. A PUBLISH with no reply within
   * `publishTimeoutMs`, or whose `signal` aborts while it waits, rejects with `BCAST_TIMEOUT` and
   * `written: true` (it may still arrive), and its connection is dropped and replaced.
   */
  async publish(envelope: BackplaneEnvelope, options?: PublishOptions): Promise<void> {
    const signal = options?.signal;
    if (this.#closed) throw notWritten(ErrorCode.BackplaneUnavailable, 'the Redis backplane is closed');
    if (signal?.aborted) {
      this.#c.publishErrors += 1;
      this.#c.publishAborts += 1;
      throw notWritten(ErrorCode.Timeout, 'publish aborted by its caller before it was sent');
    }
    const link = this.#publisher;
    if (!link || !this.#canPublish()) {
      this.#c.publishErrors += 1;
      const message = `Redis is not connected (publisher ${this.#publisherState()})`;
      // Refused while a publisher that timed out is being replaced and its replacement is still on its
      // first attempt (no refusal yet): Redis may be slow rather than down, and the core weighs it
      // like the timeout that caused it. A refused connection (Redis down) counts at once.
      const state = this.#publisherState();
      if ((this.#reset !== undefined || this.#resetsInARow > 0) && (state === 'resetting' || state === 'connecting' || state === 'connect')) {
        throw new BcastError(ErrorCode.BackplaneUnavailable, message, { details: { written: false, afterTimeout: true } });
      }
      throw notWritten(ErrorCode.BackplaneUnavailable, message);
    }
    await this.#send(link, encodeEnvelope(envelope), signal);
    this.#c.published += 1;
  }

  async subscribe(handler: (envelope: BackplaneEnvelope) => void): Promise<() => void> {
    if (this.#closed) throw new BcastError(ErrorCode.Shutdown, 'the Redis backplane is closed');
    this.#handlers.add(handler);
    if (!this.#attempted) await this.#wait(this.#readyTimeoutMs, true);
    return () => {
      this.#handlers.delete(handler);
    };
  }

  /** Resolves true once subscribed and able to publish, false after `timeoutMs` or on close. */
  ready(timeoutMs: number = this.#readyTimeoutMs): Promise<boolean> {
    return this.#wait(timeoutMs, false);
  }

  async close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    this.#probe.stop();
    clearTimeout(this.#recoveryTimer);
    clearTimeout(this.#reset?.timer);
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
    const stats = this.stats();
    const details = stats as unknown as Readonly<Record<string, unknown>>;
    if (this.#closed) return { status: 'unhealthy', reasons: ['closed'], details };
    if (this.#startError !== undefined) return { status: 'unhealthy', reasons: [`cannot start: ${this.#startError}`], details };
    const lastError = this.#c.lastError === undefined ? '' : `; last error: ${this.#c.lastError}`;
    const sub = this.#subscriber;
    const canPublish = this.#canPublish();
    if (!canPublish) {
      const reset = this.#resetsInARow > 0 ? ` after a reset: ${this.#c.lastPublisherReset ?? 'unknown'}` : '';
      reasons.push(`Redis publisher not connected (${this.#publisherState()})${reset}${lastError}`);
    }
    if (!sub || !sub.isReady()) reasons.push(`Redis subscriber not connected (${sub?.state() ?? 'starting'})${canPublish ? lastError : ''}`);
    else if (!this.#subscribed) reasons.push(`Redis subscriber connected but not subscribed to "${this.channel}"`);
    if (this.#probe.consecutiveFailures > 0) {
      reasons.push(`liveness probe failed ${this.#probe.consecutiveFailures} time(s) in a row: ${this.#probe.lastFailure ?? 'unknown'}`);
    }
    if (stats.publishing === 'slow') {
      const { p99, samples } = stats.publishLatencyMs;
      reasons.push(`publish slow (p99 ${p99} ms over the last ${samples} publishes; threshold ${this.#slowPublishMs} ms)`);
    }
    if (reasons.length > 0) status = 'degraded';
    return { status, reasons, details };
  }

  stats(): RedisBackplaneStats {
    const c = this.#c;
    const latency = this.#latency.snapshot();
    const d = c.dropped;
    return {
      nodeId: this.nodeId,
      channel: this.channel,
      client: this.#kind,
      publisher: this.#publisherState(),
      subscriber: this.#subscriber?.state() ?? 'starting',
      subscribed: this.#subscribed,
      publishing: this.#publishing(latency),
      publishLatencyMs: { ...latency, thresholdMs: this.#slowPublishMs },
      published: c.published,
      publishErrors: c.publishErrors,
      publishTimeouts: c.publishTimeouts,
      publishAborts: c.publishAborts,
      publisherResets: c.publisherResets,
      lastPublisherReset: c.lastPublisherReset,
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
      let publisher: RedisLink | undefined;
      const hooks = this.#publisherHooks(() => publisher);
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

  #publisherHooks(self: () => RedisLink | undefined): LinkHooks {
    return {
      ready: () => {
        if (self() !== this.#publisher) return;
        this.#changed();
        // A fresh connection after a reset: check the whole path at once rather than at the next interval.
        if (this.#c.publisherResets > 0) this.#probe.schedule(0);
      },
      down: () => {
        if (self() === this.#publisher) this.#changed();
      },
      error: (error) => {
        if (self() === this.#publisher) this.#onError(error);
      },
    };
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

  // ---- publishing -----------------------------------------------------------------------------

  /** The publisher is connected, ready, and not being replaced: a PUBLISH would be written now. */
  #canPublish(): boolean {
    return this.#reset === undefined && this.#publisher?.isReady() === true;
  }

  #publisherState(): string {
    if (this.#reset !== undefined) return 'resetting';
    return this.#publisher?.state() ?? 'starting';
  }

  /** PUBLISH on `link`, bounded by `publishTimeoutMs` and by `signal`. Settles once; never leaves a rejection unhandled. */
  #send(link: RedisLink, message: string, signal: AbortSignal | undefined): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const sentAt = performance.now();
      let settled = false;
      const finish = (): void => {
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const giveUp = (error: BcastError, why: string): void => {
        if (settled) return;
        finish();
        this.#c.publishErrors += 1;
        reject(error);
        this.#resetPublisher(link, why);
      };
      const onAbort = (): void => {
        if (settled) return;
        this.#c.publishAborts += 1;
        giveUp(written(ErrorCode.Timeout, 'publish aborted by its caller while waiting for the reply from Redis; the envelope may still arrive'), 'a publish was aborted while waiting for its reply');
      };
      const ms = this.#publishTimeoutMs;
      const timer = setTimeout(() => {
        if (settled) return;
        this.#c.publishTimeouts += 1;
        giveUp(written(ErrorCode.Timeout, `no reply to PUBLISH within ${ms} ms; the envelope may still arrive`), `no reply to a PUBLISH within ${ms} ms`);
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
      let reply: Promise<number>;
      try {
        reply = link.publish(this.channel, message);
      } catch (error) {
        reply = Promise.reject(error);
      }
      reply.then(
        (receivers) => {
          if (settled) return; // late: already reported as a timeout
          finish();
          this.#replied(link, performance.now() - sentAt);
          resolve(receivers);
        },
        (error: unknown) => {
          if (settled) return;
          finish();
          this.#c.publishErrors += 1;
          const text = `Redis PUBLISH failed: ${describe(error)}`;
          reject(new BcastError(ErrorCode.BackplaneUnavailable, text, { cause: error, details: { written: !link.notWritten(error) } }));
        },
      );
    });
  }

  /** A PUBLISH on `link` got its reply after `ms`. */
  #replied(link: RedisLink, ms: number): void {
    if (link === this.#publisher) this.#resetsInARow = 0;
    this.#latency.add(ms);
    if (this.#slowPublishMs === 0) return;
    // Only a slow sample can make "slow", and only a fast one undo it: look at the p99 when it may change.
    if (ms <= this.#slowPublishMs && !this.#slow && this.#latency.added % 8 !== 0) return;
    const slow = this.#publishing(this.#latency.snapshot()) === 'slow';
    if (slow === this.#slow) return;
    this.#slow = slow;
    this.#changed();
  }

  #publishing(latency: LatencySnapshot): PublishingState {
    if (this.#closed || !this.#canPublish()) return 'down';
    const slow = this.#slowPublishMs > 0 && latency.samples >= LATENCY_MIN_SAMPLES && (latency.p99 ?? 0) > this.#slowPublishMs;
    return slow ? 'slow' : 'ok';
  }

  /**
   * Drops a publisher connection that hangs or lost bytes (a PUBLISH without a reply) and publishes
   * through a new one: at once the first time, after a backoff when resets keep coming without a
   * reply in between. Meanwhile publishes fail fast, not written. A connection the backplane owns is
   * closed; one the user supplied is left open (it is theirs) and no longer used.
   */
  #resetPublisher(link: RedisLink, reason: string): void {
    if (this.#closed || link !== this.#publisher || this.#reset !== undefined) return;
    this.#c.publisherResets += 1;
    this.#c.lastPublisherReset = reason;
    this.#resetsInARow += 1;
    const delay = this.#resetsInARow === 1 ? 0 : this.#owned.retryDelayMs(this.#resetsInARow - 1);
    this.#log('warn', `dropping the publisher connection (${reason}); reconnecting${delay > 0 ? ` in ${delay} ms` : ''}`);
    void link.release(true);
    const replace = (): void => {
      this.#reset = undefined;
      if (this.#closed) return;
      let fresh: RedisLink | undefined;
      fresh = link.duplicateForPublisher(this.#publisherHooks(() => fresh), this.#owned);
      this.#publisher = fresh;
      this.#changed();
    };
    if (delay === 0) {
      replace();
      return;
    }
    const timer = setTimeout(replace, delay);
    timer.unref();
    this.#reset = { reason, timer };
    this.#changed();
  }

  // ---- the subscriber -------------------------------------------------------------------------

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

  /** Subscribed, and a PUBLISH would be written now. */
  #live(): boolean {
    return this.#subscribed && this.#canPublish();
  }

  #wait(timeoutMs: number, attemptOnly: boolean): Promise<boolean> {
    if (attemptOnly ? this.#subscribed : this.#live()) return Promise.resolve(true);
    if (this.#closed || (attemptOnly && this.#attempted)) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (subscribed: boolean): void => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        resolve(subscribed);
      };
      // `ready()` ignores a failed first attempt and keeps waiting until it can publish too; `subscribe()` does not.
      const waiter = attemptOnly ? done : (subscribed: boolean): void => (this.#closed ? done(false) : subscribed && this.#live() ? done(true) : undefined);
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
    if (this.#live()) for (const resolve of [...this.#waiters]) resolve(true);
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

/** The envelope certainly never reached the network: the caller may retry it. */
function notWritten(code: ErrorCode, message: string): BcastError {
  return new BcastError(code, message, { details: { written: false } });
}

/** The envelope may have reached Redis (and may still arrive): never retried. */
function written(code: ErrorCode, message: string): BcastError {
  return new BcastError(code, message, { details: { written: true } });
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
