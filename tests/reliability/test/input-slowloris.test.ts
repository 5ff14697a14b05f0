import { fileURLToPath } from 'node:url';
import { recommendedHttpServerOptions } from '@bcast/ws';
import { afterEach, describe, expect, it } from 'vitest';
import { guardProcess } from '../../support/processGuard.js';
import { spawnJson, type JsonChild } from './support/child.js';
import { connect } from './support/clients.js';
import { fdCount, percentile, tick } from './support/measure.js';
import { ADAPTERS, startServer, type AdapterName, type Sut } from './support/servers.js';

guardProcess();

// B14 slowloris on the upgrade: 1,000 connections per adapter (from another process) each send
// one byte of their request head a second and never finish it, while legitimate clients keep
// connecting to the servers in this process.
//
// Each HTTP server is created with the adapters' `recommendedHttpServerOptions` (what the READMEs
// tell users to do): headersTimeout 10 s, connectionsCheckingInterval 2 s (Node's defaults are
// 60 s and 30 s: a slow head lives up to 90 s).

const HTTP_OPTIONS = recommendedHttpServerOptions;
const SLOW_PER_ADAPTER = 1_000;
/**
 * Node closes a slow head at its first check after headersTimeout, i.e. within headersTimeout +
 * connectionsCheckingInterval, as timers go: on a loaded 2-core box the checking timer (and the
 * attacker's clock) run late by up to a few hundred ms, which is allowed here and no more.
 */
const TIMER_SLACK_MS = 500;
const SCRIPT = fileURLToPath(new URL('./support/slowloris.mjs', import.meta.url));
const quiet = { warn: () => {}, error: () => {} };

interface RunSummary {
  target: AdapterName;
  connections: number;
  closed: number;
  minLifetimeMs: number;
  maxLifetimeMs: number;
  statuses: Record<string, number>;
}

const suts: Sut[] = [];
const children: JsonChild[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) c.kill();
  for (const s of suts.splice(0)) await s.close();
});

describe('B14 slowloris on the upgrade', () => {
  it(`B14 ${SLOW_PER_ADAPTER.toLocaleString('en')} slow heads per adapter (1 byte/s): each closed (408) within headersTimeout + connectionsCheckingInterval (12 s); legitimate handshakes meanwhile keep p99 <= 200 ms; fds back to baseline`, async () => {
    // the three servers' checking timers a third of an interval apart, as three separate servers would be
    for (const adapter of ADAPTERS) {
      suts.push(await startServer(adapter, { http: HTTP_OPTIONS, broadcaster: { logger: quiet, pingIntervalMs: 0 } }));
      await tick(HTTP_OPTIONS.connectionsCheckingInterval / 3);
    }
    // one handshake each first: the first connection of a process pays for loading and compiling the client and server code
    for (const s of suts) {
      const c = await connect(s);
      c.close();
      await c.closed;
    }
    const baselineFds = fdCount();
    const targets = suts.map((s) => ({ name: s.adapter, port: s.port, path: `${new URL(s.wsUrl).pathname}${new URL(s.wsUrl).search}` }));
    const attacker = spawnJson(process.execPath, [SCRIPT, JSON.stringify({ targets, perTarget: SLOW_PER_ADAPTER, maxMs: 20_000 })]);
    children.push(attacker);
    await attacker.message((l) => l['opened'] === true, 20_000);
    const handshakes = new Map<AdapterName, number[]>(ADAPTERS.map((a) => [a, []]));
    const failures: string[] = [];
    let attackOver = false;
    const done = Promise.all(ADAPTERS.map((a) => attacker.message<RunSummary>((l) => l['target'] === a, 30_000))).finally(() => (attackOver = true));
    // legitimate clients: one handshake per adapter every 50 ms while the attack lasts
    while (!attackOver) {
      await Promise.all(
        suts.map(async (s) => {
          const started = performance.now();
          try {
            const c = await connect(s);
            handshakes.get(s.adapter)!.push(performance.now() - started);
            c.close();
            await c.closed;
          } catch (error) {
            failures.push(`${s.adapter}: ${String(error)}`);
          }
        }),
      );
      await tick(50);
    }
    const runs = await done;
    expect(await attacker.exited).toEqual({ code: 0, signal: null });
    for (const run of runs) {
      const times = handshakes.get(run.target)!;
      const p99 = percentile(times, 99);
      console.info(
        `[B14 ${run.target}] ${run.closed}/${run.connections} slow heads closed by the server after ${run.minLifetimeMs.toFixed(0)}-${run.maxLifetimeMs.toFixed(0)} ms ` +
          `(answers ${JSON.stringify(run.statuses)}); ${times.length} legitimate handshakes meanwhile: p50 ${percentile(times, 50).toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${Math.max(...times).toFixed(1)} ms`,
      );
      expect(run.closed, run.target).toBe(SLOW_PER_ADAPTER);
      expect(run.statuses, run.target).toEqual({ '408': SLOW_PER_ADAPTER });
      expect(run.minLifetimeMs, run.target).toBeGreaterThanOrEqual(HTTP_OPTIONS.headersTimeout - 50);
      expect(run.maxLifetimeMs, run.target).toBeLessThanOrEqual(HTTP_OPTIONS.headersTimeout + HTTP_OPTIONS.connectionsCheckingInterval + TIMER_SLACK_MS);
      expect(times.length, run.target).toBeGreaterThanOrEqual(100);
      expect(p99, run.target).toBeLessThanOrEqual(200);
    }
    expect(failures).toEqual([]);
    // every server-side socket of the attack is gone
    await expect.poll(fdCount, { timeout: 5_000 }).toBeLessThanOrEqual(baselineFds);
  }, 60_000);
});
