// What the three sample chat apps share: the chat's rules (identity, joins, chat messages, room
// history and presence), the HTTP routes (page, @bcast/client, POST /broadcast, /dashboard.json,
// /health, /stats, /metrics) and the process plumbing (listen, close, run as a script). Each app
// only wires its transport adapter.
import { readdirSync, readFileSync, realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Broadcaster, ErrorClassifier, ErrorCode, isBcastError } from '@bcast/core';
import { createDashboard, inSpan } from './dashboard.mjs';
import { appMetrics, shutdownGlobalTelemetry } from './metrics.mjs';

/** Tells a caller's bad input (400) from a server fault (500). */
const callerErrors = new ErrorClassifier();

export { appMetrics } from './metrics.mjs';
export { createDashboard, inSpan, traceLink } from './dashboard.mjs';

/** @typedef {import('@bcast/core').ConnectionEntry} ConnectionEntry */
/** @typedef {ReturnType<typeof createDashboard>} Dashboard */

// ---- identity ---------------------------------------------------------------------------------

const NAME = /^[\p{L}\p{N}][\p{L}\p{N} _.-]{0,31}$/u;

/**
 * DEMO ONLY: the user is whatever name the page sends at connect time. A real app verifies a
 * session cookie or a signed token here and returns the user id it proves (or false).
 * @param {unknown} name
 * @returns {string | false}
 */
export function demoIdentity(name) {
  if (typeof name !== 'string') return false;
  const trimmed = name.trim();
  return NAME.test(trimmed) ? trimmed : false;
}

/** The `name` query parameter of an upgrade request (ws and express apps). */
export function nameFromUrl(/** @type {string | undefined} */ url) {
  return new URL(url ?? '/', 'http://localhost').searchParams.get('name');
}

// ---- the chat ---------------------------------------------------------------------------------

const MAX_TEXT = 2_000;

/**
 * Every chat room keeps a history: its messages reach members as `bcast.pub` publications with a
 * position, and a page that lost its connection gets what it missed when @bcast/client rejoins.
 * (Rooms are whatever name people type; `'*'` matches them all.)
 */
export const CHAT_HISTORY = { rooms: '*', maxMessages: 200, ttlMs: 15 * 60_000 };

/**
 * The chat's Broadcaster options, and `use(broadcaster, dashboard)` to call once both exist:
 * - any valid room may be joined by an identified user (the core validates the room id);
 * - rooms keep a history ({@link CHAT_HISTORY}) and announce who joins and leaves
 *   (`presence: { events: true }`: `bcast.presence` to the room's members);
 * - `{ type: "who", room }` from a member is answered `{ type: "presence", room, users, connections }`
 *   from `broadcaster.presence(room)` (every process's members when the presence store is shared);
 * - `{ type: "chat", to: "room" | "all" | "user", room?, userId?, text }` is broadcast stamped with
 *   the sender's identity (never the body's), inside a span, and recorded on the dashboard.
 * @param {{ logger?: Pick<Console, 'warn' | 'error'>, historyStore?: import('@bcast/core').HistoryOptions['store'], presenceStore?: import('@bcast/core').PresenceOptions['store'] }} [options]
 */
