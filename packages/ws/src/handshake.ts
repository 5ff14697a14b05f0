import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { ErrorCode, isBcastError, isOriginAllowed, resolveIdentity, withDeadline, type Identity } from '@bcast/core';
import type { WsAdapterOptions } from './index.js';

// The checks every upgrade passes before it is accepted: origin (403), then authenticate (401, or 503
// when it does not answer in time). Shared by attachToServer and createUpgradeHandler.

/** The identity of connections accepted without `authenticate`. */
export const anonymous: Identity = Object.freeze({ userId: undefined, data: undefined });

export interface Verdict {
  readonly identity: Identity | undefined;
  readonly status: number;
}

type Verifier = ((request: IncomingMessage) => Promise<Verdict>) & { dispose(): void };

export function createVerifier(options: WsAdapterOptions): Verifier {
  const { authenticate, allowedOrigins, requireOrigin = false, authTimeoutMs = 5_000 } = options;
  let disposed = false;
  const verify = async (request: IncomingMessage): Promise<Verdict> => {
    if (disposed) return { identity: undefined, status: 503 };
    if (!isOriginAllowed(request.headers.origin, allowedOrigins, requireOrigin)) return { identity: undefined, status: 403 };
    if (!authenticate) return { identity: anonymous, status: 101 };
    let identity: Identity | undefined;
    try {
      identity = resolveIdentity(await withDeadline(() => authenticate(request), authTimeoutMs));
    } catch (error) {
      return { identity: undefined, status: isBcastError(error, ErrorCode.Timeout) ? 503 : 401 };
    }
    if (disposed) return { identity: undefined, status: 503 };
    return identity ? { identity, status: 101 } : { identity: undefined, status: 401 };
  };
  return Object.assign(verify, { dispose: () => void (disposed = true) });
}

/** Answers an upgrade request with an HTTP error and destroys the socket. */
export function refuse(socket: Duplex, status: number): void {
  if (socket.destroyed) return;
  const body = STATUS_CODES[status] ?? 'Error';
  socket.once('finish', () => socket.destroy());
  socket.end(`HTTP/1.1 ${status} ${body}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}
