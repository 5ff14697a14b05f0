#!/usr/bin/env node
// pnpm --filter @bcast/bench bench:send [N] [rounds] [gapMs] [--payload 256] [--baseline <git-ref>] [--json]
// The per-message send path, measured precisely: one process, N real ws connections (lean clients
// in a child process), and broadcasts that alternate between the raw frame-once loop and
// @bcast/ws `toAll` (A B B A), over the same sockets, one broadcast at a time with an idle gap
// between (as at a fixed rate, where each broadcast is alone in its tick). Both see the same
// machine at the same moment, so a difference of a few percent shows, which separate sessions
// cannot resolve. With `--baseline <git-ref>` (or BENCH_BASELINE), a third side: @bcast/ws built
// from that commit (see baseline.mjs), attached to the same server, in the order A B C C B A.
import { fork } from 'node:child_process';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Sender, WebSocketServer } from 'ws';
import { prepareBaseline } from './baseline.mjs';
import { makeMessage, onceMessage, payloadTemplate } from './common.mjs';
import { distLoader, loadBcast } from './variants.mjs';

const { values: args, positionals } = parseArgs({
  args: process.argv.slice(2).filter((a) => a !== '--'),
  options: {
    payload: { type: 'string' },
    baseline: { type: 'string' },
    'baseline-dir': { type: 'string' }, // a checkout that is installed and built already (run.mjs)
    json: { type: 'boolean' },
  },
  allowPositionals: true,
});
const N = Number(positionals[0] ?? 1000);
const ROUNDS = Number(positionals[1] ?? 400);
const GAP_MS = Number(positionals[2] ?? 4);
const PAYLOAD = /^(\d+)\s*k$/i.test(args.payload ?? '') ? Number(args.payload.slice(0, -1)) * 1024 : Number(args.payload ?? 256);
const WARMUP = 40;
const say = (line) => (args.json ? process.stderr : process.stdout).write(`${line}\n`);

const baselineRef = args.baseline ?? process.env.BENCH_BASELINE;
const baselineDir = args['baseline-dir'] ?? (baselineRef ? prepareBaseline(baselineRef, { log: say }).dir : undefined);

const server = createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 65_536 });

/** A broadcaster with the ws adapter of one build, attached to the shared server. */
async function attach(load) {
  const [{ Broadcaster }, { attachToServer }] = await Promise.all([load('@bcast/core', 'core'), load('@bcast/ws', 'ws')]);
  const broadcaster = new Broadcaster({ pingIntervalMs: 0 });
  const adapter = attachToServer(broadcaster, wss);
  return { broadcaster, adapter };
}
const builds = [{ name: '@bcast/ws', ...(await attach(loadBcast)) }];
if (baselineDir) builds.push({ name: '@bcast/ws (before)', ...(await attach(distLoader(join(baselineDir, 'packages')))) });

await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const client = fork(fileURLToPath(new URL('./client.mjs', import.meta.url)), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' });
const connected = onceMessage(client, 'connected', 60_000, 'connect');
client.send({ cmd: 'connect', port: server.address().port, n: N, transport: 'ws', client: 'lean', localAddresses: ['127.0.0.2', '127.0.0.3'], concurrency: 100, timeoutMs: 30_000 });
await connected;
const deadline = Date.now() + 30_000;
while (builds.some((b) => b.broadcaster.connections.size < N)) {
  if (Date.now() > deadline) throw new Error(`the broadcasters registered ${builds.map((b) => b.broadcaster.connections.size).join(' and ')} of ${N} connections`);
  await new Promise((resolve) => setTimeout(resolve, 10));
}

const template = payloadTemplate(PAYLOAD);
/** The raw frame-once loop of the fan-out bench's `ws-frame` variant. */
function raw(message) {
  const parts = Sender.frame(Buffer.from(JSON.stringify(message)), { fin: true, rsv1: false, opcode: 1, mask: false, readOnly: false });
  const frame = parts.length === 1 ? parts[0] : Buffer.concat(parts);
  for (const ws of wss.clients) if (ws.readyState === 1) ws._socket.write(frame);
}
const sides = [
  { name: 'raw frame-once', send: raw },
  ...builds.map((b) => ({ name: b.name, send: (message) => b.broadcaster.toAll(message) })),
].map((side) => ({ ...side, us: 0, cpuUs: 0, n: 0 }));
// A B B A, or A B C C B A: every side sits as often before as after every other.
const ORDER = [...sides.keys(), ...[...sides.keys()].reverse()];
for (let i = 0; i < WARMUP + ROUNDS; i++) {
  await new Promise((resolve) => setTimeout(resolve, GAP_MS));
  const side = sides[ORDER[i % ORDER.length]];
  const message = makeMessage(template, i, 0);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await side.send(message);
  await new Promise((resolve) => process.nextTick(resolve)); // after any end-of-tick writes
  const cpu = process.cpuUsage(cpu0);
  if (i < WARMUP) continue;
  side.us += (performance.now() - t0) * 1000;
  side.cpuUs += cpu.user + cpu.system;
  side.n += 1;
}
const result = {
  n: N,
  rounds: ROUNDS,
  gapMs: GAP_MS,
  payloadBytes: PAYLOAD,
  sides: sides.map((s) => ({ name: s.name, count: s.n, wallUs: s.us / s.n / N, cpuUs: s.cpuUs / s.n / N })),
};
say(`N = ${N}, ${ROUNDS} broadcasts of ${PAYLOAD} B, ${GAP_MS} ms apart, ${ORDER.map((k) => 'ABC'[k]).join(' ')}:`);
for (const s of result.sides) say(`  ${s.name.padEnd(19)} ${s.wallUs.toFixed(3)} µs wall, ${s.cpuUs.toFixed(3)} µs CPU per delivery`);
const [base, ...rest] = result.sides;
for (const s of rest) say(`  ${s.name} / raw: ${(s.wallUs / base.wallUs).toFixed(3)}x wall, ${(s.cpuUs / base.cpuUs).toFixed(3)}x CPU`);
if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`);
client.kill();
for (const b of builds) {
  await b.adapter.dispose?.();
  await b.broadcaster.dispose();
}
process.exit(0);
