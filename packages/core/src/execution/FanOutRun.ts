// One fan-out and what it is made of: the job it runs (a broadcast in flight), the registries and
// limits it reads (FanOutDeps), and what it found (FanOut, Removal). BroadcastExecutor runs it and
// queues the fan-outs that come while one is cut into slices.
import type { EncodedMessage } from '../connection/EncodedMessage.js';
import type { FanOutObserver } from '../connection/FanOutObserver.js';
import type { ErrorClassifier } from '../errors/classify.js';
import { CloseCode, CloseReason } from '../errors/codes.js';
import type { Publication, RoomHistory } from '../history/RoomHistory.js';
import type { ExecutionMonitor } from '../monitor/ExecutionMonitor.js';
import type { ConnectionEntry, ConnectionRegistry } from '../registry/ConnectionRegistry.js';
import type { RoomRegistry } from '../registry/RoomRegistry.js';
import type { BroadcastContext, BroadcastOperation } from './types.js';
import type { IdLimits } from './validate.js';

/** A broadcast in flight: the request, where it comes from, and its message once encoded. */
export interface BroadcastJob {
  readonly request: BroadcastContext;
  /** `local`: called on this node; `remote`: another node's broadcast, delivered here. */
  readonly origin: 'local' | 'remote';
  /** Set by validation (local), or given already encoded by the backplane bridge (remote). */
  encoded: EncodedMessage | undefined;
  /** The publishing node and envelope id (remote only). */
  readonly source?: { readonly nodeId: string; readonly envelopeId: string };
  /** For a room with history: the message as clients get it, with its stream position. */
  publication?: Publication | undefined;
}

export interface BroadcastLimits extends IdLimits {
  readonly maxMessageBytes: number;
  /** Above this many buffered bytes a connection is a slow consumer: closed with 1013. */
  readonly maxBufferedBytes: number;
  /** Above this many buffered bytes, `volatile` messages are dropped for that connection. */
  readonly volatileBufferedBytes: number;
}

/** Why bcast removed a connection, as counted in `bcast.disconnects`. */
export type RemovalReason = 'connection_lost' | 'slow_consumer' | 'no_pong' | 'policy_violation' | 'shutdown' | 'auth_expired' | 'revoked' | 'protocol_error';

/** A connection the fan-out found dead or too slow: the owner of the registries closes and unregisters it. */
export interface Removal {
  readonly entry: ConnectionEntry;
  readonly code: number;
  readonly reason: string;
  readonly cause: RemovalReason;
  /** Force the socket shut this long after the close (a non-reader never reads the close frame). */
  readonly terminateAfterMs?: number;
}

/** What one fan-out did. Invariant: `recipients === delivered + failed + dropped`. */
export interface FanOut {
  readonly operation: BroadcastOperation;
  readonly recipients: number;
  readonly delivered: number;
  readonly failed: number;
  readonly dropped: number;
  /** Recipients found dead or too slow: closed and unregistered by the caller of the engine. */
  readonly removals: readonly Removal[];
  readonly message: EncodedMessage;
}

/** What the executor reads and writes to: the registries, the limits, and the transports' fan-out boundaries. */
export interface FanOutDeps {
  readonly connections: ConnectionRegistry;
  readonly rooms: RoomRegistry;
  readonly limits: BroadcastLimits;
  readonly classifier: ErrorClassifier;
  /** Told where each fan-out starts and ends (write coalescing lives there). */
  readonly observers: ReadonlySet<FanOutObserver>;
  readonly monitor: ExecutionMonitor;
  /** Put room names on spans (the app opted in). */
  readonly traceRoomNames: boolean;
  /** Rooms that keep a history (undefined: none). */
  readonly history: RoomHistory | undefined;
  readonly log: (level: 'warn' | 'error', message: string, error?: unknown) => void;
  /** Time a fan-out runs before it yields to the event loop (0: never yields). */
  readonly sliceMs: number;
}

const noRemovals: readonly Removal[] = Object.freeze([]);

/** The clock is read once every this many recipients (a mask: 128). */
const CLOCK_EVERY = 0x7f;
/**
 * The first slice writes to at least this many recipients, whatever the clock says: a fan-out to
 * 1,000 connections (a few ms) is never cut, so a burst of them still leaves each socket in one
 * write. Once a fan-out is cut, its later slices are bound by the clock only.
 */
export const MIN_SLICE_RECIPIENTS = 1_024;

/**
 * One fan-out: writes the message to each recipient once and counts what happened to each.
 * `start()` walks the registries live until the fan-out is done or its time slice is spent; what
 * is left is then a snapshot (an array: a Set's live iterator would visit again a member that left
 * and rejoined in between), delivered slice by slice with `resume()`.
 */
export class FanOutRun {
  readonly #d: FanOutDeps;
  readonly #job: BroadcastJob;
  readonly #message: EncodedMessage;
  readonly #except: ReadonlySet<string> | undefined;
  readonly #deadReason: string;
  readonly #softLimit: number;
  readonly #sliceMs: number;
  #deadline = 0;
  #visited = 0;
  /** Recipients the current slice reaches before the clock counts. */
  #floor = MIN_SLICE_RECIPIENTS;
  #recipients = 0;
  #delivered = 0;
  #failed = 0;
  #dropped = 0;
  #removals: Removal[] | undefined;

  constructor(d: FanOutDeps, job: BroadcastJob) {
    this.#d = d;
    this.#job = job;
    const req = job.request;
    this.#message = job.publication ?? (job.encoded as EncodedMessage);
    this.#except = req.except && req.except.length > 0 ? new Set(req.except) : undefined;
    this.#deadReason = req.deadConnectionReason ?? CloseReason.ConnectionLost;
    this.#softLimit = Math.min(d.limits.volatileBufferedBytes, d.limits.maxBufferedBytes);
    this.#sliceMs = d.sliceMs;
  }

