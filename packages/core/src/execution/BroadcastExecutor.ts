import { SpanKind, type Attributes } from '@opentelemetry/api';
import type { Connection } from '../connection/Connection.js';
import { encodeMessage, type EncodedMessage } from '../connection/EncodedMessage.js';
import { BcastError } from '../errors/BcastError.js';
import type { ErrorClassifier } from '../errors/classify.js';
import { CloseCode, CloseReason, ErrorCode } from '../errors/codes.js';
import type { ExecutionMonitor } from '../monitor/ExecutionMonitor.js';
import type { ConnectionEntry, ConnectionRegistry } from '../registry/ConnectionRegistry.js';
import type { RoomRegistry } from '../registry/RoomRegistry.js';
import type { ExecutionDescription, ExecutionInterface, ExecutionRun } from './ExecutionEngine.js';
import { BROADCAST_OPERATIONS, type BackplaneStatus, type BroadcastContext, type BroadcastResult } from './types.js';
import { validateConnectionIds, validateRoomId, validateUserId, type IdLimits } from './validate.js';

/** A broadcast in flight: the caller's context plus what validation produced. */
export interface BroadcastJob {
  readonly request: BroadcastContext;
  encoded: EncodedMessage | undefined;
}

export interface BroadcastLimits extends IdLimits {
  readonly maxMessageBytes: number;
  /** Above this many buffered bytes a connection is a slow consumer: closed with 1013. */
  readonly maxBufferedBytes: number;
  /** Above this many buffered bytes, `volatile` messages are dropped for that connection. */
  readonly volatileBufferedBytes: number;
}

/** Why bcast removed a connection, as counted in `bcast.disconnects`. */
export type RemovalReason = 'connection_lost' | 'slow_consumer' | 'no_pong' | 'policy_violation' | 'shutdown';

/** What the executor needs from its owner (the Broadcaster). */
export interface BroadcastRuntime {
  readonly connections: ConnectionRegistry;
  readonly rooms: RoomRegistry;
  readonly monitor: ExecutionMonitor;
  readonly classifier: ErrorClassifier;
  readonly limits: BroadcastLimits;
  readonly log: (level: 'warn' | 'error', message: string, error?: unknown) => void;
  /** Closes and unregisters a connection; `terminateAfterMs` forces it shut if it does not close. */
  removeConnection(entry: ConnectionEntry, code: number, reason: string, metricReason: RemovalReason, terminateAfterMs?: number): void;
  /** Propagates to other nodes; never throws. */
  publish(job: BroadcastJob, message: EncodedMessage): Promise<{ status: BackplaneStatus; error?: ErrorCode }>;
}

/**
 * all / user / room / connection-id fan-out with an `except` list. Encodes once (in validation,
 * before anything is sent), writes to each target exactly once, accounts for every recipient.
 */
export class BroadcastExecutor implements ExecutionInterface<BroadcastJob, BroadcastResult> {
  readonly #rt: BroadcastRuntime;

  constructor(runtime: BroadcastRuntime) {
    this.#rt = runtime;
  }

