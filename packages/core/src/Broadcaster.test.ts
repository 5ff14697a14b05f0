import { afterEach, describe, expect, it, vi } from 'vitest';
import { MemoryBus } from './backplane.js';
import { Broadcaster, CloseCode, ErrorCode, isBcastError, type BroadcasterOptions, type BroadcastResult } from './index.js';
import { FakeConnection, quietLogger } from './test-utils/fakeConnection.js';

const made: Broadcaster[] = [];
function setup(options: BroadcasterOptions = {}) {
  const logger = quietLogger();
  const b = new Broadcaster({ pingIntervalMs: 0, logger, ...options });
  made.push(b);
  const conns = new Map<string, FakeConnection>();
  const add = (id: string, userId?: string, rooms: string[] = []): FakeConnection => {
    const c = new FakeConnection(id, userId);
    conns.set(id, c);
    b.register(c);
    for (const r of rooms) b.join(id, r);
    return c;
  };
  const receivers = (): string[] => [...conns.values()].filter((c) => c.received.length > 0).map((c) => c.id).sort();
  return { b, add, conns, receivers, logger };
}

afterEach(async () => {
  for (const b of made.splice(0)) await b.dispose();
});

const accounted = (r: BroadcastResult): void => {
  expect(r.recipients).toBe(r.delivered + r.failed + r.dropped);
  expect(r.removed).toBeLessThanOrEqual(r.failed);
};

describe('targeting', () => {
  function world() {
    const s = setup();
    s.add('a1', 'alice', ['lobby', 'dev']);
    s.add('a2', 'alice', ['dev']);
    s.add('b1', 'bob', ['lobby']);
    s.add('c1', 'carol');
    s.add('anon');
    return s;
  }

  it('all reaches every connection once', async () => {
    const s = world();
    const r = await s.b.toAll({ type: 'hello' });
    expect(s.receivers()).toEqual(['a1', 'a2', 'anon', 'b1', 'c1']);
    for (const c of s.conns.values()) expect(c.received).toEqual(['{"type":"hello"}']);
    expect(r).toMatchObject({ operation: 'all', recipients: 5, delivered: 5, failed: 0, removed: 0, messageType: 'hello', backplane: 'skipped' });
    accounted(r);
  });

  it('user reaches every connection of that user and nobody else', async () => {
    const s = world();
    const r = await s.b.toUser('alice', 'hi');
    expect(s.receivers()).toEqual(['a1', 'a2']);
    expect(r).toMatchObject({ recipients: 2, delivered: 2 });
    expect(r.messageType).toBeUndefined();
  });

  it('room reaches its members once, including a connection in several rooms', async () => {
    const s = world();
    await s.b.toRoom('dev', { n: 1 });
    await s.b.toRoom('lobby', { n: 2 });
    expect(s.conns.get('a1')?.messages).toEqual([{ n: 1 }, { n: 2 }]);
    expect(s.conns.get('a2')?.messages).toEqual([{ n: 1 }]);
    expect(s.conns.get('b1')?.messages).toEqual([{ n: 2 }]);
    expect(s.conns.get('c1')?.messages).toEqual([]);
  });

  it('explicit connection ids reach each once, even when repeated, and skip unknown ids', async () => {
    const s = world();
    const r = await s.b.toConnections(['b1', 'c1', 'b1', 'nope'], 'x');
    expect(s.receivers()).toEqual(['b1', 'c1']);
    expect(s.conns.get('b1')?.received).toEqual(['x']);
    expect(r.recipients).toBe(2);
  });

  it('except removes connections from any target', async () => {
    const s = world();
    await s.b.toAll('all', { except: ['a1', 'anon'] });
    await s.b.toRoom('lobby', 'room', { except: ['b1'] });
    await s.b.toUser('alice', 'user', { except: ['a2'] });
    expect(s.conns.get('a1')?.received).toEqual(['room', 'user']);
    expect(s.conns.get('a2')?.received).toEqual(['all']);
    expect(s.conns.get('b1')?.received).toEqual(['all']);
    expect(s.conns.get('anon')?.received).toEqual([]);
  });

  it('an unknown user or an empty room is a zero result, not an error', async () => {
    const s = world();
    expect(await s.b.toUser('nobody', 'x')).toMatchObject({ recipients: 0, delivered: 0, failed: 0 });
    expect(await s.b.toRoom('empty', 'x')).toMatchObject({ recipients: 0, delivered: 0, failed: 0 });
    expect(s.receivers()).toEqual([]);
  });

  it('keeps per-connection order across broadcasts', async () => {
    const s = world();
    for (let i = 0; i < 50; i += 1) await s.b.toAll({ seq: i });
    for (const c of s.conns.values()) expect(c.messages).toEqual(Array.from({ length: 50 }, (_, i) => ({ seq: i })));
  });
});

