import { SpanKind, context as otelContext, trace, type Attributes, type Context, type Link, type Span } from '@opentelemetry/api';
import { toBcastError, type BcastError } from '../errors/BcastError.js';
import type { ErrorClassifier } from '../errors/classify.js';
import type { ExecutionMonitor, OperationKind, Outcome } from '../monitor/ExecutionMonitor.js';
import type { AttemptsCarrier, ReliabilityManager } from '../reliability/ReliabilityManager.js';

/** How an operation presents itself to the engine (names, span, reliability scope). */
export interface ExecutionDescription {
  /** Name in stats and the `bcast.operation` attribute (e.g. `all`, `room`). */
  readonly operation: string;
  /** Counted as a broadcast of this node (`local`) or as the delivery of another node's (`remote`). @default 'local' */
  readonly kind?: OperationKind;
  /** @default 'bcast.execute' */
  readonly spanName?: string;
  /** @default SpanKind.INTERNAL */
  readonly spanKind?: SpanKind;
  readonly attributes?: Attributes;
  /** When set, `executeCoreLogic` runs under this reliability scope (retry, breaker, timeout). */
  readonly reliabilityScope?: string;
}

/** What `executeCoreLogic` gets besides the context. */
export interface ExecutionRun {
  readonly span: Span;
  readonly attempt: number;
  readonly signal: AbortSignal | undefined;
}

/** Anything the engine can run: validate first, then execute. */
export interface ExecutionInterface<C, R> {
  describe(context: C): ExecutionDescription;
  /** Throws a BcastError when the context is not acceptable; nothing has been done yet. */
  validatePreconditions(context: C): void | Promise<void>;
  /** Work needed before anything is sent, after validation (e.g. recording the message in a room's history). A throw fails the operation. */
  prepare?(context: C): void | Promise<void> | undefined;
  executeCoreLogic(context: C, run: ExecutionRun): R | Promise<R>;
  /** Outcome and span attributes of a result. @default success, no attributes */
  summarize?(result: R, context: C, propagation: PropagationOutcome | undefined): { outcome: Exclude<Outcome, 'rejected'>; attributes?: Attributes };
}

/**
 * A step the engine runs beside the core logic, under its own reliability scope: the propagation
 * of a broadcast to other nodes. It starts before the core logic (it is asynchronous, so remote
 * clients do not wait for the local fan-out) and its outcome never fails the operation.
 */
export interface Propagation<C> {
  readonly scope: string;
  /** False when there is nothing to propagate (single node, local-only). */
  wanted(context: C): boolean;
  propagate(context: C, signal: AbortSignal): Promise<void>;
  /** Called once when the step failed for good; says what that means: `unknown` when the work may still have happened (a timeout). */
  failed(error: BcastError, context: C): 'failed' | 'unknown';
  /** Called once when the step succeeded for good. */
  published?(context: C): void;
}

export type PropagationStatus = 'published' | 'failed' | 'unknown';

export interface PropagationOutcome {
  readonly status: PropagationStatus;
  readonly error?: BcastError;
  readonly attempts: number;
}

export type ExecutionStatus = Outcome;

export interface ExecutionResult<R> {
  readonly status: ExecutionStatus;
  readonly result?: R;
  readonly error?: BcastError;
  readonly durationMs: number;
  /** Times `executeCoreLogic` ran (0 when rejected or refused by an open circuit). */
  readonly attempts: number;
  /** The propagation step's outcome, when one ran. */
  readonly propagation?: PropagationOutcome;
}

export interface ExecuteOptions<C> {
  /** Parent context of the span. @default the active context */
  readonly parent?: Context;
  readonly links?: Link[];
  /** Run this step beside the core logic (see {@link Propagation}). */
  readonly propagation?: Propagation<C> | undefined;
}

/**
 * One place for the life of an operation: span -> validate -> (propagation under its reliability
 * scope, started first) -> execute -> monitor. Never throws: every failure becomes an
 * `ExecutionResult` with a typed error.
 */
export class ExecutionEngine {
  readonly #monitor: ExecutionMonitor;
  readonly #reliability: ReliabilityManager;
  readonly #classifier: ErrorClassifier;

  constructor(deps: { monitor: ExecutionMonitor; reliability: ReliabilityManager; classifier: ErrorClassifier }) {
    this.#monitor = deps.monitor;
    this.#reliability = deps.reliability;
    this.#classifier = deps.classifier;
  }

