/** Publish round trips (PUBLISH written to reply read), as in `health().details.publishLatencyMs`. */
export interface LatencySnapshot {
  /** Round trips in the window: the last `size` publishes of the last `maxAgeMs`. */
  readonly samples: number;
  readonly p50: number | undefined;
  readonly p99: number | undefined;
  readonly max: number | undefined;
}

/**
 * The last `size` publish round trips (ms) that are at most `maxAgeMs` old, in a ring: O(1) per
 * sample, a sort of at most `size` numbers per snapshot.
 */
export class LatencyWindow {
  readonly #values: Float64Array;
  readonly #times: Float64Array;
  readonly #maxAgeMs: number;
  #next = 0;
  #count = 0;
  /** Samples ever added. */
  added = 0;

  constructor(size = 100, maxAgeMs = 60_000) {
    this.#values = new Float64Array(size);
    this.#times = new Float64Array(size);
    this.#maxAgeMs = maxAgeMs;
  }

  add(ms: number, now: number = performance.now()): void {
    this.#values[this.#next] = ms;
    this.#times[this.#next] = now;
    this.#next = (this.#next + 1) % this.#values.length;
    this.#count = Math.min(this.#count + 1, this.#values.length);
    this.added += 1;
  }

  snapshot(now: number = performance.now()): LatencySnapshot {
    const recent: number[] = [];
    for (let i = 0; i < this.#count; i += 1) {
      if (now - (this.#times[i] as number) <= this.#maxAgeMs) recent.push(this.#values[i] as number);
    }
    if (recent.length === 0) return { samples: 0, p50: undefined, p99: undefined, max: undefined };
    recent.sort((a, b) => a - b);
    return { samples: recent.length, p50: round(rank(recent, 0.5)), p99: round(rank(recent, 0.99)), max: round(recent[recent.length - 1] as number) };
  }
}

/** Nearest-rank percentile of sorted values. */
function rank(sorted: readonly number[], q: number): number {
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] as number;
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
