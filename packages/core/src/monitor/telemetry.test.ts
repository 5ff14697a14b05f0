import { SpanKind, context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { AggregationTemporality, MeterProvider, MetricReader, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryBus } from '../backplane.js';
import { BcastError, Broadcaster, ErrorCode, VERSION } from '../index.js';
import { FakeConnection, quietLogger } from '../test-utils/fakeConnection.js';

class TestReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  }
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

const exporter = new InMemorySpanExporter();
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const contextManager = new AsyncLocalStorageContextManager();

beforeAll(() => {
  context.setGlobalContextManager(contextManager.enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
});
afterAll(() => {
  context.disable();
  propagation.disable();
});
beforeEach(() => exporter.reset());

function setup(extra: ConstructorParameters<typeof Broadcaster>[0] = {}) {
  const reader = new TestReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  const b = new Broadcaster({ pingIntervalMs: 0, tracerProvider, meterProvider, logger: quietLogger(), ...extra });
  return { b, reader };
}

async function metricsOf(reader: TestReader): Promise<Map<string, ResourceMetrics['scopeMetrics'][number]['metrics'][number]>> {
  const { resourceMetrics } = await reader.collect();
  const out = new Map();
  for (const sm of resourceMetrics.scopeMetrics) {
    expect(sm.scope).toMatchObject({ name: '@bcast/core', version: VERSION });
    for (const m of sm.metrics) out.set(m.descriptor.name, m);
  }
  return out;
}

describe('OpenTelemetry', () => {
  it('no room name on a span unless the app opts in (room names can carry user ids)', async () => {
    const { b } = setup();
    b.register(new FakeConnection('a', 'u'));
    b.join('a', 'alice:inbox');
    await b.toRoom('alice:inbox', { type: 'chat' });
    const [span] = exporter.getFinishedSpans();
    expect(span?.name).toBe('bcast.broadcast');
    expect(JSON.stringify(span?.attributes)).not.toMatch(/alice/);
    await b.dispose();
  });

  it('one PRODUCER span per broadcast, child of the caller span, with counts as attributes', async () => {
    const { b } = setup({ traceRoomNames: true });
    b.register(new FakeConnection('a', 'u'));
    b.register(new FakeConnection('b', 'u'));
    const dead = new FakeConnection('c', 'v');
    b.register(dead);
    b.join('a', 'room-1');
    b.join('c', 'room-1');
    dead.isOpen = false;
    const tracer = tracerProvider.getTracer('test');
    await tracer.startActiveSpan('POST /broadcast', async (parent) => {
      await b.toRoom('room-1', { type: 'chat' });
      parent.end();
    });
    const spans = exporter.getFinishedSpans();
    const broadcast = spans.filter((s) => s.name === 'bcast.broadcast');
    expect(broadcast).toHaveLength(1);
    const span = broadcast[0];
    const parent = spans.find((s) => s.name === 'POST /broadcast');
    expect(span?.kind).toBe(SpanKind.PRODUCER);
    expect(span?.parentSpanContext?.spanId).toBe(parent?.spanContext().spanId);
    expect(span?.spanContext().traceId).toBe(parent?.spanContext().traceId);
    expect(span?.instrumentationScope).toMatchObject({ name: '@bcast/core', version: VERSION });
    expect(span?.attributes).toMatchObject({
      'messaging.system': 'bcast',
      'messaging.operation.type': 'send',
      'messaging.destination.name': 'room-1',
      'bcast.operation': 'room',
      'bcast.recipients': 2,
      'bcast.delivered': 1,
      'bcast.failed': 1,
      'bcast.removed': 1,
      'bcast.attempts': 1,
      'bcast.message.type': 'chat',
    });
    await b.dispose();
  });

  it('a rejected broadcast ends its span with an error status and the code', async () => {
    const { b } = setup();
    await b.toAll(undefined).catch(() => {});
    const [span] = exporter.getFinishedSpans();
    expect(span?.status.code).toBe(2);
    expect(span?.attributes['bcast.error.code']).toBe('BCAST_INVALID_MESSAGE');
    await b.dispose();
  });

  it('records metrics without user ids or room names in attributes', async () => {
    const { b, reader } = setup({ maxBufferedBytes: 10 });
    b.register(new FakeConnection('a', 'user-secret'));
    b.register(new FakeConnection('s', 'u2')).entry.connection;
    const slow = b.connections.get('s')?.connection as FakeConnection;
    slow.bufferedBytes = 11;
    b.join('a', 'room-secret');
    await b.toRoom('room-secret', 'x');
    await b.toUser('user-secret', 'y');
    await b.toAll('z');
    const m = await metricsOf(reader);
    for (const name of ['bcast.broadcasts', 'bcast.deliveries', 'bcast.broadcast.duration', 'bcast.connections', 'bcast.disconnects']) {
      expect(m.has(name), name).toBe(true);
    }
    const broadcasts = m.get('bcast.broadcasts');
    const byOp = Object.fromEntries(broadcasts?.dataPoints.map((p) => [`${p.attributes['bcast.operation']}/${p.attributes['bcast.outcome']}`, p.value]) ?? []);
    expect(byOp).toEqual({ 'room/success': 1, 'user/success': 1, 'all/partial': 1 });
    const deliveries = m.get('bcast.deliveries')?.dataPoints.reduce((n, p) => n + (p.value as number), 0);
    expect(deliveries).toBe(3);
    expect(m.get('bcast.connections')?.dataPoints[0]?.value).toBe(1);
    expect(m.get('bcast.disconnects')?.dataPoints[0]?.attributes).toEqual({ 'bcast.close_code': 1013, 'bcast.reason': 'slow_consumer' });
    const duration = m.get('bcast.broadcast.duration');
    expect(duration?.descriptor.unit).toBe('s');
    for (const [name, x] of m) expect(x.descriptor.unit, name).not.toBe('');
    const everyAttr = JSON.stringify([...m.values()].map((x) => x.dataPoints.map((p) => p.attributes)));
    expect(everyAttr).not.toMatch(/secret/);
    await b.dispose();
  });

  it('reports circuit state as a gauge and retries and transitions as span events', async () => {
    const failing = {
      nodeId: 'n',
      // never written (not connected): the only kind of failure that is retried
      publish: () => Promise.reject(new BcastError(ErrorCode.BackplaneUnavailable, 'not connected', { details: { written: false } })),
      subscribe: () => () => {},
      close: async () => {},
    };
    const { b, reader } = setup({
      backplane: failing,
      reliability: { scopes: { backplane: { retry: { maxRetries: 1, baseDelayMs: 1, maxDelayMs: 1 }, circuitBreaker: { failureThreshold: 2 } } } },
    });
    b.register(new FakeConnection('a'));
    await b.toAll('m');
    const [span] = exporter.getFinishedSpans();
    const events = span?.events.map((e) => e.name);
    expect(events).toContain('bcast.retry');
    expect(events).toContain('bcast.circuit.state_change');
    expect(events).toContain('bcast.propagation.failed');
    const gauge = (await metricsOf(reader)).get('bcast.circuit.state');
    expect(gauge?.dataPoints).toEqual([expect.objectContaining({ value: 2, attributes: { 'bcast.scope': 'backplane' } })]);
    await b.dispose();
  });

  it('continues the trace across the backplane: the remote delivery span is a child of the broadcast span', async () => {
    const bus = new MemoryBus();
    const n1 = setup({ backplane: bus.backplane('n1') }).b;
    const n2 = setup({ backplane: bus.backplane('n2') }).b;
    await Promise.all([n1.ready(), n2.ready()]);
    const remote = new FakeConnection('r');
    n2.register(remote);
    await n1.toAll('hello');
    await vi.waitFor(() => expect(exporter.getFinishedSpans().some((s) => s.name === 'bcast.deliver')).toBe(true));
    const spans = exporter.getFinishedSpans();
    const producer = spans.find((s) => s.name === 'bcast.broadcast' && s.attributes['bcast.backplane'] === 'published');
    const consumer = spans.find((s) => s.name === 'bcast.deliver');
    expect(consumer?.kind).toBe(SpanKind.CONSUMER);
    expect(consumer?.spanContext().traceId).toBe(producer?.spanContext().traceId);
    expect(consumer?.parentSpanContext?.spanId).toBe(producer?.spanContext().spanId);
    expect(remote.received).toEqual(['hello']);
    await n1.dispose();
    await n2.dispose();
  });

  it('costs nothing to set up without an SDK (the API no-op)', async () => {
    const b = new Broadcaster({ pingIntervalMs: 0 });
    b.register(new FakeConnection('a'));
    expect((await b.toAll('x')).delivered).toBe(1);
    expect(trace.getActiveSpan()).toBeUndefined();
    await b.dispose();
  });
});
