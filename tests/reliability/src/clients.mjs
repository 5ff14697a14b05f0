// The client-load process of the reliability tests: many lean WebSocket clients (see lean-ws.mjs)
// that check every test message they get, `{ k: key, s: seq, ... }`, against the streams they
// subscribe to: in order, without gaps or duplicates, and none from a stream they are not in.
//
//   -> { id, cmd: 'connect', port, n, base, rooms?, users?, subs, transport?, localAddresses?, concurrency?,
//        lenient?, reconnect?: { ports, initialMs, capMs }, pause?: 'none' | 'all', readBytesPerSec?, pathPrefix? }
//        client i (global index base + i): user `u<(base+i) % users>`, room `room<(base+i) % rooms>`;
//        subs: the streams it must get: 'a' (toAll), 'r' (its room: key r<room>), 'u' (its user: key u<user>),
//        'v' (its user's second stream: key v<user>), or any literal key given as '=key';
//        lenient: true, or key prefixes: those streams may be joined mid-way (the first message sets the baseline)
//   <- { connected, failed, refusals: { status: count }, ms }
//   -> { id, cmd: 'reset' }           clears counters and latencies (a new phase)
//   -> { id, cmd: 'report', expected? } <- counters, latency histogram, close codes, and with
//        `expected` (sent per key) how many messages each client is missing
//   -> { id, cmd: 'status' }          <- open / closed / reconnected counts
//   -> { id, cmd: 'close', code? }    clean close of every client; <- how many closed
//   <- { type: 'problem', text }
import { MsHistogram, UpgradeError, clock, openWs, readHeader } from './lean-ws.mjs';
import { send, serve, sleep } from './child-common.mjs';

/** @type {Client[]} */
const clients = [];
let hist = new MsHistogram();
/** ok: in order; dup: a second copy; late: one that came after a later one (it filled a gap); gaps: skipped and never filled. */
const counters = { received: 0, ok: 0, dup: 0, late: 0, gaps: 0, wrong: 0, other: 0 };
/** Messages skipped (gaps), by stream key. */
let gapsByKey = {};
const closeCodes = {};
const refusals = {};
let reconnects = 0;
let lastReconnectAt = 0;
let setup;
let readTimer;

class Client {
  constructor(index, user, room, subs) {
    this.index = index;
    this.user = user;
    this.room = room;
    /** key -> last seq seen (-1: none yet; -2: lenient, the next one sets the baseline) */
    this.last = new Map(subs.map((k) => [k, isLenient(k) ? -2 : -1]));
    this.conn = undefined;
    this.open = false;
    this.closes = [];
    this.attempt = 0;
    this.portIndex = 0;
    this.budget = 0;
    this.stoppedReadingAt = undefined;
    /** key -> sequence numbers skipped so far (created on the first gap) */
    this.skipped = undefined;
  }

  path() {
    const q = `u=${this.user}${this.room === undefined ? '' : `&r=${this.room}`}`;
    return setup.transport === 'socketio' ? `/socket.io/?EIO=4&transport=websocket&${q}` : `${setup.pathPrefix ?? '/'}?${q}`;
  }
}

/** `lenient`: true (every stream), or the key prefixes of the streams a client may join mid-way (after a reconnect too). */
function isLenient(key) {
  const l = setup.lenient;
  return l === true || (Array.isArray(l) && l.some((prefix) => key.startsWith(prefix)));
}

const header = { k: '', s: 0, t: 0 };

function onMessage(client, buffer, start, end) {
  if (client.budget !== undefined && setup.readBytesPerSec) client.budget -= end - start;
  if (!readHeader(buffer, start, end, header)) {
    counters.other += 1;
    return;
  }
  counters.received += 1;
  const last = client.last.get(header.k);
  if (last === undefined) {
    counters.wrong += 1;
    return;
  }
  hist.record(clock() - header.t);
  const s = header.s;
  if (last === -2 || s === last + 1) {
    counters.ok += 1;
    client.last.set(header.k, s);
  } else if (s <= last) {
    const skipped = client.skipped?.get(header.k);
    if (skipped?.delete(s)) {
      counters.late += 1;
      counters.gaps -= 1;
      gapsByKey[header.k] -= 1;
    } else counters.dup += 1;
  } else {
    counters.gaps += s - last - 1;
    gapsByKey[header.k] = (gapsByKey[header.k] ?? 0) + s - last - 1;
    client.skipped ??= new Map();
    let skipped = client.skipped.get(header.k);
    if (!skipped) client.skipped.set(header.k, (skipped = new Set()));
    for (let g = last + 1; g < s; g++) skipped.add(g);
    counters.ok += 1;
    client.last.set(header.k, s);
  }
}

function onClose(client, info) {
  client.open = false;
  client.closes.push({ ...info, at: clock() });
  closeCodes[info.code] = (closeCodes[info.code] ?? 0) + 1;
  if (setup.reconnect) scheduleReconnect(client);
}

/** Full jitter: the k-th retry waits random(0, min(cap, initial * 2^k)). */
function scheduleReconnect(client) {
  const { initialMs = 1_000, capMs = 10_000 } = setup.reconnect;
  const delay = Math.random() * Math.min(capMs, initialMs * 2 ** client.attempt);
  client.attempt += 1;
  setTimeout(() => void reconnect(client), delay);
}

async function reconnect(client) {
  const ports = setup.reconnect.ports ?? [setup.port];
  const port = ports[client.portIndex % ports.length];
  // A new connection: its lenient streams start wherever they are now.
  for (const key of client.last.keys()) {
    if (!isLenient(key)) continue;
    client.last.set(key, -2);
    client.skipped?.delete(key);
  }
  try {
    await openClient(client, port);
    client.attempt = 0;
    reconnects += 1;
    lastReconnectAt = clock();
  } catch (error) {
    const status = error instanceof UpgradeError ? error.status || error.code : String(error);
    refusals[status] = (refusals[status] ?? 0) + 1;
    client.portIndex += 1; // try the next node
    scheduleReconnect(client);
  }
}

