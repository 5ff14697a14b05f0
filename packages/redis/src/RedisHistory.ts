import type { HistoryLimits, HistoryRead, HistoryRecord, HistoryStore, StreamPosition } from '@bcast/core/backplane';
import { atLeast, invalid, Script, StoreConnection, type RedisStoreConnectionOptions, type StoreConnectionStats } from './StoreConnection.js';

export interface RedisHistoryOptions extends RedisStoreConnectionOptions {
  /**
   * Prefix of the keys. A room's stream is `<prefix>{<room>}` and its epoch and sequence are in
   * the hash `<prefix>{<room>}:m` (one hash tag: both in one slot).
   * @default 'bcast:h:'
   */
  prefix?: string;
  /**
   * Bound on one append: without a reply by then it rejects (the message is delivered live,
   * without a position) and calls fail fast for a second, so live delivery never waits on a Redis
   * that hangs. @default 250
   */
  appendTimeoutMs?: number;
  /** Bound on one recovery read or position. @default 1_000 */
  readTimeoutMs?: number;
  /** Idle rooms' keys expire after `ttlMs` × this (their messages are older than `ttlMs` by then). @default 2 */
  expireAfterTtl?: number;
}

export interface RedisHistoryStats extends StoreConnectionStats {
  readonly appended: number;
  readonly appendErrors: number;
  /** Epochs started by this store because one of its appends failed (a gap no recovery may cross). */
  readonly epochsBumped: number;
  /** Rooms with a failed append whose epoch has not been changed yet (Redis still away). */
  readonly roomsWithGap: number;
}

/** The Redis Streams implementation of the core `HistoryStore` port. */
export interface RedisHistory extends HistoryStore {
  readonly prefix: string;
  append(room: string, data: string, limits: HistoryLimits): Promise<StreamPosition>;
  since(room: string, since: StreamPosition, limits: HistoryLimits): Promise<HistoryRead>;
  /** The room's position; a room with no message yet gets its epoch now and is at offset 0. */
  position(room: string): Promise<StreamPosition>;
  /** Resolves true once connected to Redis, false after `timeoutMs` or on close. */
  ready(timeoutMs?: number): Promise<boolean>;
  stats(): RedisHistoryStats;
  /** Stops the retry timer and quits the connection the store created (a `client` you gave is left open). */
  close(): Promise<void>;
}

/**
 * A room history in Redis Streams, shared by every node: per room a stream whose entries have the
 * ids `0-<offset>`, trimmed to `maxMessages` (approximately) and `ttlMs`, and an epoch that changes
 * whenever the history is lost (keys flushed or expired, or an append of this store failed), so a
 * position from before answers `recovered: false`. One Lua script per call: offsets are unique and
 * increasing whatever the number of publishing processes.
 *
 * @example
 * const history = createRedisHistory({ url: process.env.REDIS_URL });
 * const broadcaster = new Broadcaster({ backplane, history: { rooms: 'chat:*', store: history } });
 */
export function createRedisHistory(options: RedisHistoryOptions = {}): RedisHistory {
  return new RedisStreamHistory(options);
}

// Time in ms from the server's clock: every node stamps and expires with the same one.
const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/**
 * KEYS: stream, meta. ARGV: data, maxMessages, ttlMs, a new epoch, '1' to start a new epoch, expireMs.
 * Returns { offset, epoch }.
 */
const APPEND = new Script(`${NOW}
local epoch = redis.call('HGET', KEYS[2], 'e')
local offset
if (not epoch) or ARGV[5] == '1' or redis.call('EXISTS', KEYS[1]) == 0 and redis.call('HGET', KEYS[2], 's') ~= '0' then
  epoch = ARGV[4]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch, 's', 1)
  offset = 1
else
  offset = redis.call('HINCRBY', KEYS[2], 's', 1)
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], string.format('0-%d', offset), 'd', ARGV[1], 't', now)
local cutoff = now - tonumber(ARGV[3])
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
if oldest and tonumber(oldest[2][4]) < cutoff then
  for _ = 1, 8 do
    local batch = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 128)
    local keep
    local expired = {}
    for _, e in ipairs(batch) do
      if tonumber(e[2][4]) >= cutoff then keep = e[1] break end
      expired[#expired + 1] = e[1]
    end
    if #expired > 0 then
      local min = keep or string.format('0-%d', tonumber(string.sub(expired[#expired], 3)) + 1)
      if not pcall(redis.call, 'XTRIM', KEYS[1], 'MINID', min) then redis.call('XDEL', KEYS[1], unpack(expired)) end
    end
    if keep or #batch == 0 then break end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return { offset, epoch }`);

