import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { BcastError, CloseCode, CloseReason, ErrorCode, type Broadcaster } from '@bcast/core';
import { ConnectionCaps, ConnectionTracker, anonymous, coalescerFor, createVerifier, deliverInbound, newConnectionId, refuseUpgrade } from '@bcast/core/adapter';
import type { AdapterOptions, Attachment, Connection, ConnectionHandle, Identity } from '@bcast/core/adapter';
import type { WebSocket, WebSocketServer } from 'ws';
import { WsConnection } from './frame.js';

/** The options of every bcast adapter, `authenticate` reading the upgrade request. */
export type WsAdapterOptions = AdapterOptions<IncomingMessage>;

/** @deprecated the same as {@link Attachment}, the return type of every adapter. */
export type WsAdapter = Attachment;
export type { Attachment } from '@bcast/core/adapter';
/** HTTP server options against slowloris handshakes (10 s head timeout, checked every 2 s): `http.createServer(recommendedHttpServerOptions, handler)`. */
export { recommendedHttpServerOptions } from '@bcast/core/adapter';

export interface UpgradeHandler extends Attachment {
  /** Checks origin and credentials, then hands the request to `wss.handleUpgrade` and registers the socket. */
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer, wss: WebSocketServer): Promise<void>;
}

/**
 * Safe limits for inbound frames; spread them into your `new WebSocketServer({...})`: 64 KiB
 * messages (bigger ones close with 1009), no permessage-deflate (no compression bombs, and
 * broadcasts can use the pre-built frame), UTF-8 validation on, at most 1,024 fragments a message.
 */
export const recommendedServerOptions = Object.freeze({
  maxPayload: 65_536,
  perMessageDeflate: false,
  skipUTF8Validation: false,
  maxFragments: 1_024,
} as const);

const CLOSED = 3;
/** Sockets already registered by this package, so that a second listener never registers them again. */
const accepted = new WeakSet<WebSocket>();
const handles = new WeakMap<WebSocket, ConnectionHandle>();
/** The close code ws sent for a client's protocol error (its 'close' event reports the peer's code, 1006). */
const serverCodes = new WeakMap<WebSocket, number>();

/**
 * The core's Connection port over a ws WebSocket. `coalesceFor`: the broadcaster whose bursts of
 * broadcasts this connection coalesces (`acceptWebSocket` sets it unless `coalesce: false`).
 */
export function wsConnection(
  ws: WebSocket,
  init: { id?: string; userId?: string | undefined; data?: unknown; coalesceFor?: Broadcaster; /** @deprecated coalescing needs `coalesceFor` */ coalesce?: boolean } = {},
): Connection {
  return new WsConnection(ws, init.id ?? newConnectionId(), init.userId, init.data, init.coalesceFor && coalescerFor(init.coalesceFor));
}

/**
 * Registers an already-upgraded, authenticated socket and wires its events (message, pong, close)
 * to the core. Throws BCAST_SHUTDOWN when the broadcaster is disposed (the socket is then closed).
 */
export function acceptWebSocket(broadcaster: Broadcaster, ws: WebSocket, identity: Identity = anonymous, options: Pick<WsAdapterOptions, 'coalesce'> = {}): ConnectionHandle {
  // ws emits 'error' for a bad inbound frame (1002, 1007, 1009...) and then 'close'; without a
  // listener the error would crash the process. The code ws closed with is what the core hears.
  ws.on('error', onError);
  const coalesceFor = options.coalesce === false ? undefined : broadcaster;
  const connection = wsConnection(ws, { userId: identity.userId, data: identity.data, ...(coalesceFor ? { coalesceFor } : {}) });
  const handle = broadcaster.register(connection, { expiresAt: identity.expiresAt });
  accepted.add(ws);
  handles.set(ws, handle);
  // Shared listeners (ws calls them with `this` = the socket): no closures per connection.
  ws.on('message', onMessage);
  ws.on('pong', onPong);
  ws.on('close', onClose);
  if (ws.readyState === CLOSED) onClose.call(ws, CloseCode.GoingAway, Buffer.alloc(0));
  return handle;
}

function onMessage(this: WebSocket, data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): void {
  const handle = handles.get(this);
  if (handle) deliverInbound(handle, data, isBinary);
}

function onPong(this: WebSocket): void {
  handles.get(this)?.pong();
}

function onError(this: WebSocket, error: Error): void {
  const status = Object.getOwnPropertySymbols(error).find((key) => key.description === 'status-code');
  const code = status === undefined ? undefined : (error as unknown as Record<symbol, unknown>)[status];
  if (typeof code === 'number') serverCodes.set(this, code);
}

function onClose(this: WebSocket, code: number, reason: Buffer): void {
  const handle = handles.get(this);
  handles.delete(this);
  const serverCode = serverCodes.get(this);
  handle?.closed(serverCode ?? code, reason.toString(), serverCode !== undefined);
}

