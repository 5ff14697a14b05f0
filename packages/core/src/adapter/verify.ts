import { ErrorCode } from '../errors/codes.js';
import { isBcastError } from '../errors/BcastError.js';
import { isOriginAllowed, resolveIdentity, withDeadline, type AuthResult, type Identity, type OriginPolicy } from './identity.js';

/** The options every adapter takes, with one meaning and one name everywhere. */
export interface AdapterOptions<R> extends ConnectionCapOptions {
  /**
   * Identity of a connection, decided before it is accepted: a user id, an identity object, or
   * false to refuse (401 / `unauthorized`). A throw is a refusal; no answer within
   * `authTimeoutMs` is 503 / `unauthorized`. Without it every connection is accepted, anonymous.
   */
  authenticate?: (request: R) => AuthResult | Promise<AuthResult>;
  /** Deadline of `authenticate`. @default 5_000 */
  authTimeoutMs?: number;
  /** Origins that may connect (checked before `authenticate`; cross-site WebSocket hijacking guard). @default undefined (any) */
  allowedOrigins?: OriginPolicy;
  /** Refuse requests without an Origin header when `allowedOrigins` is a list. @default false */
  requireOrigin?: boolean;
  /** How long `dispose()` waits for clients to answer its 1001 close before terminating them. @default 1_000 */
  closeTimeoutMs?: number;
  /**
   * Coalesce bursts: the first broadcast of a tick is written at once; from the second on, writes
   * are held and leave each socket in one syscall at the end of the tick (a socket destroyed in
   * that tick, or holding 64 KiB, is let go first). `false`: one write per message. @default true
   */
  coalesce?: boolean;
}

/** What an attach function returns, on every adapter. */
export interface Attachment {
  /** Closes this attachment's clients with 1001 (terminating those that do not answer within `closeTimeoutMs`), removes its listeners and hooks. */
  dispose(): Promise<void>;
}

/** Why a connection was refused, and the HTTP status an upgrade gets for it. */
export type Refusal = { readonly reason: 'origin'; readonly status: 403 } | { readonly reason: 'unauthorized'; readonly status: 401 } | { readonly reason: 'timeout' | 'closing'; readonly status: 503 };

export type Verdict = { readonly identity: Identity; readonly refusal?: undefined } | { readonly identity?: undefined; readonly refusal: Refusal };

export interface Verifier<R> {
  /** Origin first (403), then `authenticate` under its deadline (401, or 503 when it does not answer). */
  (request: R, origin: string | undefined): Promise<Verdict>;
  /** Refuses everything from now on (503): the adapter is going away. */
  dispose(): void;
}

/** The identity of connections accepted without `authenticate`. */
export const anonymous: Identity = Object.freeze({ userId: undefined, data: undefined });

const refusals = {
  origin: { reason: 'origin', status: 403 },
  unauthorized: { reason: 'unauthorized', status: 401 },
  timeout: { reason: 'timeout', status: 503 },
  closing: { reason: 'closing', status: 503 },
} as const;

/**
 * The checks every connection passes before it is accepted, shared by all adapters. `closing`:
 * true once the server is shutting down (the broadcaster is disposed): new connections get 503.
 */
export function createVerifier<R>(options: AdapterOptions<R>, closing: () => boolean = () => false): Verifier<R> {
  const { authenticate, allowedOrigins, requireOrigin = false, authTimeoutMs = 5_000 } = options;
  let disposed = false;
  const verify = async (request: R, origin: string | undefined): Promise<Verdict> => {
    if (disposed || closing()) return { refusal: refusals.closing };
    if (!isOriginAllowed(origin, allowedOrigins, requireOrigin)) return { refusal: refusals.origin };
    if (!authenticate) return { identity: anonymous };
    let identity: Identity | undefined;
    try {
      identity = resolveIdentity(await withDeadline(() => authenticate(request), authTimeoutMs));
    } catch (error) {
      return { refusal: isBcastError(error, ErrorCode.Timeout) ? refusals.timeout : refusals.unauthorized };
    }
    if (disposed || closing()) return { refusal: refusals.closing };
    if (identity?.expiresAt !== undefined && identity.expiresAt <= Date.now()) return { refusal: refusals.unauthorized }; // expired already
    return identity ? { identity } : { refusal: refusals.unauthorized };
  };
  return Object.assign(verify, { dispose: () => void (disposed = true) });
}