describe('failures and cleanup', () => {
  it('a throwing connection never stops the others and is counted', async () => {
    const s = setup();
    s.add('a', 'u');
    const bad = s.add('b', 'u');
    s.add('c', 'u');
    bad.throwOnSend = new TypeError('unexpected');
    const r = await s.b.toAll('m');
    expect(s.receivers()).toEqual(['a', 'c']);
    expect(r).toMatchObject({ recipients: 3, delivered: 2, failed: 1, removed: 0 });
    accounted(r);
    expect(s.b.connections.get('b')?.errorCount).toBe(1);
    expect(s.b.connections.get('a')?.messageCount).toBe(1);
    expect(s.logger.lines.join('\n')).toMatch(/send to connection b failed/);
  });

  it('a connection that is not open is closed with 1001 and removed from users and rooms', async () => {
    const s = setup();
    s.add('a', 'u', ['r']);
    const dead = s.add('b', 'u', ['r', 'r2']);
    dead.isOpen = false;
    const r = await s.b.toRoom('r', 'm');
    expect(r).toMatchObject({ recipients: 2, delivered: 1, failed: 1, removed: 1 });
    accounted(r);
    expect(dead.closes).toEqual([{ code: CloseCode.GoingAway, reason: 'Connection lost during broadcast' }]);
    expect(s.b.connections.has('b')).toBe(false);
    expect([...s.b.connections.byUser('u')].map((e) => e.id)).toEqual(['a']);
    expect([...s.b.rooms.members('r')]).toEqual(['a']);
    expect(s.b.rooms.has('r2')).toBe(false);
    // the next broadcast no longer sees it
    expect(await s.b.toAll('m2')).toMatchObject({ recipients: 1, delivered: 1 });
  });

  it('a send that fails because the socket died is cleaned up like a dead connection, with the caller reason', async () => {
    const s = setup();
    const c = s.add('a', 'u');
    c.throwOnSend = Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
    const r = await s.b.broadcast({ operation: 'user', userId: 'u', message: 'm', deadConnectionReason: 'Connection lost' });
    expect(r).toMatchObject({ failed: 1, removed: 1 });
    expect(c.closes).toEqual([{ code: 1001, reason: 'Connection lost' }]);
    expect(s.b.connections.size).toBe(0);
  });

  it('a closing connection is skipped and counted as failed', async () => {
    const s = setup();
    s.add('a');
    s.add('b');
    const entry = s.b.connections.get('b');
    if (entry) entry.isClosing = true;
    const r = await s.b.toAll('m');
    expect(r).toMatchObject({ recipients: 2, delivered: 1, failed: 1, removed: 0 });
    expect(s.receivers()).toEqual(['a']);
  });

  it('a slow consumer is closed with 1013, terminated after the grace period, and the others keep receiving', async () => {
    vi.useFakeTimers();
    try {
      const s = setup({ maxBufferedBytes: 1000 });
      s.add('fast');
      const slow = s.add('slow');
      slow.bufferedBytes = 1001;
      slow.close = (code, reason) => void slow.closes.push({ code, reason }); // a non-reader never completes the close
      const r = await s.b.toAll('m');
      expect(r).toMatchObject({ recipients: 2, delivered: 1, failed: 1, removed: 1 });
      expect(slow.closes).toEqual([{ code: 1013, reason: 'slow consumer' }]);
      expect(s.b.connections.has('slow')).toBe(false);
      expect(slow.terminated).toBe(false);
      await vi.advanceTimersByTimeAsync(1_000);
      expect(slow.terminated).toBe(true);
      expect(s.b.getStats().monitor.disconnects).toEqual({ '1013:slow_consumer': 1 });
      expect((await s.b.toAll('m2')).delivered).toBe(1);
    } finally {
      vi.useRealTimers();
    }
  });

  it('volatile messages are dropped for a connection above the soft limit and counted; others are not', async () => {
    const s = setup({ volatileBufferedBytes: 100, maxBufferedBytes: 1000 });
    s.add('fast');
    const behind = s.add('behind');
    behind.bufferedBytes = 500;
    const v = await s.b.toAll('tick', { volatile: true });
    expect(v).toMatchObject({ recipients: 2, delivered: 1, dropped: 1, failed: 0 });
    accounted(v);
    const n = await s.b.toAll('important');
    expect(n).toMatchObject({ delivered: 2, dropped: 0 });
    expect(behind.received).toEqual(['important']);
    expect(s.b.getStats().monitor.dropped).toEqual({ backpressure: 1 });
  });

  it('a throwing onConnect/onDisconnect hook is logged and never breaks anything', async () => {
    const s = setup({
      onConnect: () => {
        throw new Error('hook');
      },
      onDisconnect: () => {
        throw new Error('hook2');
      },
    });
    const c = s.add('a');
    c.isOpen = false;
    expect(await s.b.toAll('m')).toMatchObject({ failed: 1, removed: 1 });
    expect(s.logger.lines.join('\n')).toMatch(/onConnect hook threw[\s\S]*onDisconnect hook threw/);
  });
});

