import { randomUUID } from 'node:crypto';
import { Broadcaster, type BroadcasterOptions } from '@bcast/core';
import type { StreamPosition } from '@bcast/core/backplane';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRedisHistory, type RedisHistory, type RedisHistoryOptions } from '../src/index.js';
import { FakeConnection, REDIS_URL, RedisServer, freePort, processProblems, quietLogger, settle, skipReason, until, whyNoRedisServer, whyUnreachable } from './helpers.js';

const skip = skipReason(`Redis at ${REDIS_URL}`, await whyUnreachable());
const skipFaults = skipReason('history fault tests (they run their own redis-server)', whyNoRedisServer());

const limits = { maxMessages: 1_000, ttlMs: 60_000 };

/** Deletes every key under `prefix` (never FLUSHALL: the Redis is shared). */
async function deleteKeys(admin: Redis, prefix: string): Promise<number> {
  let cursor = '0';
  let n = 0;
  do {
    const [next, keys] = (await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1_000)) as [string, string[]];
    cursor = next;
    if (keys.length > 0) n += await admin.unlink(...keys);
  } while (cursor !== '0');
  return n;
}

async function countKeys(admin: Redis, prefix: string): Promise<number> {
  let cursor = '0';
  let n = 0;
  do {
    const [next, keys] = (await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1_000)) as [string, string[]];
    cursor = next;
    n += keys.length;
  } while (cursor !== '0');
  return n;
}

/** A client of a Broadcaster speaking the protocol (joins with `since`). */
function protocolClient(b: Broadcaster, id: string) {
  const c = new FakeConnection(id);
  const h = b.register(c);
  return {
    c,
    join: (room: string, since?: StreamPosition) => h.message(JSON.stringify({ type: 'join', room, requestId: id, ...(since ? { since } : {}) })),
    pubs: () => c.messages.filter((m) => m['type'] === 'bcast.pub'),
    last: (): StreamPosition => {
      const p = c.messages.filter((m) => m['type'] === 'bcast.pub').at(-1) as { offset: number; epoch: string };
      return { offset: p.offset, epoch: p.epoch };
    },
    ok: () => c.messages.filter((m) => m['type'] === 'ok').at(-1),
  };
}