async function openClient(client, port) {
  const conn = await openWs({
    port,
    path: client.path(),
    transport: setup.transport ?? 'ws',
    localAddress: setup.localAddresses?.length ? setup.localAddresses[client.index % setup.localAddresses.length] : undefined,
    timeoutMs: setup.timeoutMs ?? 30_000,
    pauseAfterOpen: setup.pause === 'all',
    onMessage: (buffer, start, end) => onMessage(client, buffer, start, end),
    onClose: (info) => onClose(client, info),
  });
  client.conn = conn;
  client.open = true;
  if (setup.pause === 'all') client.stoppedReadingAt = clock();
  return conn;
}

function subsOf(kinds, user, room) {
  return kinds.map((kind) => (kind === 'a' ? 'a' : kind === 'r' ? `r${room}` : kind === 'u' ? `u${user}` : kind === 'v' ? `v${user}` : kind.slice(1)));
}

async function connect(message) {
  setup = message;
  const started = clock();
  const { n, base = 0, rooms = 0, users, concurrency = 200, subs = ['a'] } = message;
  for (let i = 0; i < n; i++) {
    const g = base + i;
    const user = users ? g % users : g;
    const room = rooms > 0 ? g % rooms : undefined;
    clients.push(new Client(g, `u${user}`, room === undefined ? undefined : `room${room}`, subsOf(subs, user, room)));
  }
  let next = 0;
  let failed = 0;
  let firstError;
  const worker = async () => {
    while (next < clients.length) {
      const client = clients[next++];
      try {
        await openClient(client, message.port);
      } catch (error) {
        failed += 1;
        firstError ??= error;
        const status = error instanceof UpgradeError ? error.status || error.code : String(error);
        refusals[status] = (refusals[status] ?? 0) + 1;
        if (setup.reconnect) scheduleReconnect(client);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  if (message.readBytesPerSec) startReadLimit(message.readBytesPerSec);
  return { connected: clients.filter((c) => c.open).length, failed, firstError: firstError ? String(firstError.message) : undefined, refusals: { ...refusals }, ms: clock() - started };
}

/**
 * Reads at most `rate` bytes a second per client: every 20 ms each client gets its share of the
 * budget and reads (resume) until it is spent (pause). What a chunk overshoots is paid back later.
 */
function startReadLimit(rate) {
  for (const c of clients) {
    c.budget = 0;
    c.conn?.socket.pause();
  }
  const step = 20;
  readTimer = setInterval(() => {
    for (const c of clients) {
      if (!c.open) continue;
      c.budget = Math.min(c.budget + (rate * step) / 1000, (rate * step) / 1000);
      if (c.budget > 0) c.conn.socket.resume();
      else c.conn.socket.pause();
    }
  }, step);
  // pause as soon as the budget is spent, between two ticks
  const check = setInterval(() => {
    for (const c of clients) if (c.open && c.budget <= 0) c.conn.socket.pause();
  }, 2);
  readTimer.check = check;
}

function report({ expected }) {
  let missing = 0;
  let incomplete = 0;
  const missingByKey = { ...gapsByKey };
  if (expected) {
    for (const c of clients) {
      let m = 0;
      for (const [key, last] of c.last) {
        const sent = expected[key] ?? 0;
        if (last === -2) continue;
        const tail = Math.max(0, sent - 1 - last);
        if (tail > 0) missingByKey[key] = (missingByKey[key] ?? 0) + tail;
        m += tail;
      }
      missing += m;
      if (m > 0) incomplete += 1;
    }
    missing += counters.gaps;
  }
  return {
    ...counters,
    missing,
    missingByKey,
    incomplete,
    cpuMs: process.cpuUsage().user / 1000 + process.cpuUsage().system / 1000,
    latency: hist.sparse(),
    closeCodes: { ...closeCodes },
    refusals: { ...refusals },
    open: clients.filter((c) => c.open).length,
    clients: clients.length,
    reconnects,
    lastReconnectAt,
    stoppedReadingAt: clients.find((c) => c.stoppedReadingAt !== undefined)?.stoppedReadingAt,
  };
}

serve({
  connect,
  reset: () => {
    hist = new MsHistogram();
    for (const key of Object.keys(counters)) counters[key] = 0;
    gapsByKey = {};
    return true;
  },
  report,
  status: () => ({ open: clients.filter((c) => c.open).length, clients: clients.length, reconnects, lastReconnectAt, closeCodes: { ...closeCodes }, refusals: { ...refusals } }),
  close: async ({ code = 1000, waitMs = 5_000 }) => {
    clearInterval(readTimer);
    if (readTimer) clearInterval(readTimer.check);
    setup.reconnect = undefined;
    for (const c of clients) {
      if (!c.open) continue;
      c.conn.socket.resume();
      c.conn.close(code);
    }
    const until = clock() + waitMs;
    while (clients.some((c) => c.open) && clock() < until) await sleep(20);
    const left = clients.filter((c) => c.open);
    for (const c of left) c.conn.destroy();
    return { closed: clients.length - left.length, destroyed: left.length };
  },
  destroy: () => {
    if (setup) setup.reconnect = undefined;
    for (const c of clients) c.conn?.destroy();
    return true;
  },
  resume: () => {
    clearInterval(readTimer);
    if (readTimer) clearInterval(readTimer.check);
    for (const c of clients) c.conn?.socket.resume();
    return true;
  },
  'stop-reconnect': () => {
    setup.reconnect = undefined;
    return true;
  },
});
send({ type: 'ready', pid: process.pid });
