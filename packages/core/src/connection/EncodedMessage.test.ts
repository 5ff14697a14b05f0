import { describe, expect, it } from 'vitest';
import { ErrorCode, isBcastError } from '../index.js';
import { encodeMessage } from './EncodedMessage.js';

const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (error) {
    return isBcastError(error) ? error.code : 'not a BcastError';
  }
  return undefined;
};

describe('encodeMessage', () => {
  it('sends strings as they are, objects as JSON, bytes as binary', () => {
    expect(encodeMessage('héllo').text).toBe('héllo');
    expect(encodeMessage('héllo').byteLength).toBe(6);
    const obj = encodeMessage({ type: 'chat', n: 1 });
    expect(obj.text).toBe('{"type":"chat","n":1}');
    expect(obj.type).toBe('chat');
    expect(obj.value).toEqual({ type: 'chat', n: 1 });
    expect(encodeMessage([1, 2]).type).toBeUndefined();
    expect(encodeMessage(null).text).toBe('null');
    const bin = encodeMessage(new Uint8Array([1, 2, 3]));
    expect(bin.binary).toBe(true);
    expect([...bin.bytes]).toEqual([1, 2, 3]);
    expect(bin.text).toBeUndefined();
  });

  it.each([
    ['undefined', undefined],
    ['a function', () => 1],
    ['a symbol', Symbol('s')],
    ['a BigInt', 10n],
    ['an object holding a BigInt', { n: 10n }],
    ['an object whose toJSON returns undefined', { toJSON: () => undefined }],
  ])('rejects %s with BCAST_INVALID_MESSAGE', (_name, value) => {
    expect(codeOf(() => encodeMessage(value))).toBe(ErrorCode.InvalidMessage);
  });

  it('rejects a message whose type getter throws as invalid input, not an internal error', () => {
    class Hostile {
      get type(): string {
        throw new Error('boom');
      }
    }
    expect(codeOf(() => encodeMessage(new Hostile()))).toBe(ErrorCode.InvalidMessage);
  });

  it('rejects circular objects and says why', () => {
    const a: Record<string, unknown> = {};
    a.self = a;
    try {
      encodeMessage(a);
      expect.unreachable();
    } catch (error) {
      expect(isBcastError(error, ErrorCode.InvalidMessage)).toBe(true);
      expect((error as Error).message).toMatch(/circular/);
    }
  });

  it('rejects messages over maxBytes, counting UTF-8 bytes', () => {
    expect(codeOf(() => encodeMessage('x'.repeat(11), { maxBytes: 10 }))).toBe(ErrorCode.MessageTooLarge);
    expect(codeOf(() => encodeMessage('é'.repeat(6), { maxBytes: 10 }))).toBe(ErrorCode.MessageTooLarge);
    expect(codeOf(() => encodeMessage('é'.repeat(5), { maxBytes: 10 }))).toBeUndefined();
    expect(codeOf(() => encodeMessage(new Uint8Array(11), { maxBytes: 10 }))).toBe(ErrorCode.MessageTooLarge);
    expect(codeOf(() => encodeMessage({ big: 'x'.repeat(1024 * 1024) }))).toBe(ErrorCode.MessageTooLarge);
  });

  it('prepares a transport form once per message', () => {
    const m = encodeMessage({ a: 1 });
    const key = {};
    let builds = 0;
    const build = (): string => `frame${++builds}`;
    expect(m.prepare(key, build)).toBe('frame1');
    expect(m.prepare(key, build)).toBe('frame1');
    expect(m.prepare({}, build)).toBe('frame2');
  });
});
