import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';

/**
 * Answers an HTTP upgrade request with an error status (403, 401, 503...) and closes the socket,
 * before any WebSocket exists. `headers` are added as given (e.g. `Retry-After`).
 */
export function refuseUpgrade(socket: Duplex, status: number, headers: Readonly<Record<string, string | number>> = {}): void {
  if (socket.destroyed) return;
  const body = STATUS_CODES[status] ?? 'Error';
  const extra = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  socket.once('finish', () => socket.destroy());
  socket.end(`HTTP/1.1 ${status} ${body}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`);
}

/**
 * Answers a plain HTTP request (not an upgrade) with an error status, with the body and
 * `Content-Type` of {@link refuseUpgrade} and `headers` added (e.g. `Retry-After`): for transports
 * whose handshake is an ordinary request, such as engine.io's long-polling. A response already
 * started is only ended.
 */
export function refuseRequest(res: ServerResponse, status: number, headers: Readonly<Record<string, string | number>> = {}): void {
  if (res.headersSent) {
    if (!res.writableEnded) res.end();
    return;
  }
  const body = STATUS_CODES[status] ?? 'Error';
  res.writeHead(status, { ...headers, 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * HTTP server options against slow and hanging handshakes, for `http.createServer(options, app)`:
 * a request head must arrive within 10 s (Node's default is 60 s), and connections are checked
 * every 2 s (default 30 s), so a slowloris connection is answered 408 and closed within about
 * 12 s instead of 90 s. `requestTimeout` (the whole body of a plain request) is left to Node's
 * default, so uploads to the same app are not cut.
 */
export const recommendedHttpServerOptions = Object.freeze({
  headersTimeout: 10_000,
  connectionsCheckingInterval: 2_000,
} as const);
