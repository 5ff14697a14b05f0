import { once } from 'node:events';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo, Socket as NetSocket } from 'node:net';
import { Broadcaster, type BroadcasterOptions } from '@bcast/core';
import { Server, type ServerOptions } from 'socket.io';
import { io as connectClient, type ManagerOptions, type Socket as ClientSocket, type SocketOptions } from 'socket.io-client';
import { attachToServer, type SocketIoAdapterOptions, type SocketIoAttachment } from '../src/index.js';

export const quiet = { warn: () => {}, error: () => {} };

export interface Harness {
  readonly http: HttpServer;
  readonly io: Server;
  readonly broadcaster: Broadcaster;
  readonly adapter: SocketIoAttachment;
  readonly url: string;
  close(): Promise<void>;
}

const open: Harness[] = [];
const clients: ClientSocket[] = [];

export interface StartInit {
  broadcaster?: BroadcasterOptions;
  adapter?: SocketIoAdapterOptions;
  server?: Partial<ServerOptions>;
  /** Runs on the user's Server before the adapter is attached (middlewares of the app...). */
  before?: (io: Server) => void;
  /** Attach to this namespace instead of the Server. */
  namespace?: string;
}

/** The user's http + socket.io Server on 127.0.0.1:0, a Broadcaster, the adapter attached. */
export async function startIo(init: StartInit = {}): Promise<Harness> {
  const http = createServer();
  const io = new Server(http, init.server);
  init.before?.(io);
  const broadcaster = new Broadcaster({ logger: quiet, ...init.broadcaster });
  const adapter = attachToServer(broadcaster, init.namespace === undefined ? io : io.of(init.namespace), init.adapter);
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  const harness: Harness = {
    http,
    io,
    broadcaster,
    adapter,
    url: `http://127.0.0.1:${(http.address() as AddressInfo).port}`,
    async close() {
      await adapter.dispose();
      await broadcaster.dispose();
      await new Promise<void>((resolve) => {
        void io.close(() => resolve());
        http.closeAllConnections();
      });
    },
  };
  open.push(harness);
  return harness;
}

export interface TestClient {
  readonly socket: ClientSocket;
  /** Every value received on the event, in order. */
  readonly received: unknown[];
  waitFor(n: number, timeoutMs?: number): Promise<unknown[]>;
}

/** A socket.io-client on the websocket transport (unless told otherwise), without reconnection. */
export function client(url: string, options: Partial<ManagerOptions & SocketOptions> & { event?: string } = {}): TestClient {
  const { event = 'message', ...rest } = options;
  const socket = connectClient(url, { transports: ['websocket'], reconnection: false, forceNew: true, ...rest });
  clients.push(socket);
  const received: unknown[] = [];
  const waiters = new Set<() => void>();
  socket.on(event, (value: unknown) => {
    received.push(value);
    for (const wake of waiters) wake();
  });
  return {
    socket,
    received,
    waitFor: (n, timeoutMs = 10_000) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (received.length < n) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(received);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${n} messages (${received.length} received)`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
  };
}

/** Resolves on `connect`, rejects with the connect_error. */
export async function connected(c: TestClient): Promise<TestClient> {
  await new Promise<void>((resolve, reject) => {
    c.socket.once('connect', () => resolve());
    c.socket.once('connect_error', reject);
  });
  return c;
}

/** Resolves with the connect_error a refused client gets (rejects if it connects). */
export function refused(c: TestClient): Promise<Error & { description?: unknown }> {
  return new Promise((resolve, reject) => {
    c.socket.once('connect_error', resolve);
    c.socket.once('connect', () => reject(new Error('the connection was accepted')));
  });
}

/**
 * How a refused client saw it: the connect_error message and, when the transport failed under
 * socket.io (a handshake engine.io refused), the transport's own error ("Unexpected server
 * response: 400" from the `ws` client; engine.io answers 400 to every refused upgrade).
 */
export async function refusal(c: TestClient): Promise<{ message: string; cause?: string }> {
  const error = await refused(c);
  const cause = (error.description as { message?: unknown } | undefined)?.message;
  return typeof cause === 'string' ? { message: error.message, cause } : { message: error.message };
}

/** engine.io's connection_error events from now on (code 4 is FORBIDDEN: refused by allowRequest), with the reason given. */
export function engineErrors(io: Server): Array<{ code: number; reason: string }> {
  const errors: Array<{ code: number; reason: string }> = [];
  io.engine.on('connection_error', (e: { code: number; message: string; context?: { message?: string } }) => errors.push({ code: e.code, reason: e.context?.message ?? e.message }));
  return errors;
}

/** The TCP socket under a websocket-transport client. */
export function tcpOf(c: TestClient): NetSocket {
  const tcp = (c.socket.io as unknown as { engine: { transport: { ws?: { _socket?: NetSocket } } } }).engine.transport.ws?._socket;
  if (!tcp) throw new Error('not a ws transport');
  return tcp;
}

export async function closeAll(): Promise<void> {
  for (const socket of clients.splice(0)) socket.close();
  for (const harness of open.splice(0)) await harness.close();
}
