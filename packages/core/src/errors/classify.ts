import { BrokenCircuitError, IsolatedCircuitError, TaskCancelledError } from 'cockatiel';
import { isBcastError } from './BcastError.js';
import { ErrorCode } from './codes.js';

/**
 * What to do about an error:
 * - `transient`: worth retrying (a timeout, a reset connection to a dependency);
 * - `connection-dead`: the recipient is gone; close it and clean up, never retry;
 * - `caller`: the caller's input was wrong; reject, never retry, never open a circuit;
 * - `circuit-open`: a breaker refused the call; fail fast, never retry;
 * - `other`: unexpected; counted and logged, not retried.
 */
export type ErrorCategory = 'transient' | 'connection-dead' | 'caller' | 'circuit-open' | 'other';

const callerCodes: ReadonlySet<string> = new Set([
  ErrorCode.InvalidMessage,
  ErrorCode.MessageTooLarge,
  ErrorCode.InvalidRoom,
  ErrorCode.InvalidUser,
  ErrorCode.InvalidTarget,
  ErrorCode.UnknownOperation,
  ErrorCode.UnknownRoom,
  ErrorCode.UnknownConnection,
  ErrorCode.InvalidOption,
  ErrorCode.Shutdown,
]);

const transientCodes: ReadonlySet<string> = new Set([ErrorCode.Timeout, ErrorCode.BackplaneUnavailable]);

/** Node and socket library error codes that mean "the peer is gone". */
const deadSocketCodes: ReadonlySet<string> = new Set([
  'EPIPE',
  'ECONNRESET',
  'ECONNABORTED',
  'ERR_STREAM_DESTROYED',
  'ERR_STREAM_WRITE_AFTER_END',
  'ERR_SOCKET_CLOSED',
]);

/** Network error codes of a dependency (Redis...) worth a retry. */
const transientNodeCodes: ReadonlySet<string> = new Set([
  'ETIMEDOUT',
  'ECONNREFUSED',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNRESET',
  'EPIPE',
]);

export interface ErrorClassifierOptions {
  /** Extra rule tried first; return undefined to fall through to the defaults. */
  classify?: (error: unknown) => ErrorCategory | undefined;
}

/** Decides per error whether to retry, clean up, reject or just count. */
export class ErrorClassifier {
  readonly #custom: ErrorClassifierOptions['classify'];

  constructor(options: ErrorClassifierOptions = {}) {
    this.#custom = options.classify;
  }

  /** Category of an error raised while talking to a dependency (backplane, ack...). */
  classify(error: unknown): ErrorCategory {
    const custom = this.#custom?.(error);
    if (custom !== undefined) return custom;
    if (error instanceof BrokenCircuitError || error instanceof IsolatedCircuitError) return 'circuit-open';
    if (isBcastError(error)) {
      if (error.code === ErrorCode.CircuitOpen || error.code === ErrorCode.CircuitIsolated) return 'circuit-open';
      if (error.code === ErrorCode.ConnectionClosed) return 'connection-dead';
      if (callerCodes.has(error.code)) return 'caller';
      if (transientCodes.has(error.code)) return 'transient';
      return 'other';
    }
    if (error instanceof TaskCancelledError) return 'transient';
    const code = nodeCode(error);
    if (code !== undefined && transientNodeCodes.has(code)) return 'transient';
    if (error instanceof Error && /timed? ?out|connection is closed|socket closed|reconnect/i.test(error.message)) {
      return 'transient';
    }
    return 'other';
  }

  /** Category of an error thrown by a recipient connection's `send`. */
  classifySendError(error: unknown): ErrorCategory {
    const custom = this.#custom?.(error);
    if (custom !== undefined) return custom;
    if (isBcastError(error, ErrorCode.ConnectionClosed)) return 'connection-dead';
    const code = nodeCode(error);
    if (code !== undefined && deadSocketCodes.has(code)) return 'connection-dead';
    if (error instanceof Error && /not open|closed|closing|destroyed|write after end/i.test(error.message)) {
      return 'connection-dead';
    }
    return 'other';
  }
}

function nodeCode(error: unknown): string | undefined {
  if (typeof error === 'object' && error !== null && 'code' in error) {
    const code = (error as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}
