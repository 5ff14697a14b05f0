import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo, Socket as NetSocket } from 'node:net';
import { Broadcaster } from '@bcast/core';
import { attachToServer } from '@bcast/socket.io';
import { Server } from 'socket.io';
import { io as connectClient, type ManagerOptions, type Socket as ClientSocket, type SocketOptions } from 'socket.io-client';
import type { AdapterDriver, ConnectOptions, Refusal, ServerUnderTest, TestClient } from '../driver.js';

const quiet = { warn: () => {}, error: () => {} };

/** What the socket.io driver's start() returns: the suite's interface plus the user's Server. */
export interface SocketIoServerUnderTest extends ServerUnderTest {
  readonly io: Server;
  readonly url: string;
}

function clientOptions(options: ConnectOptions = {}): Partial<ManagerOptions & SocketOptions> {
  return {
    transports: ['websocket'],
    reconnection: false,
    forceNew: true,
    ...(options.token === undefined ? {} : { auth: { token: options.token } }),
    ...(options.origin === undefined ? {} : { extraHeaders: { origin: options.origin } }),
  };
}

/**
 * The TCP socket under a socket.io-client: Manager -> engine.io-client Socket -> WS transport ->
 * the `ws` WebSocket (Node build of engine.io-client) -> its net.Socket.
 */
export function tcpSocketOf(socket: ClientSocket): NetSocket | undefined {
  const transport = (socket.io as unknown as { engine?: { transport?: { ws?: { _socket?: NetSocket | null } } } }).engine?.transport;
  return transport?.ws?._socket ?? undefined;
}

/** socket.io has no close codes: 1001 for a server-side disconnect, 1000 for our own, 1006 otherwise. */
function closeCodeOf(reason: string): number {
  if (reason === 'io server disconnect') return 1001;
  return reason === 'io client disconnect' ? 1000 : 1006;
}

function wrap(socket: ClientSocket): TestClient {
  const messages: unknown[] = [];
  const waiters = new Set<() => void>();
  const wake = (): void => {
    for (const waiter of waiters) waiter();
  };
  const pending = new Map<string, (reply: unknown) => void>();
  let taken = 0;
  let requests = 0;
  let isClosed = false;
  socket.on('message', (message: unknown) => {
    // A reply to request() is handed to its caller, not counted among the messages.
    const requestId = (message as { requestId?: unknown } | null)?.requestId;
    const resolve = typeof requestId === 'string' ? pending.get(requestId) : undefined;
    if (resolve) {
      pending.delete(requestId as string);
      return resolve(message);
    }
    messages.push(message);
    wake();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    socket.once('disconnect', (reason) => {
      isClosed = true;
      resolve({ code: closeCodeOf(reason), reason });
      wake();
    });
  });
  /** Resolves when `ready()` returns a value; rejects on timeout or on close. */
  const until = <T>(ready: () => T | undefined, timeoutMs: number, what: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const check = (): void => {
        const value = ready();
        if (value !== undefined) finish(() => resolve(value));
        else if (isClosed) finish(() => reject(new Error(`connection closed while waiting for ${what} (${messages.length} received)`)));
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`timed out waiting for ${what} (${messages.length} received)`))), timeoutMs);
      const finish = (settle: () => void): void => {
        clearTimeout(timer);
        waiters.delete(check);
        settle();
      };
      waiters.add(check);
      check();
    });
  return {
    messages,
    closed,
    next: (timeoutMs = 10_000) => until(() => (taken < messages.length ? { value: messages[taken++] } : undefined), timeoutMs, 'the next message').then((m) => m.value),
    waitFor: (n, timeoutMs = 10_000) => until(() => (messages.length >= n ? messages : undefined), timeoutMs, `${n} messages`),
    request(message) {
      const requestId = typeof message.requestId === 'string' ? message.requestId : `req-${++requests}`;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(requestId);
          reject(new Error(`no reply to ${JSON.stringify(message)}`));
        }, 10_000);
        pending.set(requestId, (reply) => {
          clearTimeout(timer);
          resolve(reply);
        });
        socket.emit('message', { ...message, requestId });
      });
    },
    close: () => void socket.disconnect(),
    destroy: () => void tcpSocketOf(socket)?.destroy(),
    pauseReading() {
      const tcp = tcpSocketOf(socket);
      if (!tcp) throw new Error('socket.io-client is not connected over a ws WebSocket');
      tcp.pause();
    },
  };
}