export function chatHooks(options = {}) {
  const logger = options.logger ?? console;
  /** @type {Broadcaster | undefined} */
  let broadcaster;
  /** @type {Dashboard | undefined} */
  let dashboard;

  /** A direct answer to one connection (not a room message). */
  const reply = (/** @type {ConnectionEntry} */ entry, /** @type {object} */ message) => {
    if (!broadcaster || entry.isClosing) return;
    broadcaster.sendTo(entry.id, message, { localOnly: true }).catch((error) => logger.warn('[chat] reply failed:', error));
  };

  /**
   * @param {ConnectionEntry} entry
   * @param {unknown} message
   */
  const onMessage = async (entry, message) => {
    try {
      await relay(entry, message);
    } catch (error) {
      // e.g. a user id that is not a valid id: tell the sender, never break the connection
      reply(entry, { type: 'notice', level: 'error', text: error instanceof Error ? error.message : String(error) });
    }
  };

  /**
   * @param {ConnectionEntry} entry
   * @param {unknown} message
   */
  const relay = async (entry, message) => {
    const b = broadcaster;
    if (!b) return;
    const m = /** @type {Record<string, unknown>} */ (typeof message === 'object' && message !== null ? message : {});
    const member = (/** @type {unknown} */ room) => typeof room === 'string' && b.rooms.roomsOf(entry.id).has(room);
    if (m.type === 'who') {
      if (!member(m.room)) return reply(entry, { type: 'notice', level: 'error', text: `join ${JSON.stringify(m.room)} first` });
      const report = await b.presence(/** @type {string} */ (m.room));
      return reply(entry, { type: 'presence', ...report });
    }
    if (m.type !== 'chat') return reply(entry, { type: 'notice', level: 'error', text: 'unknown message type' });
    const text = typeof m.text === 'string' ? m.text.trim() : '';
    if (text.length === 0 || text.length > MAX_TEXT) return reply(entry, { type: 'notice', level: 'error', text: `text must have 1 to ${MAX_TEXT} characters` });
    const from = entry.userId ?? 'anonymous';
    const at = new Date().toISOString();
    if (m.to === 'room' && !member(m.room)) return reply(entry, { type: 'notice', level: 'error', text: `join ${JSON.stringify(m.room)} before sending to it` });
    if (m.to !== 'all' && m.to !== 'room' && m.to !== 'user') return reply(entry, { type: 'notice', level: 'error', text: 'to must be "room", "all" or "user"' });
    await inSpan(`chat ${m.to}`, async (span) => {
      if (m.to === 'all') return dashboard?.record(await b.toAll({ type: 'chat', from, to: 'all', text, at }), span);
      if (m.to === 'room') {
        const room = /** @type {string} */ (m.room);
        return dashboard?.record(await b.toRoom(room, { type: 'chat', from, to: 'room', room, text, at }), span);
      }
      const userId = typeof m.userId === 'string' ? m.userId : '';
      const dm = { type: 'chat', from, to: 'user', userId, text, at };
      const result = await b.toUser(userId, dm);
      dashboard?.record(result, span);
      // With a backplane the user may be connected to another process: 0 only speaks for this one.
      if (result.delivered === 0 && b.backplane.isLocal) return reply(entry, { type: 'notice', level: 'error', text: `${JSON.stringify(userId)} is not connected` });
      if (userId !== from) reply(entry, dm); // the sender's copy
    });
  };

  return {
    /** Spread into `new Broadcaster({...})`. */
    options: {
      /** @param {ConnectionEntry} entry */
      authorizeJoin: (entry) => entry.userId !== undefined,
      onMessage,
      history: { ...CHAT_HISTORY, ...(options.historyStore ? { store: options.historyStore } : {}) },
      presence: { events: true, ...(options.presenceStore ? { store: options.presenceStore } : {}) },
    },
    /**
     * @param {Broadcaster} b
     * @param {Dashboard} d
     */
    use(b, d) {
      broadcaster = b;
      dashboard = d;
    },
  };
}

/**
 * The Broadcaster of one chat app, with its metrics, the chat's rules, the Redis backplane when
 * `redisUrl` is set, and the dashboard (`traceUrl`: BCAST_TRACE_URL by default).
 * @param {{ serviceName: string, logger: Pick<Console, 'warn' | 'error'>, redisUrl?: string | undefined, redisChannel?: string | undefined, traceUrl?: string | undefined }} options
 */
