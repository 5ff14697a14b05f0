import { ErrorCode } from './codes.js';

const brand = Symbol.for('@bcast/core/BcastError');

/** Extra, machine-readable facts about an error (the field that was wrong, a limit...). */
export type ErrorDetails = Readonly<Record<string, unknown>>;

/**
 * The one error type bcast throws or reports. `code` is stable; `message` is for people.
 * Use {@link isBcastError} rather than `instanceof`: it also works across copies of the package.
 */
export class BcastError extends Error {
  readonly [brand] = true;
  override readonly name = 'BcastError';
  readonly code: ErrorCode;
  readonly details: ErrorDetails | undefined;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; details?: ErrorDetails }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options?.details;
  }

  toJSON(): { name: string; code: ErrorCode; message: string; details?: ErrorDetails } {
    return this.details === undefined
      ? { name: this.name, code: this.code, message: this.message }
      : { name: this.name, code: this.code, message: this.message, details: this.details };
  }
}

/** True for any bcast error, optionally of one code. */
export function isBcastError(value: unknown, code?: ErrorCode): value is BcastError {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as Record<symbol, unknown>)[brand] === true &&
    (code === undefined || (value as BcastError).code === code)
  );
}

/** Converts anything thrown into a BcastError, keeping the original as `cause`. */
export function toBcastError(value: unknown): BcastError {
  if (isBcastError(value)) return value;
  const message = value instanceof Error ? value.message : String(value);
  return new BcastError(ErrorCode.Internal, message, { cause: value });
}
