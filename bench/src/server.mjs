// The server process: one variant on 127.0.0.1, driven by the orchestrator over IPC.
//
//   -> { cmd: 'init', variant }                 <- { type: 'listening', port }
//   -> { cmd: 'await-connections', n, timeoutMs } <- { type: 'ready', connections }
//   -> { cmd: 'memory' }                        <- { type: 'memory', rss, heapUsed, ... } (after GC)
//   -> { cmd: 'phase', id, messages, window, payloadBytes, rate? }
//   -> { cmd: 'complete', seq }  (relayed: every client received message seq)
//                                               <- { type: 'phase-done', id, startMs, cpuUs, ... }
//   -> { cmd: 'close' }                         (exits at once: the kernel closes the sockets)
import { createServer } from 'node:http';
import { clock, makeMessage, payloadTemplate } from './common.mjs';
import { Unavailable, VARIANTS } from './variants.mjs';

/** @type {any} */
let instance;
/** @type {import('node:http').Server | undefined} */
let server;
/** @type {((seq: number) => void) | undefined} */
let onComplete;

const send = (message) => process.send?.(message);
const fail = (error) => send({ type: 'error', message: error instanceof Error ? error.message : String(error), unavailable: error instanceof Unavailable });

process.on('disconnect', () => process.exit(0)); // the orchestrator is gone
process.on('uncaughtException', (error) => {
  fail(error);
  process.exitCode = 1;
});

process.on('message', (msg) => {
  handle(msg).catch(fail);
});

async function handle(msg) {
  switch (msg.cmd) {
    case 'init': {
      const variant = VARIANTS[msg.variant];
      if (!variant) throw new Error(`unknown variant ${msg.variant}`);
      server = createServer((_req, res) => res.writeHead(404).end());
      instance = await variant.create(server);
      await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, resolve);
      });
      send({ type: 'listening', port: server.address().port });
      return;
    }
    case 'await-connections': {
      const deadline = Date.now() + msg.timeoutMs;
      while (instance.connections() < msg.n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      send({ type: 'ready', connections: instance.connections() });
      return;
    }
    case 'memory': {
      send({ type: 'memory', ...measureMemory() });
      return;
    }
    case 'phase':
      await runPhase(msg);
      return;
    case 'complete':
      onComplete?.(msg.seq);
      return;
    case 'close':
      process.exit(0);
  }
}

function measureMemory() {
  if (typeof globalThis.gc === 'function') {
    for (let i = 0; i < 3; i++) globalThis.gc();
  }
  const m = process.memoryUsage();
  return { gc: typeof globalThis.gc === 'function', rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers };
}

/**
 * Sends `messages` broadcasts with at most `window` of them not yet received by every client
 * (the client process reports each completed message). The same pacing for every variant.
 * With `rate` (broadcasts per second), open loop instead: broadcast i is due at start + i / rate,
 * and carries its due time as `t`, so a server that falls behind is charged for it (no
 * coordinated omission). `window` then only caps the broadcasts in flight, as a safety stop.
 */
async function runPhase({ id, messages, window, payloadBytes, rate }) {
  const template = payloadTemplate(payloadBytes);
  if (typeof globalThis.gc === 'function') globalThis.gc();
  let sent = 0;
  let completed = 0;
  let pumping = false;
  let failure;
  let peakRss = process.memoryUsage.rss();
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage.rss());
  }, 20);
  let resolveDone;
  const done = new Promise((resolve) => (resolveDone = resolve));
  const cpu0 = process.cpuUsage();
  const startMs = clock();

  const intervalMs = rate ? 1000 / rate : 0;
  let timer;
  let capped = 0;
  const pump = async () => {
    if (pumping) return;
    pumping = true;
    try {
      while (sent < messages && sent - completed < window && failure === undefined) {
        const due = startMs + sent * intervalMs;
        const now = clock();
        if (rate && due > now) {
          timer = setTimeout(pump, due - now);
          break;
        }
        const seq = sent++;
        const result = instance.broadcast(makeMessage(template, seq, rate ? due : now));
        if (result && typeof result.then === 'function') await result;
      }
      if (rate && sent < messages && sent - completed >= window) capped += 1;
    } catch (error) {
      failure = error;
      resolveDone();
    } finally {
      pumping = false;
    }
  };
  onComplete = (seq) => {
    if (seq >= messages) return;
    completed += 1;
    if (completed === messages) resolveDone();
    else if (!rate || sent - completed === window - 1) void pump();
  };
  void pump();
  await done;
  clearTimeout(timer);
  const endMs = clock();
  const cpu = process.cpuUsage(cpu0);
  clearInterval(sampler);
  onComplete = undefined;
  peakRss = Math.max(peakRss, process.memoryUsage.rss());
  if (failure) throw failure;
  send({
    type: 'phase-done',
    id,
    sent,
    startMs,
    endMs,
    cpuUserUs: cpu.user,
    cpuSystemUs: cpu.system,
    peakRss,
    heapUsed: process.memoryUsage().heapUsed,
    connections: instance.connections(),
    capped,
    ...(instance.stats ? { stats: instance.stats() } : {}),
  });
}
