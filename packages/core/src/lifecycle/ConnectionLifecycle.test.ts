import { afterEach, describe, expect, it, vi } from 'vitest';
import { Broadcaster, CloseCode, type BroadcasterOptions, type ConnectionEntry } from '@bcast/core';
import type { EncodedMessage } from '../connection/EncodedMessage.js';
import { FakeConnection, quietLogger } from '../test-utils/fakeConnection.js';

const made: Broadcaster[] = [];
function setup(options: BroadcasterOptions = {}) {
  const b = new Broadcaster({ pingIntervalMs: 0, logger: quietLogger(), ...options });
  made.push(b);
  const add = (id: string, rooms: string[] = [], conn: FakeConnection = new FakeConnection(id)) => {
    const handle = b.register(conn);
    for (const r of rooms) b.join(id, r);
    return { conn, handle };
  };
  return { b, add };
}

afterEach(async () => {
  vi.useRealTimers();
  for (const b of made.splice(0)) await b.dispose();
});

const frame = (value: unknown): string => JSON.stringify(value);

/** A connection that ignores close (a peer that never completes the handshake). */
class Stubborn extends FakeConnection {
  override close(code: number, reason: string): void {
    this.closes.push({ code, reason });
  }
}

describe('ConnectionLifecycle: inbound frames take effect and are answered in order', () => {
  it.each([
    ['async authorizeJoin resolving after a timer', () => new Promise<boolean>((resolve) => setTimeout(() => resolve(true), 10))],
    ['synchronous authorizeJoin', () => true],
  ])('join then leave of one room, back to back (%s): not a member, join ok then leave ok', async (_name, authorizeJoin) => {
    vi.useFakeTimers();
    const { b, add } = setup({ authorizeJoin });
    const { conn, handle } = add('a');
    const done = Promise.all([
      handle.message(frame({ type: 'join', room: 'r', requestId: 1 })),
      handle.message(frame({ type: 'leave', room: 'r', requestId: 2 })),
    ]);
    await vi.advanceTimersByTimeAsync(10);
    await done;
    expect(b.rooms.roomsOf('a').size).toBe(0);
    expect(b.rooms.has('r')).toBe(false);
    expect(conn.messages).toEqual([
      { type: 'ok', op: 'join', room: 'r', requestId: 1 },
      { type: 'ok', op: 'leave', room: 'r', requestId: 2 },
    ]);
  });

  it('1,000 mixed join / leave / ping requests: replies in exactly the order sent, no stale membership', async () => {
    vi.useFakeTimers();
    let seed = 7;
    const random = (): number => ((seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648) / 2_147_483_648);
    const { b, add } = setup({
      rateLimitBurst: 2_000,
      slowConsumerCheckMs: 0, // no interval: the test runs every timer there is
      // every join waits a different time; later frames must still wait their turn
      authorizeJoin: () => new Promise<boolean>((resolve) => setTimeout(() => resolve(true), Math.floor(random() * 5))),
    });
    const { conn, handle } = add('a');
    const rooms = ['r0', 'r1', 'r2', 'r3', 'r4'];
    const expected = new Set<string>();
    const expectedReplies: unknown[] = [];
    const pending: Array<Promise<void>> = [];
    for (let i = 0; i < 1_000; i += 1) {
      const pick = random();
      const room = rooms[Math.floor(random() * rooms.length)] as string;
      if (pick < 0.4) {
        expected.add(room);
        expectedReplies.push({ type: 'ok', op: 'join', room, requestId: i });
        pending.push(handle.message(frame({ type: 'join', room, requestId: i })));
      } else if (pick < 0.8) {
        expected.delete(room);
        expectedReplies.push({ type: 'ok', op: 'leave', room, requestId: i });
        pending.push(handle.message(frame({ type: 'leave', room, requestId: i })));
      } else {
        expectedReplies.push({ type: 'pong', requestId: i });
        pending.push(handle.message(frame({ type: 'ping', requestId: i })));
      }
    }
    const all = Promise.all(pending);
    await vi.runAllTimersAsync();
    await all;
    expect(conn.closes).toEqual([]);
    expect(conn.messages.map((m) => (m as { requestId: number }).requestId)).toEqual(Array.from({ length: 1_000 }, (_, i) => i));
    expect(conn.messages).toEqual(expectedReplies);
    expect([...b.rooms.roomsOf('a')].sort()).toEqual([...expected].sort());
    for (const room of rooms) expect(b.rooms.members(room).has('a')).toBe(expected.has(room));
  });

  it('closes with 1008 a client that floods while its first join waits on a hook that never resolves (over 2x rateLimitBurst pending)', async () => {
    const disconnects: string[] = [];
    const { b, add } = setup({
      rateLimitBurst: 5,
      authorizeJoin: () => new Promise<boolean>(() => {}),
      onDisconnect: (e, code, reason) => void disconnects.push(`${e.id}:${code}:${reason}`),
    });
    const { conn, handle } = add('a');
    void handle.message(frame({ type: 'join', room: 'r', requestId: 0 }));
    await Promise.resolve(); // the join is now waiting on the hook
    for (let i = 1; i <= 10; i += 1) void handle.message(frame({ type: 'ping', requestId: i }));
    expect(conn.closes).toEqual([]); // 10 frames pending: at the limit, not over it
    expect(b.connections.has('a')).toBe(true);
    void handle.message(frame({ type: 'ping', requestId: 11 }));
    expect(conn.closes).toEqual([{ code: CloseCode.PolicyViolation, reason: 'policy violation' }]);
    expect(b.connections.has('a')).toBe(false);
    expect(disconnects).toEqual(['a:1008:policy violation']);
    expect(b.getStats().monitor.disconnects).toEqual({ '1008:policy_violation': 1 });
    expect(conn.received).toEqual([]); // the queued frames are never answered
  });

  it('closes sustained abuse (over maxRejections rejected frames) with 1008', async () => {
    const { b, add } = setup({ maxRejections: 3 });
    const { conn, handle } = add('a');
    for (let i = 0; i < 3; i += 1) await handle.message('not json');
    expect(conn.messages.map((m) => (m as { code: string }).code)).toEqual(['BAD_JSON', 'BAD_JSON', 'BAD_JSON']);
    expect(conn.closes).toEqual([]);
    await handle.message('not json');
    expect(conn.closes).toEqual([{ code: 1008, reason: 'policy violation' }]);
    expect(b.connections.has('a')).toBe(false);
    expect(b.getStats().monitor.inboundRejected).toEqual({ BAD_JSON: 4 });
  });
});