export async function createChat({ serviceName, logger, redisUrl, redisChannel, traceUrl = process.env.BCAST_TRACE_URL || undefined }) {
  const metrics = appMetrics(serviceName);
  const cluster = await clusterOptions({ redisUrl, redisChannel, logger });
  const chat = chatHooks({ logger, ...cluster.stores });
  const broadcaster = new Broadcaster({ ...chat.options, ...metrics.broadcasterOptions, ...cluster.options, logger });
  const dashboard = createDashboard({ broadcaster, traceUrl });
  chat.use(broadcaster, dashboard);
  return {
    broadcaster,
    dashboard,
    metrics,
    /**
     * The broadcaster's graceful shutdown: new connections refused, the clients closed with 1001
     * and given `drainTimeoutMs` to close, the backplane closed.
     * @param {{ drainTimeoutMs?: number }} [options]
     */
    async shutdown({ drainTimeoutMs = 500 } = {}) {
      dashboard.close();
      await broadcaster.shutdown({ drainTimeoutMs, closeBackplane: true });
      await cluster.close();
    },
  };
}

// ---- several processes ----------------------------------------------------------------------------

/**
 * With `redisUrl` (BCAST_REDIS_URL for the apps): a Redis backplane, so that a broadcast reaches
 * the clients of every app process whatever its adapter, plus @bcast/redis's history and presence
 * stores, so that a page recovers its missed messages on any process and the Online list shows
 * everyone, on every process. Their keys are named after the channel: apps on one channel share
 * them. Without `redisUrl`: in memory, one process.
 * @param {{ redisUrl?: string | undefined, redisChannel?: string | undefined, logger: Pick<Console, 'warn' | 'error'> }} options
 * @returns {Promise<{ options: { backplane?: import('@bcast/core').Backplane }, stores: { historyStore?: import('@bcast/core').HistoryOptions['store'], presenceStore?: import('@bcast/core').PresenceOptions['store'] }, close(): Promise<void> }>}
 */
export async function clusterOptions({ redisUrl, redisChannel, logger }) {
  if (!redisUrl) return { options: {}, stores: {}, close: async () => {} };
  /** @type {Record<string, any>} */
  const redis = await import('@bcast/redis');
  const channel = redisChannel ?? 'bcast';
  const backplane = redis.createRedisBackplane({ url: redisUrl, logger, ...(redisChannel ? { channel: redisChannel } : {}) });
  // (Stores of @bcast/redis releases that have them; an older one leaves history and presence in memory.)
  const historyStore = typeof redis.createRedisHistory === 'function' ? redis.createRedisHistory({ url: redisUrl, logger, prefix: `${channel}:h:` }) : undefined;
  const presenceStore = typeof redis.createRedisPresence === 'function' ? redis.createRedisPresence({ url: redisUrl, logger, prefix: `${channel}:p:` }) : undefined;
  return {
    options: { backplane },
    stores: { ...(historyStore ? { historyStore } : {}), ...(presenceStore ? { presenceStore } : {}) },
    // The broadcaster closes the backplane and the presence store; the history store is the app's.
    close: async () => {
      await historyStore?.close();
    },
  };
}

// ---- HTTP ---------------------------------------------------------------------------------------

const PUBLIC = new URL('../public/', import.meta.url);
const read = (/** @type {string} */ name) => readFileSync(new URL(name, PUBLIC));
const JS = 'text/javascript; charset=utf-8';
/** @type {Record<string, { type: string, body: Buffer }>} */
const ASSETS = {
  '/app.js': { type: JS, body: read('app.js') },
  '/socketio-websocket.js': { type: JS, body: read('socketio-websocket.js') },
  '/style.css': { type: 'text/css; charset=utf-8', body: read('style.css') },
  ...clientModules('/bcast-client/'),
};
const PAGE = read('index.html').toString('utf8');
const MAX_BODY_BYTES = 65_536;
const TARGETS = new Set(['all', 'user', 'room']);

