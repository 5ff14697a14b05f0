/**
 * Slow consumers: S1 one client that never reads (ws), S3 the same over socket.io, S4 droppable
 * (volatile) messages to a client that reads at half the offered rate. Server, fast readers and
 * the slow client each in their own process; loopback only.
 *
 * A non-reader is detected once the kernel's buffers (about 4 MB on loopback) and then the
 * 1 MiB `maxBufferedBytes` are full: at 1 MB/s, after about 5 s.
 *
 * CI: 20 s of traffic for S1, 12 s for S3 (its target is 10 s), 10 s for S4; BCAST_LONG=1: 60 s.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { LONG, MB, figures, heavyFile, killChildren, quantile, sleep, startClients, startServer, waitFor, type Child, type ClientReport, type RunResult, type Server, type ServerStats } from '../src/harness.js';

heavyFile();

type Events = { disconnects: Array<{ u: string; code: number; reason: string; at: number }>; socketsClosed: Array<{ u: string; at: number }> };

/** Timer latency allowed on top of a 1 s timer (terminateAfterMs) firing on a loaded 2-core machine. */
const TIMER_SLACK_MS = 100;

let running: Array<Child | undefined> = [];
afterEach(() => {
  killChildren(...running);
  running = [];
});

async function nonReaderCase(adapter: 'ws' | 'socket.io', name: string, durationMs: number): Promise<void> {
  const transport = adapter === 'ws' ? 'ws' : 'socketio';
  const server = await startServer({ adapter, record: true });
  const readers = await startClients('readers');
  const slow = await startClients('non-reader');
  running = [server, readers, slow];
  // 10 fast readers (users u0..u9) and one that never reads (u100), all in the hot room
  await expect(readers.request('connect', { port: server.port, n: 10, base: 0, rooms: 1, subs: ['r'], transport })).resolves.toMatchObject({ connected: 10 });
  await expect(slow.request('connect', { port: server.port, n: 1, base: 100, rooms: 1, subs: ['r'], transport, pause: 'all' })).resolves.toMatchObject({ connected: 1 });
  await waitFor(async () => (await server.request<ServerStats>('stats')).connections === 11, 5_000);
  await sleep(500);
  const rssBefore = (await server.request<ServerStats>('stats')).memory.rss;
  await server.request('rss-watch', { ms: 50 });
  const run = await server.request<RunResult>('run', { plan: { durationMs, rate: 1_000, bytes: 1_024, targets: [{ op: 'room', target: 'room0', key: 'r0' }] } }, durationMs + 60_000);
  const rssPeak = await server.request<number>('rss-peak');
  const report = (await waitFor(async () => {
    const r = await readers.request<ClientReport>('report', { expected: run.sentByKey });
    return r.ok >= run.sent * 10 ? r : undefined;
  }, 10_000)) ?? (await readers.request<ClientReport>('report', { expected: run.sentByKey }));
  const slowReport = await slow.request<ClientReport>('report', {});
  const stats = await server.request<ServerStats>('stats');
  const events = await server.request<Events>('events', {});
  const closed = events.disconnects.filter((e) => e.u === 'u100');
  const socketClosed = events.socketsClosed.find((e) => e.u === 'u100');
  const stoppedAt = slowReport.stoppedReadingAt ?? Number.NaN;
  const detectedAfterMs = (closed[0]?.at ?? Number.NaN) - stoppedAt;
  const terminatedAfterMs = (socketClosed?.at ?? Number.NaN) - (closed[0]?.at ?? Number.NaN);
  figures(name, {
    sent: run.sent,
    detectedAfterMs: Math.round(detectedAfterMs),
    terminatedAfterCloseMs: Math.round(terminatedAfterMs),
    disconnects: stats.monitor.disconnects,
    rssGrowthMB: +((rssPeak - rssBefore) / MB).toFixed(1),
    readersReceived: report.ok,
    readersMissing: report.missing,
    readersP99: quantile(report.latency, 0.99),
    eldP99: run.eld.p99,
  });
  expect(run.rejected + run.thrown, run.rejections.join('; ')).toBe(0);
  expect(closed.map((e) => [e.code, e.reason]), 'how bcast closed the non-reader').toEqual([[1013, 'slow consumer']]);
  expect(stats.monitor.disconnects['1013:slow_consumer']).toBe(1);
  expect(Object.keys(stats.monitor.disconnects), 'no other disconnects').toEqual(['1013:slow_consumer']);
  expect(detectedAfterMs, 'closed after it stopped reading (ms)').toBeLessThanOrEqual(10_000);
  expect(socketClosed, 'its socket was closed (terminated)').toBeDefined();
  expect(terminatedAfterMs, 'terminated after the 1013 close (ms)').toBeLessThanOrEqual(1_000 + TIMER_SLACK_MS);
  expect(rssPeak - rssBefore, 'server RSS growth (bytes)').toBeLessThanOrEqual(50 * MB);
  // the fast readers are unaffected: every message, in order
  expect(report.ok).toBe(run.sent * 10);
  expect({ missing: report.missing, gaps: report.gaps, late: report.late, dup: report.dup, wrong: report.wrong }).toEqual({ missing: 0, gaps: 0, late: 0, dup: 0, wrong: 0 });
  expect(report.open).toBe(10);
  expect(stats.connections).toBe(10);
}

