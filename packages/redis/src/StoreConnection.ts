import { createHash } from 'node:crypto';
import { BcastError, ErrorCode } from '@bcast/core';
import { clientKind, ioredisFailFast, linkFor, type LinkHooks, type RedisClientLike, type RedisLink } from './clients.js';
import { backoff } from './RedisBackplane.js';
import type { RedisBackplaneLogger } from './types.js';

/** Connection options shared by the Redis history and presence stores. */
export interface RedisStoreConnectionOptions {
  /**
   * Redis URL; the store creates (and quits on `close()`) its own ioredis connection, configured to
   * fail fast while disconnected. Ignored when `client` is given.
   * @default 'redis://127.0.0.1:6379'
   */
  url?: string;
  /** Extra ioredis options for the connection created from `url` (TLS, password...). The fail-fast settings win. */
  redisOptions?: Readonly<Record<string, unknown>>;
  /**
   * Your client (ioredis 5/6 or node-redis 5/6); not quit on `close()`. The store never sends a
   * command through it while it is not ready, so nothing queues up whatever its settings.
   */
  client?: RedisClientLike;
  /** @default console */
  logger?: RedisBackplaneLogger;
}

/** A Lua script run with EVALSHA, and EVAL when the server does not have it (yet). */
export class Script {
  readonly sha: string;
  constructor(readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }
}

/** Counters of one store connection. */
export interface StoreConnectionStats {
  /** ready, connecting, reconnecting, closed... */
  readonly state: string;
  readonly commands: number;
  /** Calls refused before anything was sent: not connected, or paused after a timeout. */
  readonly refused: number;
  readonly errors: number;
  readonly timeouts: number;
  readonly lastError: string | undefined;
}

/** After a command got no reply in time, calls fail fast for this long (Redis hangs: live delivery must not wait on every call). */
const PAUSE_AFTER_TIMEOUT_MS = 1_000;

/**
 * One Redis connection of a store (history or presence): created from a URL or the user's client,
 * commands bounded by a deadline, refused at once (`details.written: false`) whenever the
 * connection is not ready, so a caller never waits on a Redis that is away.
 */
export class StoreConnection {
  readonly #name: string;
  readonly #logger: RedisBackplaneLogger;
  readonly #link: Promise<RedisLink | undefined>;
  readonly #waiters = new Set<() => void>();
  #ready: RedisLink | undefined;
  #wasReady = false;
  #down = false;
  #pausedUntil = 0;
  #closed = false;
  #startError: string | undefined;
  readonly #c = { commands: 0, refused: 0, errors: 0, timeouts: 0, lastError: undefined as string | undefined };

  constructor(name: string, options: RedisStoreConnectionOptions) {
    this.#name = name;
    this.#logger = options.logger ?? console;
    if (options.client !== undefined && clientKind(options.client) === undefined) {
      throw new BcastError(ErrorCode.InvalidOption, 'client must be an ioredis or node-redis client', { details: { option: 'client' } });
    }
    this.#link = this.#start(options);
    // An unexpected failure to start is reported by the first call.
    this.#link.catch(() => {});
  }

  get kind(): string | undefined {
    return this.#ready?.kind;
  }

