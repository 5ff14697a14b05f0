import type { ConnectionEntry } from '../registry/ConnectionRegistry.js';
import { isBcastError } from '../errors/BcastError.js';
import { validateRoomId } from '../execution/validate.js';
import type { StreamPosition } from '../history/HistoryStore.js';
import { ProtocolErrorCode, type ServerReply } from './messages.js';

export interface InboundOptions {
  /**
   * Decides whether a connection may join a room. Without it, client joins are refused
   * (FORBIDDEN) unless `allowClientJoins` is true. May be async; a throw counts as a refusal.
   */
  authorizeJoin?: (connection: ConnectionEntry, room: string) => boolean | Promise<boolean>;
  /** Let clients join any valid room when no `authorizeJoin` is given. @default false */
  allowClientJoins?: boolean;
  /**
   * Receives every message that is not part of the protocol (parsed JSON, or the raw text when
   * `protocol` is false, or a Buffer for binary frames). Without it, unknown types get UNKNOWN_TYPE.
   */
  onMessage?: (connection: ConnectionEntry, message: unknown) => void | Promise<void>;
  /** Handle join / leave / ping. When false every frame goes to `onMessage` untouched. @default true */
  protocol?: boolean;
  /** Rooms one connection may be in through client joins. @default 128 */
  maxRoomsPerConnection?: number;
  /** Sustained messages per second per connection. @default 50 */
  rateLimitPerSecond?: number;
  /** Burst allowance on top of the rate. @default 100 */
  rateLimitBurst?: number;
  /** Rejected messages within `abuseWindowMs` that close the connection with 1008. @default 200 */
  maxRejections?: number;
  /** @default 5_000 */
  abuseWindowMs?: number;
}

export interface ResolvedInbound {
  readonly protocol: boolean;
  readonly maxRoomsPerConnection: number;
  readonly rateLimitPerSecond: number;
  readonly rateLimitBurst: number;
  readonly maxRejections: number;
  readonly abuseWindowMs: number;
}

export function resolveInbound(options: InboundOptions): ResolvedInbound {
  return {
    protocol: options.protocol ?? true,
    maxRoomsPerConnection: options.maxRoomsPerConnection ?? 128,
    rateLimitPerSecond: options.rateLimitPerSecond ?? 50,
    rateLimitBurst: options.rateLimitBurst ?? 100,
    maxRejections: options.maxRejections ?? 200,
    abuseWindowMs: options.abuseWindowMs ?? 5_000,
  };
}

/** Per-connection inbound state: a token bucket, a count of recent rejections, and the queue of frames in flight. */
export class InboundState {
  tokens: number;
  refilledAt: number;
  rejections = 0;
  windowStart: number;
  /** Frames received and not yet handled. */
  pending = 0;
  /** The last frame's handling: the next frame waits for it (frames take effect in order). */
  tail: Promise<void> = Promise.resolve();

  constructor(burst: number, now: number) {
    this.tokens = burst;
    this.refilledAt = now;
    this.windowStart = now;
  }
}

/** What the protocol needs from the broadcaster. */
export interface InboundHost {
  readonly options: InboundOptions;
  readonly resolved: ResolvedInbound;
  /** The broadcaster's room id limit applies to client joins too. */
  readonly limits: { readonly maxRoomIdLength: number };
  reply(entry: ConnectionEntry, reply: ServerReply): void;
  /** Joins and answers `ok` (recovering the room's history when `since` is given). */
  join(entry: ConnectionEntry, room: string, since: StreamPosition | undefined, requestId: string | number | undefined): Promise<void>;
  leave(entry: ConnectionEntry, room: string): boolean;
  roomCount(entry: ConnectionEntry): number;
  isMember(entry: ConnectionEntry, room: string): boolean;
  /** Counts a rejection: 'closed' when the connection was closed for abuse, 'quiet' when no reply is due. */
  reject(entry: ConnectionEntry, code: ProtocolErrorCode): 'closed' | 'reply' | 'quiet';
  log(level: 'warn' | 'error', message: string, error?: unknown): void;
}

/** Takes one token; false when the connection is over its rate. */
export function takeToken(state: InboundState, r: ResolvedInbound, now: number): boolean {
  const elapsed = now - state.refilledAt;
  if (elapsed > 0) {
    state.tokens = Math.min(r.rateLimitBurst, state.tokens + (elapsed * r.rateLimitPerSecond) / 1000);
    state.refilledAt = now;
  }
  if (state.tokens < 1) return false;
  state.tokens -= 1;
  return true;
}

/**
 * Handles one inbound frame from a registered connection; `admitted` says whether it was within the
 * rate when it arrived. Never throws.
 */
