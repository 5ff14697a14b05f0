import type { Meter, MeterProvider as MeterProviderApi, ObservableCallback, ObservableGauge } from '@opentelemetry/api';
import { AggregationTemporality, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { afterEach, describe, expect, it } from 'vitest';
import { Broadcaster, type Backplane, type BackplaneHealth, type BroadcasterOptions } from '@bcast/core';
import { FakeConnection, quietLogger } from '../test-utils/fakeConnection.js';

class TestReader extends MetricReader {
  constructor(temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE) {
    super({ aggregationTemporalitySelector: () => temporality });
  }
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

const made: Broadcaster[] = [];
function setup(options: BroadcasterOptions = {}): Broadcaster {
  const b = new Broadcaster({ pingIntervalMs: 0, logger: quietLogger(), ...options });
  made.push(b);
  return b;
}

afterEach(async () => {
  for (const b of made.splice(0)) await b.dispose();
});

/** Wraps a real MeterProvider and counts the callbacks registered on `bcast.circuit.state`. */
function countingCallbacks(inner: MeterProviderApi): { provider: MeterProviderApi; live: Set<ObservableCallback> } {
  const live = new Set<ObservableCallback>();
  const wrapGauge = (gauge: ObservableGauge): ObservableGauge => ({
    addCallback: (cb) => {
      live.add(cb);
      gauge.addCallback(cb);
    },
    removeCallback: (cb) => {
      live.delete(cb);
      gauge.removeCallback(cb);
    },
  });
  const provider: MeterProviderApi = {
    getMeter: (name, version, options) => {
      const meter = inner.getMeter(name, version, options);
      return new Proxy(meter, {
        get(target, prop) {
          if (prop === 'createObservableGauge') {
            return (n: string, o?: Parameters<Meter['createObservableGauge']>[1]) => {
              const gauge = target.createObservableGauge(n, o);
              return n === 'bcast.circuit.state' ? wrapGauge(gauge) : gauge;
            };
          }
          const value = Reflect.get(target, prop) as unknown;
          return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
        },
      });
    },
  };
  return { provider, live };
}

async function circuitGaugePoints(reader: TestReader): Promise<number> {
  const { resourceMetrics } = await reader.collect();
  const gauge = resourceMetrics.scopeMetrics.flatMap((sm) => sm.metrics).find((m) => m.descriptor.name === 'bcast.circuit.state');
  return gauge?.dataPoints.length ?? 0;
}

describe('HealthReporter', () => {
  it('healthy, then degraded with the reason while a circuit is isolated, healthy again when released, unhealthy after dispose', async () => {
    const b = setup();
    expect(b.getHealthStatus()).toMatchObject({ status: 'healthy', reasons: [] });
    const release = b.isolate();
    const degraded = b.getHealthStatus();
    expect(degraded.status).toBe('degraded');
    expect(degraded.reasons).toEqual(['circuit "backplane" is isolated']);
    expect(degraded.reliability.circuits.backplane?.state).toBe('isolated');
    release();
    expect(b.getHealthStatus()).toMatchObject({ status: 'healthy', reasons: [] });
    b.isolate('other-scope');
    expect(b.getHealthStatus().reasons).toEqual(['circuit "other-scope" is isolated']);
    await b.dispose();
    const gone = b.getHealthStatus();
    expect(gone.status).toBe('unhealthy');
    expect(gone.reasons).toContain('broadcaster is disposed');
  });

  it('reports the health of the backplane, with its node id', async () => {
    let health: BackplaneHealth = { status: 'healthy', reasons: [] };
    const bp: Backplane = { nodeId: 'n-7', publish: async () => {}, subscribe: () => () => {}, close: async () => {}, health: () => health };
    const b = setup({ backplane: bp });
    expect(b.getHealthStatus()).toMatchObject({ status: 'healthy', backplane: { status: 'healthy', nodeId: 'n-7' } });
    health = { status: 'degraded', reasons: ['reconnecting'] };
    expect(b.getHealthStatus()).toMatchObject({ status: 'degraded', reasons: ['backplane: reconnecting'], backplane: { status: 'degraded', reasons: ['reconnecting'], nodeId: 'n-7' } });
  });

  it('health has the report shape: circuits, monitoring, system', async () => {
    const b = setup();
    b.register(new FakeConnection('a', 'u1'));
    b.register(new FakeConnection('b', 'u1'));
    b.join('a', 'r');
    await b.toAll('x');
    const h = b.getHealthStatus();
    expect(h).toMatchObject({
      status: 'healthy',
      timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      monitoring: { successRate: 1, errorRate: 0, latencyMs: { p50: expect.any(Number), p95: expect.any(Number), p99: expect.any(Number) } },
      system: { connections: 2, users: 1, rooms: 1, uptimeMs: expect.any(Number), memory: { rssBytes: expect.any(Number), heapUsedBytes: expect.any(Number) } },
      backplane: { status: 'healthy', nodeId: b.nodeId },
    });
    expect(h.system.memory.rssBytes).toBeGreaterThan(0);
  });

  it('stats count connections, users, rooms, memberships, broadcasts and deliveries', async () => {
    const b = setup();
    b.register(new FakeConnection('a', 'alice'));
    b.register(new FakeConnection('b', 'alice'));
    b.register(new FakeConnection('c', 'bob'));
    b.register(new FakeConnection('d'));
    b.join('a', 'r1');
    b.join('a', 'r2');
    b.join('c', 'r1');
    await b.toAll('x');
    await b.toRoom('r1', 'y');
    await b.toAll(undefined).catch(() => {});
    const s = b.getStats();
    expect(s).toMatchObject({
      nodeId: b.nodeId,
      connections: 4,
      users: 2,
      rooms: 2,
      roomMemberships: 3,
      broadcasts: 3,
      remoteBroadcasts: 0,
      deliveries: 6,
      backplaneDropped: {},
      uptimeMs: expect.any(Number),
    });
    expect(s.monitor.operations.all).toMatchObject({ count: 2, success: 1, rejected: 1 });
    expect(s.monitor.operations.room).toMatchObject({ count: 1, success: 1 });
    expect(s.reliability).toEqual({});
    b.isolate();
    expect(b.getStats().reliability.backplane).toMatchObject({ state: 'isolated' });
    b.disconnect('c');
    expect(b.getStats()).toMatchObject({ connections: 3, users: 1, rooms: 2, roomMemberships: 2 });
  });

  it('after dispose, a MeterProvider collects no bcast.circuit.state point from the disposed broadcasters (50 on one provider)', async () => {
    const reader = new TestReader();
    const sdk = new MeterProvider({ readers: [reader] });
    const { provider: meterProvider, live } = countingCallbacks(sdk);
    for (let i = 0; i < 50; i += 1) {
      const b = new Broadcaster({ pingIntervalMs: 0, logger: quietLogger(), meterProvider });
      b.isolate(`scope-${i}`); // a circuit it would report
      expect(live.size).toBe(1);
      await b.dispose();
      expect(live.size).toBe(0); // the gauge callback was removed
      b.isolate(`after-${i}`); // even a circuit used after dispose is not reported
    }
    expect(await circuitGaugePoints(reader)).toBe(0);

    // the gauge itself works: a live broadcaster on the same provider reports its circuit
    const b = setup({ meterProvider });
    b.isolate();
    expect(live.size).toBe(1);
    expect(await circuitGaugePoints(reader)).toBe(1);
    await sdk.shutdown();
  });

  it('a broadcaster reports its circuits until it is disposed, then no more (delta reader)', async () => {
    const reader = new TestReader(AggregationTemporality.DELTA);
    const meterProvider = new MeterProvider({ readers: [reader] });
    const live: Broadcaster[] = [];
    for (let i = 0; i < 50; i += 1) {
      const b = new Broadcaster({ pingIntervalMs: 0, logger: quietLogger(), meterProvider });
      b.isolate(`scope-${i}`);
      live.push(b);
    }
    expect(await circuitGaugePoints(reader)).toBe(50);
    for (const b of live.splice(0, 25)) await b.dispose();
    expect(await circuitGaugePoints(reader)).toBe(25);
    for (const b of live) await b.dispose();
    expect(await circuitGaugePoints(reader)).toBe(0);
    await meterProvider.shutdown();
  });
});
