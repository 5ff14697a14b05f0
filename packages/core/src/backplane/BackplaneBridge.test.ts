import { SpanKind } from '@opentelemetry/api';
import { AggregationTemporality, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MemoryBus, type Backplane, type BackplaneEnvelope, type PublishOptions } from '@bcast/core/backplane';
import { BcastError, Broadcaster, ErrorCode, type BroadcasterOptions } from '@bcast/core';
import type { EncodedMessage } from '../connection/EncodedMessage.js';
import { FakeConnection, quietLogger } from '../test-utils/fakeConnection.js';
import { STALL_MS } from './BackplaneBridge.js';

const made: Broadcaster[] = [];
function node(options: BroadcasterOptions = {}): Broadcaster {
  const b = new Broadcaster({ pingIntervalMs: 0, logger: quietLogger(), ...options });
  made.push(b);
  return b;
}

afterEach(async () => {
  vi.useRealTimers();
  for (const b of made.splice(0)) await b.dispose();
});

function connect(b: Broadcaster, id: string, rooms: string[] = []): FakeConnection {
  const c = new FakeConnection(id);
  b.register(c);
  for (const r of rooms) b.join(id, r);
  return c;
}

/** A hand-made backplane: `publish` runs the test's behaviour; `inject` hands an envelope to the subscriber. */
function handMade(publish: (envelope: BackplaneEnvelope, options: PublishOptions | undefined) => Promise<void> = async () => {}, nodeId = 'me') {
  const published: BackplaneEnvelope[] = [];
  const signals: AbortSignal[] = [];
  let handler: ((envelope: BackplaneEnvelope) => void) | undefined;
  const backplane: Backplane & { published: BackplaneEnvelope[]; signals: AbortSignal[]; inject(envelope: unknown): void } = {
    nodeId,
    published,
    signals,
    publish: (envelope, options) => {
      published.push(envelope);
      if (options?.signal) signals.push(options.signal);
      return publish(envelope, options);
    },
    subscribe: (h) => {
      handler = h;
      return () => (handler = undefined);
    },
    close: async () => {},
    inject: (envelope) => handler?.(envelope as BackplaneEnvelope),
  };
  return backplane;
}

const notWritten = (): BcastError => new BcastError(ErrorCode.BackplaneUnavailable, 'not connected', { details: { written: false } });

function envelope(overrides: Partial<Record<keyof BackplaneEnvelope, unknown>> = {}): Record<string, unknown> {
  return { v: 1, id: crypto.randomUUID(), nodeId: 'other', op: 'all', enc: 'text', payload: 'hello', ts: Date.now(), ...overrides };
}

class TestReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  }
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

const fastRetry = { maxRetries: 2, baseDelayMs: 1, maxDelayMs: 2, jitter: false };

