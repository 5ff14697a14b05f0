import type { MeterProvider, TracerProvider } from '@opentelemetry/api';
import type { Backplane } from './backplane/Backplane.js';
import { DEFAULT_MAX_MESSAGE_BYTES } from './connection/EncodedMessage.js';
import { BcastError } from './errors/BcastError.js';
import type { ErrorClassifier } from './errors/classify.js';
import { ErrorCode } from './errors/codes.js';
import type { BroadcastLimits } from './execution/BroadcastExecutor.js';
import { resolveInbound, type InboundOptions, type ResolvedInbound } from './protocol/InboundProtocol.js';
import type { HistoryOptions } from './history/RoomHistory.js';
import type { PresenceOptions } from './presence/Presence.js';
import type { ConnectionEntry } from './registry/ConnectionRegistry.js';
import type { ReliabilityOptions, ScopeOptions } from './reliability/ReliabilityManager.js';

export type Logger = Pick<Console, 'warn' | 'error'>;

export interface BroadcasterOptions extends InboundOptions {
  /** Largest encoded message accepted from a caller or from another node. @default 1_048_576 (1 MiB) */
  maxMessageBytes?: number;
  /** A connection with more buffered bytes is a slow consumer: closed with 1013. @default 1_048_576 */
  maxBufferedBytes?: number;
  /** Above this, messages sent with `volatile` are dropped for that connection. @default 262_144 */
  volatileBufferedBytes?: number;
  /** Longest room id. @default 128 */
  maxRoomIdLength?: number;
  /** Longest user id. @default 256 */
  maxUserIdLength?: number;
  /** Heartbeat: ping connections that support it; one missed pong terminates. 0 disables. @default 30_000 */
  pingIntervalMs?: number;
  /**
   * How often connections are checked for bytes piling up between broadcasts (a client flooding
   * pings it never reads the pongs of): over `maxBufferedBytes` it is closed with 1013. 0 disables.
   * @default 1_000
   */
  slowConsumerCheckMs?: number;
  /**
   * Longest stretch a fan-out writes before it yields to the event loop and goes on in the next
   * turn (a broadcast to 10,000 connections takes about 100 ms of writes); its first slice
   * reaches at least 1,024 connections. Broadcasts made meanwhile wait behind it, so each connection still
   * gets them in call order. 0: never yield.
   * @default 10
   */
  fanOutSliceMs?: number;
  /** Time a connection bcast closes gets to finish its close handshake before it is terminated. @default 1_000 */
  closeTimeoutMs?: number;
  /** @deprecated the old name of `closeTimeoutMs` */
  closeGraceMs?: number;
  /** Retry and circuit-breaker settings; the `backplane` scope guards publishes. */
  reliability?: ReliabilityOptions;
  /** Propagation to other nodes. @default an in-process LocalBackplane */
  backplane?: Backplane;
  /**
   * Shared secret of the cluster: envelopes are signed (HMAC-SHA256) on publish, and envelopes
   * without a valid signature are dropped and counted (`bcast.backplane.dropped{bcast.reason=signature}`).
   * @default undefined (envelopes are not signed)
   */
  signingKey?: string | Uint8Array;
  /**
   * Put room names on spans (`messaging.destination.name`). Off by default: room names such as
   * `alice:inbox` often carry user ids, and bcast records none unless the app opts in.
   * @default false
   */
  traceRoomNames?: boolean;
  tracerProvider?: TracerProvider;
  meterProvider?: MeterProvider;
  classifier?: ErrorClassifier;
  /** Where warnings go. @default console */
  logger?: Logger;
  /**
   * Rooms that keep a history (the last `maxMessages` messages of the last `ttlMs`): their messages
   * carry a stream position, and a client that joins with `since` gets what it missed, then live
   * messages, or `recovered: false` (docs/PROTOCOL.md). @default no room keeps a history
   */
  history?: HistoryOptions;
  /** Presence across processes (`presence(room)`) and opt-in join/leave events to room members. */
  presence?: PresenceOptions;
  /** What happens when a connection's credentials expire (`expiresAt` from `authenticate`, or `setExpiry`). */
  authExpiry?: AuthExpiryOptions;
  /** Called after a connection is registered / unregistered. A throw is logged and ignored. */
  onConnect?: (connection: ConnectionEntry) => void;
  onDisconnect?: (connection: ConnectionEntry, code: number, reason: string) => void;
}

export interface AuthExpiryOptions {
  /** Time after `expiresAt` before the connection is closed. @default 0 */
  graceMs?: number;
  /** Close code of an expired or revoked connection: 1008 or an application code 4000-4999. @default 1008 */
  closeCode?: number;
  /**
   * Called when a connection's credentials expire (after the grace period): return a new expiry
   * (ms since the epoch, or a Date) to keep the connection open without a reconnect, or false to
   * close it. A throw, or no answer within 5 s, closes it.
   */
  refresh?: (connection: ConnectionEntry) => number | Date | false | undefined | Promise<number | Date | false | undefined>;
}

export type Log = (level: 'warn' | 'error', message: string, error?: unknown) => void;

/** Every option checked and defaulted once, at construction. */
export interface ResolvedOptions {
  readonly limits: BroadcastLimits;
  readonly pingIntervalMs: number;
  readonly slowConsumerCheckMs: number;
  readonly fanOutSliceMs: number;
  readonly closeTimeoutMs: number;
  readonly inbound: ResolvedInbound;
  readonly hooks: InboundOptions & Pick<BroadcasterOptions, 'onConnect' | 'onDisconnect'>;
  readonly signingKey: Uint8Array | undefined;
  readonly traceRoomNames: boolean;
  readonly authExpiry: { readonly graceMs: number; readonly closeCode: number; readonly refresh: AuthExpiryOptions['refresh'] };
  readonly log: Log;
}