/**
 * @bcast/client as the browser loads it: the package's built ES modules (dist/*.js, with their
 * source maps), served under `prefix` as they are. No bundler: the page imports
 * `/bcast-client/index.js`, which imports its siblings by relative path.
 * @param {string} prefix
 */
function clientModules(prefix) {
  const dist = new URL('./', import.meta.resolve('@bcast/client'));
  /** @type {string[]} */
  let files;
  try {
    files = readdirSync(dist).filter((name) => name.endsWith('.js') || name.endsWith('.js.map'));
  } catch {
    files = [];
  }
  if (!files.includes('index.js')) throw new Error('@bcast/client is not built: run `npx -y pnpm@12.4.2 build` first');
  return Object.fromEntries(
    files.map((name) => [`${prefix}${name}`, { type: name.endsWith('.map') ? 'application/json; charset=utf-8' : JS, body: readFileSync(new URL(name, dist)) }]),
  );
}

/**
 * One request handler for the page and its scripts, POST /broadcast, GET /dashboard.json,
 * /health, /stats and /metrics. Unknown paths go to `next` when given (express), else 404.
 * @param {{ title: string, transport: 'ws' | 'socket.io', wsPath?: string, broadcaster: Broadcaster, dashboard: Dashboard, metrics: import('./metrics.mjs').AppMetrics }} app
 * @returns {(req: import('node:http').IncomingMessage & { body?: unknown }, res: import('node:http').ServerResponse, next?: () => void) => void}
 */
export function createHttpHandler(app) {
  const page = PAGE.replaceAll('{{TITLE}}', escapeHtml(app.title))
    .replaceAll('{{TRANSPORT}}', app.transport)
    .replaceAll('{{WS_PATH}}', escapeHtml(app.wsPath ?? '/ws'))
    .replace('{{SOCKET_IO_SCRIPT}}', app.transport === 'socket.io' ? '<script src="/socket.io/socket.io.js"></script>' : '');

  return (req, res, next) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const method = req.method ?? 'GET';
    const get = method === 'GET' || method === 'HEAD';
    if (get && (path === '/' || path === '/index.html')) return send(res, 200, 'text/html; charset=utf-8', page, PAGE_HEADERS);
    const asset = get ? ASSETS[path] : undefined;
    if (asset) return send(res, 200, asset.type, asset.body, { 'cache-control': 'no-cache' });
    if (get && path === '/dashboard.json') return json(res, 200, app.dashboard.snapshot());
    if (get && path === '/health') {
      const health = app.broadcaster.getHealthStatus();
      return json(res, health.status === 'unhealthy' ? 503 : 200, health);
    }
    if (get && path === '/stats') return json(res, 200, app.broadcaster.getStats());
    if (get && path === '/metrics') return app.metrics.prometheus.getMetricsRequestHandler(req, res);
    if (path === '/broadcast') {
      if (method !== 'POST') return json(res, 405, problem('METHOD_NOT_ALLOWED', 'use POST'), { allow: 'POST' });
      broadcastRoute(app, req).then(
        ({ status, body, headers }) => json(res, status, body, headers),
        (error) => json(res, 500, problem('INTERNAL', error instanceof Error ? error.message : String(error))),
      );
      return;
    }
    if (next) return next();
    json(res, 404, problem('NOT_FOUND', `no route for ${method} ${path}`));
  };
}

/**
 * POST /broadcast `{ target: "all" | "user" | "room", userId?, room?, message }` with the
 * Broadcaster's toAll / toUser / toRoom; answers `{ target, result }` with its BroadcastResult
 * (recorded on the dashboard with the trace it ran in), or 400 with `{ error: { code, message } }`.
 * @param {{ broadcaster: Broadcaster, dashboard: Dashboard }} app
 * @param {import('node:http').IncomingMessage & { body?: unknown }} req
 * @returns {Promise<{ status: number, body: unknown, headers?: Record<string, string> }>}
 */