export async function handleInbound(host: InboundHost, entry: ConnectionEntry, data: string | Buffer, isBinary: boolean, admitted: boolean): Promise<void> {
  const { options, resolved } = host;
  if (!resolved.protocol || isBinary) {
    if (options.onMessage) return callHook(host, entry, isBinary ? data : data.toString());
    if (isBinary) refuse(host, entry, ProtocolErrorCode.InvalidArgument, 'binary frames are not accepted', undefined);
    return;
  }
  // A frame over the rate is only read (for its requestId) when it is small: a flood costs little.
  if (!admitted && data.length > 1_024) return refuse(host, entry, ProtocolErrorCode.RateLimited, 'too many messages; slow down', undefined);
  let msg: unknown;
  try {
    msg = JSON.parse(typeof data === 'string' ? data : data.toString('utf8'));
  } catch {
    refuse(host, entry, admitted ? ProtocolErrorCode.BadJson : ProtocolErrorCode.RateLimited, admitted ? 'message is not valid JSON' : 'too many messages; slow down', undefined);
    return;
  }
  const type = typeof msg === 'object' && msg !== null ? (msg as { type?: unknown }).type : undefined;
  const rawId = typeof msg === 'object' && msg !== null ? (msg as { requestId?: unknown }).requestId : undefined;
  const requestId = (typeof rawId === 'string' && rawId.length <= 128) || (typeof rawId === 'number' && Number.isFinite(rawId)) ? rawId : undefined;
  if (!admitted) {
    // Refused with the request's id, so a client can settle that request.
    refuse(host, entry, ProtocolErrorCode.RateLimited, 'too many messages; slow down', requestId);
    return;
  }
  switch (type) {
    case 'join':
    case 'leave': {
      const roomValue = (msg as { room?: unknown }).room;
      let room: string;
      try {
        room = validateRoomId(roomValue, host.limits);
      } catch (error) {
        const why = isBcastError(error) ? error.message : 'invalid room';
        refuse(host, entry, ProtocolErrorCode.InvalidRoom, why, requestId);
        return;
      }
      const since = positionOf((msg as { since?: unknown }).since);
      if (since === null) {
        refuse(host, entry, ProtocolErrorCode.InvalidArgument, 'since must be {"offset": a non-negative integer, "epoch": a string}', requestId);
        return;
      }
      if (type === 'leave') {
        host.leave(entry, room);
        host.reply(entry, withId({ type: 'ok', op: 'leave', room }, requestId));
        return;
      }
      if (host.isMember(entry, room)) {
        host.reply(entry, withId({ type: 'ok', op: 'join', room }, requestId));
        return;
      }
      if (host.roomCount(entry) >= resolved.maxRoomsPerConnection) {
        refuse(host, entry, ProtocolErrorCode.TooManyRooms, `at most ${resolved.maxRoomsPerConnection} rooms per connection`, requestId);
        return;
      }
      let allowed = false;
      try {
        allowed = options.authorizeJoin ? (await options.authorizeJoin(entry, room)) === true : options.allowClientJoins === true;
      } catch (error) {
        host.log('warn', `authorizeJoin threw for connection ${entry.id}`, error);
      }
      if (entry.isClosing) return;
      if (!allowed) {
        refuse(host, entry, ProtocolErrorCode.Forbidden, `not allowed to join ${JSON.stringify(room)}`, requestId);
        return;
      }
      return host.join(entry, room, since, requestId);
    }
    case 'ping':
      host.reply(entry, withId({ type: 'pong' }, requestId));
      return;
    default:
      if (options.onMessage) return callHook(host, entry, msg);
      refuse(host, entry, ProtocolErrorCode.UnknownType, `unknown message type ${JSON.stringify(String(type))}`, requestId);
  }
}

/** A client's `since`: undefined when absent, null when malformed. */
function positionOf(value: unknown): StreamPosition | undefined | null {
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null) return null;
  const { offset, epoch } = value as { offset?: unknown; epoch?: unknown };
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0 || typeof epoch !== 'string' || epoch.length === 0 || epoch.length > 64) return null;
  return { offset, epoch };
}

function refuse(host: InboundHost, entry: ConnectionEntry, code: ProtocolErrorCode, message: string, requestId: string | number | undefined): void {
  if (host.reject(entry, code) !== 'reply') return;
  host.reply(entry, withId({ type: 'error', code, message }, requestId));
}

function withId<T extends ServerReply>(reply: T, requestId: string | number | undefined): T {
  return requestId === undefined ? reply : { ...reply, requestId };
}

async function callHook(host: InboundHost, entry: ConnectionEntry, message: unknown): Promise<void> {
  try {
    await host.options.onMessage?.(entry, message);
  } catch (error) {
    host.log('error', `onMessage threw for connection ${entry.id}`, error);
  }
}
