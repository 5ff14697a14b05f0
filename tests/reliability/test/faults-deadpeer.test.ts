/**
 * F2 dead peer without FIN: clients connected through a loopback TCP proxy that stops forwarding
 * and never closes (src/blackhole.ts), next to clients connected directly. With the test config
 * `pingIntervalMs: 1_000`, a peer that misses one pong is terminated at the next tick: detected
 * and cleaned <= 3 s after the cable "was pulled".
 */
import { afterAll, describe, expect, it } from 'vitest';
import { startBlackholeProxy, type Blackhole } from '../src/blackhole.js';
import { clock, figures, heavyFile, killChildren, sleep, startClients, startServer, waitFor, type Child, type ClientReport, type Server, type ServerStats } from '../src/harness.js';

heavyFile();

const DIRECT = 100;
const DEAD = 100;

describe('dead peers', () => {
  let server: Server | undefined;
  let direct: Child | undefined;
  let proxied: Child | undefined;
  let proxy: Blackhole | undefined;

  afterAll(async () => {
    killChildren(direct, proxied, server);
    await proxy?.close();
  });

  it(`F2 dead peer without FIN: ${DEAD} clients behind a blackhole proxy, pingIntervalMs 1000: detected and cleaned <= 3 s, heartbeat timers back to baseline`, async () => {
    server = await startServer({ adapter: 'ws', record: true, trackTimers: true, broadcaster: { pingIntervalMs: 1_000 } });
    proxy = await startBlackholeProxy(server.port);
    direct = await startClients('direct');
    proxied = await startClients('behind the proxy');
    await expect(direct.request('connect', { port: server.port, n: DIRECT, base: 0, rooms: 10, subs: ['a'] })).resolves.toMatchObject({ connected: DIRECT });
    await expect(proxied.request('connect', { port: proxy.port, n: DEAD, base: 1_000, rooms: 10, subs: ['a'] })).resolves.toMatchObject({ connected: DEAD });
    expect(await waitFor(async () => (await server?.request<ServerStats>('stats'))?.connections === DIRECT + DEAD, 5_000)).toBe(true);
    // a few heartbeats with everyone answering: the steady state
    await sleep(2_500);
    const baseline = await server.request<ServerStats>('stats');
    expect(baseline.monitor.disconnects).toEqual({});

    const pulledAt = clock();
    proxy.blackhole();
    const cleaned = await waitFor(async () => {
      const s = await server?.request<ServerStats>('stats');
      return s && s.connections === DIRECT ? s : undefined;
    }, 10_000, 50);
    const cleanedAfterMs = clock() - pulledAt;
    await sleep(1_200); // one more heartbeat: nothing else goes
    const after = await server.request<ServerStats>('stats');
    const events = await server.request<{ disconnects: Array<{ u: string; code: number; reason: string; at: number }> }>('events', {});
    const dead = events.disconnects.filter((e) => Number(e.u.slice(1)) >= 1_000);
    const detectedAfterMs = Math.max(...dead.map((e) => e.at)) - pulledAt;
    const report = await direct.request<ClientReport>('report', {});
    figures('F2', {
      dead: DEAD,
      detectedAfterMs: Math.round(detectedAfterMs),
      cleanedAfterMs: Math.round(cleanedAfterMs),
      disconnects: after.monitor.disconnects,
      timers: { baseline: baseline.timers, after: after.timers },
      tcpSockets: { baseline: baseline.resources['TCPSocketWrap'] ?? 0, after: after.resources['TCPSocketWrap'] ?? 0 },
    });
    expect(cleaned, 'the dead peers were removed').toBeDefined();
    expect(dead).toHaveLength(DEAD);
    expect(new Set(dead.map((e) => `${e.code}:${e.reason}`))).toEqual(new Set(['1001:no pong']));
    expect(after.monitor.disconnects).toEqual({ '1001:no_pong': DEAD });
    expect(detectedAfterMs, 'last dead peer detected after the pull (ms)').toBeLessThanOrEqual(3_000);
    expect(cleanedAfterMs, 'registries cleaned after the pull (ms)').toBeLessThanOrEqual(3_000);
    // the registries hold only the live clients
    expect({ connections: after.connections, users: after.users, roomMemberships: after.roomMemberships }).toEqual({ connections: DIRECT, users: DIRECT, roomMemberships: DIRECT });
    // heartbeat timers back to baseline, the dead sockets' handles released
    expect(baseline.timers, 'the heartbeat runs').toBeGreaterThanOrEqual(1);
    expect(after.timers, 'live timers (unref\'d included)').toBe(baseline.timers);
    expect(after.resources['TCPSocketWrap'] ?? 0, 'TCP sockets').toBe((baseline.resources['TCPSocketWrap'] ?? 0) - DEAD);
    // the live clients never noticed
    expect(report.open).toBe(DIRECT);
  }, 60_000);
});