describe('ConnectionLifecycle: removals found by a fan-out', () => {
  it('a dead connection is closed with 1001, unregistered and out of its rooms, after the fan-out', async () => {
    const order: string[] = [];
    let seenDuringFanOut: boolean | undefined;
    const { b, add } = setup({ onDisconnect: (e, code) => void order.push(`disconnect:${e.id}:${code}`) });
    class Live extends FakeConnection {
      override send(message: EncodedMessage): void {
        seenDuringFanOut = b.connections.has('dead');
        order.push(`send:${this.id}`);
        super.send(message);
      }
    }
    const { conn: dead } = add('dead', ['r']);
    add('live', ['r'], new Live('live'));
    dead.isOpen = false;
    const r = await b.toRoom('r', 'm');
    expect(r).toMatchObject({ recipients: 2, delivered: 1, failed: 1, removed: 1 });
    expect(seenDuringFanOut).toBe(true); // still registered while the fan-out ran
    expect(order).toEqual(['send:live', 'disconnect:dead:1001']);
    expect(dead.closes).toEqual([{ code: 1001, reason: 'Connection lost during broadcast' }]);
    expect(b.connections.has('dead')).toBe(false);
    expect(b.rooms.members('r').has('dead')).toBe(false);
    expect(b.getStats().monitor.disconnects).toEqual({ '1001:connection_lost': 1 });
  });

  it('a connection whose send fails as dead is closed with 1001 and terminated after closeTimeoutMs if still open', async () => {
    vi.useFakeTimers();
    const { b, add } = setup({ closeTimeoutMs: 300 });
    const conn = new Stubborn('x');
    conn.throwOnSend = Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
    add('x', ['r'], conn);
    const r = await b.toAll('m', {});
    expect(r).toMatchObject({ failed: 1, removed: 1 });
    expect(conn.closes).toEqual([{ code: 1001, reason: 'Connection lost during broadcast' }]);
    expect(b.connections.has('x')).toBe(false);
    expect(b.rooms.has('r')).toBe(false);
    await vi.advanceTimersByTimeAsync(299);
    expect(conn.terminated).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(conn.terminated).toBe(true);
  });

  it('a slow consumer is closed with 1013, unregistered, rooms left, and terminated 1 s later (its own timeout)', async () => {
    vi.useFakeTimers();
    // decisions.md section 7: a slow consumer gets 1 s, whatever closeTimeoutMs says
    const { b, add } = setup({ maxBufferedBytes: 1_000, closeTimeoutMs: 300 });
    const slow = new Stubborn('slow');
    slow.bufferedBytes = 1_001;
    add('slow', ['r'], slow);
    const { conn: fast } = add('fast', ['r']);
    const r = await b.toRoom('r', 'm');
    expect(r).toMatchObject({ recipients: 2, delivered: 1, failed: 1, removed: 1 });
    expect(fast.received).toEqual(['m']);
    expect(slow.received).toEqual([]);
    expect(slow.closes).toEqual([{ code: 1013, reason: 'slow consumer' }]);
    expect(b.connections.has('slow')).toBe(false);
    expect(b.rooms.members('r').has('slow')).toBe(false);
    await vi.advanceTimersByTimeAsync(999);
    expect(slow.terminated).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(slow.terminated).toBe(true);
    expect(b.getStats().monitor.disconnects).toEqual({ '1013:slow_consumer': 1 });
  });

  it('a connection that closed by itself before the timeout is not terminated', async () => {
    vi.useFakeTimers();
    const { b, add } = setup({ maxBufferedBytes: 1_000 });
    const { conn } = add('a');
    conn.isOpen = false;
    await b.toAll('m');
    expect(conn.closes).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(conn.terminated).toBe(false);
  });
});

