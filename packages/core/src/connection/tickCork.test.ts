import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { corkForTick, inBurst, isHeldForTick, releaseIfFull } from './tickCork.js';

/** A real Node Writable that records each write that reaches it: one entry per `_write` or `_writev`. */
function recorder() {
  const writes: string[][] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      writes.push([chunk.toString()]);
      done();
    },
    writev(chunks, done) {
      writes.push(chunks.map((c) => (c.chunk as Buffer).toString()));
      done();
    },
  });
  return { stream, writes };
}

const endOfTick = () => new Promise<void>((resolve) => process.nextTick(resolve));

describe('corkForTick', () => {
  it('holds every write of the tick and lets them out together, in order, when the tick ends', async () => {
    const a = recorder();
    const b = recorder();
    for (const m of ['1', '2', '3']) {
      for (const { stream } of [a, b]) {
        corkForTick(stream);
        stream.write(m);
      }
    }
    expect(a.writes).toEqual([]);
    expect(isHeldForTick(a.stream)).toBe(true);
    await endOfTick();
    expect(a.writes).toEqual([['1', '2', '3']]);
    expect(b.writes).toEqual([['1', '2', '3']]);
    expect(isHeldForTick(a.stream)).toBe(false);
  });

  it('holds across the promise jobs of the tick (awaited broadcasts share the batch)', async () => {
    const a = recorder();
    const send = async (m: string) => {
      corkForTick(a.stream);
      a.stream.write(m);
    };
    await send('x');
    await send('y');
    expect(a.writes).toEqual([]);
    await endOfTick();
    expect(a.writes).toEqual([['x', 'y']]);
  });

  it('starts a new batch in the next tick', async () => {
    const a = recorder();
    corkForTick(a.stream);
    a.stream.write('1');
    await endOfTick();
    corkForTick(a.stream);
    a.stream.write('2');
    await endOfTick();
    expect(a.writes).toEqual([['1'], ['2']]);
  });

  it('lets a stream go at once when it holds the limit, and holds it again for later writes', async () => {
    const a = recorder();
    for (const m of ['aaaa', 'bbbb', 'cc']) {
      corkForTick(a.stream);
      a.stream.write(m);
      releaseIfFull(a.stream, 8);
    }
    expect(a.writes).toEqual([['aaaa', 'bbbb']]);
    await endOfTick();
    expect(a.writes).toEqual([['aaaa', 'bbbb'], ['cc']]);
  });

  it('flushes what it held before the stream is destroyed by any code in the same tick', async () => {
    const a = recorder();
    corkForTick(a.stream);
    a.stream.write('last words');
    a.stream.destroy();
    expect(a.writes).toEqual([['last words']]);
    expect(a.stream.destroyed).toBe(true);
    await endOfTick();
    expect(a.writes).toEqual([['last words']]);
  });

  it('a stream corked by its owner stays corked after the tick', async () => {
    const b = recorder();
    b.stream.cork(); // the owner's own cork
    corkForTick(b.stream);
    b.stream.write('m');
    await endOfTick();
    expect(b.writes).toEqual([]);
    b.stream.uncork();
    expect(b.writes).toEqual([['m']]);
  });

  it('ignores a destroyed stream', () => {
    const a = recorder();
    a.stream.destroy();
    corkForTick(a.stream);
    expect(isHeldForTick(a.stream)).toBe(false);
  });
});

describe('inBurst', () => {
  it('does not hold a lone message per tick, for any number of recipients', async () => {
    await endOfTick();
    const a = {};
    expect([inBurst(a), inBurst(a), inBurst(a)]).toEqual([false, false, false]);
    await endOfTick();
    const b = {};
    expect(inBurst(b)).toBe(false);
    await endOfTick();
  });

  it('holds from the second distinct message of a tick on', async () => {
    await endOfTick();
    const [a, b, c] = [{}, {}, {}];
    expect([inBurst(a), inBurst(a), inBurst(b), inBurst(b), inBurst(c)]).toEqual([false, false, true, true, true]);
    await endOfTick();
  });

  it('writes the first message of the tick right after a burst at once: each tick decides alone', async () => {
    await endOfTick();
    expect([inBurst({}), inBurst({}), inBurst({})]).toEqual([false, true, true]);
    await endOfTick();
    // the very next tick, no time later
    const next = {};
    expect([inBurst(next), inBurst(next)]).toEqual([false, false]);
    expect(inBurst({})).toBe(true);
    await endOfTick();
  });
});
