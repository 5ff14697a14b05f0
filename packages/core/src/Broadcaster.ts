import { SpanKind, context as otelContext, propagation, trace, type MeterProvider, type TracerProvider } from '@opentelemetry/api';
import { LocalBackplane, type Backplane, type BackplaneEnvelope, type BackplaneHealth } from './backplane/Backplane.js';
import { envelopeProblem, fromEnvelope, toEnvelope } from './backplane/envelope.js';
import type { Connection } from './connection/Connection.js';
import { DEFAULT_MAX_MESSAGE_BYTES, encodeMessage, type EncodedMessage } from './connection/EncodedMessage.js';
import { BcastError, toBcastError } from './errors/BcastError.js';
import { ErrorClassifier } from './errors/classify.js';
import { CloseCode, CloseReason, ErrorCode } from './errors/codes.js';
import { BroadcastExecutor, type BroadcastJob, type BroadcastLimits, type RemovalReason } from './execution/BroadcastExecutor.js';
import { ExecutionEngine, type ExecutionResult } from './execution/ExecutionEngine.js';
import type { BackplaneStatus, BroadcastContext, BroadcastResult } from './execution/types.js';
import { validateRoomId } from './execution/validate.js';
import { ExecutionMonitor, type MonitorStats } from './monitor/ExecutionMonitor.js';
import { InboundState, handleInbound, resolveInbound, type InboundHost, type InboundOptions, type ResolvedInbound } from './protocol/InboundProtocol.js';
import type { ProtocolErrorCode, ServerReply } from './protocol/messages.js';
import { ConnectionRegistry, type ConnectionEntry } from './registry/ConnectionRegistry.js';
import { RoomRegistry } from './registry/RoomRegistry.js';
import { ReliabilityManager, type ReliabilityOptions, type ScopeOptions, type ScopeState } from './reliability/ReliabilityManager.js';

export type Logger = Pick<Console, 'warn' | 'error'>;

export interface BroadcasterOptions extends InboundOptions {
  /** Largest encoded message accepted from a caller. @default 1_048_576 (1 MiB) */
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
  /** Time a closing connection gets before it is terminated. @default 1_000 */
  closeGraceMs?: number;
  /** Retry and circuit-breaker settings; the `backplane` scope guards publishes. */
  reliability?: ReliabilityOptions;
  /** Propagation to other nodes. @default an in-process LocalBackplane */
  backplane?: Backplane;
  tracerProvider?: TracerProvider;
  meterProvider?: MeterProvider;
  classifier?: ErrorClassifier;
  /** Where warnings go. @default console */
  logger?: Logger;
  /** Called after a connection is registered / unregistered. A throw is logged and ignored. */
  onConnect?: (connection: ConnectionEntry) => void;
  onDisconnect?: (connection: ConnectionEntry, code: number, reason: string) => void;
}

/** What an adapter gets back from {@link Broadcaster.register}: report socket events here. */
export interface ConnectionHandle {
  readonly entry: ConnectionEntry;
  /** An inbound frame. */
  message(data: string | Buffer, isBinary?: boolean): Promise<void>;
  /** A transport-level pong (or any sign of life). */
  pong(): void;
  /** The socket closed (for any reason). Idempotent. */
  closed(code?: number, reason?: string): void;
}

/** Options of one broadcast call. */
export interface SendOptions {
  /** Connection ids that must not receive it. */
  except?: readonly string[];
  /** May be dropped for connections that are behind. @default false */
  volatile?: boolean;
  /** Do not propagate to other nodes. @default false */
  localOnly?: boolean;
}

export type HealthStatus = 'healthy' | 'degraded' | 'unhealthy';

