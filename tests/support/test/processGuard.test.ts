import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { collectProcessProblems } from '../processGuard.js';

// The guard every integration suite uses must be able to fail: each kind of problem is recorded.

describe('collectProcessProblems', () => {
  it('records a MaxListenersExceededWarning from any emitter, and no other warning', async () => {
    const collector = collectProcessProblems();
    try {
      process.emitWarning('not a leak', 'DeprecationWarning');
      const emitter = new EventEmitter();
      emitter.setMaxListeners(1);
      emitter.on('leak', () => {});
      emitter.on('leak', () => {});
      await collector.settle();
      expect(collector.problems).toEqual([expect.stringMatching(/^MaxListenersExceededWarning: .*2 leak listeners/)]);
    } finally {
      collector.stop();
    }
  });

  it('records unhandledRejection and uncaughtException, and stop() removes its listeners', () => {
    // vitest's own handlers would report these emissions as real failures: set aside during the check.
    const events = ['unhandledRejection', 'uncaughtException', 'warning'] as const;
    const before = Object.fromEntries(events.map((e) => [e, process.listenerCount(e)]));
    const aside = { rejection: process.rawListeners('unhandledRejection'), exception: process.rawListeners('uncaughtException') };
    process.removeAllListeners('unhandledRejection');
    process.removeAllListeners('uncaughtException');
    try {
      const collector = collectProcessProblems();
      process.emit('unhandledRejection', new Error('nobody awaited me'), Promise.resolve());
      (process.emit as (event: string, ...args: unknown[]) => boolean)('uncaughtException', new TypeError('nobody caught me'), 'uncaughtException');
      collector.stop();
      expect(collector.problems).toEqual(['unhandledRejection: Error: nobody awaited me', 'uncaughtException: TypeError: nobody caught me']);
      expect(process.listenerCount('unhandledRejection') + process.listenerCount('uncaughtException')).toBe(0);
    } finally {
      for (const l of aside.rejection) process.on('unhandledRejection', l as (...a: unknown[]) => void);
      for (const l of aside.exception) process.on('uncaughtException', l as (...a: unknown[]) => void);
    }
    expect(Object.fromEntries(events.map((e) => [e, process.listenerCount(e)]))).toEqual(before);
  });
});
