import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BcastError, Broadcaster, ErrorCode, isBcastError } from '../index.js';
import { ReliabilityManager, type ReliabilityEvent } from './ReliabilityManager.js';

const transient = (): Error => Object.assign(new Error('connection refused'), { code: 'ECONNREFUSED' });

/** Runs `promise` to completion while advancing fake time in small steps. */
async function settle<T>(promise: Promise<T>, stepMs = 100, maxMs = 120_000): Promise<T> {
  let done = false;
  const tracked = promise.finally(() => {
    done = true;
  });
  tracked.catch(() => {});
  for (let t = 0; !done && t < maxMs; t += stepMs) await vi.advanceTimersByTimeAsync(stepMs);
  return tracked;
}

describe('ReliabilityManager', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('has the seed defaults', () => {
    const r = new ReliabilityManager();
    expect(r.configOf('any')).toEqual({
      failureThreshold: 5,
      recoveryTimeoutMs: 30_000,
      maxRetries: 3,
      baseDelayMs: 1_000,
      maxDelayMs: 10_000,
      jitter: true,
      timeoutMs: undefined,
    });
  });

  it('merges scope overrides over top-level options and rejects nonsense with a typed error', () => {
    const r = new ReliabilityManager({ retry: { maxRetries: 1 }, scopes: { bp: { timeoutMs: 250, circuitBreaker: { failureThreshold: 2 } } } });
    expect(r.configOf('bp')).toMatchObject({ maxRetries: 1, timeoutMs: 250, failureThreshold: 2, recoveryTimeoutMs: 30_000 });
    expect(r.configOf('other')).toMatchObject({ maxRetries: 1, timeoutMs: undefined, failureThreshold: 5 });
    expect(() => new ReliabilityManager({ circuitBreaker: { failureThreshold: 0 } })).toThrow(expect.objectContaining({ code: ErrorCode.InvalidOption }));
    expect(() => new ReliabilityManager({ retry: { baseDelayMs: 5_000, maxDelayMs: 1_000 } })).toThrow(/maxDelayMs/);
  });

  it('opens on the 5th consecutive failure, fails fast while open, half-opens after the timeout and closes on success', async () => {
    const r = new ReliabilityManager({ retry: { maxRetries: 0 } });
    const events: ReliabilityEvent[] = [];
    r.onEvent((e) => events.push(e));
    let calls = 0;
    const failing = (): Promise<never> => {
      calls += 1;
      return Promise.reject(transient());
    };
    for (let i = 1; i <= 4; i += 1) {
      await expect(r.execute('s', failing)).rejects.toThrow('connection refused');
      expect(r.stateOf('s').state).toBe('closed');
      expect(r.stateOf('s').consecutiveFailures).toBe(i);
    }
    await expect(r.execute('s', failing)).rejects.toThrow('connection refused');
    expect(r.stateOf('s').state).toBe('open');
    expect(calls).toBe(5);

    // open: fails fast with a typed error, without calling
    const fast = await r.execute('s', failing).catch((e: unknown) => e);
    expect(isBcastError(fast, ErrorCode.CircuitOpen)).toBe(true);
    expect((fast as { attempts?: number }).attempts).toBe(0);
    expect(calls).toBe(5);

    // still open just before the recovery timeout
    await vi.advanceTimersByTimeAsync(29_999);
    await expect(r.execute('s', failing)).rejects.toMatchObject({ code: ErrorCode.CircuitOpen });
    expect(calls).toBe(5);

    // half-open after it: a trial call runs; success closes the circuit
    await vi.advanceTimersByTimeAsync(2);
    let trialCalls = 0;
    const outcome = await r.execute('s', () => {
      trialCalls += 1;
      return 'ok';
    });
    expect(outcome).toEqual({ value: 'ok', attempts: 1 });
    expect(trialCalls).toBe(1);
    expect(r.stateOf('s')).toMatchObject({ state: 'closed', consecutiveFailures: 0, opens: 1 });
    const transitions = events.filter((e) => e.type === 'circuit').map((e) => (e.type === 'circuit' ? `${e.from}->${e.to}` : ''));
    expect(transitions).toEqual(['closed->open', 'open->half-open', 'half-open->closed']);
  });

  it('re-opens when the half-open trial fails', async () => {
    const r = new ReliabilityManager({ retry: { maxRetries: 0 }, circuitBreaker: { failureThreshold: 2, recoveryTimeoutMs: 1_000 } });
    for (let i = 0; i < 2; i += 1) await r.execute('s', () => Promise.reject(transient())).catch(() => {});
    expect(r.stateOf('s').state).toBe('open');
    await vi.advanceTimersByTimeAsync(1_001);
    await r.execute('s', () => Promise.reject(transient())).catch(() => {});
    expect(r.stateOf('s')).toMatchObject({ state: 'open', opens: 2 });
  });

  it('retries transient errors with exponential delays under the cap (no jitter: exact)', async () => {
    const r = new ReliabilityManager({ retry: { maxRetries: 5, baseDelayMs: 1_000, maxDelayMs: 5_000, jitter: false }, circuitBreaker: { failureThreshold: 100 } });
    const delays: number[] = [];
    r.onEvent((e) => {
      if (e.type === 'retry') delays.push(e.delayMs);
    });
    const at: number[] = [];
    const result = await settle(
      r.execute('s', () => {
        at.push(Date.now());
        return Promise.reject(transient());
      }),
    ).catch((e: unknown) => e);
    expect((result as Error).message).toBe('connection refused');
    expect((result as { attempts?: number }).attempts).toBe(6);
    expect(delays).toEqual([1_000, 2_000, 4_000, 5_000, 5_000]);
    const gaps = at.slice(1).map((t, i) => t - (at[i] as number));
    gaps.forEach((gap, i) => expect(gap).toBeGreaterThanOrEqual(delays[i] as number));
  });

  it('jittered delays stay within [d/2, d] of the exponential schedule and under the cap', async () => {
    const r = new ReliabilityManager({ retry: { maxRetries: 6 }, circuitBreaker: { failureThreshold: 100 } });
    const delays: number[] = [];
    r.onEvent((e) => {
      if (e.type === 'retry') delays.push(e.delayMs);
    });
    await settle(r.execute('s', () => Promise.reject(transient()))).catch(() => {});
    expect(delays).toHaveLength(6);
    delays.forEach((d, i) => {
      const nominal = Math.min(10_000, 1_000 * 2 ** i);
      expect(d).toBeGreaterThanOrEqual(nominal / 2);
      expect(d).toBeLessThanOrEqual(nominal);
    });
  });

  it('succeeds after transient failures and reports the attempts', async () => {
    const r = new ReliabilityManager({ retry: { jitter: false } });
    let n = 0;
    const outcome = await settle(r.execute('s', () => (++n < 3 ? Promise.reject(transient()) : Promise.resolve(n))));
    expect(outcome).toEqual({ value: 3, attempts: 3 });
  });

  it('does not retry a non-transient error', async () => {
    const r = new ReliabilityManager();
    let calls = 0;
    const error = await r
      .execute('s', () => {
        calls += 1;
        throw new RangeError('bug');
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RangeError);
    expect(calls).toBe(1);
  });

  it('does not count caller errors against the circuit', async () => {
    const r = new ReliabilityManager({ circuitBreaker: { failureThreshold: 1 } });
    await r.execute('s', () => Promise.reject(new BcastError(ErrorCode.InvalidRoom, 'bad'))).catch(() => {});
    expect(r.stateOf('s').state).toBe('closed');
  });

  it('F9 Retry × breaker composition: opens after exactly 5 wire attempts, not 5 retry chains; an open circuit (BrokenCircuitError) is never retried', async () => {
    const started = vi.getRealSystemTime(); // performance.now and Date are faked
    const r = new ReliabilityManager({ retry: { maxRetries: 3, jitter: false } });
    const retries: number[] = [];
    const transitions: string[] = [];
    r.onEvent((e) => {
      if (e.type === 'retry') retries.push(e.attempt);
      if (e.type === 'circuit') transitions.push(`${e.from}->${e.to}`);
    });
    let calls = 0;
    const failing = (): Promise<never> => {
      calls += 1;
      return Promise.reject(transient());
    };
    // one chain: 1 attempt + 3 retries = 4 wire attempts, each counted by the breaker; still closed
    const first = await settle(r.execute('s', failing)).catch((e: unknown) => e);
    expect(calls).toBe(4);
    expect((first as Error).message).toBe('connection refused');
    expect((first as { attempts?: number }).attempts).toBe(4);
    expect(r.stateOf('s')).toMatchObject({ state: 'closed', consecutiveFailures: 4 });
    expect(retries).toEqual([1, 2, 3]);
    // the next chain's first attempt is the 5th failure: the circuit opens; the retry after it meets
    // the open circuit (BrokenCircuitError) and that is not retried
    const second = await settle(r.execute('s', failing)).catch((e: unknown) => e);
    expect(calls).toBe(5);
    expect(isBcastError(second, ErrorCode.CircuitOpen)).toBe(true);
    expect((second as { attempts?: number }).attempts).toBe(1);
    expect(retries).toEqual([1, 2, 3, 1]);
    expect(r.stateOf('s')).toMatchObject({ state: 'open', opens: 1 });
    expect(transitions).toEqual(['closed->open']);
    // while open: refused at once, no call, no retry, no delay
    for (let i = 0; i < 3; i += 1) {
      const refused = await r.execute('s', failing).catch((e: unknown) => e);
      expect(isBcastError(refused, ErrorCode.CircuitOpen)).toBe(true);
      expect((refused as { attempts?: number }).attempts).toBe(0);
    }
    expect(calls).toBe(5);
    expect(retries).toHaveLength(4);
    expect(vi.getTimerCount()).toBe(0);
    expect(vi.getRealSystemTime() - started).toBeLessThan(1_000);
  });

  it('turns a hang into a typed timeout that counts against the circuit', async () => {
    const r = new ReliabilityManager({ retry: { maxRetries: 0 }, timeoutMs: 250, circuitBreaker: { failureThreshold: 2 } });
    const hang = (): Promise<never> => new Promise(() => {});
    const e1 = await settle(r.execute('s', hang), 50).catch((e: unknown) => e);
    expect(isBcastError(e1, ErrorCode.Timeout)).toBe(true);
    await settle(r.execute('s', hang), 50).catch(() => {});
    expect(r.stateOf('s').state).toBe('open');
  });

  it("aborts the call's signal when it times out, not when it returns (an abort on every return cost a DOMException per publish)", async () => {
    const r = new ReliabilityManager({ retry: { maxRetries: 0 }, timeoutMs: 250 });
    const signals: AbortSignal[] = [];
    await r.execute('s', ({ signal }) => {
      signals.push(signal);
      return Promise.resolve('ok');
    });
    await settle(
      r.execute('s', ({ signal }) => {
        signals.push(signal);
        return new Promise<never>(() => {});
      }),
      50,
    ).catch(() => {});
    expect(signals.map((s) => s.aborted)).toEqual([false, true]);
  });

  it('F9 Retry × breaker composition: isolate() refuses with BCAST_CIRCUIT_ISOLATED (never retried, fn never called) and health says isolated; disposing the handle closes it, and so does dispose()', async () => {
    const r = new ReliabilityManager({ retry: { maxRetries: 3, jitter: false } });
    let calls = 0;
    let retries = 0;
    r.onEvent((e) => void (e.type === 'retry' && (retries += 1)));
    const release = r.isolate('s');
    const refused = await r
      .execute('s', () => {
        calls += 1;
        return 1;
      })
      .catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: ErrorCode.CircuitIsolated, attempts: 0 });
    expect(calls).toBe(0);
    expect(retries).toBe(0);
    expect(r.stateOf('s').state).toBe('isolated');
    release();
    expect(r.stateOf('s').state).toBe('closed');
    await expect(r.execute('s', () => 1)).resolves.toEqual({ value: 1, attempts: 1 });

    // dispose() while isolated: the manager starts again from closed scopes
    r.isolate('s');
    r.dispose();
    expect(r.stateOf('s')).toMatchObject({ state: 'closed', consecutiveFailures: 0, opens: 0 });
    await expect(r.execute('s', () => 2)).resolves.toEqual({ value: 2, attempts: 1 });

    // through a broadcaster: health says isolated while it is held, closed when released
    const b = new Broadcaster({ pingIntervalMs: 0, logger: { warn() {}, error() {} } });
    try {
      const held = b.isolate();
      const health = b.getHealthStatus();
      expect(health.status).toBe('degraded');
      expect(health.reliability.circuits['backplane']?.state).toBe('isolated');
      expect(health.reasons).toContain('circuit "backplane" is isolated');
      held();
      expect(b.getHealthStatus().reliability.circuits['backplane']?.state).toBe('closed');
      expect(b.getHealthStatus().status).toBe('healthy');
    } finally {
      await b.dispose();
    }
  });
});