describe.skipIf(skip)('createRedisHistory against a real Redis', () => {
  let admin: Redis;
  const prefix = `bcast-test:h:${randomUUID().slice(0, 8)}:`;
  const cleanup: Array<() => Promise<unknown> | unknown> = [];

  beforeAll(() => {
    admin = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    admin.on('error', () => {});
  });
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
  });
  afterAll(async () => {
    await deleteKeys(admin, prefix);
    await admin.quit();
  });

  function store(options: RedisHistoryOptions = {}): RedisHistory {
    const h = createRedisHistory({ url: REDIS_URL, prefix, logger: quietLogger(), ...options });
    cleanup.push(() => h.close());
    return h;
  }

  it('numbers messages per room from 1 in one epoch, and recovers exactly what came after `since`', async () => {
    const h = store();
    const room = `r-${randomUUID()}`;
    expect(await h.since(room, { offset: 0, epoch: 'x' }, limits)).toEqual({ recovered: false, position: undefined, records: [] });
    // a room with no message yet: its epoch is fixed by the first position asked for, at offset 0
    const empty = await h.position(room);
    expect(empty).toEqual({ offset: 0, epoch: expect.any(String) });
    expect(await h.position(room)).toEqual(empty);
    expect(await h.since(room, empty, limits)).toEqual({ recovered: true, position: empty, records: [] });
    const p1 = await h.append(room, '"a"', limits);
    const p2 = await h.append(room, '{"n":2}', limits);
    const p3 = await h.append(room, '"c"', limits);
    expect(p1).toEqual({ offset: 1, epoch: empty.epoch });
    expect(await h.since(room, empty, limits)).toMatchObject({ recovered: true, records: [{ offset: 1, data: '"a"' }, { offset: 2 }, { offset: 3 }] });
    expect(p2).toEqual({ offset: 2, epoch: p1.epoch });
    expect(p3).toEqual({ offset: 3, epoch: p1.epoch });
    expect((await h.append(`${room}-other`, '1', limits)).offset).toBe(1);
    expect(await h.position(room)).toEqual(p3);
    expect(await h.since(room, p1, limits)).toEqual({
      recovered: true,
      position: p3,
      records: [
        { offset: 2, data: '{"n":2}' },
        { offset: 3, data: '"c"' },
      ],
    });
    expect(await h.since(room, { offset: 0, epoch: p1.epoch }, limits)).toMatchObject({ recovered: true, records: [{ offset: 1 }, { offset: 2 }, { offset: 3 }] });
    expect(await h.since(room, p3, limits)).toEqual({ recovered: true, position: p3, records: [] }); // at the top: nothing missed
    expect(await h.since(room, { offset: 2, epoch: 'other' }, limits)).toEqual({ recovered: false, position: p3, records: [] });
    expect(await h.since(room, { offset: 4, epoch: p1.epoch }, limits)).toEqual({ recovered: false, position: p3, records: [] }); // ahead of the top
    // room names with the prefix's separator, braces and the meta suffix do not collide
    for (const odd of [`${room}}:m`, `{${room}`, `${room}:m`]) expect((await h.append(odd, '0', limits)).offset).toBe(1);
    expect(await h.position(room)).toEqual(p3);
  });

  it('offsets are unique and increasing with two stores (ioredis and node-redis) appending concurrently to one room', async () => {
    const nodeRedis = createClient({ url: REDIS_URL, disableOfflineQueue: true });
    nodeRedis.on('error', () => {});
    await nodeRedis.connect();
    cleanup.push(() => nodeRedis.close());
    const a = store({ appendTimeoutMs: 5_000 });
    const b = store({ client: nodeRedis as never, appendTimeoutMs: 5_000 });
    const room = `r-${randomUUID()}`;
    const N = 300;
    const [fromA, fromB] = await Promise.all(
      [a, b].map((h, k) => Promise.all(Array.from({ length: N }, (_, i) => h.append(room, JSON.stringify({ k, i }), limits)))),
    );
    const all = [...(fromA ?? []), ...(fromB ?? [])];
    expect(new Set(all.map((p) => p.epoch)).size).toBe(1);
    expect(all.map((p) => p.offset).sort((x, y) => x - y)).toEqual(Array.from({ length: 2 * N }, (_, i) => i + 1));
    // each store's appends got increasing offsets, in the order it made them
    for (const mine of [fromA, fromB]) for (let i = 1; i < N; i += 1) expect((mine?.[i]?.offset ?? 0) > (mine?.[i - 1]?.offset ?? 0)).toBe(true);
    // the stream holds them in offset order, and each store reads the other's
    const read = await b.since(room, { offset: 0, epoch: (fromA?.[0] as StreamPosition).epoch }, limits);
    expect(read.recovered).toBe(true);
    expect(read.records.map((r) => r.offset)).toEqual(Array.from({ length: 2 * N }, (_, i) => i + 1));
    const byOffset = new Map(all.map((p, i) => [p.offset, i < N ? { k: 0, i } : { k: 1, i: i - N }]));
    for (const r of read.records) expect(JSON.parse(r.data)).toEqual(byOffset.get(r.offset));
  });

  it('is never partial: a gap longer than maxMessages, or older than ttlMs, says recovered: false', async () => {
    const h = store();
    const room = `r-${randomUUID()}`;
    const small = { maxMessages: 3, ttlMs: 60_000 };
    const positions: StreamPosition[] = [];
    for (let i = 1; i <= 10; i += 1) positions.push(await h.append(room, String(i), small));
    expect((await h.since(room, positions[1] as StreamPosition, small)).recovered).toBe(false); // 3..10: 8 > 3
    expect(await h.since(room, positions[6] as StreamPosition, small)).toMatchObject({ recovered: true, records: [{ offset: 8, data: '8' }, { offset: 9 }, { offset: 10 }] });
    // MAXLEN ~ really trims: 1,000 appends keep about maxMessages entries
    const trimmed = `r-${randomUUID()}`;
    for (let i = 0; i < 1_000; i += 1) await h.append(trimmed, String(i), { maxMessages: 100, ttlMs: 60_000 });
    const len = Number(await admin.xlen(`${prefix}{${trimmed}}`));
    expect(len).toBeGreaterThanOrEqual(100);
    expect(len).toBeLessThan(300);

    // ttl: a message older than ttlMs is gone for recovery, and trimmed at the next append
    const aging = `r-${randomUUID()}`;
    const short = { maxMessages: 100, ttlMs: 150 };
    const first = await h.append(aging, '"old"', short);
    await h.append(aging, '"old too"', short);
    expect((await h.since(aging, { offset: 0, epoch: first.epoch }, short)).recovered).toBe(true);
    await new Promise((r) => setTimeout(r, 250));
    expect((await h.since(aging, { offset: 0, epoch: first.epoch }, short)).recovered).toBe(false);
    const fresh = await h.append(aging, '"new"', short);
    expect(fresh).toEqual({ offset: 3, epoch: first.epoch });
    expect(Number(await admin.xlen(`${prefix}{${aging}}`))).toBe(1); // the two old ones trimmed (XTRIM MINID)
    expect(await h.since(aging, { offset: 2, epoch: first.epoch }, short)).toMatchObject({ recovered: true, records: [{ offset: 3, data: '"new"' }] });
  });

  it('keys deleted (a flush) -> a new epoch: old positions say recovered: false', async () => {
    const h = store();
    const room = `r-${randomUUID()}`;
    const before = await h.append(room, '1', limits);
    await h.append(room, '2', limits);
    expect(await admin.del(`${prefix}{${room}}`, `${prefix}{${room}}:m`)).toBe(2);
    expect(await h.since(room, before, limits)).toEqual({ recovered: false, position: undefined, records: [] });
    const after = await h.append(room, '3', limits);
    expect(after.offset).toBe(1);
    expect(after.epoch).not.toBe(before.epoch);
    expect((await h.since(room, before, limits)).recovered).toBe(false);
    // only the stream lost (evicted): a new epoch as well, never offsets that do not match their messages
    const next = await h.append(room, '4', limits);
    await admin.del(`${prefix}{${room}}`);
    const again = await h.append(room, '5', limits);
    expect(again.offset).toBe(1);
    expect(again.epoch).not.toBe(next.epoch);
    expect((await h.since(room, next, limits)).recovered).toBe(false);
  });

  it('idle rooms expire: every key has a TTL of about 2 x ttlMs, so 100,000 rooms do not leak', async () => {
    const h = store({ appendTimeoutMs: 5_000 });
    const tag = `exp-${randomUUID().slice(0, 8)}`;
    const short = { maxMessages: 10, ttlMs: 500 };
    await Promise.all(Array.from({ length: 1_000 }, (_, i) => h.append(`${tag}-${i}`, '1', short)));
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, found] = (await admin.scan(cursor, 'MATCH', `${prefix}{${tag}-*`, 'COUNT', 1_000)) as [string, string[]];
      cursor = next;
      keys.push(...found);
    } while (cursor !== '0');
    expect(keys).toHaveLength(2_000);
    const ttls = await Promise.all(keys.map((k) => admin.pttl(k)));
    expect(ttls.every((t) => t > 0 && t <= 1_000)).toBe(true);
    await until('the idle rooms to expire', async () => (await countKeys(admin, `${prefix}{${tag}-`)) === 0, 5_000, 100);
  });

  it('an append that fails leaves a gap no recovery crosses: the next success starts a new epoch', async () => {
    const client = new Redis(REDIS_URL, { enableOfflineQueue: false, maxRetriesPerRequest: 0, lazyConnect: true });
    client.on('error', () => {});
    await client.connect();
    cleanup.push(() => client.disconnect());
    const h = store({ client });
    const offline = async (): Promise<void> => {
      client.disconnect(); // Redis away for this node
      await until('the client to be closed', () => client.status === 'end');
    };
    const room = `r-${randomUUID()}`;
    const seen = await h.append(room, '1', limits);
    await offline();
    const failed = await settle(h.append(room, '2', limits), 1_000);
    expect(failed.ok).toBe(false);
    expect(failed.ms).toBeLessThan(300);
    expect((failed as { error: { details?: { written?: boolean } } }).error.details?.written).toBe(false);
    expect(h.stats().roomsWithGap).toBe(1);
    await client.connect();
    const next = await h.append(room, '3', limits);
    expect(next.epoch).not.toBe(seen.epoch);
    expect(next.offset).toBe(1);
    expect((await h.since(room, seen, limits)).recovered).toBe(false);
    expect(h.stats()).toMatchObject({ roomsWithGap: 0, epochsBumped: 1, appendErrors: 1 });

    // a room that is not written again gets its new epoch from the retry timer (or its next read)
    const quiet = `r-${randomUUID()}`;
    const q = await h.append(quiet, '1', limits);
    await offline();
    await expect(h.append(quiet, '2', limits)).rejects.toThrow();
    await client.connect();
    const position = await until('a new epoch for the quiet room', async () => {
      const p = await h.position(quiet);
      return p && p.epoch !== q.epoch ? p : undefined;
    });
    expect(position.offset).toBe(0);
    expect((await h.since(quiet, q, limits)).recovered).toBe(false);
    expect(await h.since(quiet, position, limits)).toEqual({ recovered: true, position, records: [] });
  });

  it('two Broadcasters, one shared history: a client that left one node recovers on the other, then gets live messages', async () => {
    const made: Broadcaster[] = [];
    cleanup.push(() => Promise.all(made.map((b) => b.dispose())));
    const shared = store();
    const other = store();
    const broadcaster = (history: RedisHistory, options: BroadcasterOptions = {}) => {
      const b = new Broadcaster({ pingIntervalMs: 0, logger: quietLogger(), allowClientJoins: true, history: { rooms: 'room:*', store: history }, ...options });
      made.push(b);
      return b;
    };
    const n1 = broadcaster(shared);
    const n2 = broadcaster(other);
    const room = `room:${randomUUID()}`;
    const a = protocolClient(n1, 'a');
    await a.join(room);
    await n1.toRoom(room, { n: 1 });
    const seen = a.last();
    n1.disconnect('a');
    for (let n = 2; n <= 6; n += 1) await n2.toRoom(room, { n });
    const back = protocolClient(n2, 'a2');
    await back.join(room, seen);
    await n2.toRoom(room, { n: 7 });
    expect(back.pubs().map((p) => (p['data'] as { n: number }).n)).toEqual([2, 3, 4, 5, 6, 7]);
    expect(back.pubs().map((p) => p['offset'])).toEqual([2, 3, 4, 5, 6, 7]);
    expect(back.ok()).toMatchObject({ op: 'join', recovered: true, position: { offset: 6, epoch: seen.epoch } });
  });
});

