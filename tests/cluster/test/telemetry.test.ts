import { SpanKind, context, propagation } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { AggregationTemporality, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guardProcess } from '../../support/processGuard.js';
import { ADAPTERS, Cluster, type Adapter } from './cluster.js';

// Telemetry across nodes, with the real OpenTelemetry SDK: each node has its own MeterProvider and
// TracerProvider (as separate processes would), the W3C propagator carries the trace over the bus.
// Scenario: one client per node, then one toAll per node (three in all); every client gets all three.

guardProcess();

class CollectingReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  }
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

interface Telemetry {
  readonly reader: CollectingReader;
  readonly spans: InMemorySpanExporter;
  /** Resolves once `n` spans named `name` have ended on this node. */
  ended(name: string, n: number): Promise<void>;
}

function telemetryOf(adapter: Adapter): { telemetry: Telemetry; processor: SpanProcessor } {
  const spans = new InMemorySpanExporter();
  const counts = new Map<string, number>();
  const waiters = new Set<() => void>();
  const processor: SpanProcessor = {
    onStart: () => {},
    onEnd: (span) => {
      counts.set(span.name, (counts.get(span.name) ?? 0) + 1);
      for (const wake of waiters) wake();
    },
    forceFlush: async () => {},
    shutdown: async () => {},
  };
  const ended = (name: string, n: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if ((counts.get(name) ?? 0) < n) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`${adapter}: ${counts.get(name) ?? 0} of ${n} ${name} spans ended within 5 s`));
      }, 5_000);
      waiters.add(check);
      check();
    });
  return { telemetry: { reader: new CollectingReader(), spans, ended }, processor };
}

/** The sum of a counter's data points on one node (0 when it has none). */
async function counter(t: Telemetry, name: string): Promise<number> {
  const { resourceMetrics } = await t.reader.collect();
  let sum = 0;
  for (const scope of resourceMetrics.scopeMetrics) for (const metric of scope.metrics) if (metric.descriptor.name === name) for (const p of metric.dataPoints) sum += p.value as number;
  return sum;
}

describe('telemetry across three nodes (the split of local and remote work)', () => {
  const telemetry = new Map<Adapter, Telemetry>();
  const contextManager = new AsyncLocalStorageContextManager();
  let cluster: Cluster;

  beforeAll(async () => {
    context.setGlobalContextManager(contextManager.enable());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    cluster = await Cluster.start((adapter) => {
      const { telemetry: t, processor } = telemetryOf(adapter);
      telemetry.set(adapter, t);
      return {
        meterProvider: new MeterProvider({ readers: [t.reader] }),
        tracerProvider: new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(t.spans), processor] }),
      };
    });
    for (const adapter of ADAPTERS) await cluster.connect(adapter, `user-${adapter}`);
    const results = await Promise.all(cluster.nodes.map((n) => n.broadcaster.toAll({ from: n.adapter })));
    for (const r of results) expect(r).toMatchObject({ recipients: 1, delivered: 1, backplane: 'published' });
    await Promise.all(cluster.clients.flatMap((c) => ADAPTERS.map((a) => c.waitFor((m) => m['from'] === a, `the broadcast of ${a}`))));
    for (const c of cluster.clients) expect(c.messages).toHaveLength(3);
    // A remote delivery's span ends right after its sends: wait for the two on each node. Missing
    // ones are the span test's failure to report, not a reason to skip the metric tests.
    await Promise.all([...telemetry.values()].map((t) => t.ended('bcast.deliver', 2).catch(() => {})));
  });

  afterAll(async () => {
    await cluster?.close();
    context.disable();
    propagation.disable();
  });

  it('bcast.broadcasts counts local calls only: three toAll, one per node, make 1 on each node and 3 in all', async () => {
    const perNode = await Promise.all(ADAPTERS.map((a) => counter(telemetry.get(a)!, 'bcast.broadcasts')));
    expect(perNode).toEqual([1, 1, 1]);
  });

  it('bcast.remote.broadcasts counts the deliveries of other nodes’ broadcasts: 2 on each node', async () => {
    const perNode = await Promise.all(ADAPTERS.map((a) => counter(telemetry.get(a)!, 'bcast.remote.broadcasts')));
    expect(perNode).toEqual([2, 2, 2]);
  });

  it('getStats(): broadcasts counts local calls (1 per node), remoteBroadcasts the deliveries of other nodes’ broadcasts (2 per node)', () => {
    const stats = cluster.nodes.map((n) => n.broadcaster.getStats());
    expect(stats.map((s) => ({ broadcasts: s.broadcasts, remoteBroadcasts: s.remoteBroadcasts }))).toEqual(ADAPTERS.map(() => ({ broadcasts: 1, remoteBroadcasts: 2 })));
  });

  it('the publishing node makes one span per call: bcast.broadcast, PRODUCER, messaging.operation.type "send"', () => {
    for (const adapter of ADAPTERS) {
      const spans = telemetry.get(adapter)!.spans.getFinishedSpans();
      const broadcasts = spans.filter((s) => s.name === 'bcast.broadcast');
      expect(broadcasts, adapter).toHaveLength(1);
      expect(broadcasts[0]!.kind, adapter).toBe(SpanKind.PRODUCER);
      expect(broadcasts[0]!.attributes, adapter).toMatchObject({ 'messaging.operation.type': 'send', 'bcast.operation': 'all', 'bcast.backplane': 'published' });
      expect(broadcasts[0]!.parentSpanContext, `${adapter}: a root span (nothing around the call)`).toBeUndefined();
    }
  });

  it('each remote delivery makes exactly one span: bcast.deliver, CONSUMER, "process", a child of the publisher’s bcast.broadcast in its trace', () => {
    const producers = new Map<Adapter, ReadableSpan>();
    for (const adapter of ADAPTERS) {
      const own = telemetry.get(adapter)!.spans.getFinishedSpans().filter((s) => s.name === 'bcast.broadcast' && s.parentSpanContext === undefined);
      expect(own, `${adapter}: its own broadcast`).toHaveLength(1);
      producers.set(adapter, own[0]!);
    }
    for (const receiver of ADAPTERS) {
      const spans = telemetry.get(receiver)!.spans.getFinishedSpans();
      for (const publisher of ADAPTERS.filter((a) => a !== receiver)) {
        const producer = producers.get(publisher)!;
        const inTrace = spans.filter((s) => s.spanContext().traceId === producer.spanContext().traceId);
        const where = `${publisher} -> ${receiver}`;
        expect(inTrace.map((s) => s.name), where).toEqual(['bcast.deliver']);
        const [deliver] = inTrace as [ReadableSpan];
        expect(deliver.kind, where).toBe(SpanKind.CONSUMER);
        expect(deliver.attributes['messaging.operation.type'], where).toBe('process');
        expect(deliver.parentSpanContext?.spanId, where).toBe(producer.spanContext().spanId);
      }
      expect(spans.filter((s) => s.name === 'bcast.deliver'), `${receiver}: one delivery span per remote broadcast`).toHaveLength(2);
    }
  });
});
