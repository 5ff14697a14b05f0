/**
 * F7 server process crash: 2 nodes joined by the Redis backplane, each with its own clients;
 * every user has one connection on each node. Node B broadcasts toAll 4/s throughout. Node A is
 * SIGKILLed: its clients see 1006 and reconnect (jittered backoff, trying A, then B) to B. B's
 * clients must not notice (every toAll message, in order, p99 <= 500 ms); afterwards, toUser for
 * every user reaches each of its connections exactly once (the moved one included).
 *
 * Redis: REDIS_URL (default redis://127.0.0.1:6379); unreachable: skipped with the reason printed,
 * or failed with BCAST_REQUIRE_REDIS=1.
 *
 * CI: 1,000 clients per node; BCAST_LONG=1: 5,000.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { LOCAL_ADDRESSES, LONG, REDIS_URL, figures, heavyFile, killChildren, quantile, skipWithoutRedis, sleep, startClients, startServer, waitFor, type Child, type ClientReport, type RunResult, type Server, type ServerStats } from '../src/harness.js';

heavyFile();

const PER_NODE = LONG ? 5_000 : 1_000;
const PER_USER = 3; // toUser messages per user after the move
const skip = await skipWithoutRedis('F7 (server process crash, 2 nodes via Redis)');

describe.skipIf(skip)('server process crash', () => {
  let a: Server | undefined;
  let b: Server | undefined;
  let onA: Child | undefined;
  let onB: Child | undefined;

  afterAll(() => killChildren(onA, onB, a, b));

  it(`F7 server process crash: SIGKILL node A of 2 (${PER_NODE.toLocaleString('en')} clients each): its clients reconnect to B <= 20 s, B's traffic unaffected, a moved user gets exactly one copy afterwards`, async () => {
    const channel = `bcast-reliability-${randomUUID()}`;
    a = await startServer({ adapter: 'ws', redis: { url: REDIS_URL, channel, nodeId: 'node-a' } }, { name: 'node A' });
    b = await startServer({ adapter: 'ws', redis: { url: REDIS_URL, channel, nodeId: 'node-b' } }, { name: 'node B' });
    onA = await startClients('clients of A');
    onB = await startClients('clients of B');
    const common = { n: PER_NODE, users: PER_NODE, subs: ['a', 'u', 'v'], lenient: ['a', 'u'], localAddresses: LOCAL_ADDRESSES };
    await expect(onA.request('connect', { ...common, port: a.port, reconnect: { ports: [a.port, b.port], initialMs: 1_000, capMs: 10_000 } }, 60_000)).resolves.toMatchObject({
      connected: PER_NODE,
    });
    await expect(onB.request('connect', { ...common, port: b.port }, 60_000)).resolves.toMatchObject({ connected: PER_NODE });
    expect(await waitFor(async () => (await b?.request<ServerStats>('stats'))?.connections === PER_NODE, 10_000)).toBe(true);

    // B's traffic, before, during and after the crash
    const traffic = b.request<RunResult>('run', { plan: { durationMs: LONG ? 25_000 : 12_000, rate: 4, bytes: 256, targets: [{ op: 'all', key: 'a' }] } }, 90_000);
    await sleep(3_000);
    await onB.request('reset');
    const killedAt = performance.now();
    a.kill('SIGKILL');
    const moved = await waitFor(async () => (await b?.request<ServerStats>('stats'))?.connections === 2 * PER_NODE, 30_000, 100);
    const movedAfterMs = performance.now() - killedAt;
    const run = await traffic;
    const bReport = await onB.request<ClientReport>('report', {});

    // now every user has 2 connections on B: toUser from B reaches each exactly once
    await onA.request('reset');
    await onB.request('reset');
    const items = Array.from({ length: PER_USER }, () => Array.from({ length: PER_NODE }, (_, u) => ({ op: 'user', target: `u${u}`, key: `v${u}` }))).flat();
    const sent = await b.request<{ delivered: number; rejected: number; failed: number }>('send', { items }, 60_000);
    const expected = Object.fromEntries(Array.from({ length: PER_NODE }, (_, u) => [`v${u}`, PER_USER]));
    const reports = await waitFor(async () => {
      const r = [await onA?.request<ClientReport>('report', { expected }), await onB?.request<ClientReport>('report', { expected })] as ClientReport[];
      return r[0]!.ok + r[1]!.ok >= 2 * PER_NODE * PER_USER ? r : undefined;
    }, 10_000);
    const [ra, rb] = reports ?? [await onA.request<ClientReport>('report', { expected }), await onB.request<ClientReport>('report', { expected })];
    const statusA = await onA.request<{ open: number; reconnects: number; closeCodes: Record<string, number>; refusals: Record<string, number> }>('status');
    figures('F7', {
      perNode: PER_NODE,
      movedAfterMs: Math.round(movedAfterMs),
      movedClients: statusA.reconnects,
      theirCloseCodes: statusA.closeCodes,
      failedAttempts: statusA.refusals,
      bTraffic: { sent: run.sent, gaps: bReport.gaps, dup: bReport.dup, p99: quantile(bReport.latency, 0.99), rejected: run.rejected },
      toUserAfter: { delivered: sent.delivered, movedReceived: ra!.ok, movedDup: ra!.dup, movedMissing: ra!.missing, stayedReceived: rb!.ok, stayedDup: rb!.dup, stayedMissing: rb!.missing },
    });
    expect(moved, 'all of A clients now on B').toBe(true);
    expect(movedAfterMs, 'A clients reconnected to B after the kill (ms)').toBeLessThanOrEqual(20_000);
    expect(statusA.closeCodes).toEqual({ '1006': PER_NODE });
    // B's own clients did not notice
    expect(run.rejected + run.thrown, run.rejections.join('; ')).toBe(0);
    expect({ gaps: bReport.gaps, late: bReport.late, dup: bReport.dup, wrong: bReport.wrong, open: bReport.open }).toEqual({ gaps: 0, late: 0, dup: 0, wrong: 0, open: PER_NODE });
    expect(quantile(bReport.latency, 0.99), "B clients' p99 during the crash (ms)").toBeLessThanOrEqual(500);
    // exactly one copy per connection afterwards, for moved and staying connections alike
    expect(sent.rejected).toBe(0);
    expect(sent.delivered).toBe(2 * PER_NODE * PER_USER);
    expect({ ok: ra!.ok, dup: ra!.dup, late: ra!.late, missing: ra!.missing, wrong: ra!.wrong }, 'moved connections').toEqual({ ok: PER_NODE * PER_USER, dup: 0, late: 0, missing: 0, wrong: 0 });
    expect({ ok: rb!.ok, dup: rb!.dup, late: rb!.late, missing: rb!.missing, wrong: rb!.wrong }, 'connections that stayed on B').toEqual({ ok: PER_NODE * PER_USER, dup: 0, late: 0, missing: 0, wrong: 0 });
  }, 150_000);
});
