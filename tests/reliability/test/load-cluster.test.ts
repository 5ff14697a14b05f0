/**
 * L3 toUser across 2 server processes through the Redis backplane (the in-memory bus cannot
 * cross processes). Each user has 3 connections: 2 on node A, 1 on node B. Node A publishes the
 * messages of the even users, node B those of the odd ones, so every user has connections local
 * to its publisher and remote ones; each message carries its user stream key and sequence number,
 * and every connection checks it got each one exactly once, in order.
 *
 * Redis: REDIS_URL (default redis://127.0.0.1:6379); unreachable: skipped with the reason printed,
 * or failed with BCAST_REQUIRE_REDIS=1.
 *
 * CI: 200 users x 3 connections x 20 messages (12,000 received); BCAST_LONG=1: 1,000 x 3 x 100 (300,000).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { LOCAL_ADDRESSES, LONG, REDIS_URL, figures, heavyFile, killChildren, quantile, skipWithoutRedis, startClients, startServer, waitFor, type Child, type ClientReport, type RunResult, type Server, type ServerStats } from '../src/harness.js';

heavyFile();

const USERS = LONG ? 1_000 : 200;
const PER_USER = LONG ? 100 : 20;
const skip = await skipWithoutRedis('L3 (toUser across 2 processes)');

describe.skipIf(skip)('toUser across processes', () => {
  let a: Server | undefined;
  let b: Server | undefined;
  let onA: Child | undefined;
  let onB: Child | undefined;

  afterAll(() => killChildren(onA, onB, a, b));

  it(`L3 toUser across 2 processes via Redis: ${USERS.toLocaleString('en')} users x 3 connections over 2 nodes, ${PER_USER} messages per user -> ${(USERS * 3 * PER_USER).toLocaleString('en')} received, 0 duplicates, 0 missing`, async () => {
    const channel = `bcast-reliability-${randomUUID()}`;
    a = await startServer({ adapter: 'ws', redis: { url: REDIS_URL, channel, nodeId: 'node-a' } }, { name: 'node A' });
    b = await startServer({ adapter: 'ws', redis: { url: REDIS_URL, channel, nodeId: 'node-b' } }, { name: 'node B' });
    onA = await startClients('clients on A');
    onB = await startClients('clients on B');
    // client g on A is user g % USERS (2 each), client g on B is user g (1 each)
    await expect(onA.request('connect', { port: a.port, n: 2 * USERS, users: USERS, subs: ['u'], localAddresses: LOCAL_ADDRESSES }, 60_000)).resolves.toMatchObject({ connected: 2 * USERS });
    await expect(onB.request('connect', { port: b.port, n: USERS, users: USERS, subs: ['u'], localAddresses: LOCAL_ADDRESSES }, 60_000)).resolves.toMatchObject({ connected: USERS });
    expect(await waitFor(async () => (await a?.request<ServerStats>('stats'))?.users === USERS && (await b?.request<ServerStats>('stats'))?.users === USERS, 10_000)).toBe(true);

    const targets = (parity: number) =>
      Array.from({ length: USERS }, (_, u) => u)
        .filter((u) => u % 2 === parity)
        .map((u) => ({ op: 'user', target: `u${u}`, key: `u${u}` }));
    const perNode = (USERS / 2) * PER_USER;
    const rate = LONG ? 1_000 : 250;
    const plan = (parity: number) => ({ durationMs: (perNode / rate) * 1000, rate, bytes: 256, targets: targets(parity), roundRobin: true });
    const [runA, runB] = await Promise.all([
      a.request<RunResult>('run', { plan: plan(0) }, 10 * 60_000),
      b.request<RunResult>('run', { plan: plan(1) }, 10 * 60_000),
    ]);
    const expected = { ...runA.sentByKey, ...runB.sentByKey };
    const total = USERS * 3 * PER_USER;
    const reports = await waitFor(async () => {
      const r = [await onA?.request<ClientReport>('report', { expected }), await onB?.request<ClientReport>('report', { expected })] as ClientReport[];
      return r[0]!.ok + r[1]!.ok >= total ? r : undefined;
    }, 15_000);
    const [ra, rb] = reports ?? [await onA.request<ClientReport>('report', { expected }), await onB.request<ClientReport>('report', { expected })];
    const sa = await a.request<ServerStats>('stats');
    const sb = await b.request<ServerStats>('stats');
    const sum = (k: 'ok' | 'dup' | 'missing' | 'wrong' | 'gaps'): number => ra![k] + rb![k];
    figures('L3', {
      users: USERS,
      connections: USERS * 3,
      sent: runA.sent + runB.sent,
      received: sum('ok'),
      duplicates: sum('dup'),
      missing: sum('missing'),
      wrong: sum('wrong'),
      p99: quantile([ra!.latency, rb!.latency], 0.99),
      backplane: { a: sa.monitor.backplane, b: sb.monitor.backplane },
      backplaneErrors: { a: runA.backplaneErrors, b: runB.backplaneErrors },
      health: { a: runA.health, b: runB.health },
    });
    expect(runA.sent + runB.sent).toBe(USERS * PER_USER);
    expect(runA.rejected + runA.thrown + runB.rejected + runB.thrown, [...runA.rejections, ...runB.rejections].join('; ')).toBe(0);
    expect(runA.backplaneFailed + runB.backplaneFailed, 'broadcasts whose publish failed').toBe(0);
    expect(sum('ok'), 'received').toBe(total);
    expect(sum('dup'), 'duplicates').toBe(0);
    expect(sum('missing'), 'missing').toBe(0);
    expect(sum('wrong'), "another user's messages").toBe(0);
  }, LONG ? 15 * 60_000 : 120_000);
});
