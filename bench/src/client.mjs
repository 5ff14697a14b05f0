// The client-load process: N clients of one transport, counting deliveries and fan-out latency.
// The same code for every variant. By default (`client: 'lean'`) every client is the lean
// WebSocket client of lean-client.mjs, speaking plain WebSocket to ws-based servers and
// engine.io v4 to socket.io servers. With `client: 'library'` they are `ws` clients for ws-based
// servers and socket.io-client (websocket transport only) for socket.io servers.
//
//   -> { cmd: 'connect', port, n, transport, client, localAddresses, concurrency, timeoutMs }
//                                     <- { type: 'connected', n, failed, ms }
//   -> { cmd: 'phase', id, messages } <- { type: 'armed', id }
//                                     <- { type: 'complete', seq } (all n clients got message seq)
//   -> { cmd: 'report', id }          <- { type: 'report', id, delivered, latency, ... }
//   -> { cmd: 'close' }               (exits at once)
import { Histogram, clock, readHeader } from './common.mjs';
import { openLean } from './lean-client.mjs';

const send = (message) => process.send?.(message);
const fail = (error) => send({ type: 'error', message: error instanceof Error ? error.message : String(error) });

process.on('disconnect', () => process.exit(0));
process.on('uncaughtException', (error) => {
  fail(error);
  process.exitCode = 1;
});
process.on('message', (msg) => {
  handle(msg).catch(fail);
});

let n = 0;
let disconnects = 0;
let stray = 0;
/** @type {{ id: number, messages: number, counts: Uint32Array, hist: Histogram, delivered: number, firstMs: number, lastMs: number, cpu: NodeJS.CpuUsage } | undefined} */
let phase;

function deliver(seq, t) {
  const now = clock();
  const p = phase;
  if (p === undefined || !(seq < p.messages)) {
    stray += 1;
    return;
  }
  p.hist.record((now - t) * 1000);
  p.delivered += 1;
  if (p.firstMs === 0) p.firstMs = now;
  p.lastMs = now;
  if (++p.counts[seq] === n) send({ type: 'complete', seq });
}

async function handle(msg) {
  switch (msg.cmd) {
    case 'connect': {
      const started = clock();
      const { failed } = await connectAll(msg);
      n = msg.n - failed;
      send({ type: 'connected', n, failed, ms: clock() - started });
      return;
    }
    case 'phase':
      phase = { id: msg.id, messages: msg.messages, counts: new Uint32Array(msg.messages), hist: new Histogram(), delivered: 0, firstMs: 0, lastMs: 0, cpu: process.cpuUsage() };
      stray = 0;
      send({ type: 'armed', id: msg.id });
      return;
    case 'report': {
      const p = phase;
      if (!p) throw new Error('report without a phase');
      const cpu = process.cpuUsage(p.cpu);
      phase = undefined;
      // The server may have sent fewer than the phase was armed for (a phase that runs for a time).
      const incomplete = [...p.counts.subarray(0, msg.messages ?? p.messages)].filter((c) => c < n).length;
      send({
        type: 'report',
        id: p.id,
        delivered: p.delivered,
        clients: n,
        incompleteMessages: incomplete,
        firstMs: p.firstMs,
        lastMs: p.lastMs,
        latency: p.hist.summary(),
        hist: p.hist.sparse(),
        cpuUs: cpu.user + cpu.system,
        disconnects,
        stray,
      });
      return;
    }
    case 'close':
      process.exit(0);
  }
}

/** Opens `n` clients, at most `concurrency` handshakes at a time, spread over the local addresses. */
async function connectAll({ port, n: total, transport, client = 'lean', localAddresses, concurrency = 100, timeoutMs = 30_000 }) {
  const open =
    client === 'lean' ? leanOpener(port, timeoutMs, transport) : transport === 'socketio' ? await socketIoOpener(port, timeoutMs) : await wsOpener(port, timeoutMs);
  let next = 0;
  let failed = 0;
  let firstError;
  const worker = async () => {
    while (next < total) {
      const i = next++;
      const localAddress = localAddresses?.length ? localAddresses[i % localAddresses.length] : undefined;
      try {
        await open(localAddress);
      } catch (error) {
        failed += 1;
        firstError ??= error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker));
  if (failed > 0) send({ type: 'log', message: `${failed} of ${total} clients failed to connect: ${firstError?.message ?? firstError}` });
  return { failed };
}

function leanOpener(port, timeoutMs, transport) {
  const header = { seq: 0, t: 0 };
  const onMessage = (buffer, start, end) => {
    if (readHeader(buffer, header, start, end)) deliver(header.seq, header.t);
  };
  const onClose = () => {
    disconnects += 1;
  };
  return (localAddress) => openLean({ port, transport, localAddress, timeoutMs, onMessage, onClose });
}

async function wsOpener(port, timeoutMs) {
  const { WebSocket } = await import('ws');
  const header = { seq: 0, t: 0 };
  const onMessage = (data) => {
    if (readHeader(data, header)) deliver(header.seq, header.t);
  };
  return (localAddress) =>
    new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/`, {
        perMessageDeflate: false,
        skipUTF8Validation: true,
        handshakeTimeout: timeoutMs,
        ...(localAddress ? { localAddress } : {}),
      });
      ws.once('open', () => {
        ws.off('error', reject);
        ws.on('error', () => {});
        ws.on('close', () => {
          disconnects += 1;
        });
        resolve(ws);
      });
      ws.once('error', reject);
      ws.on('message', onMessage);
    });
}

async function socketIoOpener(port, timeoutMs) {
  const { io } = await import('socket.io-client');
  const onMessage = (m) => {
    if (m && typeof m.seq === 'number') deliver(m.seq, m.t);
  };
  return (localAddress) =>
    new Promise((resolve, reject) => {
      const socket = io(`http://127.0.0.1:${port}`, {
        transports: ['websocket'],
        forceNew: true,
        reconnection: false,
        timeout: timeoutMs,
        perMessageDeflate: false,
        ...(localAddress ? { localAddress } : {}),
      });
      socket.once('connect', () => {
        socket.off('connect_error', reject);
        socket.on('disconnect', () => {
          disconnects += 1;
        });
        resolve(socket);
      });
      socket.once('connect_error', reject);
      socket.on('message', onMessage);
    });
}
