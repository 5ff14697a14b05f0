import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { REDIS_URL, skipReason, whyUnreachable } from '../../../packages/redis/test/helpers.js';
import { guardProcess } from '../../support/processGuard.js';

/**
 * Remote delivery does not wait for the local fan-out: the engine starts the backplane publish
 * before it writes to the local sockets. Two ws nodes on one Redis, 200 clients each, node A
 * broadcasting 200 times a second: every client gets every message, and the test prints the p50
 * latency of A's own clients and of B's (a figure for the notes, not a timed assertion).
 *
 * Calibration: the same setup without bcast (raw-server.ts: a plain ws server, publish to Redis
 * first, then `ws.send` to every client), run in turn with the bcast pair, so the remote - local
 * figure can be read against what the Redis hop and the second process cost on this machine.
 */

const SERVER = fileURLToPath(new URL('../dist/server.js', import.meta.url));
const RAW_SERVER = fileURLToPath(new URL('../dist/raw-server.js', import.meta.url));
const why = await whyUnreachable(REDIS_URL);
skipReason('the remote-latency measurement', why);
guardProcess();

const CLIENTS = 200;
const RATE = 200;
const SECONDS = 3;
const now = (): number => performance.timeOrigin + performance.now();

interface Node {
  readonly child: ChildProcess;
  readonly port: number;
  send(command: Record<string, unknown>): void;
}

async function startNode(channel: string, nodeId: string, script = SERVER): Promise<Node> {
  const child = fork(script, [], { env: { ...process.env, BCAST_ADAPTER: 'ws', BCAST_CHANNEL: channel, BCAST_NODE_ID: nodeId, REDIS_URL }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`node ${nodeId} exited with ${code}`)));
    child.on('message', (m: { type: string; port?: number }) => m.type === 'listening' && resolve(m.port as number));
  });
  let id = 0;
  return { child, port, send: (command) => child.send({ ...command, id: (id += 1) }) };
}

/** Opens `n` clients; each records the latency of every message it gets (its `t` is the publisher's clock). */
async function clients(port: number, n: number): Promise<{ latencies: number[]; counts: number[]; sockets: WebSocket[] }> {
  const latencies: number[] = [];
  const counts = new Array<number>(n).fill(0);
  const sockets = await Promise.all(
    Array.from({ length: n }, (_, i) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/?user=u${i}`);
      ws.on('message', (data) => {
        const { t } = JSON.parse(String(data)) as { t: number };
        latencies.push(now() - t);
        counts[i] = (counts[i] as number) + 1;
      });
      return new Promise<WebSocket>((resolve, reject) => {
        ws.once('open', () => resolve(ws));
        ws.once('error', reject);
      });
    }),
  );
  return { latencies, counts, sockets };
}

const p50 = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? Number.NaN;

/** One round: two nodes (bcast or raw), 200 + 200 clients, A broadcasting; every client must get every message. */
async function round(script: string): Promise<{ local: number; remote: number }> {
  const channel = `bcast-latency-${randomUUID()}`;
  const [a, b] = await Promise.all([startNode(channel, 'a', script), startNode(channel, 'b', script)]);
  try {
    const local = await clients(a.port, CLIENTS);
    const remote = await clients(b.port, CLIENTS);
    const total = RATE * SECONDS;
    // A message carries the test's wall clock when it is handed to node A (before its fan-out).
    const stamped = await new Promise<number>((resolve) => {
      let sent = 0;
      const timer = setInterval(() => {
        if (sent >= total) {
          clearInterval(timer);
          resolve(sent);
          return;
        }
        a.send({ cmd: 'batch', items: [{ op: 'all', message: { t: now(), seq: sent } }] });
        sent += 1;
      }, 1_000 / RATE);
    });
    const deadline = Date.now() + 15_000;
    while ([...local.counts, ...remote.counts].some((c) => c < stamped) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(local.counts.every((c) => c === stamped)).toBe(true);
    expect(remote.counts.every((c) => c === stamped)).toBe(true);
    for (const ws of [...local.sockets, ...remote.sockets]) ws.close();
    return { local: p50(local.latencies), remote: p50(remote.latencies) };
  } finally {
    a.child.kill();
    b.child.kill();
  }
}

describe.skipIf(why !== undefined)('remote delivery starts before the local fan-out (Redis, 2 ws nodes)', () => {
  it(`${CLIENTS} + ${CLIENTS} clients, ${RATE} broadcasts/s from node A for ${SECONDS} s: every client gets every message (bcast, then without bcast, twice)`, async () => {
    const rounds: Record<'bcast' | 'raw', Array<{ local: number; remote: number }>> = { bcast: [], raw: [] };
    for (let i = 0; i < 2; i += 1) {
      rounds.bcast.push(await round(SERVER));
      rounds.raw.push(await round(RAW_SERVER));
    }
    const line = (kind: 'bcast' | 'raw'): string =>
      rounds[kind].map((r) => `local p50 ${r.local.toFixed(2)} ms, remote p50 ${r.remote.toFixed(2)} ms, remote - local ${(r.remote - r.local).toFixed(2)} ms`).join('; ');
    console.log(`[remote-latency] bcast: ${line('bcast')}`);
    console.log(`[remote-latency] raw ws + ioredis (calibration): ${line('raw')}`);
  }, 120_000);
});
