import { describe, expect, it, vi, afterEach } from 'vitest';
import { MemoryBus } from '../backplane.js';
import { Broadcaster, ErrorCode, type BroadcasterOptions } from '../index.js';
import { FakeConnection, quietLogger } from '../test-utils/fakeConnection.js';
import { MemoryHistory, type HistoryStore, type StreamPosition } from './HistoryStore.js';

const made: Broadcaster[] = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const b of made.splice(0)) await b.dispose();
});

function node(options: BroadcasterOptions = {}) {
  const b = new Broadcaster({ pingIntervalMs: 0, logger: quietLogger(), allowClientJoins: true, history: { rooms: 'chat:*' }, ...options });
  made.push(b);
  let n = 0;
  const client = (id = `c${++n}`) => {
    const c = new FakeConnection(id, 'u');
    const h = b.register(c);
    const say = (frame: object) => h.message(JSON.stringify(frame));
    return { c, h, say };
  };
  return { b, client };
}

type Pub = { type: string; room: string; offset?: number; epoch?: string; data: unknown };
const pubs = (c: FakeConnection): Pub[] => c.messages.filter((m) => (m as Pub).type === 'bcast.pub') as Pub[];
const last = (c: FakeConnection): StreamPosition => {
  const p = pubs(c).at(-1) as Pub;
  return { offset: p.offset as number, epoch: p.epoch as string };
};

describe('MemoryHistory', () => {
  const limits = { maxMessages: 3, ttlMs: 60_000 };

  it('numbers messages per room from 1 in one epoch, and recovers exactly what came after `since`', () => {
    const h = new MemoryHistory();
    const p1 = h.append('r', '"a"', limits);
    const p2 = h.append('r', '"b"', limits);
    expect(p1.offset).toBe(1);
    expect(p2).toEqual({ offset: 2, epoch: p1.epoch });
    expect(h.append('other', '"x"', limits).offset).toBe(1);
    expect(h.since('r', p1, limits)).toEqual({ recovered: true, position: p2, records: [{ offset: 2, data: '"b"' }] });
    expect(h.since('r', p2, limits)).toEqual({ recovered: true, position: p2, records: [] });
  });

  it('is never partial: a trimmed gap, another epoch or an unknown room say recovered: false', () => {
    const h = new MemoryHistory();
    const first = h.append('r', '1', limits);
    for (const d of ['2', '3', '4', '5']) h.append('r', d, limits);
    expect(h.since('r', first, limits).recovered).toBe(false); // 2 was trimmed (maxMessages 3)
    expect(h.since('r', { offset: 2, epoch: first.epoch }, limits)).toMatchObject({ recovered: true, records: [{ offset: 3 }, { offset: 4 }, { offset: 5 }] });
    expect(h.since('r', { offset: 4, epoch: 'other' }, limits).recovered).toBe(false);
    expect(h.since('nope', first, limits)).toEqual({ recovered: false, position: undefined, records: [] });
  });

  it('drops messages older than ttlMs and forgets the least recently written room past maxRooms', () => {
    vi.useFakeTimers({ now: 0 });
    const h = new MemoryHistory({ maxRooms: 2 });
    const p = h.append('a', '1', { maxMessages: 10, ttlMs: 1_000 });
    vi.setSystemTime(1_500);
    h.append('a', '2', { maxMessages: 10, ttlMs: 1_000 });
    expect(h.since('a', { offset: 0, epoch: p.epoch }, { maxMessages: 10, ttlMs: 1_000 }).recovered).toBe(false);
    expect(h.since('a', p, { maxMessages: 10, ttlMs: 1_000 })).toMatchObject({ recovered: true, records: [{ offset: 2 }] });
    h.append('b', '1', limits);
    h.append('c', '1', limits);
    expect(h.size).toBe(2);
    expect(h.since('a', p, limits).recovered).toBe(false); // forgotten: the least recently written
    for (let i = 0; i < 100_000; i += 1) h.append(`room-${i}`, '1', limits);
    expect(h.size).toBe(2);
  });
});

