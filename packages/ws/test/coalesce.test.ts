import { afterEach, describe, expect, it } from 'vitest';
import { openClient, startWs, type Harness } from './helpers.js';

// Coalescing: broadcasts issued in the same tick share one write per socket (after the first);
// a lone broadcast is written at once.

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

describe('coalescing broadcasts of one tick (coalesce: true)', () => {
  it('ten broadcasts issued together reach every client in order with at most two writes per socket', async () => {
    harness = await startWs({ adapter: { coalesce: true } });
    const clients = await Promise.all([1, 2, 3].map(() => openClient(harness!.url)));
    const counters = countWrites(harness);
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => harness!.broadcaster.toAll({ seq: i })));
    expect(results.map((r) => r.delivered)).toEqual(Array(10).fill(3));
    for (const c of clients) expect((await c.waitFor(10)).map((f) => JSON.parse(f as string).seq)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for (const counter of counters) {
      expect(counter.chunks).toBe(10);
      expect(counter.writes).toBeLessThanOrEqual(2);
    }
  });

  it('a lone broadcast is written before its promise resolves, not held for the next tick', async () => {
    harness = await startWs({ adapter: { coalesce: true } });
    const clients = await Promise.all([1, 2].map(() => openClient(harness!.url)));
    const counters = countWrites(harness);
    await harness.broadcaster.toAll('alone');
    expect(counters.map((c) => c.writes)).toEqual([1, 1]);
    for (const c of clients) expect(await c.waitFor(1)).toEqual(['alone']);
  });

  it('a burst does not disturb replies and later broadcasts (uncorked at the end of the tick)', async () => {
    harness = await startWs({ broadcaster: { allowClientJoins: true }, adapter: { coalesce: true } });
    const client = await openClient(harness.url);
    await Promise.all([harness.broadcaster.toAll('a'), harness.broadcaster.toAll('b')]);
    expect(await client.waitFor(2)).toEqual(['a', 'b']);
    expect(await client.request('{"type":"ping","requestId":1}')).toEqual({ type: 'pong', requestId: 1 });
    await harness.broadcaster.toAll('c');
    expect(await client.waitFor(4)).toEqual(['a', 'b', '{"type":"pong","requestId":1}', 'c']);
  });

  it('terminating a connection right after a burst still delivers what was written first', async () => {
    harness = await startWs({ adapter: { coalesce: true } });
    const client = await openClient(harness.url);
    await Promise.all([1, 2, 3].map((n) => harness!.broadcaster.toAll({ n })));
    // still the same tick: the burst is corked until process.nextTick
    [...harness.broadcaster.connections.entries()][0]?.connection.terminate?.();
    await client.closed;
    expect(client.frames).toEqual(['{"n":1}', '{"n":2}', '{"n":3}']);
  });

  it('is off by default: every broadcast is its own write, as with ws.send', async () => {
    harness = await startWs();
    await openClient(harness.url);
    const [counter] = countWrites(harness);
    await Promise.all([1, 2, 3].map((n) => harness!.broadcaster.toAll({ n })));
    expect(counter).toEqual({ writes: 3, chunks: 3 });
  });
});
