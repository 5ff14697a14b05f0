import type { Connection } from '../connection/Connection.js';
import { encodeMessage } from '../connection/EncodedMessage.js';
import { BcastError } from '../errors/BcastError.js';
import { CloseCode, CloseReason, ErrorCode } from '../errors/codes.js';
import type { Removal, RemovalReason } from '../execution/BroadcastExecutor.js';
import { expiryOf } from '../execution/validate.js';
import { Publication, type RoomHistory } from '../history/RoomHistory.js';
import type { StreamPosition } from '../history/HistoryStore.js';
import type { EncodedMessage } from '../connection/EncodedMessage.js';
import type { ExecutionMonitor } from '../monitor/ExecutionMonitor.js';
import type { ResolvedOptions } from '../options.js';
import { InboundState, handleInbound, takeToken, type InboundHost } from '../protocol/InboundProtocol.js';
import type { ProtocolErrorCode, ServerReply } from '../protocol/messages.js';
import type { ConnectionEntry, ConnectionRegistry } from '../registry/ConnectionRegistry.js';
import type { RoomRegistry } from '../registry/RoomRegistry.js';

/** What an adapter gets back from `Broadcaster.register`: report the socket's events here. */
export interface ConnectionHandle {
  readonly entry: ConnectionEntry;
  /**
   * An inbound frame. Frames of one connection take effect in the order they arrive, and their
   * replies are sent in that order, even when a hook (`authorizeJoin`, `onMessage`) is async.
   * Resolves once this frame was handled.
   */
  message(data: string | Buffer, isBinary?: boolean): Promise<void>;
  /** A transport-level pong (or any sign of life). */
  pong(): void;
  /**
   * The socket closed (for any reason). Idempotent. `protocolError`: the server closed it for a
   * client's protocol error (1002, 1007, 1009...): counted in `bcast.disconnects`.
   */
  closed(code?: number, reason?: string, protocolError?: boolean): void;
}

export interface LifecycleDeps {
  /** Rooms that keep a history: joins may recover what a client missed. */
  readonly history: RoomHistory | undefined;
  readonly connections: ConnectionRegistry;
  readonly rooms: RoomRegistry;
  readonly monitor: ExecutionMonitor;
  readonly options: ResolvedOptions;
}

/**
 * The life of every connection: registration, the handle an adapter reports to, the heartbeat,
 * the client protocol (in order, per connection), closing and unregistering, and the timers that
 * terminate a connection that does not close in time. It owns the write side of the registries.
 */
