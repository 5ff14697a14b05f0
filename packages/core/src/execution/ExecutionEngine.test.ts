import { describe, expect, it } from 'vitest';
import { BcastError, ErrorClassifier, ErrorCode } from '../index.js';
import { ExecutionMonitor } from '../monitor/ExecutionMonitor.js';
import { ReliabilityManager } from '../reliability/ReliabilityManager.js';
import { ExecutionEngine, type ExecutionInterface } from './ExecutionEngine.js';

function engine(reliability = new ReliabilityManager({ retry: { baseDelayMs: 1, maxDelayMs: 2 } })) {
  const monitor = new ExecutionMonitor();
  return { engine: new ExecutionEngine({ monitor, reliability, classifier: new ErrorClassifier() }), monitor };
}

function executor(overrides: Partial<ExecutionInterface<{ n: number }, string>> & { calls?: string[] } = {}): ExecutionInterface<{ n: number }, string> & { calls: string[] } {
  const calls: string[] = overrides.calls ?? [];
  return {
    calls,
    describe: () => ({ operation: 'op' }),
    validatePreconditions: (ctx) => {
      calls.push('validate');
      if (ctx.n < 0) throw new BcastError(ErrorCode.InvalidTarget, 'n must be >= 0');
    },
    executeCoreLogic: (ctx) => {
      calls.push('execute');
      return `done ${ctx.n}`;
    },
    ...overrides,
  };
}

describe('ExecutionEngine', () => {
  it('validates, executes and reports the result shape', async () => {
    const { engine: e, monitor } = engine();
    const x = executor();
    const r = await e.execute(x, { n: 1 });
    expect(r).toEqual({ status: 'success', result: 'done 1', durationMs: expect.any(Number), attempts: 1 });
    expect(x.calls).toEqual(['validate', 'execute']);
    expect(monitor.getStats().operations.op).toMatchObject({ count: 1, success: 1 });
  });

  it('when preconditions fail nothing is executed and the typed error is returned', async () => {
    const { engine: e } = engine();
    const x = executor();
    const r = await e.execute(x, { n: -1 });
    expect(r.status).toBe('rejected');
    expect(r.error?.code).toBe(ErrorCode.InvalidTarget);
    expect(r.attempts).toBe(0);
    expect(r.result).toBeUndefined();
    expect(x.calls).toEqual(['validate']);
  });

  it('counts attempts under a reliability scope and reports the final failure', async () => {
    const { engine: e, monitor } = engine();
    let n = 0;
    const flaky = executor({
      describe: () => ({ operation: 'flaky', reliabilityScope: 'dep' }),
      executeCoreLogic: () => {
        n += 1;
        if (n < 3) throw Object.assign(new Error('reset'), { code: 'ECONNRESET' });
        return 'ok';
      },
    });
    expect(await e.execute(flaky, { n: 0 })).toMatchObject({ status: 'success', result: 'ok', attempts: 3 });
    const broken = executor({
      describe: () => ({ operation: 'broken', reliabilityScope: 'dep2' }),
      executeCoreLogic: () => {
        throw Object.assign(new Error('reset'), { code: 'ECONNRESET' });
      },
    });
    const r = await e.execute(broken, { n: 0 });
    expect(r).toMatchObject({ status: 'failed', attempts: 4 });
    expect(r.error?.code).toBe(ErrorCode.Internal);
    expect(monitor.getStats().operations.broken).toMatchObject({ failed: 1, errorRate: 1 });
    expect(monitor.getStats().errorsByCategory.transient).toBe(1);
  });

  it('never throws, even when describe or the executor throws', async () => {
    const { engine: e } = engine();
    const r1 = await e.execute(executor({ describe: () => { throw new Error('bad describe'); } }), { n: 0 });
    expect(r1.status).toBe('rejected');
    const r2 = await e.execute(executor({ executeCoreLogic: () => { throw new RangeError('bug'); } }), { n: 0 });
    expect(r2).toMatchObject({ status: 'failed', attempts: 1 });
    expect(r2.error?.message).toBe('bug');
  });

  it('uses summarize for outcome', async () => {
    const { engine: e } = engine();
    const r = await e.execute(executor({ summarize: () => ({ outcome: 'partial' }) }), { n: 0 });
    expect(r.status).toBe('partial');
  });
});
