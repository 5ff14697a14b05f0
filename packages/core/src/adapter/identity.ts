import { BcastError } from '../errors/BcastError.js';
import { ErrorCode } from '../errors/codes.js';
import { expiryOf, validateUserId } from '../execution/validate.js';

/**
 * Helpers every transport adapter needs, so that none of them re-implements them.
 */

/**
 * What an app's `authenticate(request)` may return: a user id, or an identity object, or false to
 * refuse. `expiresAt` (ms since the epoch, or a Date) is when the credentials stop being valid:
 * the connection is then closed with 1008 unless the broadcaster's `authExpiry.refresh` extends it.
 */
export type AuthResult = string | { userId?: string; data?: unknown; expiresAt?: number | Date } | false | null | undefined;

export interface Identity {
  readonly userId: string | undefined;
  readonly data: unknown;
  /** When the credentials expire (ms since the epoch); undefined: they do not. */
  readonly expiresAt?: number | undefined;
}

/** Normalises an `authenticate` result; undefined means "refuse". Throws BCAST_INVALID_USER for a bad id. */
export function resolveIdentity(result: AuthResult): Identity | undefined {
  if (result === false || result === null || result === undefined) return undefined;
  if (typeof result === 'string') return { userId: validateUserId(result), data: undefined };
  if (typeof result === 'object') {
    const userId = result.userId === undefined ? undefined : validateUserId(result.userId);
    const expiresAt = result.expiresAt === undefined ? undefined : expiryOf(result.expiresAt);
    return expiresAt === undefined ? { userId, data: result.data } : { userId, data: result.data, expiresAt };
  }
  throw new BcastError(ErrorCode.InvalidOption, 'authenticate must return a user id, an identity object or false');
}


/**
 * Cross-site WebSocket hijacking guard. `allowed` undefined accepts every origin (the default, as
 * in ws); otherwise the request's Origin must match one entry exactly, or a predicate must say yes.
 * A request without an Origin header (not a browser) is accepted unless `requireOrigin`.
 */
export type OriginPolicy = readonly string[] | ((origin: string | undefined) => boolean);

export function isOriginAllowed(origin: string | undefined, allowed: OriginPolicy | undefined, requireOrigin = false): boolean {
  if (allowed === undefined) return true;
  if (typeof allowed === 'function') return allowed(origin);
  if (origin === undefined || origin === '') return !requireOrigin;
  return allowed.includes(origin);
}

/** Runs `authenticate` with a deadline; a hang counts as a failure. */
export async function withDeadline<T>(work: () => Promise<T> | T, timeoutMs: number, what = 'authenticate'): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      Promise.resolve().then(work),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new BcastError(ErrorCode.Timeout, `${what} did not answer within ${timeoutMs} ms`)), timeoutMs);
        timer.unref();
      }),
    ]);
  } finally {
    if (timer) clearTimeout(timer);
  }
}

let idPool = Buffer.alloc(0);
let idOffset = 0;

/**
 * Fresh connection id: 128 random bits as 32 hex characters, unique across nodes so `except`
 * works over the backplane. Cut from a pooled random buffer, so each id is one flat 32-byte string
 * (`crypto.randomUUID()` on Node 20 builds a rope of ~14 pieces, ~0.45 KiB per live connection).
 */
export function newConnectionId(): string {
  if (idOffset + 16 > idPool.length) {
    idPool = Buffer.from(crypto.getRandomValues(new Uint8Array(4096)).buffer);
    idOffset = 0;
  }
  const id = idPool.toString('hex', idOffset, idOffset + 16);
  idOffset += 16;
  return id;
}
