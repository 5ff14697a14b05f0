// One bcast server for the load, fault and leak tests, in its own process (child_process.fork),
// driven by the test over IPC. It runs the built packages (dist), as every child process of the
// repository's tests does.
//
//   -> { id, cmd: 'init', config }   <- { port, nodeId }
//        config: { adapter: 'ws' | 'socket.io', port?, broadcaster?: BroadcasterOptions (plain values),
//                  adapter?: options, authDelayMs?, redis?: { url, channel, nodeId, probeIntervalMs },
//                  sigterm?: { drainTimeoutMs }, record?: boolean }
//   -> { id, cmd: 'run', plan }      <- what the broadcast loop did (see `run`)
//   -> { id, cmd: 'send', items }    <- one broadcast per item, all started at once, in order
//   -> { id, cmd: 'stats' }          <- getStats(), memory, active resources, socket counts
//   -> { id, cmd: 'gc' }             <- memory after a forced GC (needs --expose-gc)
//   -> { id, cmd: 'events', since }  <- the connections bcast closed (onDisconnect) and the sockets that closed
//   -> { id, cmd: 'listeners' }      <- listener counts of the http server and the WebSocketServer / engine
//   -> { id, cmd: 'rss-watch', ms }  <- starts sampling RSS; { cmd: 'rss-peak' } reads the peak
//   <- { type: 'problem', text }     (unhandledRejection, uncaughtException, MaxListenersExceededWarning)
//   <- { type: 'shutdown', ... }     (after SIGTERM, see `installSigterm`)
import { createHook } from 'node:async_hooks';
import { createServer } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Broadcaster } from '@bcast/core';
import { clock } from './lean-ws.mjs';
import { problemsSoFar, resources, send, serve, sleep } from './child-common.mjs';

let broadcaster;
let attachment;
let http;
let wss;
let io;
let config;
const seqs = new Map();
const events = { disconnects: [], socketsClosed: [], opened: 0 };
let rssTimer;
let rssPeak = 0;

function identity(query) {
  const userId = query.get('u') ?? undefined;
  const rooms = (query.get('r') ?? '').split(',').filter(Boolean);
  return { userId, data: { rooms } };
}

async function authenticate(query) {
  if (config.authDelayMs > 0) await sleep(config.authDelayMs);
  return identity(query);
}

/** Live timers, unref'd ones included (getActiveResourcesInfo lists only those that hold the loop). */
const liveTimers = new Map();
function trackTimers() {
  createHook({
    init(id, type) {
      if (type === 'Timeout') liveTimers.set(id, type);
    },
    destroy(id) {
      liveTimers.delete(id);
    },
  }).enable();
}

async function init(message) {
  config = message.config;
  if (config.trackTimers) trackTimers();
  const backplane = config.redis ? await redisBackplane(config.redis) : undefined;
  broadcaster = new Broadcaster({
    ...(config.broadcaster ?? {}),
    ...(backplane ? { backplane } : {}),
    logger: { warn: (...a) => config.verbose && console.warn(...a), error: (...a) => console.error(...a) },
    onConnect(entry) {
      events.opened += 1;
      for (const room of entry.data?.rooms ?? []) broadcaster.join(entry.id, room);
    },
    onDisconnect(entry, code, reason) {
      if (config.record) events.disconnects.push({ u: entry.userId, code, reason, at: clock() });
    },
  });
  if (backplane) await broadcaster.ready();
  http = createServer((_req, res) => res.writeHead(404).end());
  const adapterOptions = { ...(config.adapterOptions ?? {}) };
  if (config.adapter === 'socket.io') {
    const { Server } = await import('socket.io');
    const { attachToServer } = await import('@bcast/socket.io');
    io = new Server(http, { transports: ['websocket'], ...(config.io ?? {}) });
    attachment = attachToServer(broadcaster, io, { ...adapterOptions, authenticate: (handshake) => authenticate(new URLSearchParams(handshake.query)) });
    io.on('connection', (socket) => {
      const u = socket.handshake.query.u;
      socket.conn.once('close', () => config.record && events.socketsClosed.push({ u, at: clock() }));
    });
  } else {
    const { WebSocketServer } = await import('ws');
    const { attachToServer, recommendedServerOptions } = await import('@bcast/ws');
    wss = new WebSocketServer({ server: http, ...recommendedServerOptions });
    attachment = attachToServer(broadcaster, wss, { ...adapterOptions, authenticate: (request) => authenticate(new URL(request.url ?? '/', 'http://x').searchParams) });
    wss.on('connection', (ws, request) => {
      if (!config.record) return;
      const u = new URL(request.url ?? '/', 'http://x').searchParams.get('u');
      ws.once('close', () => events.socketsClosed.push({ u, at: clock() }));
    });
  }
  if (config.sigterm) installSigterm(config.sigterm);
  await new Promise((resolve, reject) => {
    http.once('error', reject);
    http.listen(config.port ?? 0, '127.0.0.1', 4096, resolve);
  });
  return { port: http.address().port, nodeId: broadcaster.nodeId, pid: process.pid };
}

