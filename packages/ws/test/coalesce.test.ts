import { afterEach, describe, expect, it } from 'vitest';
import { openClient, startWs, type Harness } from './helpers.js';
import { guardProcess } from '../../../tests/support/processGuard.js';

guardProcess();

// Coalescing (on by default): a lone broadcast is written at once; in a burst (two or more
// broadcasts in one tick) the rest of the tick's broadcasts share one write per socket, and
// nothing written is held past the end of the tick or lost when a socket is destroyed in that tick.

let harness: Harness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

/** Counts the writes that reach each server-side TCP socket (`_write` for one chunk, `_writev` for a batch). */
function countWrites(h: Harness): Array<{ writes: number; chunks: number }> {
  const counters: Array<{ writes: number; chunks: number }> = [];
  for (const ws of h.wss.clients) {
    const socket = (ws as unknown as { _socket: { _write: (...a: unknown[]) => unknown; _writev: (chunks: unknown[], cb: unknown) => unknown } })._socket;
    const counter = { writes: 0, chunks: 0 };
    counters.push(counter);
    const write = socket._write.bind(socket);
    const writev = socket._writev.bind(socket);
    socket._write = (...a: unknown[]) => {
      counter.writes += 1;
      counter.chunks += 1;
      return write(...a);
    };
    socket._writev = (chunks: unknown[], cb: unknown) => {
      counter.writes += 1;
      counter.chunks += chunks.length;
      return writev(chunks, cb);
    };
  }
  return counters;
}

describe('coalescing the broadcasts of one tick (the default)', () => {
  it('ten broadcasts issued together reach every client in order with two writes per socket: the first, then the other nine', async () => {
    harness = await startWs();
    const clients = await Promise.all([1, 2, 3].map(() => openClient(harness!.url)));
    const counters = countWrites(harness);
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => harness!.broadcaster.toAll({ seq: i })));
    expect(results.map((r) => r.delivered)).toEqual(Array(10).fill(3));
    for (const c of clients) expect((await c.waitFor(10)).map((f) => JSON.parse(f as string).seq)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for (const counter of counters) {
      expect(counter).toEqual({ writes: 2, chunks: 10 });
    }
  });

  it('a lone broadcast is written at once, not held for the end of the tick', async () => {
    harness = await startWs();
    const clients = await Promise.all([1, 2].map(() => openClient(harness!.url)));
    const counters = countWrites(harness);
    await harness.broadcaster.toAll('alone');
    expect(counters).toEqual([
      { writes: 1, chunks: 1 },
      { writes: 1, chunks: 1 },
    ]);
    for (const c of clients) expect(await c.waitFor(1)).toEqual(['alone']);
  });

  it('awaited broadcasts of one tick: the first is written at once, the others leave together when the tick ends', async () => {
    harness = await startWs();
    const clients = await Promise.all([1, 2].map(() => openClient(harness!.url)));
    const counters = countWrites(harness);
    await harness.broadcaster.toAll('one');
    await harness.broadcaster.toAll('two');
    await harness.broadcaster.toAll('three');
    expect(counters.map((c) => c.writes)).toEqual([1, 1]);
    await new Promise<void>((resolve) => process.nextTick(resolve));
    expect(counters).toEqual([
      { writes: 2, chunks: 3 },
      { writes: 2, chunks: 3 },
    ]);
    for (const c of clients) expect(await c.waitFor(3)).toEqual(['one', 'two', 'three']);
  });

  it('a socket holding 64 KiB is written at once, before the tick ends', async () => {
    harness = await startWs();
    const client = await openClient(harness.url);
    const [counter] = countWrites(harness);
    const big = 'x'.repeat(20_000);
    for (let i = 0; i < 5; i++) await harness.broadcaster.toAll(big);
    // The first is written at once; the second to fifth are held, and the fifth crosses 64 KiB
    // (4 x ~20 KiB) and lets them out together, before the tick ends.
    expect(counter).toEqual({ writes: 2, chunks: 5 });
    expect(await client.waitFor(5)).toEqual([big, big, big, big, big]);
  });

  it('a burst does not disturb replies and later broadcasts (uncorked at the end of the tick)', async () => {
    harness = await startWs({ broadcaster: { allowClientJoins: true } });
    const client = await openClient(harness.url);
    await Promise.all([harness.broadcaster.toAll('a'), harness.broadcaster.toAll('b')]);
    expect(await client.waitFor(2)).toEqual(['a', 'b']);
    expect(await client.request('{"type":"ping","requestId":1}')).toEqual({ type: 'pong', requestId: 1 });
    await harness.broadcaster.toAll('c');
    expect(await client.waitFor(4)).toEqual(['a', 'b', '{"type":"pong","requestId":1}', 'c']);
  });

  it('terminating a connection right after a burst still delivers what was written first', async () => {
    harness = await startWs();
    const client = await openClient(harness.url);
    await Promise.all([1, 2, 3].map((n) => harness!.broadcaster.toAll({ n })));
    // still the same tick: the burst is corked until process.nextTick
    [...harness.broadcaster.connections.entries()][0]?.connection.terminate?.();
    await client.closed;
    expect(client.frames).toEqual(['{"n":1}', '{"n":2}', '{"n":3}']);
  });

  it('the application destroying the socket itself in the same tick (ws.terminate()) loses nothing', async () => {
    harness = await startWs();
    const client = await openClient(harness.url);
    await harness.broadcaster.toAll('first');
    await harness.broadcaster.toAll('second');
    for (const ws of harness.wss.clients) ws.terminate();
    await client.closed;
    expect(client.frames).toEqual(['first', 'second']);
  });

  it('coalesce: false: every broadcast is its own write, as with ws.send', async () => {
    harness = await startWs({ adapter: { coalesce: false } });
    await openClient(harness.url);
    const [counter] = countWrites(harness);
    await Promise.all([1, 2, 3].map((n) => harness!.broadcaster.toAll({ n })));
    expect(counter).toEqual({ writes: 3, chunks: 3 });
  });
});
