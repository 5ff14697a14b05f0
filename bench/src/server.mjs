// The server process: one variant on 127.0.0.1, driven by the orchestrator over IPC.
//
//   -> { cmd: 'init', variant, baselineDir? }   <- { type: 'listening', port }
//   -> { cmd: 'await-connections', n, timeoutMs } <- { type: 'ready', connections }
//   -> { cmd: 'memory' }                        <- { type: 'memory', rss, heapUsed, ... } (after GC)
//   -> { cmd: 'phase', id, messages, window, burst, minMs?, maxMessages?, payloadBytes, rate? }
//   -> { cmd: 'complete', seq }  (relayed: every client received message seq)
//                                               <- { type: 'phase-done', id, startMs, cpuUs, ... }
//   -> { cmd: 'close' }                         (exits at once: the kernel closes the sockets)
import { createServer } from 'node:http';
import { clock, makeMessage, payloadTemplate } from './common.mjs';
import { Unavailable, resolveVariant } from './variants.mjs';

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
      const variant = resolveVariant(msg.variant, { baselineDir: msg.baselineDir });
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
async function runPhase({ id, messages, window, burst = 1, minMs = 0, maxMessages = messages, payloadBytes, rate }) {
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
  // Closed loop: broadcasts go out in bursts of `burst`, one burst per pass, a burst only when the
  // window has room for all of it; a pass that leaves room for another burst schedules it on
  // setImmediate, so every tick sees exactly one burst.
  // With `minMs`, a closed-loop phase goes on past `messages`, a burst at a time, until it has run
  // that long (at most `maxMessages`): a fast variant gets as long a phase as a slow one.
  let target = messages;
  const room = () => {
    if (sent >= target && target < maxMessages && clock() - startMs < minMs) target = Math.min(maxMessages, target + burst);
    return sent < target && sent - completed <= window - Math.min(burst, target - sent);
  };
  const pump = async () => {
    if (pumping) return;
    pumping = true;
    try {
      if (!rate) {
        if (!room()) return;
        const end = Math.min(target, sent + burst);
        // Every broadcast of a burst is due when the burst starts, and carries that time as `t`:
        // a server that sends them one after another makes the later ones wait, and the clients
        // see that wait (as in the paced mode, latency runs from the due time).
        const due = clock();
        while (sent < end && failure === undefined) {
          const seq = sent++;
          const result = instance.broadcast(makeMessage(template, seq, due));
          if (result && typeof result.then === 'function') await result;
        }
        if (room()) setImmediate(pump);
        else if (completed === sent) resolveDone();
        return;
      }
      while (sent < messages && sent - completed < window && failure === undefined) {
        const due = startMs + sent * intervalMs;
        const now = clock();
        if (due > now) {
          timer = setTimeout(pump, due - now);
          break;
        }
        const seq = sent++;
        const result = instance.broadcast(makeMessage(template, seq, due));
        if (result && typeof result.then === 'function') await result;
      }
      if (sent < messages && sent - completed >= window) capped += 1;
    } catch (error) {
      failure = error;
      resolveDone();
    } finally {
      pumping = false;
    }
  };
  onComplete = (seq) => {
    if (seq >= maxMessages) return;
    completed += 1;
    if (rate) {
      if (completed === messages) resolveDone();
      else if (sent - completed === window - 1) void pump();
    } else if (room()) void pump();
    else if (completed === sent && !pumping) resolveDone();
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
