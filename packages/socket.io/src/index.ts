import { CloseCode, type Broadcaster } from '@bcast/core';
import { ConnectionCaps, ConnectionTracker, coalescerFor, createVerifier, deliverInbound, isOriginAllowed } from '@bcast/core/adapter';
import type { AdapterOptions, Attachment, Connection, ConnectionHandle, Identity, OriginPolicy } from '@bcast/core/adapter';
import type { Namespace, Server, Socket } from 'socket.io';
import { capSessions } from './caps.js';
import { SocketIoConnection, checkEvent, terminateConn, type EngineConn, type SocketIoConnectionInit } from './connection.js';

export type { SocketIoConnectionInit } from './connection.js';
export type { Attachment } from '@bcast/core/adapter';
/** HTTP server options against slowloris handshakes (10 s head timeout, checked every 2 s): `http.createServer(recommendedHttpServerOptions)`. */
export { recommendedHttpServerOptions } from '@bcast/core/adapter';

// Any typed-events Server / Namespace / Socket is accepted.
type AnyServer = Server<any, any, any, any>;
type AnyNamespace = Namespace<any, any, any, any>;
type AnySocket = Socket<any, any, any, any>;

/** What socket.io gives a connection middleware: `auth`, `headers`, `query`, `address`... */
export type Handshake = AnySocket['handshake'];

/**
 * The options of every bcast adapter, `authenticate` reading the handshake (`handshake.auth`,
 * never a message body); a refusal reaches the client as `connect_error` "unauthorized" (or
 * "origin not allowed" when attached to a Namespace; a Server's engine refuses a foreign origin
 * before socket.io, and the client sees a transport error). Plus the socket.io events used.
 */
export interface SocketIoAdapterOptions extends AdapterOptions<Handshake> {
  /** Event name broadcasts and protocol replies are emitted on. @default "message" */
  event?: string;
  /** Event clients send join / leave / app messages on; false to not listen. @default "message" */
  inboundEvent?: string | false;
}

/** @deprecated the same as {@link Attachment}, the return type of every adapter. */
export type SocketIoAttachment = Attachment;

type AllowRequest = NonNullable<AnyServer['engine']['opts']['allowRequest']>;

/** What a refused client reads in `connect_error`. */
const refusalMessages = { origin: 'origin not allowed', unauthorized: 'unauthorized', timeout: 'unauthorized', closing: 'server shutting down' } as const;

const GOING_AWAY_REASONS = new Set(['server namespace disconnect', 'server shutting down', 'forced server close', 'transport close']);

/**
 * socket.io has no close codes; the disconnect reason maps to a WebSocket-like one:
 * the client left (1000), the server or the peer went away (1001), anything abnormal (1006).
 */
