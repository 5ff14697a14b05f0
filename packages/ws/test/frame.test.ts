import { once } from 'node:events';
import { ErrorClassifier, ErrorCode, isBcastError } from '@bcast/core';
import { EncodedMessage, type Connection } from '@bcast/core/adapter';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { wsConnection } from '../src/index.js';
import { frameFunction } from '../src/frame.js';
import { openClient, startWs, type Client, type Harness } from './helpers.js';
import { guardProcess } from '../../../tests/support/processGuard.js';

guardProcess();

let harness: Harness | undefined;
afterEach(async () => {
  vi.restoreAllMocks();
  await harness?.close();
  harness = undefined;
});

/** Counts EncodedMessage.prepare calls and how often their build callback really ran. */
function spyPrepare(): { calls: number; builds: number } {
  const counts = { calls: 0, builds: 0 };
  const original = EncodedMessage.prototype.prepare;
  vi.spyOn(EncodedMessage.prototype, 'prepare').mockImplementation(function <K extends object, T>(this: EncodedMessage, key: K, build: (m: EncodedMessage, k: K) => T): T {
    counts.calls += 1;
    return original.call(this, key, (m: EncodedMessage, k: object) => {
      counts.builds += 1;
      return build(m, k as K);
    }) as T;
  });
  return counts;
}

async function connect(url: string, n: number, options = {}): Promise<Client[]> {
  return Promise.all(Array.from({ length: n }, () => openClient(url, options)));
}

const printable = (frame: string | Buffer): string => (typeof frame === 'string' ? `text:${frame}` : `binary:${frame.toString('base64')}`);
const utf8 = (n: number): string => 'é'.repeat(Math.floor(n / 2)) + (n % 2 ? 'a' : '');

describe('frame once per broadcast', () => {
  it('builds the frame once for N sockets, never calls ws.send, and clients decode every length encoding', async () => {
    harness = await startWs();
    const clients = await connect(harness.url, 5);
    const counts = spyPrepare();
    const sends = [...harness.wss.clients].map((ws) => vi.spyOn(ws, 'send'));
    expect(sends).toHaveLength(5);
    const messages: (string | Buffer)[] = [
      '',
      'short',
      utf8(125),
      utf8(126),
      utf8(65_535),
      utf8(65_536),
      utf8(200_000) + '😀',
      Buffer.alloc(0),
      Buffer.from([0, 1, 2, 255]),
      Buffer.alloc(65_535, 7),
      Buffer.alloc(70_000, 9),
    ];
    for (const [i, message] of messages.entries()) {
      const result = await harness.broadcaster.toAll(message);
      expect(result.delivered).toBe(5);
      expect(counts).toEqual({ calls: 5 * (i + 1), builds: i + 1 });
    }
    for (const send of sends) expect(send).not.toHaveBeenCalled();
    for (const client of clients) {
      const frames = await client.waitFor(messages.length);
      // Buffers compared by content in one call (vitest's deep equality walks them byte by byte).
      expect(frames.map(printable)).toEqual(messages.map(printable));
    }
  });

  it('sends JSON objects as text frames, built once', async () => {
    harness = await startWs();
    const clients = await connect(harness.url, 3);
    const counts = spyPrepare();
    await harness.broadcaster.toAll({ type: 'tick', n: 1, text: 'ü'.repeat(40_000) });
    expect(counts.builds).toBe(1);
    for (const client of clients) {
      const [frame] = await client.waitFor(1);
      expect(typeof frame).toBe('string');
      expect(JSON.parse(frame as string)).toEqual({ type: 'tick', n: 1, text: 'ü'.repeat(40_000) });
    }
  });

  it('falls back to ws.send for a permessage-deflate socket, and pre-builds for the others', async () => {
    harness = await startWs({ server: { perMessageDeflate: { threshold: 0 } } });
    const deflate = await openClient(harness.url, { perMessageDeflate: true });
    const plain = await openClient(harness.url, { perMessageDeflate: false });
    expect(deflate.ws.extensions).toContain('permessage-deflate');
    expect(plain.ws.extensions).toBe('');
    const serverSockets = [...harness.wss.clients];
    const compressed = serverSockets.find((ws) => ws.extensions.includes('permessage-deflate'))!;
    expect(frameFunction(compressed)).toBeUndefined();
    const uncompressed = serverSockets.find((ws) => ws !== compressed)!;
    const counts = spyPrepare();
    const compressedSend = vi.spyOn(compressed, 'send');
    const plainSend = vi.spyOn(uncompressed, 'send');
    const text = 'compress me '.repeat(1_000);
    await harness.broadcaster.toAll(text);
    await harness.broadcaster.toAll(Buffer.from('binary'));
    expect(compressedSend).toHaveBeenCalledTimes(2);
    expect(plainSend).not.toHaveBeenCalled();
    expect(counts.builds).toBe(2);
    expect(await deflate.waitFor(2)).toEqual([text, Buffer.from('binary')]);
    expect(await plain.waitFor(2)).toEqual([text, Buffer.from('binary')]);
  });

  it('keeps order behind a send ws still has queued (a Blob being read) by using ws.send', async () => {
    harness = await startWs();
    const client = await openClient(harness.url);
    const [serverSide] = [...harness.wss.clients];
    serverSide!.send(new Blob([Buffer.from('first, from the app')]));
    expect(frameFunction(serverSide!)).toBeUndefined();
    const send = vi.spyOn(serverSide!, 'send');
    await harness.broadcaster.toAll('second, a broadcast');
    expect(send).toHaveBeenCalledTimes(1);
    expect(await client.waitFor(2)).toEqual([Buffer.from('first, from the app'), 'second, a broadcast']);
    expect(frameFunction(serverSide!)).toBeDefined();
  });
});

describe('wsConnection', () => {
  it('reports state and throws BCAST_CONNECTION_CLOSED on send once the socket closed', async () => {
    harness = await startWs();
    const client = await openClient(harness.url);
    const [serverSide] = [...harness.wss.clients];
    const connection: Connection = wsConnection(serverSide!, { id: 'c1', userId: 'u1', data: { role: 'x' } });
    expect(connection).toMatchObject({ id: 'c1', userId: 'u1', data: { role: 'x' }, isOpen: true, bufferedBytes: 0 });
    expect(wsConnection(serverSide!).id).toMatch(/^[0-9a-f]{32}$/);
    const closed = once(serverSide!, 'close');
    client.ws.close();
    await closed;
    expect(connection.isOpen).toBe(false);
    let thrown: unknown;
    try {
      connection.send(harness.broadcaster.encode('late'));
    } catch (error) {
      thrown = error;
    }
    expect(isBcastError(thrown, ErrorCode.ConnectionClosed)).toBe(true);
    expect(new ErrorClassifier().classifySendError(thrown)).toBe('connection-dead');
  });
});