  /** Delivers until done (undefined) or until the slice is spent: then returns the recipients left. */
  start(): ConnectionEntry[] | undefined {
    const d = this.#d;
    const req = this.#job.request;
    this.#open();
    try {
      switch (req.operation) {
        case 'all':
          return this.#walk(d.connections.entries());
        case 'user':
          return this.#walk(d.connections.byUser(req.userId as string).values());
        case 'room':
          return this.#walkIds(d.rooms.members(req.room as string).values());
        case 'connections':
          return this.#walkIds(new Set<string>(req.connectionIds as readonly string[]).values());
      }
    } finally {
      this.#close();
    }
    return undefined;
  }

  /** Delivers `rest[from..]` until done or the slice is spent; returns where the next slice starts (`rest.length`: done). */
  resume(rest: readonly ConnectionEntry[], from: number): number {
    this.#floor = 0;
    this.#open();
    try {
      let i = from;
      while (i < rest.length) {
        this.#deliver(rest[i] as ConnectionEntry);
        i += 1;
        if (this.#spent()) break;
      }
      return i;
    } finally {
      this.#close();
    }
  }

  finish(): FanOut {
    const d = this.#d;
    const req = this.#job.request;
    d.monitor.recordDeliveries(this.#delivered, req.operation);
    d.monitor.recordDropped('backpressure', this.#dropped);
    return {
      operation: req.operation,
      recipients: this.#recipients,
      delivered: this.#delivered,
      failed: this.#failed,
      dropped: this.#dropped,
      removals: this.#removals ?? noRemovals,
      message: this.#message,
    };
  }

  #open(): void {
    this.#visited = 0;
    if (this.#sliceMs > 0) this.#deadline = performance.now() + this.#sliceMs;
    for (const observer of this.#d.observers) observer.fanOutStart();
  }

  #close(): void {
    for (const observer of this.#d.observers) observer.fanOutEnd();
  }

  /** True when this slice has used its time (the clock is read every 128 recipients; the first slice reaches MIN_SLICE_RECIPIENTS first). */
  #spent(): boolean {
    const visited = ++this.#visited;
    return (visited & CLOCK_EVERY) === 0 && visited >= this.#floor && this.#sliceMs > 0 && performance.now() >= this.#deadline;
  }

  #walk(entries: Iterator<ConnectionEntry>): ConnectionEntry[] | undefined {
    for (let r = entries.next(); r.done !== true; r = entries.next()) {
      this.#deliver(r.value);
      if (this.#spent()) return this.#rest(entries, (entry) => entry);
    }
    return undefined;
  }

  #walkIds(ids: Iterator<string>): ConnectionEntry[] | undefined {
    const connections = this.#d.connections;
    for (let r = ids.next(); r.done !== true; r = ids.next()) {
      const entry = connections.get(r.value);
      if (entry) this.#deliver(entry);
      if (this.#spent()) return this.#rest(ids, (id) => connections.get(id));
    }
    return undefined;
  }

  /** The recipients not reached yet, as they are now; undefined when there are none. */
  #rest<T>(left: Iterator<T>, toEntry: (item: T) => ConnectionEntry | undefined): ConnectionEntry[] | undefined {
    const rest: ConnectionEntry[] = [];
    for (let r = left.next(); r.done !== true; r = left.next()) {
      const entry = toEntry(r.value);
      if (entry) rest.push(entry);
    }
    return rest.length > 0 ? rest : undefined;
  }

  #remove(entry: ConnectionEntry, removal: Removal): void {
    entry.isClosing = true; // a later fan-out counts it as failed, not removed again
    (this.#removals ??= []).push(removal);
  }

  #deliver(entry: ConnectionEntry): void {
    if (this.#except?.has(entry.id)) return;
    this.#recipients += 1;
    // Closing, or unregistered since an earlier slice of this fan-out: accounted for, not written.
    if (entry.isClosing) {
      this.#failed += 1;
      return;
    }
    const message = this.#message;
    if (entry.recovering !== undefined) {
      entry.recovering.push(message); // sent right after the messages it missed
      this.#delivered += 1;
      return;
    }
    const conn = entry.connection;
    if (!conn.isOpen) {
      this.#failed += 1;
      this.#remove(entry, { entry, code: CloseCode.GoingAway, reason: this.#deadReason, cause: 'connection_lost' });
      return;
    }
    const buffered = conn.bufferedBytes;
    if (buffered > this.#softLimit) {
      if (buffered > this.#d.limits.maxBufferedBytes) {
        this.#failed += 1;
        this.#remove(entry, { entry, code: CloseCode.TryAgainLater, reason: CloseReason.SlowConsumer, cause: 'slow_consumer', terminateAfterMs: 1_000 });
        return;
      }
      if (message.volatile) {
        this.#dropped += 1;
        return;
      }
    }
    try {
      conn.send(message);
      entry.messageCount += 1;
      this.#delivered += 1;
    } catch (error) {
      this.#failed += 1;
      const d = this.#d;
      const category = d.classifier.classifySendError(error);
      d.monitor.recordError(category);
      if (category === 'connection-dead') {
        this.#remove(entry, { entry, code: CloseCode.GoingAway, reason: this.#deadReason, cause: 'connection_lost' });
      } else {
        entry.errorCount += 1;
        d.log('warn', `send to connection ${entry.id} failed`, error);
      }
    }
  }
}