export function closeCodeOf(reason: string): number {
  if (reason === 'client namespace disconnect') return CloseCode.Normal;
  return GOING_AWAY_REASONS.has(reason) ? CloseCode.GoingAway : CloseCode.AbnormalClosure; // ping timeout, transport error...
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
export function acceptSocket(
  broadcaster: Broadcaster,
  socket: AnySocket,
  init: SocketIoConnectionInit & { inboundEvent?: string | false; coalesce?: boolean; expiresAt?: number | undefined } = {},
): ConnectionHandle {
  const inboundEvent = init.inboundEvent === false ? false : checkEvent(init.inboundEvent ?? 'message', 'inboundEvent');
  const coalescer = init.coalesce === false ? undefined : coalescerFor(broadcaster);
  const handle = broadcaster.register(socketIoConnection(socket, { ...init, coalescer }), { expiresAt: init.expiresAt });
  if (inboundEvent !== false) socket.on(inboundEvent, (payload: unknown) => deliverInbound(handle, payload));
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
export function attachToServer(broadcaster: Broadcaster, target: AnyServer | AnyNamespace, options: SocketIoAdapterOptions = {}): Attachment {
  const event = checkEvent(options.event ?? 'message', 'event');
  const inboundEvent = options.inboundEvent === false ? false : checkEvent(options.inboundEvent ?? 'message', 'inboundEvent');
  const isServer = typeof (target as AnyServer).of === 'function';
  const nsp = isServer ? (target as AnyServer).sockets : (target as AnyNamespace);
  const verify = createVerifier(options, () => broadcaster.isDisposed);
  const identities = new WeakMap<AnySocket, Identity>();
  const tracker = new ConnectionTracker<AnySocket>({
    close: (socket) => socket.disconnect(true),
    terminate: (socket) => terminateConn(socket.conn as unknown as EngineConn),
    isClosed: (socket) => socket.conn.readyState === 'closed',
    onceClosed: (socket, listener) => void socket.conn.once('close', listener),
  });
  const caps = new ConnectionCaps(options);
  let disposed = false;
  let verifying = 0;

  const middleware = (socket: AnySocket, next: (err?: Error) => void): void => {
    if (disposed) return next();
    // The origin is also checked here for Namespace attachments (allowRequest is per engine, not per namespace).
    const refuse = (message: string, data?: object): void => {
      next(data === undefined ? new Error(message) : Object.assign(new Error(message), { data }));
      // The client got its connect_error; a transport with no other namespace is closed, not left
      // open until socket.io's connectTimeout (45 s).
      setImmediate(() => {
        if ((socket.client as unknown as { sockets?: Map<unknown, unknown> }).sockets?.size !== 0) return;
        const conn = socket.conn as unknown as EngineConn;
        conn.close();
        setTimeout(() => terminateConn(conn), options.closeTimeoutMs ?? 1_000).unref(); // a peer that never answers the close frame
      });
    };
    // On a Namespace the caps count its sockets here: an engine.io handshake does not say which
    // namespaces it is for, so the engine's sessions are capped only by a Server attachment.
    const address = isServer ? undefined : socket.handshake.address;
    if (!isServer && !caps.admit(address, tracker.size + verifying)) return refuse('too many connections', { retryAfterS: caps.retryAfterS });
    verifying += 1;
    verify(socket.handshake, socket.handshake.headers.origin)
      .then(
        (verdict) => {
          if (!verdict.identity) return refuse(refusalMessages[verdict.refusal.reason]);
          identities.set(socket, verdict.identity);
          next();
        },
        () => refuse('unauthorized'),
      )
      .finally(() => {
        verifying -= 1;
        if (!isServer) caps.release(address); // a registered socket is counted again below, until it disconnects
      });
  };

  const onConnection = (socket: AnySocket): void => {
    const identity = identities.get(socket);
    if (!identity || disposed) return; // not through our middleware (e.g. a recovered session)
    try {
      tracker.add(socket, acceptSocket(broadcaster, socket, { ...identity, event, inboundEvent, ...(options.coalesce === false ? { coalesce: false } : {}) }));
    } catch {
      return; // a disposed broadcaster has already disconnected it
    }
    if (isServer || !socket.connected) return;
    const address = socket.handshake.address;
    caps.hold(address);
    socket.once('disconnect', () => caps.release(address));
  };

  nsp.use(middleware);
  nsp.on('connection', onConnection);
  const removeOriginCheck = isServer && options.allowedOrigins !== undefined ? installOriginCheck(target as AnyServer, options.allowedOrigins, options.requireOrigin ?? false) : undefined;
  const removeCaps = isServer ? capSessions(target as AnyServer, caps) : undefined;

  return {
    async dispose() {
      if (disposed) return;
      disposed = true;
      verify.dispose();
      nsp.off('connection', onConnection);
      const fns = (nsp as unknown as { _fns?: unknown[] })._fns;
      if (fns?.includes(middleware)) fns.splice(fns.indexOf(middleware), 1);
      removeOriginCheck?.();
      removeCaps?.();
      await tracker.drain(options.closeTimeoutMs ?? 1_000);
    },
  };
}