export const socketIoDriver: AdapterDriver = {
  name: 'socket.io',

  async start(options) {
    const http = createServer();
    const io = new Server(http);
    const broadcaster = new Broadcaster({ logger: quiet, ...options.broadcaster });
    const listenerCounts = (): Record<string, number> => ({
      'http.upgrade': http.listenerCount('upgrade'),
      'http.request': http.listenerCount('request'),
      'engine.connection': io.engine.listenerCount('connection'),
      'engine.allowRequest': io.engine.opts.allowRequest === undefined ? 0 : 1,
      'nsp.connection': io.sockets.listenerCount('connection'),
      'nsp.middlewares': (io.sockets as unknown as { _fns: unknown[] })._fns.length,
    });
    const listenersBeforeAttach = listenerCounts();
    const { authenticate, allowedOrigins, authTimeoutMs } = options;
    const adapter = attachToServer(broadcaster, io, {
      ...(authenticate ? { authenticate: (handshake) => authenticate(typeof handshake.auth.token === 'string' ? handshake.auth.token : undefined) } : {}),
      ...(allowedOrigins === undefined ? {} : { allowedOrigins }),
      ...(authTimeoutMs === undefined ? {} : { authTimeoutMs }),
    });
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    const { port } = http.address() as AddressInfo;
    const server: SocketIoServerUnderTest = {
      broadcaster,
      io,
      url: `http://127.0.0.1:${port}`,
      listenersBeforeAttach,
      listenerCounts,
      dispose: () => adapter.dispose(),
      async close() {
        await adapter.dispose();
        await broadcaster.dispose();
        await new Promise<void>((resolve) => {
          void io.close(() => resolve());
          http.closeAllConnections();
        });
      },
    };
    return server;
  },

  async connect(server, options) {
    const socket = connectClient((server as SocketIoServerUnderTest).url, clientOptions(options));
    const client = wrap(socket);
    // The server registers the socket in the same tick as it writes the CONNECT packet, so once
    // `connect` fires here the connection is registered.
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('connect_error', (error) => reject(new Error(`connect_error: ${error.message}`)));
    });
    return client;
  },

  async connectRejected(server, options) {
    const { io, url } = server as SocketIoServerUnderTest;
    // engine.io refuses in allowRequest before any socket.io socket exists, and says why only on
    // the server (connection_error; code 4 is its FORBIDDEN): the client sees its transport fail.
    const engineRefusals: Array<{ code: number; reason: string }> = [];
    const onEngineError = (error: { code: number; message: string; context?: { message?: string } }): void =>
      void engineRefusals.push({ code: error.code, reason: error.context?.message ?? error.message });
    io.engine.on('connection_error', onEngineError);
    const socket = connectClient(url, clientOptions(options));
    try {
      const error = await new Promise<Error & { description?: unknown }>((resolve, reject) => {
        socket.once('connect_error', resolve);
        socket.once('connect', () => reject(new Error('the connection was accepted')));
      });
      // A middleware refusal carries its own message ("unauthorized"); a refused engine.io
      // handshake is the transport's error ("websocket error"), its description the `ws` client's
      // ("Unexpected server response: 400": engine.io answers 400 to every refused upgrade).
      const cause = (error.description as { message?: unknown } | undefined)?.message;
      const refusal: Refusal = {
        message: error.message,
        ...(typeof cause === 'string' ? { cause } : {}),
        ...(engineRefusals.length > 0 ? { engine: engineRefusals } : {}),
      };
      return refusal;
    } finally {
      io.engine.off('connection_error', onEngineError);
      socket.close();
    }
  },
};
