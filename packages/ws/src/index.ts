import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { BcastError, CloseCode, CloseReason, ErrorCode, newConnectionId, type AuthResult, type Broadcaster } from '@bcast/core';
import type { Connection, ConnectionHandle, Identity, OriginPolicy } from '@bcast/core';
import type { WebSocket, WebSocketServer } from 'ws';
import { WsConnection } from './frame.js';
import { anonymous, createVerifier, refuse } from './handshake.js';

export interface WsAdapterOptions {
  /**
   * Identity of an upgrade request, decided before the connection is accepted: a user id, an
   * identity object, or false to refuse (HTTP 401). A throw is a refusal (401); no answer within
   * `authTimeoutMs` is HTTP 503. Without it every connection is accepted, anonymous.
   */
  authenticate?: (request: IncomingMessage) => AuthResult | Promise<AuthResult>;
  /** Deadline of `authenticate`. @default 5_000 */
  authTimeoutMs?: number;
  /** Origins that may connect (checked before `authenticate`); a mismatch is HTTP 403. @default undefined (any) */
  allowedOrigins?: OriginPolicy;
  /** Refuse requests without an Origin header when `allowedOrigins` is a list. @default false */
  requireOrigin?: boolean;
  /** How long `dispose()` waits for clients to answer its 1001 close before terminating them. @default 1_000 */
  closeTimeoutMs?: number;
  /**
   * Coalesce bursts: a lone broadcast is written at once, and so is the first broadcast of every
   * tick; from the second broadcast of a tick on, writes are held and leave each socket in one
   * syscall at the end of the tick. Destroying a socket (`ws.terminate()`) in that tick first lets
   * out what it holds, and a socket holding 64 KiB goes out at once. `false`: one write per
   * message. @default true
   */
  coalesce?: boolean;
}

/** What an attach function returns. */
export interface WsAdapter {
  /** Closes this adapter's clients with 1001, removes its listeners; resolves when they are closed. */
  dispose(): Promise<void>;
}