async function broadcastRoute({ broadcaster, dashboard }, req) {
  let body;
  try {
    body = req.body !== undefined ? req.body : await readJson(req);
  } catch (error) {
    const tooLarge = error instanceof Error && error.message === 'too large';
    if (tooLarge) return { status: 413, body: problem('TOO_LARGE', `the body is over ${MAX_BODY_BYTES} bytes`), headers: { connection: 'close' } };
    return { status: 400, body: problem('BAD_JSON', 'the body is not valid JSON') };
  }
  const b = /** @type {Record<string, unknown>} */ (typeof body === 'object' && body !== null ? body : {});
  const target = b.target;
  if (typeof target !== 'string' || !TARGETS.has(target)) return { status: 400, body: problem('BAD_REQUEST', 'target must be "all", "user" or "room"') };
  if (!('message' in b) || b.message === undefined || b.message === null) return { status: 400, body: problem('BAD_REQUEST', 'message is required') };
  if (target === 'user' && typeof b.userId !== 'string') return { status: 400, body: problem('BAD_REQUEST', 'userId (a string) is required for target "user"') };
  if (target === 'room' && typeof b.room !== 'string') return { status: 400, body: problem('BAD_REQUEST', 'room (a string) is required for target "room"') };
  try {
    // Under the HTTP server span when the SDK is loaded: bcast.broadcast is its child, one trace.
    return await inSpan('POST /broadcast', async (span) => {
      if (target === 'all') {
        const result = await broadcaster.toAll(b.message);
        dashboard.record(result, span);
        return { status: 200, body: { target, result } };
      }
      if (target === 'user') {
        const userId = /** @type {string} */ (b.userId);
        const result = await broadcaster.toUser(userId, b.message);
        dashboard.record(result, span);
        return { status: 200, body: { target, userId, result } };
      }
      const room = /** @type {string} */ (b.room);
      const result = await broadcaster.toRoom(room, b.message);
      dashboard.record(result, span);
      return { status: 200, body: { target, room, result } };
    });
  } catch (error) {
    if (isBcastError(error, ErrorCode.Shutdown)) return { status: 503, body: problem(error.code, error.message) };
    if (isBcastError(error) && callerErrors.classify(error) === 'caller') return { status: 400, body: problem(error.code, error.message) };
    throw error;
  }
}

const PAGE_HEADERS = {
  'cache-control': 'no-cache',
  'content-security-policy': "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
};

/**
 * @param {import('node:http').ServerResponse} res
 * @param {number} status
 * @param {string} type
 * @param {string | Buffer} body
 * @param {Record<string, string>} [headers]
 */
function send(res, status, type, body, headers = {}) {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'x-content-type-options': 'nosniff', ...headers });
  res.end(res.req?.method === 'HEAD' ? undefined : body);
}

/**
 * @param {import('node:http').ServerResponse} res
 * @param {number} status
 * @param {unknown} value
 * @param {Record<string, string>} [headers]
 */
function json(res, status, value, headers = {}) {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value), { 'cache-control': 'no-store', ...headers });
}

function problem(/** @type {string} */ code, /** @type {string} */ message) {
  return { error: { code, message } };
}

/** @param {import('node:http').IncomingMessage} req */
function readJson(req) {
  return new Promise((resolve, reject) => {
    /** @type {Buffer[]} */
    const chunks = [];
    let size = 0;
    const onData = (/** @type {Buffer} */ chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        // Stop reading; the 413 answer closes the connection (see broadcastRoute).
        req.off('data', onData);
        req.pause();
        reject(new Error('too large'));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.on('error', reject);
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (error) {
        reject(error);
      }
    });
  });
}