async function redisBackplane(options) {
  const { createRedisBackplane } = await import('@bcast/redis');
  return createRedisBackplane({ url: options.url, channel: options.channel, nodeId: options.nodeId, probeIntervalMs: options.probeIntervalMs ?? 1_000 });
}

/**
 * The SIGTERM recipe (documented in faults-shutdown.test.ts): `process.on`, not `once`, so that a
 * second SIGTERM during the drain reaches this handler instead of Node's default (exit 143 at once).
 */
function installSigterm({ drainTimeoutMs }) {
  let stopping;
  let sigterms = 0;
  process.on('SIGTERM', () => {
    sigterms += 1;
    stopping ??= (async () => {
      send({ type: 'sigterm' });
      const started = clock();
      const before = broadcaster.getStats().connections;
      const report = await broadcaster.shutdown({ drainTimeoutMs });
      // Stop listening first: until here new upgrades got 503; from now on the port is closed.
      const closed = new Promise((resolve) => http.close(() => resolve()));
      http.closeAllConnections();
      await attachment.dispose();
      wss?.close();
      await closed;
      const closedAt = process._getActiveHandles().map(describeHandle);
      await sleep(100);
      const remaining = process._getActiveHandles().map(describeHandle);
      const after = resources();
      send({ type: 'shutdown', report, before, closedAt, remaining, resources: after, sigterms, durationMs: clock() - started, problems: problemsSoFar() });
      // Nothing else to do: with nothing of bcast holding the loop, the process exits by itself
      // once the IPC channel is closed. The unref'd timer only fires when something still does.
      process.exitCode = 0;
      setTimeout(() => {
        console.error(`[server] still alive 3 s after shutdown; handles: ${JSON.stringify(process._getActiveHandles().map(describeHandle))}`);
        process.exit(3);
      }, 3_000).unref();
      process.disconnect();
    })();
  });
}

function describeHandle(h) {
  const name = h?.constructor?.name ?? typeof h;
  if (name === 'Socket' || name === 'Server') {
    const fd = h._handle?.fd;
    const remote = h.remoteAddress ? `${h.remoteAddress}:${h.remotePort}` : undefined;
    const local = typeof h.address === 'function' ? h.address() : undefined;
    return {
      name,
      fd,
      remote,
      local: local && typeof local === 'object' ? `${local.address}:${local.port}` : undefined,
      pipe: h._type === 'pipe' || h._handle?.constructor?.name === 'Pipe',
      handle: h._handle?.constructor?.name,
      listening: h.listening,
      destroyed: h.destroyed,
      events: typeof h.eventNames === 'function' ? h.eventNames().map(String) : undefined,
    };
  }
  if (name === 'Timeout') return { name, ms: h._idleTimeout, fn: h._onTimeout?.name };
  return { name };
}

function message(key, bytes) {
  const s = seqs.get(key) ?? 0;
  seqs.set(key, s + 1);
  const value = { k: key, s, t: Math.round(clock() * 1000) / 1000, p: '' };
  const base = JSON.stringify(value).length;
  if (bytes > base) value.p = 'x'.repeat(bytes - base);
  return value;
}

