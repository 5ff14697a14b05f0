import { BcastError, ErrorCode, type Broadcaster, type BroadcasterOptions, type Logger, type ReliabilityOptions } from '@bcast/core';

/** The seed's reliability config (snake_case; delays and timeouts in seconds). */
export interface LegacyReliabilityConfig {
  circuit_breaker?: {
    /** Consecutive failures that open the circuit. @default 5 */
    failure_threshold?: number;
    /** Seconds the circuit stays open before a trial call. @default 30 */
    recovery_timeout?: number;
  };
  retry?: {
    /** @default 3 */
    max_retries?: number;
    /** Seconds before the first retry; doubles each time. @default 1 */
    base_delay?: number;
    /** Upper bound of a delay, in seconds. @default 10 */
    max_delay?: number;
  };
}

/** How sockets of a socket.io Server handed to `connect()` receive broadcasts. */
export interface SocketIoOptions {
  /** Event messages are emitted on (and client messages read from). @default "message" */
  event?: string;
  /**
   * `"value"`: objects arrive as objects, strings as strings, as with `@bcast/socket.io`'s
   * `attachToServer`. `"json"`: objects arrive as their JSON text, as with
   * `socket.send(JSON.stringify(message))`. @default "value"
   */
  payload?: 'value' | 'json';
}

/**
 * Optional last argument of `new ConnectionManager(options)` and
 * `new BroadcastManager(connections, rooms, options)`: the core's BroadcasterOptions (reliability,
 * tracerProvider / meterProvider, backplane, limits...), or an existing `broadcaster`, plus a few
 * compat settings. `reliability` (or the top level) also takes the seed's snake_case shape.
 */
export interface CompatOptions extends Omit<BroadcasterOptions, 'reliability'> {
  /** Run on this Broadcaster instead of creating one (then give no other Broadcaster option). */
  broadcaster?: Broadcaster;
  reliability?: ReliabilityOptions | LegacyReliabilityConfig;
  /** The seed's reliability shape at the top level (same as `reliability: { circuit_breaker }`). */
  circuit_breaker?: LegacyReliabilityConfig['circuit_breaker'];
  /** The seed's reliability shape at the top level (same as `reliability: { retry }`). */
  retry?: LegacyReliabilityConfig['retry'];
  socketIo?: SocketIoOptions;
  /**
   * What a broadcast refused before anything was sent (invalid message, room or user id, a disposed
   * broadcaster) does. `"result"`: resolves as usual with nothing delivered, `failed` equal to
   * `totalConnections` and `error` set to the BcastError code (`false` for broadcastToUser), and
   * logs it. `"reject"`: rejects with the BcastError. @default "result"
   */
  errorMode?: 'result' | 'reject';
}

/** Options after validation. Settings left out stay undefined so that the two constructors can merge. */
export interface ResolvedOptions {
  readonly broadcaster: Broadcaster | undefined;
  /** Options for a Broadcaster compat creates (besides `logger`); undefined when none were given. */
  readonly broadcasterOptions: BroadcasterOptions | undefined;
  readonly socketIo: Required<SocketIoOptions> | undefined;
  readonly errorMode: 'result' | 'reject' | undefined;
  readonly logger: Logger | undefined;
}

const COMPAT_KEYS = new Set(['broadcaster', 'socketIo', 'errorMode', 'logger', 'circuit_breaker', 'retry', 'reliability']);
const RESERVED_EVENTS = new Set(['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener']);
const LEGACY_KEYS = { circuit_breaker: ['failure_threshold', 'recovery_timeout'], retry: ['max_retries', 'base_delay', 'max_delay'] } as const;
const CORE_RELIABILITY_KEYS = ['circuitBreaker', 'timeoutMs', 'scopes', 'classifier'];
const CORE_RETRY_KEYS = ['maxRetries', 'baseDelayMs', 'maxDelayMs', 'jitter'];