export class ConnectionLifecycle implements InboundHost {
  readonly #d: LifecycleDeps;
  /** Pending forced terminations: timer -> connection. */
  readonly #timers = new Map<NodeJS.Timeout, Connection>();
  readonly #inbound = new WeakMap<ConnectionEntry, InboundState>();
  /** While draining: connections closed by bcast whose transport has not reported the close yet. */
  #draining: Map<ConnectionEntry, () => void> | undefined;
  /** Connections whose credentials expire: entry -> the timer that checks them. */
  readonly #expiry = new Map<ConnectionEntry, NodeJS.Timeout>();
  readonly #heartbeat: NodeJS.Timeout | undefined;
  /** Running while there are connections (see `slowConsumerCheckMs`). */
  #sweep: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(deps: LifecycleDeps) {
    this.#d = deps;
    const interval = deps.options.pingIntervalMs;
    if (interval > 0) {
      this.#heartbeat = setInterval(() => this.#tick(), interval);
      this.#heartbeat.unref();
    }
  }

  get options(): ResolvedOptions['hooks'] {
    return this.#d.options.hooks;
  }

  get resolved(): ResolvedOptions['inbound'] {
    return this.#d.options.inbound;
  }

  get limits(): ResolvedOptions['limits'] {
    return this.#d.options.limits;
  }

  /** Registers a live connection; a second registration under the same id replaces the first. */
  register(connection: Connection, options: { expiresAt?: number | undefined } = {}): ConnectionHandle {
    if (this.#closed) {
      connection.close(CloseCode.GoingAway, CloseReason.ServerShutdown);
      throw new BcastError(ErrorCode.Shutdown, 'the broadcaster is disposed');
    }
    const { connections, monitor } = this.#d;
    const previous = connections.get(connection.id);
    if (previous) this.unregister(previous, CloseCode.GoingAway, 'replaced');
    const entry = connections.add(connection);
    monitor.connectionOpened();
    // Broadcasts find slow consumers as they write; the sweep finds those that pile up bytes between
    // broadcasts (a client flooding pings whose pongs it never reads, on a quiet server).
    const every = this.#d.options.slowConsumerCheckMs;
    if (this.#sweep === undefined && every > 0) {
      this.#sweep = setInterval(() => this.#sweepSlowConsumers(), every);
      this.#sweep.unref();
    }
    if (options.expiresAt !== undefined) this.setExpiry(entry, options.expiresAt);
    this.#hook('onConnect', () => this.options.onConnect?.(entry));
    return new Handle(entry, this);
  }

  /** The transport reports that a connection's socket closed. */
  reportClosed(entry: ConnectionEntry, code: number, reason: string, protocolError = false): void {
    if (protocolError && this.#d.connections.get(entry.id) === entry) this.#d.monitor.recordDisconnect(code, 'protocol_error');
    const waiter = this.#draining?.get(entry);
    if (waiter) {
      this.#draining?.delete(entry);
      waiter();
    }
    this.unregister(entry, code, reason);
  }

  /**
   * Closes every connection with `code`, then waits until each transport reported its close;
   * whatever has not closed after `drainMs` is terminated. Resolves with how many did which.
   */
  async drain(code: number, reason: string, drainMs: number): Promise<{ closed: number; terminated: number }> {
    const entries = [...this.#d.connections.entries()];
    const waits = new Map<ConnectionEntry, () => void>();
    const reported = entries.map((entry) => new Promise<void>((resolve) => waits.set(entry, resolve)));
    this.#draining = waits;
    this.close(code, reason);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(reported), new Promise<void>((resolve) => (timer = setTimeout(resolve, drainMs)))]);
    clearTimeout(timer);
    let terminated = 0;
    for (const entry of waits.keys()) {
      terminated += 1;
      terminate(entry.connection);
    }
    this.#draining = undefined;
    for (const t of this.#timers.keys()) clearTimeout(t);
    this.#timers.clear();
    return { closed: entries.length - terminated, terminated };
  }

  /** Forgets a connection (its socket closed). Idempotent; the app's onDisconnect hears it once. */
  unregister(entry: ConnectionEntry, code: number, reason: string): void {
    entry.isClosing = true;
    const { connections, rooms, monitor } = this.#d;
    if (connections.get(entry.id) !== entry) return;
    const expiry = this.#expiry.get(entry);
    if (expiry !== undefined) {
      clearTimeout(expiry);
      this.#expiry.delete(entry);
    }
    rooms.leaveAll(entry.id); // first: whoever follows the rooms still finds the connection
    connections.remove(entry.id);
    if (connections.size === 0 && this.#sweep !== undefined) {
      clearInterval(this.#sweep);
      this.#sweep = undefined;
    }
    monitor.connectionClosed();
    this.#hook('onDisconnect', () => this.options.onDisconnect?.(entry, code, reason));
  }

  /**
   * Closes a connection with a code and reason and unregisters it now. `terminateAfterMs` forces
   * the socket shut if it has not closed by then. A connection the app already marked closing is
   * not sent a second close.
   */
  remove(entry: ConnectionEntry, code: number, reason: string, cause: RemovalReason | undefined, terminateAfterMs?: number, alreadyClosing = entry.isClosing): void {
    if (cause !== undefined) this.#d.monitor.recordDisconnect(code, cause);
    const conn = entry.connection;
    // Unregister first: a transport that reports the close synchronously from inside close()
    // (socket.io's disconnect) then finds nothing left to unregister, and our code and reason win.
    this.unregister(entry, code, reason);
    if (!alreadyClosing) {
      try {
        conn.close(code, reason);
      } catch (error) {
        this.log('warn', `closing connection ${entry.id} failed`, error);
      }
    }
    if (terminateAfterMs !== undefined) this.#terminateLater(conn, terminateAfterMs);
  }

  /** Acts on what a fan-out found: every dead or slow connection is closed and unregistered. */
  settle(removals: readonly Removal[]): void {
    for (const r of removals) this.remove(r.entry, r.code, r.reason, r.cause, r.terminateAfterMs ?? this.#d.options.closeTimeoutMs, false);
  }

  /** Closes a connection by id with a code and reason. False when unknown. */
  disconnect(connectionId: string, code: number, reason: string): boolean {
    const entry = this.#d.connections.get(connectionId);
    if (!entry) return false;
    this.remove(entry, code, reason, undefined, this.#d.options.closeTimeoutMs);
    return true;
  }

  /** Sets (or with undefined, clears) when a connection's credentials expire. */
  setExpiry(entry: ConnectionEntry, expiresAt: number | Date | undefined): void {
    const previous = this.#expiry.get(entry);
    if (previous !== undefined) clearTimeout(previous);
    this.#expiry.delete(entry);
    entry.expiresAt = expiresAt === undefined ? undefined : expiryOf(expiresAt);
    if (entry.expiresAt === undefined || this.#d.connections.get(entry.id) !== entry) return;
    const due = entry.expiresAt + this.#d.options.authExpiry.graceMs - Date.now();
    // setTimeout holds at most 2^31 - 1 ms (24.8 days): a later expiry is checked again then.
    const timer = setTimeout(() => void this.#expired(entry), Math.min(Math.max(due, 0), 2_147_483_647));
    timer.unref();
    this.#expiry.set(entry, timer);
  }

  /** Closes the matching connections with the auth close code; returns how many. */
  revoke(match: (entry: ConnectionEntry) => boolean, reason: string): number {
    let n = 0;
    for (const entry of [...this.#d.connections.entries()]) {
      if (entry.isClosing || !match(entry)) continue;
      n += 1;
      this.remove(entry, this.#d.options.authExpiry.closeCode, reason, 'revoked', this.#d.options.closeTimeoutMs);
    }
    return n;
  }

  async #expired(entry: ConnectionEntry): Promise<void> {
    this.#expiry.delete(entry);
    if (entry.isClosing || entry.expiresAt === undefined) return;
    const { graceMs, refresh } = this.#d.options.authExpiry;
    if (entry.expiresAt + graceMs > Date.now()) return this.setExpiry(entry, entry.expiresAt);
    let next: number | Date | false | undefined;
    if (refresh) {
      try {
        next = await withTimeout(Promise.resolve(refresh(entry)), 5_000);
      } catch (error) {
        this.log('warn', `authExpiry.refresh failed for connection ${entry.id}`, error);
      }
    }
    if (entry.isClosing) return;
    const until = next === undefined || next === false ? undefined : safeExpiry(next);
    if (until !== undefined && until > Date.now()) return this.setExpiry(entry, until);
    this.remove(entry, this.#d.options.authExpiry.closeCode, CloseReason.AuthExpired, 'auth_expired', this.#d.options.closeTimeoutMs);
  }

  /** Stops the heartbeat, closes every connection with `code`, and terminates what has not closed in time. */
  close(code: number, reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    clearInterval(this.#sweep);
    this.#sweep = undefined;
    for (const timer of this.#expiry.values()) clearTimeout(timer);
    this.#expiry.clear();
    // Connections already closing (slow consumers...) are terminated now rather than forgotten.
    for (const [timer, conn] of this.#timers) {
      clearTimeout(timer);
      if (conn.isOpen || conn.bufferedBytes > 0) terminate(conn);
    }
    this.#timers.clear();
    for (const entry of [...this.#d.connections.entries()]) this.remove(entry, code, reason, 'shutdown', this.#d.options.closeTimeoutMs);
  }

  // ---- the client protocol (InboundHost) ----------------------------------------------------

  /** One frame, queued behind the frames of the same connection that are still being handled. */
  inbound(entry: ConnectionEntry, data: string | Buffer, isBinary: boolean): Promise<void> {
    let state = this.#inbound.get(entry);
    if (state === undefined) {
      state = new InboundState(this.resolved.rateLimitBurst, entry.lastSeenAt);
      this.#inbound.set(entry, state);
    }
    const s = state;
    // The rate is measured when frames arrive, not when their turn comes.
    const admitted = !this.resolved.protocol || isBinary || takeToken(s, this.resolved, Date.now());
    s.pending += 1;
    if (s.pending > this.resolved.rateLimitBurst * 2) {
      // A client that keeps sending while its earlier frames wait on a hook: it cannot be served in order.
      this.remove(entry, CloseCode.PolicyViolation, CloseReason.PolicyViolation, 'policy_violation', this.#d.options.closeTimeoutMs);
      return s.tail;
    }
    s.tail = s.tail.then(() => {
      s.pending -= 1;
      return entry.isClosing ? undefined : handleInbound(this, entry, data, isBinary, admitted);
    });
    return s.tail;
  }

  reply(entry: ConnectionEntry, reply: ServerReply): void {
    if (entry.isClosing || !entry.connection.isOpen) return;
    try {
      entry.connection.send(encodeMessage(reply));
    } catch (error) {
      this.log('warn', `reply to connection ${entry.id} failed`, error);
    }
  }

  /**
   * Joins a room the client asked for and answers `ok`. In a room with history the answer carries
   * the room's position, and a join with `since` first sends every message the client missed, in
   * order (broadcasts meanwhile are held and follow, without duplicates), or says `recovered: false`.
   */
  async join(entry: ConnectionEntry, room: string, since: StreamPosition | undefined, requestId: string | number | undefined): Promise<void> {
    const history = this.#d.history;
    const id = requestId === undefined ? {} : { requestId };
    if (history === undefined || !history.has(room)) {
      this.#d.rooms.join(entry.id, room);
      return this.reply(entry, { type: 'ok', op: 'join', room, ...id });
    }
    // Broadcasts are held from the join until the answer: the client gets every message after the
    // position it is told, once, and none before it (those are history it did not ask for, or sent).
    const held: EncodedMessage[] = (entry.recovering ??= []);
    this.#d.rooms.join(entry.id, room);
    const r = since === undefined ? { recovered: undefined, position: await history.position(room), messages: [] } : await history.recover(room, since);
    for (const message of r.messages) this.#write(entry, message);
    const recovered = r.recovered === undefined ? {} : { recovered: r.recovered };
    this.reply(entry, { type: 'ok', op: 'join', room, ...id, ...recovered, ...(r.position ? { position: r.position } : {}) });
    if (entry.recovering === held) entry.recovering = undefined;
    const top = r.recovered === false ? undefined : r.position;
    for (const message of held) {
      const covered = top !== undefined && message instanceof Publication && message.room === room && message.position?.epoch === top.epoch && message.position.offset <= top.offset;
      if (!covered) this.#write(entry, message);
    }
  }

  #write(entry: ConnectionEntry, message: EncodedMessage): void {
    if (entry.isClosing || !entry.connection.isOpen) return;
    try {
      entry.connection.send(message);
      entry.messageCount += 1;
    } catch (error) {
      this.log('warn', `send to connection ${entry.id} failed`, error);
    }
  }

  leave(entry: ConnectionEntry, room: string): boolean {
    return this.#d.rooms.leave(entry.id, room);
  }

  roomCount(entry: ConnectionEntry): number {
    return this.#d.rooms.roomsOf(entry.id).size;
  }

  isMember(entry: ConnectionEntry, room: string): boolean {
    return this.#d.rooms.roomsOf(entry.id).has(room);
  }

  /**
   * Counts a rejection; closes the connection with 1008 on sustained abuse ('closed'). A flood is
   * answered only for its first RATE_LIMITED frames of the window ('quiet' after that), so it costs
   * the server a count, not a reply per frame.
   */
  reject(entry: ConnectionEntry, code: ProtocolErrorCode): 'closed' | 'reply' | 'quiet' {
    this.#d.monitor.recordInboundRejected(code);
    const state = this.#inbound.get(entry);
    if (!state) return 'reply';
    const now = Date.now();
    const r = this.resolved;
    if (now - state.windowStart > r.abuseWindowMs) {
      state.windowStart = now;
      state.rejections = 0;
    }
    state.rejections += 1;
    if (state.rejections <= r.maxRejections) return code === 'RATE_LIMITED' && state.rejections > RATE_LIMITED_REPLIES ? 'quiet' : 'reply';
    this.remove(entry, CloseCode.PolicyViolation, CloseReason.PolicyViolation, 'policy_violation', this.#d.options.closeTimeoutMs);
    return 'closed';
  }

  log(level: 'warn' | 'error', message: string, error?: unknown): void {
    this.#d.options.log(level, message, error);
  }

  // ---- internals ----------------------------------------------------------------------------

  #terminateLater(conn: Connection, afterMs: number): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (conn.isOpen || conn.bufferedBytes > 0) terminate(conn);
    }, afterMs);
    timer.unref();
    this.#timers.set(timer, conn);
  }

  #sweepSlowConsumers(): void {
    const max = this.#d.options.limits.maxBufferedBytes;
    for (const entry of this.#d.connections.entries()) {
      if (entry.isClosing || entry.connection.bufferedBytes <= max) continue;
      this.remove(entry, CloseCode.TryAgainLater, CloseReason.SlowConsumer, 'slow_consumer', 1_000);
    }
  }

  #tick(): void {
    for (const entry of this.#d.connections.entries()) {
      const conn = entry.connection;
      if (!conn.ping || entry.isClosing) continue;
      if (entry.awaitingPong) {
        this.#d.monitor.recordDisconnect(CloseCode.GoingAway, 'no_pong');
        entry.isClosing = true;
        terminate(conn);
        this.unregister(entry, CloseCode.GoingAway, CloseReason.Unresponsive);
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

  #hook(name: string, fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.log('error', `${name} hook threw`, error);
    }
  }
}

/** RATE_LIMITED replies a connection gets per abuse window; later frames over the rate are only counted. */
const RATE_LIMITED_REPLIES = 20;

function safeExpiry(value: number | Date): number | undefined {
  try {
    return expiryOf(value);
  } catch {
    return undefined;
  }
}

function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([work, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

function terminate(conn: Connection): void {
  try {
    if (conn.terminate) conn.terminate();
    else conn.close(CloseCode.GoingAway, CloseReason.Unresponsive);
  } catch {
    // already gone
  }
}

/** One small object per connection (no closures); inbound state is created on the first frame. */
class Handle implements ConnectionHandle {
  constructor(
    readonly entry: ConnectionEntry,
    readonly lifecycle: ConnectionLifecycle,
  ) {}

  message(data: string | Buffer, isBinary = false): Promise<void> {
    const entry = this.entry;
    entry.lastSeenAt = Date.now();
    entry.awaitingPong = false;
    if (entry.isClosing) return Promise.resolve();
    return this.lifecycle.inbound(entry, data, isBinary);
  }

  pong(): void {
    this.entry.lastSeenAt = Date.now();
    this.entry.awaitingPong = false;
  }

  closed(code: number = CloseCode.GoingAway, reason = '', protocolError = false): void {
    this.lifecycle.reportClosed(this.entry, code, reason, protocolError);
  }
}
