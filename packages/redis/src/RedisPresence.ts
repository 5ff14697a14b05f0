import type { PresenceMember, PresenceStore } from '@bcast/core/backplane';
import { atLeast, invalid, Script, StoreConnection, type RedisStoreConnectionOptions, type StoreConnectionStats } from './StoreConnection.js';

export interface RedisPresenceOptions extends RedisStoreConnectionOptions {
  /**
   * This node's id, written in its members' entries. Unique per process.
   * @default the `nodeId` of the members the broadcaster adds (its backplane's)
   */
  nodeId?: string;
  /** Prefix of the keys: a room's members are the sorted set `<prefix><room>`. @default 'bcast:p:' */
  prefix?: string;
  /**
   * How often this node refreshes its members (one round trip for all of them). An entry lives
   * 2 × heartbeatMs after its last refresh: the members of a node that died vanish by then.
   * @default 5_000
   */
  heartbeatMs?: number;
  /** Bound on one Redis call. @default 1_000 */
  timeoutMs?: number;
}

export interface RedisPresenceStats extends StoreConnectionStats {
  /** This node's members (connection × room) it keeps alive. */
  readonly members: number;
  readonly heartbeats: number;
  readonly heartbeatErrors: number;
}

/** The Redis implementation of the core `PresenceStore` port. */
export interface RedisPresence extends PresenceStore {
  readonly prefix: string;
  readonly heartbeatMs: number;
  add(room: string, member: PresenceMember): Promise<void>;
  remove(room: string, connectionId: string): Promise<void>;
  list(room: string): Promise<readonly PresenceMember[]>;
  /** Resolves true once connected to Redis, false after `timeoutMs` or on close. */
  ready(timeoutMs?: number): Promise<boolean>;
  stats(): RedisPresenceStats;
  /** Stops the heartbeat, removes this node's members, and quits the connection the store created. */
  close(): Promise<void>;
}

/**
 * Presence in Redis, shared by every node: per room a sorted set of `nodeId|connectionId|userId`
 * scored by when the entry expires (Redis's clock). Each node refreshes its own entries every
 * `heartbeatMs`; `list` reads the entries that have not expired, so the users of a node that
 * crashed disappear by themselves within 2 × `heartbeatMs`.
 *
 * @example
 * const presence = createRedisPresence({ url: process.env.REDIS_URL });
 * const broadcaster = new Broadcaster({ backplane, presence: { events: true, store: presence } });
 * await broadcaster.presence('lobby'); // every node's users
 */
export function createRedisPresence(options: RedisPresenceOptions = {}): RedisPresence {
  return new RedisSortedSetPresence(options);
}

const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/** KEYS: room keys. ARGV: lifetime ms, then one member per key. Refreshes them and drops expired entries. */
const TOUCH = new Script(`${NOW}
local ttl = tonumber(ARGV[1])
local seen = {}
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[i + 1])
  if not seen[key] then
    seen[key] = true
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  end
end
return #KEYS`);

/** KEYS: room keys. ARGV: one member per key. */
const REMOVE = new Script(`for i, key in ipairs(KEYS) do redis.call('ZREM', key, ARGV[i]) end
return #KEYS`);

/** KEYS: the room key. The members that have not expired (expired ones are dropped). */
const LIST = new Script(`${NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')`);

/** Members per script call: a heartbeat of many members is a few large calls sent at once. */
const CHUNK = 500;

class RedisSortedSetPresence implements RedisPresence {
  readonly prefix: string;
  readonly heartbeatMs: number;
  readonly #nodeId: string | undefined;
  readonly #timeoutMs: number;
  readonly #redis: StoreConnection;
  /** This node's members: room -> connectionId -> encoded entry. */
  readonly #mine = new Map<string, Map<string, string>>();
  readonly #timer: NodeJS.Timeout;
  #closing: Promise<void> | undefined;
  readonly #c = { heartbeats: 0, heartbeatErrors: 0 };

  constructor(options: RedisPresenceOptions) {
    const prefix = options.prefix ?? 'bcast:p:';
    if (typeof prefix !== 'string') throw invalid('prefix', 'a string', prefix);
    if (options.nodeId !== undefined && (typeof options.nodeId !== 'string' || options.nodeId.length === 0)) throw invalid('nodeId', 'a non-empty string', options.nodeId);
    this.prefix = prefix;
    this.#nodeId = options.nodeId;
    this.heartbeatMs = atLeast('heartbeatMs', options.heartbeatMs ?? 5_000, 10);
    this.#timeoutMs = atLeast('timeoutMs', options.timeoutMs ?? 1_000, 1);
    this.#redis = new StoreConnection('presence', options);
    this.#timer = setInterval(() => void this.#heartbeat(), this.heartbeatMs);
    this.#timer.unref();
  }