describe('ConnectionLifecycle: disconnect()', () => {
  it('closes with the code and reason, unregisters now, leaves rooms, tells onDisconnect once', async () => {
    vi.useFakeTimers();
    const gone: string[] = [];
    const { b, add } = setup({ closeTimeoutMs: 200, onDisconnect: (e: ConnectionEntry, code, reason) => void gone.push(`${e.id}:${code}:${reason}`) });
    const conn = new Stubborn('a');
    const { handle } = add('a', ['r1', 'r2'], conn);
    add('b', ['r1']);
    expect(b.disconnect('a', 4000, 'kicked')).toBe(true);
    expect(conn.closes).toEqual([{ code: 4000, reason: 'kicked' }]);
    expect(b.connections.has('a')).toBe(false);
    expect(b.rooms.roomsOf('a').size).toBe(0);
    expect(b.rooms.has('r2')).toBe(false);
    expect(b.rooms.members('r1').has('b')).toBe(true);
    handle.closed(1000, 'later');
    expect(gone).toEqual(['a:4000:kicked']);
    expect(b.disconnect('a')).toBe(false);
    expect(b.disconnect('nobody')).toBe(false);
    await vi.advanceTimersByTimeAsync(200);
    expect(conn.terminated).toBe(true);
    expect((await b.toAll('m')).recipients).toBe(1);
  });

  it('defaults to 1000', () => {
    const { b, add } = setup();
    const { conn } = add('a');
    b.disconnect('a');
    expect(conn.closes).toEqual([{ code: 1000, reason: '' }]);
  });
});

describe('ConnectionLifecycle: heartbeat', () => {
  it('pings connections that support it; a pong (or any frame) keeps them; a missed pong terminates and unregisters', async () => {
    vi.useFakeTimers();
    const gone: string[] = [];
    const { b, add } = setup({ pingIntervalMs: 100, onDisconnect: (e, code, reason) => void gone.push(`${e.id}:${code}:${reason}`) });
    const { conn: alive, handle: aliveHandle } = add('alive', ['r'], new FakeConnection('alive', undefined, { ping: true }));
    const { conn: chatty, handle: chattyHandle } = add('chatty', [], new FakeConnection('chatty', undefined, { ping: true }));
    const { conn: silent } = add('silent', ['r'], new FakeConnection('silent', undefined, { ping: true }));
    const { conn: noPing } = add('noping');

    await vi.advanceTimersByTimeAsync(100);
    expect([alive.pings, chatty.pings, silent.pings]).toEqual([1, 1, 1]);
    aliveHandle.pong();
    await chattyHandle.message(frame({ type: 'ping' }));
    await vi.advanceTimersByTimeAsync(99);
    expect(silent.terminated).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(silent.terminated).toBe(true);
    expect(b.connections.has('silent')).toBe(false);
    expect(b.rooms.members('r').has('silent')).toBe(false);
    expect(gone).toEqual(['silent:1001:no pong']);
    expect([alive.pings, chatty.pings]).toEqual([2, 2]);
    expect(alive.terminated || chatty.terminated || noPing.terminated).toBe(false);
    expect(b.getStats().monitor.disconnects).toEqual({ '1001:no_pong': 1 });

    await vi.advanceTimersByTimeAsync(100); // nobody answered the second ping
    expect(alive.terminated && chatty.terminated).toBe(true);
    expect([...b.connections.entries()].map((e) => e.id)).toEqual(['noping']);
  });

  it('pingIntervalMs 0 disables it, and dispose stops it', async () => {
    vi.useFakeTimers();
    const off = setup({ pingIntervalMs: 0 });
    const { conn } = off.add('a', [], new FakeConnection('a', undefined, { ping: true }));
    await vi.advanceTimersByTimeAsync(60_000);
    expect(conn.pings).toBe(0);

    const on = setup({ pingIntervalMs: 100 });
    const { conn: c2 } = on.add('b', [], new FakeConnection('b', undefined, { ping: true }));
    await vi.advanceTimersByTimeAsync(100);
    expect(c2.pings).toBe(1);
    await on.b.dispose();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(c2.pings).toBe(1);
  });
});