  describe(job: BroadcastJob): ExecutionDescription {
    const { request } = job;
    const operation = typeof request?.operation === 'string' ? request.operation : 'unknown';
    const attributes: Attributes = {
      'messaging.system': 'bcast',
      'messaging.operation.type': 'publish',
      'messaging.operation.name': 'broadcast',
    };
    if (operation === 'room' && typeof request.room === 'string') attributes['messaging.destination.name'] = request.room;
    return { operation, spanName: 'bcast.broadcast', spanKind: SpanKind.PRODUCER, attributes };
  }

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
    const limits = this.#rt.limits;
    if (req.operation === 'user') validateUserId(req.userId, limits);
    else if (req.operation === 'room') validateRoomId(req.room, limits);
    else if (req.operation === 'connections') validateConnectionIds(req.connectionIds, 'connectionIds');
    if (req.except !== undefined) validateConnectionIds(req.except, 'except');
    job.encoded = req.encoded ?? encodeMessage(req.message, { maxBytes: limits.maxMessageBytes, volatile: req.volatile === true });
  }

  async executeCoreLogic(job: BroadcastJob, run: ExecutionRun): Promise<BroadcastResult> {
    const started = performance.now();
    const req = job.request;
    const message = job.encoded as EncodedMessage;
    const rt = this.#rt;
    const except = req.except && req.except.length > 0 ? new Set(req.except) : undefined;
    const deadReason = req.deadConnectionReason ?? CloseReason.ConnectionLost;
    const { maxBufferedBytes } = rt.limits;
    const softLimit = Math.min(rt.limits.volatileBufferedBytes, maxBufferedBytes);
    let recipients = 0;
    let delivered = 0;
    let failed = 0;
    let dropped = 0;
    let removed = 0;

    const deliver = (entry: ConnectionEntry): void => {
      if (except?.has(entry.id)) return;
      recipients += 1;
      if (entry.isClosing) {
        failed += 1;
        return;
      }
      const conn: Connection = entry.connection;
      if (!conn.isOpen) {
        failed += 1;
        removed += 1;
        rt.removeConnection(entry, CloseCode.GoingAway, deadReason, 'connection_lost');
        return;
      }
      const buffered = conn.bufferedBytes;
      if (buffered > softLimit) {
        if (buffered > maxBufferedBytes) {
          failed += 1;
          removed += 1;
          rt.removeConnection(entry, CloseCode.TryAgainLater, CloseReason.SlowConsumer, 'slow_consumer', 1_000);
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
        const category = rt.classifier.classifySendError(error);
        rt.monitor.recordError(category);
        if (category === 'connection-dead') {
          removed += 1;
          rt.removeConnection(entry, CloseCode.GoingAway, deadReason, 'connection_lost');
        } else {
          entry.errorCount += 1;
          rt.log('warn', `send to connection ${entry.id} failed`, error);
        }
      }
    };

    switch (req.operation) {
      case 'all':
        for (const entry of rt.connections.entries()) deliver(entry);
        break;
      case 'user':
        for (const entry of rt.connections.byUser(req.userId as string)) deliver(entry);
        break;
      case 'room':
        for (const id of rt.rooms.members(req.room as string)) {
          const entry = rt.connections.get(id);
          if (entry) deliver(entry);
        }
        break;
      case 'connections':
        for (const id of new Set(req.connectionIds)) {
          const entry = rt.connections.get(id);
          if (entry) deliver(entry);
        }
        break;
    }
    rt.monitor.recordDeliveries(delivered, req.operation);
    rt.monitor.recordDropped('backpressure', dropped);

    const backplane = req.localOnly ? { status: 'skipped' as const } : await rt.publish(job, message);
    if (backplane.status === 'failed') run.span.addEvent('bcast.backplane.publish_failed', { 'bcast.error.code': backplane.error ?? ErrorCode.BackplaneUnavailable });
    return {
      operation: req.operation,
      recipients,
      delivered,
      failed,
      dropped,
      removed,
      durationMs: performance.now() - started,
      ...(message.type === undefined ? {} : { messageType: message.type }),
      messageBytes: message.byteLength,
      backplane: backplane.status,
      ...(backplane.error === undefined ? {} : { backplaneError: backplane.error }),
    };
  }

  summarize(result: BroadcastResult): { outcome: 'success' | 'partial'; attributes: Attributes } {
    const attributes: Attributes = {
      'bcast.recipients': result.recipients,
      'bcast.delivered': result.delivered,
      'bcast.failed': result.failed,
      'bcast.dropped': result.dropped,
      'bcast.removed': result.removed,
      'bcast.backplane': result.backplane,
      'messaging.message.body.size': result.messageBytes,
    };
    if (result.messageType !== undefined) attributes['bcast.message.type'] = result.messageType;
    const clean = result.failed === 0 && result.backplane !== 'failed';
    return { outcome: clean ? 'success' : 'partial', attributes };
  }
}