describe('bad input is rejected before anything is sent', () => {
  const cases: Array<[string, Parameters<Broadcaster['broadcast']>[0], string]> = [
    ['undefined message', { operation: 'all', message: undefined }, ErrorCode.InvalidMessage],
    ['function message', { operation: 'all', message: () => 1 }, ErrorCode.InvalidMessage],
    ['symbol message', { operation: 'all', message: Symbol('x') }, ErrorCode.InvalidMessage],
    ['BigInt message', { operation: 'all', message: { n: 1n } }, ErrorCode.InvalidMessage],
    ['oversized message', { operation: 'all', message: 'x'.repeat(2049) }, ErrorCode.MessageTooLarge],
    ['empty room', { operation: 'room', room: '', message: 'm' }, ErrorCode.InvalidRoom],
    ['over-long room', { operation: 'room', room: 'r'.repeat(129), message: 'm' }, ErrorCode.InvalidRoom],
    ['room with control characters', { operation: 'room', room: 'a\u0000b', message: 'm' }, ErrorCode.InvalidRoom],
    ['non-string room', { operation: 'room', room: 42 as unknown as string, message: 'm' }, ErrorCode.InvalidRoom],
    ['empty user', { operation: 'user', userId: '', message: 'm' }, ErrorCode.InvalidUser],
    ['over-long user', { operation: 'user', userId: 'u'.repeat(257), message: 'm' }, ErrorCode.InvalidUser],
    ['connection ids not an array', { operation: 'connections', connectionIds: 'a' as unknown as string[], message: 'm' }, ErrorCode.InvalidTarget],
    ['except with a non-string', { operation: 'all', except: [1 as unknown as string], message: 'm' }, ErrorCode.InvalidTarget],
    ['unknown operation', { operation: 'everyone' as 'all', message: 'm' }, ErrorCode.UnknownOperation],
  ];

  it.each(cases)('%s', async (_name, ctx, code) => {
    const s = setup({ maxMessageBytes: 2048 });
    s.add('a', 'u', ['r']);
    const error = await s.b.broadcast(ctx).catch((e: unknown) => e);
    expect(isBcastError(error, code as ErrorCode)).toBe(true);
    expect((error as Error).message.length).toBeGreaterThan(5);
    expect(s.receivers()).toEqual([]);
    const result = await s.b.execute(ctx);
    expect(result).toMatchObject({ status: 'rejected', attempts: 0 });
    expect(result.error?.code).toBe(code);
  });

  it('counts rejections in stats and never sends a partial message', async () => {
    const s = setup();
    s.add('a');
    await s.b.toAll(undefined).catch(() => {});
    expect(s.b.getStats().monitor.operations.all).toMatchObject({ count: 1, rejected: 1 });
    expect(s.b.getStats().monitor.errorsByCategory.caller).toBe(1);
  });

  it('invalid options are a typed error at construction', () => {
    expect(() => new Broadcaster({ maxMessageBytes: -1 })).toThrow(expect.objectContaining({ code: ErrorCode.InvalidOption }));
    expect(() => new Broadcaster({ pingIntervalMs: Number.NaN })).toThrow(/pingIntervalMs/);
  });

  it('rejects after dispose with BCAST_SHUTDOWN', async () => {
    const s = setup();
    await s.b.dispose();
    await expect(s.b.toAll('x')).rejects.toMatchObject({ code: ErrorCode.Shutdown });
  });
});

