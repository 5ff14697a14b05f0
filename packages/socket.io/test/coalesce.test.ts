import { afterEach, describe, expect, it } from 'vitest';
import { client, closeAll, connected, startIo, type Harness } from './helpers.js';
import { guardProcess } from '../../../tests/support/processGuard.js';

guardProcess();

// The direct write: on the websocket transport, with nothing queued in engine.io, a broadcast's
// pre-built frame goes to the TCP socket; in a burst, the frames after the first leave in one write.

afterEach(closeAll);

/** Counts the writes that reach each server-side TCP socket (`_write` for one chunk, `_writev` for a batch). */
function countWrites(h: Harness): Array<{ writes: number; chunks: number }> {
  return [...h.io.sockets.sockets.values()].map((socket) => {
    const tcp = (socket.conn as unknown as { transport: { socket: { _socket: any } } }).transport.socket._socket;
    const counter = { writes: 0, chunks: 0 };
    const write = tcp._write.bind(tcp);
    const writev = tcp._writev.bind(tcp);
    tcp._write = (...a: unknown[]) => {
      counter.writes += 1;
      counter.chunks += 1;
      return write(...a);
    };
    tcp._writev = (chunks: unknown[], cb: unknown) => {
      counter.writes += 1;
      counter.chunks += chunks.length;
      return writev(chunks, cb);
    };
    return counter;
  });
}

describe('broadcast writes on the websocket transport', () => {
  it('ten broadcasts of one tick reach every client in order in two writes per socket: the first, then the other nine', async () => {
    const h = await startIo();
    const clients = await Promise.all([1, 2, 3].map(() => connected(client(h.url))));
    const counters = countWrites(h);
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => h.broadcaster.toAll({ seq: i })));
    expect(results.map((r) => r.delivered)).toEqual(Array(10).fill(3));
    for (const c of clients) expect(await c.waitFor(10)).toEqual(Array.from({ length: 10 }, (_, i) => ({ seq: i })));
    for (const counter of counters) expect(counter).toEqual({ writes: 2, chunks: 10 });
  });

  it("keeps the order of the app's own emits in the same tick", async () => {
    const h = await startIo();
    const c = await connected(client(h.url));
    const [socket] = [...h.io.sockets.sockets.values()];
    await h.broadcaster.toAll('one');
    socket!.emit('message', 'own');
    await h.broadcaster.toAll('two');
    expect(await c.waitFor(3)).toEqual(['one', 'own', 'two']);
  });

  it('a socket the app disconnects in the same tick still gets what was broadcast first', async () => {
    const h = await startIo();
    const c = await connected(client(h.url));
    const disconnected = new Promise((resolve) => c.socket.once('disconnect', resolve));
    await h.broadcaster.toAll('before');
    for (const socket of h.io.sockets.sockets.values()) socket.disconnect(true);
    expect(await disconnected).toBe('io server disconnect');
    expect(c.received).toEqual(['before']);
  });

  it('a socket terminated in the same tick (its TCP socket destroyed) still gets what was broadcast first', async () => {
    const h = await startIo();
    const c = await connected(client(h.url));
    const disconnected = new Promise((resolve) => c.socket.once('disconnect', resolve));
    await h.broadcaster.toAll('last');
    [...h.broadcaster.connections.entries()][0]?.connection.terminate?.();
    expect(await disconnected).toBe('transport close');
    expect(c.received).toEqual(['last']);
  });
});
