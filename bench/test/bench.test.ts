import { describe, expect, it } from 'vitest';
import { Histogram } from '../src/common.mjs';
import { aggregate, runSession } from '../src/harness.mjs';
import { evaluateTargets } from '../src/report.mjs';

describe('bench harness', () => {
  it('runs a raw ws variant in its own server and client processes and counts every delivery', async () => {
    const clients = 6;
    const messages = 5;
    const session = await runSession({
      variant: 'ws-once',
      clients,
      window: 2,
      phases: [
        { payloadBytes: 256, messages, warmupMessages: 2 },
        { payloadBytes: 4096, messages },
      ],
      connectTimeoutMs: 15_000,
      phaseTimeoutMs: 10_000,
    });
    expect(session.error).toBeUndefined();
    expect(session.phases.map((p) => p.payloadBytes)).toEqual([256, 4096]);
    for (const phase of session.phases) {
      expect(phase.expected).toBe(clients * messages);
      expect(phase.delivered).toBe(clients * messages);
      expect(phase.disconnects).toBe(0);
      for (const key of ['deliveriesPerSec', 'p50Ms', 'p99Ms', 'serverCpuUsPerDelivery', 'clientCpuUsPerDelivery', 'peakRssBytes'] as const) {
        expect(Number.isFinite(phase[key]), key).toBe(true);
        expect(phase[key], key).toBeGreaterThanOrEqual(0);
      }
      expect(phase.p99Ms).toBeGreaterThanOrEqual(phase.p50Ms);
    }
    const cells = aggregate([{ ...session, rep: 0 }]);
    expect(cells).toHaveLength(2);
    expect(cells.every((c) => c.complete && c.runs.length === 1)).toBe(true);
    // Targets that need variants this session did not run are reported as n/a, not as failures.
    expect(evaluateTargets(cells).every((r) => r.result === 'n/a')).toBe(true);
  });

  it('reports an unknown variant as an error without starting anything', async () => {
    const session = await runSession({ variant: 'no-such-variant', clients: 1, phases: [] });
    expect(session.error).toMatch(/unknown variant/);
  });

  it('computes latency percentiles within the histogram precision', () => {
    const h = new Histogram();
    for (let us = 1; us <= 10_000; us++) h.record(us);
    expect(h.count).toBe(10_000);
    expect(Math.abs(h.quantile(0.5) - 5_000) / 5_000).toBeLessThan(0.02);
    expect(Math.abs(h.quantile(0.99) - 9_900) / 9_900).toBeLessThan(0.02);
    expect(h.quantile(1)).toBe(10_000);
  });
});