/**
 * KEYS: stream, meta. ARGV: since offset, since epoch, maxMessages, ttlMs.
 * Returns {} (no history), or { epoch, top, recovered (0/1), data... }.
 */
const SINCE = new Script(`local meta = redis.call('HMGET', KEYS[2], 'e', 's')
local epoch, top = meta[1], tonumber(meta[2])
if not epoch or not top then return {} end
local since = tonumber(ARGV[1])
local gap = top - since
if ARGV[2] ~= epoch or gap < 0 or gap > tonumber(ARGV[3]) then return { epoch, top, 0 } end
if gap == 0 then return { epoch, top, 1 } end
local entries = redis.call('XRANGE', KEYS[1], string.format('0-%d', since + 1), '+', 'COUNT', gap)
if #entries ~= gap or entries[1][1] ~= string.format('0-%d', since + 1) or entries[gap][1] ~= string.format('0-%d', top) then return { epoch, top, 0 } end
${NOW}
if tonumber(entries[1][2][4]) < now - tonumber(ARGV[4]) then return { epoch, top, 0 } end
local out = { epoch, top, 1 }
for i, e in ipairs(entries) do out[i + 3] = e[2][2] end
return out`);

/** KEYS: stream, meta. ARGV: a new epoch, expireMs. A new, empty epoch; returns it. */
const BUMP = new Script(`redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], 'e', ARGV[1], 's', 0)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return ARGV[1]`);

/**
 * KEYS: stream, meta. ARGV: a new epoch, expireMs. Returns { epoch, top }; a room without one gets
 * its epoch now (offset 0), so a client that joins it before its first message can recover that message.
 */
const POSITION = new Script(`local meta = redis.call('HMGET', KEYS[2], 'e', 's')
if meta[1] and meta[2] then return { meta[1], tonumber(meta[2]) } end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], 'e', ARGV[1], 's', 0)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return { ARGV[1], 0 }`);

/** How often rooms with a failed append are given a new epoch while Redis is away. */
const GAP_RETRY_MS = 1_000;

class RedisStreamHistory implements RedisHistory {
  readonly prefix: string;
  readonly #redis: StoreConnection;
  readonly #appendTimeoutMs: number;
  readonly #readTimeoutMs: number;
  readonly #expireAfterTtl: number;
  /** Rooms where an append failed: the next successful call starts a new epoch. */
  readonly #gaps = new Set<string>();
  #retry: NodeJS.Timeout | undefined;
  #lastTtlMs = 300_000;
  readonly #c = { appended: 0, appendErrors: 0, epochsBumped: 0 };

  constructor(options: RedisHistoryOptions) {
    const prefix = options.prefix ?? 'bcast:h:';
    if (typeof prefix !== 'string') throw invalid('prefix', 'a string', prefix);
    this.prefix = prefix;
    this.#appendTimeoutMs = atLeast('appendTimeoutMs', options.appendTimeoutMs ?? 250, 1);
    this.#readTimeoutMs = atLeast('readTimeoutMs', options.readTimeoutMs ?? 1_000, 1);
    this.#expireAfterTtl = atLeast('expireAfterTtl', options.expireAfterTtl ?? 2, 1);
    this.#redis = new StoreConnection('history', options);
  }

