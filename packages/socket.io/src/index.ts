import { CloseCode, CloseReason, isOriginAllowed, resolveIdentity, withDeadline } from '@bcast/core';
import type { AuthResult, Broadcaster, Connection, ConnectionHandle, Identity, OriginPolicy } from '@bcast/core';
import type { Namespace, Server, Socket } from 'socket.io';
import { SocketIoConnection, checkEvent, terminateConn, type EngineConn, type SocketIoConnectionInit } from './connection.js';

export type { SocketIoConnectionInit } from './connection.js';

// Any typed-events Server / Namespace / Socket is accepted.
type AnyServer = Server<any, any, any, any>;
type AnyNamespace = Namespace<any, any, any, any>;
type AnySocket = Socket<any, any, any, any>;

/** What socket.io gives a connection middleware: `auth`, `headers`, `query`, `address`... */
export type Handshake = AnySocket['handshake'];

export interface SocketIoAdapterOptions {
  /**
   * Identity from the handshake (read `handshake.auth`, never a message body). A falsy result or a
   * throw refuses the socket: the client gets `connect_error` "unauthorized" and nothing is registered.
   * @default every socket is accepted without a user id
   */
  authenticate?: (handshake: Handshake) => AuthResult | Promise<AuthResult>;
  /** `authenticate` must answer within this time, or the socket is refused. @default 5_000 */
  authTimeoutMs?: number;
  /** Origins that may connect (cross-site WebSocket hijacking guard); see attachToServer. @default undefined (any) */
  allowedOrigins?: OriginPolicy;
  /** Refuse handshakes without an Origin header when `allowedOrigins` is a list. @default false */
  requireOrigin?: boolean;
  /** Event name broadcasts and protocol replies are emitted on. @default "message" */
  event?: string;
  /** Event clients send join / leave / app messages on; false to not listen. @default "message" */
  inboundEvent?: string | false;
  /** How long dispose() lets disconnected transports flush before destroying them. @default 1_000 */
  closeTimeoutMs?: number;
}

export interface SocketIoAttachment {
  /** Disconnects this adapter's sockets (`disconnect(true)`), removes its middleware, hooks and listeners. */
  dispose(): Promise<void>;
}

type AllowRequest = NonNullable<AnyServer['engine']['opts']['allowRequest']>;

const ABNORMAL_CLOSURE = CloseCode.AbnormalClosure;
const GOING_AWAY_REASONS = new Set(['server namespace disconnect', 'server shutting down', 'forced server close', 'transport close']);

/**
 * socket.io has no close codes; the disconnect reason maps to a WebSocket-like one:
 * the client left (1000), the server or the peer went away (1001), anything abnormal (1006).
 */
export function closeCodeOf(reason: string): number {
  if (reason === 'client namespace disconnect') return CloseCode.Normal;
  return GOING_AWAY_REASONS.has(reason) ? CloseCode.GoingAway : ABNORMAL_CLOSURE; // ping timeout, transport error...
}

/**
 * A socket.io Socket as a core Connection. Broadcasts are written as one packet encoded once per
 * broadcast (`client.writeToEngine`), or with `socket.emit(event, value)` where that is unavailable.
 */
export function socketIoConnection(socket: AnySocket, init: SocketIoConnectionInit = {}): Connection {
  return new SocketIoConnection(socket, init);
}

/**
 * Registers a connected socket and wires its inbound event and its disconnect to the core: what
 * attachToServer does after the middleware, and what @bcast/compat does for sockets handed over.
 */
export function acceptSocket(broadcaster: Broadcaster, socket: AnySocket, init: SocketIoConnectionInit & { inboundEvent?: string | false } = {}): ConnectionHandle {
  const inboundEvent = init.inboundEvent === false ? false : checkEvent(init.inboundEvent ?? 'message', 'inboundEvent');
  const handle = broadcaster.register(socketIoConnection(socket, init));
  if (inboundEvent !== false) {
    socket.on(inboundEvent, (payload: unknown) => {
      if (Buffer.isBuffer(payload)) void handle.message(payload, true);
      else void handle.message(typeof payload === 'string' ? payload : (JSON.stringify(payload) ?? ''));
    });
  }
  // A close the core started (slow consumer, dispose...) was already unregistered with the core's
  // own code, so this is then a no-op.
  socket.once('disconnect', (reason: string) => handle.closed(closeCodeOf(reason), reason));
  if (!socket.connected) handle.closed(CloseCode.GoingAway, 'transport close');
  return handle;
}