describe('rooms with history', () => {
  it('every message to such a room carries its position; other rooms and toAll are unchanged', async () => {
    const { b, client } = node();
    const a = client();
    await a.say({ type: 'join', room: 'chat:1', requestId: 1 });
    await a.say({ type: 'join', room: 'plain', requestId: 2 });
    const r = await b.toRoom('chat:1', { type: 'chat', text: 'hi' });
    expect(r).toMatchObject({ delivered: 1, messageType: 'chat' });
    await b.toRoom('chat:1', 'text');
    await b.toRoom('plain', { type: 'chat', text: 'plain' });
    const [p1, p2] = pubs(a.c);
    expect(p1).toEqual({ type: 'bcast.pub', room: 'chat:1', offset: 1, epoch: expect.any(String), data: { type: 'chat', text: 'hi' } });
    expect(p2).toEqual({ type: 'bcast.pub', room: 'chat:1', offset: 2, epoch: p1?.epoch, data: 'text' });
    expect(a.c.messages.at(-1)).toEqual({ type: 'chat', text: 'plain' });
  });

  it('a join of a room with no message yet fixes its position at offset 0, so what comes next can be recovered', async () => {
    const { b, client } = node();
    const a = client();
    await a.say({ type: 'join', room: 'chat:new', requestId: 1 });
    const ok = a.c.messages.at(-1) as { position: StreamPosition };
    expect(ok).toEqual({ type: 'ok', op: 'join', room: 'chat:new', requestId: 1, position: { offset: 0, epoch: expect.any(String) } });
    await b.toRoom('chat:new', { n: 1 });
    const back = client();
    await back.say({ type: 'join', room: 'chat:new', requestId: 2, since: ok.position });
    expect(pubs(back.c).map((p) => p.data)).toEqual([{ n: 1 }]);
    expect(back.c.messages.at(-1)).toMatchObject({ type: 'ok', recovered: true });
  });

  it('an ephemeral message (and a presence event) is not recorded and goes out as it is', async () => {
    const { b, client } = node({ presence: { events: true } });
    const a = client();
    await a.say({ type: 'join', room: 'chat:1' });
    await b.toRoom('chat:1', { typing: true }, { ephemeral: true });
    await b.toRoom('chat:1', { n: 1 });
    const other = new FakeConnection('other', 'bob');
    b.register(other);
    b.join('other', 'chat:1');
    await new Promise((resolve) => setImmediate(resolve));
    expect(a.c.messages.slice(1)).toEqual([
      { typing: true },
      { type: 'bcast.pub', room: 'chat:1', offset: 1, epoch: expect.any(String), data: { n: 1 } },
      { type: 'bcast.presence', room: 'chat:1', event: 'join', userId: 'bob' },
    ]);
  });

  it('refuses a binary message to a room with history before anything is sent', async () => {
    const { b } = node();
    await expect(b.toRoom('chat:1', new Uint8Array([1]))).rejects.toMatchObject({ code: ErrorCode.InvalidMessage });
  });

  it('a join with since gets every missed message in order, then the ok with recovered: true, then live ones', async () => {
    const { b, client } = node();
    const a = client();
    await a.say({ type: 'join', room: 'chat:1' });
    await b.toRoom('chat:1', { n: 1 });
    const seen = last(a.c);
    for (let n = 2; n <= 5; n += 1) await b.toRoom('chat:1', { n });
    const back = client();
    await back.say({ type: 'join', room: 'chat:1', requestId: 'r', since: seen });
    await b.toRoom('chat:1', { n: 6 });
    expect(back.c.messages.map((m) => ((m as Pub).type === 'bcast.pub' ? (m as Pub).data : m))).toEqual([
      { n: 2 },
      { n: 3 },
      { n: 4 },
      { n: 5 },
      { type: 'ok', op: 'join', room: 'chat:1', requestId: 'r', recovered: true, position: { offset: 5, epoch: seen.epoch } },
      { n: 6 },
    ]);
  });

  it('no gap and no duplicate at the seam while the store answers late (broadcasts meanwhile are held, then sent once)', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const memory = new MemoryHistory();
    const slow: HistoryStore = {
      append: (room, data, limits) => memory.append(room, data, limits),
      since: async (room, since, limits) => {
        const read = memory.since(room, since, limits);
        await gate;
        return read;
      },
      position: (room) => memory.position(room),
    };
    const { b, client } = node({ history: { rooms: 'chat:*', store: slow } });
    const a = client();
    await a.say({ type: 'join', room: 'chat:1' });
    await b.toRoom('chat:1', { n: 1 });
    const seen = last(a.c);
    await b.toRoom('chat:1', { n: 2 });
    const back = client();
    const joined = back.say({ type: 'join', room: 'chat:1', since: seen });
    await b.toRoom('chat:1', { n: 3 }); // after the read, before the answer: held
    release();
    await joined;
    await b.toRoom('chat:1', { n: 4 });
    expect(pubs(back.c).map((p) => p.data)).toEqual([{ n: 2 }, { n: 3 }, { n: 4 }]);
    expect(pubs(back.c).map((p) => p.offset)).toEqual([2, 3, 4]);
  });

  it('a plain join is told a position, and gets every message after it once (a store that answers late)', async () => {
    const memory = new MemoryHistory();
    const late: HistoryStore = {
      // written at once, answered a little later: like a networked store
      append: (room, data, limits) => {
        const position = memory.append(room, data, limits);
        return new Promise((resolve) => setTimeout(() => resolve(position), 5));
      },
      since: (room, since, limits) => memory.since(room, since, limits),
      position: (room) => new Promise((resolve) => setTimeout(() => resolve(memory.position(room)), 1)),
    };
    const { b, client } = node({ history: { rooms: 'chat:*', store: late } });
    const first = b.toRoom('chat:1', { n: 1 }); // recorded, not yet sent
    const a = client();
    await a.say({ type: 'join', room: 'chat:1', requestId: 1 });
    await first;
    await b.toRoom('chat:1', { n: 2 });
    const [ok, ...rest] = a.c.messages as [{ position: StreamPosition }, ...Pub[]];
    expect(ok).toEqual({ type: 'ok', op: 'join', room: 'chat:1', requestId: 1, position: { offset: 1, epoch: expect.any(String) } });
    // Everything after the position arrives once, in order; a message recorded before the join may
    // still arrive (offset <= position): a client skips it (docs/PROTOCOL.md).
    expect(rest.filter((p) => (p.offset as number) > ok.position.offset).map((p) => p.data)).toEqual([{ n: 2 }]);
    expect(new Set(rest.map((p) => p.offset)).size).toBe(rest.length);
  });

  it('says recovered: false when the gap is not covered, or the store is down, and the join still works', async () => {
    const failing: HistoryStore = {
      append: () => Promise.reject(new Error('redis down')),
      since: () => Promise.reject(new Error('redis down')),
      position: () => Promise.reject(new Error('redis down')),
    };
    const { b, client } = node({ history: { rooms: 'chat:*', store: failing } });
    const a = client();
    await a.say({ type: 'join', room: 'chat:1', requestId: 1, since: { offset: 3, epoch: 'old' } });
    expect(a.c.messages.at(-1)).toEqual({ type: 'ok', op: 'join', room: 'chat:1', requestId: 1, recovered: false });
    const r = await b.toRoom('chat:1', { live: true });
    expect(r.delivered).toBe(1);
    expect(pubs(a.c)).toEqual([{ type: 'bcast.pub', room: 'chat:1', data: { live: true } }]); // live delivery goes on, without a position
    expect(b.getStats().history).toMatchObject({ appended: 0, appendErrors: 1, recovered: 0, notRecovered: 1, storeErrors: 1 }); // counted
  });

  it('refuses a malformed since with INVALID_ARGUMENT', async () => {
    const { client } = node();
    const a = client();
    await a.say({ type: 'join', room: 'chat:1', requestId: 1, since: { offset: -1, epoch: 'e' } });
    expect(a.c.messages.at(-1)).toMatchObject({ type: 'error', code: 'INVALID_ARGUMENT', requestId: 1 });
  });

  it('remote nodes deliver the same publication, recorded once by the publishing node', async () => {
    const bus = new MemoryBus();
    const n1 = node({ backplane: bus.backplane('n1') });
    const n2 = node({ backplane: bus.backplane('n2') });
    const a = n1.client();
    const z = n2.client();
    await a.say({ type: 'join', room: 'chat:1' });
    await z.say({ type: 'join', room: 'chat:1' });
    await n1.b.toRoom('chat:1', { n: 1 });
    await n1.b.toRoom('chat:1', { n: 2 });
    await vi.waitFor(() => expect(pubs(z.c)).toHaveLength(2));
    expect(pubs(z.c)).toEqual(pubs(a.c));
  });
});