export interface HealthReport {
  readonly status: HealthStatus;
  readonly reasons: readonly string[];
  readonly timestamp: string;
  readonly reliability: { readonly circuits: Readonly<Record<string, ScopeState>> };
  readonly monitoring: {
    readonly successRate: number;
    readonly errorRate: number;
    readonly latencyMs: { readonly p50: number; readonly p95: number; readonly p99: number };
  };
  readonly system: {
    readonly connections: number;
    readonly users: number;
    readonly rooms: number;
    readonly uptimeMs: number;
    readonly memory: { readonly rssBytes: number; readonly heapUsedBytes: number };
  };
  readonly backplane: BackplaneHealth & { readonly nodeId: string };
}

export interface BroadcasterStats {
  readonly nodeId: string;
  readonly connections: number;
  readonly users: number;
  readonly rooms: number;
  readonly roomMemberships: number;
  readonly broadcasts: number;
  readonly deliveries: number;
  readonly monitor: MonitorStats;
  readonly reliability: Readonly<Record<string, ScopeState>>;
  readonly uptimeMs: number;
}

const BACKPLANE_SCOPE = 'backplane';
const backplaneDefaults = { timeoutMs: 250, retry: { maxRetries: 2, baseDelayMs: 50, maxDelayMs: 500 } } as const;

/**
 * The core API: registries, fan-out, reliability, telemetry and the inbound protocol in one object.
 * Adapters `register()` connections and report their events to the returned handle; callers
 * broadcast with `toAll` / `toUser` / `toRoom` / `toConnections` / `broadcast`.
 */
export class Broadcaster {
  readonly connections = new ConnectionRegistry();
  readonly rooms = new RoomRegistry();
  readonly monitor: ExecutionMonitor;
  readonly reliability: ReliabilityManager;
  readonly classifier: ErrorClassifier;
  readonly engine: ExecutionEngine;
  readonly backplane: Backplane;
  readonly limits: BroadcastLimits;
  readonly #executor: BroadcastExecutor;
  readonly #options: BroadcasterOptions;
  readonly #inbound: ResolvedInbound;
  readonly #inboundStates = new WeakMap<ConnectionEntry, InboundState>();
  /** Pending forced terminations: timer -> connection. */
  readonly #timers = new Map<NodeJS.Timeout, Connection>();
  readonly #logger: Logger;
  readonly #startedAt = Date.now();
  readonly #closeGraceMs: number;
  readonly #inboundHost: InboundHost;
  readonly #handleHost: HandleHost;
  #heartbeat: NodeJS.Timeout | undefined;
  #unsubscribe: (() => void) | undefined;
  #subscribed: Promise<void>;
  #disposed = false;

