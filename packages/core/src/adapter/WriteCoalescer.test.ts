import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { Broadcaster } from '@bcast/core';
import { WriteCoalescer, coalescerFor } from '@bcast/core/adapter';
import type { EncodedMessage } from '../connection/EncodedMessage.js';
import { FakeConnection, quietLogger } from '../test-utils/fakeConnection.js';

/** A real Node Writable that records what reaches it: one entry per `_write` or `_writev` call. */
function recorder() {
  const writes: string[][] = [];
  const calls = { write: 0, writev: 0 };
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      calls.write += 1;
      writes.push([chunk.toString()]);
      done();
    },
    writev(chunks, done) {
      calls.writev += 1;
      writes.push(chunks.map((c) => (c.chunk as Buffer).toString()));
      done();
    },
  });
  return { stream, writes, calls };
}

const endOfTick = (): Promise<void> => new Promise<void>((resolve) => process.nextTick(resolve));
const b = (s: string): Buffer => Buffer.from(s);

/** One fan-out: start, write `chunk` to each stream, end. */
function fanOut(c: WriteCoalescer, streams: Writable[], chunk: string): void {
  c.fanOutStart();
  for (const s of streams) c.write(s, b(chunk));
  c.fanOutEnd();
}

describe('WriteCoalescer', () => {
  it('writes the first fan-out of a tick at once (no cork)', async () => {
    const c = new WriteCoalescer();
    const a = recorder();
    const z = recorder();
    fanOut(c, [a.stream, z.stream], '1');
    expect(a.writes).toEqual([['1']]);
    expect(z.writes).toEqual([['1']]);
    expect(c.isHeld(a.stream)).toBe(false);
    expect(a.stream.writableCorked).toBe(0);
    await endOfTick();
    expect(a.writes).toEqual([['1']]);
  });

  it('holds the writes of the second and later fan-outs of a tick; they leave in one _writev per stream, in order, when the tick ends', async () => {
    const c = new WriteCoalescer();
    const a = recorder();
    const z = recorder();
    fanOut(c, [a.stream, z.stream], '1');
    c.fanOutStart();
    expect(c.holding).toBe(true);
    c.write(a.stream, b('2'));
    c.write(z.stream, b('2'));
    c.fanOutEnd();
    fanOut(c, [a.stream, z.stream], '3');
    fanOut(c, [a.stream], '4');
    expect(c.isHeld(a.stream)).toBe(true);
    expect(a.writes).toEqual([['1']]);
    expect(z.writes).toEqual([['1']]);
    await endOfTick();
    expect(a.writes).toEqual([['1'], ['2', '3', '4']]);
    expect(z.writes).toEqual([['1'], ['2', '3']]);
    expect(a.calls).toEqual({ write: 1, writev: 1 });
    expect(z.calls).toEqual({ write: 1, writev: 1 });
    expect(c.isHeld(a.stream)).toBe(false);
    expect(c.holding).toBe(false);
  });

  it('holds across the promise jobs of the tick (awaited broadcasts share the batch)', async () => {
    const c = new WriteCoalescer();
    const a = recorder();
    const send = async (m: string): Promise<void> => fanOut(c, [a.stream], m);
    await send('x');
    await send('y');
    await send('z');
    expect(a.writes).toEqual([['x']]);
    await endOfTick();
    expect(a.writes).toEqual([['x'], ['y', 'z']]);
  });

  it('starts fresh in a new tick: its first fan-out is written at once again', async () => {
    const c = new WriteCoalescer();
    const a = recorder();
    fanOut(c, [a.stream], '1');
    fanOut(c, [a.stream], '2');
    fanOut(c, [a.stream], '3');
    await endOfTick();
    expect(a.writes).toEqual([['1'], ['2', '3']]);
    fanOut(c, [a.stream], '4');
    expect(c.holding).toBe(false);
    expect(a.writes).toEqual([['1'], ['2', '3'], ['4']]);
    fanOut(c, [a.stream], '5');
    fanOut(c, [a.stream], '6');
    expect(a.writes).toHaveLength(3);
    await endOfTick();
    expect(a.writes).toEqual([['1'], ['2', '3'], ['4'], ['5', '6']]);
  });

  it('lets a stream holding maxHeldBytes or more go at once, and holds it again for later writes of the tick', async () => {
    const c = new WriteCoalescer(8);
    const a = recorder();
    fanOut(c, [a.stream], 'first');
    fanOut(c, [a.stream], 'aaaa');
    expect(a.writes).toEqual([['first']]);
    fanOut(c, [a.stream], 'bbbb'); // 8 bytes held: let go now
    expect(a.writes).toEqual([['first'], ['aaaa', 'bbbb']]);
    expect(c.isHeld(a.stream)).toBe(false);
    fanOut(c, [a.stream], 'cc');
    fanOut(c, [a.stream], 'dd');
    expect(c.isHeld(a.stream)).toBe(true);
    expect(a.writes).toHaveLength(2);
    await endOfTick();
    expect(a.writes).toEqual([['first'], ['aaaa', 'bbbb'], ['cc', 'dd']]);
    expect(a.calls).toEqual({ write: 1, writev: 2 });
  });

  it('destroying a held stream in the same tick flushes what it holds first', async () => {
    const c = new WriteCoalescer();
    const a = recorder();
    fanOut(c, [a.stream], 'first');
    fanOut(c, [a.stream], 'last');
    fanOut(c, [a.stream], 'words');
    expect(a.writes).toEqual([['first']]);
    a.stream.destroy();
    expect(a.writes).toEqual([['first'], ['last', 'words']]);
    expect(a.calls).toEqual({ write: 1, writev: 1 });
    expect(a.stream.destroyed).toBe(true);
    await endOfTick();
    expect(a.writes).toEqual([['first'], ['last', 'words']]);
    // a destroyed stream is not held again
    fanOut(c, [a.stream], 'x');
    fanOut(c, [a.stream], 'y');
    expect(c.isHeld(a.stream)).toBe(false);
  });

  it('a stream corked by its owner stays corked after the tick', async () => {
    const c = new WriteCoalescer();
    const a = recorder();
    fanOut(c, [a.stream], '1');
    a.stream.cork(); // the owner's own cork
    fanOut(c, [a.stream], '2');
    fanOut(c, [a.stream], '3');
    await endOfTick();
    expect(a.writes).toEqual([['1']]);
    expect(a.stream.writableCorked).toBe(1);
    a.stream.uncork();
    expect(a.writes).toEqual([['1'], ['2', '3']]);
  });

  describe('over a real TCP socket (loopback)', () => {
    let server: Server | undefined;
    const sockets: Socket[] = [];
    afterEach(async () => {
      for (const s of sockets.splice(0)) s.destroy();
      if (server) await new Promise<void>((resolve) => server?.close(() => resolve()));
      server = undefined;
    });

    async function pair(): Promise<{ local: Socket; peer: Socket; received: () => string; ended: Promise<unknown> }> {
      const accepted = new Promise<Socket>((resolve) => {
        server = createServer((s) => resolve(s));
      });
      server?.listen(0, '127.0.0.1');
      await once(server as Server, 'listening');
      const address = server?.address();
      const peer = connect({ port: typeof address === 'object' && address ? address.port : 0, host: '127.0.0.1' });
      const local = await accepted;
      sockets.push(local, peer);
      let text = '';
      peer.setEncoding('utf8');
      peer.on('data', (d: string) => (text += d));
      const ended = once(peer, 'end');
      return { local, peer, received: () => text, ended };
    }

    it('a burst leaves the socket in one _writev, in order; the peer receives every byte', async () => {
      const { local, received, ended } = await pair();
      const calls = { write: 0, writev: 0 };
      const ownWrite = local._write.bind(local);
      const ownWritev = local._writev?.bind(local);
      local._write = (chunk, enc, cb) => {
        calls.write += 1;
        ownWrite(chunk, enc, cb);
      };
      local._writev = (chunks, cb) => {
        calls.writev += 1;
        ownWritev?.(chunks, cb);
      };
      const c = new WriteCoalescer();
      fanOut(c, [local as unknown as Writable], 'a;');
      fanOut(c, [local as unknown as Writable], 'b;');
      fanOut(c, [local as unknown as Writable], 'c;');
      expect(calls).toEqual({ write: 1, writev: 0 });
      await endOfTick();
      expect(calls).toEqual({ write: 1, writev: 1 });
      local.end();
      await ended;
      expect(received()).toBe('a;b;c;');
    });

    it('a socket destroyed in the tick of its held writes still delivers them', async () => {
      const { local, received, ended } = await pair();
      const c = new WriteCoalescer();
      fanOut(c, [local as unknown as Writable], 'hello;');
      fanOut(c, [local as unknown as Writable], 'last;');
      fanOut(c, [local as unknown as Writable], 'words;');
      local.destroy();
      await ended;
      expect(received()).toBe('hello;last;words;');
    });
  });
});