function broadcastOne(item, bytes) {
  const value = message(item.key, bytes);
  const options = item.volatile ? { volatile: true } : {};
  if (item.op === 'room') return broadcaster.toRoom(item.target, value, options);
  if (item.op === 'user') return broadcaster.toUser(item.target, value, options);
  return broadcaster.toAll(value, options);
}

/**
 * The broadcast loop: `rate` broadcasts a second for `durationMs`, each to one of `targets`
 * (`{ op, target, key, volatile? }`, chosen at random, or in turn with `roundRobin`), every
 * message `{ k: key, s: seq of that key, t: clock() at the call, p: padding to `bytes` }`. Never
 * awaits one broadcast before the next (a real app does not either); counts what every result
 * says, and whatever rejects or throws (there must be nothing).
 */
async function run({ plan }) {
  const { durationMs, rate, bytes = 256, targets, roundRobin = false } = plan;
  // Node's default resolution (10 ms): each sample is the time between two ticks of a 10 ms timer
  const eld = monitorEventLoopDelay();
  const totals = { sent: 0, recipients: 0, delivered: 0, failed: 0, dropped: 0, removed: 0, rejected: 0, thrown: 0, backplaneFailed: 0, sentByKey: {} };
  const rejections = [];
  const backplaneErrors = {};
  const backplaneStatus = {};
  const callMs = [];
  let rss = process.memoryUsage.rss();
  const cpu = process.cpuUsage();
  const rssStart = rss;
  let pending = 0;
  let idle;
  eld.enable();
  const started = clock();
  let next = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const elapsed = clock() - started;
      const due = Math.min(Math.floor((elapsed * rate) / 1000), Math.floor((durationMs * rate) / 1000));
      while (totals.sent < due) {
        const item = targets[roundRobin ? next++ % targets.length : Math.floor(Math.random() * targets.length)];
        totals.sent += 1;
        totals.sentByKey[item.key] = (totals.sentByKey[item.key] ?? 0) + 1;
        const at = clock();
        pending += 1;
        let promise;
        try {
          promise = broadcastOne(item, bytes);
        } catch (error) {
          totals.thrown += 1;
          rejections.push(String(error));
          pending -= 1;
          continue;
        }
        promise.then(
          (r) => {
            callMs.push(clock() - at);
            totals.recipients += r.recipients;
            totals.delivered += r.delivered;
            totals.failed += r.failed;
            totals.dropped += r.dropped;
            totals.removed += r.removed;
            const status = `${r.backplane}${r.backplaneError ? `/${r.backplaneError}` : ''}`;
            backplaneStatus[status] = (backplaneStatus[status] ?? 0) + 1;
            if (r.backplane === 'failed') {
              totals.backplaneFailed += 1;
              const code = r.backplaneError ?? 'unknown';
              backplaneErrors[code] = (backplaneErrors[code] ?? 0) + 1;
            }
            if (--pending === 0) idle?.();
          },
          (error) => {
            totals.rejected += 1;
            if (rejections.length < 10) rejections.push(String(error));
            if (--pending === 0) idle?.();
          },
        );
      }
      rss = Math.max(rss, process.memoryUsage.rss());
      if (elapsed >= durationMs) {
        clearInterval(timer);
        resolve();
      }
    };
    const timer = setInterval(tick, 5);
  });
  if (pending > 0) await new Promise((resolve) => (idle = resolve));
  eld.disable();
  callMs.sort((a, b) => a - b);
  return {
    ...totals,
    rejections,
    backplaneErrors,
    backplaneStatus,
    health: config.redis ? summaryOfHealth() : undefined,
    durationMs: clock() - started,
    eld: { p50: eld.percentile(50) / 1e6, p99: eld.percentile(99) / 1e6, max: eld.max / 1e6, samples: eld.count },
    callMs: { p50: callMs[Math.floor(callMs.length * 0.5)] ?? 0, p99: callMs[Math.floor(callMs.length * 0.99)] ?? 0 },
    rssStart,
    rssPeak: rss,
    cpuMs: (process.cpuUsage(cpu).user + process.cpuUsage(cpu).system) / 1000,
  };
}

