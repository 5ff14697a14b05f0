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
 * CI: 200 users x 3 connections x 20 messages (12,000 received), 250 broadcasts/s per node;
 * BCAST_LONG=1: 1,000 x 3 x 100 (300,000), 1,000/s per node.
 *
 * A second case pins what made L3 lose messages on a busy machine (see its comment).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { LOCAL_ADDRESSES, LONG, REDIS_URL, figures, heavyFile, killChildren, quantile, skipWithoutRedis, sleep, startClients, startServer, waitFor, type Child, type ClientReport, type RunResult, type Server, type ServerStats } from '../src/harness.js';

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
    const sum = (k: 'ok' | 'dup' | 'late' | 'missing' | 'wrong' | 'gaps'): number => ra![k] + rb![k];
    figures('L3', {
      users: USERS,
      connections: USERS * 3,
      sent: runA.sent + runB.sent,
      received: sum('ok'),
      duplicates: sum('dup'),
      late: sum('late'),
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
    expect(sum('late'), 'out of order').toBe(0);
    expect(sum('missing'), 'missing').toBe(0);
    expect(sum('wrong'), "another user's messages").toBe(0);
  }, LONG ? 15 * 60_000 : 120_000);

  // What made L3 fail on a busy machine, made deterministic: node A's own event loop stops for
  // 300 ms (a long GC pause, a big synchronous job) while one of its PUBLISHes is on the wire.
  // Redis answers in under a millisecond, but after the pause the 250 ms publish timeout fires
  // before the reply is read: the publish is aborted and the backplane drops its (healthy)
  // publisher connection. Until d4fc818 the publishes refused meanwhile opened the backplane
  // circuit, and with the default recoveryTimeoutMs (30 s) cross-node delivery stayed off: 2,846
  // of 4,000 broadcasts lost. Since, nothing is lost, but a publish refused during the reset is
  // retried ~50 ms later and arrives after broadcasts called after it: node B's clients get one
  // node's messages out of order (README: "between nodes ... in each publisher's order").
  it('L3 with event-loop stalls: 3 pauses of 300 ms on the publishing node during toUser at 500/s: no cross-node message lost, duplicated or out of order', async () => {
    const channel = `bcast-reliability-${randomUUID()}`;
    const users = 10;
    const pa = await startServer({ adapter: 'ws', redis: { url: REDIS_URL, channel, nodeId: 'node-a' } }, { name: 'node A (stalls)' });
    const pb = await startServer({ adapter: 'ws', redis: { url: REDIS_URL, channel, nodeId: 'node-b' } }, { name: 'node B (stalls)' });
    const remote = await startClients('clients on B (stalls)');
    try {
      await expect(remote.request('connect', { port: pb.port, n: users, users, subs: ['u'] })).resolves.toMatchObject({ connected: users });
      const targets = Array.from({ length: users }, (_, u) => ({ op: 'user', target: `u${u}`, key: `u${u}` }));
      const running = pa.request<RunResult>('run', { plan: { durationMs: 8_000, rate: 500, bytes: 256, targets, roundRobin: true } }, 60_000);
      for (let i = 0; i < 3; i++) {
        await sleep(2_000);
        await pa.request('block', { ms: 300, during: targets[0] });
      }
      const run = await running;
      const expected = { ...run.sentByKey, u0: (run.sentByKey['u0'] ?? 0) + 3 }; // the 3 broadcasts started with the pauses
      const report = (await waitFor(async () => {
        const r = await remote.request<ClientReport>('report', { expected });
        return r.ok >= run.sent + 3 ? r : undefined;
      }, 5_000)) ?? (await remote.request<ClientReport>('report', { expected }));
      const health = (await pa.request<{ circuits: Record<string, { state: string; opens: number; lastError?: string }>; backplane: { publisherResets: number; lastPublisherReset?: string; publishAborts: number } }>('health'));
      figures('L3 with stalls', {
        sent: run.sent,
        backplaneFailed: run.backplaneFailed,
        backplaneStatus: run.backplaneStatus,
        remoteReceived: report.ok,
        remoteMissing: report.missing,
        remoteLate: report.late,
        remoteDuplicates: report.dup,
        circuit: health.circuits['backplane'],
        publisherResets: health.backplane.publisherResets,
        lastPublisherReset: health.backplane.lastPublisherReset,
        publishAborts: health.backplane.publishAborts,
      });
      expect(run.backplaneFailed, `broadcasts whose publish failed: ${JSON.stringify(run.backplaneStatus)}`).toBe(0);
      expect({ missing: report.missing, late: report.late, dup: report.dup, wrong: report.wrong }, "remote clients: every message, once, in the publisher's order").toEqual({ missing: 0, late: 0, dup: 0, wrong: 0 });
    } finally {
      killChildren(remote, pa, pb);
    }
  }, 60_000);
});
