import { SpanKind, type Attributes } from '@opentelemetry/api';
import { encodeMessage, type EncodedMessage } from '../connection/EncodedMessage.js';
import type { FanOutObserver } from '../connection/FanOutObserver.js';
import { BcastError } from '../errors/BcastError.js';
import type { ErrorClassifier } from '../errors/classify.js';
import { CloseCode, CloseReason, ErrorCode } from '../errors/codes.js';
import { dataOf, type Publication, type RoomHistory } from '../history/RoomHistory.js';
import type { ExecutionMonitor } from '../monitor/ExecutionMonitor.js';
import type { ConnectionEntry, ConnectionRegistry } from '../registry/ConnectionRegistry.js';
import type { RoomRegistry } from '../registry/RoomRegistry.js';
import type { ExecutionDescription, ExecutionInterface, ExecutionResult, PropagationOutcome } from './ExecutionEngine.js';
import { BROADCAST_OPERATIONS, type BroadcastContext, type BroadcastOperation, type BroadcastResult } from './types.js';
import { validateConnectionIds, validateRoomId, validateUserId, type IdLimits } from './validate.js';

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
}

const noRemovals: readonly Removal[] = Object.freeze([]);

/**
 * all / user / room / connection-id fan-out with an `except` list. Encodes once (in validation,
 * before anything is sent), tells the transports where the fan-out starts and ends, writes to each
 * target exactly once and accounts for every recipient. It returns what it found (dead and slow
 * connections) instead of acting on it: the layer that owns the registries closes them.
 */
export class BroadcastExecutor implements ExecutionInterface<BroadcastJob, FanOut> {
  readonly #deps: FanOutDeps;

  constructor(deps: FanOutDeps) {
    this.#deps = deps;
  }

