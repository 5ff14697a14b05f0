import {
  SpanStatusCode,
  context as otelContext,
  metrics,
  trace,
  type Attributes,
  type Context,
  type Counter,
  type Histogram,
  type SpanKind,
  type Link,
  type Meter,
  type MeterProvider,
  type Span,
  type Tracer,
  type TracerProvider,
  type ObservableCallback,
  type ObservableGauge,
  type UpDownCounter,
} from '@opentelemetry/api';
import type { ErrorCategory } from '../errors/classify.js';
import type { CircuitStateName, ScopeState } from '../reliability/ReliabilityManager.js';
import { VERSION } from '../version.js';

export interface MonitorOptions {
  /** @default the global tracer provider (a no-op until an SDK registers one) */
  tracerProvider?: TracerProvider;
  /** @default the global meter provider */
  meterProvider?: MeterProvider;
  /** Latencies kept per operation for percentiles. @default 1024 */
  latencySampleSize?: number;
}

export type Outcome = 'success' | 'partial' | 'failed' | 'rejected';

/** A broadcast called on this node (`local`), or the delivery here of another node's broadcast (`remote`). */
export type OperationKind = 'local' | 'remote';

export interface OperationStats {
  readonly count: number;
  readonly success: number;
  readonly partial: number;
  readonly failed: number;
  readonly rejected: number;
  readonly successRate: number;
  readonly errorRate: number;
  readonly latencyMs: { readonly p50: number; readonly p95: number; readonly p99: number; readonly max: number };
}

export interface OperationTotals {
  readonly count: number;
  readonly successRate: number;
  readonly errorRate: number;
}

export interface MonitorStats {
  /** Broadcasts called on this node, by operation. */
  readonly operations: Readonly<Record<string, OperationStats>>;
  readonly totals: OperationTotals;
  /** Other nodes' broadcasts delivered here, by operation. */
  readonly remote: { readonly operations: Readonly<Record<string, OperationStats>>; readonly totals: OperationTotals };
  readonly errorsByCategory: Readonly<Record<ErrorCategory, number>>;
  readonly deliveries: number;
  readonly dropped: Readonly<Record<string, number>>;
  readonly disconnects: Readonly<Record<string, number>>;
  readonly inboundRejected: Readonly<Record<string, number>>;
  readonly backplane: BackplaneCounts;
}

export interface BackplaneCounts {
  readonly published: number;
  /** Publishes that failed: not propagated. */
  readonly publishErrors: number;
  /** Publishes that timed out: they may still have been delivered. */
  readonly publishUnknown: number;
  readonly received: number;
  /** Envelopes from the backplane that were dropped (invalid, oversize, unsigned...), by reason. */
  readonly dropped: Readonly<Record<string, number>>;
  /** Sum of `dropped`. */
  readonly discarded: number;
}

class OperationRecord {
  count = 0;
  success = 0;
  partial = 0;
  failed = 0;
  rejected = 0;
  readonly #samples: Float64Array;
  #next = 0;
  #filled = 0;

  constructor(size: number) {
    this.#samples = new Float64Array(size);
  }

