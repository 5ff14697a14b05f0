// Connect/disconnect cycles for R1, in a child process: each cycle opens a connection and ends it
// in one of four ways, in turn:
//   0 clean:     upgrade, join 3 rooms (waits for the 3 "ok" replies), close 1000, wait for the close
//   1 terminate: upgrade, join 3 rooms, then destroy the socket (no close frame)
//   2 abort:     half of the upgrade request's headers, then destroy the socket
//   3 auth:      the whole upgrade request, then destroy the socket while the (async) authenticate runs
//
//   -> { id, cmd: 'cycles', port, n, base, concurrency, localAddresses, rooms, authWindowMs }
//   <- { done, byMode, failures: { reason: count }, ms }
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { clock, openWs, UpgradeError } from './lean-ws.mjs';
import { send, serve, sleep } from './child-common.mjs';

const MODES = ['clean', 'terminate', 'abort', 'auth'];

function joinFrames(client, i, rooms) {
  for (let r = 0; r < 3; r++) client.send(JSON.stringify({ type: 'join', room: `room${(i * 3 + r) % rooms}`, requestId: r }));
}

async function withJoins(port, localAddress, i, rooms, end) {
  let oks = 0;
  let onOk;
  const joined = new Promise((resolve) => (onOk = resolve));
  let closed;
  const done = new Promise((resolve) => (closed = resolve));
  const client = await openWs({
    port,
    path: `/?u=c${i}`,
    localAddress,
    timeoutMs: 10_000,
    onMessage: (buffer, start, end) => {
      if (buffer.toString('utf8', start, end).includes('"type":"ok"') && ++oks === 3) onOk();
    },
    onClose: (info) => closed(info),
  });
  joinFrames(client, i, rooms);
  const timeout = sleep(10_000).then(() => 'timeout');
  if ((await Promise.race([joined, timeout])) === 'timeout') {
    client.destroy();
    throw new Error('no join replies');
  }
  if (end === 'clean') {
    client.close(1000);
    const info = await Promise.race([done, timeout]);
    if (info === 'timeout') {
      client.destroy();
      throw new Error('clean close timed out');
    }
    if (info.code !== 1000) throw new Error(`closed with ${info.code}`);
  } else {
    client.destroy();
  }
}

function raw(port, localAddress, request, destroyAfterMs) {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress });
    socket.on('error', () => {});
    socket.on('connect', () => {
      socket.write(request);
      setTimeout(() => {
        socket.destroy();
        resolve();
      }, destroyAfterMs);
    });
    socket.setTimeout(5_000, () => {
      socket.destroy();
      reject(new Error('raw connect timed out'));
    });
  });
}

function upgradeRequest(port, i) {
  const key = randomBytes(16).toString('base64');
  return `GET /?u=c${i} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
}

async function cycles({ port, n, base = 0, concurrency = 200, localAddresses = [], rooms = 60, authWindowMs = 2 }) {
  const started = clock();
  const byMode = { clean: 0, terminate: 0, abort: 0, auth: 0 };
  const failures = {};
  let next = 0;
  const one = async (i) => {
    const mode = MODES[i % 4];
    const localAddress = localAddresses.length ? localAddresses[i % localAddresses.length] : undefined;
    if (mode === 'clean' || mode === 'terminate') await withJoins(port, localAddress, i, rooms, mode);
    else if (mode === 'abort') {
      const request = upgradeRequest(port, i);
      await raw(port, localAddress, request.slice(0, Math.floor(request.length / 2)), 1);
    } else await raw(port, localAddress, upgradeRequest(port, i), authWindowMs);
    byMode[mode] += 1;
  };
  const worker = async () => {
    while (next < n) {
      const i = base + next++;
      try {
        await one(i);
      } catch (error) {
        const reason = error instanceof UpgradeError ? `${error.status || error.code}` : String(error.message ?? error);
        failures[reason] = (failures[reason] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { done: Object.values(byMode).reduce((a, b) => a + b, 0), byMode, failures, ms: clock() - started };
}

serve({ cycles });
send({ type: 'ready', pid: process.pid });
