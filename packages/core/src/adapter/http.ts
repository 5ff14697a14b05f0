import { STATUS_CODES } from 'node:http';
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
