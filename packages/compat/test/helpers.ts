import { once } from 'node:events';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server as IoServer, type Socket as IoSocket } from 'socket.io';
import { io as ioClient, type Socket as IoClientSocket } from 'socket.io-client';
import { WebSocket, WebSocketServer } from 'ws';

export type TransportName = 'ws' | 'socket.io';

/** A logger that records instead of printing. */
export function recordingLogger(): { warn: (...a: unknown[]) => void; error: (...a: unknown[]) => void; lines: string[] } {
  const lines: string[] = [];
  const push = (...a: unknown[]): void => void lines.push(a.map(String).join(' '));
  return { lines, warn: push, error: push };
}

/**
 * A legacy app's server: a plain `ws` WebSocketServer or socket.io Server on 127.0.0.1:0 whose
 * connection handler hands each raw socket to the app (`onSocket(userId, socket)`), exactly where
 * legacy code called `connections.connect(userId, socket)`. Clients say who they are in the URL
 * (ws) or in `auth` (socket.io): `user` and a `tag` naming that one connection in the test.
 */
export interface AppServer {
  readonly transport: TransportName;
  readonly url: string;
  readonly http: HttpServer;
  /** The server-side raw socket of each client, by tag. */
  readonly sockets: Map<string, any>;
  close(): Promise<void>;
}

/** `prepare` runs on the WebSocketServer / socket.io Server before the app's connection listener is added. */
export async function startServer(
  transport: TransportName,
  onSocket: (userId: string, socket: any) => void,
  prepare?: (server: WebSocketServer | IoServer) => void,
): Promise<AppServer> {
  const http = createServer();
  const sockets = new Map<string, any>();
  let closeTransport: () => Promise<void>;
  if (transport === 'ws') {
    const wss = new WebSocketServer({ server: http });
    prepare?.(wss);
    wss.on('connection', (ws, request) => {
      const params = new URL(request.url ?? '/', 'http://localhost').searchParams;
      sockets.set(params.get('tag') ?? '', ws);
      onSocket(params.get('user') ?? '', ws);
    });
    closeTransport = async () => {
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    };
  } else {
    const io = new IoServer(http);
    prepare?.(io);
    io.on('connection', (socket: IoSocket) => {
      const auth = socket.handshake.auth as { user?: string; tag?: string };
      sockets.set(auth.tag ?? '', socket);
      onSocket(auth.user ?? '', socket);
    });
    closeTransport = async () => {
      io.disconnectSockets(true);
      await new Promise<void>((resolve) => void io.close(() => resolve()));
    };
  }
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  const { port } = http.address() as AddressInfo;
  return {
    transport,
    url: `${transport === 'ws' ? 'ws' : 'http'}://127.0.0.1:${port}`,
    http,
    sockets,
    async close() {
      await closeTransport();
      http.closeAllConnections();
      if (http.listening) await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}

export interface Closed {
  readonly code: number;
  readonly reason: string;
}

/** A real client: ws, or socket.io-client on the websocket transport (no reconnection). */
export interface TestClient {
  readonly tag: string;
  /** What arrived, in order: ws text frames as strings; socket.io `message` values as they are. */
  readonly received: unknown[];
  /** Resolves once `n` messages arrived. */
  waitFor(n: number, timeoutMs?: number): Promise<unknown[]>;
  /** Resolves once a message equal to `value` (===) arrived. */
  waitForValue(value: unknown, timeoutMs?: number): Promise<unknown[]>;
  /** ws: the close code and reason; socket.io: code 0 and the disconnect reason. */
  readonly closed: Promise<Closed>;
  /** Sends a message to the server (ws: a text frame; socket.io: on the `message` event). */
  send(text: string): void;
  close(): void;
}

const clients: TestClient[] = [];

export async function connectClient(server: AppServer, user: string, tag: string): Promise<TestClient> {
  const received: unknown[] = [];
  const waiters = new Set<() => void>();
  const push = (value: unknown): void => {
    received.push(value);
    for (const wake of waiters) wake();
  };
  const until = (done: (r: unknown[]) => boolean, what: string, timeoutMs = 10_000): Promise<unknown[]> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (!done(received)) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve(received);
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`${tag}: timed out waiting for ${what} (received: ${JSON.stringify(received)})`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  let close: () => void;
  let send: (text: string) => void;
  let closed: Promise<Closed>;
  if (server.transport === 'ws') {
    const ws = new WebSocket(`${server.url}/?user=${encodeURIComponent(user)}&tag=${encodeURIComponent(tag)}`);
    ws.on('message', (data, isBinary) => push(isBinary ? data : (data as Buffer).toString('utf8')));
    closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    close = () => ws.close();
    send = (text) => ws.send(text);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
  } else {
    const socket: IoClientSocket = ioClient(server.url, { transports: ['websocket'], reconnection: false, forceNew: true, auth: { user, tag } });
    socket.on('message', push);
    closed = new Promise((resolve) => socket.once('disconnect', (reason) => resolve({ code: 0, reason })));
    close = () => void socket.close();
    send = (text) => void socket.emit('message', text);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('connect_error', reject);
    });
  }
  const client: TestClient = {
    tag,
    received,
    closed,
    close,
    send,
    waitFor: (n, timeoutMs) => until((r) => r.length >= n, `${n} messages`, timeoutMs),
    waitForValue: (value, timeoutMs) => until((r) => r.includes(value), JSON.stringify(value), timeoutMs),
  };
  clients.push(client);
  return client;
}

export function closeClients(): void {
  for (const client of clients.splice(0)) client.close();
}

/** ws text frames parsed as JSON (strings that are not JSON stay as they are); socket.io values as they are. */
export function decoded(client: TestClient): unknown[] {
  return client.received.map((value) => {
    if (typeof value !== 'string') return value;
    try {
      return JSON.parse(value);
    } catch {
      return value;
    }
  });
}

/** Resolves when the server side of a raw socket has closed ('close' for ws, 'disconnect' for socket.io). */
export function serverSideClosed(transport: TransportName, socket: any): Promise<unknown> {
  if (transport === 'ws') return socket.readyState === 3 ? Promise.resolve() : once(socket, 'close');
  return socket.connected ? once(socket, 'disconnect') : Promise.resolve();
}

/**
 * Makes the next write to a real socket fail with `error`, the way a peer that vanished mid-write
 * makes the kernel answer EPIPE; later writes (the close frame) go through. The TCP socket's
 * write, under ws or under socket.io's websocket transport.
 */
export function failNextWrite(transport: TransportName, socket: any, error: Error): void {
  const target = transport === 'ws' ? socket._socket : socket.conn.transport.socket._socket;
  const original = target.write;
  target.write = function failOnce(): never {
    target.write = original;
    throw error;
  };
}

export const epipe = (): Error => Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
