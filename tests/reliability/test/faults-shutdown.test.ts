/**
 * G1 graceful shutdown: SIGTERM to a server process with many clients, some of them in a
 * SIGSTOPped client process (they never answer the close handshake).
 *
 * The SIGTERM recipe the server process runs (src/server.mjs, `installSigterm`):
 *
 *   let stopping;
 *   // `on`, not `once`: a second SIGTERM during the drain must reach this handler, not Node's
 *   // default one (which exits at once with 143)
 *   process.on('SIGTERM', () => {
 *     stopping ??= (async () => {
 *       // new upgrades get 503, every client gets 1001, the ones that do not close within
 *       // drainTimeoutMs are terminated; resolves with { broadcastsFinished, closed, terminated, durationMs }
 *       const report = await broadcaster.shutdown({ drainTimeoutMs: 5_000 });
 *       // stop listening before removing the adapter: an upgrade that finds no upgrade listener
 *       // is answered by the request handler (a 404 here) instead of 503
 *       const closed = new Promise((resolve) => server.close(resolve));
 *       server.closeAllConnections();            // idle keep-alive HTTP connections
 *       await attachment.dispose();              // the adapter's verifyClient hook and listeners
 *       wss.close();                             // the WebSocketServer's listeners on the http server
 *       await closed;
 *       // (with OpenTelemetry: await sdk.shutdown() here, to flush)
 *       process.exitCode = 0;                    // nothing of bcast holds the loop: the process exits by itself
 *     })();
 *   });
 *
 * (The test server also closes its IPC channel and arms an unref'd 3 s timer that exits with 3
 * and prints what is still open, so a handle that holds the loop fails the exit-code check.)
 *
 * CI: 3,000 clients of which 300 are stalled; BCAST_LONG=1: 10,000 of which 1,000.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { UpgradeError, openWs } from '../src/lean-ws.mjs';
import { LOCAL_ADDRESSES, LONG, figures, heavyFile, killChildren, sleep, startClients, startServer, waitFor, type Child, type ClientReport, type Server, type ServerStats } from '../src/harness.js';

heavyFile();

const TOTAL = LONG ? 10_000 : 3_000;
const STALLED = TOTAL / 10;
const HEALTHY = TOTAL - STALLED;

interface ShutdownMessage {
  type: 'shutdown';
  report: { broadcastsFinished: number; closed: number; terminated: number; durationMs: number };
  before: number;
  closedAt: Array<Record<string, unknown>>;
  remaining: Array<{ name: string; pipe?: boolean; fd?: number; remote?: string; local?: string; ms?: number; fn?: string }>;
  resources: Record<string, number>;
  sigterms: number;
  durationMs: number;
  problems: string[];
}

describe('graceful shutdown', () => {
  let server: Server | undefined;
  let healthy: Child | undefined;
  let stalled: Child | undefined;

  afterAll(() => killChildren(stalled, healthy, server));

  it(`G1 graceful shutdown: SIGTERM (twice) with ${TOTAL.toLocaleString('en')} clients of which ${STALLED.toLocaleString('en')} stalled: exit 0 <= 10 s, new upgrades get 503, >= 99.9 % of the healthy clients see 1001, the report accounts for all, no bcast handle left`, async () => {
    server = await startServer({ adapter: 'ws', sigterm: { drainTimeoutMs: 5_000 } });
    healthy = await startClients('healthy');
    stalled = await startClients('stalled');
    await expect(healthy.request('connect', { port: server.port, n: HEALTHY, base: 0, rooms: 100, subs: ['a'], localAddresses: LOCAL_ADDRESSES }, 120_000)).resolves.toMatchObject({
      connected: HEALTHY,
    });
    await expect(stalled.request('connect', { port: server.port, n: STALLED, base: 100_000, rooms: 100, subs: ['a'], localAddresses: LOCAL_ADDRESSES }, 60_000)).resolves.toMatchObject({
      connected: STALLED,
    });
    expect(await waitFor(async () => (await server?.request<ServerStats>('stats'))?.connections === TOTAL, 10_000)).toBe(true);
    stalled.kill('SIGSTOP');
    await sleep(200);

    const port = server.port;
    const sigtermAt = performance.now();
    server.kill('SIGTERM');
    // new upgrades once the handler runs: each must be refused with 503 (or find the port closed)
    const started = await waitFor(() => server?.messages.some((m) => m.type === 'sigterm'), 2_000, 5);
    expect(started, 'the SIGTERM handler started').toBe(true);
    const upgrades: Array<number | string> = [];
    let exited = false;
    const probing = (async () => {
      while (!exited) {
        try {
          const c = await openWs({ port, timeoutMs: 8_000, localAddress: '127.0.0.6' });
          upgrades.push(101);
          c.destroy();
        } catch (error) {
          upgrades.push(error instanceof UpgradeError ? error.status || String(error.code) : String(error));
        }
        await sleep(20);
      }
    })();
    await sleep(100);
    server.kill('SIGTERM'); // the double SIGTERM
    const exit = await Promise.race([server.exited, sleep(15_000).then(() => undefined)]);
    exited = true;
    await probing;
    const exitAfterMs = (exit?.at ?? Number.NaN) - sigtermAt;
    const shutdown = server.messages.find((m) => m.type === 'shutdown') as ShutdownMessage | undefined;
    const report = await waitFor(async () => {
      const r = await healthy?.request<ClientReport>('report', {});
      return r && r.open === 0 ? r : undefined;
    }, 5_000);
    const seen = report ?? (await healthy.request<ClientReport>('report', {}));
    const saw1001 = seen.closeCodes['1001'] ?? 0;
    const refused = upgrades.filter((u) => u === 503).length;
    figures('G1', {
      clients: TOTAL,
      stalled: STALLED,
      exit: exit && { code: exit.code, signal: exit.signal },
      exitAfterMs: Math.round(exitAfterMs),
      shutdownReport: shutdown?.report,
      connectionsAtSigterm: shutdown?.before,
      sigterms: shutdown?.sigterms,
      healthySaw: seen.closeCodes,
      upgradesDuringShutdown: upgrades.reduce<Record<string, number>>((acc, u) => ({ ...acc, [u]: (acc[u] ?? 0) + 1 }), {}),
      handlesWhenClosed: shutdown?.closedAt,
      remainingHandles: shutdown?.remaining,
      activeResources: shutdown?.resources,
    });
    expect(shutdown, `the server reported its shutdown: ${server.output().slice(-2_000)}`).toBeDefined();
    expect(exit, 'exit').toMatchObject({ code: 0, signal: null });
    expect(exitAfterMs, 'SIGTERM to exit (ms)').toBeLessThanOrEqual(10_000);
    expect(shutdown?.sigterms, 'both SIGTERMs reached the handler').toBe(2);
    expect(shutdown?.problems).toEqual([]);
    // the report accounts for every connection
    expect(shutdown?.before).toBe(TOTAL);
    expect((shutdown?.report.closed ?? 0) + (shutdown?.report.terminated ?? 0), 'closed + terminated').toBe(TOTAL);
    // the stalled clients cannot have closed: they were terminated
    expect(shutdown?.report.terminated, 'terminated (the stalled clients)').toBe(STALLED);
    // new upgrades: 503, none accepted
    expect(refused, 'upgrades refused with 503 during the shutdown').toBeGreaterThan(0);
    expect(upgrades.filter((u) => u !== 503 && u !== 'ECONNREFUSED' && u !== 'ECONNRESET'), 'upgrades after SIGTERM neither refused with 503 nor finding the port closed').toEqual([]);
    // >= 99.9 % of the healthy clients saw 1001
    expect(saw1001 / HEALTHY, `healthy clients that saw 1001 (${saw1001} of ${HEALTHY}; ${JSON.stringify(seen.closeCodes)})`).toBeGreaterThanOrEqual(0.999);
    // nothing of bcast left: no TCP socket or server, no timer; the IPC channel ('Pipe') and the stdio pipes are the test's
    const leftovers = (shutdown?.remaining ?? []).filter((h) => !(h.name === 'Pipe' || (h.name === 'Socket' && h.pipe) || h.name === 'WriteStream' || h.name === 'ReadStream'));
    expect(leftovers, 'active handles at exit besides stdio and IPC').toEqual([]);
  }, 120_000);
});