  describe(job: BroadcastJob): ExecutionDescription {
    const request = job.request as BroadcastContext | undefined;
    const operation = typeof request?.operation === 'string' ? request.operation : 'unknown';
    if (job.origin === 'remote') {
      return {
        operation,
        kind: 'remote',
        spanName: 'bcast.deliver',
        spanKind: SpanKind.CONSUMER,
        attributes: {
          'messaging.system': 'bcast',
          'messaging.operation.type': 'process',
          'messaging.operation.name': 'deliver',
          ...(job.source ? { 'messaging.message.id': job.source.envelopeId, 'bcast.source_node': job.source.nodeId } : {}),
        },
      };
    }
    const attributes: Attributes = { 'messaging.system': 'bcast', 'messaging.operation.type': 'send', 'messaging.operation.name': 'broadcast' };
    if (this.#deps.traceRoomNames && operation === 'room' && typeof request?.room === 'string') attributes['messaging.destination.name'] = request.room;
    return { operation, spanName: 'bcast.broadcast', spanKind: SpanKind.PRODUCER, attributes };
  }

  /** Same checks for a caller's broadcast and for one arriving from another node. */
  validatePreconditions(job: BroadcastJob): void {
    const req = job.request as BroadcastContext | undefined;
    if (typeof req !== 'object' || req === null) {
      throw new BcastError(ErrorCode.UnknownOperation, 'a broadcast needs a context object');
    }
    if (!BROADCAST_OPERATIONS.includes(req.operation)) {
      throw new BcastError(ErrorCode.UnknownOperation, `unknown broadcast operation ${JSON.stringify(String(req.operation))}; expected one of ${BROADCAST_OPERATIONS.join(', ')}`, {
        details: { operation: String(req.operation) },
      });
    }
    const limits = this.#deps.limits;
    if (req.operation === 'user') validateUserId(req.userId, limits);
    else if (req.operation === 'room') validateRoomId(req.room, limits);
    else if (req.operation === 'connections') validateConnectionIds(req.connectionIds, 'connectionIds');
    if (req.except !== undefined) validateConnectionIds(req.except, 'except');
    if (job.encoded === undefined) {
      job.encoded = encodeMessage(req.message, { maxBytes: limits.maxMessageBytes, volatile: req.volatile === true });
    } else if (job.encoded.byteLength > limits.maxMessageBytes) {
      throw new BcastError(ErrorCode.MessageTooLarge, `message is ${job.encoded.byteLength} bytes; the limit is ${limits.maxMessageBytes} (maxMessageBytes)`, {
        details: { bytes: job.encoded.byteLength, maxBytes: limits.maxMessageBytes },
      });
    }
    if (job.origin === 'local' && req.operation === 'room' && req.ephemeral !== true && this.#deps.history?.has(req.room as string)) dataOf(job.encoded);
  }

  /** A broadcast to a room with history is recorded first: every recipient, here and on other nodes, gets its position. */
  prepare(job: BroadcastJob): Promise<void> | undefined {
    const history = this.#deps.history;
    const room = job.request.room;
    if (history === undefined || job.origin !== 'local' || job.request.operation !== 'room' || job.request.ephemeral === true || !history.has(room as string)) return undefined;
    const recorded = history.record(room as string, job.encoded as EncodedMessage);
    if (!(recorded instanceof Promise)) {
      job.publication = recorded;
      return undefined;
    }
    return recorded.then((publication) => void (job.publication = publication));
  }

  executeCoreLogic(job: BroadcastJob): FanOut {
    const req = job.request;
    const message = job.publication ?? (job.encoded as EncodedMessage);
    const d = this.#deps;
    const except = req.except && req.except.length > 0 ? new Set(req.except) : undefined;
    const deadReason = req.deadConnectionReason ?? CloseReason.ConnectionLost;
    const { maxBufferedBytes } = d.limits;
    const softLimit = Math.min(d.limits.volatileBufferedBytes, maxBufferedBytes);
    let recipients = 0;
    let delivered = 0;
    let failed = 0;
    let dropped = 0;
    let removals: Removal[] | undefined;
    const remove = (entry: ConnectionEntry, removal: Removal): void => {
      entry.isClosing = true; // a later fan-out in this tick counts it as failed, not removed again
      (removals ??= []).push(removal);
    };

    const deliver = (entry: ConnectionEntry): void => {
      if (except?.has(entry.id)) return;
      recipients += 1;
      if (entry.isClosing) {
        failed += 1;
        return;
      }
      if (entry.recovering !== undefined) {
        entry.recovering.push(message); // sent right after the messages it missed
        delivered += 1;
        return;
      }
      const conn = entry.connection;
      if (!conn.isOpen) {
        failed += 1;
        remove(entry, { entry, code: CloseCode.GoingAway, reason: deadReason, cause: 'connection_lost' });
        return;
      }
      const buffered = conn.bufferedBytes;
      if (buffered > softLimit) {
        if (buffered > maxBufferedBytes) {
          failed += 1;
          remove(entry, { entry, code: CloseCode.TryAgainLater, reason: CloseReason.SlowConsumer, cause: 'slow_consumer', terminateAfterMs: 1_000 });
          return;
        }
        if (message.volatile) {
          dropped += 1;
          return;
        }
      }
      try {
        conn.send(message);
        entry.messageCount += 1;
        delivered += 1;
      } catch (error) {
        failed += 1;
        const category = d.classifier.classifySendError(error);
        d.monitor.recordError(category);
        if (category === 'connection-dead') {
          remove(entry, { entry, code: CloseCode.GoingAway, reason: deadReason, cause: 'connection_lost' });
        } else {
          entry.errorCount += 1;
          d.log('warn', `send to connection ${entry.id} failed`, error);
        }
      }
    };

    for (const observer of d.observers) observer.fanOutStart();
    try {
      switch (req.operation) {
        case 'all':
          for (const entry of d.connections.entries()) deliver(entry);
          break;
        case 'user':
          for (const entry of d.connections.byUser(req.userId as string)) deliver(entry);
          break;
        case 'room':
          for (const id of d.rooms.members(req.room as string)) {
            const entry = d.connections.get(id);
            if (entry) deliver(entry);
          }
          break;
        case 'connections':
          for (const id of new Set(req.connectionIds)) {
            const entry = d.connections.get(id);
            if (entry) deliver(entry);
          }
          break;
      }
    } finally {
      for (const observer of d.observers) observer.fanOutEnd();
    }
    d.monitor.recordDeliveries(delivered, req.operation);
    d.monitor.recordDropped('backpressure', dropped);
    return { operation: req.operation, recipients, delivered, failed, dropped, removals: removals ?? noRemovals, message };
  }

  summarize(result: FanOut, _job: BroadcastJob, propagation: PropagationOutcome | undefined): { outcome: 'success' | 'partial'; attributes: Attributes } {
    const attributes: Attributes = {
      'bcast.recipients': result.recipients,
      'bcast.delivered': result.delivered,
      'bcast.failed': result.failed,
      'bcast.dropped': result.dropped,
      'bcast.removed': result.removals.length,
      'messaging.message.body.size': result.message.byteLength,
    };
    if (propagation !== undefined) attributes['bcast.backplane'] = propagation.status;
    if (result.message.type !== undefined) attributes['bcast.message.type'] = result.message.type;
    const clean = result.failed === 0 && propagation?.status !== 'failed';
    return { outcome: clean ? 'success' : 'partial', attributes };
  }
}

/** The public result of a broadcast: what the fan-out did, the engine's duration and the propagation's outcome. */
export function toBroadcastResult(f: FanOut, outcome: ExecutionResult<FanOut>): BroadcastResult {
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
