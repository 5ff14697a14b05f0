import { afterEach, describe, expect, it, vi } from 'vitest';
import { Broadcaster, type BroadcasterOptions, type BroadcastResult } from '../index.js';
import type { ConnectionHandle } from '../lifecycle/ConnectionLifecycle.js';
import { FakeConnection, quietLogger } from '../test-utils/fakeConnection.js';
import { MIN_SLICE_RECIPIENTS } from './FanOutRun.js';

// A fan-out longer than `fanOutSliceMs` yields to the event loop between slices. The clock is
// driven by the writes: each send costs COST_MS of `performance.now()`, so where a fan-out is cut
// does not depend on how fast this machine is.
const COST_MS = 0.05;
let clock = 0;

class TimedConnection extends FakeConnection {
  override send(...args: Parameters<FakeConnection['send']>): void {
    clock += COST_MS;
    super.send(...args);
  }
}

const made: Broadcaster[] = [];
function setup(n: number, options: BroadcasterOptions = {}) {
  vi.spyOn(performance, 'now').mockImplementation(() => clock);
  const b = new Broadcaster({ pingIntervalMs: 0, slowConsumerCheckMs: 0, logger: quietLogger(), ...options });
  made.push(b);
  const conns: TimedConnection[] = [];
  const handles: ConnectionHandle[] = [];
  for (let i = 0; i < n; i += 1) {
    const c = new TimedConnection(`c${i}`, `u${i % 10}`);
    conns.push(c);
    handles.push(b.register(c));
    b.join(c.id, 'room');
  }
  /** Fan-out slices seen so far, and a hook run at the end of each. */
  const slices = { count: 0, onEnd: (_n: number): void => {} };
  b.observeFanOut({
    fanOutStart: () => void (slices.count += 1),
    fanOutEnd: () => slices.onEnd(slices.count),
  });
  return { b, conns, handles, slices };
}

afterEach(async () => {
  for (const b of made.splice(0)) await b.dispose();
  vi.restoreAllMocks();
});

const accounted = (r: BroadcastResult): void => expect(r.recipients).toBe(r.delivered + r.failed + r.dropped);

describe('fan-out slicing (fanOutSliceMs)', () => {
  it('a fan-out longer than its slice yields to the event loop and still reaches every recipient once', async () => {
    const { b, conns, slices } = setup(4_000); // 4,000 x 0.05 ms = 200 ms of writes: slices of 10 ms, at least 1,024 recipients each
    const turns: number[] = [];
    const result = b.toAll({ n: 1 });
    // An immediate queued now runs between two slices, before the fan-out is over.
    setImmediate(() => turns.push(conns.filter((c) => c.received.length > 0).length));
    const r = await result;
    expect(r).toMatchObject({ recipients: 4_000, delivered: 4_000, failed: 0 });
    // the first slice reaches 1,024 recipients (51 ms here); the next ones stop at the clock check past 10 ms: 256 recipients
    expect(slices.count).toBe(1 + Math.ceil((4_000 - MIN_SLICE_RECIPIENTS) / 256));
    expect(turns).toHaveLength(1);
    expect(turns[0]).toBeGreaterThan(0);
    expect(turns[0]).toBe(MIN_SLICE_RECIPIENTS);
    expect(conns.every((c) => c.received.length === 1)).toBe(true);
  });

  it('fanOutSliceMs: 0 never yields: the whole fan-out is one slice', async () => {
    const { b, conns, slices } = setup(4_000, { fanOutSliceMs: 0 });
    let before: number | undefined;
    const result = b.toAll({ n: 1 });
    setImmediate(() => (before ??= conns.filter((c) => c.received.length > 0).length));
    await result;
    await new Promise(setImmediate);
    expect(slices.count).toBe(1);
    expect(before).toBe(4_000);
  });

  it('the first slice reaches at least 1,024 recipients: a fan-out to 1,000 connections is never cut, however slow its writes', async () => {
    const { b, slices } = setup(1_000, { fanOutSliceMs: 1 }); // 50 ms of writes, 1 ms slices
    const r = await b.toAll({ n: 1 });
    expect(r.delivered).toBe(1_000);
    expect(slices.count).toBe(1);
  });

  it('broadcasts made during a sliced fan-out wait behind it: every connection gets them in call order', async () => {
    const { b, conns } = setup(4_000);
    const done: string[] = [];
    const all = b.toAll({ n: 'A' }).then((r) => (done.push('A'), r));
    const room = b.toRoom('room', { n: 'B' }).then((r) => (done.push('B'), r));
    const user = b.toUser('u3', { n: 'C' }).then((r) => (done.push('C'), r));
    const one = b.sendTo('c3999', { n: 'D' }).then((r) => (done.push('D'), r));
    // One more, made from inside the event loop while A is still being written.
    const later = new Promise<BroadcastResult>((resolve) => setImmediate(() => void b.toAll({ n: 'E' }).then(resolve)));
    const results = await Promise.all([all, room, user, one, later]);
    results.forEach(accounted);
    expect(done).toEqual(['A', 'B', 'C', 'D']);
    for (const c of conns) {
      const got = c.messages.map((m) => (m as { n: string }).n);
      const want = ['A', 'B', ...(c.userId === 'u3' ? ['C'] : []), ...(c.id === 'c3999' ? ['D'] : []), 'E'];
      expect(got, c.id).toEqual(want);
    }
  });

  it('a connection that closes between two slices is counted as failed, once, and not written to', async () => {
    const { b, conns, handles, slices } = setup(4_000);
    slices.onEnd = (n) => {
      if (n !== 1) return;
      handles[3999]?.closed(1006, 'gone'); // the client went away while the fan-out was paused
      (conns[3998] as TimedConnection).isOpen = false; // dead socket, not reported yet
    };
    const r = await b.toAll({ n: 1 });
    expect(slices.count).toBeGreaterThan(1);
    accounted(r);
    expect(r).toMatchObject({ recipients: 4_000, delivered: 3_998, failed: 2, removed: 1 });
    expect(conns[3999]?.received).toEqual([]);
    expect(conns[3998]?.received).toEqual([]);
    expect(b.connections.size).toBe(3_998);
  });

  it('a member that leaves and rejoins the room between slices gets the message once', async () => {
    const { b, conns, slices } = setup(4_000);
    slices.onEnd = (n) => {
      if (n !== 1) return;
      for (const id of ['c0', 'c3999']) {
        b.leave(id, 'room');
        b.join(id, 'room'); // moved to the end of the room's set: a live iterator would visit c0 again
      }
    };
    const r = await b.toRoom('room', { n: 1 });
    expect(slices.count).toBeGreaterThan(1);
    expect(r).toMatchObject({ recipients: 4_000, delivered: 4_000 });
    expect(conns[0]?.received).toHaveLength(1);
    expect(conns[3999]?.received).toHaveLength(1);
  });

  it('shutdown() waits for a sliced fan-out: every accepted broadcast is finished before the connections close', async () => {
    const { b, conns, slices } = setup(4_000);
    const result = b.toAll({ n: 1 });
    const report = await b.shutdown({ drainTimeoutMs: 50 });
    expect(slices.count).toBeGreaterThan(1);
    expect(report.broadcastsFinished).toBe(1);
    expect(await result).toMatchObject({ delivered: 4_000, failed: 0 });
    expect(conns.every((c) => c.received.length === 1 && c.closes.length === 1)).toBe(true);
  });
});
