import type { Socket as NetSocket } from 'node:net';
import { io as connectIo, type Socket as IoClientSocket } from 'socket.io-client';
import { WebSocket } from 'ws';
import type { AdapterName, Sut } from './servers.js';

/**
 * Real clients for the three adapters, one shape: a `ws` WebSocket for ws and express, a
 * socket.io-client (websocket transport, no reconnection) for socket.io. Protocol frames go out as
 * text (socket.io: the payload of the "message" event); replies and broadcasts come back parsed.
 */

export interface ConnectOptions {
  token?: string;
  session?: string;
  origin?: string;
  localAddress?: string;
}

export interface Closed {
  /** ws, express: the close code; socket.io: 1001 for a server disconnect, 1000 for our own, 1006 otherwise. */
  readonly code: number;
  readonly reason: string;
  /** performance.now() when the client saw it. */
  readonly at: number;
}

export interface Client {
  readonly adapter: AdapterName;
  /** Everything received, parsed from JSON where possible, in order, with its arrival time. */
  readonly received: Array<{ readonly value: unknown; readonly at: number }>;
  /** A text frame exactly as given (socket.io: the event payload string). */
  sendText(text: string): void;
  /** A JSON message (socket.io: the object itself as the payload). */
  send(value: Record<string, unknown>): void;
  /** Resolves with the first message received from index `from` on that matches. */
  waitFor(match: (value: unknown) => boolean, timeoutMs?: number, from?: number): Promise<{ value: unknown; at: number; index: number }>;
  readonly closed: Promise<Closed>;
  readonly isOpen: boolean;
  close(): void;
  destroy(): void;
  /** The TCP socket underneath. */
  tcp(): NetSocket | undefined;
}

export interface Refused {
  /** ws, express: HTTP status; socket.io: undefined. */
  readonly status: number | undefined;
  readonly retryAfter: string | undefined;
  /** socket.io: the `connect_error` message. */
  readonly message: string | undefined;
  /** From the start of the attempt to the refusal. */
  readonly ms: number;
}

function parse(data: Buffer | string): unknown {
  const text = typeof data === 'string' ? data : data.toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function wsHeaders(options: ConnectOptions): Record<string, string> {
  return {
    ...(options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }),
    ...(options.session === undefined ? {} : { cookie: `session=${options.session}` }),
  };
}

function ioOptions(options: ConnectOptions) {
  const extraHeaders = {
    ...(options.origin === undefined ? {} : { origin: options.origin }),
    ...(options.session === undefined ? {} : { cookie: `session=${options.session}` }),
  };
  return {
    transports: ['websocket'],
    reconnection: false,
    forceNew: true,
    timeout: 10_000,
    ...(options.token === undefined ? {} : { auth: { token: options.token } }),
    ...(Object.keys(extraHeaders).length > 0 ? { extraHeaders } : {}),
    ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
  };
}

/** The TCP socket under a socket.io-client: Manager -> engine -> websocket transport -> ws -> net.Socket. */
export function ioTcpSocket(socket: IoClientSocket): NetSocket | undefined {
  const transport = (socket.io as unknown as { engine?: { transport?: { ws?: { _socket?: NetSocket | null } } } }).engine?.transport;
  return transport?.ws?._socket ?? undefined;
}

class Receiver {
  readonly received: Array<{ value: unknown; at: number }> = [];
  readonly #wakers = new Set<() => void>();
  isClosed = false;

  push(value: unknown): void {
    this.received.push({ value, at: performance.now() });
    this.wake();
  }
  wake(): void {
    for (const w of [...this.#wakers]) w();
  }
  waitFor(match: (value: unknown) => boolean, timeoutMs: number, from: number): Promise<{ value: unknown; at: number; index: number }> {
    return new Promise((resolve, reject) => {
      let scanned = from;
      const check = (): void => {
        for (; scanned < this.received.length; scanned++) {
          const r = this.received[scanned]!;
          if (match(r.value)) return finish(() => resolve({ ...r, index: scanned }));
        }
        if (this.isClosed) finish(() => reject(new Error(`closed while waiting (${this.received.length} received)`)));
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`timed out after ${timeoutMs} ms (${this.received.length} received)`))), timeoutMs);
      const finish = (fn: () => void): void => {
        clearTimeout(timer);
        this.#wakers.delete(check);
        fn();
      };
      this.#wakers.add(check);
      check();
    });
  }
}

