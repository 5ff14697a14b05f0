// What the three sample chat apps share: the chat's rules (identity, joins, chat messages,
// presence), the HTTP routes (page, POST /broadcast, /health, /stats, /metrics) and the process
// plumbing (listen, close, run as a script). Each app only wires its transport adapter.
import { readFileSync, realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { ErrorClassifier, ErrorCode, isBcastError } from '@bcast/core';
import { shutdownGlobalTelemetry } from './metrics.mjs';

/** Tells a caller's bad input (400) from a server fault (500). */
const callerErrors = new ErrorClassifier();

export { appMetrics } from './metrics.mjs';

/** @typedef {import('@bcast/core').Broadcaster} Broadcaster */
/** @typedef {import('@bcast/core').ConnectionEntry} ConnectionEntry */
/**
 * The legacy facade's surface the apps use (docs/legacy-api.md).
 * @typedef {object} Manager
 * @property {(message: unknown) => Promise<object>} broadcastToAll
 * @property {(userId: string, message: unknown) => Promise<boolean>} broadcastToUser
 * @property {(room: string, message: unknown) => Promise<object>} broadcastToRoom
 * @property {() => object} getStats
 * @property {() => { status: string }} getHealthStatus
 */

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
const MAX_LISTED_USERS = 100;

/**
 * Broadcaster options of the chat, and `use(manager, broadcaster)` to call once both exist:
 * - any valid room may be joined by an identified user (the core validates the room id);
 * - `{ type: "chat", to: "room" | "all" | "user", room?, userId?, text }` from a client is sent
 *   with the compat BroadcastManager, stamped with the sender's identity (never the body's);
 * - every connect / disconnect sends `{ type: "presence", users }` to the clients of this process.
 * @param {{ logger?: Pick<Console, 'warn' | 'error'> }} [options]
 */
export function chatHooks(options = {}) {
  const logger = options.logger ?? console;
  /** @type {Manager | undefined} */
  let manager;
  /** @type {Broadcaster | undefined} */
  let broadcaster;
  let presenceQueued = false;

  const presence = () => {
    // Several connects in one tick make one presence broadcast.
    if (presenceQueued || !manager || !broadcaster) return;
    presenceQueued = true;
    queueMicrotask(() => {
      presenceQueued = false;
      if (!manager || !broadcaster || broadcaster.isDisposed) return;
      const users = new Set();
      for (const entry of broadcaster.connections.entries()) {
        if (entry.userId !== undefined && !entry.isClosing) users.add(entry.userId);
        if (users.size >= MAX_LISTED_USERS) break;
      }
      // Who is connected to this node; with a backplane every node tells its own clients.
      broadcaster.toAll({ type: 'presence', users: [...users].sort() }, { localOnly: true }).catch((error) => logger.warn('[chat] presence broadcast failed:', error));
    });
  };

  /** A direct answer to one connection (not a broadcast). */
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
    if (!manager || !broadcaster) return;
    const m = /** @type {Record<string, unknown>} */ (typeof message === 'object' && message !== null ? message : {});
    if (m.type !== 'chat') return reply(entry, { type: 'notice', level: 'error', text: 'unknown message type' });
    const text = typeof m.text === 'string' ? m.text.trim() : '';
    if (text.length === 0 || text.length > MAX_TEXT) return reply(entry, { type: 'notice', level: 'error', text: `text must have 1 to ${MAX_TEXT} characters` });
    const from = entry.userId ?? 'anonymous';
    const at = new Date().toISOString();
    if (m.to === 'all') {
      await manager.broadcastToAll({ type: 'chat', from, to: 'all', text, at });
    } else if (m.to === 'room') {
      const room = typeof m.room === 'string' ? m.room : '';
      if (!broadcaster.rooms.roomsOf(entry.id).has(room)) return reply(entry, { type: 'notice', level: 'error', text: `join ${JSON.stringify(room)} before sending to it` });
      await manager.broadcastToRoom(room, { type: 'chat', from, to: 'room', room, text, at });
    } else if (m.to === 'user') {
      const userId = typeof m.userId === 'string' ? m.userId : '';
      const dm = { type: 'chat', from, to: 'user', userId, text, at };
      const delivered = userId.length > 0 && (await manager.broadcastToUser(userId, dm));
      // With a backplane the user may be connected to another process: `false` only speaks for this one.
      if (!delivered && broadcaster.backplane.isLocal) return reply(entry, { type: 'notice', level: 'error', text: `${JSON.stringify(userId)} is not connected` });
      if (userId !== from) reply(entry, dm); // the sender's copy
    } else {
      reply(entry, { type: 'notice', level: 'error', text: 'to must be "room", "all" or "user"' });
    }
  };

  return {
    /** Spread into `new Broadcaster({...})`. */
    options: {
      /** @param {ConnectionEntry} entry */
      authorizeJoin: (entry) => entry.userId !== undefined,
      onMessage,
      onConnect: presence,
      onDisconnect: presence,
    },
    /**
     * @param {Manager} m
     * @param {Broadcaster} b
     */
    use(m, b) {
      manager = m;
      broadcaster = b;
    },
  };
}