  async append(room: string, data: string, limits: HistoryLimits): Promise<StreamPosition> {
    this.#lastTtlMs = limits.ttlMs;
    const gap = this.#gaps.has(room);
    try {
      const reply = await this.#redis.eval(
        APPEND,
        this.#keys(room),
        [data, String(Math.max(1, Math.floor(limits.maxMessages))), String(Math.floor(limits.ttlMs)), newEpoch(), gap ? '1' : '0', String(this.#expireMs(limits.ttlMs))],
        this.#appendTimeoutMs,
      );
      const [offset, epoch] = reply as [number | string, string];
      if (gap) {
        this.#gaps.delete(room);
        this.#c.epochsBumped += 1;
      }
      this.#c.appended += 1;
      return { offset: Number(offset), epoch: String(epoch) };
    } catch (error) {
      // The message goes out live without a position: whoever recovers across it must hear `recovered: false`.
      this.#c.appendErrors += 1;
      this.#gaps.add(room);
      this.#scheduleRetry();
      throw error;
    }
  }

  async since(room: string, since: StreamPosition, limits: HistoryLimits): Promise<HistoryRead> {
    if (this.#gaps.has(room)) await this.#bump(room);
    const reply = (await this.#redis.eval(SINCE, this.#keys(room), [String(since.offset), since.epoch, String(Math.floor(limits.maxMessages)), String(Math.floor(limits.ttlMs))], this.#readTimeoutMs)) as unknown[];
    if (reply.length === 0) return { recovered: false, position: undefined, records: [] };
    const epoch = String(reply[0]);
    const top = Number(reply[1]);
    const position = { offset: top, epoch };
    if (Number(reply[2]) !== 1) return { recovered: false, position, records: [] };
    const records: HistoryRecord[] = [];
    for (let i = 3; i < reply.length; i += 1) records.push({ offset: since.offset + i - 2, data: String(reply[i]) });
    return { recovered: true, position, records };
  }

  /** The room's position; `{ offset: 0, epoch }` for a room with no message yet (its epoch is created then). */
  async position(room: string): Promise<StreamPosition> {
    if (this.#gaps.has(room)) await this.#bump(room);
    const [epoch, top] = (await this.#redis.eval(POSITION, this.#keys(room), [newEpoch(), String(this.#expireMs(this.#lastTtlMs))], this.#readTimeoutMs)) as [string, number | string];
    return { offset: Number(top), epoch: String(epoch) };
  }

  ready(timeoutMs?: number): Promise<boolean> {
    return this.#redis.ready(timeoutMs);
  }

  stats(): RedisHistoryStats {
    return { ...this.#redis.stats(), ...this.#c, roomsWithGap: this.#gaps.size };
  }

  async close(): Promise<void> {
    clearTimeout(this.#retry);
    this.#retry = undefined;
    await this.#redis.close();
  }

  // ---- internals ------------------------------------------------------------------------------

  #keys(room: string): [string, string] {
    const stream = `${this.prefix}{${room}}`;
    return [stream, `${stream}:m`];
  }

  #expireMs(ttlMs: number): number {
    return Math.max(1_000, Math.ceil(ttlMs * this.#expireAfterTtl));
  }

  /** A new, empty epoch for a room where an append of this store failed. */
  async #bump(room: string): Promise<void> {
    await this.#redis.eval(BUMP, this.#keys(room), [newEpoch(), String(this.#expireMs(this.#lastTtlMs))], this.#readTimeoutMs);
    this.#gaps.delete(room);
    this.#c.epochsBumped += 1;
  }

  /** While rooms have a gap, tries every second to give them a new epoch (a room may not be written again soon). */
  #scheduleRetry(): void {
    if (this.#retry !== undefined) return;
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      void (async () => {
        for (const room of [...this.#gaps]) {
          if (!this.#gaps.has(room)) continue; // an append started its new epoch meanwhile
          try {
            await this.#bump(room);
          } catch {
            break; // still away: next round
          }
        }
        if (this.#gaps.size > 0) this.#scheduleRetry();
      })();
    }, GAP_RETRY_MS);
    this.#retry.unref();
  }
}

function newEpoch(): string {
  return crypto.randomUUID().slice(0, 8);
}
