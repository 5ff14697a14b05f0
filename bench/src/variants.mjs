// The servers under test. Every variant gets the same node:http server (127.0.0.1, port 0) and the
// same client load; it only decides how a broadcast reaches the sockets.
//
// A variant is { name, label, transport, describe, create(server) } where create resolves to
//   { connections(): number, broadcast(message): void | Promise<unknown>, close(): Promise<void> }.
// create() throws `Unavailable` when a package it needs is missing or not built.
import { existsSync } from 'node:fs';
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
 */
async function loadBcast(name, dir) {
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

async function bcastWs(server, broadcasterOptions = {}, adapterOptions = {}) {
  const [{ Broadcaster }, { attachToServer }] = await Promise.all([loadBcast('@bcast/core', 'core'), loadBcast('@bcast/ws', 'ws')]);
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

/** @type {Record<string, {name: string, label: string, transport: 'ws' | 'socketio', describe: string, create: (server: import('node:http').Server) => Promise<any>}>} */
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
    create: (server) => bcastWs(server),
  },
  'bcast-ws-nocoalesce': {
    name: 'bcast-ws-nocoalesce',
    label: '@bcast/ws, coalesce: false',
    transport: 'ws',
    describe: 'as bcast-ws, with `attachToServer(broadcaster, wss, { coalesce: false })`: one write per message, the path to compare with raw frame-once',
    create: (server) => bcastWs(server, {}, { coalesce: false }),
  },
  'bcast-socketio': {
    name: 'bcast-socketio',
    label: '@bcast/socket.io',
    transport: 'socketio',
    describe: '`broadcaster.toAll(message)` through `@bcast/socket.io` `attachToServer(broadcaster, io, { event: "message" })`',
    async create(server) {
      const [{ Broadcaster }, { attachToServer }] = await Promise.all([loadBcast('@bcast/core', 'core'), loadBcast('@bcast/socket.io', 'socket.io')]);
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
    async create(server) {
      const { BroadcastManager, ConnectionManager } = await loadBcast('@bcast/compat', 'compat');
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
    async create(server) {
      const { provider, exported } = await discardingTracerProvider();
      const inner = await bcastWs(server, { tracerProvider: provider });
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