describe('BackplaneBridge: publishing', () => {
  it('retries a publish the backplane says was never written, and a later success is published', async () => {
    let calls = 0;
    const bp = handMade(async () => {
      calls += 1;
      if (calls <= 2) throw notWritten();
    });
    const b = node({ backplane: bp, reliability: { scopes: { backplane: { retry: fastRetry } } } });
    const c = connect(b, 'a');
    const r = await b.toAll({ n: 1 });
    expect(calls).toBe(3);
    expect(r).toMatchObject({ delivered: 1, backplane: 'published' });
    expect(r.backplaneError).toBeUndefined();
    expect(c.messages).toEqual([{ n: 1 }]);
    expect(b.getStats().monitor.backplane).toMatchObject({ published: 1, publishErrors: 0 });
  });

  it('gives up after maxRetries retries of never-written publishes: failed, local delivery intact', async () => {
    const bp = handMade(async () => {
      throw notWritten();
    });
    const b = node({ backplane: bp, reliability: { scopes: { backplane: { retry: fastRetry } } } });
    const c = connect(b, 'a');
    const r = await b.toAll('x');
    expect(bp.published).toHaveLength(3);
    expect(r).toMatchObject({ delivered: 1, backplane: 'failed', backplaneError: ErrorCode.BackplaneUnavailable });
    expect(c.received).toEqual(['x']);
  });

  it.each([
    ['a BcastError without written: false', () => new BcastError(ErrorCode.BackplaneUnavailable, 'maybe sent')],
    ['a transient network error', () => Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' })],
    ['an unexpected error', () => new TypeError('bug')],
  ])('does not retry any other error (%s): published once, failed', async (_name, make) => {
    const bp = handMade(async () => {
      throw make();
    });
    const b = node({ backplane: bp, reliability: { scopes: { backplane: { retry: fastRetry } } } });
    const c = connect(b, 'a');
    const r = await b.toAll('x');
    expect(bp.published).toHaveLength(1);
    expect(r).toMatchObject({ delivered: 1, backplane: 'failed', backplaneError: ErrorCode.BackplaneUnavailable });
    expect(c.received).toEqual(['x']);
    expect(b.getStats().monitor.backplane.publishErrors).toBe(1);
  });

  it('a publish that hangs past the scope timeout is unknown: called once, its signal aborted, local delivery unaffected', async () => {
    vi.useFakeTimers();
    const bp = handMade(() => new Promise<void>(() => {}));
    const b = node({ backplane: bp, reliability: { scopes: { backplane: { timeoutMs: 50, retry: fastRetry } } } });
    const c = connect(b, 'a');
    const pending = b.toAll({ n: 1 });
    await vi.advanceTimersByTimeAsync(49);
    expect(bp.signals[0]?.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    const r = await pending;
    expect(r).toMatchObject({ recipients: 1, delivered: 1, failed: 0, backplane: 'unknown', backplaneError: ErrorCode.Timeout });
    expect(bp.published).toHaveLength(1);
    expect(bp.signals).toHaveLength(1);
    expect(bp.signals[0]?.aborted).toBe(true);
    expect(c.messages).toEqual([{ n: 1 }]);
    await vi.advanceTimersByTimeAsync(1_000); // no retry later either
    expect(bp.published).toHaveLength(1);
    expect(b.getStats().monitor.backplane).toMatchObject({ publishUnknown: 1, publishErrors: 0, published: 0 });
  });

  it('timeouts do not open the circuit while publishes keep succeeding (slow, not down), but do after no success for STALL_MS', async () => {
    vi.useFakeTimers();
    let mode: 'ok' | 'hang' = 'ok';
    const bp = handMade(() => (mode === 'ok' ? Promise.resolve() : new Promise<void>(() => {})));
    const b = node({
      backplane: bp,
      reliability: { scopes: { backplane: { timeoutMs: 50, retry: { maxRetries: 0 }, circuitBreaker: { failureThreshold: 3, recoveryTimeoutMs: 60_000 } } } },
    });
    connect(b, 'a');
    const send = async (): Promise<string> => {
      const pending = b.toAll('x');
      await vi.advanceTimersByTimeAsync(50);
      const r = await pending;
      return r.backplaneError ? `${r.backplane}:${r.backplaneError}` : r.backplane;
    };
    const outcomes: string[] = [];
    for (let round = 0; round < 3; round += 1) {
      mode = 'ok';
      outcomes.push(await send());
      mode = 'hang';
      for (let i = 0; i < 5; i += 1) outcomes.push(await send()); // 5 timeouts in a row > failureThreshold
    }
    const unknown = `unknown:${ErrorCode.Timeout}`;
    expect(outcomes).toEqual(Array.from({ length: 3 }, () => ['published', unknown, unknown, unknown, unknown, unknown]).flat());
    expect(b.getStats().reliability.backplane).toMatchObject({ state: 'closed', opens: 0 });

    // now nothing has been published for STALL_MS: the backplane is down, not slow
    vi.advanceTimersByTime(STALL_MS);
    const calls = bp.published.length;
    const late = [await send(), await send(), await send()];
    expect(late).toEqual([unknown, unknown, unknown]);
    expect(b.getStats().reliability.backplane).toMatchObject({ state: 'open', opens: 1 });
    expect(await send()).toBe(`failed:${ErrorCode.CircuitOpen}`);
    expect(bp.published.length).toBe(calls + 3); // the open circuit did not call publish
    expect(b.getHealthStatus().status).toBe('degraded');
  });

  it('calls publish before the local fan-out writes', async () => {
    const order: string[] = [];
    class Recording extends FakeConnection {
      override send(message: EncodedMessage): void {
        order.push(`send:${this.id}`);
        super.send(message);
      }
    }
    const bp = handMade(async () => {});
    const publish = bp.publish;
    bp.publish = (e, o) => {
      order.push('publish'); // synchronously, when called
      return publish(e, o);
    };
    const b = node({ backplane: bp });
    b.register(new Recording('a'));
    b.register(new Recording('b'));
    const r = await b.toAll('x');
    expect(r.backplane).toBe('published');
    expect(order).toEqual(['publish', 'send:a', 'send:b']);
  });

  it('does not publish localOnly broadcasts or anything on a local backplane', async () => {
    const bp = handMade();
    const b = node({ backplane: bp });
    connect(b, 'a');
    expect((await b.toAll('x', { localOnly: true })).backplane).toBe('skipped');
    expect(bp.published).toHaveLength(0);
    const single = node();
    expect((await single.toAll('x')).backplane).toBe('skipped');
  });
});

describe('BackplaneBridge: incoming envelopes', () => {
  it('drops an envelope whose payload exceeds maxMessageBytes (too_large): nobody receives it', async () => {
    const bp = handMade();
    const reader = new TestReader();
    const b = node({ backplane: bp, maxMessageBytes: 100, meterProvider: new MeterProvider({ readers: [reader] }) });
    await b.ready();
    const c = connect(b, 'a');
    bp.inject(envelope({ payload: 'x'.repeat(101) }));
    bp.inject(envelope({ enc: 'binary', payload: Buffer.alloc(200).toString('base64') }));
    bp.inject(envelope({ payload: 'ok' }));
    await vi.waitFor(() => expect(c.received).toEqual(['ok']));
    expect(b.getStats().backplaneDropped).toEqual({ too_large: 2 });
    expect(b.getStats().monitor.backplane).toMatchObject({ received: 1, discarded: 2 });
    const { resourceMetrics } = await reader.collect();
    const dropped = resourceMetrics.scopeMetrics.flatMap((sm) => sm.metrics).find((m) => m.descriptor.name === 'bcast.backplane.dropped');
    expect(dropped?.dataPoints.map((p) => [p.attributes, p.value])).toEqual([[{ 'bcast.reason': 'too_large' }, 2]]);
  });

  it('delivers one envelope as ONE bcast.deliver CONSUMER span, whatever the number of recipients', async () => {
    const exporter = new InMemorySpanExporter();
    const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const bp = handMade();
    const b = node({ backplane: bp, tracerProvider });
    await b.ready();
    const conns = ['a', 'b', 'c'].map((id) => connect(b, id));
    bp.inject(envelope({ id: 'env-1', payload: 'hi' }));
    await vi.waitFor(() => expect(exporter.getFinishedSpans()).toHaveLength(1));
    for (const c of conns) expect(c.received).toEqual(['hi']);
    const [span] = exporter.getFinishedSpans();
    expect(span?.name).toBe('bcast.deliver');
    expect(span?.kind).toBe(SpanKind.CONSUMER);
    expect(span?.attributes).toMatchObject({ 'bcast.delivered': 3, 'messaging.message.id': 'env-1', 'bcast.source_node': 'other' });
  });

  it('drops an envelope with an invalid room name (invalid_target): nobody receives it', async () => {
    const bp = handMade();
    const b = node({ backplane: bp });
    await b.ready();
    const c = connect(b, 'a', ['lobby']);
    bp.inject(envelope({ op: 'room', target: 'lob\u0001by' }));
    bp.inject(envelope({ op: 'room', target: 'r'.repeat(200) }));
    bp.inject(envelope({ op: 'room', target: '' }));
    await vi.waitFor(() => expect(b.getStats().backplaneDropped).toEqual({ invalid_target: 3 }));
    bp.inject(envelope({ op: 'room', target: 'lobby', payload: 'ok' }));
    await vi.waitFor(() => expect(c.received).toEqual(['ok']));
    expect(b.getStats().backplaneDropped).toEqual({ invalid_target: 3 });
    expect(b.getStats().monitor.remote.operations.room).toMatchObject({ success: 1 });
    expect(b.getStats().deliveries).toBe(1);
  });

  it('with signingKey, nodes sharing the key exchange messages; a node with another key is dropped (signature)', async () => {
    const bus = new MemoryBus();
    const n1 = node({ backplane: bus.backplane('n1'), signingKey: 'cluster-secret' });
    const n2 = node({ backplane: bus.backplane('n2'), signingKey: 'cluster-secret' });
    const n3 = node({ backplane: bus.backplane('n3'), signingKey: 'another-secret' });
    await Promise.all([n1.ready(), n2.ready(), n3.ready()]);
    const c1 = connect(n1, 'c1');
    const c2 = connect(n2, 'c2');
    const c3 = connect(n3, 'c3');

    expect((await n1.toAll({ from: 'n1' })).backplane).toBe('published');
    await vi.waitFor(() => expect(c2.messages).toEqual([{ from: 'n1' }]));
    expect(n3.getStats().backplaneDropped).toEqual({ signature: 1 });
    expect(c3.received).toEqual([]);

    expect((await n3.toAll({ from: 'n3' })).backplane).toBe('published');
    await vi.waitFor(() => expect(n1.getStats().backplaneDropped).toEqual({ signature: 1 }));
    await vi.waitFor(() => expect(n2.getStats().backplaneDropped).toEqual({ signature: 1 }));

    await n2.toAll({ from: 'n2' });
    await vi.waitFor(() => expect(c1.messages).toEqual([{ from: 'n1' }, { from: 'n2' }]));
    expect(c2.messages).toEqual([{ from: 'n1' }, { from: 'n2' }]);
    expect(c3.messages).toEqual([{ from: 'n3' }]);
    expect(n3.getStats().backplaneDropped).toEqual({ signature: 2 });
    expect(n2.getStats().remoteBroadcasts).toBe(1);
  });

  it('with signingKey, an unsigned or tampered envelope is dropped (signature); a signed one is delivered', async () => {
    // a sender with the same key, whose published envelopes we capture
    const out = handMade(async () => {}, 'sender');
    const sender = node({ backplane: out, signingKey: 'k' });
    await sender.toAll({ n: 1 });
    const signed = out.published[0] as BackplaneEnvelope;
    expect(typeof signed.sig).toBe('string');

    const bp = handMade();
    const b = node({ backplane: bp, signingKey: 'k' });
    await b.ready();
    const c = connect(b, 'a');
    const { sig: _sig, ...unsigned } = signed;
    bp.inject(unsigned);
    bp.inject({ ...signed, payload: '{"n":2}' });
    bp.inject({ ...signed, sig: 'AAAA' });
    expect(b.getStats().backplaneDropped).toEqual({ signature: 3 });
    bp.inject(JSON.parse(JSON.stringify(signed)));
    await vi.waitFor(() => expect(c.messages).toEqual([{ n: 1 }]));
    expect(b.getStats().backplaneDropped).toEqual({ signature: 3 });
  });

  it('counts a remote delivery in remoteBroadcasts, not broadcasts', async () => {
    const bus = new MemoryBus();
    const n1 = node({ backplane: bus.backplane('n1') });
    const n2 = node({ backplane: bus.backplane('n2') });
    await Promise.all([n1.ready(), n2.ready()]);
    connect(n1, 'a');
    const c = connect(n2, 'b');
    await n1.toAll('one');
    await n1.toAll('two');
    await vi.waitFor(() => expect(c.received).toEqual(['one', 'two']));
    await vi.waitFor(() => expect(n2.getStats().remoteBroadcasts).toBe(2));
    expect(n2.getStats()).toMatchObject({ broadcasts: 0, remoteBroadcasts: 2, deliveries: 2 });
    expect(n1.getStats()).toMatchObject({ broadcasts: 2, remoteBroadcasts: 0, deliveries: 2 });
    expect(n2.getStats().monitor.remote.operations.all).toMatchObject({ count: 2, success: 2 });
    expect(n2.getStats().monitor.operations).toEqual({});
  });
});
