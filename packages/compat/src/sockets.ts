import { CloseCode, type Broadcaster } from '@bcast/core';
import { encodeMessage, newConnectionId, type Connection, type ConnectionHandle, type EncodedMessage } from '@bcast/core/adapter';
import { acceptSocket, closeCodeOf, socketIoConnection } from '@bcast/socket.io';
import { acceptWebSocket } from '@bcast/ws';
import type { SocketIoOptions } from './options.js';

// What legacy code hands to `connect(userId, socket)`, recognised by shape (the host libraries are
// never imported): a core Connection, a ws WebSocket, a socket.io Socket, or anything else with a
// ws-like `readyState` / `send(text)` / `close(code, reason)` (a mock in the app's own tests...).

type Fn = (...args: never[]) => unknown;
type Loose = Record<string, unknown> & { on?: Fn };

const OPEN = 1;
const isObject = (value: unknown): value is Loose => typeof value === 'object' && value !== null;
const has = (value: Loose, ...names: string[]): boolean => names.every((name) => typeof value[name] === 'function');

/** A shape check that a hostile getter cannot turn into a throw. */
const check = (fn: () => boolean): boolean => {
  try {
    return fn();
  } catch {
    return false;
  }
};

export function isCoreConnection(socket: unknown): socket is Connection {
  return check(() => isObject(socket) && typeof socket.id === 'string' && 'isOpen' in socket && 'bufferedBytes' in socket && has(socket, 'send'));
}

export function isWsSocket(socket: unknown): boolean {
  return check(() => isObject(socket) && typeof socket.readyState === 'number' && has(socket, 'send', 'ping', 'terminate', 'on', 'once'));
}

export function isSocketIoSocket(socket: unknown): boolean {
  return check(() => isObject(socket) && has(socket, 'emit', 'on', 'once') && isObject(socket.handshake) && isObject(socket.conn) && isObject(socket.nsp));
}

/** Registers whatever legacy code handed over, wiring its close so the registry is cleaned when the client leaves. */
export function registerSocket(broadcaster: Broadcaster, userId: string, socket: unknown, socketIo: Required<SocketIoOptions>): ConnectionHandle {
  if (isCoreConnection(socket)) return broadcaster.register(asUser(socket, userId));
  // ws and socket.io types are never imported here: the duck checks above stand in for them.
  if (isWsSocket(socket)) return acceptWebSocket(broadcaster, socket as never, { userId, data: undefined });
  if (isSocketIoSocket(socket)) {
    const init = { userId, event: socketIo.event, inboundEvent: socketIo.event };
    return socketIo.payload === 'value' ? acceptSocket(broadcaster, socket as never, init) : acceptJsonSocket(broadcaster, socket as Loose, init);
  }
  return acceptLegacySocket(broadcaster, socket, userId);
}

/**
 * A core Connection under the user id legacy code gave. Its `ping` is left out: nobody could report
 * the pong (the handle stays inside compat), so the heartbeat would terminate it.
 */
function asUser(connection: Connection, userId: string): Connection {
  if (connection.userId === userId && connection.ping === undefined) return connection;
  return {
    id: connection.id,
    userId,
    data: connection.data,
    get isOpen() {
      return connection.isOpen;
    },
    get bufferedBytes() {
      return connection.bufferedBytes;
    },
    send: (message) => connection.send(message),
    close: (code, reason) => connection.close(code, reason),
    terminate: connection.terminate === undefined ? undefined : () => connection.terminate?.(),
  };
}

const JSON_TEXT: object = { payload: 'json-text' };

/** socket.io with `payload: "json"`: objects are emitted as their JSON text, once per broadcast. */
function acceptJsonSocket(broadcaster: Broadcaster, socket: Loose, init: { userId: string; event: string }): ConnectionHandle {
  const inner = socketIoConnection(socket as never, init);
  const asText = (message: EncodedMessage): EncodedMessage =>
    message.binary || typeof message.value === 'string'
      ? message
      : message.prepare(JSON_TEXT, (m) => encodeMessage(m.text, { maxBytes: Number.POSITIVE_INFINITY }));
  const handle = broadcaster.register({
    id: inner.id,
    userId: init.userId,
    get isOpen() {
      return inner.isOpen;
    },
    get bufferedBytes() {
      return inner.bufferedBytes;
    },
    send: (message) => inner.send(asText(message)),
    close: (code, reason) => inner.close(code, reason),
    terminate: () => inner.terminate?.(),
  });
  const on = socket.on as (event: string, listener: (...args: unknown[]) => void) => void;
  const once = socket.once as typeof on;
  // As @bcast/socket.io's acceptSocket: client frames go to the core, and a close the core started
  // (found dead, slow consumer...) is reported by the core with its own code and reason.
  on.call(socket, init.event, (payload: unknown) => {
    if (Buffer.isBuffer(payload)) void handle.message(payload, true);
    else void handle.message(typeof payload === 'string' ? payload : (JSON.stringify(payload) ?? ''));
  });
  once.call(socket, 'disconnect', (reason: unknown) => {
    if (!handle.entry.isClosing) handle.closed(closeCodeOf(String(reason)), String(reason));
  });
  if (socket.connected !== true) handle.closed(CloseCode.GoingAway, 'transport close');
  return handle;
}

/**
 * Anything else, driven exactly as the legacy loop drove it: open while `readyState === 1`, sent
 * `send(text)`, closed with `close(code, reason)`. A socket that is not an object is registered
 * too (as not open) so that `connect` never throws; the first broadcast removes it.
 */
function acceptLegacySocket(broadcaster: Broadcaster, socket: unknown, userId: string): ConnectionHandle {
  const s = (isObject(socket) ? socket : {}) as Loose;
  const read = <T>(fn: () => T, fallback: T): T => {
    try {
      return fn();
    } catch {
      return fallback;
    }
  };
  const handle = broadcaster.register({
    id: newConnectionId(),
    userId,
    get isOpen() {
      return read(() => s.readyState === OPEN, false);
    },
    get bufferedBytes() {
      return read(() => (typeof s.bufferedAmount === 'number' && s.bufferedAmount > 0 ? s.bufferedAmount : 0), 0);
    },
    send: (message) => (s.send as (data: string | Buffer) => void).call(s, message.data),
    close: (code, reason) => {
      if (typeof s.close === 'function') (s.close as (code: number, reason: string) => void).call(s, code, reason);
    },
    terminate: typeof s.terminate === 'function' ? () => (s.terminate as () => void).call(s) : undefined,
  });
  const closed = (code: unknown, reason: unknown): void =>
    handle.closed(typeof code === 'number' ? code : CloseCode.GoingAway, reason === undefined ? '' : String(reason));
  try {
    if (typeof s.on === 'function') (s.on as (event: string, listener: (code: unknown, reason: unknown) => void) => void).call(s, 'close', closed);
    else if (typeof s.addEventListener === 'function') {
      (s.addEventListener as (event: string, listener: (event: { code?: unknown; reason?: unknown }) => void) => void).call(s, 'close', (event) =>
        closed(event?.code, event?.reason),
      );
    }
  } catch {
    // a socket that cannot be listened to is cleaned up by the first broadcast that finds it closed
  }
  return handle;
}
