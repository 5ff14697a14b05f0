import { afterEach, describe, expect, it } from 'vitest';
import type { Server } from 'socket.io';
import { client, closeAll, connected, startIo, tcpOf, type Harness, type TestClient } from './helpers.js';
import { guardProcess } from '../../../tests/support/processGuard.js';

guardProcess();

afterEach(closeAll);

/** Counts the server encoder's encode() calls (socket.io's adapter and Client both use it). */
function countEncodes(io: Server): { readonly calls: number } {
  const encoder = io.encoder as { encode(packet: unknown): unknown[] };
  const encode = encoder.encode.bind(encoder);
  const counter = { calls: 0 };
  encoder.encode = (packet) => {
    counter.calls += 1;
    return encode(packet);
  };
  return counter;
}

interface OldClient {
  writeToEngine?: unknown;
  _packet(packet: unknown, opts?: object): void;
}

async function clients(h: Harness, n: number): Promise<TestClient[]> {
  return Promise.all(Array.from({ length: n }, () => connected(client(h.url))));
}

/** Broadcasts an object, a string and bytes; every client must receive them as such, in order. */
async function roundTrip(h: Harness, all: TestClient[]): Promise<void> {
  const object = { type: 'chat', text: 'héllo', nested: { n: [1, 2, 3] } };
  expect((await h.broadcaster.toAll(object)).delivered).toBe(all.length);
  expect((await h.broadcaster.toAll('plain text')).delivered).toBe(all.length);
  expect((await h.broadcaster.toAll(Buffer.from([0, 1, 2, 255]))).delivered).toBe(all.length);
  for (const c of all) {
    const [first, second, third] = await c.waitFor(3);
    expect(first).toEqual(object);
    expect(second).toBe('plain text');
    expect(Buffer.isBuffer(third)).toBe(true);
    expect([...(third as Buffer)]).toEqual([0, 1, 2, 255]);
  }
}

describe('pre-encoded broadcasts', () => {
  it('encode each broadcast once (with the pre-built WebSocket frame) for every socket', async () => {
    const h = await startIo();
    const all = await clients(h, 5);
    const encodes = countEncodes(h.io);
    const adapter = h.io.sockets.adapter as unknown as { _encode(packet: unknown, opts: Record<string, unknown>): unknown[] };
    const frames: unknown[] = [];
    const _encode = adapter._encode.bind(adapter);
    adapter._encode = (packet, opts) => {
      const packets = _encode(packet, opts);
      frames.push(opts.wsPreEncodedFrame);
      return packets;
    };
    await roundTrip(h, all);
    expect(encodes.calls).toBe(3);
    // text packets get a pre-built frame; a binary one is several packets and is framed by engine.io
    expect(frames.map((f) => f !== undefined)).toEqual([true, true, false]);
  });

  it('fall back to socket.emit when Client#writeToEngine is missing', async () => {
    // An older socket.io Client: no writeToEngine, _packet writes to engine.io itself.
    const h = await startIo({
      before: (io) =>
        io.use((socket, next) => {
          const legacy = socket.client as unknown as OldClient;
          legacy.writeToEngine = undefined;
          legacy._packet = (packet, opts = {}) => {
            if (socket.conn.readyState !== 'open') return;
            for (const encoded of io.encoder.encode(packet as Parameters<typeof io.encoder.encode>[0])) socket.conn.write(encoded, opts);
          };
          next();
        }),
    });
    const all = await clients(h, 4);
    const encodes = countEncodes(h.io);
    await roundTrip(h, all);
    expect(encodes.calls).toBe(3 * 4);
  });

  it('keep socket.emit when connection state recovery stores packets for replay', async () => {
    const h = await startIo({ server: { connectionStateRecovery: {} } });
    const all = await clients(h, 3);
    const encodes = countEncodes(h.io);
    await roundTrip(h, all);
    expect(encodes.calls).toBe(3 * 3);
  });

  it('emit on a custom event and never on a reserved one', async () => {
    const h = await startIo({ adapter: { event: 'bcast' } });
    const c = await connected(client(h.url, { event: 'bcast' }));
    const other: unknown[] = [];
    c.socket.on('message', (m: unknown) => other.push(m));
    await h.broadcaster.toAll({ on: 'bcast' });
    expect(await c.waitFor(1)).toEqual([{ on: 'bcast' }]);
    expect(other).toEqual([]);
    const { attachToServer } = await import('../src/index.js');
    for (const event of ['disconnect', 'connect', '']) {
      expect(() => attachToServer(h.broadcaster, h.io, { event })).toThrow(expect.objectContaining({ code: 'BCAST_INVALID_OPTION' }));
    }
    expect(() => attachToServer(h.broadcaster, h.io, { inboundEvent: 'connect_error' })).toThrow(expect.objectContaining({ code: 'BCAST_INVALID_OPTION' }));
  });
});

describe('bufferedBytes', () => {
  it("counts engine.io's write buffer and the WebSocket's bufferedAmount, and drains back to 0", async () => {
    const h = await startIo({ broadcaster: { maxBufferedBytes: 512 * 1024 * 1024 } });
    const c = await connected(client(h.url));
    const entry = [...h.broadcaster.connections.entries()][0]!;
    tcpOf(c).pause();
    const pad = 'y'.repeat(100_000);
    let sent = 0;
    // Loopback kernel buffers take a few MB; past them the bytes must show up here.
    while (entry.connection.bufferedBytes < 2_000_000 && sent < 500) {
      await h.broadcaster.toAll({ seq: sent, pad });
      sent += 1;
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(entry.connection.bufferedBytes).toBeGreaterThanOrEqual(2_000_000);
    const conn = h.io.sockets.sockets.get(c.socket.id!)!.conn as unknown as { writeBuffer: unknown[] };
    expect(conn.writeBuffer.length).toBeGreaterThan(0);
    tcpOf(c).resume();
    await c.waitFor(sent, 20_000);
    expect(entry.connection.bufferedBytes).toBe(0);
    expect(c.received.map((m) => (m as { seq: number }).seq)).toEqual(Array.from({ length: sent }, (_, i) => i));
  });
});