  async add(room: string, member: PresenceMember): Promise<void> {
    if (this.#closing) return;
    const entry = encode(this.#nodeId ?? member.nodeId, member.connectionId, member.userId);
    let members = this.#mine.get(room);
    if (members === undefined) this.#mine.set(room, (members = new Map()));
    members.set(member.connectionId, entry);
    await this.#redis.eval(TOUCH, [this.#key(room)], [String(this.heartbeatMs * 2), entry], this.#timeoutMs);
  }

  async remove(room: string, connectionId: string): Promise<void> {
    const members = this.#mine.get(room);
    const entry = members?.get(connectionId);
    if (members === undefined || entry === undefined) return;
    members.delete(connectionId);
    if (members.size === 0) this.#mine.delete(room);
    await this.#redis.command(['ZREM', this.#key(room), entry], this.#timeoutMs);
  }

  async list(room: string): Promise<readonly PresenceMember[]> {
    const entries = (await this.#redis.eval(LIST, [this.#key(room)], [], this.#timeoutMs)) as unknown[];
    const members: PresenceMember[] = [];
    for (const raw of entries) {
      const member = decode(String(raw));
      if (member) members.push(member);
    }
    return members;
  }

  ready(timeoutMs?: number): Promise<boolean> {
    return this.#redis.ready(timeoutMs);
  }

  stats(): RedisPresenceStats {
    let members = 0;
    for (const m of this.#mine.values()) members += m.size;
    return { ...this.#redis.stats(), members, ...this.#c };
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#timer);
      const pairs = this.#pairs();
      this.#mine.clear();
      await Promise.all(chunks(pairs).map(([keys, entries]) => this.#redis.eval(REMOVE, keys, entries, this.#timeoutMs))).catch(() => {
        // Redis away: the entries expire by themselves within 2 × heartbeatMs
      });
      await this.#redis.close();
    })();
    return this.#closing;
  }

  // ---- internals ------------------------------------------------------------------------------

  #key(room: string): string {
    return `${this.prefix}${room}`;
  }

  #pairs(): Array<[string, string]> {
    const pairs: Array<[string, string]> = [];
    for (const [room, members] of this.#mine) {
      const key = this.#key(room);
      for (const entry of members.values()) pairs.push([key, entry]);
    }
    return pairs;
  }

  /** Refreshes every member of this node: all chunks sent at once (one round trip). */
  async #heartbeat(): Promise<void> {
    if (this.#closing || this.#mine.size === 0) return;
    this.#c.heartbeats += 1;
    const ttl = String(this.heartbeatMs * 2);
    try {
      await Promise.all(chunks(this.#pairs()).map(([keys, entries]) => this.#redis.eval(TOUCH, keys, [ttl, ...entries], this.#timeoutMs)));
    } catch {
      this.#c.heartbeatErrors += 1; // the next heartbeat tries again (and re-adds what Redis lost)
    }
  }
}

function chunks(pairs: Array<[string, string]>): Array<[string[], string[]]> {
  const out: Array<[string[], string[]]> = [];
  for (let i = 0; i < pairs.length; i += CHUNK) {
    const slice = pairs.slice(i, i + CHUNK);
    out.push([slice.map((p) => p[0]), slice.map((p) => p[1])]);
  }
  return out;
}

const escape = (s: string): string => s.replace(/%/g, '%25').replace(/\|/g, '%7C');
const unescape = (s: string): string => s.replace(/%7C/g, '|').replace(/%25/g, '%');

/** `nodeId|connectionId|userId` (an anonymous connection: empty userId), `|` and `%` escaped. */
function encode(nodeId: string, connectionId: string, userId: string | undefined): string {
  return `${escape(nodeId)}|${escape(connectionId)}|${userId === undefined ? '' : escape(userId)}`;
}

function decode(entry: string): PresenceMember | undefined {
  const parts = entry.split('|');
  if (parts.length !== 3) return undefined;
  const [nodeId, connectionId, userId] = parts as [string, string, string];
  return { nodeId: unescape(nodeId), connectionId: unescape(connectionId), userId: userId === '' ? undefined : unescape(userId) };
}
