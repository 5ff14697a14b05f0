import { describe, expect, it } from 'vitest';
import * as ws from 'ws';
import { Histogram, readHeader } from '../src/common.mjs';
import { FrameParser } from '../src/lean-client.mjs';
import { aggregate, pooledLatency, runSession } from '../src/harness.mjs';
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

  it('counts every delivery of a socket.io variant through the lean engine.io client', async () => {
    const session = await runSession({
      variant: 'socketio-emit',
      clients: 4,
      window: 2,
      phases: [{ payloadBytes: 256, messages: 5 }],
      connectTimeoutMs: 15_000,
      phaseTimeoutMs: 10_000,
    });
    expect(session.error).toBeUndefined();
    expect(session.client).toBe('lean');
    expect(session.phases[0]).toMatchObject({ expected: 20, delivered: 20, disconnects: 0 });
  });

  it('sends bursts that fill the window, and the last, shorter burst too', async () => {
    // 7 broadcasts in bursts of 3 with room for 6: 3 + 3, then 1. A pump that waited for a full
    // burst's room at the end, or sent past the window, would stall or lose count.
    const session = await runSession({
      variant: 'bcast-ws',
      clients: 3,
      window: 6,
      burst: 3,
      phases: [{ payloadBytes: 256, messages: 7, warmupMessages: 2 }],
      connectTimeoutMs: 15_000,
      phaseTimeoutMs: 10_000,
    });
    expect(session.error).toBeUndefined();
    expect(session.burst).toBe(3);
    expect(session.phases[0]).toMatchObject({ messages: 7, expected: 21, delivered: 21, disconnects: 0 });
  });

  it('runs a timed phase past its minimum, in whole bursts, and counts what was sent', async () => {
    const session = await runSession({
      variant: 'ws-frame',
      clients: 2,
      window: 4,
      burst: 2,
      phases: [{ payloadBytes: 256, messages: 4, minMs: 200, maxMessages: 100_000 }],
      connectTimeoutMs: 15_000,
      phaseTimeoutMs: 10_000,
    });
    expect(session.error).toBeUndefined();
    const phase = session.phases[0]!;
    expect(phase.messages).toBeGreaterThan(4);
    expect(phase.messages % 2).toBe(0);
    expect(phase.delivered).toBe(phase.messages * 2);
    expect(phase.expected).toBe(phase.delivered);
    expect(phase.durationMs).toBeGreaterThanOrEqual(200);
  });

  it("the lean client's frame parser reads ws's own frames however TCP splits them", () => {
    const bodies = ['{"type":"bench","seq":1,"t":12.5}', 'x'.repeat(300), 'y'.repeat(70_000), '42["message",{"type":"bench","seq":7,"t":3}]'];
    // ws's Sender is public at runtime (engine.io and @bcast/ws use Sender.frame) but not in @types/ws.
    const { Sender } = ws as unknown as { Sender: { frame(data: Buffer, options: object): Buffer[] } };
    const frame = (body: string, opcode = 1) => Buffer.concat(Sender.frame(Buffer.from(body), { fin: true, mask: false, opcode, readOnly: false, rsv1: false }));
    const parse = (parts: string[], cuts: number[]) => {
      const wire = Buffer.concat([...parts.slice(0, 2).map((b) => frame(b)), frame('', 9), ...parts.slice(2).map((b) => frame(b))]);
      for (const cut of [...cuts, wire.length]) {
        const got: string[] = [];
        const controls: number[] = [];
        const parser = new FrameParser(
          (buffer, start, end) => got.push(buffer.toString('utf8', start, end)),
          (opcode) => controls.push(opcode),
        );
        for (let at = 0; at < wire.length; at += cut) parser.push(wire.subarray(at, at + cut));
        expect(got, `chunks of ${cut}`).toEqual(parts);
        expect(controls).toEqual([9]);
      }
    };
    // 7-bit, 16-bit and 64-bit payload lengths, and a ping between messages.
    parse([bodies[0]!, bodies[1]!, bodies[3]!], [1, 2, 3, 7, 64]);
    parse(bodies, [9, 4096, 65_536]);
    const out = { seq: 0, t: 0 };
    const socketIo = Buffer.from(`xx${bodies[3]}`);
    expect(readHeader(socketIo, out, 2, socketIo.length)).toBe(true);
    expect(out).toEqual({ seq: 7, t: 3 });
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

  it('pools repetitions into one latency distribution', () => {
    // Two repetitions: one steady (1..1,000 µs), one with a hiccup (20 of its 1,000 deliveries at 50 ms).
    const steady = new Histogram();
    const hiccup = new Histogram();
    for (let us = 1; us <= 1_000; us++) steady.record(us);
    for (let i = 0; i < 1_000; i++) hiccup.record(i < 20 ? 50_000 : 500);
    const asRun = (h: Histogram) => ({ hist: { buckets: [...h.counts.entries()].filter(([, c]) => c > 0), max: h.max } });
    const pooled = pooledLatency([asRun(steady), asRun(hiccup)])!;
    expect(pooled.count).toBe(2_000);
    // The hiccup decides its own repetition's p99; pooled, its 20 deliveries are the top 1 % and
    // the p99 (the 1,980th of 2,000) is the steady run's largest, 1 ms.
    expect(pooled.p99Ms).toBeGreaterThan(0.97);
    expect(pooled.p99Ms).toBeLessThan(1.01);
    expect(hiccup.quantile(0.99) / 1000).toBeGreaterThan(49);
    expect(pooledLatency([{}])).toBeUndefined();
  });
});
