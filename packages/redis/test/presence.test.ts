import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRedisPresence, type RedisPresence, type RedisPresenceOptions } from '../src/index.js';
import { REDIS_URL, node, quietLogger, skipReason, until, whyUnreachable, type Node } from './helpers.js';

const skip = skipReason(`Redis at ${REDIS_URL}`, await whyUnreachable());

describe.skipIf(skip)('createRedisPresence against a real Redis', () => {
  let admin: Redis;
  const prefix = `bcast-test:p:${randomUUID().slice(0, 8)}:`;
  const cleanup: Array<() => Promise<unknown> | unknown> = [];

  beforeAll(() => {
    admin = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    admin.on('error', () => {});
  });
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
  });
  afterAll(async () => {
    const keys = await admin.keys(`${prefix}*`);
    if (keys.length > 0) await admin.unlink(...keys);
    await admin.quit();
  });

  function store(options: RedisPresenceOptions = {}): RedisPresence {
    const p = createRedisPresence({ url: REDIS_URL, prefix, logger: quietLogger(), ...options });
    cleanup.push(() => p.close());
    return p;
  }

  /** A Broadcaster whose presence is kept in `presence`. */
  function member(presence: RedisPresence): Node {
    const n = node({ presence: { events: true, store: presence } });
    cleanup.push(() => n.broadcaster.dispose());
    return n;
  }

  const users = async (n: Node, room: string): Promise<string> =>
    (await n.broadcaster.presence(room)).users.map((u) => `${u.userId}×${u.connections}`).join(' ');

  it('two Broadcasters with one shared Redis see each other\'s members; leaving and disconnecting remove them', async () => {
    const A = member(store({ heartbeatMs: 1_000 }));
    const B = member(store({ heartbeatMs: 1_000 }));
    const room = `lobby-${randomUUID()}`;
    A.add('a1', 'alice', [room]);
    A.add('a2', 'alice', [room, 'elsewhere']);
    A.add('a3', undefined, [room]);
    B.add('b1', 'bob', [room]);
    B.add('b2', 'carol', ['elsewhere']);
    await until('both nodes listed', async () => (await users(A, room)) === 'alice×2 bob×1' && (await users(B, room)) === 'alice×2 bob×1');
    expect(await B.broadcaster.presence(room)).toEqual({ room, users: [{ userId: 'alice', connections: 2 }, { userId: 'bob', connections: 1 }], connections: 4 });
    const entries = await admin.zrange(`${prefix}${room}`, 0, -1);
    expect(entries.sort()).toEqual([`${A.broadcaster.nodeId}|a1|alice`, `${A.broadcaster.nodeId}|a2|alice`, `${A.broadcaster.nodeId}|a3|`, `${B.broadcaster.nodeId}|b1|bob`].sort());

    A.broadcaster.leave('a2', room);
    B.broadcaster.disconnect('b1');
    await until('the leave and the disconnect', async () => (await users(B, room)) === 'alice×1');
    expect((await A.broadcaster.presence(room)).connections).toBe(2);
  });

  it('a node that stops heartbeating (crashed) vanishes from the others within 2 x heartbeat', async () => {
    const heartbeatMs = 200;
    const A = member(store({ heartbeatMs }));
    // B's connection is its own: cutting it stops B's heartbeat without removing anything, as a crash would
    const client = new Redis(REDIS_URL, { enableOfflineQueue: false, maxRetriesPerRequest: 0 });
    client.on('error', () => {});
    cleanup.push(() => client.disconnect());
    const presenceOfB = store({ heartbeatMs, client });
    expect(await presenceOfB.ready()).toBe(true);
    const B = member(presenceOfB);
    const room = `crash-${randomUUID()}`;
    A.add('a1', 'alice', [room]);
    B.add('b1', 'bob', [room]);
    B.add('b2', 'bob', [room]);
    await until('both nodes listed', async () => (await users(A, room)) === 'alice×1 bob×2');
    // heartbeats keep B alive well past 2 x heartbeat
    await new Promise((r) => setTimeout(r, heartbeatMs * 4));
    expect(await users(A, room)).toBe('alice×1 bob×2');
    expect(presenceOfB.stats().heartbeats).toBeGreaterThanOrEqual(3);

    client.disconnect();
    const crashedAt = performance.now();
    await until('B to vanish', async () => (await users(A, room)) === 'alice×1', 2_000, 10);
    const vanishedMs = performance.now() - crashedAt;
    console.log(`[presence] a node that stopped heartbeating vanished after ${Math.round(vanishedMs)} ms (heartbeat ${heartbeatMs} ms)`);
    expect(vanishedMs).toBeLessThanOrEqual(2 * heartbeatMs + 100); // + the time to observe it
    // and the expired entries are dropped from the set, not only filtered
    expect(await admin.zcard(`${prefix}${room}`)).toBe(1);
  });

  it('close() removes this node\'s members at once; a heartbeat re-adds what Redis lost', async () => {
    const nodeRedis = createClient({ url: REDIS_URL, disableOfflineQueue: true });
    nodeRedis.on('error', () => {});
    await nodeRedis.connect();
    cleanup.push(() => nodeRedis.close());
    const presenceOfA = store({ heartbeatMs: 100, client: nodeRedis as never });
    const A = member(presenceOfA);
    const B = member(store({ heartbeatMs: 5_000 }));
    const room = `close-${randomUUID()}`;
    A.add('a1', 'alice', [room]);
    B.add('b1', 'bob', [room]);
    await until('both nodes listed', async () => (await users(B, room)) === 'alice×1 bob×1');

    await admin.del(`${prefix}${room}`); // Redis lost the room (flush, failover)
    await until('the heartbeat to re-add A', async () => (await users(B, room)) === 'alice×1');

    await presenceOfA.close();
    expect(await users(B, room)).toBe('');
    expect(presenceOfA.stats().members).toBe(0);
    await presenceOfA.add(room, { connectionId: 'late', userId: 'zed', nodeId: 'a' }); // after close: ignored
    expect(await users(B, room)).toBe('');
  });

  it('ids with the separator round-trip; list and add reject fast when Redis is away', async () => {
    const p = store({ nodeId: 'node|1%' });
    const room = `odd-${randomUUID()}`;
    await p.add(room, { connectionId: 'c|1', userId: 'u|%7C', nodeId: 'ignored' });
    await p.add(room, { connectionId: 'c2', userId: undefined, nodeId: 'ignored' });
    expect([...(await p.list(room))].sort((x, y) => (x.connectionId < y.connectionId ? -1 : 1))).toEqual([
      { nodeId: 'node|1%', connectionId: 'c2', userId: undefined },
      { nodeId: 'node|1%', connectionId: 'c|1', userId: 'u|%7C' },
    ]);

    const down = store({ url: 'redis://127.0.0.1:1', timeoutMs: 200 });
    const started = performance.now();
    await expect(down.list(room)).rejects.toMatchObject({ details: { written: false } });
    await expect(down.add(room, { connectionId: 'x', userId: 'x', nodeId: 'x' })).rejects.toThrow();
    expect(performance.now() - started).toBeLessThan(600);
  });
});
