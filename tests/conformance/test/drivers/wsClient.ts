import type { IncomingMessage } from 'node:http';
import { WebSocket, type ClientOptions } from 'ws';
import type { ConnectOptions, Refusal, TestClient } from '../driver.js';

/** Shared by the ws and express drivers: a `ws` client speaking the bcast protocol. */

/** The token a client sent, as the drivers' authenticate wrappers read it. */
export function tokenOf(request: IncomingMessage): string | undefined {
  const header = request.headers.authorization;
  return header?.startsWith('Bearer ') ? header.slice(7) : undefined;
}

function clientOptions(options: ConnectOptions): ClientOptions {
  return {
    ...(options.token === undefined ? {} : { headers: { authorization: `Bearer ${options.token}` } }),
    ...(options.origin === undefined ? {} : { origin: options.origin }),
  };
}

interface Socketish {
  destroy(): void;
  pause(): void;
}

export async function connectWs(url: string, options: ConnectOptions = {}): Promise<TestClient> {
  const ws = new WebSocket(url, clientOptions(options));
  const messages: unknown[] = [];
  const pending = new Map<string, (reply: unknown) => void>();
  const wakers = new Set<() => void>();
  let taken = 0;
  let requests = 0;
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    const bytes = data as Buffer;
    let message: unknown = bytes;
    if (!isBinary) {
      const text = bytes.toString('utf8');
      try {
        message = JSON.parse(text);
      } catch {
        message = text;
      }
    }
    const requestId = (message as { requestId?: unknown } | null)?.requestId;
    const resolve = typeof requestId === 'string' ? pending.get(requestId) : undefined;
    if (resolve) {
      pending.delete(requestId as string);
      resolve(message);
      return;
    }
    messages.push(message);
    for (const wake of wakers) wake();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.once('close', (code, reason) => {
      resolve({ code, reason: reason.toString() });
      for (const wake of wakers) wake();
    });
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused with HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });

  const waitUntil = <T>(ready: () => T | undefined, what: string, timeoutMs: number): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const check = (): void => {
        const value = ready();
        if (value !== undefined) finish(() => resolve(value));
        else if (ws.readyState === WebSocket.CLOSED) finish(() => reject(new Error(`closed while waiting for ${what}`)));
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`timed out waiting for ${what} (${messages.length} received)`))), timeoutMs);
      const finish = (fn: () => void): void => {
        clearTimeout(timer);
        wakers.delete(check);
        fn();
      };
      wakers.add(check);
      check();
    });

  const socket = (): Socketish | undefined => (ws as unknown as { _socket?: Socketish })._socket;
  return {
    messages,
    closed,
    next(timeoutMs = 10_000) {
      return waitUntil(() => (taken < messages.length ? { value: messages[taken++] } : undefined), 'the next message', timeoutMs).then((box) => box.value);
    },
    waitFor(n, timeoutMs = 10_000) {
      return waitUntil(() => (messages.length >= n ? messages.slice() : undefined), `${n} messages`, timeoutMs);
    },
    request(message) {
      const requestId = typeof message.requestId === 'string' ? message.requestId : `req-${++requests}`;
      return new Promise((resolve, reject) => {
        pending.set(requestId, resolve);
        ws.send(JSON.stringify({ ...message, requestId }), (error) => error && reject(error));
      });
    },
    close: () => ws.close(),
    destroy: () => socket()?.destroy(),
    pauseReading: () => socket()?.pause(),
  };
}

/** An upgrade that must be refused: resolves with the HTTP status. */
export function connectWsRejected(url: string, options: ConnectOptions = {}): Promise<Refusal> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, clientOptions(options));
    ws.on('error', () => {});
    ws.once('unexpected-response', (req, res) => {
      resolve({ status: res.statusCode ?? 0 });
      req.destroy();
    });
    ws.once('open', () => {
      ws.terminate();
      reject(new Error('the upgrade was accepted'));
    });
    ws.once('close', () => reject(new Error('closed without an HTTP answer')));
  });
}