  add(outcome: Outcome, durationMs: number): void {
    this.count += 1;
    this[outcome] += 1;
    this.#samples[this.#next] = durationMs;
    this.#next = (this.#next + 1) % this.#samples.length;
    if (this.#filled < this.#samples.length) this.#filled += 1;
  }

  snapshot(): OperationStats {
    const sorted = Array.from(this.#samples.subarray(0, this.#filled)).sort((a, b) => a - b);
    const pick = (q: number): number => (sorted.length === 0 ? 0 : round(sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? 0));
    const accepted = this.count - this.rejected;
    return {
      count: this.count,
      success: this.success,
      partial: this.partial,
      failed: this.failed,
      rejected: this.rejected,
      successRate: this.count === 0 ? 1 : round(this.success / this.count),
      errorRate: accepted === 0 ? 0 : round(this.failed / accepted),
      latencyMs: { p50: pick(0.5), p95: pick(0.95), p99: pick(0.99), max: round(sorted.at(-1) ?? 0) },
    };
  }
}

const circuitValue: Record<CircuitStateName, number> = { closed: 0, 'half-open': 1, open: 2, isolated: 3 };

/**
 * In-process statistics plus OpenTelemetry spans and metrics, through `@opentelemetry/api` only.
 * Names: tracer and meter `@bcast/core`; span `bcast.broadcast`; metrics `bcast.*` (docs/observability.md).
 * Metric attributes never carry user ids or room names.
 */
export class ExecutionMonitor {
  readonly tracer: Tracer;
  readonly meter: Meter;
  readonly #ops = new Map<string, OperationRecord>();
  readonly #remoteOps = new Map<string, OperationRecord>();
  readonly #sampleSize: number;
  readonly #errors: Record<ErrorCategory, number> = { transient: 0, 'connection-dead': 0, caller: 0, 'circuit-open': 0, other: 0 };
  readonly #dropped: Record<string, number> = {};
  readonly #disconnects: Record<string, number> = {};
  readonly #inboundRejected: Record<string, number> = {};
  readonly #backplane = { published: 0, publishErrors: 0, publishUnknown: 0, received: 0, discarded: 0 };
  readonly #backplaneDropped: Record<string, number> = {};
  #deliveries = 0;
  readonly #broadcasts: Counter;
  readonly #remoteBroadcasts: Counter;
  readonly #backplaneDroppedCounter: Counter;
  readonly #circuitGauge: ObservableGauge;
  readonly #observeCircuits: ObservableCallback;
  readonly #deliveriesCounter: Counter;
  readonly #duration: Histogram;
  readonly #connections: UpDownCounter;
  readonly #droppedCounter: Counter;
  readonly #disconnectsCounter: Counter;
  readonly #publishErrors: Counter;
  readonly #inboundCounter: Counter;
  #circuitSource: (() => Record<string, ScopeState>) | undefined;

  constructor(options: MonitorOptions = {}) {
    this.tracer = (options.tracerProvider ?? trace.getTracerProvider()).getTracer('@bcast/core', VERSION);
    this.meter = (options.meterProvider ?? metrics.getMeterProvider()).getMeter('@bcast/core', VERSION);
    this.#sampleSize = options.latencySampleSize ?? 1024;
    const m = this.meter;
    this.#broadcasts = m.createCounter('bcast.broadcasts', { description: 'Broadcasts called on this node, by operation and outcome', unit: '{broadcast}' });
    this.#remoteBroadcasts = m.createCounter('bcast.remote.broadcasts', { description: "Other nodes' broadcasts delivered on this node, by operation and outcome", unit: '{broadcast}' });
    this.#backplaneDroppedCounter = m.createCounter('bcast.backplane.dropped', { description: 'Envelopes from the backplane dropped (invalid, oversize, unsigned), by reason', unit: '{envelope}' });
    this.#deliveriesCounter = m.createCounter('bcast.deliveries', { description: 'Messages written to connections', unit: '{message}' });
    this.#duration = m.createHistogram('bcast.broadcast.duration', {
      description: 'Duration of a broadcast called on this node',
      unit: 's',
      // Broadcasts take microseconds to milliseconds; the SDK's default buckets start at 5 (seconds, here).
      advice: { explicitBucketBoundaries: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5] },
    });
    this.#connections = m.createUpDownCounter('bcast.connections', { description: 'Open connections', unit: '{connection}' });
    this.#droppedCounter = m.createCounter('bcast.messages.dropped', { description: 'Messages not delivered on purpose, by reason', unit: '{message}' });
    this.#disconnectsCounter = m.createCounter('bcast.disconnects', { description: 'Connections closed by bcast, by close code and reason', unit: '{connection}' });
    this.#publishErrors = m.createCounter('bcast.backplane.publish_errors', { description: 'Backplane publishes that failed', unit: '{publish}' });
    this.#inboundCounter = m.createCounter('bcast.inbound.rejected', { description: 'Client messages rejected, by error code', unit: '{message}' });
    this.#circuitGauge = m.createObservableGauge('bcast.circuit.state', {
      description: 'Circuit state per scope: 0 closed, 1 half-open, 2 open, 3 isolated',
      unit: '{state}',
    });
    this.#observeCircuits = (result) => {
      const states = this.#circuitSource?.() ?? {};
      for (const [scope, s] of Object.entries(states)) result.observe(circuitValue[s.state], { 'bcast.scope': scope });
    };
    this.#circuitGauge.addCallback(this.#observeCircuits);
  }

  /** Unregisters the observable callbacks, so a disposed broadcaster leaves nothing in the MeterProvider. */
  dispose(): void {
    this.#circuitGauge.removeCallback(this.#observeCircuits);
    this.#circuitSource = undefined;
  }

  /** Where `bcast.circuit.state` reads circuit states from. */
  observeCircuits(source: () => Record<string, ScopeState>): void {
    this.#circuitSource = source;
  }

  /** Starts a span as a child of `parent` (default: the active context). */
  startSpan(name: string, kind: SpanKind, attributes: Attributes, parent: Context = otelContext.active(), links?: Link[]): Span {
    return this.tracer.startSpan(name, links === undefined ? { kind, attributes } : { kind, attributes, links }, parent);
  }

  /** Ends a span with an error status. */
  failSpan(span: Span, error: unknown, code?: string): void {
    if (error instanceof Error) span.recordException(error);
    span.setStatus({ code: SpanStatusCode.ERROR, message: code ?? (error instanceof Error ? error.message : String(error)) });
  }

  recordOperation(operation: string, outcome: Outcome, durationMs: number, kind: OperationKind = 'local'): void {
    const ops = kind === 'local' ? this.#ops : this.#remoteOps;
    let record = ops.get(operation);
    if (!record) ops.set(operation, (record = new OperationRecord(this.#sampleSize)));
    record.add(outcome, durationMs);
    const attrs = { 'bcast.operation': operation, 'bcast.outcome': outcome };
    if (kind === 'remote') {
      this.#remoteBroadcasts.add(1, attrs);
      return;
    }
    this.#broadcasts.add(1, attrs);
    this.#duration.record(durationMs / 1000, attrs);
  }

  recordDeliveries(count: number, operation: string): void {
    if (count === 0) return;
    this.#deliveries += count;
    this.#deliveriesCounter.add(count, { 'bcast.operation': operation });
  }

  recordError(category: ErrorCategory): void {
    this.#errors[category] += 1;
  }

  recordDropped(reason: string, count = 1): void {
    if (count === 0) return;
    this.#dropped[reason] = (this.#dropped[reason] ?? 0) + count;
    this.#droppedCounter.add(count, { 'bcast.reason': reason });
  }

  recordDisconnect(code: number, reason: string): void {
    const key = `${code}:${reason}`;
    this.#disconnects[key] = (this.#disconnects[key] ?? 0) + 1;
    this.#disconnectsCounter.add(1, { 'bcast.close_code': code, 'bcast.reason': reason });
  }

  recordInboundRejected(code: string): void {
    this.#inboundRejected[code] = (this.#inboundRejected[code] ?? 0) + 1;
    this.#inboundCounter.add(1, { 'bcast.error_code': code });
  }

  recordBackplane(event: 'published' | 'publish-error' | 'publish-unknown' | 'received'): void {
    if (event === 'published') this.#backplane.published += 1;
    else if (event === 'received') this.#backplane.received += 1;
    else if (event === 'publish-unknown') this.#backplane.publishUnknown += 1;
    else {
      this.#backplane.publishErrors += 1;
      this.#publishErrors.add(1);
    }
  }

  /** An envelope from the backplane that was not delivered (invalid, oversize, unsigned...). */
  recordBackplaneDropped(reason: string): void {
    this.#backplane.discarded += 1;
    this.#backplaneDropped[reason] = (this.#backplaneDropped[reason] ?? 0) + 1;
    this.#backplaneDroppedCounter.add(1, { 'bcast.reason': reason });
  }

  connectionOpened(): void {
    this.#connections.add(1);
  }

  connectionClosed(): void {
    this.#connections.add(-1);
  }

  getStats(): MonitorStats {
    const local = summarize(this.#ops);
    return {
      operations: local.operations,
      totals: local.totals,
      remote: summarize(this.#remoteOps),
      errorsByCategory: { ...this.#errors },
      deliveries: this.#deliveries,
      dropped: { ...this.#dropped },
      disconnects: { ...this.#disconnects },
      inboundRejected: { ...this.#inboundRejected },
      backplane: { ...this.#backplane, dropped: { ...this.#backplaneDropped } },
    };
  }
}

function summarize(ops: ReadonlyMap<string, OperationRecord>): { operations: Record<string, OperationStats>; totals: OperationTotals } {
  const operations: Record<string, OperationStats> = {};
  let count = 0;
  let success = 0;
  let failed = 0;
  let rejected = 0;
  for (const [name, record] of ops) {
    operations[name] = record.snapshot();
    count += record.count;
    success += record.success;
    failed += record.failed;
    rejected += record.rejected;
  }
  const accepted = count - rejected;
  return {
    operations,
    totals: { count, successRate: count === 0 ? 1 : round(success / count), errorRate: accepted === 0 ? 0 : round(failed / accepted) },
  };
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}