export async function connect(sut: Sut, options: ConnectOptions = {}): Promise<Client> {
  return sut.adapter === 'socket.io' ? connectSocketIo(sut, options) : connectWs(sut, options);
}

async function connectWs(sut: Sut, options: ConnectOptions): Promise<Client> {
  const ws = new WebSocket(sut.wsUrl, {
    headers: wsHeaders(options),
    ...(options.origin === undefined ? {} : { origin: options.origin }),
    ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
  });
  const r = new Receiver();
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => r.push(isBinary ? data : parse(data as Buffer)));
  const closed = new Promise<Closed>((resolve) =>
    ws.once('close', (code, reason) => {
      r.isClosed = true;
      resolve({ code, reason: reason.toString(), at: performance.now() });
      r.wake();
    }),
  );
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused with HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });
  return {
    adapter: sut.adapter,
    received: r.received,
    sendText: (text) => ws.send(text),
    send: (value) => ws.send(JSON.stringify(value)),
    waitFor: (match, timeoutMs = 10_000, from = 0) => r.waitFor(match, timeoutMs, from),
    closed,
    get isOpen() {
      return ws.readyState === WebSocket.OPEN;
    },
    close: () => ws.close(),
    destroy: () => (ws as unknown as { _socket?: NetSocket })._socket?.destroy(),
    tcp: () => (ws as unknown as { _socket?: NetSocket })._socket,
  };
}

async function connectSocketIo(sut: Sut, options: ConnectOptions): Promise<Client> {
  const socket = connectIo(sut.baseUrl, ioOptions(options));
  const r = new Receiver();
  socket.on('message', (value: unknown) => r.push(value));
  const closed = new Promise<Closed>((resolve) =>
    socket.once('disconnect', (reason) => {
      r.isClosed = true;
      const code = reason === 'io server disconnect' ? 1001 : reason === 'io client disconnect' ? 1000 : 1006;
      resolve({ code, reason, at: performance.now() });
      r.wake();
    }),
  );
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', (error) => {
      socket.close();
      reject(new Error(`connect_error: ${error.message}`));
    });
  });
  return {
    adapter: sut.adapter,
    received: r.received,
    sendText: (text) => void socket.emit('message', text),
    send: (value) => void socket.emit('message', value),
    waitFor: (match, timeoutMs = 10_000, from = 0) => r.waitFor(match, timeoutMs, from),
    closed,
    get isOpen() {
      return socket.connected;
    },
    close: () => void socket.disconnect(),
    destroy: () => {
      ioTcpSocket(socket)?.destroy();
      socket.close();
    },
    tcp: () => ioTcpSocket(socket),
  };
}

/** A connection attempt that must be refused: resolves with how (rejects when it is accepted). */
export function connectRefused(sut: Sut, options: ConnectOptions = {}): Promise<Refused> {
  const started = performance.now();
  if (sut.adapter === 'socket.io') {
    return new Promise((resolve, reject) => {
      const socket = connectIo(sut.baseUrl, ioOptions(options));
      socket.once('connect_error', (error) => {
        const ms = performance.now() - started;
        socket.close();
        resolve({ status: undefined, retryAfter: undefined, message: error.message, ms });
      });
      socket.once('connect', () => {
        socket.close();
        reject(new Error('the connection was accepted'));
      });
    });
  }
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(sut.wsUrl, {
      headers: wsHeaders(options),
      ...(options.origin === undefined ? {} : { origin: options.origin }),
      ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
    });
    ws.on('error', () => {});
    ws.once('unexpected-response', (req, res) => {
      const ms = performance.now() - started;
      resolve({ status: res.statusCode, retryAfter: res.headers['retry-after'] as string | undefined, message: undefined, ms });
      req.destroy();
    });
    ws.once('open', () => {
      ws.terminate();
      reject(new Error('the upgrade was accepted'));
    });
    ws.once('close', () => reject(new Error('closed without an HTTP answer')));
  });
}

/** Messages of type error / ok / pong among what a client received. */
export const isReply = (v: unknown): v is { type: string; code?: string; requestId?: unknown; op?: string; room?: string } =>
  typeof v === 'object' && v !== null && ['error', 'ok', 'pong'].includes((v as { type?: unknown }).type as string);
