// The servers under test. Every variant gets the same node:http server (127.0.0.1, port 0) and the
// same client load; it only decides how a broadcast reaches the sockets.
//
// A variant is { name, label, transport, describe, bcast?, create(server, load?) } where create
// resolves to
//   { connections(): number, broadcast(message): void | Promise<unknown>, close(): Promise<void> }.
// create() throws `Unavailable` when a package it needs is missing or not built. A `bcast` variant
// imports the @bcast packages through `load(name, dir)`: this checkout's by default, or another
// checkout's dist (`distLoader`), which is what its `<name>@before` twin does (`resolveVariant`).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

export class Unavailable extends Error {}

const OPEN = 1;
/** Server options shared by every ws-based variant (what @bcast/ws recommends, minus fragments). */
const WS_OPTIONS = { perMessageDeflate: false, maxPayload: 65_536 };
/** socket.io on its websocket transport only, no compression, as the clients connect. */
const IO_OPTIONS = { transports: ['websocket'], serveClient: false, perMessageDeflate: false, httpCompression: false };

/**
 * Imports a built @bcast package: by name (bench's dependencies), else from packages/<dir>/dist
 * (for a package that is not yet a dependency of bench). Never imports TypeScript sources.
 * @param {string} name @param {string} dir
 */
export async function loadBcast(name, dir) {
  try {
    return await import(name);
  } catch (error) {
    if (error?.code !== 'ERR_MODULE_NOT_FOUND') throw error;
    const dist = new URL(`../../packages/${dir}/dist/index.js`, import.meta.url);
    if (existsSync(dist)) return import(pathToFileURL(dist.pathname).href);
    const source = new URL(`../../packages/${dir}/src/index.ts`, import.meta.url);
    throw new Unavailable(
      existsSync(source) ? `${name} is not built (run \`npx turbo run build\`)` : `${name} is not available (packages/${dir} does not exist yet)`,
    );
  }
}

/**
 * A loader for the built packages of another checkout: `<packagesDir>/<dir>/dist/index.js`. Each
 * package's own imports (`@bcast/core` from `@bcast/ws`) resolve through that checkout's
 * node_modules, so the core and the adapter always come from the same checkout.
 * @param {string} packagesDir
 */
export function distLoader(packagesDir) {
  return async (name, dir) => {
    const file = join(packagesDir, dir, 'dist', 'index.js');
    if (!existsSync(file)) throw new Unavailable(`${name} is not built in the baseline (no packages/${dir}/dist/index.js)`);
    return import(pathToFileURL(file).href);
  };
}

async function wsServer(server) {
  const { WebSocketServer } = await import('ws');
  return new WebSocketServer({ server, ...WS_OPTIONS });
}

async function ioServer(server) {
  const { Server } = await import('socket.io');
  return new Server(server, IO_OPTIONS);
}

function closeWss(wss) {
  for (const ws of wss.clients) ws.terminate();
  return new Promise((resolve) => wss.close(() => resolve()));
}

/** A BasicTracerProvider with a BatchSpanProcessor whose exporter drops every span. */
async function discardingTracerProvider() {
  const { BasicTracerProvider, BatchSpanProcessor } = await import('@opentelemetry/sdk-trace-base');
  let exported = 0;
  const exporter = {
    export(spans, done) {
      exported += spans.length;
      done({ code: 0 });
    },
    shutdown: () => Promise.resolve(),
    forceFlush: () => Promise.resolve(),
  };
  const provider = new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(exporter)] });
  return { provider, exported: () => exported };
}

async function bcastWs(server, load, broadcasterOptions = {}, adapterOptions = {}) {
  const [{ Broadcaster }, { attachToServer }] = await Promise.all([load('@bcast/core', 'core'), load('@bcast/ws', 'ws')]);
  const wss = await wsServer(server);
  const broadcaster = new Broadcaster(broadcasterOptions);
  const adapter = attachToServer(broadcaster, wss, adapterOptions);
  return {
    connections: () => broadcaster.connections.size,
    broadcast: (message) => broadcaster.toAll(message),
    async close() {
      await adapter.dispose();
      await broadcaster.dispose();
      await closeWss(wss);
    },
  };
}