  async execute<C, R>(executor: ExecutionInterface<C, R>, ctx: C, options: ExecuteOptions<C> = {}): Promise<ExecutionResult<R>> {
    const started = performance.now();
    let description: ExecutionDescription;
    try {
      description = executor.describe(ctx);
    } catch (error) {
      return this.#reject(toBcastError(error), 'unknown', 'local', started);
    }
    const kind = description.kind ?? 'local';
    const parent = options.parent ?? otelContext.active();
    const span = this.#monitor.startSpan(
      description.spanName ?? 'bcast.execute',
      description.spanKind ?? SpanKind.INTERNAL,
      { 'bcast.operation': description.operation, ...description.attributes },
      parent,
      options.links,
    );
    const active = trace.setSpan(parent, span);
    let attempts = 0;
    try {
      try {
        await otelContext.with(active, () => executor.validatePreconditions(ctx));
      } catch (error) {
        const err = toBcastError(error);
        this.#monitor.failSpan(span, err, err.code);
        span.setAttribute('bcast.error.code', err.code);
        return this.#reject(err, description.operation, kind, started);
      }
      const step = options.propagation;
      let propagating: Promise<PropagationOutcome> | undefined;
      let result: R;
      try {
        // Awaited only when there is work: a broadcast with nothing to prepare reaches its sockets a microtask sooner.
        const preparing = executor.prepare === undefined ? undefined : otelContext.with(active, () => executor.prepare?.(ctx));
        if (preparing !== undefined) await preparing;
        propagating = step !== undefined && step.wanted(ctx) ? otelContext.with(active, () => this.#propagate(step, ctx, span)) : undefined;
        result = await otelContext.with(active, async () => {
          if (description.reliabilityScope === undefined) {
            attempts = 1;
            return executor.executeCoreLogic(ctx, { span, attempt: 1, signal: undefined });
          }
          const outcome = await this.#reliability.execute(description.reliabilityScope, ({ attempt, signal }) => {
            attempts = attempt;
            return executor.executeCoreLogic(ctx, { span, attempt, signal });
          });
          return outcome.value;
        });
      } catch (error) {
        const carried = (error as AttemptsCarrier | undefined)?.attempts;
        if (typeof carried === 'number') attempts = carried;
        const err = toBcastError(error);
        this.#monitor.recordError(this.#classifier.classify(error));
        this.#monitor.failSpan(span, error, err.code);
        span.setAttributes({ 'bcast.error.code': err.code, 'bcast.attempts': attempts });
        const propagation = propagating === undefined ? undefined : await propagating;
        const durationMs = performance.now() - started;
        this.#monitor.recordOperation(description.operation, 'failed', durationMs, kind);
        return { status: 'failed', error: err, durationMs, attempts, ...(propagation ? { propagation } : {}) };
      }
      const propagation = propagating === undefined ? undefined : await propagating;
      const summary = executor.summarize?.(result, ctx, propagation) ?? { outcome: 'success' as const };
      if (summary.attributes) span.setAttributes(summary.attributes);
      span.setAttribute('bcast.attempts', attempts);
      const durationMs = performance.now() - started;
      this.#monitor.recordOperation(description.operation, summary.outcome, durationMs, kind);
      return { status: summary.outcome, result, durationMs, attempts, ...(propagation ? { propagation } : {}) };
    } finally {
      span.end();
    }
  }

  /** Runs the propagation step under its scope; never rejects. */
  async #propagate<C>(step: Propagation<C>, ctx: C, span: Span): Promise<PropagationOutcome> {
    try {
      const { attempts } = await this.#reliability.execute(step.scope, ({ signal }) => step.propagate(ctx, signal));
      step.published?.(ctx);
      return { status: 'published', attempts };
    } catch (error) {
      const err = toBcastError(error);
      const attempts = (error as AttemptsCarrier | undefined)?.attempts ?? 0;
      const status = step.failed(err, ctx);
      this.#monitor.recordError(this.#classifier.classify(error));
      span.addEvent(status === 'unknown' ? 'bcast.propagation.unknown' : 'bcast.propagation.failed', { 'bcast.error.code': err.code, 'bcast.scope': step.scope });
      return { status, error: err, attempts };
    }
  }

  #reject(error: BcastError, operation: string, kind: OperationKind, started: number): ExecutionResult<never> {
    const durationMs = performance.now() - started;
    // Another node's invalid envelope is neither a caller error nor a remote broadcast: the bridge counts it as dropped.
    if (kind === 'local') {
      this.#monitor.recordError('caller');
      this.#monitor.recordOperation(operation, 'rejected', durationMs, kind);
    }
    return { status: 'rejected', error, durationMs, attempts: 0 };
  }
}
