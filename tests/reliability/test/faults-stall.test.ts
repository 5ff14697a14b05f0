/**
 * S2 mass stall and F1 clients killed mid-broadcast, on one ws server with L1-like traffic
 * (toAll 4/s x 256 B) and healthy clients in their own process throughout.
 *
 * S2: a client process holding 1,000 sockets is SIGSTOPped: it reads nothing and answers no ping.
 * At 4 x 256 B/s nothing fills a buffer, so the heartbeat finds them: test config
 * `pingIntervalMs: 5_000`, one missed pong terminates at the next tick, i.e. 5 to 10 s after the
 * stop. F1: a client process holding 1,000 sockets is SIGKILLed during the traffic.
 *
 * CI: 2,000 healthy clients (+ 1,000 stalled, + 1,000 killed); BCAST_LONG=1: 9,000.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCAL_ADDRESSES, LONG, MB, figures, heavyFile, killChildren, quantile, sleep, startClients, startServer, waitFor, type Child, type ClientReport, type RunResult, type Server, type ServerStats } from '../src/harness.js';

heavyFile();

const HEALTHY = LONG ? 9_000 : 2_000;
const GROUP = 1_000;
const PING_MS = 5_000;

describe('stalled and killed client processes', () => {
  let server: Server;
  let healthy: Child;
  let stalled: Child | undefined;
  let doomed: Child | undefined;

  beforeAll(async () => {
    server = await startServer({ adapter: 'ws', broadcaster: { pingIntervalMs: PING_MS } });
    healthy = await startClients('healthy');
    await expect(
      healthy.request('connect', { port: server.port, n: HEALTHY, base: 0, subs: ['a'], localAddresses: LOCAL_ADDRESSES, lenient: true }, 120_000),
    ).resolves.toMatchObject({ connected: HEALTHY });
  }, 180_000);

  afterAll(() => killChildren(stalled, doomed, healthy, server));

  /** Polls the server's connection count until it equals `n`; resolves with the time it took (ms), or NaN. */
  async function connectionsReach(n: number, timeoutMs: number, from = performance.now()): Promise<number> {
    const ok = await waitFor(async () => (await server.request<ServerStats>('stats')).connections === n, timeoutMs, 50);
    return ok ? performance.now() - from : Number.NaN;
  }

  it(`S2 mass stall: SIGSTOP a client process holding ${GROUP.toLocaleString('en')} of ${(HEALTHY + GROUP).toLocaleString('en')} sockets: all closed <= 15 s, RSS growth <= 200 MB, the others' p99 <= 500 ms; after SIGCONT they see a close or 1006`, async () => {
    stalled = await startClients('stalled');
    await expect(stalled.request('connect', { port: server.port, n: GROUP, base: 100_000, subs: ['a'], localAddresses: LOCAL_ADDRESSES, lenient: true }, 60_000)).resolves.toMatchObject({
      connected: GROUP,
    });
    expect(await connectionsReach(HEALTHY + GROUP, 10_000)).not.toBeNaN();
    await healthy.request('reset');
    const rssBefore = (await server.request<ServerStats>('stats')).memory.rss;
    await server.request('rss-watch', { ms: 50 });
    const running = server.request<RunResult>('run', { plan: { durationMs: 15_000, rate: 4, bytes: 256, targets: [{ op: 'all', key: 'a' }] } }, 80_000);
    await sleep(2_000);
    const stoppedAt = performance.now();
    stalled.kill('SIGSTOP');
    const closedAfterMs = await connectionsReach(HEALTHY, 20_000, stoppedAt);
    const run = await running;
    const rssPeak = await server.request<number>('rss-peak');
    const stats = await server.request<ServerStats>('stats');
    const report = await healthy.request<ClientReport>('report', {});
    stalled.kill('SIGCONT');
    const after = await waitFor(async () => {
      const r = await stalled?.request<ClientReport>('report', {}, 10_000);
      return r && r.open === 0 ? r : undefined;
    }, 15_000);
    const p99 = quantile(report.latency, 0.99);
    figures('S2', {
      stalled: GROUP,
      healthy: HEALTHY,
      allClosedAfterMs: Math.round(closedAfterMs),
      disconnects: stats.monitor.disconnects,
      rssGrowthMB: +((rssPeak - rssBefore) / MB).toFixed(1),
      othersP99: p99,
      othersMissing: report.gaps,
      stalledSawAfterSigcont: after?.closeCodes,
      eldP99: run.eld.p99,
    });
    expect(closedAfterMs, 'all stalled sockets closed after SIGSTOP (ms)').toBeLessThanOrEqual(15_000);
    expect(stats.monitor.disconnects['1001:no_pong']).toBe(GROUP);
    expect(rssPeak - rssBefore, 'server RSS growth (bytes)').toBeLessThanOrEqual(200 * MB);
    expect(p99, "the other clients' p99 (ms)").toBeLessThanOrEqual(500);
    expect({ gaps: report.gaps, late: report.late, dup: report.dup, wrong: report.wrong, open: report.open }).toEqual({ gaps: 0, late: 0, dup: 0, wrong: 0, open: HEALTHY });
    expect(run.rejected + run.thrown, run.rejections.join('; ')).toBe(0);
    // after SIGCONT every stalled client learns that it is closed: a close frame, or 1006
    expect(after?.open, 'stalled clients still open after SIGCONT').toBe(0);
    expect(Object.values(after?.closeCodes ?? {}).reduce((a, b) => a + b, 0)).toBe(GROUP);
    killChildren(stalled);
  }, 120_000);

  it(`F1 clients killed mid-broadcast: SIGKILL a client process holding ${GROUP.toLocaleString('en')} sockets during L1-like traffic: getStats().connections == remaining <= 2 s, no send error reaches the caller, the loop never throws`, async () => {
    doomed = await startClients('doomed');
    await expect(doomed.request('connect', { port: server.port, n: GROUP, base: 200_000, subs: ['a'], localAddresses: LOCAL_ADDRESSES, lenient: true }, 60_000)).resolves.toMatchObject({
      connected: GROUP,
    });
    expect(await connectionsReach(HEALTHY + GROUP, 10_000)).not.toBeNaN();
    await healthy.request('reset');
    const before = await server.request<ServerStats>('stats');
    const running = server.request<RunResult>('run', { plan: { durationMs: 8_000, rate: 4, bytes: 256, targets: [{ op: 'all', key: 'a' }] } }, 60_000);
    await sleep(2_000);
    const killedAt = performance.now();
    doomed.kill('SIGKILL');
    const removedAfterMs = await connectionsReach(HEALTHY, 5_000, killedAt);
    const run = await running;
    const stats = await server.request<ServerStats>('stats');
    const report = await healthy.request<ClientReport>('report', {});
    const newErrors = Object.fromEntries(Object.entries(stats.monitor.errorsByCategory).map(([k, v]) => [k, v - (before.monitor.errorsByCategory[k] ?? 0)]));
    figures('F1', {
      killed: GROUP,
      removedAfterMs: Math.round(removedAfterMs),
      connections: stats.connections,
      results: { delivered: run.delivered, failed: run.failed, removed: run.removed },
      sendErrors: newErrors,
      rejected: run.rejected,
      thrown: run.thrown,
      othersP99: quantile(report.latency, 0.99),
    });
    expect(removedAfterMs, 'connections == remaining after the kill (ms)').toBeLessThanOrEqual(2_000);
    expect(stats.connections).toBe(HEALTHY);
    expect(run.rejected, `broadcasts that rejected: ${run.rejections.join('; ')}`).toBe(0);
    expect(run.thrown, 'broadcast calls that threw').toBe(0);
    expect({ gaps: report.gaps, late: report.late, dup: report.dup, open: report.open }).toEqual({ gaps: 0, late: 0, dup: 0, open: HEALTHY });
  }, 90_000);
});