/** Admission limits of an attachment (B15): a global cap and a per-IP cap on open connections. */
export interface ConnectionCapOptions {
  /** Open connections (and handshakes in progress) this attachment accepts in all; more get 503. @default 15_000 */
  maxConnections?: number;
  /** Open connections (and handshakes in progress) from one IP address; more get 503. @default Infinity */
  maxConnectionsPerIp?: number;
  /** The `Retry-After` (seconds) of a 503 for a cap. @default 5 */
  retryAfterS?: number;
}

/**
 * Admission for an attachment: a global cap on its open connections and handshakes in progress
 * (the adapter says how many), and a per-IP cap counted from the upgrade request until the TCP
 * socket closes. Over a cap a request is refused (503 with `Retry-After`) before the upgrade, and
 * existing clients are never touched. Without a per-IP cap nothing is kept per socket.
 */
export class ConnectionCaps {
  readonly #perIp = new Map<string, number>();
  readonly #max: number;
  readonly #maxPerIp: number;
  readonly retryAfterS: number;
  /** One listener for every socket (no closure per connection): `this` is the socket. */
  readonly #releaseSocket: (this: { readonly remoteAddress?: string | undefined }) => void;

  constructor(options: ConnectionCapOptions = {}) {
    const caps = this;
    this.#releaseSocket = function () {
      caps.release(this.remoteAddress);
    };
    this.#max = options.maxConnections ?? 15_000;
    this.#maxPerIp = options.maxConnectionsPerIp ?? Number.POSITIVE_INFINITY;
    this.retryAfterS = options.retryAfterS ?? 5;
  }

  /**
   * Admits the TCP socket of an upgrade request; false when a cap is reached. `open`: the
   * connections and handshakes the attachment holds now. The refusal to send is 503 with {@link headers}.
   */
  admitSocket(socket: { readonly remoteAddress?: string | undefined; on(event: 'close', listener: () => void): unknown }, open: number): boolean {
    if (!this.admit(socket.remoteAddress, open)) return false;
    if (this.#maxPerIp !== Number.POSITIVE_INFINITY) socket.on('close', this.#releaseSocket);
    return true;
  }

  /**
   * Admits a connection that is not a TCP socket of its own (an engine.io session, whose
   * requests come and go on any socket): false when a cap is reached, and nothing is counted.
   * `address`: the client IP it counts against; the adapter calls {@link release} with it, once,
   * when the connection is gone.
   */
  admit(address: string | undefined, open: number): boolean {
    if (open >= this.#max) return false;
    if (this.#maxPerIp === Number.POSITIVE_INFINITY) return true;
    if ((this.#perIp.get(address ?? '') ?? 0) >= this.#maxPerIp) return false;
    this.hold(address);
    return true;
  }

  /** Counts a connection that exists already, whatever the caps (one that was not admitted here); {@link release} it the same way. */
  hold(address: string | undefined): void {
    if (this.#maxPerIp === Number.POSITIVE_INFINITY) return;
    const key = address ?? '';
    this.#perIp.set(key, (this.#perIp.get(key) ?? 0) + 1);
  }

  /** Gives back the per-IP slot of a connection counted by {@link admit} or {@link hold}. */
  release(address: string | undefined): void {
    const key = address ?? '';
    const n = this.#perIp.get(key) ?? 0;
    if (n <= 1) this.#perIp.delete(key);
    else this.#perIp.set(key, n - 1);
  }

  /** The headers of a 503 for a cap. */
  get headers(): Readonly<Record<string, string>> {
    return { 'Retry-After': String(this.retryAfterS) };
  }
}