/** @typedef {(name: string, dir: string) => Promise<any>} Loader */
/** @typedef {{name: string, label: string, transport: 'ws' | 'socketio', describe: string, bcast?: boolean, before?: boolean, create: (server: import('node:http').Server, load?: Loader) => Promise<any>}} Variant */
/** @type {Record<string, Variant>} */
export const VARIANTS = {
  'ws-naive': {
    name: 'ws-naive',
    label: 'raw ws, naive',
    transport: 'ws',
    describe: 'a legacy loop: `JSON.stringify(message)` and `ws.send(text)` for every open socket',
    async create(server) {
      const wss = await wsServer(server);
      return {
        connections: () => wss.clients.size,
        broadcast(message) {
          for (const ws of wss.clients) if (ws.readyState === OPEN) ws.send(JSON.stringify(message));
        },
        close: () => closeWss(wss),
      };
    },
  },
  'ws-once': {
    name: 'ws-once',
    label: 'raw ws, serialize once',
    transport: 'ws',
    describe: '`JSON.stringify` once per broadcast, then `ws.send(text)` for every open socket (ws frames it per socket)',
    async create(server) {
      const wss = await wsServer(server);
      return {
        connections: () => wss.clients.size,
        broadcast(message) {
          const text = JSON.stringify(message);
          for (const ws of wss.clients) if (ws.readyState === OPEN) ws.send(text);
        },
        close: () => closeWss(wss),
      };
    },
  },
  'ws-frame': {
    name: 'ws-frame',
    label: 'raw ws, frame once',
    transport: 'ws',
    describe:
      'serialize once, build the WebSocket frame once with `Sender.frame`, write the same Buffer to every socket (`ws._socket.write`), as engine.io does with `wsPreEncodedFrame` (ws#617): the one-write-per-message ceiling',
    async create(server) {
      const { Sender } = await import('ws');
      const wss = await wsServer(server);
      return {
        connections: () => wss.clients.size,
        broadcast(message) {
          const data = Buffer.from(JSON.stringify(message));
          const parts = Sender.frame(data, { fin: true, rsv1: false, opcode: 1, mask: false, readOnly: false });
          const frame = parts.length === 1 ? parts[0] : Buffer.concat(parts);
          for (const ws of wss.clients) if (ws.readyState === OPEN) ws._socket.write(frame);
        },
        close: () => closeWss(wss),
      };
    },
  },
  'socketio-emit': {
    name: 'socketio-emit',
    label: 'socket.io io.emit',
    transport: 'socketio',
    describe: '`io.emit("message", message)`: socket.io encodes the packet once and engine.io writes a pre-built frame per socket',
    async create(server) {
      const io = await ioServer(server);
      return {
        connections: () => io.of('/').sockets.size,
        broadcast(message) {
          io.emit('message', message);
        },
        close: () => new Promise((resolve) => io.close(() => resolve())),
      };
    },
  },
  'bcast-ws': {
    name: 'bcast-ws',
    label: '@bcast/ws',
    transport: 'ws',
    describe:
      '`broadcaster.toAll(message)` through `@bcast/ws` `attachToServer(broadcaster, wss)` with default options: the frame built once, the writes of one tick coalesced into one per socket (no SDK registered: OTel API no-op)',
    bcast: true,
    create: (server, load = loadBcast) => bcastWs(server, load),
  },
  'bcast-ws-nocoalesce': {
    name: 'bcast-ws-nocoalesce',
    label: '@bcast/ws, coalesce: false',
    transport: 'ws',
    describe: 'as bcast-ws, with `attachToServer(broadcaster, wss, { coalesce: false })`: one write per message, the path to compare with raw frame-once',
    bcast: true,
    create: (server, load = loadBcast) => bcastWs(server, load, {}, { coalesce: false }),
  },
  'bcast-socketio': {
    name: 'bcast-socketio',
    label: '@bcast/socket.io',
    transport: 'socketio',
    describe: '`broadcaster.toAll(message)` through `@bcast/socket.io` `attachToServer(broadcaster, io, { event: "message" })`',
    bcast: true,
    async create(server, load = loadBcast) {
      const [{ Broadcaster }, { attachToServer }] = await Promise.all([load('@bcast/core', 'core'), load('@bcast/socket.io', 'socket.io')]);
      const io = await ioServer(server);
      const broadcaster = new Broadcaster();
      const adapter = attachToServer(broadcaster, io, { event: 'message' });
      return {
        connections: () => broadcaster.connections.size,
        broadcast: (message) => broadcaster.toAll(message),
        async close() {
          await adapter.dispose();
          await broadcaster.dispose();
          await new Promise((resolve) => io.close(() => resolve()));
        },
      };
    },
  },
  'bcast-compat': {
    name: 'bcast-compat',
    label: '@bcast/compat on ws',
    transport: 'ws',
    describe: 'the legacy facade: `connections.connect(userId, ws)` on each raw ws connection, then `manager.broadcastToAll(message)`',
    bcast: true,
    async create(server, load = loadBcast) {
      const { BroadcastManager, ConnectionManager } = await load('@bcast/compat', 'compat');
      if (typeof BroadcastManager !== 'function' || typeof ConnectionManager !== 'function') {
        throw new Unavailable('@bcast/compat does not export BroadcastManager and ConnectionManager yet');
      }
      const wss = await wsServer(server);
      const connections = new ConnectionManager();
      const manager = new BroadcastManager(connections);
      let next = 0;
      wss.on('connection', (ws) => connections.connect(`user-${next++}`, ws));
      return {
        connections: () => manager.broadcaster?.connections.size ?? countConnections(connections),
        broadcast: (message) => manager.broadcastToAll(message),
        async close() {
          await manager.dispose?.();
          await closeWss(wss);
        },
      };
    },
  },
  'bcast-ws-otel': {
    name: 'bcast-ws-otel',
    label: '@bcast/ws + OTel SDK tracing',
    transport: 'ws',
    describe:
      'as bcast-ws, with `tracerProvider`: an OpenTelemetry SDK BasicTracerProvider (always-on sampling) and a BatchSpanProcessor whose exporter discards: one `bcast.broadcast` span per broadcast',
    bcast: true,
    async create(server, load = loadBcast) {
      const { provider, exported } = await discardingTracerProvider();
      const inner = await bcastWs(server, load, { tracerProvider: provider });
      return {
        ...inner,
        stats: () => ({ spansExported: exported() }),
        async close() {
          await inner.close();
          await provider.shutdown();
        },
      };
    },
  },
};