  constructor(options: BroadcasterOptions = {}) {
    this.#options = options;
    this.#logger = options.logger ?? console;
    this.limits = {
      maxMessageBytes: positive('maxMessageBytes', options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES),
      maxBufferedBytes: positive('maxBufferedBytes', options.maxBufferedBytes ?? 1024 * 1024),
      volatileBufferedBytes: positive('volatileBufferedBytes', options.volatileBufferedBytes ?? 256 * 1024),
      maxRoomIdLength: positive('maxRoomIdLength', options.maxRoomIdLength ?? 128),
      maxUserIdLength: positive('maxUserIdLength', options.maxUserIdLength ?? 256),
    };
    this.#closeGraceMs = positive('closeGraceMs', options.closeGraceMs ?? 1_000, true);
    this.#inbound = resolveInbound(options);
    this.#inboundHost = {
      options,
      resolved: this.#inbound,
      reply: (entry, reply) => this.#reply(entry, reply),
      join: (entry, room) => {
        this.rooms.join(entry.id, room);
      },
      leave: (entry, room) => this.rooms.leave(entry.id, room),
      roomCount: (entry) => this.rooms.roomsOf(entry.id).size,
      isMember: (entry, room) => this.rooms.roomsOf(entry.id).has(room),
      reject: (entry, code) => this.#rejectInbound(entry, code),
      log: (level, message, error) => this.#log(level, message, error),
    };
    this.#handleHost = {
      inbound: this.#inboundHost,
      states: this.#inboundStates,
      burst: this.#inbound.rateLimitBurst,
      closed: (entry, code, reason) => this.#unregister(entry, code, reason),
    };
    this.classifier = options.classifier ?? new ErrorClassifier();
    const reliability = options.reliability ?? {};
    this.reliability = new ReliabilityManager({
      ...reliability,
      classifier: reliability.classifier ?? this.classifier,
      scopes: { ...reliability.scopes, [BACKPLANE_SCOPE]: mergeScope(backplaneDefaults, reliability, reliability.scopes?.[BACKPLANE_SCOPE]) },
    });
    this.monitor = new ExecutionMonitor({
      ...(options.tracerProvider ? { tracerProvider: options.tracerProvider } : {}),
      ...(options.meterProvider ? { meterProvider: options.meterProvider } : {}),
    });
    this.monitor.observeCircuits(() => this.reliability.getState());
    this.reliability.onEvent((event) => {
      const span = trace.getActiveSpan();
      if (event.type === 'retry') {
        span?.addEvent('bcast.retry', { 'bcast.scope': event.scope, 'bcast.attempt': event.attempt, 'bcast.retry.delay_ms': event.delayMs });
      } else if (event.type === 'circuit') {
        span?.addEvent('bcast.circuit.state_change', { 'bcast.scope': event.scope, 'bcast.circuit.from': event.from, 'bcast.circuit.to': event.to });
        this.#log('warn', `circuit "${event.scope}" ${event.from} -> ${event.to}`);
      }
    });
    this.engine = new ExecutionEngine({ monitor: this.monitor, reliability: this.reliability, classifier: this.classifier });
    this.backplane = options.backplane ?? new LocalBackplane();
    this.#executor = new BroadcastExecutor({
      connections: this.connections,
      rooms: this.rooms,
      monitor: this.monitor,
      classifier: this.classifier,
      limits: this.limits,
      log: (level, message, error) => this.#log(level, message, error),
      removeConnection: (entry, code, reason, metricReason, terminateAfterMs) => this.#remove(entry, code, reason, metricReason, terminateAfterMs),
      publish: (job, message) => this.#publish(job, message),
    });
    this.#subscribed = this.#subscribe();
    const pingIntervalMs = positive('pingIntervalMs', options.pingIntervalMs ?? 30_000, true);
    if (pingIntervalMs > 0) {
      this.#heartbeat = setInterval(() => this.#tick(), pingIntervalMs);
      this.#heartbeat.unref();
    }
  }

  get nodeId(): string {
    return this.backplane.nodeId;
  }

  get isDisposed(): boolean {
    return this.#disposed;
  }

  /** Resolves once the backplane subscription is in place (or failed, which is logged). */
  ready(): Promise<void> {
    return this.#subscribed;
  }

  // ---- connections -------------------------------------------------------------------------

  /** Registers a live connection. The adapter reports the socket's events to the handle. */
  register(connection: Connection): ConnectionHandle {
    if (this.#disposed) {
      connection.close(CloseCode.GoingAway, CloseReason.ServerShutdown);
      throw new BcastError(ErrorCode.Shutdown, 'the broadcaster is disposed');
    }
    // A second registration under the same id replaces the first through the normal path
    // (rooms left, gauge decremented), so nothing drifts.
    const previous = this.connections.get(connection.id);
    if (previous) this.#unregister(previous, CloseCode.GoingAway, 'replaced');
    const entry = this.connections.add(connection);
    this.monitor.connectionOpened();
    this.#hook('onConnect', () => this.#options.onConnect?.(entry));
    return new Handle(entry, this.#handleHost);
  }

  /** Closes a connection with a code and reason and unregisters it now. False when unknown. */
  disconnect(connectionId: string, code: number = CloseCode.Normal, reason = ''): boolean {
    const entry = this.connections.get(connectionId);
    if (!entry) return false;
    this.#remove(entry, code, reason, undefined, this.#closeGraceMs);
    return true;
  }

  // ---- rooms -------------------------------------------------------------------------------

  /** Adds a registered connection to a room. False when the connection is unknown or already in it. */
  join(connectionId: string, room: string): boolean {
    validateRoomId(room, this.limits);
    if (!this.connections.has(connectionId)) return false;
    return this.rooms.join(connectionId, room);
  }

  leave(connectionId: string, room: string): boolean {
    return this.rooms.leave(connectionId, room);
  }

  /** Creates an empty room that stays until `deleteRoom` (rooms made by `join` go with their last member). False when it exists. */
  createRoom(room: string): boolean {
    validateRoomId(room, this.limits);
    return this.rooms.create(room);
  }

  /** Deletes a room and every membership in it; false when it did not exist. */
  deleteRoom(room: string): boolean {
    return this.rooms.delete(room);
  }

  /** Removes a connection from every room; returns the rooms it left. */
  leaveAll(connectionId: string): string[] {
    return this.rooms.leaveAll(connectionId);
  }

  // ---- broadcasting ------------------------------------------------------------------------

  toAll(message: unknown, options: SendOptions = {}): Promise<BroadcastResult> {
    return this.broadcast({ operation: 'all', message, ...options });
  }

  toUser(userId: string, message: unknown, options: SendOptions = {}): Promise<BroadcastResult> {
    return this.broadcast({ operation: 'user', userId, message, ...options });
  }

  toRoom(room: string, message: unknown, options: SendOptions = {}): Promise<BroadcastResult> {
    return this.broadcast({ operation: 'room', room, message, ...options });
  }

  toConnections(connectionIds: readonly string[], message: unknown, options: SendOptions = {}): Promise<BroadcastResult> {
    return this.broadcast({ operation: 'connections', connectionIds, message, ...options });
  }

  /** One message to one connection, wherever it is connected: validated and limited like any broadcast. */
  sendTo(connectionId: string, message: unknown, options: SendOptions = {}): Promise<BroadcastResult> {
    return this.broadcast({ operation: 'connections', connectionIds: [connectionId], message, ...options });
  }

  /** Runs a broadcast; rejects with a BcastError when the input is invalid (nothing was sent). */
  async broadcast(context: BroadcastContext): Promise<BroadcastResult> {
    const outcome = await this.execute(context);
    if (outcome.result) return outcome.result;
    throw outcome.error ?? new BcastError(ErrorCode.Internal, 'broadcast produced no result');
  }

  /** Runs a broadcast through the engine and reports everything as an ExecutionResult. Never rejects. */
  execute(context: BroadcastContext): Promise<ExecutionResult<BroadcastResult>> {
    if (this.#disposed) {
      const error = new BcastError(ErrorCode.Shutdown, 'the broadcaster is disposed; nothing new is accepted');
      return Promise.resolve({ status: 'rejected', error, durationMs: 0, attempts: 0 });
    }
    return this.engine.execute(this.#executor, { request: context, encoded: undefined });
  }

  /** Encodes a message once for sending outside a broadcast (e.g. a reply to one connection). */
  encode(message: unknown): EncodedMessage {
    return encodeMessage(message, { maxBytes: this.limits.maxMessageBytes });
  }

  // ---- stats and health --------------------------------------------------------------------

  getStats(): BroadcasterStats {
    const monitor = this.monitor.getStats();
    return {
      nodeId: this.nodeId,
      connections: this.connections.size,
      users: this.connections.userCount,
      rooms: this.rooms.size,
      roomMemberships: this.rooms.membershipCount,
      broadcasts: monitor.totals.count,
      deliveries: monitor.deliveries,
      monitor,
      reliability: this.reliability.getState(),
      uptimeMs: Date.now() - this.#startedAt,
    };
  }

  getHealthStatus(): HealthReport {
    const reasons: string[] = [];
    let status: HealthStatus = 'healthy';
    const worsen = (to: HealthStatus, reason: string): void => {
      reasons.push(reason);
      if (to === 'unhealthy' || status === 'healthy') status = to;
    };
    if (this.#disposed) worsen('unhealthy', 'broadcaster is disposed');
    const circuits = this.reliability.getState();
    for (const [scope, s] of Object.entries(circuits)) {
      if (s.state !== 'closed') worsen('degraded', `circuit "${scope}" is ${s.state}${s.lastError ? ` (last error: ${s.lastError})` : ''}`);
    }
    const bp = this.backplane.health?.() ?? { status: 'healthy' as const, reasons: [] };
    for (const r of bp.reasons) worsen(bp.status === 'healthy' ? 'healthy' : 'degraded', `backplane: ${r}`);
    const stats = this.monitor.getStats();
    if (stats.totals.count >= 20 && stats.totals.errorRate > 0.5) worsen('degraded', `error rate ${stats.totals.errorRate}`);
    const latency = mergeLatency(stats);
    const mem = process.memoryUsage();
    return {
      status,
      reasons,
      timestamp: new Date().toISOString(),
      reliability: { circuits },
      monitoring: { successRate: stats.totals.successRate, errorRate: stats.totals.errorRate, latencyMs: latency },
      system: {
        connections: this.connections.size,
        users: this.connections.userCount,
        rooms: this.rooms.size,
        uptimeMs: Date.now() - this.#startedAt,
        memory: { rssBytes: mem.rss, heapUsedBytes: mem.heapUsed },
      },
      backplane: { ...bp, nodeId: this.nodeId },
    };
  }

  // ---- shutdown ----------------------------------------------------------------------------

  /**
   * Closes every connection with 1001, stops the heartbeat and timers, unsubscribes from the
   * backplane (closing it when `closeBackplane`). Later broadcasts reject with BCAST_SHUTDOWN.
   */
  async dispose(options: { code?: number; reason?: string; closeBackplane?: boolean } = {}): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    const code = options.code ?? CloseCode.GoingAway;
    const reason = options.reason ?? CloseReason.ServerShutdown;
    // Connections already closing (slow consumers...) are terminated now rather than forgotten.
    for (const [timer, conn] of this.#timers) {
      clearTimeout(timer);
      if (conn.isOpen || conn.bufferedBytes > 0) terminate(conn);
    }
    this.#timers.clear();
    // Close every connection; one that has not closed within the grace period is terminated
    // (the timers are unref'd: they never keep the process alive).
    for (const entry of [...this.connections.entries()]) this.#remove(entry, code, reason, 'shutdown', this.#closeGraceMs);
    try {
      await this.#subscribed;
      this.#unsubscribe?.();
      if (options.closeBackplane ?? this.#options.backplane === undefined) await this.backplane.close();
    } catch (error) {
      this.#log('warn', 'backplane did not close cleanly', error);
    }
    this.reliability.dispose();
  }

  // ---- internals ---------------------------------------------------------------------------

  #reply(entry: ConnectionEntry, reply: ServerReply): void {
    if (entry.isClosing || !entry.connection.isOpen) return;
    try {
      entry.connection.send(encodeMessage(reply));
    } catch (error) {
      this.#log('warn', `reply to connection ${entry.id} failed`, error);
    }
  }

  #rejectInbound(entry: ConnectionEntry, code: ProtocolErrorCode): boolean {
    this.monitor.recordInboundRejected(code);
    const state = this.#inboundStates.get(entry);
    if (!state) return false;
    const now = Date.now();
    if (now - state.windowStart > this.#inbound.abuseWindowMs) {
      state.windowStart = now;
      state.rejections = 0;
    }
    state.rejections += 1;
    if (state.rejections > this.#inbound.maxRejections) {
      this.#remove(entry, CloseCode.PolicyViolation, CloseReason.PolicyViolation, 'policy_violation', this.#closeGraceMs);
      return true;
    }
    return false;
  }

  #remove(entry: ConnectionEntry, code: number, reason: string, metricReason: RemovalReason | undefined, terminateAfterMs?: number): void {
    const wasClosing = entry.isClosing;
    entry.isClosing = true;
    if (metricReason !== undefined) this.monitor.recordDisconnect(code, metricReason);
    const conn = entry.connection;
    // Unregister first: a transport that reports the close synchronously from inside close()
    // (socket.io's disconnect) then finds nothing left to unregister, and our code and reason win.
    this.#unregister(entry, code, reason);
    if (!wasClosing) {
      try {
        conn.close(code, reason);
      } catch (error) {
        this.#log('warn', `closing connection ${entry.id} failed`, error);
      }
    }
    if (terminateAfterMs !== undefined) {
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        if (conn.isOpen || conn.bufferedBytes > 0) terminate(conn);
      }, terminateAfterMs);
      timer.unref();
      this.#timers.set(timer, conn);
    }
  }

  #unregister(entry: ConnectionEntry, code: number, reason: string): void {
    entry.isClosing = true;
    if (this.connections.get(entry.id) !== entry) return;
    this.connections.remove(entry.id);
    this.rooms.leaveAll(entry.id);
    this.monitor.connectionClosed();
    this.#hook('onDisconnect', () => this.#options.onDisconnect?.(entry, code, reason));
  }

  #tick(): void {
    for (const entry of this.connections.entries()) {
      const conn = entry.connection;
      if (!conn.ping || entry.isClosing) continue;
      if (entry.awaitingPong) {
        this.monitor.recordDisconnect(CloseCode.GoingAway, 'no_pong');
        entry.isClosing = true;
        terminate(conn);
        this.#unregister(entry, CloseCode.GoingAway, CloseReason.Unresponsive);
        continue;
      }
      entry.awaitingPong = true;
      try {
        conn.ping();
      } catch {
        // a failed ping is a dead connection; the next tick terminates it
      }
    }
  }

  async #publish(job: BroadcastJob, message: EncodedMessage): Promise<{ status: BackplaneStatus; error?: ErrorCode }> {
    if (this.backplane.isLocal) return { status: 'skipped' };
    const carrier: Record<string, string> = {};
    propagation.inject(otelContext.active(), carrier);
    const envelope = toEnvelope(job.request, message, this.nodeId, carrier);
    try {
      await this.reliability.execute(BACKPLANE_SCOPE, () => this.backplane.publish(envelope));
      this.monitor.recordBackplane('published');
      return { status: 'published' };
    } catch (error) {
      const err = toBcastError(error);
      const category = this.classifier.classify(error);
      this.monitor.recordError(category);
      this.monitor.recordBackplane('publish-error');
      this.monitor.recordDropped(category === 'circuit-open' ? 'circuit_open' : 'publish_error');
      return { status: 'failed', error: err.code === ErrorCode.Internal ? ErrorCode.BackplaneUnavailable : err.code };
    }
  }

  async #subscribe(): Promise<void> {
    if (this.backplane.isLocal) return;
    try {
      this.#unsubscribe = await this.backplane.subscribe((envelope) => this.#onEnvelope(envelope));
    } catch (error) {
      this.#log('error', 'backplane subscribe failed', error);
    }
  }

  #onEnvelope(envelope: BackplaneEnvelope): void {
    if (this.#disposed) return;
    const problem = envelopeProblem(envelope);
    if (problem !== undefined || envelope.nodeId === this.nodeId) {
      this.monitor.recordBackplane('discarded');
      return;
    }
    this.monitor.recordBackplane('received');
    const parent = envelope.trace ? propagation.extract(otelContext.active(), envelope.trace) : otelContext.active();
    const span = this.monitor.startSpan('bcast.deliver', SpanKind.CONSUMER, {
      'messaging.system': 'bcast',
      'messaging.operation.type': 'receive',
      'messaging.message.id': envelope.id,
      'bcast.operation': envelope.op,
      'bcast.source_node': envelope.nodeId,
    }, parent);
    otelContext
      .with(trace.setSpan(parent, span), () => this.engine.execute(this.#executor, { request: fromEnvelope(envelope), encoded: undefined }))
      .then((result) => {
        if (result.error) this.monitor.failSpan(span, result.error, result.error.code);
        if (result.result) span.setAttributes({ 'bcast.recipients': result.result.recipients, 'bcast.delivered': result.result.delivered });
      })
      .catch((error: unknown) => this.#log('error', 'remote delivery failed', error))
      .finally(() => span.end());
  }

  #hook(name: string, fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.#log('error', `${name} hook threw`, error);
    }
  }

  #log(level: 'warn' | 'error', message: string, error?: unknown): void {
    try {
      if (error === undefined) this.#logger[level](`[bcast] ${message}`);
      else this.#logger[level](`[bcast] ${message}:`, error instanceof Error ? error.message : error);
    } catch {
      // logging never breaks anything
    }
  }
}