/** One broadcast per item (`{ op, target, key }`), all started at once, in order; resolves with the sum of their results. */
async function sendItems({ items, bytes = 128 }) {
  const results = await Promise.allSettled(items.map((item) => broadcastOne(item, bytes)));
  const out = { recipients: 0, delivered: 0, failed: 0, dropped: 0, rejected: 0, backplaneFailed: 0, errors: [] };
  for (const r of results) {
    if (r.status === 'rejected') {
      out.rejected += 1;
      if (out.errors.length < 5) out.errors.push(String(r.reason));
      continue;
    }
    out.recipients += r.value.recipients;
    out.delivered += r.value.delivered;
    out.failed += r.value.failed;
    out.dropped += r.value.dropped;
    if (r.value.backplane === 'failed') out.backplaneFailed += 1;
  }
  return out;
}

function summaryOfHealth() {
  const h = broadcaster.getHealthStatus();
  return { status: h.status, reasons: h.reasons, circuits: h.reliability.circuits, backplane: h.backplane.details ?? h.backplane };
}

function stats() {
  const s = broadcaster.getStats();
  return {
    connections: s.connections,
    users: s.users,
    rooms: s.rooms,
    roomMemberships: s.roomMemberships,
    broadcasts: s.broadcasts,
    remoteBroadcasts: s.remoteBroadcasts,
    deliveries: s.deliveries,
    monitor: { dropped: s.monitor.dropped, disconnects: s.monitor.disconnects, errorsByCategory: s.monitor.errorsByCategory, backplane: s.monitor.backplane },
    opened: events.opened,
    sockets: wss ? wss.clients.size : io ? io.engine.clientsCount : 0,
    memory: process.memoryUsage(),
    resources: resources(),
    timers: config.trackTimers ? liveTimers.size : undefined,
    problems: problemsSoFar(),
  };
}

async function gc() {
  if (typeof globalThis.gc !== 'function') throw new Error('start the server with --expose-gc');
  for (let i = 0; i < 4; i++) {
    globalThis.gc();
    await sleep(20);
  }
  return { memory: process.memoryUsage(), resources: resources(), timers: config.trackTimers ? liveTimers.size : undefined };
}

function listeners() {
  const count = (emitter) => Object.fromEntries(emitter.eventNames().map((name) => [String(name), emitter.listenerCount(name)]));
  return { http: count(http), wss: wss ? count(wss) : io ? count(io.engine) : {} };
}

serve({
  init,
  run,
  send: sendItems,
  stats,
  health: () => summaryOfHealth(),
  gc,
  listeners,
  events: ({ since = 0 }) => ({ disconnects: events.disconnects.slice(since), socketsClosed: events.socketsClosed.slice(since) }),
  'events-clear': () => {
    events.disconnects.length = 0;
    events.socketsClosed.length = 0;
    return true;
  },
  'rss-watch': ({ ms = 50 }) => {
    clearInterval(rssTimer);
    rssPeak = process.memoryUsage().rss;
    rssTimer = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), ms);
    rssTimer.unref();
    return rssPeak;
  },
  'rss-peak': () => Math.max(rssPeak, process.memoryUsage().rss),
  /**
   * Blocks the event loop for `ms` now (a long GC pause, a big synchronous job), in the poll phase
   * (this request's IPC callback), as a pause in any I/O callback would. With `during`, a
   * broadcast of that item is started first, so that its backplane PUBLISH is on the wire, its
   * reply not read yet, when the loop stops.
   */
  block: async ({ ms, during }) => {
    if (during) broadcastOne(during, 128).catch(() => {});
    for (let i = 0; i < 20; i++) await Promise.resolve(); // the broadcast's microtasks: the PUBLISH is written
    const until = performance.now() + ms;
    while (performance.now() < until);
    return true;
  },
  'set-record': ({ on }) => {
    config.record = on;
    return true;
  },
  disconnect: ({ userId, code, reason }) => {
    let n = 0;
    for (const entry of broadcaster.connections.byUser(userId)) n += broadcaster.disconnect(entry.id, code, reason) ? 1 : 0;
    return n;
  },
});
send({ type: 'ready', pid: process.pid });