describe('slow consumers', () => {
  it(`S1 one client that never reads, in a hot room at 1 KiB x 1,000/s with 10 fast readers: 1013 "slow consumer" <= 10 s after it stops reading, terminated <= 1 s later, RSS growth <= 50 MB, fast readers get everything`, async () => {
    await nonReaderCase('ws', 'S1', LONG ? 60_000 : 20_000);
  }, 150_000);

  it(`S3 the same over socket.io: disconnect(true) with "slow consumer" <= 10 s, RSS growth <= 50 MB`, async () => {
    await nonReaderCase('socket.io', 'S3', LONG ? 60_000 : 12_000);
  }, 150_000);

  it(`S4 droppable messages: volatile dropped above the 256 KiB soft limit for a client reading at 50 % of the offered rate; it stays connected ${LONG ? 60 : 10} s, the drops counted equal what it missed, non-volatile never dropped`, async () => {
    const durationMs = LONG ? 60_000 : 10_000;
    // 2 KiB x 1,000/s offered (2 MB/s), read at 1 MB/s: the kernel's ~4 MB fill in ~4 s, then
    // the server's buffer crosses the soft limit and volatile messages are dropped.
    const server = await startServer({ adapter: 'ws', record: true });
    const halfRate = await startClients('half-rate reader');
    const fast = await startClients('fast reader');
    running = [server, halfRate, fast];
    await expect(halfRate.request('connect', { port: server.port, n: 1, base: 0, rooms: 1, subs: ['=v', '=n'], readBytesPerSec: 1_000_000 })).resolves.toMatchObject({ connected: 1 });
    await expect(fast.request('connect', { port: server.port, n: 1, base: 1, rooms: 1, subs: ['=v', '=n'] })).resolves.toMatchObject({ connected: 1 });
    await waitFor(async () => (await server.request<ServerStats>('stats')).connections === 2, 5_000);
    // 9 volatile messages, then 1 that is not
    const targets = [...Array.from({ length: 9 }, () => ({ op: 'room', target: 'room0', key: 'v', volatile: true })), { op: 'room', target: 'room0', key: 'n' }];
    const run = await server.request<RunResult>('run', { plan: { durationMs, rate: 1_000, bytes: 2_048, targets, roundRobin: true } }, durationMs + 60_000);
    const during = await server.request<ServerStats>('stats');
    // now let it read everything it was sent
    await halfRate.request('resume');
    const report = (await waitFor(async () => {
      const r = await halfRate.request<ClientReport>('report', { expected: run.sentByKey });
      return r.ok + r.missing >= run.sent && (r.missingByKey['n'] ?? 0) === 0 ? r : undefined;
    }, 20_000)) ?? (await halfRate.request<ClientReport>('report', { expected: run.sentByKey }));
    const fastReport = await fast.request<ClientReport>('report', { expected: run.sentByKey });
    const stats = await server.request<ServerStats>('stats');
    const dropped = stats.monitor.dropped['backpressure'] ?? 0;
    figures('S4', {
      sent: run.sent,
      sentByKey: run.sentByKey,
      dropped,
      resultsDropped: run.dropped,
      missedVolatile: report.missingByKey['v'] ?? 0,
      missedNonVolatile: report.missingByKey['n'] ?? 0,
      receivedVolatile: report.ok,
      fastMissing: fastReport.missing,
      disconnects: during.monitor.disconnects,
    });
    expect(run.rejected + run.thrown, run.rejections.join('; ')).toBe(0);
    // still connected after the whole run, never closed as a slow consumer
    expect(during.connections).toBe(2);
    expect(during.monitor.disconnects).toEqual({});
    expect(report.open).toBe(1);
    // drops happened, each counted, and equal exactly what the client missed
    expect(dropped, 'volatile messages dropped').toBeGreaterThan(0);
    expect(run.dropped).toBe(dropped);
    expect(report.missingByKey['v'] ?? 0).toBe(dropped);
    expect(report.missingByKey['n'] ?? 0, 'non-volatile messages missed').toBe(0);
    expect({ late: report.late, dup: report.dup, wrong: report.wrong }).toEqual({ late: 0, dup: 0, wrong: 0 });
    // the fast reader missed nothing
    expect(fastReport.missing).toBe(0);
    expect(fastReport.ok).toBe(run.sent);
  }, 150_000);
});
