#!/usr/bin/env node
// pnpm --filter @bcast/bench bench:send [N] [rounds] [gapMs]
// The per-message send path, measured precisely: one process, N real ws connections (lean clients
// in a child process), and broadcasts that alternate A B B A between the raw frame-once loop and
// @bcast/ws `toAll`, over the same sockets, one broadcast at a time with an idle gap between (as
// at a fixed rate, where each broadcast is alone in its tick). Both see the same machine at the
// same moment, so a difference of a few percent shows, which separate sessions cannot resolve.
import { fork } from 'node:child_process';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import { Broadcaster } from '@bcast/core';
import { attachToServer } from '@bcast/ws';
import { Sender, WebSocketServer } from 'ws';
import { makeMessage, onceMessage, payloadTemplate } from './common.mjs';

const N = Number(process.argv[2] ?? 1000);
const ROUNDS = Number(process.argv[3] ?? 400);
const GAP_MS = Number(process.argv[4] ?? 4);
const WARMUP = 40;

const server = createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 65_536 });
const broadcaster = new Broadcaster({ pingIntervalMs: 0 });
attachToServer(broadcaster, wss);
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const client = fork(fileURLToPath(new URL('./client.mjs', import.meta.url)), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' });
const connected = onceMessage(client, 'connected', 60_000, 'connect');
client.send({ cmd: 'connect', port: server.address().port, n: N, transport: 'ws', client: 'lean', localAddresses: ['127.0.0.2', '127.0.0.3'], concurrency: 100, timeoutMs: 30_000 });
await connected;
while (broadcaster.connections.size < N) await new Promise((resolve) => setTimeout(resolve, 10));

const template = payloadTemplate(256);
/** The raw frame-once loop of the fan-out bench's `ws-frame` variant. */
function raw(message) {
  const parts = Sender.frame(Buffer.from(JSON.stringify(message)), { fin: true, rsv1: false, opcode: 1, mask: false, readOnly: false });
  const frame = parts.length === 1 ? parts[0] : Buffer.concat(parts);
  for (const ws of wss.clients) if (ws.readyState === 1) ws._socket.write(frame);
}
const sides = [
  { name: 'raw frame-once', us: 0, cpuUs: 0, n: 0 },
  { name: '@bcast/ws', us: 0, cpuUs: 0, n: 0 },
];
const ABBA = [0, 1, 1, 0];
for (let i = 0; i < WARMUP + ROUNDS; i++) {
  await new Promise((resolve) => setTimeout(resolve, GAP_MS));
  const side = ABBA[i % 4];
  const message = makeMessage(template, i, 0);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  if (side === 0) raw(message);
  else await broadcaster.toAll(message);
  await new Promise((resolve) => process.nextTick(resolve)); // after any end-of-tick writes
  const cpu = process.cpuUsage(cpu0);
  if (i < WARMUP) continue;
  sides[side].us += (performance.now() - t0) * 1000;
  sides[side].cpuUs += cpu.user + cpu.system;
  sides[side].n += 1;
}
const per = (s) => ({ wall: s.us / s.n / N, cpu: s.cpuUs / s.n / N });
const [a, b] = sides.map(per);
console.log(`N = ${N}, ${ROUNDS} broadcasts of 256 B, ${GAP_MS} ms apart, A B B A:`);
for (const [s, p] of [[sides[0], a], [sides[1], b]]) console.log(`  ${s.name.padEnd(15)} ${p.wall.toFixed(3)} µs wall, ${p.cpu.toFixed(3)} µs CPU per delivery`);
console.log(`  @bcast/ws / raw: ${(b.wall / a.wall).toFixed(3)}x wall, ${(b.cpu / a.cpu).toFixed(3)}x CPU`);
client.kill();
await broadcaster.dispose();
process.exit(0);
