#!/usr/bin/env node
// pnpm --filter @bcast/bench bench:history [N] [rounds] [gapMs] [--payload 256] [--json]
// What a room with history costs the server: CPU per delivery of `toRoom` to N real ws connections
// (lean clients in a child process) in a room without history, with the in-memory history, and
// with the Redis history (@bcast/redis, at REDIS_URL; left out when Redis is unreachable). One
// broadcaster, every socket in two rooms (one without history, one with, whose store is switched
// between memory and Redis), one broadcast at a time with an idle gap between, interleaved
// A B C C B A: every side sees the same machine at the same moment. The Redis side's CPU includes its client's work (the append's command and reply);
// Redis's own CPU is another process and is not counted.
import { fork } from 'node:child_process';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { WebSocketServer } from 'ws';
import { makeMessage, onceMessage, payloadTemplate } from './common.mjs';
import { whyRedisUnreachable } from '../../scripts/lib/redis.mjs';
import { Unavailable, loadBcast } from './variants.mjs';

const { values: args, positionals } = parseArgs({
  args: process.argv.slice(2).filter((a) => a !== '--'),
  options: { payload: { type: 'string' }, json: { type: 'boolean' } },
  allowPositionals: true,
});
const N = Number(positionals[0] ?? 1000);
const ROUNDS = Number(positionals[1] ?? 600);
const GAP_MS = Number(positionals[2] ?? 4);
const PAYLOAD = /^(\d+)\s*k$/i.test(args.payload ?? '') ? Number(args.payload.slice(0, -1)) * 1024 : Number(args.payload ?? 256);
const WARMUP = 60;
const ROOM = 'room:bench';
const PLAIN = 'plain:bench';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const say = (line) => (args.json ? process.stderr : process.stdout).write(`${line}\n`);

/** One command in raw RESP on a connection of its own (bench has no Redis client of its own). */
function redisCommand(url, argv) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname || '127.0.0.1', port: Number(port || 6379) });
    socket.once('error', reject);
    socket.once('connect', () => socket.write(`*${argv.length}\r\n${argv.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`));
    socket.once('data', (data) => {
      socket.destroy();
      resolve(data.toString());
    });
  });
}

const [{ Broadcaster }, { attachToServer }, { MemoryHistory }] = await Promise.all([loadBcast('@bcast/core', 'core'), loadBcast('@bcast/ws', 'ws'), import('@bcast/core/backplane')]);
const server = createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 65_536 });

// One broadcaster (a socket registers with one @bcast/ws only), every socket in two rooms: one
// without history, one with, whose store is switched per broadcast between memory and Redis.
const stores = { memory: new MemoryHistory() };
const why = await whyRedisUnreachable(REDIS_URL);
let prefix;
if (why === undefined) {
  try {
    const { createRedisHistory } = await loadBcast('@bcast/redis', 'redis');
    prefix = `bcast-bench:h:${process.pid}:`;
    stores.redis = createRedisHistory({ url: REDIS_URL, prefix });
    if (!(await stores.redis.ready(5_000))) throw new Error(`Redis at ${REDIS_URL} is not ready`);
  } catch (error) {
    if (!(error instanceof Unavailable)) throw error;
    say(`(no Redis side: ${error.message})`);
  }
} else {
  say(`(no Redis side: Redis at ${REDIS_URL}: ${why})`);
}
let store = stores.memory;
const switching = {
  append: (room, data, limits) => store.append(room, data, limits),
  since: (room, since, limits) => store.since(room, since, limits),
  position: (room) => store.position(room),
};
const broadcaster = new Broadcaster({ pingIntervalMs: 0, history: { rooms: 'room:*', store: switching } });
const adapter = attachToServer(broadcaster, wss);
const sides = [
  { name: 'no history', room: PLAIN, store: undefined },
  { name: 'memory history', room: ROOM, store: stores.memory },
  ...(stores.redis ? [{ name: 'Redis history', room: ROOM, store: stores.redis }] : []),
].map((side) => ({ ...side, us: 0, cpuUs: 0, n: 0 }));

await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const client = fork(fileURLToPath(new URL('./client.mjs', import.meta.url)), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' });
const connected = onceMessage(client, 'connected', 60_000, 'connect');
client.send({ cmd: 'connect', port: server.address().port, n: N, transport: 'ws', client: 'lean', localAddresses: ['127.0.0.2', '127.0.0.3'], concurrency: 100, timeoutMs: 30_000 });
await connected;
const deadline = Date.now() + 30_000;
while (broadcaster.connections.size < N) {
  if (Date.now() > deadline) throw new Error(`the broadcaster registered ${broadcaster.connections.size} of ${N} connections`);
  await new Promise((resolve) => setTimeout(resolve, 10));
}
for (const entry of broadcaster.connections) {
  broadcaster.join(entry.id, ROOM);
  broadcaster.join(entry.id, PLAIN);
}

const template = payloadTemplate(PAYLOAD);
// A B C C B A: every side sits as often before as after every other.
const ORDER = [...sides.keys(), ...[...sides.keys()].reverse()];
for (let i = 0; i < WARMUP + ROUNDS; i++) {
  await new Promise((resolve) => setTimeout(resolve, GAP_MS));
  const side = sides[ORDER[i % ORDER.length]];
  const message = makeMessage(template, i, 0);
  if (side.store) store = side.store;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const result = await broadcaster.toRoom(side.room, message);
  await new Promise((resolve) => process.nextTick(resolve)); // after any end-of-tick writes
  const cpu = process.cpuUsage(cpu0);
  if (result.delivered !== N) throw new Error(`${side.name}: delivered ${result.delivered} of ${N}`);
  if (i < WARMUP) continue;
  side.us += (performance.now() - t0) * 1000;
  side.cpuUs += cpu.user + cpu.system;
  side.n += 1;
}
const stats = stores.redis?.stats();
if (stats && stats.appendErrors > 0) say(`warning: ${stats.appendErrors} Redis appends failed (those broadcasts went out without a position)`);

const result = {
  n: N,
  rounds: ROUNDS,
  gapMs: GAP_MS,
  payloadBytes: PAYLOAD,
  sides: sides.map((s) => ({ name: s.name, count: s.n, wallUs: s.us / s.n / N, cpuUs: s.cpuUs / s.n / N })),
};
say(`N = ${N} in one room, ${ROUNDS} toRoom of ${PAYLOAD} B, ${GAP_MS} ms apart, ${ORDER.map((k) => 'ABC'[k]).join(' ')}:`);
for (const s of result.sides) say(`  ${s.name.padEnd(15)} ${s.wallUs.toFixed(3)} µs wall, ${s.cpuUs.toFixed(3)} µs CPU per delivery`);
const [base, ...rest] = result.sides;
for (const s of rest) say(`  ${s.name} / ${base.name}: ${(s.cpuUs / base.cpuUs).toFixed(3)}x CPU, ${(s.wallUs / base.wallUs).toFixed(3)}x wall (target: <= 1.25x CPU)`);
if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`);

client.kill();
await adapter.dispose?.();
await broadcaster.dispose();
if (stores.redis) {
  await stores.redis.close();
  // the bench's own keys only (never FLUSHALL); they would expire anyway
  await redisCommand(REDIS_URL, ['DEL', `${prefix}{${ROOM}}`, `${prefix}{${ROOM}}:m`]).catch(() => {});
}
process.exit(0);
