// A join flood from its own process (B10), so that the flooder's CPU is not the server's: one
// client sends `rate` join requests a second (in batches every 10 ms) for `durationMs`; a
// connection the server closes is replaced at once. Prints one JSON line when the first attacker
// is connected ({"started":true}) and one with the summary at the end, then exits.
//
//   node join-flood.mjs <ws|express|socket.io> <url> <rate> <durationMs>
import { io } from 'socket.io-client';
import { WebSocket } from 'ws';

const [adapter, url, rateArg, durationArg] = process.argv.slice(2);
const rate = Number(rateArg);
const durationMs = Number(durationArg);

const summary = { adapter, connections: 0, joinsSent: 0, replies: { ok: 0, RATE_LIMITED: 0, other: 0 }, closes: {}, elapsedMs: 0 };
let joinSeq = 0;

function count(message) {
  if (message?.type === 'ok') summary.replies.ok += 1;
  else if (message?.code === 'RATE_LIMITED') summary.replies.RATE_LIMITED += 1;
  else summary.replies.other += 1;
}
function closed(key) {
  summary.closes[key] = (summary.closes[key] ?? 0) + 1;
}

/** Opens one attacker connection; resolves with it once open (null when refused). */
function open() {
  return new Promise((resolve) => {
    if (adapter === 'socket.io') {
      const socket = io(url, { transports: ['websocket'], reconnection: false, forceNew: true });
      socket.on('message', count);
      socket.once('connect', () =>
        resolve({
          send: (m) => socket.emit('message', m),
          isOpen: () => socket.connected,
          onClose: (fn) => socket.once('disconnect', (reason) => fn(reason)),
          end: () => socket.close(),
        }),
      );
      socket.once('connect_error', (error) => {
        closed(`connect_error: ${error.message}`);
        resolve(null);
      });
      return;
    }
    const ws = new WebSocket(url);
    ws.on('error', () => {});
    ws.on('message', (data) => count(JSON.parse(data.toString())));
    ws.once('open', () =>
      resolve({
        send: (m) => ws.send(JSON.stringify(m)),
        isOpen: () => ws.readyState === WebSocket.OPEN,
        onClose: (fn) => ws.once('close', (code) => fn(String(code))),
        end: () => ws.terminate(),
      }),
    );
    ws.once('unexpected-response', () => {
      closed('refused');
      resolve(null);
    });
  });
}

const started = Date.now();
const deadline = started + durationMs;
// The current attacker, and a spare already connected that takes over the moment the server closes it.
let current = await open();
let spare = open();
let switching = false;
const watch = (attacker) => attacker?.onClose((key) => Date.now() < deadline && closed(key));
summary.connections = 1;
watch(current);
console.log(JSON.stringify({ started: true }));
await new Promise((resolve) => {
  const timer = setInterval(() => {
    const now = Date.now();
    if (now >= deadline) {
      clearInterval(timer);
      current?.end();
      void spare.then((s) => s?.end());
      return resolve();
    }
    if (current === null || !current.isOpen()) {
      if (switching) return;
      switching = true;
      void spare.then((next) => {
        current = next;
        summary.connections += 1;
        watch(current);
        spare = open();
        switching = false;
      });
      return;
    }
    // paced on the clock, not on the timer: a late tick sends what is due (at most 1 s worth)
    const due = Math.min(Math.floor(((now - started) * rate) / 1_000) - summary.joinsSent, rate);
    for (let i = 0; i < due; i++) current.send({ type: 'join', room: `flood-${summary.connections}-${joinSeq++}` });
    summary.joinsSent += Math.max(0, due);
  }, 10);
});
summary.elapsedMs = Date.now() - started;
console.log(JSON.stringify(summary));
// the sockets are closed; let them go
setTimeout(() => process.exit(0), 100).unref();