function installOriginCheck(server: AnyServer, policy: OriginPolicy, requireOrigin: boolean): () => void {
  // allowRequest is read on every handshake (polling and websocket-only), so setting it after the
  // Server was built works; before io.attach() it goes into the options attach() will use.
  const opts = ((server.engine as AnyServer['engine'] | undefined)?.opts ?? server._opts) as { allowRequest?: AllowRequest | undefined };
  const previous = opts.allowRequest;
  let active = true;
  const allowRequest: AllowRequest = (req, fn) => {
    if (active && !isOriginAllowed(req.headers.origin, policy, requireOrigin)) return fn('origin not allowed', false);
    if (previous) return previous(req, fn);
    return fn(null, true);
  };
  opts.allowRequest = allowRequest;
  return () => {
    active = false; // when someone chained on top of us, we stay in their chain, inactive
    if (opts.allowRequest === allowRequest) opts.allowRequest = previous;
  };
}

/** Attaches a Broadcaster to the user's socket.io Server (its main namespace) or to one Namespace. */
export function attachToServer(broadcaster: Broadcaster, target: AnyServer | AnyNamespace, options: SocketIoAdapterOptions = {}): SocketIoAttachment {
  const event = checkEvent(options.event ?? 'message', 'event');
  const inboundEvent = options.inboundEvent === false ? false : checkEvent(options.inboundEvent ?? 'message', 'inboundEvent');
  const { authenticate, allowedOrigins, requireOrigin = false, authTimeoutMs = 5_000, closeTimeoutMs = 1_000 } = options;
  const isServer = typeof (target as AnyServer).of === 'function';
  const nsp = isServer ? (target as AnyServer).sockets : (target as AnyNamespace);
  const identities = new WeakMap<AnySocket, Identity>();
  const live = new Map<AnySocket, ConnectionHandle>();
  let disposed = false;

  const middleware = (socket: AnySocket, next: (err?: Error) => void): void => {
    if (disposed) return next();
    // Also checked here for Namespace attachments (allowRequest is per engine, not per namespace).
    if (!isOriginAllowed(socket.handshake.headers.origin, allowedOrigins, requireOrigin)) return next(new Error('origin not allowed'));
    withDeadline(() => (authenticate ? authenticate(socket.handshake) : {}), authTimeoutMs)
      .then(resolveIdentity)
      .then((identity) => {
        if (identity) identities.set(socket, identity);
        next(identity ? undefined : new Error('unauthorized'));
      })
      .catch(() => next(new Error('unauthorized')));
  };

  const onConnection = (socket: AnySocket): void => {
    const identity = identities.get(socket);
    if (!identity || disposed) return; // not through our middleware (e.g. a recovered session)
    try {
      live.set(socket, acceptSocket(broadcaster, socket, { ...identity, event, inboundEvent }));
      socket.once('disconnect', () => live.delete(socket));
    } catch {
      // a disposed broadcaster has already disconnected it
    }
  };

  nsp.use(middleware);
  nsp.on('connection', onConnection);
  const removeOriginCheck = isServer && allowedOrigins !== undefined ? installOriginCheck(target as AnyServer, allowedOrigins, requireOrigin) : undefined;

  return {
    async dispose() {
      if (disposed) return;
      disposed = true;
      nsp.off('connection', onConnection);
      const fns = (nsp as unknown as { _fns?: unknown[] })._fns;
      if (fns?.includes(middleware)) fns.splice(fns.indexOf(middleware), 1);
      removeOriginCheck?.();
      const open: EngineConn[] = [];
      for (const [socket, handle] of live) {
        handle.closed(CloseCode.GoingAway, CloseReason.ServerShutdown);
        socket.disconnect(true); // its disconnect listener removes it from `live`
        if (socket.conn.readyState !== 'closed') open.push(socket.conn as unknown as EngineConn);
      }
      const allClosed = Promise.all(open.map((c) => new Promise<void>((resolve) => c.once('close', resolve))));
      const within = (ms: number): Promise<unknown> => {
        let timer: NodeJS.Timeout | undefined;
        return Promise.race([allClosed, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]).finally(() => clearTimeout(timer));
      };
      await within(closeTimeoutMs); // a transport with unsent packets closes once they are written...
      for (const c of open) if (c.readyState !== 'closed') terminateConn(c); // ...or is destroyed
      await within(closeTimeoutMs);
    },
  };
}
