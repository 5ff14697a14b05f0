// Slowloris from its own process (B14): for each target, `perTarget` TCP connections that each
// send one byte of an upgrade request head every second (each at its own phase within the second)
// and never finish it. Prints {"opened":true} once every connection has sent its first byte, then,
// when all are closed by the servers (or after `maxMs`), one summary line per target, and exits.
//
//   node slowloris.mjs '<json: { targets: [{ name, port, path }], perTarget, maxMs }>'
import { connect } from 'node:net';

const { targets, perTarget, maxMs } = JSON.parse(process.argv[2]);
const conns = [];

function open(target) {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: target.port });
    const c = { target: target.name, socket, firstByteAt: 0, closedAt: undefined, response: '', error: undefined };
    socket.on('error', (error) => void (c.error = error.code));
    socket.on('data', (d) => void (c.response += d.toString('latin1')));
    socket.once('close', () => void (c.closedAt = performance.now()));
    socket.once('connect', () => resolve(c));
  });
}

const heads = new Map(targets.map((t) => [t.name, `GET ${t.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n`]));
// Independent attackers do not write in step: each connection has its own phase within the
// second, and every 100 ms the tenth of them whose turn it is writes its next byte.
let turn = 0;
function dribble() {
  const now = performance.now();
  for (let i = turn % 10; i < conns.length; i += 10) {
    const c = conns[i];
    if (c.closedAt !== undefined || c.socket.destroyed) continue;
    const head = heads.get(c.target);
    if (c.firstByteAt === 0) c.firstByteAt = now;
    c.socket.write(head[Math.min(c.sent ?? 0, head.length - 1)]);
    c.sent = (c.sent ?? 0) + 1;
  }
  turn += 1;
}

// in steps of 50 per target (a burst would overflow the listen backlog of 511)
for (let i = 0; i < perTarget; i += 50) {
  const batch = await Promise.all(targets.flatMap((t) => Array.from({ length: Math.min(50, perTarget - i) }, () => open(t))));
  conns.push(...batch);
}
const timer = setInterval(dribble, 100);
dribble();
await new Promise((resolve) => setTimeout(resolve, 1_000));
console.log(JSON.stringify({ opened: true, connections: conns.length }));
const started = performance.now();
await new Promise((resolve) => {
  const check = setInterval(() => {
    if (conns.every((c) => c.closedAt !== undefined) || performance.now() - started > maxMs) {
      clearInterval(check);
      resolve();
    }
  }, 50);
});
clearInterval(timer);
for (const t of targets) {
  const mine = conns.filter((c) => c.target === t.name);
  const closed = mine.filter((c) => c.closedAt !== undefined);
  const lifetimes = closed.map((c) => c.closedAt - c.firstByteAt);
  const statuses = {};
  for (const c of mine) {
    const status = /^HTTP\/1\.1 (\d{3})/.exec(c.response)?.[1] ?? (c.error ? `error ${c.error}` : 'none');
    statuses[status] = (statuses[status] ?? 0) + 1;
  }
  console.log(
    JSON.stringify({
      target: t.name,
      connections: mine.length,
      closed: closed.length,
      minLifetimeMs: Math.min(...lifetimes),
      maxLifetimeMs: Math.max(...lifetimes),
      statuses,
    }),
  );
}
for (const c of conns) c.socket.destroy();
setTimeout(() => process.exit(0), 50).unref();