// ---- several processes ----------------------------------------------------------------------------

/**
 * A Redis backplane when `redisUrl` is set (BCAST_REDIS_URL for the apps), so that a broadcast
 * reaches the clients of every app process, whatever its adapter. None: in memory, one process.
 * @param {{ redisUrl?: string | undefined, redisChannel?: string | undefined, logger: Pick<Console, 'warn' | 'error'> }} options
 * @returns {Promise<{ backplane?: import('@bcast/core').Backplane }>} spread into the Broadcaster's options
 */
export async function backplaneOptions({ redisUrl, redisChannel, logger }) {
  if (!redisUrl) return {};
  const { createRedisBackplane } = await import('@bcast/redis');
  return { backplane: createRedisBackplane({ url: redisUrl, logger, ...(redisChannel ? { channel: redisChannel } : {}) }) };
}

// ---- HTTP ---------------------------------------------------------------------------------------

const PUBLIC = new URL('../public/', import.meta.url);
const read = (/** @type {string} */ name) => readFileSync(new URL(name, PUBLIC));
const ASSETS = {
  '/app.js': { type: 'text/javascript; charset=utf-8', body: read('app.js') },
  '/style.css': { type: 'text/css; charset=utf-8', body: read('style.css') },
};
const PAGE = read('index.html').toString('utf8');
const MAX_BODY_BYTES = 65_536;
const TARGETS = new Set(['all', 'user', 'room']);

/**
 * One request handler for the page, POST /broadcast, GET /health, GET /stats and GET /metrics.
 * Unknown paths go to `next` when given (express), else 404.
 * @param {{ title: string, transport: 'ws' | 'socket.io', wsPath?: string, manager: Manager, broadcaster: Broadcaster, metrics: import('./metrics.mjs').AppMetrics }} app
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
    if (get && path in ASSETS) {
      const asset = ASSETS[/** @type {keyof typeof ASSETS} */ (path)];
      return send(res, 200, asset.type, asset.body, { 'cache-control': 'no-cache' });
    }
    if (get && path === '/health') {
      const health = app.manager.getHealthStatus();
      return json(res, health.status === 'unhealthy' ? 503 : 200, health);
    }
    if (get && path === '/stats') return json(res, 200, app.manager.getStats());
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
 * POST /broadcast `{ target: "all" | "user" | "room", userId?, room?, message }` through the
 * compat BroadcastManager; answers `{ target, result }` with the manager's result (a
 * BroadcastResult, or a boolean for `user`), or 400 with `{ error: { code, message } }`.
 * @param {{ manager: Manager, broadcaster: Broadcaster }} app
 * @param {import('node:http').IncomingMessage & { body?: unknown }} req
 * @returns {Promise<{ status: number, body: unknown, headers?: Record<string, string> }>}
 */
async function broadcastRoute({ manager, broadcaster }, req) {
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
  try {
    if (target === 'all') return { status: 200, body: { target, result: await manager.broadcastToAll(b.message) } };
    if (target === 'user') {
      if (typeof b.userId !== 'string') return { status: 400, body: problem('BAD_REQUEST', 'userId (a string) is required for target "user"') };
      return { status: 200, body: { target, userId: b.userId, result: await manager.broadcastToUser(b.userId, b.message) } };
    }
    if (typeof b.room !== 'string') return { status: 400, body: problem('BAD_REQUEST', 'room (a string) is required for target "room"') };
    return { status: 200, body: { target, room: b.room, result: await manager.broadcastToRoom(b.room, b.message) } };
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

/** Stops accepting, ends idle keep-alive connections, resolves when the server is closed. */
export function closeServer(/** @type {import('node:http').Server} */ server) {
  return new Promise((resolve) => {
    if (!server.listening) return resolve(undefined);
    server.close(() => resolve(undefined));
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
 */
/** @typedef {{ url: string, broadcaster: Broadcaster, manager: Manager, close: () => Promise<void> }} RunningApp */

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
      const stop = () => {
        if (stopping) return;
        stopping = true;
        const timer = setTimeout(() => process.exit(1), 5_000);
        timer.unref();
        app
          .close()
          .then(() => shutdownGlobalTelemetry())
          .finally(() => process.exit(0));
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
