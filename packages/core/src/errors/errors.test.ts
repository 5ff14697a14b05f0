import { BrokenCircuitError, TaskCancelledError } from 'cockatiel';
import { describe, expect, it } from 'vitest';
import { BcastError, ErrorClassifier, ErrorCode, isBcastError, toBcastError } from '../index.js';

describe('BcastError', () => {
  it('carries a stable code, details and cause, and serialises', () => {
    const cause = new Error('root');
    const err = new BcastError(ErrorCode.InvalidRoom, 'bad room', { cause, details: { reason: 'empty' } });
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe('BCAST_INVALID_ROOM');
    expect(err.cause).toBe(cause);
    expect(JSON.parse(JSON.stringify(err))).toEqual({ name: 'BcastError', code: 'BCAST_INVALID_ROOM', message: 'bad room', details: { reason: 'empty' } });
  });

  it('is recognised by the guard, by code, and not confused with look-alikes', () => {
    const err = new BcastError(ErrorCode.Timeout, 't');
    expect(isBcastError(err)).toBe(true);
    expect(isBcastError(err, ErrorCode.Timeout)).toBe(true);
    expect(isBcastError(err, ErrorCode.CircuitOpen)).toBe(false);
    expect(isBcastError({ code: 'BCAST_TIMEOUT', message: 't' })).toBe(false);
    expect(isBcastError(null)).toBe(false);
  });

  it('toBcastError wraps anything and keeps BcastErrors as they are', () => {
    const err = new BcastError(ErrorCode.Shutdown, 's');
    expect(toBcastError(err)).toBe(err);
    const wrapped = toBcastError('boom');
    expect(wrapped.code).toBe(ErrorCode.Internal);
    expect(wrapped.message).toBe('boom');
    expect(toBcastError(new TypeError('x')).cause).toBeInstanceOf(TypeError);
  });
});

describe('ErrorClassifier', () => {
  const c = new ErrorClassifier();
  const withCode = (code: string): Error => Object.assign(new Error(code), { code });

  it('classifies dependency errors', () => {
    expect(c.classify(withCode('ECONNREFUSED'))).toBe('transient');
    expect(c.classify(new BcastError(ErrorCode.Timeout, 't'))).toBe('transient');
    expect(c.classify(new TaskCancelledError())).toBe('transient');
    expect(c.classify(new BrokenCircuitError())).toBe('circuit-open');
    expect(c.classify(new BcastError(ErrorCode.CircuitOpen, 'open'))).toBe('circuit-open');
    expect(c.classify(new BcastError(ErrorCode.InvalidMessage, 'bad'))).toBe('caller');
    expect(c.classify(new BcastError(ErrorCode.ConnectionClosed, 'gone'))).toBe('connection-dead');
    expect(c.classify(new RangeError('weird'))).toBe('other');
  });

  it('classifies send errors: a dead socket is cleaned up, anything else only counted', () => {
    expect(c.classifySendError(withCode('EPIPE'))).toBe('connection-dead');
    expect(c.classifySendError(new Error('WebSocket is not open: readyState 3 (CLOSED)'))).toBe('connection-dead');
    expect(c.classifySendError(new TypeError('cannot read x of undefined'))).toBe('other');
  });

  it('lets an app rule go first', () => {
    const custom = new ErrorClassifier({ classify: (e) => (e instanceof RangeError ? 'transient' : undefined) });
    expect(custom.classify(new RangeError('x'))).toBe('transient');
    expect(custom.classify(withCode('ECONNREFUSED'))).toBe('transient');
  });
});

describe('newConnectionId', () => {
  it('gives 32 hex characters, unique over many pool refills', async () => {
    const { newConnectionId } = await import('../adapter.js');
    const ids = new Set<string>();
    for (let i = 0; i < 5_000; i += 1) ids.add(newConnectionId());
    expect(ids.size).toBe(5_000);
    for (const id of [...ids].slice(0, 50)) expect(id).toMatch(/^[0-9a-f]{32}$/);
  });
});