/** Live connections in a legacy ConnectionManager, whichever counter it offers. */
function countConnections(connections) {
  if (typeof connections.size === 'number') return connections.size;
  if (typeof connections.getConnectionCount === 'function') return connections.getConnectionCount();
  let n = 0;
  const active = connections.activeConnections;
  if (active instanceof Map) for (const list of active.values()) n += list.length ?? list.size ?? 0;
  return n;
}

export const DEFAULT_VARIANTS = Object.keys(VARIANTS);
/** Variants whose idle-connection memory the scale run measures ("raw ws" is ws-frame's plain WebSocketServer). */
export const SCALE_VARIANTS = ['ws-frame', 'bcast-ws', 'bcast-compat', 'socketio-emit', 'bcast-socketio'];

// ---- before/after -----------------------------------------------------------------------------

/** The suffix of a variant run on the baseline's packages (`--baseline <git-ref>`). */
export const BEFORE = '@before';
export const isBefore = (name) => name.endsWith(BEFORE);
/** `bcast-ws@before` -> `bcast-ws`; other names unchanged. */
export const baseName = (name) => (isBefore(name) ? name.slice(0, -BEFORE.length) : name);
export const beforeName = (name) => `${baseName(name)}${BEFORE}`;
/** Whether a variant runs on the @bcast packages, so that it has a `@before` twin. */
export const hasBefore = (name) => VARIANTS[baseName(name)]?.bcast === true;

/**
 * A variant by name: one of VARIANTS, or the `@before` twin of a @bcast one, which is the same
 * server code on the packages built in `baselineDir` (a checkout of the baseline commit). Without
 * a `baselineDir` the twin exists (for names and labels) but cannot be created.
 * @param {string} name @param {{baselineDir?: string}} [options]
 * @returns {Variant | undefined}
 */
export function resolveVariant(name, { baselineDir } = {}) {
  if (!isBefore(name)) return VARIANTS[name];
  const base = VARIANTS[baseName(name)];
  if (!base?.bcast) return undefined;
  return {
    ...base,
    name,
    label: `${base.label} (before)`,
    describe: `${base.describe}, on the packages of the baseline commit`,
    before: true,
    async create(server) {
      if (!baselineDir) throw new Unavailable(`${name} is not available: no baseline (run with --baseline <git-ref>)`);
      return base.create(server, distLoader(join(baselineDir, 'packages')));
    },
  };
}

/**
 * The variants of a before/after run: each @bcast variant followed by its `@before` twin, so that
 * the two run next to each other in every repetition. A list that names a twin already is taken as
 * it is.
 * @param {string[]} names
 */
export function withBefore(names) {
  if (names.some(isBefore)) return [...names];
  return names.flatMap((name) => (hasBefore(name) ? [name, beforeName(name)] : [name]));
}