describe('execution results', () => {
  it('reports status, result, duration and attempts', async () => {
    const s = setup();
    s.add('a');
    const ok = await s.b.execute({ operation: 'all', message: 'm' });
    expect(ok.status).toBe('success');
    expect(ok.attempts).toBe(1);
    expect(ok.durationMs).toBeGreaterThanOrEqual(0);
    expect(ok.result).toMatchObject({ delivered: 1 });
    s.add('b').isOpen = false;
    const partial = await s.b.execute({ operation: 'all', message: 'm' });
    expect(partial.status).toBe('partial');
  });
});

describe('heartbeat', () => {
  it('pings connections that support it and terminates one that misses its pong', async () => {
    vi.useFakeTimers();
    try {
      const b = new Broadcaster({ pingIntervalMs: 1_000, logger: quietLogger() });
      made.push(b);
      const alive = new FakeConnection('alive', 'u', { ping: true });
      const silent = new FakeConnection('silent', 'u', { ping: true });
      const noPing = new FakeConnection('noping', 'u');
      const h = b.register(alive);
      b.register(silent);
      b.register(noPing);
      b.join('silent', 'room');
      await vi.advanceTimersByTimeAsync(1_000);
      expect([alive.pings, silent.pings]).toEqual([1, 1]);
      h.pong();
      await vi.advanceTimersByTimeAsync(1_000);
      expect(silent.terminated).toBe(true);
      expect(alive.terminated).toBe(false);
      expect(b.connections.has('silent')).toBe(false);
      expect(b.rooms.has('room')).toBe(false);
      expect(b.connections.has('noping')).toBe(true);
      expect(alive.pings).toBe(2);
      expect(b.getStats().monitor.disconnects).toEqual({ '1001:no_pong': 1 });
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('inbound protocol', () => {
  function client(options: BroadcasterOptions = {}) {
    const s = setup(options);
    const c = new FakeConnection('c', 'u');
    const h = s.b.register(c);
    const say = async (frame: string): Promise<unknown> => {
      await h.message(frame);
      return c.messages.at(-1);
    };
    return { ...s, c, h, say };
  }

  it('refuses joins by default (secure by default)', async () => {
    const t = client();
    expect(await t.say('{"type":"join","room":"r","requestId":"1"}')).toMatchObject({ type: 'error', code: 'FORBIDDEN', requestId: '1' });
    expect(t.b.rooms.has('r')).toBe(false);
  });

  it('joins and leaves through authorizeJoin, echoing requestId', async () => {
    const seen: string[] = [];
    const t = client({ authorizeJoin: (entry, room) => (seen.push(`${entry.userId}:${room}`), room !== 'secret') });
    expect(await t.say('{"type":"join","room":"r","requestId":7}')).toEqual({ type: 'ok', op: 'join', room: 'r', requestId: 7 });
    expect([...t.b.rooms.members('r')]).toEqual(['c']);
    expect(await t.say('{"type":"join","room":"secret"}')).toMatchObject({ type: 'error', code: 'FORBIDDEN' });
    expect(seen).toEqual(['u:r', 'u:secret']);
    expect(await t.say('{"type":"leave","room":"r","requestId":"x"}')).toEqual({ type: 'ok', op: 'leave', room: 'r', requestId: 'x' });
    expect(t.b.rooms.has('r')).toBe(false);
  });

  it('answers bad frames with typed errors and keeps the connection open', async () => {
    const t = client({ allowClientJoins: true });
    expect(await t.say('{')).toMatchObject({ type: 'error', code: 'BAD_JSON' });
    expect(await t.say('{"type":"nope","requestId":"r1"}')).toMatchObject({ type: 'error', code: 'UNKNOWN_TYPE', requestId: 'r1' });
    expect(await t.say(JSON.stringify({ type: 'join', room: 'x'.repeat(129) }))).toMatchObject({ code: 'INVALID_ROOM' });
    expect(await t.say(JSON.stringify({ type: 'join', room: 'a\u0007' }))).toMatchObject({ code: 'INVALID_ROOM' });
    expect(await t.say(JSON.stringify({ type: 'join', room: ['a'] }))).toMatchObject({ code: 'INVALID_ROOM' });
    expect(t.b.rooms.size).toBe(0);
    expect(await t.say('{"type":"ping","requestId":2}')).toEqual({ type: 'pong', requestId: 2 });
    expect(t.c.isOpen).toBe(true);
    expect(t.b.getStats().monitor.inboundRejected).toEqual({ BAD_JSON: 1, UNKNOWN_TYPE: 1, INVALID_ROOM: 3 });
  });

  it('caps rooms per connection', async () => {
    const t = client({ allowClientJoins: true, maxRoomsPerConnection: 2, rateLimitBurst: 1000 });
    await t.say('{"type":"join","room":"a"}');
    await t.say('{"type":"join","room":"b"}');
    expect(await t.say('{"type":"join","room":"c"}')).toMatchObject({ code: 'TOO_MANY_ROOMS' });
    expect(t.b.rooms.roomsOf('c').size).toBe(2);
  });

  it('rate-limits a flood and closes sustained abuse with 1008', async () => {
    const t = client({ rateLimitBurst: 10, rateLimitPerSecond: 1, maxRejections: 20 });
    for (let i = 0; i < 15; i += 1) await t.h.message('{"type":"ping"}');
    expect(t.c.messages.filter((m) => (m as { code?: string }).code === 'RATE_LIMITED').length).toBeGreaterThanOrEqual(4);
    expect(t.c.isOpen).toBe(true);
    for (let i = 0; i < 30; i += 1) await t.h.message('{');
    expect(t.c.closes).toEqual([{ code: 1008, reason: 'policy violation' }]);
    expect(t.b.connections.size).toBe(0);
  });

  it('a rate-limited request is answered with its requestId, so the client can settle it', async () => {
    const t = client({ rateLimitBurst: 1, rateLimitPerSecond: 0.001 });
    await t.h.message('{"type":"ping","requestId":"a"}');
    await t.h.message('{"type":"ping","requestId":"b"}');
    expect(t.c.messages).toEqual([
      { type: 'pong', requestId: 'a' },
      { type: 'error', code: 'RATE_LIMITED', message: 'too many messages; slow down', requestId: 'b' },
    ]);
  });

  it('answers the first 20 frames over the rate with RATE_LIMITED, then only counts them (a flood costs no reply per frame)', async () => {
    const t = client({ rateLimitBurst: 1, rateLimitPerSecond: 0.001 });
    for (let i = 0; i < 100; i += 1) await t.h.message(`{"type":"ping","requestId":${i}}`);
    const codes = t.c.messages.map((m) => (m as { code?: string; type: string }).code ?? (m as { type: string }).type);
    expect(codes).toEqual(['pong', ...Array<string>(20).fill('RATE_LIMITED')]);
    expect(t.b.getStats().monitor.inboundRejected).toEqual({ RATE_LIMITED: 99 });
    expect(t.c.isOpen).toBe(true);
  });

  it('hands app messages to onMessage; a throwing hook is logged', async () => {
    const got: unknown[] = [];
    const t = client({
      onMessage: (_e, m) => {
        got.push(m);
        if ((m as { boom?: boolean }).boom) throw new Error('hook failed');
      },
    });
    await t.h.message('{"type":"chat","text":"hi"}');
    await t.h.message('{"boom":true}');
    expect(got).toEqual([{ type: 'chat', text: 'hi' }, { boom: true }]);
    expect(t.logger.lines.join('\n')).toMatch(/onMessage threw/);
  });

  it('with protocol off, every frame goes to onMessage untouched', async () => {
    const got: unknown[] = [];
    const t = client({ protocol: false, onMessage: (_e, m) => void got.push(m) });
    await t.h.message('{"type":"join","room":"r"}');
    await t.h.message(Buffer.from([1, 2]), true);
    expect(got[0]).toBe('{"type":"join","room":"r"}');
    expect(Buffer.isBuffer(got[1])).toBe(true);
    expect(t.b.rooms.size).toBe(0);
  });
});

describe('A3 token expiry and revocation on open connections', () => {
  afterEach(() => void vi.useRealTimers());

  it('closes a connection with 1008 at expiresAt + grace, not before, and counts it', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const codes: number[] = [];
    const s = setup({ authExpiry: { graceMs: 500 }, onDisconnect: (_e, code) => void codes.push(code) });
    const c = new FakeConnection('a', 'alice');
    s.b.register(c, { expiresAt: 1_000_000 + 2_000 });
    s.b.join('a', 'r');
    await vi.advanceTimersByTimeAsync(2_499);
    expect(c.closes).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(c.closes).toEqual([{ code: 1008, reason: 'authentication expired' }]);
    expect(s.b.connections.has('a')).toBe(false);
    expect(s.b.rooms.has('r')).toBe(false);
    expect(codes).toEqual([1008]);
    expect(s.b.getStats().monitor.disconnects).toEqual({ '1008:auth_expired': 1 });
  });

  it('a refresh hook extends the connection without a reconnect, and closes it when it says no', async () => {
    vi.useFakeTimers({ now: 0 });
    const answers: Array<number | false> = [5_000, false];
    const s = setup({ authExpiry: { closeCode: 4001, refresh: () => answers.shift() } });
    const c = new FakeConnection('a', 'alice');
    s.b.register(c, { expiresAt: 1_000 });
    await vi.advanceTimersByTimeAsync(1_000);
    expect(c.closes).toEqual([]);
    expect(s.b.connections.get('a')?.expiresAt).toBe(5_000);
    await vi.advanceTimersByTimeAsync(3_999);
    expect(c.closes).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(c.closes).toEqual([{ code: 4001, reason: 'authentication expired' }]);
  });

  it('setExpiry from the app moves the deadline; undefined clears it', async () => {
    vi.useFakeTimers({ now: 0 });
    const s = setup();
    const a = new FakeConnection('a', 'alice');
    const b = new FakeConnection('b', 'bob');
    s.b.register(a, { expiresAt: 100 });
    s.b.register(b, { expiresAt: 100 });
    expect(s.b.setExpiry('a', 10_000)).toBe(true);
    expect(s.b.setExpiry('b', undefined)).toBe(true);
    expect(s.b.setExpiry('nobody', 1)).toBe(false);
    await vi.advanceTimersByTimeAsync(9_999);
    expect(a.closes).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(a.closes).toEqual([{ code: 1008, reason: 'authentication expired' }]);
    expect(b.closes).toEqual([]);
  });

  it('revoke closes every connection of a user, or one connection, with the auth close code', () => {
    const s = setup({ authExpiry: { closeCode: 4003 } });
    s.add('a1', 'alice');
    s.add('a2', 'alice');
    s.add('b1', 'bob');
    s.add('b2', 'bob');
    expect(s.b.revoke({ userId: 'alice' })).toBe(2);
    expect(s.b.revoke({ connectionId: 'b2' }, 'token leaked')).toBe(1);
    expect(s.b.revoke({ userId: 'nobody' })).toBe(0);
    expect(s.conns.get('a1')?.closes).toEqual([{ code: 4003, reason: 'access revoked' }]);
    expect(s.conns.get('a2')?.closes).toEqual([{ code: 4003, reason: 'access revoked' }]);
    expect(s.conns.get('b2')?.closes).toEqual([{ code: 4003, reason: 'token leaked' }]);
    expect(s.conns.get('b1')?.closes).toEqual([]);
    expect([...s.b.connections.entries()].map((e) => e.id)).toEqual(['b1']);
  });

  it('refuses a close code that is neither 1008 nor 4000-4999', () => {
    expect(() => new Broadcaster({ authExpiry: { closeCode: 1000 } })).toThrow(expect.objectContaining({ code: ErrorCode.InvalidOption }));
  });
});

describe('B11 bytes piling up between broadcasts', () => {
  it('a connection over maxBufferedBytes on a quiet server is closed with 1013 within slowConsumerCheckMs', async () => {
    vi.useFakeTimers();
    try {
      const s = setup({ maxBufferedBytes: 1_000 });
      const flooder = s.add('flooder');
      const fine = s.add('fine');
      flooder.bufferedBytes = 5_000; // e.g. pongs it never reads
      await vi.advanceTimersByTimeAsync(999);
      expect(flooder.closes).toEqual([]);
      await vi.advanceTimersByTimeAsync(1);
      expect(flooder.closes).toEqual([{ code: 1013, reason: 'slow consumer' }]);
      expect(fine.closes).toEqual([]);
      expect(s.b.getStats().monitor.disconnects).toEqual({ '1013:slow_consumer': 1 });
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('G1 graceful shutdown', () => {
  it('finishes accepted broadcasts, refuses new ones, closes with 1001, waits for clients to close and terminates the rest', async () => {
    const s = setup();
    const polite = new FakeConnection('polite', 'u');
    const stalled = new FakeConnection('stalled', 'u');
    const handle = s.b.register(polite);
    s.b.register(stalled);
    polite.close = (code, reason) => {
      polite.closes.push({ code, reason });
      polite.isOpen = false;
      queueMicrotask(() => handle.closed(code, reason)); // the client answers the close
    };
    const accepted = s.b.toAll({ n: 1 });
    const report = s.b.shutdown({ drainTimeoutMs: 50 });
    await expect(s.b.toAll({ n: 2 })).rejects.toMatchObject({ code: ErrorCode.Shutdown });
    expect(await accepted).toMatchObject({ recipients: 2, delivered: 2 });
    expect(await report).toMatchObject({ broadcastsFinished: 1, closed: 1, terminated: 1 });
    expect(polite.closes).toEqual([{ code: 1001, reason: 'server shutting down' }]);
    expect(stalled.closes).toEqual([{ code: 1001, reason: 'server shutting down' }]);
    expect(stalled.terminated).toBe(true);
    expect(polite.terminated).toBe(false);
    expect(polite.messages).toEqual([{ n: 1 }]);
    expect(s.b.connections.size).toBe(0);
    expect(s.b.getHealthStatus().status).toBe('unhealthy');
    expect(() => s.b.register(new FakeConnection('late'))).toThrow(expect.objectContaining({ code: ErrorCode.Shutdown }));
  });
});

describe('stats, health and dispose', () => {
  it('getStats counts connections, users, rooms and broadcasts', async () => {
    const s = setup();
    s.add('a', 'u1', ['r1', 'r2']);
    s.add('b', 'u1', ['r1']);
    s.add('c', 'u2');
    await s.b.toAll('x');
    await s.b.toRoom('r1', 'y');
    const st = s.b.getStats();
    expect(st).toMatchObject({ connections: 3, users: 2, rooms: 2, roomMemberships: 3, broadcasts: 2, deliveries: 5 });
    expect(st.monitor.operations.all).toMatchObject({ count: 1, success: 1, successRate: 1 });
    expect(st.monitor.operations.room?.latencyMs.p99).toBeGreaterThanOrEqual(0);
  });

  it('health is healthy, degraded on an open circuit with the reason, unhealthy after dispose', async () => {
    const s = setup();
    expect(s.b.getHealthStatus()).toMatchObject({ status: 'healthy', reasons: [] });
    const release = s.b.isolate('backplane');
    const h = s.b.getHealthStatus();
    expect(h.status).toBe('degraded');
    expect(h.reasons.join()).toMatch(/circuit "backplane" is isolated/);
    expect(h.system).toMatchObject({ connections: 0, rooms: 0 });
    expect(h.monitoring).toHaveProperty('latencyMs');
    release();
    await s.b.dispose();
    expect(s.b.getHealthStatus().status).toBe('unhealthy');
  });

  it('dispose closes every connection with 1001 and clears registries', async () => {
    const s = setup();
    const a = s.add('a', 'u', ['r']);
    const b = s.add('b');
    await s.b.dispose();
    expect(a.closes).toEqual([{ code: 1001, reason: 'server shutting down' }]);
    expect(b.closes).toEqual([{ code: 1001, reason: 'server shutting down' }]);
    expect(s.b.connections.size).toBe(0);
    expect(s.b.rooms.size).toBe(0);
    expect(() => s.b.register(new FakeConnection('late'))).toThrow(expect.objectContaining({ code: ErrorCode.Shutdown }));
  });

  it('closed() from the adapter unregisters once', () => {
    const s = setup();
    const c = new FakeConnection('a', 'u');
    const h = s.b.register(c);
    s.b.join('a', 'r');
    h.closed(1000, 'bye');
    h.closed(1000, 'bye');
    expect(s.b.connections.size).toBe(0);
    expect(s.b.rooms.size).toBe(0);
  });
});

describe('backplane (in-memory bus)', () => {
  it('a broadcast reaches connections on every node once; rooms and users stay node-local', async () => {
    const bus = new MemoryBus();
    const n1 = setup({ backplane: bus.backplane('n1') });
    const n2 = setup({ backplane: bus.backplane('n2') });
    await Promise.all([n1.b.ready(), n2.b.ready()]);
    const a = n1.add('a', 'alice', ['r']);
    const b = n2.add('b', 'alice', ['r']);
    const c = n2.add('c', 'bob');
    const r = await n1.b.toRoom('r', { seq: 1 });
    expect(r).toMatchObject({ recipients: 1, delivered: 1, backplane: 'published' });
    await n1.b.toUser('alice', { seq: 2 });
    await n2.b.toAll({ seq: 3 }, { except: ['a'] });
    await vi.waitFor(() => expect(c.received).toHaveLength(1));
    await vi.waitFor(() => expect(b.received).toHaveLength(3));
    expect(a.messages).toEqual([{ seq: 1 }, { seq: 2 }]);
    expect(b.messages).toEqual([{ seq: 1 }, { seq: 2 }, { seq: 3 }]);
    expect(c.messages).toEqual([{ seq: 3 }]);
    expect(n2.b.getStats().monitor.backplane.received).toBe(2);
  });

  it('a failing backplane never breaks local delivery; the failure is counted and the circuit opens', async () => {
    const failing = {
      nodeId: 'n1',
      publish: () => Promise.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })),
      subscribe: () => () => {},
      close: async () => {},
    };
    const s = setup({ backplane: failing, reliability: { scopes: { backplane: { retry: { maxRetries: 0 }, circuitBreaker: { failureThreshold: 2 } } } } });
    s.add('a');
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      const results = [];
      for (let i = 0; i < 4; i += 1) results.push(await s.b.toAll({ i }));
      expect(results.map((r) => r.delivered)).toEqual([1, 1, 1, 1]);
      expect(results.map((r) => r.backplane)).toEqual(['failed', 'failed', 'failed', 'failed']);
      expect(results.map((r) => r.backplaneError)).toEqual(['BCAST_BACKPLANE_UNAVAILABLE', 'BCAST_BACKPLANE_UNAVAILABLE', 'BCAST_CIRCUIT_OPEN', 'BCAST_CIRCUIT_OPEN']);
      expect(s.b.getStats().monitor.dropped).toEqual({ publish_error: 2, circuit_open: 2 });
      const health = s.b.getHealthStatus();
      expect(health.status).toBe('degraded');
      expect(health.reasons.join()).toMatch(/circuit "backplane" is open/);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    expect(unhandled).toEqual([]);
  });

  it('drops garbage and unknown versions, counting them by reason, and ignores its own envelopes', async () => {
    let handler: ((e: never) => void) | undefined;
    const bp = {
      nodeId: 'me',
      publish: async () => {},
      subscribe: (h: (e: never) => void) => {
        handler = h;
        return () => {};
      },
      close: async () => {},
    };
    const s = setup({ backplane: bp });
    await s.b.ready();
    const c = s.add('a');
    const good = { v: 1, id: 'm1', nodeId: 'other', op: 'all', enc: 'text', payload: 'hello', ts: 0 };
    for (const e of ['garbage', null, { ...good, v: 99 }, { ...good, op: 'nuke' }, { ...good, nodeId: 'me' }, good]) handler?.(e as never);
    await vi.waitFor(() => expect(c.received).toEqual(['hello']));
    expect(s.b.getStats().monitor.backplane).toMatchObject({ discarded: 4, received: 1, dropped: { invalid: 4 } });
    expect(s.b.getStats().backplaneDropped).toEqual({ invalid: 4 });
  });
});

describe('registration', () => {
  it('registering the same id again replaces the old entry through the normal unregister path', () => {
    const gone: string[] = [];
    const s = setup({ onDisconnect: (e, _code, reason) => void gone.push(`${e.id}:${reason}`) });
    s.add('a', 'u1', ['r']);
    s.add('a', 'u2');
    expect(s.b.connections.size).toBe(1);
    expect(s.b.connections.byUser('u1').size).toBe(0);
    expect(s.b.rooms.has('r')).toBe(false);
    expect(gone).toEqual(['a:replaced']);
  });
});
