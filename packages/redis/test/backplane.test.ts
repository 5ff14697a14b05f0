import { randomUUID } from 'node:crypto';
import { isBcastError, type BroadcastResult } from '@bcast/core';
import { ENVELOPE_VERSION, type BackplaneEnvelope } from '@bcast/core/backplane';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRedisBackplane, type RedisBackplane } from '../src/index.js';
import { REDIS_URL, node, quietLogger, skipReason, until, whyUnreachable, type Node } from './helpers.js';

const skip = skipReason(`Redis at ${REDIS_URL}`, await whyUnreachable());

describe.skipIf(skip)('Redis backplane against a real Redis', () => {
  let admin: Redis;
  const cleanup: Array<() => Promise<unknown> | unknown> = [];

  beforeAll(() => {
    admin = new Redis(REDIS_URL, { lazyConnect: false, maxRetriesPerRequest: 1 });
    admin.on('error', () => {});
  });
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
  });
  afterAll(async () => {
    await admin.quit();
  });

  const numsub = async (channel: string): Promise<number> => {
    const reply = (await admin.call('PUBSUB', 'NUMSUB', channel)) as [string, number];
    return Number(reply[1]);
  };

  /** A backplane on a fresh channel, closed after the test. */
  function backplane(channel: string, options: Parameters<typeof createRedisBackplane>[0] = {}): RedisBackplane {
    const bp = createRedisBackplane({ url: REDIS_URL, channel, logger: quietLogger(), probeIntervalMs: 0, ...options });
    cleanup.push(() => bp.close());
    return bp;
  }

  function cluster(channel: string, ids: string[]): Node[] {
    return ids.map((nodeId) => {
      const n = node({ backplane: backplane(channel, { nodeId }) });
      cleanup.push(() => n.broadcaster.dispose());
      return n;
    });
  }

  it('delivers all / room / user / connections / except across two nodes, each exactly once and in per-publisher order', async () => {
    const channel = `bcast-test-${randomUUID()}`;
    const [A, B] = cluster(channel, ['node-a', 'node-b']) as [Node, Node];
    await Promise.all([A.broadcaster.ready(), B.broadcaster.ready()]);
    expect(await numsub(channel)).toBe(2);

    // who is where: room "r" and user "u1" have members on both nodes
    const members = {
      a1: { node: 'A', user: 'u1', rooms: ['r'] },
      a2: { node: 'A', user: 'u2', rooms: [] },
      a3: { node: 'A', user: undefined, rooms: ['r'] },
      b1: { node: 'B', user: 'u1', rooms: ['r'] },
      b2: { node: 'B', user: 'u3', rooms: [] },
      b3: { node: 'B', user: undefined, rooms: ['r', 'other'] },
    } as const;
    for (const [id, m] of Object.entries(members)) (m.node === 'A' ? A : B).add(id, m.user, [...m.rooms]);
    const ids = Object.keys(members) as Array<keyof typeof members>;

    type Op = { op: 'all' | 'room' | 'user' | 'connections' | 'except'; targets: (id: keyof typeof members) => boolean };
    const ops: Op[] = [
      { op: 'all', targets: () => true },
      { op: 'room', targets: (id) => (members[id].rooms as readonly string[]).includes('r') },
      { op: 'user', targets: (id) => members[id].user === 'u1' },
      { op: 'connections', targets: (id) => id === 'a2' || id === 'b2' || id === 'b3' },
      { op: 'except', targets: (id) => id !== 'a1' && id !== 'b1' },
    ];
    const send = (n: Node, from: string, seq: number): Promise<BroadcastResult> => {
      const op = ops[seq % ops.length] as Op;
      const message = { from, seq, op: op.op };
      const b = n.broadcaster;
      if (op.op === 'all') return b.toAll(message);
      if (op.op === 'room') return b.toRoom('r', message);
      if (op.op === 'user') return b.toUser('u1', message);
      if (op.op === 'connections') return b.toConnections(['a2', 'b2', 'b3'], message);
      return b.toAll(message, { except: ['a1', 'b1'] });
    };

    // Both nodes publish concurrently, without waiting between messages.
    const rounds = 40;
    const results = await Promise.all([
      ...Array.from({ length: rounds }, (_, seq) => send(A, 'A', seq)),
      ...Array.from({ length: rounds }, (_, seq) => send(B, 'B', seq)),
    ]);
    expect(results.every((r) => r.backplane === 'published')).toBe(true);

    // A fence from each publisher: pub/sub keeps per-publisher order, so anything duplicated or late
    // from A or B would arrive before its fence.
    await A.broadcaster.toAll({ from: 'A', fence: true });
    await B.broadcaster.toAll({ from: 'B', fence: true });
    const all = new Map([...A.conns, ...B.conns]);
    await Promise.all([...all.values()].flatMap((c) => [c.waitFor((m) => m['from'] === 'A' && m['fence'] === true), c.waitFor((m) => m['from'] === 'B' && m['fence'] === true)]));

    for (const id of ids) {
      const conn = all.get(id)!;
      for (const from of ['A', 'B']) {
        const expected = Array.from({ length: rounds }, (_, seq) => seq).filter((seq) => (ops[seq % ops.length] as Op).targets(id));
        const got = conn.messages.filter((m) => m['from'] === from && m['fence'] === undefined).map((m) => m['seq']);
        expect(got, `${id} from ${from}`).toEqual(expected);
      }
    }
    // the nodes' own envelopes came back through Redis and were ignored before parsing
    const statsA = (A.broadcaster.backplane as RedisBackplane).stats();
    expect(statsA.ownEchoes).toBe(rounds + 1);
    expect(statsA.delivered).toBe(rounds + 1);
    expect(statsA.dropped.total).toBe(0);
    expect(A.broadcaster.getHealthStatus().status).toBe('healthy');
  });

  it('carries every envelope field, the W3C trace context included, unchanged', async () => {
    const channel = `bcast-test-${randomUUID()}`;
    const a = backplane(channel, { nodeId: 'a' });
    const b = backplane(channel, { nodeId: 'b' });
    const got: BackplaneEnvelope[] = [];
    await b.subscribe((e) => got.push(e));
    const own: BackplaneEnvelope[] = [];
    await a.subscribe((e) => own.push(e));
    const envelope: BackplaneEnvelope = {
      v: ENVELOPE_VERSION,
      id: randomUUID(),
      nodeId: 'a',
      op: 'room',
      target: 'lobby',
      except: ['c1', 'c2'],
      enc: 'json',
      payload: '{"type":"chat","text":"\\"nodeId\\":\\"b\\""}',
      type: 'chat',
      volatile: true,
      trace: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', tracestate: 'vendor=x' },
      ts: 1_700_000_000_000,
    };
    await a.publish(envelope);
    await until('the envelope on b', () => got.length === 1);
    expect(got[0]).toEqual(envelope);
    await until('the echo on a', () => a.stats().ownEchoes === 1);
    expect(own).toEqual([]);
  });

  it('drops and counts garbage, unknown versions and foreign messages; a hand-written v1 envelope is delivered', async () => {
    const channel = `bcast-test-${randomUUID()}`;
    const [A, B] = cluster(channel, ['node-a', 'node-b']) as [Node, Node];
    await Promise.all([A.broadcaster.ready(), B.broadcaster.ready()]);
    const b1 = B.add('b1', 'u1', ['lobby']);
    const bp = B.broadcaster.backplane as RedisBackplane;

    await admin.publish(channel, 'not json');
    await admin.publish(channel, JSON.stringify({ v: 99, id: 'x', nodeId: 'z', op: 'all', enc: 'text', payload: 'future', ts: 1 }));
    await admin.publish(channel, JSON.stringify({ hello: 'world' }));
    await admin.publish(channel, JSON.stringify({ v: 1, id: 'x', nodeId: 'z', op: 'nope', enc: 'text', payload: 'x', ts: 1 }));
    await admin.publish(channel, '[1,2,3]');
    // fields in another order than bcast writes them, from a publisher that is not a bcast node
    await admin.publish(channel, JSON.stringify({ ts: Date.now(), payload: '{"type":"hand","n":1}', enc: 'json', target: 'lobby', op: 'room', nodeId: 'tool', id: 'h1', v: 1 }));
    await A.broadcaster.toUser('u1', { type: 'after-garbage' });

    await b1.waitFor((m) => m['type'] === 'after-garbage');
    expect(b1.messages.map((m) => m['type'])).toEqual(['hand', 'after-garbage']);
    expect(bp.stats().dropped).toEqual({ total: 5, invalidJson: 1, unknownVersion: 1, foreign: 2, malformed: 1 });
    expect(bp.health().status).toBe('healthy');
    expect(B.broadcaster.getHealthStatus().status).toBe('healthy');
  });

  it('works with a node-redis 5 client through the same shim, and leaves user-supplied clients open on close', async () => {
    const channel = `bcast-test-${randomUUID()}`;
    const client = createClient({ url: REDIS_URL, disableOfflineQueue: true });
    client.on('error', () => {});
    await client.connect();
    cleanup.push(() => client.close());
    const viaNodeRedis = createRedisBackplane({ client, channel, nodeId: 'nr', logger: quietLogger(), probeIntervalMs: 200 });
    const A = node({ backplane: backplane(channel, { nodeId: 'io' }) });
    const N = node({ backplane: viaNodeRedis });
    cleanup.push(() => A.broadcaster.dispose(), () => N.broadcaster.dispose());
    await Promise.all([A.broadcaster.ready(), N.broadcaster.ready()]);
    const a1 = A.add('a1', 'u');
    const n1 = N.add('n1', 'u');

    await A.broadcaster.toUser('u', { from: 'io' });
    await N.broadcaster.toUser('u', { from: 'nr' });
    await n1.waitFor((m) => m['from'] === 'io');
    await a1.waitFor((m) => m['from'] === 'nr');
    await until('its own echo', () => viaNodeRedis.stats().ownEchoes === 1);
    expect(viaNodeRedis.stats()).toMatchObject({ client: 'node-redis', subscribed: true, ownEchoes: 1, delivered: 1 });
    await until('a successful probe over node-redis', () => viaNodeRedis.stats().probe.ok >= 1);
    expect(await numsub(channel)).toBe(2);

    await viaNodeRedis.close();
    expect(client.isReady).toBe(true); // the user's client is theirs
    await until('the owned subscriber to be gone', async () => (await numsub(channel)) === 1);
    expect(viaNodeRedis.health()).toMatchObject({ status: 'unhealthy', reasons: ['closed'] });
    await expect(viaNodeRedis.publish({} as BackplaneEnvelope)).rejects.toSatisfy((e) => isBcastError(e, 'BCAST_BACKPLANE_UNAVAILABLE'));
  });

  it('close() unsubscribes, quits the clients it created and clears its timers', async () => {
    const channel = `bcast-test-${randomUUID()}`;
    const bp = createRedisBackplane({ url: REDIS_URL, channel, nodeId: `closing-${randomUUID()}`, logger: quietLogger(), probeIntervalMs: 50 });
    await bp.subscribe(() => {});
    expect(await bp.ready()).toBe(true);
    await until('a probe', () => bp.stats().probe.ok >= 1);
    const named = async (): Promise<number> => String(await admin.call('CLIENT', 'LIST')).split('\n').filter((l) => l.includes(`name=bcast-sub:${bp.nodeId}`)).length;
    expect(await named()).toBe(1);
    await bp.close();
    await bp.close(); // idempotent
    expect(await numsub(channel)).toBe(0);
    await until('the subscriber connection to be gone', async () => (await named()) === 0);
    const sent = bp.stats().probe.sent;
    await new Promise((r) => setTimeout(r, 200)); // several probe intervals: nothing runs after close
    expect(bp.stats().probe.sent).toBe(sent);
  });

  it('a subscribe() with Redis unreachable resolves, reports the reason, and publishes fail fast', async () => {
    const health: string[] = [];
    const bp = createRedisBackplane({ url: 'redis://127.0.0.1:1', logger: quietLogger(), onHealthChange: (h) => health.push(h.status) });
    cleanup.push(() => bp.close());
    const unsubscribe = await bp.subscribe(() => {});
    expect(typeof unsubscribe).toBe('function');
    expect(bp.health().status).toBe('degraded');
    expect(bp.health().reasons.join(' ')).toMatch(/publisher not connected.*ECONNREFUSED/);
    const error = await bp.publish({} as BackplaneEnvelope).catch((e: unknown) => e);
    expect(isBcastError(error, 'BCAST_BACKPLANE_UNAVAILABLE')).toBe(true);
    expect(health).toEqual(['degraded']);
  });
});
