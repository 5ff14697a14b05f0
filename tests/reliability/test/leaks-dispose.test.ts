/**
 * R1 leaks, the dispose half: 1,000 Broadcasters and 1,000 compat BroadcastManagers created and
 * disposed against one real OpenTelemetry MeterProvider (a MetricReader collected from), in a
 * child process started with --expose-gc (src/dispose-child.mjs). After forced GC none of them is
 * reachable (WeakRef and FinalizationRegistry), and a collection holds no `bcast.circuit.state`
 * data point of a disposed one, only the one of the Broadcaster kept alive as the control.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { figures, heavyFile, killChildren, spawnChild, type Child } from '../src/harness.js';

heavyFile({ lock: false });

const N = 1_000;

interface Result {
  created: number;
  alive: Record<string, number>;
  finalized: number;
  controlPoints: Array<{ value: number; attributes: Record<string, unknown> }>;
  circuitPoints: Array<{ value: number; attributes: Record<string, unknown> }>;
  heapDeltaMB: number;
}

describe('leaks', () => {
  let child: Child | undefined;
  afterAll(() => killChildren(child));

  it(`R1 leaks: create and dispose ${N.toLocaleString('en')} Broadcasters and ${N.toLocaleString('en')} compat BroadcastManagers with a real OTel MeterProvider: after GC none reachable, no bcast.circuit.state data points from disposed ones`, async () => {
    child = await spawnChild('dispose', fileURLToPath(new URL('../src/dispose-child.mjs', import.meta.url)), { execArgv: ['--expose-gc'] });
    const result = await child.request<Result>('run', { n: N }, 120_000);
    figures('R1 dispose', {
      created: result.created,
      alive: result.alive,
      finalized: result.finalized,
      controlPoints: result.controlPoints.length,
      circuitPointsAfter: result.circuitPoints,
      heapDeltaMB: +result.heapDeltaMB.toFixed(2),
    });
    // the check can see a live one: the control's circuit is reported
    expect(result.controlPoints).toEqual([{ value: 0, attributes: { 'bcast.scope': 'backplane' } }]);
    expect(result.created).toBe(4 * N); // Broadcaster, and BroadcastManager + ConnectionManager + its Broadcaster
    expect(result.alive, 'still reachable after GC').toEqual({});
    expect(result.finalized, 'finalized (FinalizationRegistry)').toBe(result.created);
    expect(result.circuitPoints, 'bcast.circuit.state data points: only the control').toEqual(result.controlPoints);
  }, 150_000);
});
