import { assemble, type Parts } from './assemble.js';
import type { Backplane } from './backplane/Backplane.js';
import type { Connection } from './connection/Connection.js';
import { encodeMessage, type EncodedMessage } from './connection/EncodedMessage.js';
import type { FanOutObserver } from './connection/FanOutObserver.js';
import { BcastError } from './errors/BcastError.js';
import { CloseCode, CloseReason, ErrorCode } from './errors/codes.js';
import { toBroadcastResult, type BroadcastJob, type FanOut } from './execution/BroadcastExecutor.js';
import type { ExecutionResult } from './execution/ExecutionEngine.js';
import type { BroadcastContext, BroadcastResult } from './execution/types.js';
import { validateRoomId } from './execution/validate.js';
import type { ConnectionHandle } from './lifecycle/ConnectionLifecycle.js';
import type { BroadcasterStats, HealthReport } from './monitor/HealthReporter.js';
import { BACKPLANE_SCOPE, type BroadcasterOptions, type SendOptions, type ShutdownReport } from './options.js';
import type { PresenceReport } from './presence/Presence.js';
import type { ConnectionsView } from './registry/ConnectionRegistry.js';
import type { RoomsView } from './registry/RoomRegistry.js';

export type { SendOptions, ShutdownReport } from './options.js';

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
  readonly #p: Parts;
  /** Broadcasts accepted and not finished yet (shutdown waits for them). */
  #inFlight = 0;
  #idle: (() => void) | undefined;
  #disposed = false;

  constructor(options: BroadcasterOptions = {}) {
    const p = (this.#p = assemble(options, {
      announce: (event, except) => {
        if (!this.#disposed) this.toRoom(event.room, event, { except: [except], ephemeral: true }).catch((error: unknown) => p.options.log('warn', 'presence event failed', error));
      },
      isDisposed: () => this.#disposed,
    }));
    this.connections = p.connections;
    this.rooms = p.rooms;
    this.backplane = p.backplane;
  }

  get nodeId(): string {
    return this.backplane.nodeId;
  }

  get isDisposed(): boolean {
    return this.#disposed;
  }

  /** Resolves once the backplane subscription is in place (or failed, which is logged). */
  ready(): Promise<void> {
    return this.#p.bridge.subscribed;
  }

  // ---- connections (adapters) ----------------------------------------------------------------

  /**
   * Registers a live connection. The adapter reports the socket's events to the handle.
   * `expiresAt`: when its credentials expire (see `authExpiry`). Throws BCAST_SHUTDOWN once disposed.
   */
  register(connection: Connection, options: { expiresAt?: number | undefined } = {}): ConnectionHandle {
    return this.#p.lifecycle.register(connection, options);
  }

  /** Tells `observer` where every fan-out starts and ends (transports coalesce writes per fan-out). Returns an unsubscribe function. */
  observeFanOut(observer: FanOutObserver): () => void {
    this.#p.observers.add(observer);
    return () => void this.#p.observers.delete(observer);
  }

  /** Closes a connection with a code and reason and unregisters it now. False when unknown. */
  disconnect(connectionId: string, code: number = CloseCode.Normal, reason = ''): boolean {
    return this.#p.lifecycle.disconnect(connectionId, code, reason);
  }

  /** Sets when a connection's credentials expire (e.g. after the client sent a fresh token); undefined: never. False when unknown. */
  setExpiry(connectionId: string, expiresAt: number | Date | undefined): boolean {
    const entry = this.connections.get(connectionId);
    if (!entry) return false;
    this.#p.lifecycle.setExpiry(entry, expiresAt);
    return true;
  }

  /** Closes every connection of a user, or one connection, with `authExpiry.closeCode` (1008). Returns how many. */
  revoke(target: { userId: string } | { connectionId: string }, reason: string = CloseReason.Revoked): number {
    return 'userId' in target
      ? this.#p.lifecycle.revoke((e) => e.userId === target.userId, reason)
      : this.#p.lifecycle.revoke((e) => e.id === target.connectionId, reason);
  }

  // ---- rooms -------------------------------------------------------------------------------

  /** Adds a registered connection to a room. False when the connection is unknown or already in it. */
  join(connectionId: string, room: string): boolean {
    validateRoomId(room, this.#p.options.limits);
    if (!this.connections.has(connectionId)) return false;
    return this.#p.rooms.join(connectionId, room);
  }

  leave(connectionId: string, room: string): boolean {
    return this.#p.rooms.leave(connectionId, room);
  }

  /** Creates an empty room that stays until `deleteRoom` (rooms made by `join` go with their last member). False when it exists. */
  createRoom(room: string): boolean {
    validateRoomId(room, this.#p.options.limits);
    return this.#p.rooms.create(room);
  }

  /** Deletes a room and every membership in it; false when it did not exist. */
  deleteRoom(room: string): boolean {
    return this.#p.rooms.delete(room);
  }

  /** Removes a connection from every room; returns the rooms it left. */
  leaveAll(connectionId: string): string[] {
    return this.#p.rooms.leaveAll(connectionId);
  }

  /** Who is in a room: users with their connection counts, on every node when the presence store is shared. */
  presence(room: string): Promise<PresenceReport> {
    validateRoomId(room, this.#p.options.limits);
    return this.#p.presence.list(room);
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
      outcome = await this.#p.engine.execute(this.#p.executor, job, { propagation: this.#p.bridge });
    } finally {
      if (--this.#inFlight === 0) this.#idle?.();
    }
    const fanOut = outcome.result;
    if (fanOut === undefined) return outcome as ExecutionResult<never>;
    this.#p.lifecycle.settle(fanOut.removals);
    return { ...outcome, result: toBroadcastResult(fanOut, outcome) };
  }

  /** Encodes a message once for sending outside a broadcast, under `maxMessageBytes`. Prefer {@link sendTo}. */
  encode(message: unknown): EncodedMessage {
    return encodeMessage(message, { maxBytes: this.#p.options.limits.maxMessageBytes });
  }

  // ---- operations ----------------------------------------------------------------------------

  /** Holds a reliability scope's circuit open (health says `isolated`) until the returned function is called. */
  isolate(scope: string = BACKPLANE_SCOPE): () => void {
    return this.#p.reliability.isolate(scope);
  }

  getStats(): BroadcasterStats {
    return this.#p.health.stats();
  }

  getHealthStatus(): HealthReport {
    return this.#p.health.health();
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
    const drained = await this.#p.lifecycle.drain(options.code ?? CloseCode.GoingAway, options.reason ?? CloseReason.ServerShutdown, options.drainTimeoutMs ?? 5_000);
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
    this.#p.lifecycle.close(options.code ?? CloseCode.GoingAway, options.reason ?? CloseReason.ServerShutdown);
    await this.#release(options.closeBackplane);
  }

  async #release(closeBackplane: boolean | undefined): Promise<void> {
    try {
      await this.#p.presence.close();
      await this.#p.history?.close();
      await this.#p.bridge.stop();
      if (closeBackplane ?? this.#p.ownsBackplane) await this.backplane.close();
    } catch (error) {
      this.#p.options.log('warn', 'backplane did not close cleanly', error);
    }
    this.#p.reliability.dispose();
    this.#p.monitor.dispose();
  }
}