function invalid(option: string, message: string, value?: unknown): BcastError {
  return new BcastError(ErrorCode.InvalidOption, `${option} ${message}`, { details: { option, value } });
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/** Validates the options of a compat constructor; throws BCAST_INVALID_OPTION for nonsense. */
export function resolveOptions(options: unknown, where: string): ResolvedOptions {
  if (options === undefined || options === null) {
    return { broadcaster: undefined, broadcasterOptions: undefined, socketIo: undefined, errorMode: undefined, logger: undefined };
  }
  if (!isObject(options)) throw invalid(`${where} options`, `must be an object, got ${typeof options}`, options);
  const o = options as CompatOptions;
  const logger = o.logger;
  if (logger !== undefined && (!isObject(logger) || typeof logger.warn !== 'function' || typeof logger.error !== 'function')) {
    throw invalid('logger', 'must have warn() and error() methods', logger);
  }
  const broadcaster = o.broadcaster;
  if (broadcaster !== undefined && !isBroadcaster(broadcaster)) {
    throw invalid('broadcaster', 'must be a Broadcaster from @bcast/core', broadcaster);
  }
  const errorMode = o.errorMode;
  if (errorMode !== undefined && errorMode !== 'result' && errorMode !== 'reject') {
    throw invalid('errorMode', `must be "result" or "reject", got ${JSON.stringify(errorMode)}`, errorMode);
  }
  const socketIo = o.socketIo === undefined ? undefined : resolveSocketIo(o.socketIo);
  const reliability = resolveReliability(o, logger ?? console);

  const rest: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(o)) if (!COMPAT_KEYS.has(key) && value !== undefined) rest[key] = value;
  if (reliability !== undefined) rest.reliability = reliability;
  const given = Object.keys(rest);
  if (broadcaster !== undefined && given.length > 0) {
    throw invalid(
      'broadcaster',
      `comes with its own configuration; ${given.join(', ')} would be ignored. Configure the Broadcaster itself, or leave \`broadcaster\` out`,
      given,
    );
  }
  const broadcasterOptions = given.length > 0 ? (rest as BroadcasterOptions) : undefined;
  return { broadcaster, broadcasterOptions, socketIo, errorMode, logger };
}

/**
 * Defaults of a Broadcaster compat creates: legacy apps read their sockets themselves, so the core's
 * client protocol (join / leave replies, rate limits) stays off unless an inbound option is given.
 */
export function withLegacyDefaults(options: BroadcasterOptions = {}): BroadcasterOptions {
  const inbound = options.protocol !== undefined || options.onMessage !== undefined || options.authorizeJoin !== undefined || options.allowClientJoins !== undefined;
  return inbound ? options : { ...options, protocol: false, onMessage: ignore };
}

function ignore(): void {}

function isBroadcaster(value: unknown): value is Broadcaster {
  if (!isObject(value)) return false;
  const b = value as unknown as Broadcaster;
  return typeof b.register === 'function' && typeof b.execute === 'function' && isObject(b.connections) && isObject(b.rooms);
}

function resolveSocketIo(value: unknown): Required<SocketIoOptions> {
  if (!isObject(value)) throw invalid('socketIo', 'must be an object', value);
  const { event = 'message', payload = 'value' } = value as SocketIoOptions;
  if (typeof event !== 'string' || event.length === 0 || RESERVED_EVENTS.has(event)) {
    throw invalid('socketIo.event', `must be a non-empty, non-reserved socket.io event name, got ${JSON.stringify(event)}`, event);
  }
  if (payload !== 'value' && payload !== 'json') {
    throw invalid('socketIo.payload', `must be "value" or "json", got ${JSON.stringify(payload)}`, payload);
  }
  return { event, payload };
}

