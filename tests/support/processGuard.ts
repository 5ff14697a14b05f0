import { afterAll, afterEach, beforeAll, expect } from 'vitest';

/** What happened on `process` while a collector was listening, one line per event. */
export interface ProcessProblems {
  readonly problems: string[];
  /** Resolves once pending 'warning' and 'unhandledRejection' emissions have happened. */
  settle(): Promise<void>;
  stop(): void;
}

/**
 * Starts collecting `unhandledRejection`, `uncaughtException` and `MaxListenersExceededWarning`.
 * vitest has handlers of its own on `process` for the first two; these listeners only collect,
 * they change nothing else.
 */
export function collectProcessProblems(): ProcessProblems {
  const problems: string[] = [];
  const onRejection = (reason: unknown): void => void problems.push(`unhandledRejection: ${describeValue(reason)}`);
  const onException = (error: unknown): void => void problems.push(`uncaughtException: ${describeValue(error)}`);
  const onWarning = (warning: Error): void => {
    if (warning.name === 'MaxListenersExceededWarning') problems.push(`${warning.name}: ${warning.message}`);
  };
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  process.on('warning', onWarning);
  return {
    problems,
    // Node emits 'warning' on a later tick than the addListener that caused it, and
    // 'unhandledRejection' once the microtask queue has drained: one turn of the loop covers both.
    settle: () => new Promise((resolve) => setImmediate(resolve)),
    stop() {
      process.off('unhandledRejection', onRejection);
      process.off('uncaughtException', onException);
      process.off('warning', onWarning);
    },
  };
}

/**
 * Process-level hygiene for an integration test file: asserts after each test (cleanup included)
 * that there was no `unhandledRejection`, no `uncaughtException` and no `MaxListenersExceededWarning`.
 *
 * Call it once at the top of the file, before any other hook: its `afterEach` then runs after the
 * file's own cleanup hooks (vitest runs after-hooks in reverse order of registration), so what a
 * cleanup causes is caught too, and blamed on the test it followed.
 */
export function guardProcess(): void {
  let collector: ProcessProblems | undefined;
  beforeAll(() => {
    collector = collectProcessProblems();
  });
  afterEach(async () => {
    if (!collector) return;
    await collector.settle();
    expect(collector.problems.splice(0), 'process-level problems during this test').toEqual([]);
  });
  afterAll(async () => {
    if (!collector) return;
    await collector.settle();
    collector.stop();
    expect(collector.problems.splice(0), 'process-level problems after the last test').toEqual([]);
  });
}

function describeValue(value: unknown): string {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
