import { readdirSync } from 'node:fs';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { AggregationTemporality, MetricReader, type MeterProvider } from '@opentelemetry/sdk-metrics';

/**
 * Figures the reliability cases assert: memory around a case, open file descriptors, event-loop
 * delay, percentiles, and bcast's OpenTelemetry counters read from a real MeterProvider.
 */

let gcFn: (() => void) | undefined | null = null;

/**
 * A forced full GC: `global.gc` when node runs with --expose-gc; otherwise the flag is turned on
 * at run time and a fresh context's `gc` is used (V8 installs it there once the flag is set).
 * `how` says which was used, so a case can report it.
 */
export function forcedGc(): { run: () => void; how: 'global.gc' | 'v8 flag' | 'none' } {
  const global = (globalThis as { gc?: () => void }).gc;
  if (typeof global === 'function') return { run: global, how: 'global.gc' };
  if (gcFn === null) {
    try {
      setFlagsFromString('--expose-gc');
      const fn = runInNewContext('gc') as unknown;
      gcFn = typeof fn === 'function' ? (fn as () => void) : undefined;
    } catch {
      gcFn = undefined;
    }
  }
  return gcFn ? { run: gcFn, how: 'v8 flag' } : { run: () => {}, how: 'none' };
}

/** GC twice (weak callbacks, then what they freed) and settle a turn. */
export async function settleMemory(): Promise<void> {
  const { run } = forcedGc();
  run();
  await new Promise((resolve) => setImmediate(resolve));
  run();
}

/**
 * Samples RSS every `everyMs` from now until stop(); stop() returns the growth over the baseline
 * taken at start (after a forced GC): the peak seen during the case, and the value after a final GC.
 */
export async function rssWatch(everyMs = 5): Promise<{ stop(): Promise<{ baseline: number; peakGrowth: number; finalGrowth: number }> }> {
  await settleMemory();
  const baseline = process.memoryUsage.rss();
  let peak = baseline;
  const timer = setInterval(() => {
    const now = process.memoryUsage.rss();
    if (now > peak) peak = now;
  }, everyMs);
  return {
    async stop() {
      clearInterval(timer);
      const last = process.memoryUsage.rss();
      if (last > peak) peak = last;
      await settleMemory();
      return { baseline, peakGrowth: peak - baseline, finalGrowth: process.memoryUsage.rss() - baseline };
    },
  };
}

export const MB = 1024 * 1024;

/** Open file descriptors of this process. */
export function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

/** The p-th percentile (0-100) of `values` (nearest rank). */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

/** Event-loop delay over a window: p99 and max in ms. */
export function eventLoopDelay(resolutionMs = 5): { stop(): { p99: number; max: number } } {
  const h: IntervalHistogram = monitorEventLoopDelay({ resolution: resolutionMs });
  h.enable();
  return {
    stop() {
      h.disable();
      return { p99: h.percentile(99) / 1e6, max: h.max / 1e6 };
    },
  };
}

/** Resolves after `ms` (for pacing a flood, never for waiting on an outcome). */
export const tick = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A MetricReader to collect on demand (cumulative), as the core's own telemetry tests do. */
export class TestReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  }
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

/** Sum of a counter's data points whose attributes include `attributes`. */
export async function counterSum(reader: TestReader, name: string, attributes: Record<string, unknown> = {}): Promise<number> {
  const { resourceMetrics } = await reader.collect();
  let sum = 0;
  for (const scope of resourceMetrics.scopeMetrics) {
    for (const metric of scope.metrics) {
      if (metric.descriptor.name !== name) continue;
      for (const point of metric.dataPoints) {
        if (Object.entries(attributes).every(([k, v]) => point.attributes[k] === v)) sum += point.value as number;
      }
    }
  }
  return sum;
}

export type { MeterProvider };