describe('coalescerFor', () => {
  const made: Broadcaster[] = [];
  afterEach(async () => {
    for (const x of made.splice(0)) await x.dispose();
  });
  const broadcaster = (): Broadcaster => {
    const x = new Broadcaster({ pingIntervalMs: 0, logger: quietLogger() });
    made.push(x);
    return x;
  };

  it('returns one coalescer per broadcaster', () => {
    const one = broadcaster();
    const two = broadcaster();
    expect(coalescerFor(one)).toBe(coalescerFor(one));
    expect(coalescerFor(two)).not.toBe(coalescerFor(one));
  });

  it('receives the broadcaster\'s fan-out boundaries: of two toAll in one tick, the second is held', async () => {
    const x = broadcaster();
    const c = coalescerFor(x);
    const a = recorder();
    const holding: boolean[] = [];
    class Streamed extends FakeConnection {
      override send(message: EncodedMessage): void {
        holding.push(c.holding);
        c.write(a.stream, message.bytes);
      }
    }
    x.register(new Streamed('s1'));
    await Promise.all([x.toAll('1;'), x.toAll('2;'), x.toAll('3;')]);
    expect(holding).toEqual([false, true, true]);
    await endOfTick();
    expect(a.writes).toEqual([['1;'], ['2;', '3;']]);

    // the next tick starts fresh
    holding.length = 0;
    await x.toAll('4;');
    expect(holding).toEqual([false]);
  });
});