function escapeHtml(/** @type {string} */ s) {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// ---- process plumbing ---------------------------------------------------------------------------

/**
 * Listens and resolves with the base URL.
 * @param {import('node:http').Server} server
 * @param {number} port
 * @param {string} host
 */
export async function listen(server, port, host) {
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(undefined);
    });
  });
  const address = /** @type {import('node:net').AddressInfo} */ (server.address());
  const shown = host === '0.0.0.0' || host === '::' ? 'localhost' : address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${shown}:${address.port}`;
}

/**
 * Stops accepting, ends idle keep-alive connections, resolves when the server is closed. A request
 * still running after `graceMs` has its connection closed.
 * @param {import('node:http').Server} server
 * @param {{ graceMs?: number }} [options]
 */
export function closeServer(server, { graceMs = 250 } = {}) {
  return new Promise((resolve) => {
    if (!server.listening) return resolve(undefined);
    const timer = setTimeout(() => server.closeAllConnections(), graceMs);
    timer.unref();
    server.close(() => {
      clearTimeout(timer);
      resolve(undefined);
    });
    server.closeIdleConnections();
  });
}

/**
 * What an app's `start()` takes.
 * @typedef {object} StartOptions
 * @property {number} [port] 0 for any free port (default: the app's own, 3001 to 3003)
 * @property {string} [host] (default "127.0.0.1")
 * @property {Pick<Console, 'warn' | 'error'>} [logger] (default console)
 * @property {string} [redisUrl] a Redis backplane shared with other app processes (default: none, in memory)
 * @property {string} [redisChannel] its pub/sub channel (default "bcast")
 * @property {string} [traceUrl] link template of the dashboard's trace link, `{traceId}` replaced (default $BCAST_TRACE_URL)
 */
/** @typedef {{ url: string, broadcaster: Broadcaster, close: () => Promise<void> }} RunningApp */

/** Longest time an app process takes to stop on SIGINT / SIGTERM before it exits anyway (with 1). */
const STOP_BUDGET_MS = 1_700;

/**
 * When `moduleUrl` is the script node was started with: start the app on $PORT (or `defaultPort`)
 * and $HOST, print its URL (and tell a parent process over IPC), close cleanly on SIGINT / SIGTERM.
 * @param {string} moduleUrl
 * @param {(options: StartOptions) => Promise<RunningApp>} start
 * @param {{ name: string, defaultPort: number }} info
 */
export function runIfMain(moduleUrl, start, info) {
  const script = process.argv[1];
  if (!script || pathToFileURL(realpathSync(script)).href !== moduleUrl) return;
  const port = Number(process.env.PORT ?? info.defaultPort);
  const host = process.env.HOST ?? '127.0.0.1';
  const redisUrl = process.env.BCAST_REDIS_URL || undefined;
  const redisChannel = process.env.BCAST_REDIS_CHANNEL || undefined;
  start({ port, host, ...(redisUrl ? { redisUrl } : {}), ...(redisChannel ? { redisChannel } : {}) }).then(
    (app) => {
      console.log(`${info.name} listening on ${app.url}${redisUrl ? ` (Redis backplane ${redisUrl})` : ''}`);
      process.send?.({ type: 'listening', name: info.name, url: app.url });
      let stopping = false;
      // Ctrl-C: the sockets get 1001 and half a second to close, the HTTP server a quarter, the
      // SDK half a second to flush (it gives up quietly when no collector answers): about a second.
      const stop = () => {
        if (stopping) return;
        stopping = true;
        const timer = setTimeout(() => {
          console.error(`${info.name} did not stop within ${STOP_BUDGET_MS} ms; exiting`);
          process.exit(1);
        }, STOP_BUDGET_MS);
        timer.unref();
        app
          .close()
          .then(() => shutdownGlobalTelemetry())
          .then(
            () => process.exit(0),
            (error) => {
              console.error(`${info.name} did not stop cleanly:`, error instanceof Error ? error.message : error);
              process.exit(1);
            },
          );
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      process.on('disconnect', stop); // the demo launcher went away
    },
    (error) => {
      console.error(`${info.name} could not start:`, error instanceof Error ? error.message : error);
      process.exit(1);
    },
  );
}