export interface UpgradeHandler extends WsAdapter {
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

/** The core's Connection port over a ws WebSocket (a class: one small object, fast property access). */
export function wsConnection(ws: WebSocket, init: { id?: string; userId?: string | undefined; data?: unknown; coalesce?: boolean } = {}): Connection {
  return new WsConnection(ws, init.id ?? newConnectionId(), init.userId, init.data, init.coalesce !== false);
}

/**
 * Registers an already-upgraded, authenticated socket and wires its events (message, pong, close)
 * to the core. Throws BCAST_SHUTDOWN when the broadcaster is disposed (the socket is then closed).
 */
export function acceptWebSocket(broadcaster: Broadcaster, ws: WebSocket, identity: Identity = anonymous, options: Pick<WsAdapterOptions, 'coalesce'> = {}): ConnectionHandle {
  // ws emits 'error' for a bad inbound frame (1002, 1007, 1009...) and then 'close'; without a
  // listener the error would crash the process.
  ws.on('error', noop);
  const handle = broadcaster.register(wsConnection(ws, { userId: identity.userId, data: identity.data, coalesce: options.coalesce !== false }));
  accepted.add(ws);
  handles.set(ws, handle);
  // Shared listeners (ws calls them with `this` = the socket): no closures per connection.
  ws.on('message', onMessage);
  ws.on('pong', onPong);
  ws.on('close', onClose);
  if (ws.readyState === CLOSED) onClose.call(ws, CloseCode.GoingAway, Buffer.alloc(0));
  return handle;
}

const handles = new WeakMap<WebSocket, ConnectionHandle>();

function onMessage(this: WebSocket, data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): void {
  const bytes = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
  handles.get(this)?.message(bytes, isBinary).catch(noop);
}

function onPong(this: WebSocket): void {
  handles.get(this)?.pong();
}

function onClose(this: WebSocket, code: number, reason: Buffer): void {
  const handle = handles.get(this);
  handles.delete(this);
  handle?.closed(code, reason.toString());
}

/**
 * Attaches to your WebSocketServer (it is never created or closed here). Authentication must run
 * before a connection is accepted, and ws's only pre-accept hook on a server it listens for itself
 * is `verifyClient`: this installs one (async) for as long as the adapter lives. A server that
 * already has a `verifyClient` is refused when `authenticate` or an origin policy is given; use
 * {@link createUpgradeHandler} with `noServer: true` for full control of the upgrade.
 */
export function attachToServer(broadcaster: Broadcaster, wss: WebSocketServer, options: WsAdapterOptions = {}): WsAdapter {
  const verify = createVerifier(options);
  const tracker = createTracker(broadcaster, options.closeTimeoutMs ?? 1_000, options.coalesce !== false);
  const identities = new WeakMap<IncomingMessage, Identity>();
  const wssOptions = wss.options as { verifyClient?: unknown };
  const checks = options.authenticate !== undefined || options.allowedOrigins !== undefined || options.requireOrigin === true;
  let verifyClient: ((info: { req: IncomingMessage }, done: (ok: boolean, status?: number) => void) => void) | undefined;
  if (wssOptions.verifyClient == null) {
    verifyClient = (info, done) => {
      verify(info.req).then(
        (verdict) => {
          if (verdict.identity) identities.set(info.req, verdict.identity);
          done(verdict.identity !== undefined, verdict.status);
        },
        () => done(false, 500),
      );
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
      await tracker.closeAll();
    },
  };
}

/**
 * The per-connection entry for any HTTP `upgrade` listener (express, a custom router...): origin
 * check (403), then `authenticate` (401 / 503), then `wss.handleUpgrade` (use a `noServer: true`
 * server), registration, and `wss.emit('connection', ws, request)` for your own listeners.
 */
export function createUpgradeHandler(broadcaster: Broadcaster, options: WsAdapterOptions = {}): UpgradeHandler {
  const verify = createVerifier(options);
  const tracker = createTracker(broadcaster, options.closeTimeoutMs ?? 1_000, options.coalesce !== false);
  const pending = new Set<Duplex>();
  return {
    async handleUpgrade(request, socket, head, wss) {
      const onError = (): void => void socket.destroy();
      socket.on('error', onError);
      pending.add(socket);
      const verdict = await verify(request).catch(() => ({ identity: undefined, status: 500 }));
      pending.delete(socket);
      const identity = verdict.identity;
      if (identity === undefined) return refuse(socket, verdict.status);
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
      await tracker.closeAll();
    },
  };
}

// ---- internals ---------------------------------------------------------------------------

/** The sockets one adapter registered, so that dispose() closes exactly those. */
function createTracker(broadcaster: Broadcaster, closeTimeoutMs: number, coalesce: boolean) {
  const open = new Map<WebSocket, ConnectionHandle>();
  return {
    /** Registers and tracks; false when the broadcaster refused (it is disposed). */
    accept(ws: WebSocket, identity: Identity): boolean {
      let handle: ConnectionHandle;
      try {
        handle = acceptWebSocket(broadcaster, ws, identity, { coalesce });
      } catch {
        return false;
      }
      open.set(ws, handle);
      ws.once('close', () => open.delete(ws));
      return true;
    },
    async closeAll(): Promise<void> {
      const sockets = [...open];
      open.clear();
      for (const [ws, handle] of sockets) {
        ws.close(CloseCode.GoingAway, CloseReason.ServerShutdown);
        handle.closed(CloseCode.GoingAway, CloseReason.ServerShutdown);
      }
      const closing = sockets.map(([ws]) => ws).filter((ws) => ws.readyState !== CLOSED);
      if (closing.length === 0) return;
      await new Promise<void>((resolve) => {
        let left = closing.length;
        const timer = setTimeout(() => closing.forEach((ws) => ws.terminate()), closeTimeoutMs);
        for (const ws of closing) {
          ws.once('close', () => {
            if (--left > 0) return;
            clearTimeout(timer);
            resolve();
          });
        }
      });
    },
  };
}

function noop(): void {}
