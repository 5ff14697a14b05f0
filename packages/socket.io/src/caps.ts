import { IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { refuseRequest, refuseUpgrade, type ConnectionCaps } from '@bcast/core/adapter';
import type { Server } from 'socket.io';

// The connection caps of a Server attachment, at the engine.io handshake (docs/decisions.md, 48).
type AnyServer = Server<any, any, any, any>;
type Engine = AnyServer['engine'];
type HandleRequest = (this: Engine, req: IncomingMessage, res: ServerResponse) => void;
type HandleUpgrade = (this: Engine, req: IncomingMessage, socket: Duplex, head: Buffer) => void;
type Bind = (this: AnyServer, engine: Engine) => AnyServer;
/** What is read of an engine.io session (engine.io's Socket): the first request of the session, and its close. */
interface Session {
  readonly request?: unknown;
  once(event: 'close', listener: () => void): unknown;
}

/** A request that opens a session (none of an existing one, `sid`), polling GET or direct WebSocket. */
function opensSession(req: IncomingMessage): boolean {
  try {
    return !new URL(req.url ?? '/', 'http://localhost').searchParams.get('sid');
  } catch {
    return false; // engine.io refuses what it cannot parse, before any session
  }
}

/**
 * Caps the engine.io sessions of a socket.io Server. engine.io's documented hooks cannot answer
 * 503 with `Retry-After` (`allowRequest` refusals are 403 on polling, 400 on an upgrade), so the
 * engine instance's own `handleRequest` and `handleUpgrade` (what the HTTP server's listeners
 * call) are wrapped, on this instance only: over a cap a new handshake is answered before engine.io
 * reads it, and a request of an existing session passes untouched. A session counts from its
 * handshake request until it closes: `open` is the engine's `clientsCount` plus the handshakes in
 * progress. A Server not attached yet (`new Server()`, then `io.attach()`) is capped once it
 * binds its engine. Returns the removal of every hook.
 */
export function capSessions(io: AnyServer, caps: ConnectionCaps): () => void {
  let active = true;
  /** Admitted handshakes that are not a session yet, with the address they count against. */
  const pending = new Map<IncomingMessage, string | undefined>();
  const removals: Array<() => void> = [];

  const settle = (req: IncomingMessage): void => {
    if (!pending.has(req)) return;
    caps.release(pending.get(req));
    pending.delete(req);
  };
  /** False when a cap refuses the request; an admitted handshake is pending until its session exists or its request ends. */
  const admit = (engine: Engine, req: IncomingMessage, ended: { once(event: 'close', listener: () => void): unknown }): boolean => {
    if (!active || !opensSession(req)) return true;
    const address = req.socket.remoteAddress;
    if (!caps.admit(address, engine.clientsCount + pending.size)) return false;
    pending.set(req, address);
    ended.once('close', () => settle(req));
    return true;
  };
  const onSession = (session: Session): void => {
    const req = session.request;
    if (!(req instanceof IncomingMessage)) return; // not engine.io's Node server (WebTransport, uWebSockets.js)
    let address: string | undefined;
    if (pending.has(req)) {
      address = pending.get(req);
      pending.delete(req);
    } else {
      // its request ended before the session existed, or it was in progress when the hooks were installed: it is counted all the same
      address = req.socket.remoteAddress;
      caps.hold(address);
    }
    session.once('close', () => caps.release(address));
  };

  const install = (engine: Engine): void => {
    const ownRequest = Object.hasOwn(engine, 'handleRequest');
    const ownUpgrade = Object.hasOwn(engine, 'handleUpgrade');
    const handleRequest = engine.handleRequest as HandleRequest;
    const handleUpgrade = engine.handleUpgrade as HandleUpgrade;
    const request: HandleRequest = function (req, res) {
      if (req instanceof IncomingMessage && !admit(engine, req, res)) return refuseRequest(res, 503, caps.headers);
      return handleRequest.call(this, req, res);
    };
    const upgrade: HandleUpgrade = function (req, socket, head) {
      if (req instanceof IncomingMessage && !admit(engine, req, socket)) return refuseUpgrade(socket, 503, caps.headers);
      return handleUpgrade.call(this, req, socket, head);
    };
    engine.handleRequest = request;
    engine.handleUpgrade = upgrade;
    engine.on('connection', onSession);
    removals.push(() => {
      engine.off('connection', onSession);
      // when someone wrapped ours meanwhile, ours stays in their chain, inactive
      if (engine.handleRequest === request) restore(engine, 'handleRequest', ownRequest, handleRequest);
      if (engine.handleUpgrade === upgrade) restore(engine, 'handleUpgrade', ownUpgrade, handleUpgrade);
    });
  };

  if ((io.engine as Engine | undefined) !== undefined) {
    install(io.engine);
  } else {
    const ownBind = Object.hasOwn(io, 'bind');
    const bind = io.bind as Bind;
    const deferred: Bind = function (engine) {
      const result = bind.call(this, engine);
      if (active && io.engine === engine) install(engine);
      return result;
    };
    io.bind = deferred;
    removals.push(() => {
      if (io.bind === deferred) restore(io, 'bind', ownBind, bind);
    });
  }

  return () => {
    active = false;
    for (const remove of removals.splice(0)) remove();
    pending.clear();
  };
}

function restore<T extends object>(target: T, key: keyof T & string, own: boolean, original: unknown): void {
  if (own) (target as Record<string, unknown>)[key] = original;
  else delete (target as Record<string, unknown>)[key];
}