function terminate(conn: Connection): void {
  try {
    if (conn.terminate) conn.terminate();
    else conn.close(CloseCode.GoingAway, CloseReason.Unresponsive);
  } catch {
    // already gone
  }
}

function positive(name: string, value: number, allowZero = false): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
    throw new BcastError(ErrorCode.InvalidOption, `${name} must be a ${allowZero ? 'non-negative' : 'positive'} number, got ${String(value)}`, {
      details: { option: name, value },
    });
  }
  return value;
}

function mergeScope(defaults: typeof backplaneDefaults, top: ReliabilityOptions, scope: ScopeOptions | undefined): ScopeOptions {
  return {
    timeoutMs: scope && 'timeoutMs' in scope ? scope.timeoutMs : (top.timeoutMs ?? defaults.timeoutMs),
    retry: { ...defaults.retry, ...top.retry, ...scope?.retry },
    ...(scope?.circuitBreaker ? { circuitBreaker: scope.circuitBreaker } : {}),
  };
}

function mergeLatency(stats: MonitorStats): { p50: number; p95: number; p99: number } {
  let p50 = 0;
  let p95 = 0;
  let p99 = 0;
  for (const op of Object.values(stats.operations)) {
    p50 = Math.max(p50, op.latencyMs.p50);
    p95 = Math.max(p95, op.latencyMs.p95);
    p99 = Math.max(p99, op.latencyMs.p99);
  }
  return { p50, p95, p99 };
}

/** What every connection's handle shares (one object per broadcaster). */
interface HandleHost {
  readonly inbound: InboundHost;
  readonly states: WeakMap<ConnectionEntry, InboundState>;
  readonly burst: number;
  closed(entry: ConnectionEntry, code: number, reason: string): void;
}

/** One small object per connection (no closures); inbound state is created on the first frame. */
class Handle implements ConnectionHandle {
  constructor(
    readonly entry: ConnectionEntry,
    readonly host: HandleHost,
  ) {}

  message(data: string | Buffer, isBinary = false): Promise<void> {
    const entry = this.entry;
    entry.lastSeenAt = Date.now();
    entry.awaitingPong = false;
    if (entry.isClosing) return Promise.resolve();
    let state = this.host.states.get(entry);
    if (state === undefined) {
      state = new InboundState(this.host.burst, entry.lastSeenAt);
      this.host.states.set(entry, state);
    }
    return handleInbound(this.host.inbound, entry, state, data, isBinary);
  }

  pong(): void {
    this.entry.lastSeenAt = Date.now();
    this.entry.awaitingPong = false;
  }

  closed(code: number = CloseCode.GoingAway, reason = ''): void {
    this.host.closed(this.entry, code, reason);
  }
}
