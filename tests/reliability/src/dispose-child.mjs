// R1, the dispose half: creates and disposes Broadcasters and compat BroadcastManagers against
// one real OpenTelemetry MeterProvider, then checks after forced GC (start with --expose-gc) that
// none of them is reachable (WeakRef + FinalizationRegistry) and that a collection holds no
// `bcast.circuit.state` data point of a disposed one. One Broadcaster stays alive as the control:
// its data point must be there.
//
//   -> { id, cmd: 'run', n }   <- { alive, finalized, created, circuitPoints, controlPoints, memory }
import { Broadcaster } from '@bcast/core';
import { BroadcastManager, ConnectionManager } from '@bcast/compat';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { send, serve, sleep } from './child-common.mjs';

class CollectingReader extends MetricReader {
  async onShutdown() {}
  async onForceFlush() {}
}

const quiet = { warn() {}, error() {} };

async function gc() {
  for (let i = 0; i < 6; i++) {
    globalThis.gc();
    await sleep(20);
  }
}

/** Data points of `bcast.circuit.state` in one collection, with their attributes. */
async function circuitPoints(reader) {
  const { resourceMetrics, errors } = await reader.collect();
  if (errors.length > 0) throw new Error(`collection errors: ${errors.join('; ')}`);
  const points = [];
  for (const scope of resourceMetrics.scopeMetrics) {
    for (const metric of scope.metrics) {
      if (metric.descriptor.name === 'bcast.circuit.state') for (const p of metric.dataPoints) points.push({ value: p.value, attributes: p.attributes });
    }
  }
  return points;
}

async function run({ n }) {
  if (typeof globalThis.gc !== 'function') throw new Error('start with --expose-gc');
  const reader = new CollectingReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  const control = new Broadcaster({ meterProvider, logger: quiet });
  control.isolate()(); // uses the backplane scope once: its circuit is reported from now on
  const controlPoints = await circuitPoints(reader);

  const refs = [];
  let finalized = 0;
  const registry = new FinalizationRegistry(() => {
    finalized += 1;
  });
  const track = (kind, object) => {
    refs.push({ kind, ref: new WeakRef(object) });
    registry.register(object, kind);
  };
  const before = process.memoryUsage();
  for (let i = 0; i < n; i++) {
    const b = new Broadcaster({ meterProvider, logger: quiet });
    b.isolate()();
    await b.toAll({ type: 'x', i });
    track('Broadcaster', b);
    if (i % 100 === 0) await circuitPoints(reader); // collections while they live
    await b.dispose();
  }
  for (let i = 0; i < n; i++) {
    const cm = new ConnectionManager({ meterProvider, logger: quiet });
    const bm = new BroadcastManager(cm);
    bm.broadcaster.isolate()();
    await bm.broadcastToAll({ type: 'x', i });
    track('BroadcastManager', bm);
    track('ConnectionManager', cm);
    track('compat Broadcaster', bm.broadcaster);
    if (i % 100 === 0) await circuitPoints(reader);
    await bm.dispose();
  }
  await gc();
  await sleep(100);
  await gc();
  const points = await circuitPoints(reader);
  const alive = {};
  for (const { kind, ref } of refs) if (ref.deref() !== undefined) alive[kind] = (alive[kind] ?? 0) + 1;
  const result = {
    created: refs.length,
    alive,
    finalized,
    controlPoints,
    circuitPoints: points,
    heapDeltaMB: (process.memoryUsage().heapUsed - before.heapUsed) / 1024 / 1024,
  };
  await control.dispose();
  await meterProvider.shutdown();
  return result;
}

serve({ run });
send({ type: 'ready', pid: process.pid });