/** Name of the reliability scope that guards backplane publishes. */
export const BACKPLANE_SCOPE = 'backplane';

/**
 * The backplane scope's defaults: a short timeout and quick retries, since a caller is awaiting the
 * broadcast, and a circuit that tries again 5 s after it opened (the liveness probe drives the trial).
 */
export const backplaneScopeDefaults = {
  timeoutMs: 250,
  retry: { maxRetries: 2, baseDelayMs: 50, maxDelayMs: 500, jitter: false },
  circuitBreaker: { failureThreshold: 5, recoveryTimeoutMs: 5_000 },
} as const;

export function resolveOptions(options: BroadcasterOptions): ResolvedOptions {
  const logger = options.logger ?? console;
  const log: Log = (level, message, error) => {
    try {
      if (error === undefined) logger[level](`[bcast] ${message}`);
      else logger[level](`[bcast] ${message}:`, error instanceof Error ? error.message : error);
    } catch {
      // logging never breaks anything
    }
  };
  const key = options.signingKey;
  if (key !== undefined && !(typeof key === 'string' ? key.length > 0 : key instanceof Uint8Array && key.byteLength > 0)) {
    throw new BcastError(ErrorCode.InvalidOption, 'signingKey must be a non-empty string or Uint8Array', { details: { option: 'signingKey' } });
  }
  return {
    limits: {
      maxMessageBytes: positive('maxMessageBytes', options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES),
      maxBufferedBytes: positive('maxBufferedBytes', options.maxBufferedBytes ?? 1024 * 1024),
      volatileBufferedBytes: positive('volatileBufferedBytes', options.volatileBufferedBytes ?? 256 * 1024),
      maxRoomIdLength: positive('maxRoomIdLength', options.maxRoomIdLength ?? 128),
      maxUserIdLength: positive('maxUserIdLength', options.maxUserIdLength ?? 256),
    },
    pingIntervalMs: positive('pingIntervalMs', options.pingIntervalMs ?? 30_000, true),
    slowConsumerCheckMs: positive('slowConsumerCheckMs', options.slowConsumerCheckMs ?? 1_000, true),
    fanOutSliceMs: positive('fanOutSliceMs', options.fanOutSliceMs ?? 10, true),
    closeTimeoutMs: positive('closeTimeoutMs', options.closeTimeoutMs ?? options.closeGraceMs ?? 1_000, true),
    inbound: resolveInbound(options),
    hooks: options,
    signingKey: key === undefined ? undefined : typeof key === 'string' ? Buffer.from(key, 'utf8') : key,
    traceRoomNames: options.traceRoomNames === true,
    authExpiry: {
      graceMs: positive('authExpiry.graceMs', options.authExpiry?.graceMs ?? 0, true),
      closeCode: closeCodeOption(options.authExpiry?.closeCode),
      refresh: options.authExpiry?.refresh,
    },
    log,
  };
}

/** The reliability options with the backplane scope's defaults and predicates under the caller's overrides. */
export function withBackplaneScope(top: ReliabilityOptions, predicates: Pick<ScopeOptions, 'retryWhen' | 'failureWhen'>): ReliabilityOptions {
  const scope = top.scopes?.[BACKPLANE_SCOPE];
  const merged: ScopeOptions = {
    timeoutMs: scope && 'timeoutMs' in scope ? scope.timeoutMs : (top.timeoutMs ?? backplaneScopeDefaults.timeoutMs),
    retry: { ...backplaneScopeDefaults.retry, ...top.retry, ...scope?.retry },
    circuitBreaker: { ...backplaneScopeDefaults.circuitBreaker, ...top.circuitBreaker, ...scope?.circuitBreaker },
    retryWhen: scope?.retryWhen ?? predicates.retryWhen,
    failureWhen: scope?.failureWhen ?? predicates.failureWhen,
  };
  return { ...top, scopes: { ...top.scopes, [BACKPLANE_SCOPE]: merged } };
}

function closeCodeOption(code: number | undefined): number {
  if (code === undefined) return 1008;
  if (code === 1008 || (Number.isInteger(code) && code >= 4000 && code <= 4999)) return code;
  throw new BcastError(ErrorCode.InvalidOption, `authExpiry.closeCode must be 1008 or 4000-4999, got ${String(code)}`, { details: { option: 'authExpiry.closeCode', value: code } });
}

export function positive(name: string, value: number, allowZero = false): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
    throw new BcastError(ErrorCode.InvalidOption, `${name} must be a ${allowZero ? 'non-negative' : 'positive'} number, got ${String(value)}`, {
      details: { option: name, value },
    });
  }
  return value;
}

/** What `shutdown()` did. */
export interface ShutdownReport {
  /** Broadcasts that were in flight when it started; each finished (delivered, failed or dropped, and counted). */
  readonly broadcastsFinished: number;
  /** Connections that closed within the drain time. */
  readonly closed: number;
  /** Connections terminated after it. */
  readonly terminated: number;
  readonly durationMs: number;
}

/** Options of one broadcast call. */
export interface SendOptions {
  /** Connection ids that must not receive it. */
  except?: readonly string[];
  /** May be dropped for connections that are behind. @default false */
  volatile?: boolean;
  /** Do not propagate to other nodes. @default false */
  localOnly?: boolean;
  /** In a room with history: not recorded, sent as it is (no position), like a typing indicator. @default false */
  ephemeral?: boolean;
}