/**
 * Attaches to your WebSocketServer (it is never created or closed here). Authentication must run
 * before a connection is accepted, and ws's only pre-accept hook on a server it listens for itself
 * is `verifyClient`: this installs one (async) for as long as the adapter lives. A server that
 * already has a `verifyClient` is refused when `authenticate` or an origin policy is given; use
 * {@link createUpgradeHandler} with `noServer: true` for full control of the upgrade.
 */
export function attachToServer(broadcaster: Broadcaster, wss: WebSocketServer, options: WsAdapterOptions = {}): Attachment {
  const verify = createVerifier(options, () => broadcaster.isDisposed);
  const tracker = trackerFor(broadcaster, options);
  const identities = new WeakMap<IncomingMessage, Identity>();
  const wssOptions = wss.options as { verifyClient?: unknown };
  const checks = options.authenticate !== undefined || options.allowedOrigins !== undefined || options.requireOrigin === true;
  const caps = new ConnectionCaps(options);
  let verifyClient: ((info: { req: IncomingMessage }, done: (ok: boolean, status?: number, message?: string, headers?: object) => void) => void) | undefined;
  if (wssOptions.verifyClient == null) {
    let verifying = 0;
    verifyClient = (info, done) => {
      if (!caps.admitSocket(info.req.socket, tracker.size + verifying)) return done(false, 503, 'Service Unavailable', caps.headers);
      verifying += 1;
      verify(info.req, info.req.headers.origin)
        .then(
          (verdict) => {
            if (verdict.identity) identities.set(info.req, verdict.identity);
            done(verdict.identity !== undefined, verdict.refusal?.status);
          },
          () => done(false, 500),
        )
        .finally(() => (verifying -= 1));
    };
    wssOptions.verifyClient = verifyClient;
  } else if (checks) {
    throw new BcastError(
      ErrorCode.InvalidOption,
      'this WebSocketServer already has a verifyClient; move its checks into `authenticate`, or use createUpgradeHandler with `noServer: true`',
    );
  }
  const onConnection = (ws: WebSocket, request: IncomingMessage): void => {
    if (accepted.has(ws)) return;
    const identity = verifyClient ? identities.get(request) : anonymous;
    identities.delete(request);
    if (identity === undefined) ws.close(CloseCode.PolicyViolation, 'not authenticated');
    else tracker.accept(ws, identity);
  };
  wss.on('connection', onConnection);
  return {
    async dispose() {
      verify.dispose();
      wss.off('connection', onConnection);
      if (verifyClient && wssOptions.verifyClient === verifyClient) wssOptions.verifyClient = null;
      await tracker.drain();
    },
  };
}

/**
 * The per-connection entry for any HTTP `upgrade` listener (express, a custom router...): origin
 * check (403), then `authenticate` (401 / 503), then `wss.handleUpgrade` (use a `noServer: true`
 * server), registration, and `wss.emit('connection', ws, request)` for your own listeners.
 */
export function createUpgradeHandler(broadcaster: Broadcaster, options: WsAdapterOptions = {}): UpgradeHandler {
  const verify = createVerifier(options, () => broadcaster.isDisposed);
  const tracker = trackerFor(broadcaster, options);
  const caps = new ConnectionCaps(options);
  const pending = new Set<Duplex>();
  return {
    async handleUpgrade(request, socket, head, wss) {
      const onError = (): void => void socket.destroy();
      socket.on('error', onError);
      if (!caps.admitSocket(socket, tracker.size + pending.size)) return refuseUpgrade(socket, 503, caps.headers);
      pending.add(socket);
      const verdict = await verify(request, request.headers.origin).catch(() => undefined);
      pending.delete(socket);
      if (verdict?.identity === undefined) return refuseUpgrade(socket, verdict?.refusal.status ?? 500);
      const identity = verdict.identity;
      socket.off('error', onError);
      if (socket.destroyed) return;
      wss.handleUpgrade(request, socket, head, (ws) => {
        if (tracker.accept(ws, identity)) wss.emit('connection', ws, request);
      });
    },
    async dispose() {
      verify.dispose();
      for (const socket of pending) socket.destroy();
      pending.clear();
      await tracker.drain();
    },
  };
}

/** Registers and tracks this adapter's sockets, so that dispose() closes exactly those. */
function trackerFor(broadcaster: Broadcaster, options: WsAdapterOptions) {
  const tracker = new ConnectionTracker<WebSocket>({
    close: (ws) => ws.close(CloseCode.GoingAway, CloseReason.ServerShutdown),
    terminate: (ws) => ws.terminate(),
    isClosed: (ws) => ws.readyState === CLOSED,
    onceClosed: (ws, listener) => void ws.once('close', listener),
  });
  const closeTimeoutMs = options.closeTimeoutMs ?? 1_000;
  return {
    /** False when the broadcaster refused the socket (it is disposed, and has closed it). */
    accept(ws: WebSocket, identity: Identity): boolean {
      try {
        tracker.add(ws, acceptWebSocket(broadcaster, ws, identity, options));
        return true;
      } catch {
        return false;
      }
    },
    drain: () => tracker.drain(closeTimeoutMs),
    get size(): number {
      return tracker.size;
    },
  };
}

