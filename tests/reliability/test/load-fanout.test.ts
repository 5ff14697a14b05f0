/**
 * L1 fan-out baseline and L2 room isolation under load: 10,000 lean WebSocket clients in a
 * client-load process, a bcast server (@bcast/ws) in another, loopback only. Every message carries
 * its stream key, its sequence number in that stream and the server's clock at the call, so each
 * client checks order, gaps, duplicates and membership, and measures the end-to-end latency.
 *
 * Event-loop delay: `monitorEventLoopDelay()` (Node's default 10 ms resolution) in the server
 * process, enabled for the traffic window; a sample is the time between two ticks of its timer.
 *
 * CI: 20 s per case at the plan's rates; BCAST_LONG=1: 60 s.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCAL_ADDRESSES, LONG, MB, figures, heavyFile, killChildren, quantile, startClients, startServer, waitFor, type Child, type ClientReport, type RunResult, type Server, type ServerStats } from '../src/harness.js';

heavyFile();

const N = 10_000;
const ROOMS = 100;
const DURATION_MS = LONG ? 60_000 : 20_000;

describe('load: fan-out to 10,000 clients', () => {
  let server: Server;
  let clients: Child;
  const expected: Record<string, number> = {};

  beforeAll(async () => {
    server = await startServer({ adapter: 'ws' });
    clients = await startClients();
    const connected = await clients.request<{ connected: number; failed: number; firstError?: string }>(
      'connect',
      { port: server.port, n: N, rooms: ROOMS, subs: ['a', 'r'], localAddresses: LOCAL_ADDRESSES, concurrency: 200 },
      120_000,
    );
    expect(connected, 'every client connected').toMatchObject({ connected: N, failed: 0 });
    const stats = await waitFor(async () => {
      const s = await server.request<ServerStats>('stats');
      return s.connections === N ? s : undefined;
    }, 10_000);
    expect(stats?.connections).toBe(N);
    expect(stats?.rooms).toBe(ROOMS);
  }, 180_000);

  afterAll(() => killChildren(clients, server));

  /** Runs `plan` in the server, then waits until the clients got everything (or 10 s passed). */
  async function runAndCollect(plan: Record<string, unknown>): Promise<{ run: RunResult; report: ClientReport; stats: ServerStats }> {
    await clients.request('reset');
    const before = await server.request<ServerStats>('stats');
    const run = await server.request<RunResult>('run', { plan }, DURATION_MS + 60_000);
    for (const [k, n] of Object.entries(run.sentByKey)) expected[k] = (expected[k] ?? 0) + n;
    const report = (await waitFor(async () => {
      const r = await clients.request<ClientReport>('report', { expected });
      return r.ok + r.dup + r.wrong >= run.delivered ? r : undefined;
    }, 10_000)) ?? (await clients.request<ClientReport>('report', { expected }));
    const after = await server.request<ServerStats>('stats');
    return { run, report, stats: { ...after, deliveries: after.deliveries - before.deliveries } };
  }

  it(`L1 fan-out baseline: ${N.toLocaleString('en')} clients, toAll 4/s x 256 B for ${DURATION_MS / 1000} s: every message in order, delivered == sent, p99 <= 500 ms, RSS <= 250 MB, event-loop delay p99 <= 50 ms`, async () => {
    const { run, report, stats } = await runAndCollect({ durationMs: DURATION_MS, rate: 4, bytes: 256, targets: [{ op: 'all', key: 'a' }] });
    const p99 = quantile(report.latency, 0.99);
    figures('L1', {
      sent: run.sent,
      deliveries: stats.deliveries,
      received: report.ok,
      missing: report.missing,
      dup: report.dup,
      p50: quantile(report.latency, 0.5),
      p99,
      max: Math.round(report.latency.max),
      rssPeakMB: Math.round(run.rssPeak / MB),
      eldP99: run.eld.p99,
      eldMax: run.eld.max,
      serverCpuMs: Math.round(run.cpuMs),
      clientCpuMs: Math.round(report.cpuMs),
    });
    expect(run.sent).toBe((DURATION_MS / 1000) * 4);
    expect(run.rejected + run.thrown, `broadcasts that rejected or threw: ${run.rejections.join('; ')}`).toBe(0);
    // delivered == sent, counted three ways: the results, the stats, and what the clients received
    expect(run.delivered).toBe(run.sent * N);
    expect(stats.deliveries).toBe(run.sent * N);
    expect(report.ok).toBe(run.sent * N);
    expect({ missing: report.missing, gaps: report.gaps, late: report.late, dup: report.dup, wrong: report.wrong, incomplete: report.incomplete }).toEqual({ missing: 0, gaps: 0, late: 0, dup: 0, wrong: 0, incomplete: 0 });
    expect(p99, 'end-to-end p99 (ms)').toBeLessThanOrEqual(500);
    expect(run.rssPeak, 'server RSS (bytes)').toBeLessThanOrEqual(250 * MB);
    // One toAll is about 130 ms of writes here; cut into slices of fanOutSliceMs (10 ms) that yield.
    expect(run.eld.p99, 'event-loop delay p99 (ms)').toBeLessThanOrEqual(50);
  }, DURATION_MS + 90_000);

  it(`L2 room isolation: ${N.toLocaleString('en')} clients in ${ROOMS} rooms of ${N / ROOMS}, toRoom 200/s to random rooms for ${DURATION_MS / 1000} s: 0 to non-members, every member gets all of its room's, p99 <= 200 ms`, async () => {
    const targets = Array.from({ length: ROOMS }, (_, i) => ({ op: 'room', target: `room${i}`, key: `r${i}` }));
    const { run, report, stats } = await runAndCollect({ durationMs: DURATION_MS, rate: 200, bytes: 256, targets });
    const p99 = quantile(report.latency, 0.99);
    figures('L2', {
      sent: run.sent,
      deliveries: stats.deliveries,
      received: report.ok,
      wrong: report.wrong,
      missing: report.missing,
      dup: report.dup,
      p50: quantile(report.latency, 0.5),
      p99,
      max: Math.round(report.latency.max),
      rssPeakMB: Math.round(run.rssPeak / MB),
      eldP99: run.eld.p99,
      serverCpuMs: Math.round(run.cpuMs),
      clientCpuMs: Math.round(report.cpuMs),
    });
    expect(run.sent).toBe((DURATION_MS / 1000) * 200);
    expect(run.rejected + run.thrown, run.rejections.join('; ')).toBe(0);
    expect(run.delivered).toBe(run.sent * (N / ROOMS));
    expect(stats.deliveries).toBe(run.sent * (N / ROOMS));
    expect(report.wrong, 'messages that reached a non-member').toBe(0);
    expect({ missing: report.missing, gaps: report.gaps, late: report.late, dup: report.dup, incomplete: report.incomplete }).toEqual({ missing: 0, gaps: 0, late: 0, dup: 0, incomplete: 0 });
    expect(report.ok).toBe(run.sent * (N / ROOMS));
    expect(p99, 'end-to-end p99 (ms)').toBeLessThanOrEqual(200);
  }, DURATION_MS + 90_000);
});
