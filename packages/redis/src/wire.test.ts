import { ENVELOPE_VERSION, type BackplaneEnvelope } from '@bcast/core/backplane';
import { describe, expect, it } from 'vitest';
import { backoff } from './RedisBackplane.js';
import { decodeMessage, encodeEnvelope, encodeProbe, ownPrefix, ownProbePrefix, probeToken } from './wire.js';

const envelope: BackplaneEnvelope = {
  ts: 1,
  payload: '{"a":"{\\"v\\":1,\\"nodeId\\":\\"n1\\","}',
  enc: 'json',
  op: 'user',
  target: 'u1',
  id: 'm1',
  nodeId: 'n1',
  v: ENVELOPE_VERSION,
  trace: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
};

describe('wire format', () => {
  it('writes v and nodeId first and round-trips every field unchanged', () => {
    const raw = encodeEnvelope(envelope);
    expect(raw.startsWith(ownPrefix('n1'))).toBe(true);
    expect(raw.startsWith(ownPrefix('n2'))).toBe(false);
    expect(decodeMessage(raw)).toEqual({ kind: 'envelope', envelope });
  });

  it('cannot mistake a payload that mentions a node id for that node own message', () => {
    const other = { ...envelope, nodeId: 'n2' };
    const raw = encodeEnvelope(other);
    // the payload mentions n1 (escaped, inside a string), and nothing in the message reads as n1's prefix
    expect(raw).toContain(JSON.stringify(other.payload).slice(1, -1));
    expect(raw).not.toContain(ownPrefix('n1'));
    expect(raw.startsWith(ownPrefix('n2'))).toBe(true);
  });

  it('recognises probes, its own by prefix', () => {
    const raw = encodeProbe('n1', '7', 5);
    expect(raw.startsWith(ownProbePrefix('n1'))).toBe(true);
    expect(raw.startsWith(ownProbePrefix('n2'))).toBe(false);
    expect(probeToken(raw)).toBe('7');
    expect(decodeMessage(raw)).toEqual({ kind: 'probe', nodeId: 'n1', token: '7' });
  });

  it.each([
    ['not json', 'invalidJson'],
    ['', 'invalidJson'],
    ['42', 'foreign'],
    ['null', 'foreign'],
    ['[{"v":1}]', 'foreign'],
    ['{"hello":"world"}', 'foreign'],
    ['{"v":2,"id":"x","nodeId":"n","op":"all","enc":"text","payload":"p","ts":1}', 'unknownVersion'],
    ['{"v":"1","id":"x","nodeId":"n","op":"all","enc":"text","payload":"p","ts":1}', 'unknownVersion'],
    ['{"v":1,"id":"x","nodeId":"n","op":"some","enc":"text","payload":"p","ts":1}', 'malformed'],
    ['{"v":1,"id":"x","nodeId":"n","op":"room","enc":"text","payload":"p","ts":1}', 'malformed'],
    ['{"v":1,"id":"x","nodeId":"n","op":"all","enc":"gzip","payload":"p","ts":1}', 'malformed'],
    ['{"v":1,"nodeId":"n","probe":3}', 'malformed'],
  ])('drops %s as %s', (raw, reason) => {
    expect(decodeMessage(raw)).toMatchObject({ kind: 'dropped', reason });
  });
});

describe('reconnect backoff', () => {
  it('starts at >= 100 ms, doubles, and never exceeds the 5 s cap', () => {
    for (let i = 0; i < 200; i += 1) {
      const delays = Array.from({ length: 12 }, (_, n) => backoff(n + 1, 100, 5_000));
      expect(delays[0]).toBeGreaterThanOrEqual(100);
      expect(delays[0]).toBeLessThanOrEqual(120);
      expect(delays[3]).toBeGreaterThanOrEqual(800);
      expect(Math.max(...delays)).toBeLessThanOrEqual(5_000);
      expect(delays[11]).toBe(5_000);
    }
    expect(backoff(1_000_000, 100, 5_000)).toBe(5_000);
  });
});
