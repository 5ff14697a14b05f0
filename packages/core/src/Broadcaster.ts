import { trace } from '@opentelemetry/api';
import { LocalBackplane, type Backplane } from './backplane/Backplane.js';
import { BackplaneBridge } from './backplane/BackplaneBridge.js';
import type { Connection } from './connection/Connection.js';
import { encodeMessage, type EncodedMessage } from './connection/EncodedMessage.js';
import type { FanOutObserver } from './connection/FanOutObserver.js';
import { BcastError } from './errors/BcastError.js';
import { ErrorClassifier } from './errors/classify.js';
import { CloseCode, CloseReason, ErrorCode } from './errors/codes.js';
import { BroadcastExecutor, type BroadcastJob, type FanOut } from './execution/BroadcastExecutor.js';
import { ExecutionEngine, type ExecutionResult } from './execution/ExecutionEngine.js';
import type { BroadcastContext, BroadcastResult } from './execution/types.js';
import { validateRoomId } from './execution/validate.js';
import { MemoryHistory } from './history/HistoryStore.js';
import { RoomHistory } from './history/RoomHistory.js';
import { ConnectionLifecycle, type ConnectionHandle } from './lifecycle/ConnectionLifecycle.js';
import { ExecutionMonitor } from './monitor/ExecutionMonitor.js';
import { Presence, type PresenceReport } from './presence/Presence.js';
import { HealthReporter, type BroadcasterStats, type HealthReport } from './monitor/HealthReporter.js';
import { BACKPLANE_SCOPE, resolveOptions, withBackplaneScope, type BroadcasterOptions, type ResolvedOptions } from './options.js';
import { ConnectionRegistry, type ConnectionsView } from './registry/ConnectionRegistry.js';
import { RoomRegistry, type RoomsView } from './registry/RoomRegistry.js';
import { ReliabilityManager } from './reliability/ReliabilityManager.js';

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
}

/**
 * The core API, a facade: it wires the parts and offers the calls. A broadcast goes
 * caller -> here -> engine (validate -> propagation under the backplane's reliability scope ->
 * fan-out -> monitor) -> executor -> registries -> each `Connection`; what the fan-out found dead
 * or too slow comes back up in its result and the connection lifecycle closes it. Adapters
 * `register()` connections and report their events to the returned handle.
 */
export class Broadcaster {
  /** Live connections (read-only; adapters register through `register`). */
  readonly connections: ConnectionsView;
  /** Rooms (read-only; change them with `join`, `leave`, `createRoom`, `deleteRoom`, `leaveAll`). */
  readonly rooms: RoomsView;
  /** Propagation to other nodes. */
  readonly backplane: Backplane;
  readonly #rooms: RoomRegistry;
  readonly #options: ResolvedOptions;
  readonly #ownsBackplane: boolean;
  readonly #reliability: ReliabilityManager;
  readonly #monitor: ExecutionMonitor;
  readonly #engine: ExecutionEngine;
  readonly #executor: BroadcastExecutor;
  readonly #lifecycle: ConnectionLifecycle;
  readonly #bridge: BackplaneBridge;
  readonly #health: HealthReporter;
  readonly #history: RoomHistory | undefined;
  readonly #presence: Presence;
  readonly #observers = new Set<FanOutObserver>();
  /** Broadcasts accepted and not finished yet (shutdown waits for them). */
  #inFlight = 0;
  #idle: (() => void) | undefined;
  #disposed = false;

