/**
 * R1 leaks, connect/disconnect cycles: a ws server process started with --expose-gc and an async
 * `authenticate` (20 ms), a cycler process (src/cycler.mjs) running cycles that each join 3 rooms
 * and end in one of four ways: a clean 1000, a terminate (socket destroyed, no close frame), an
 * abort mid-handshake (half the upgrade request), a close during the authentication. After a
 * warm-up, a forced GC gives the baseline; after the cycles and another forced GC everything must
 * be back: registries, rooms, timers (unref'd ones included), active handles, listener counts,
 * heap and RSS.
 *
 * The adapter's connection cap is set to 400 (200 cycles run at a time): a handshake that is
 * never released from the admission count would show as 503s.
 *
 * CI: 20,000 cycles; BCAST_LONG=1: 100,000.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { LOCAL_ADDRESSES, LONG, MB, figures, heavyFile, killChildren, sleep, startCycler, startServer, type Child, type Server, type ServerStats } from '../src/harness.js';

heavyFile();

const CYCLES = LONG ? 100_000 : 20_000;
const WARMUP = 2_000;

interface Gc {
  memory: NodeJS.MemoryUsage;
  resources: Record<string, number>;
  timers: number;
}
interface Cycles {
  done: number;
  byMode: Record<string, number>;
  failures: Record<string, number>;
  ms: number;
}
type Listeners = { http: Record<string, number>; wss: Record<string, number> };

const total = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);

describe('leaks', () => {
  let server: Server | undefined;
  let cycler: Child | undefined;

  afterAll(() => killChildren(cycler, server));

  it(`R1 leaks: ${CYCLES.toLocaleString('en')} connect/disconnect cycles (join 3 rooms; clean 1000 / terminate / abort mid-handshake / close during auth): registries empty, rooms 0, timers and handles at baseline +-2, listener counts unchanged, heap delta <= 5 MB, RSS delta <= 50 MB`, async () => {
    server = await startServer(
      { adapter: 'ws', authDelayMs: 20, trackTimers: true, broadcaster: { allowClientJoins: true }, adapterOptions: { maxConnections: 400 } },
      { gc: true },
    );
    cycler = await startCycler();
    const settle = async (): Promise<Gc> => {
      // closes in flight finish, the 1 s terminate timers fire
      await sleep(1_500);
      return (await server?.request<Gc>('gc')) as Gc;
    };
    const warm = await cycler.request<Cycles>('cycles', { port: server.port, n: WARMUP, concurrency: 200, localAddresses: LOCAL_ADDRESSES }, 120_000);
    expect(warm.failures, 'warm-up failures').toEqual({});
    const baseline = await settle();
    const baseListeners = await server.request<Listeners>('listeners');
    const baseStats = await server.request<ServerStats>('stats');
    expect({ connections: baseStats.connections, rooms: baseStats.rooms }).toEqual({ connections: 0, rooms: 0 });

    const run = await cycler.request<Cycles>('cycles', { port: server.port, n: CYCLES, base: WARMUP, concurrency: 200, localAddresses: LOCAL_ADDRESSES }, 15 * 60_000);
    const after = await settle();
    const listeners = await server.request<Listeners>('listeners');
    const stats = await server.request<ServerStats>('stats');
    const heapDelta = after.memory.heapUsed - baseline.memory.heapUsed;
    const rssDelta = after.memory.rss - baseline.memory.rss;
    figures('R1 cycles', {
      cycles: run.done,
      byMode: run.byMode,
      failures: run.failures,
      seconds: +(run.ms / 1000).toFixed(1),
      registered: stats.opened,
      registries: { connections: stats.connections, users: stats.users, rooms: stats.rooms, roomMemberships: stats.roomMemberships },
      timers: { baseline: baseline.timers, after: after.timers },
      handles: { baseline: baseline.resources, after: after.resources },
      heapDeltaMB: +(heapDelta / MB).toFixed(2),
      rssDeltaMB: +(rssDelta / MB).toFixed(1),
      disconnects: stats.monitor.disconnects,
    });
    expect(run.done).toBe(CYCLES);
    expect(run.failures, 'cycles that failed (a 503 means the admission count leaked)').toEqual({});
    // Every clean and terminate cycle registered a connection. A close-during-auth cycle may too: the
    // server learns of the peer's FIN only when it reads, after the 101 (it is then unregistered at once).
    expect(stats.opened, 'connections registered').toBeGreaterThanOrEqual(WARMUP / 2 + CYCLES / 2);
    expect({ connections: stats.connections, users: stats.users, rooms: stats.rooms, roomMemberships: stats.roomMemberships }).toEqual({ connections: 0, users: 0, rooms: 0, roomMemberships: 0 });
    expect(Math.abs(after.timers - baseline.timers), `live timers: ${baseline.timers} -> ${after.timers}`).toBeLessThanOrEqual(2);
    expect(Math.abs(total(after.resources) - total(baseline.resources)), `active handles: ${JSON.stringify(baseline.resources)} -> ${JSON.stringify(after.resources)}`).toBeLessThanOrEqual(2);
    expect(listeners).toEqual(baseListeners);
    expect(heapDelta, 'heap delta after GC (bytes)').toBeLessThanOrEqual(5 * MB);
    expect(rssDelta, 'RSS delta (bytes)').toBeLessThanOrEqual(50 * MB);
  }, LONG ? 20 * 60_000 : 180_000);
});