describe.skipIf(skipFaults)('createRedisHistory when Redis is unreachable (own redis-server)', () => {
  let server: RedisServer;
  const problems = processProblems();
  const cleanup: Array<() => Promise<unknown> | unknown> = [];

  beforeAll(async () => {
    server = new RedisServer(await freePort());
    await server.start();
    problems.start();
  });
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
    if (!server.running) await server.start();
    expect(problems.list).toEqual([]);
  });
  afterAll(async () => {
    problems.stop();
    await server?.kill();
  });

  it('append and since reject fast (< 300 ms), and a Broadcaster using it still delivers live and answers recovered: false', async () => {
    const history = createRedisHistory({ url: server.url, logger: quietLogger() });
    cleanup.push(() => history.close());
    expect(await history.ready()).toBe(true);
    const b = new Broadcaster({ pingIntervalMs: 0, logger: quietLogger(), allowClientJoins: true, history: { rooms: 'room:*', store: history } });
    cleanup.push(() => b.dispose());
    const room = 'room:1';
    const a = protocolClient(b, 'a');
    await a.join(room);
    await b.toRoom(room, { n: 1 });
    const seen = a.last();
    expect(seen.offset).toBe(1);

    await server.kill();
    for (let i = 0; i < 3; i += 1) {
      const append = await settle(history.append(room, '"x"', limits), 2_000);
      expect(append.ok).toBe(false);
      expect(append.ms).toBeLessThan(300);
      const since = await settle(history.since(room, seen, limits), 2_000);
      expect(since.ok).toBe(false);
      expect(since.ms).toBeLessThan(300);
    }

    // live delivery goes on (without a position), promptly
    const started = performance.now();
    const result = await b.toRoom(room, { n: 2 });
    expect(performance.now() - started).toBeLessThan(300);
    expect(result.delivered).toBe(1);
    expect(a.pubs().at(-1)).toEqual({ type: 'bcast.pub', room, data: { n: 2 } });
    // a client coming back with its position hears recovered: false, and its join works
    const back = protocolClient(b, 'back');
    const joinStarted = performance.now();
    await back.join(room, seen);
    expect(performance.now() - joinStarted).toBeLessThan(300);
    expect(back.ok()).toEqual({ type: 'ok', op: 'join', room, requestId: 'back', recovered: false });
    await b.toRoom(room, { n: 3 });
    expect(back.pubs().map((p) => p['data'])).toEqual([{ n: 3 }]);

    // Redis back (empty): a new epoch, and the broadcaster's messages carry positions again
    await server.start();
    expect(await history.ready()).toBe(true);
    await until('positions again', async () => {
      await b.toRoom(room, { n: 4 });
      return typeof back.pubs().at(-1)?.['offset'] === 'number';
    });
    expect(back.last().epoch).not.toBe(seen.epoch);
  });
});