  constructor(options: BroadcasterOptions = {}) {
    const resolved = (this.#options = resolveOptions(options));
    const connections = new ConnectionRegistry();
    const rooms = new RoomRegistry();
    this.connections = connections;
    this.rooms = this.#rooms = rooms;
    this.backplane = options.backplane ?? new LocalBackplane();
    this.#ownsBackplane = options.backplane === undefined;
    const classifier = options.classifier ?? new ErrorClassifier();
    const reliability = options.reliability ?? {};
    let bridge: BackplaneBridge | undefined;
    this.#reliability = new ReliabilityManager({
      ...withBackplaneScope(reliability, BackplaneBridge.predicates(() => bridge)),
      classifier: reliability.classifier ?? classifier,
    });
    const monitor = (this.#monitor = new ExecutionMonitor({
      ...(options.tracerProvider ? { tracerProvider: options.tracerProvider } : {}),
      ...(options.meterProvider ? { meterProvider: options.meterProvider } : {}),
    }));
    monitor.observeCircuits(() => this.#reliability.getState());
    this.#reliability.onEvent((event) => {
      const span = trace.getActiveSpan();
      if (event.type === 'retry') {
        span?.addEvent('bcast.retry', { 'bcast.scope': event.scope, 'bcast.attempt': event.attempt, 'bcast.retry.delay_ms': event.delayMs });
      } else if (event.type === 'circuit') {
        span?.addEvent('bcast.circuit.state_change', { 'bcast.scope': event.scope, 'bcast.circuit.from': event.from, 'bcast.circuit.to': event.to });
        resolved.log('warn', `circuit "${event.scope}" ${event.from} -> ${event.to}`);
      }
    });
    this.#engine = new ExecutionEngine({ monitor, reliability: this.#reliability, classifier });
    const history = (this.#history = options.history && new RoomHistory(options.history, options.history.store ?? new MemoryHistory(), resolved.log));
    this.#executor = new BroadcastExecutor({ connections, rooms, limits: resolved.limits, classifier, observers: this.#observers, monitor, traceRoomNames: resolved.traceRoomNames, history, log: resolved.log });
    this.#lifecycle = new ConnectionLifecycle({ connections, rooms, monitor, options: resolved, history });
    bridge = this.#bridge = new BackplaneBridge({ backplane: this.backplane, engine: this.#engine, executor: this.#executor, lifecycle: this.#lifecycle, monitor, options: resolved });
    const presence = (this.#presence = new Presence({ connections, rooms, nodeId: this.backplane.nodeId, log: resolved.log }, options.presence ?? {}));
    if (presence.tracking) {
      rooms.on((event) => {
        const note = presence.update(event);
        if (note && !this.#disposed) this.toRoom(note.event.room, note.event, { except: [note.except] }).catch((error: unknown) => resolved.log('warn', 'presence event failed', error));
      });
    }
    this.#health = new HealthReporter({ connections, rooms, monitor, reliability: this.#reliability, backplane: this.backplane, isDisposed: () => this.#disposed });
  }

  get nodeId(): string {
    return this.backplane.nodeId;
  }

  get isDisposed(): boolean {
    return this.#disposed;
  }

  /** Resolves once the backplane subscription is in place (or failed, which is logged). */
  ready(): Promise<void> {
    return this.#bridge.subscribed;
  }

  // ---- connections (adapters) ----------------------------------------------------------------

  /**
   * Registers a live connection. The adapter reports the socket's events to the handle.
   * `expiresAt`: when its credentials expire (see `authExpiry`). Throws BCAST_SHUTDOWN once disposed.
   */
  register(connection: Connection, options: { expiresAt?: number | undefined } = {}): ConnectionHandle {
    return this.#lifecycle.register(connection, options);
  }

  /** Tells `observer` where every fan-out starts and ends (transports coalesce writes per fan-out). Returns an unsubscribe function. */
  observeFanOut(observer: FanOutObserver): () => void {
    this.#observers.add(observer);
    return () => void this.#observers.delete(observer);
  }

  /** Closes a connection with a code and reason and unregisters it now. False when unknown. */
  disconnect(connectionId: string, code: number = CloseCode.Normal, reason = ''): boolean {
    return this.#lifecycle.disconnect(connectionId, code, reason);
  }

  /** Sets when a connection's credentials expire (e.g. after the client sent a fresh token); undefined: never. False when unknown. */
  setExpiry(connectionId: string, expiresAt: number | Date | undefined): boolean {
    const entry = this.connections.get(connectionId);
    if (!entry) return false;
    this.#lifecycle.setExpiry(entry, expiresAt);
    return true;
  }

  /** Closes every connection of a user, or one connection, with `authExpiry.closeCode` (1008). Returns how many. */
  revoke(target: { userId: string } | { connectionId: string }, reason: string = CloseReason.Revoked): number {
    return 'userId' in target
      ? this.#lifecycle.revoke((e) => e.userId === target.userId, reason)
      : this.#lifecycle.revoke((e) => e.id === target.connectionId, reason);
  }

  // ---- rooms -------------------------------------------------------------------------------

  /** Adds a registered connection to a room. False when the connection is unknown or already in it. */
  join(connectionId: string, room: string): boolean {
    validateRoomId(room, this.#options.limits);
    if (!this.connections.has(connectionId)) return false;
    return this.#rooms.join(connectionId, room);
  }

  leave(connectionId: string, room: string): boolean {
    return this.#rooms.leave(connectionId, room);
  }

  /** Creates an empty room that stays until `deleteRoom` (rooms made by `join` go with their last member). False when it exists. */
  createRoom(room: string): boolean {
    validateRoomId(room, this.#options.limits);
    return this.#rooms.create(room);
  }

  /** Deletes a room and every membership in it; false when it did not exist. */
  deleteRoom(room: string): boolean {
    return this.#rooms.delete(room);
  }

  /** Removes a connection from every room; returns the rooms it left. */
  leaveAll(connectionId: string): string[] {
    return this.#rooms.leaveAll(connectionId);
  }

  /** Who is in a room: users with their connection counts, on every node when the presence store is shared. */
  presence(room: string): Promise<PresenceReport> {
    validateRoomId(room, this.#options.limits);
    return this.#presence.list(room);
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
  async execute(context: BroadcastContext): Promise<ExecutionResult<BroadcastResult>> {
    if (this.#disposed) {
      const error = new BcastError(ErrorCode.Shutdown, 'the broadcaster is disposed; nothing new is accepted');
      return { status: 'rejected', error, durationMs: 0, attempts: 0 };
    }
    const job: BroadcastJob = { request: context, origin: 'local', encoded: undefined };
    this.#inFlight += 1;
    let outcome: ExecutionResult<FanOut>;
    try {
      outcome = await this.#engine.execute(this.#executor, job, { propagation: this.#bridge });
    } finally {
      if (--this.#inFlight === 0) this.#idle?.();
    }
    const fanOut = outcome.result;
    if (fanOut === undefined) return outcome as ExecutionResult<never>;
    this.#lifecycle.settle(fanOut.removals);
    return { ...outcome, result: resultOf(fanOut, outcome) };
  }

  /** Encodes a message once for sending outside a broadcast, under `maxMessageBytes`. Prefer {@link sendTo}. */
  encode(message: unknown): EncodedMessage {
    return encodeMessage(message, { maxBytes: this.#options.limits.maxMessageBytes });
  }

  // ---- operations ----------------------------------------------------------------------------

  /** Holds a reliability scope's circuit open (health says `isolated`) until the returned function is called. */
  isolate(scope: string = BACKPLANE_SCOPE): () => void {
    return this.#reliability.isolate(scope);
  }

  getStats(): BroadcasterStats {
    return this.#health.stats();
  }

  getHealthStatus(): HealthReport {
    return this.#health.health();
  }

  /**
   * Graceful shutdown (the SIGTERM path): refuses new broadcasts (BCAST_SHUTDOWN) and connections
   * (adapters answer new upgrades 503), lets the broadcasts already accepted finish, closes every
   * connection with 1001 and waits up to `drainTimeoutMs` for the clients to close, terminates the
   * rest, unsubscribes from the backplane and releases the metric callbacks. Flush your
   * OpenTelemetry SDK after it (`await sdk.shutdown()`). Resolves with what it did.
   */
  async shutdown(options: { drainTimeoutMs?: number; code?: number; reason?: string; closeBackplane?: boolean } = {}): Promise<ShutdownReport> {
    const started = performance.now();
    if (this.#disposed) return { broadcastsFinished: 0, closed: 0, terminated: 0, durationMs: 0 };
    this.#disposed = true;
    const broadcastsFinished = this.#inFlight;
    if (this.#inFlight > 0) await new Promise<void>((resolve) => (this.#idle = resolve));
    const drained = await this.#lifecycle.drain(options.code ?? CloseCode.GoingAway, options.reason ?? CloseReason.ServerShutdown, options.drainTimeoutMs ?? 5_000);
    await this.#release(options.closeBackplane);
    return { broadcastsFinished, ...drained, durationMs: performance.now() - started };
  }

  /**
   * Closes every connection with 1001 (terminating those that do not close within
   * `closeTimeoutMs`), stops the heartbeat, unsubscribes from the backplane (closing it when
   * `closeBackplane`, by default when bcast created it) and releases its metric callbacks. Later
   * broadcasts reject with BCAST_SHUTDOWN.
   */
  async dispose(options: { code?: number; reason?: string; closeBackplane?: boolean } = {}): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#lifecycle.close(options.code ?? CloseCode.GoingAway, options.reason ?? CloseReason.ServerShutdown);
    await this.#release(options.closeBackplane);
  }

  async #release(closeBackplane: boolean | undefined): Promise<void> {
    try {
      await this.#presence.close();
      await this.#bridge.stop();
      if (closeBackplane ?? this.#ownsBackplane) await this.backplane.close();
    } catch (error) {
      this.#options.log('warn', 'backplane did not close cleanly', error);
    }
    this.#reliability.dispose();
    this.#monitor.dispose();
  }
}

function resultOf(f: FanOut, outcome: ExecutionResult<FanOut>): BroadcastResult {
  const p = outcome.propagation;
  return {
    operation: f.operation,
    recipients: f.recipients,
    delivered: f.delivered,
    failed: f.failed,
    dropped: f.dropped,
    removed: f.removals.length,
    durationMs: outcome.durationMs,
    ...(f.message.type === undefined ? {} : { messageType: f.message.type }),
    messageBytes: f.message.byteLength,
    backplane: p?.status ?? 'skipped',
    ...(p?.error ? { backplaneError: p.error.code === ErrorCode.Internal ? ErrorCode.BackplaneUnavailable : p.error.code } : {}),
  };
}
