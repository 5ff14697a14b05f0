import { SpanKind, type Attributes } from '@opentelemetry/api';
import { encodeMessage, type EncodedMessage } from '../connection/EncodedMessage.js';
import type { FanOutObserver } from '../connection/FanOutObserver.js';
import { BcastError } from '../errors/BcastError.js';
import type { ErrorClassifier } from '../errors/classify.js';
import { ErrorCode } from '../errors/codes.js';
import { dataOf, type Publication, type RoomHistory } from '../history/RoomHistory.js';
import type { ExecutionMonitor } from '../monitor/ExecutionMonitor.js';
import type { ConnectionEntry, ConnectionRegistry } from '../registry/ConnectionRegistry.js';
import type { RoomRegistry } from '../registry/RoomRegistry.js';
import { FanOutRun, type BroadcastJob, type FanOut, type FanOutDeps } from './FanOutRun.js';
import type { ExecutionDescription, ExecutionInterface, ExecutionResult, PropagationOutcome } from './ExecutionEngine.js';
import { BROADCAST_OPERATIONS, type BroadcastContext, type BroadcastOperation, type BroadcastResult } from './types.js';
import { validateConnectionIds, validateRoomId, validateUserId, type IdLimits } from './validate.js';

export type { BroadcastJob, BroadcastLimits, FanOut, FanOutDeps, Removal, RemovalReason } from './FanOutRun.js';

interface Waiter {
  readonly job: BroadcastJob;
  readonly resolve: (fanOut: FanOut) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * all / user / room / connection-id fan-out with an `except` list. Encodes once (in validation,
 * before anything is sent), tells the transports where the fan-out starts and ends, writes to each
 * target exactly once and accounts for every recipient. It returns what it found (dead and slow
 * connections) instead of acting on it: the layer that owns the registries closes them.
 */
export class BroadcastExecutor implements ExecutionInterface<BroadcastJob, FanOut> {
  readonly #deps: FanOutDeps;
  /** Set while a sliced fan-out is under way: the fan-outs waiting behind it. */
  #waiting: Waiter[] | undefined;

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

  /**
   * Fans the message out. A fan-out that outlasts its time slice (`fanOutSliceMs`) yields to the
   * event loop and goes on in the next turn; the fan-outs that come meanwhile wait behind it, in
   * call order, so every connection still gets broadcasts in the order they were made.
   */
  executeCoreLogic(job: BroadcastJob): FanOut | Promise<FanOut> {
    const waiting = this.#waiting;
    if (waiting !== undefined) return new Promise<FanOut>((resolve, reject) => waiting.push({ job, resolve, reject }));
    const run = new FanOutRun(this.#deps, job);
    const rest = run.start();
    if (rest === undefined) return run.finish();
    this.#waiting = [];
    return new Promise<FanOut>((resolve, reject) => this.#next(run, rest, 0, { job, resolve, reject }));
  }

  /** The next slice of a fan-out, in the next turn of the event loop. */
  #next(run: FanOutRun, rest: readonly ConnectionEntry[], from: number, waiter: Waiter): void {
    setImmediate(() => {
      let at: number;
      try {
        at = run.resume(rest, from);
      } catch (error) {
        waiter.reject(error);
        this.#drain();
        return;
      }
      if (at < rest.length) return this.#next(run, rest, at, waiter);
      waiter.resolve(run.finish());
      this.#drain();
    });
  }

  /** Runs the fan-outs that waited behind a sliced one, in order, until one of them is sliced in turn. */
  #drain(): void {
    const waiting = this.#waiting ?? [];
    this.#waiting = undefined;
    for (let i = 0; i < waiting.length; i += 1) {
      const w = waiting[i] as Waiter;
      try {
        const run = new FanOutRun(this.#deps, w.job);
        const rest = run.start();
        if (rest === undefined) {
          w.resolve(run.finish());
          continue;
        }
        this.#waiting = waiting.slice(i + 1); // still ahead of anything that comes later
        this.#next(run, rest, 0, w);
        return;
      } catch (error) {
        w.reject(error);
      }
    }
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