/** The core's ReliabilityOptions, from either shape; undefined when none was given. */
function resolveReliability(o: CompatOptions, logger: Logger): ReliabilityOptions | undefined {
  const top = o.circuit_breaker !== undefined || o.retry !== undefined;
  const nested = o.reliability;
  if (nested !== undefined && !isObject(nested)) throw invalid('reliability', 'must be an object', nested);
  if (top && nested !== undefined) {
    throw invalid('reliability', 'is given twice: as `reliability` and as top-level circuit_breaker / retry; use one', undefined);
  }
  if (top) return fromLegacy({ circuit_breaker: o.circuit_breaker, retry: o.retry } as LegacyReliabilityConfig, '', logger);
  if (nested === undefined) return undefined;
  const retry = isObject(nested.retry) ? Object.keys(nested.retry) : [];
  const legacy = 'circuit_breaker' in nested || retry.some((k) => (LEGACY_KEYS.retry as readonly string[]).includes(k));
  if (!legacy) return nested as ReliabilityOptions;
  const core = [...Object.keys(nested).filter((k) => CORE_RELIABILITY_KEYS.includes(k)), ...retry.filter((k) => CORE_RETRY_KEYS.includes(k)).map((k) => `retry.${k}`)];
  if (core.length > 0) {
    throw invalid('reliability', `mixes the seed's snake_case shape with the core's (${core.join(', ')}); use one`, core);
  }
  return fromLegacy(nested as LegacyReliabilityConfig, 'reliability.', logger);
}

/** Maps the seed's shape (seconds) to the core's (milliseconds), validating each field. */
function fromLegacy(config: LegacyReliabilityConfig, prefix: string, logger: Logger): ReliabilityOptions {
  const out: { circuitBreaker?: { failureThreshold?: number; recoveryTimeoutMs?: number }; retry?: { maxRetries?: number; baseDelayMs?: number; maxDelayMs?: number } } = {};
  for (const section of ['circuit_breaker', 'retry'] as const) {
    const value = (config as Record<string, unknown>)[section];
    if (value === undefined) continue;
    if (!isObject(value)) throw invalid(`${prefix}${section}`, 'must be an object', value);
    const unknownKeys = Object.keys(value).filter((k) => !(LEGACY_KEYS[section] as readonly string[]).includes(k));
    if (unknownKeys.length > 0) {
      warn(logger, `${prefix}${section}: ignoring unknown setting(s) ${unknownKeys.join(', ')}; known: ${LEGACY_KEYS[section].join(', ')}`);
    }
  }
  for (const key of Object.keys(config)) {
    if (key !== 'circuit_breaker' && key !== 'retry') warn(logger, `${prefix}${key}: ignoring unknown reliability setting; known: circuit_breaker, retry`);
  }
  const cb = config.circuit_breaker;
  if (cb) {
    const failureThreshold = count(`${prefix}circuit_breaker.failure_threshold`, cb.failure_threshold, 1);
    const recoveryTimeoutMs = seconds(`${prefix}circuit_breaker.recovery_timeout`, cb.recovery_timeout);
    out.circuitBreaker = {
      ...(failureThreshold === undefined ? {} : { failureThreshold }),
      ...(recoveryTimeoutMs === undefined ? {} : { recoveryTimeoutMs }),
    };
  }
  const r = config.retry;
  if (r) {
    const maxRetries = count(`${prefix}retry.max_retries`, r.max_retries, 0);
    const baseDelayMs = seconds(`${prefix}retry.base_delay`, r.base_delay);
    const maxDelayMs = seconds(`${prefix}retry.max_delay`, r.max_delay);
    if ((maxDelayMs ?? 10_000) < (baseDelayMs ?? 1_000)) {
      throw invalid(`${prefix}retry.max_delay`, `(${String(r.max_delay ?? 10)} s) must not be smaller than retry.base_delay (${String(r.base_delay ?? 1)} s)`, r.max_delay);
    }
    out.retry = {
      ...(maxRetries === undefined ? {} : { maxRetries }),
      ...(baseDelayMs === undefined ? {} : { baseDelayMs }),
      ...(maxDelayMs === undefined ? {} : { maxDelayMs }),
    };
  }
  return out;
}

function count(option: string, value: unknown, min: number): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw invalid(option, `must be a whole number >= ${min}, got ${JSON.stringify(value) ?? String(value)}`, value);
  }
  return value;
}

function seconds(option: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw invalid(option, `must be a number of seconds >= 0, got ${JSON.stringify(value) ?? String(value)}`, value);
  }
  return Math.round(value * 1000);
}

export function warn(logger: Logger, message: string, error?: unknown): void {
  try {
    if (error === undefined) logger.warn(`[bcast/compat] ${message}`);
    else logger.warn(`[bcast/compat] ${message}:`, error instanceof Error ? error.message : error);
  } catch {
    // logging never breaks a legacy call
  }
}
