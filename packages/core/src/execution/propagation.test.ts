import { describe, expect, it } from 'vitest';
import { BcastError, ErrorClassifier, ErrorCode } from '../index.js';
import { ExecutionMonitor } from '../monitor/ExecutionMonitor.js';
import { ReliabilityManager, type ReliabilityOptions } from '../reliability/ReliabilityManager.js';
import { ExecutionEngine, type ExecutionInterface, type PropagationOutcome, type Propagation } from './ExecutionEngine.js';

type Ctx = { n: number; propagate?: boolean };

const fast = { baseDelayMs: 1, maxDelayMs: 1, jitter: false };

function engine(options: ReliabilityOptions = {}) {
  const monitor = new ExecutionMonitor();
  const reliability = new ReliabilityManager({ retry: { ...fast, maxRetries: 0 }, ...options });
  return { engine: new ExecutionEngine({ monitor, reliability, classifier: new ErrorClassifier() }), monitor, reliability };
}

function executor(log: string[], overrides: Partial<ExecutionInterface<Ctx, string>> = {}): ExecutionInterface<Ctx, string> {
  return {
    describe: () => ({ operation: 'op' }),
    validatePreconditions: (ctx) => {
      log.push('validate');
      if (ctx.n < 0) throw new BcastError(ErrorCode.InvalidTarget, 'n must be >= 0');
    },
    executeCoreLogic: (ctx) => {
      log.push('core');
      return `done ${ctx.n}`;
    },
    ...overrides,
  };
}

/** A propagation step that records its calls; `behaviour(attempt)` decides each attempt. */
function step(log: string[], behaviour: (attempt: number, signal: AbortSignal) => Promise<void> = async () => {}, verdict: 'failed' | 'unknown' = 'failed') {
  const failures: BcastError[] = [];
  let attempts = 0;
  const p: Propagation<Ctx> & { failures: BcastError[]; readonly attempts: number } = {
    scope: 'bp',
    failures,
    get attempts() {
      return attempts;
    },
    wanted: (ctx) => ctx.propagate !== false,
    propagate: (_ctx, signal) => {
      attempts += 1;
      log.push(`propagate#${attempts}`);
      return behaviour(attempts, signal);
    },
    failed: (error) => {
      failures.push(error);
      log.push('failed');
      return verdict;
    },
  };
  return p;
}

