import { BcastError } from '../errors/BcastError.js';
import { ErrorCode } from '../errors/codes.js';

export interface IdLimits {
  /** Longest room id, in UTF-16 code units. @default 128 */
  readonly maxRoomIdLength: number;
  /** Longest user id. @default 256 */
  readonly maxUserIdLength: number;
}

// C0 and C1 control characters, DEL and lone surrogates are never valid in an id.
const forbidden = /[\u0000-\u001f\u007f-\u009f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function checkId(kind: 'room' | 'user', code: typeof ErrorCode.InvalidRoom | typeof ErrorCode.InvalidUser, value: unknown, max: number): string {
  if (typeof value !== 'string') {
    throw new BcastError(code, `${kind} id must be a string, got ${value === null ? 'null' : typeof value}`, { details: { reason: 'type' } });
  }
  if (value.length === 0) throw new BcastError(code, `${kind} id must not be empty`, { details: { reason: 'empty' } });
  if (value.length > max) {
    throw new BcastError(code, `${kind} id is ${value.length} characters; the limit is ${max}`, { details: { reason: 'length', length: value.length, max } });
  }
  if (forbidden.test(value)) throw new BcastError(code, `${kind} id contains control characters`, { details: { reason: 'characters' } });
  return value;
}

/** Returns the room id or throws `BCAST_INVALID_ROOM`. */
export function validateRoomId(room: unknown, limits: Pick<IdLimits, 'maxRoomIdLength'> = { maxRoomIdLength: 128 }): string {
  return checkId('room', ErrorCode.InvalidRoom, room, limits.maxRoomIdLength);
}

/** Returns the user id or throws `BCAST_INVALID_USER`. */
export function validateUserId(userId: unknown, limits: Pick<IdLimits, 'maxUserIdLength'> = { maxUserIdLength: 256 }): string {
  return checkId('user', ErrorCode.InvalidUser, userId, limits.maxUserIdLength);
}

/** Returns the ids as an array or throws `BCAST_INVALID_TARGET`. */
export function validateConnectionIds(ids: unknown, field: 'connectionIds' | 'except'): readonly string[] {
  if (!Array.isArray(ids)) {
    throw new BcastError(ErrorCode.InvalidTarget, `${field} must be an array of connection ids`, { details: { field } });
  }
  for (const id of ids) {
    if (typeof id !== 'string' || id.length === 0 || id.length > 256) {
      throw new BcastError(ErrorCode.InvalidTarget, `${field} must contain non-empty string ids (at most 256 characters)`, { details: { field } });
    }
  }
  return ids as readonly string[];
}

/** An expiry as ms since the epoch; throws BCAST_INVALID_OPTION for anything else. */
export function expiryOf(value: number | Date): number {
  const ms = value instanceof Date ? value.getTime() : value;
  if (typeof ms !== 'number' || !Number.isFinite(ms)) {
    throw new BcastError(ErrorCode.InvalidOption, 'expiresAt must be a finite time in ms since the epoch, or a Date', { details: { option: 'expiresAt' } });
  }
  return ms;
}