  stats(): StoreConnectionStats {
    return { state: this.#state(), ...this.#c };
  }

  /** Resolves true once connected, false after `timeoutMs` or on close. */
  async ready(timeoutMs = 5_000): Promise<boolean> {
    const link = await this.#link;
    if (link === undefined || this.#closed) return false;
    if (link.isReady()) return true;
    return this.#waitReady(timeoutMs);
  }

  /**
   * Sends one command. Rejects at once, not written, when the connection is not ready (a call made
   * before the very first connection waits for it, at most `timeoutMs`); with `BCAST_TIMEOUT`,
   * written, when no reply came within `timeoutMs`.
   */
  async command(args: readonly string[], timeoutMs: number): Promise<unknown> {
    const link = await this.#usable(timeoutMs);
    this.#c.commands += 1;
    return this.#bounded(link, link.command(args), timeoutMs, args[0] ?? 'command');
  }

  /** EVALSHA, then EVAL if the script is not loaded (a new or restarted server). */
  async eval(script: Script, keys: readonly string[], args: readonly string[], timeoutMs: number): Promise<unknown> {
    const link = await this.#usable(timeoutMs);
    this.#c.commands += 1;
    const tail = [String(keys.length), ...keys, ...args];
    const started = performance.now();
    try {
      return await this.#bounded(link, link.command(['EVALSHA', script.sha, ...tail]), timeoutMs, 'EVALSHA');
    } catch (error) {
      if (!(error instanceof Error) || !error.message.includes('NOSCRIPT')) throw error;
    }
    const left = Math.max(1, timeoutMs - (performance.now() - started));
    return this.#bounded(link, link.command(['EVAL', script.source, ...tail]), left, 'EVAL');
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const wake of [...this.#waiters]) wake();
    const link = await this.#link.catch(() => undefined);
    await link?.release();
  }

  // ---- internals ------------------------------------------------------------------------------

  async #start(options: RedisStoreConnectionOptions): Promise<RedisLink | undefined> {
    let link: RedisLink | undefined;
    const hooks: LinkHooks = {
      ready: () => {
        if (link === undefined) return;
        this.#ready = link;
        this.#wasReady = true;
        this.#pausedUntil = 0;
        if (this.#down) this.#log('info', 'Redis connection ready again');
        this.#down = false;
        for (const wake of [...this.#waiters]) wake();
      },
      down: (why) => this.#wentDown(why),
      error: (error) => {
        this.#c.errors += 1;
        this.#c.lastError = describe(error);
      },
    };
    try {
      if (options.client) {
        link = linkFor(options.client, false, hooks);
      } else {
        const { Redis } = await import('ioredis').catch((error: unknown) => {
          throw new Error(`no "client" was given and ioredis cannot be loaded (npm install ioredis): ${describe(error)}`);
        });
        if (this.#closed) return undefined;
        const client = new Redis(options.url ?? 'redis://127.0.0.1:6379', {
          ...options.redisOptions,
          ...ioredisFailFast({ retryDelayMs: (attempt) => backoff(attempt, 100, 2_000) }),
        });
        link = linkFor(client as never, true, hooks);
      }
    } catch (error) {
      this.#startError = describe(error);
      this.#log('error', `cannot start: ${this.#startError}`);
      return undefined;
    }
    if (link.isReady()) hooks.ready();
    return link;
  }

  #wentDown(why: string): void {
    if (this.#closed || this.#down || !this.#wasReady) return;
    this.#down = true;
    this.#log('warn', `Redis connection lost (${why}); calls fail fast until it is back`);
  }

  #state(): string {
    if (this.#closed) return 'closed';
    if (this.#startError !== undefined) return `cannot start: ${this.#startError}`;
    if (this.#pausedUntil > Date.now()) return 'paused after a timeout';
    return this.#ready?.state() ?? 'starting';
  }

  /** The link, if a command may be sent on it now; else a rejection that says nothing was written. */
  async #usable(timeoutMs: number): Promise<RedisLink> {
    if (this.#closed) throw this.#refuse(ErrorCode.Shutdown, 'the store is closed');
    const link = await this.#link;
    if (link === undefined) throw this.#refuse(ErrorCode.BackplaneUnavailable, `the store could not start: ${this.#startError ?? 'unknown'}`);
    if (!link.isReady()) {
      // Before the very first connection a call waits for it (a server that starts right away).
      if (this.#wasReady || !(await this.#waitReady(timeoutMs)) || !link.isReady()) {
        throw this.#refuse(ErrorCode.BackplaneUnavailable, `Redis is not connected (${link.state()})`);
      }
    }
    if (this.#pausedUntil > Date.now()) throw this.#refuse(ErrorCode.BackplaneUnavailable, 'Redis did not answer in time; calls fail fast for a moment');
    return link;
  }

  #refuse(code: ErrorCode, message: string): BcastError {
    this.#c.refused += 1;
    return new BcastError(code, `${this.#name}: ${message}`, { details: { written: false } });
  }

  #waitReady(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
        resolve(!this.#closed && this.#ready?.isReady() === true);
      };
      const timer = setTimeout(wake, timeoutMs);
      timer.unref();
      this.#waiters.add(wake);
    });
  }

  #bounded(link: RedisLink, reply: Promise<unknown>, timeoutMs: number, what: string): Promise<unknown> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        this.#c.timeouts += 1;
        this.#pausedUntil = Date.now() + PAUSE_AFTER_TIMEOUT_MS;
        reject(new BcastError(ErrorCode.Timeout, `${this.#name}: no reply to ${what} within ${timeoutMs} ms`, { details: { written: true } }));
      }, timeoutMs);
      reply.then(
        (value) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve(value);
        },
        (error: unknown) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          this.#c.errors += 1;
          this.#c.lastError = describe(error);
          const written = !link.notWritten(error);
          reject(new BcastError(ErrorCode.BackplaneUnavailable, `${this.#name}: Redis ${what} failed: ${describe(error)}`, { cause: error, details: { written } }));
        },
      );
    });
  }

  #log(level: 'warn' | 'error' | 'info', message: string): void {
    try {
      const logger = this.#logger;
      const fn = level === 'info' ? (logger.info ?? logger.warn) : logger[level];
      fn.call(logger, `[bcast/redis] ${this.#name}: ${message}`);
    } catch {
      // logging never breaks anything
    }
  }
}

export function describe(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

export function invalid(option: string, expected: string, value?: unknown): BcastError {
  return new BcastError(ErrorCode.InvalidOption, `${option} must be ${expected}${value === undefined ? '' : `, got ${String(value)}`}`, {
    details: { option, ...(value === undefined ? {} : { value }) },
  });
}

export function atLeast(option: string, value: unknown, min: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) throw invalid(option, `a number >= ${min}`, value);
  return value;
}
