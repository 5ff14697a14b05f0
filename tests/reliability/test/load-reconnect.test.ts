/**
 * L4 reconnect storm: the server process restarts (SIGTERM, the graceful recipe of
 * faults-shutdown.test.ts; then a new process on the same port) under N clients that reconnect with
 * jittered backoff: retry k waits random(0, min(10 s, 1 s x 2^k)), so the first retry comes
 * 0-1 s after the close.
 *
 * CI: N = 2,000; BCAST_LONG=1: 10,000.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { LOCAL_ADDRESSES, LONG, MB, figures, heavyFile, killChildren, startClients, startServer, waitFor, type Child, type ClientReport, type Server, type ServerStats } from '../src/harness.js';

heavyFile();

const N = LONG ? 10_000 : 2_000;

describe('reconnect storm', () => {
  let first: Server | undefined;
  let second: Server | undefined;
  let clients: Child | undefined;

  afterAll(() => killChildren(clients, first, second));

  it(`L4 reconnect storm: restart the server under ${N.toLocaleString('en')} clients reconnecting with jittered backoff (0-1 s, cap 10 s): all back <= 30 s, peak RSS <= 400 MB, no crash`, async () => {
    first = await startServer({ adapter: 'ws', sigterm: { drainTimeoutMs: 5_000 } }, { name: 'server (first)' });
    const port = first.port;
    clients = await startClients();
    await expect(
      clients.request('connect', { port, n: N, subs: ['a'], localAddresses: LOCAL_ADDRESSES, lenient: true, reconnect: { ports: [port], initialMs: 1_000, capMs: 10_000 } }, 120_000),
    ).resolves.toMatchObject({ connected: N });
    expect(await waitFor(async () => (await first?.request<ServerStats>('stats'))?.connections === N, 10_000)).toBe(true);

    const restartAt = performance.now();
    first.kill('SIGTERM');
    const exit = await first.exited;
    expect(exit).toMatchObject({ code: 0 });
    second = await startServer({ adapter: 'ws', port }, { name: 'server (restarted)' });
    const upAfterMs = performance.now() - restartAt;
    await second.request('rss-watch', { ms: 25 });
    const back = await waitFor(async () => (await second?.request<ServerStats>('stats'))?.connections === N, 40_000, 100);
    const backAfterMs = performance.now() - restartAt;
    const rssPeak = await second.request<number>('rss-peak');
    const stats = await second.request<ServerStats>('stats');
    const report = await clients.request<ClientReport>('report', {});
    let crashed = false;
    void second.exited.then(() => (crashed = true));
    figures('L4', {
      clients: N,
      restartedServerUpAfterMs: Math.round(upAfterMs),
      allBackAfterMs: Math.round(backAfterMs),
      rssPeakMB: Math.round(rssPeak / MB),
      reconnects: report.reconnects,
      failedAttempts: report.refusals,
      closeCodes: report.closeCodes,
    });
    expect(back, `all ${N} clients back (server has ${stats.connections})`).toBe(true);
    expect(backAfterMs, 'all back after the restart began (ms)').toBeLessThanOrEqual(30_000);
    expect(report.open).toBe(N);
    expect(report.reconnects).toBe(N);
    expect(rssPeak, 'peak RSS of the restarted server').toBeLessThanOrEqual(400 * MB);
    expect(crashed, 'the restarted server is still running').toBe(false);
    expect(stats.problems).toEqual([]);
  }, 150_000);
});