describe('ExecutionEngine propagation step', () => {
  it('starts the propagation before the core logic, after validation', async () => {
    const log: string[] = [];
    const { engine: e } = engine();
    const r = await e.execute(executor(log), { n: 1 }, { propagation: step(log) });
    expect(log).toEqual(['validate', 'propagate#1', 'core']);
    expect(r).toMatchObject({ status: 'success', result: 'done 1', attempts: 1, propagation: { status: 'published', attempts: 1 } });
  });

  it('does not make the core logic wait for the propagation, but reports its outcome', async () => {
    const log: string[] = [];
    let finish!: () => void;
    const { engine: e } = engine();
    const pending = e.execute(executor(log), { n: 2 }, {
      propagation: step(log, () => new Promise<void>((resolve) => (finish = resolve)).then(() => void log.push('published'))),
    });
    // the core logic ran while the propagation is still in flight
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(log).toEqual(['validate', 'propagate#1', 'core']);
    finish();
    const r = await pending;
    expect(log).toEqual(['validate', 'propagate#1', 'core', 'published']);
    expect(r.propagation).toEqual({ status: 'published', attempts: 1 });
  });

  it('a failed propagation never fails the operation: its error is in ExecutionResult.propagation', async () => {
    const log: string[] = [];
    const { engine: e, monitor } = engine();
    const s = step(log, async () => {
      throw new Error('bus exploded');
    });
    const r = await e.execute(executor(log), { n: 3 }, { propagation: s });
    expect(r.status).toBe('success');
    expect(r.result).toBe('done 3');
    expect(r.error).toBeUndefined();
    expect(r.propagation).toMatchObject({ status: 'failed', attempts: 1 });
    expect(r.propagation?.error?.code).toBe(ErrorCode.Internal);
    expect(r.propagation?.error?.message).toBe('bus exploded');
    expect(s.failures).toHaveLength(1);
    expect(s.failures[0]).toBe(r.propagation?.error);
    expect(monitor.getStats().operations.op).toMatchObject({ count: 1, success: 1, failed: 0 });
  });

  it('the step decides what a failure means: unknown is reported as unknown', async () => {
    const log: string[] = [];
    const { engine: e } = engine();
    const r = await e.execute(executor(log), { n: 4 }, {
      propagation: step(log, async () => {
        throw new BcastError(ErrorCode.Timeout, 'no answer');
      }, 'unknown'),
    });
    expect(r.status).toBe('success');
    expect(r.propagation).toMatchObject({ status: 'unknown', error: { code: ErrorCode.Timeout } });
  });

  it('runs under its own reliability scope: the scope timeout aborts its signal and the outcome is a timeout', async () => {
    const log: string[] = [];
    const { engine: e } = engine({ scopes: { bp: { timeoutMs: 20 } } });
    let seen: AbortSignal | undefined;
    const s = step(log, (_attempt, signal) => {
      seen = signal;
      return new Promise<void>(() => {}); // never answers
    }, 'unknown');
    const r = await e.execute(executor(log), { n: 5 }, { propagation: s });
    expect(r.status).toBe('success');
    expect(r.propagation).toMatchObject({ status: 'unknown', attempts: 1, error: { code: ErrorCode.Timeout } });
    expect(seen?.aborted).toBe(true);
    expect(s.failures).toHaveLength(1);
  });

  it('wanted() false skips the step entirely: not called, no outcome', async () => {
    const log: string[] = [];
    const { engine: e } = engine();
    const s = step(log);
    const r = await e.execute(executor(log), { n: 6, propagate: false }, { propagation: s });
    expect(log).toEqual(['validate', 'core']);
    expect(s.attempts).toBe(0);
    expect(r).toEqual({ status: 'success', result: 'done 6', durationMs: expect.any(Number), attempts: 1 });
    expect('propagation' in r).toBe(false);
  });

  it('a rejected operation never propagates', async () => {
    const log: string[] = [];
    const { engine: e } = engine();
    const s = step(log);
    const r = await e.execute(executor(log), { n: -1 }, { propagation: s });
    expect(r.status).toBe('rejected');
    expect(log).toEqual(['validate']);
    expect(r.propagation).toBeUndefined();
  });

  it('counts the attempts of the step under its scope (retries, then success or give-up)', async () => {
    const log: string[] = [];
    const { engine: e } = engine({ scopes: { bp: { retry: { ...fast, maxRetries: 3 }, retryWhen: () => true } } });
    const flaky = step(log, async (attempt) => {
      if (attempt < 3) throw new Error(`attempt ${attempt} failed`);
    });
    const ok = await e.execute(executor(log), { n: 7 }, { propagation: flaky });
    expect(ok.propagation).toEqual({ status: 'published', attempts: 3 });
    expect(flaky.failures).toEqual([]);
    expect(ok.attempts).toBe(1); // the core logic ran once

    const down = step([], async () => {
      throw new Error('still down');
    });
    const failed = await e.execute(executor([]), { n: 8 }, { propagation: down });
    expect(failed.status).toBe('success');
    expect(failed.propagation).toMatchObject({ status: 'failed', attempts: 4 });
    expect(down.attempts).toBe(4);
    expect(down.failures).toHaveLength(1);
  });

  it('a failing core logic still reports the propagation outcome', async () => {
    const log: string[] = [];
    const { engine: e } = engine();
    const r = await e.execute(
      executor(log, {
        executeCoreLogic: () => {
          log.push('core');
          throw new RangeError('bug');
        },
      }),
      { n: 9 },
      { propagation: step(log) },
    );
    expect(r.status).toBe('failed');
    expect(r.error?.message).toBe('bug');
    expect(r.propagation).toEqual({ status: 'published', attempts: 1 });
  });

  it('summarize sees the propagation outcome', async () => {
    const log: string[] = [];
    const seen: Array<PropagationOutcome | undefined> = [];
    const { engine: e } = engine();
    const r = await e.execute(
      executor(log, {
        summarize: (_r, _c, propagation) => {
          seen.push(propagation);
          return { outcome: propagation?.status === 'failed' ? 'partial' : 'success' };
        },
      }),
      { n: 10 },
      {
        propagation: step(log, async () => {
          throw new Error('down');
        }),
      },
    );
    expect(seen).toHaveLength(1);
    expect(seen[0]?.status).toBe('failed');
    expect(r.status).toBe('partial');
  });
});
