import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { constants, deflateRawSync } from 'node:zlib';
import type { BroadcasterOptions } from '@bcast/core';
import { recommendedServerOptions } from '@bcast/ws';
import { afterEach, describe, expect, it } from 'vitest';
import { guardProcess } from '../../support/processGuard.js';
import { connect, type Client } from './support/clients.js';
import { MB, forcedGc, rssWatch } from './support/measure.js';
import { CLOSE, PING, PONG, TEXT, frame, maskPayload, rawUpgrade, type RawClient } from './support/raw.js';
import { startServer, type AdapterName, type StartOptions, type Sut } from './support/servers.js';

guardProcess();

// Frame-level abuse (B5-B9) on real servers, through a raw TCP client that builds its own frames.
// packages/ws/test/abuse.test.ts covers these frames on @bcast/ws; here they also go through
// @bcast/express (attachUpgrade's own WebSocketServer) and engine.io's WebSocketServer under
// @bcast/socket.io, with the plan's figures (sizes, memory growth).

const quiet = { warn: () => {}, error: () => {} };
const gc = forcedGc();

let sut: Sut | undefined;
const clients: Client[] = [];
const raws: RawClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  for (const r of raws.splice(0)) r.socket.destroy();
  await sut?.close();
  sut = undefined;
});

async function start(adapter: AdapterName, options: StartOptions = {}, broadcaster: BroadcasterOptions = {}): Promise<{ sut: Sut; disconnects: number[] }> {
  const disconnects: number[] = [];
  sut = await startServer(adapter, { ...options, broadcaster: { logger: quiet, pingIntervalMs: 0, onDisconnect: (_e, code) => void disconnects.push(code), ...broadcaster } });
  return { sut, disconnects };
}
async function client(s: Sut): Promise<Client> {
  const c = await connect(s);
  clients.push(c);
  return c;
}
async function raw(s: Sut, extraHeaders = ''): Promise<RawClient> {
  const r = await rawUpgrade(s.wsUrl, { extraHeaders });
  raws.push(r);
  return r;
}
/** A raw client connected to socket.io's main namespace (engine.io open, then CONNECT "40"): registered with bcast. */
async function rawSocketIo(s: Sut): Promise<RawClient> {
  const r = await raw(s);
  expect(r.status).toBe(101);
  const registered = s.broadcaster.connections.size + 1;
  r.socket.write(frame(TEXT, Buffer.from('40')));
  await expect.poll(() => s.broadcaster.connections.size).toBe(registered);
  return r;
}
/** A protocol message as the adapter expects it in a text frame. */
function textOf(adapter: AdapterName, message: string): Buffer {
  return Buffer.from(adapter === 'socket.io' ? `42${JSON.stringify(['message', message])}` : message);
}
/** The other clients are served after the abuse: a broadcast reaches them. */
async function othersServed(s: Sut, good: Client): Promise<void> {
  const from = good.received.length;
  const result = await s.broadcaster.toAll({ type: 'after-abuse' });
  expect(result.delivered).toBeGreaterThanOrEqual(1);
  await good.waitFor((v) => (v as { type?: unknown }).type === 'after-abuse', 5_000, from);
}
/**
 * The same refusal once before a memory measurement, so that what the first time through costs
 * (compiling the code paths, lazily created objects) is not counted as growth.
 */
async function warmUp(s: Sut): Promise<void> {
  const r = s.adapter === 'socket.io' ? await rawSocketIo(s) : await raw(s);
  r.socket.write(frame(TEXT, Buffer.alloc(0), { declaredLength: 16n * 1024n * 1024n }));
  await r.closeCode;
}
/** Writes `total` bytes of payload after a header, in 64 KiB chunks of one reused buffer, until the server hangs up. */
async function stream(r: RawClient, header: Buffer, total: number): Promise<number> {
  const chunk = maskPayload(Buffer.alloc(64 * 1024, 0x61));
  let written = 0;
  if (header.length > 0) r.socket.write(header);
  while (written < total && !r.socket.destroyed && r.socket.writable) {
    const ok = r.socket.write(chunk);
    written += chunk.length;
    if (!ok) await Promise.race([once(r.socket, 'drain'), r.ended]);
  }
  return written;
}

function wsVersion(from: string): string {
  const require = createRequire(from);
  const main = require.resolve('ws');
  let dir = dirname(main);
  while (!dir.endsWith(`${'node_modules'}/ws`) && dir !== dirname(dir)) dir = dirname(dir);
  return (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string }).version;
}
const atLeast = (version: string, min: [number, number, number]): boolean => {
  const [a = 0, b = 0, c = 0] = version.split('.').map(Number);
  return a !== min[0] ? a > min[0] : b !== min[1] ? b > min[1] : c >= min[2];
};

describe('B5 oversized frames (maxPayload 64 KiB)', () => {
  it.each(['ws', 'express'] as const)('B5 %s: a 16 MiB frame (Autobahn 9.1.6 size) gets 1009 on its header, before any payload is buffered; RSS growth <= 2 MB', async (adapter) => {
    const { sut, disconnects } = await start(adapter);
    const good = await client(sut);
    await warmUp(sut);
    const evil = await raw(sut);
    expect(evil.status).toBe(101);
    const watch = await rssWatch();
    // the header alone is refused: nothing of the payload was there to buffer
    evil.socket.write(frame(TEXT, Buffer.alloc(0), { declaredLength: 16n * 1024n * 1024n }));
    expect((await evil.frame(CLOSE)).readUInt16BE(0)).toBe(1009);
    // an attacker that goes on sending the 16 MiB anyway until the server hangs up
    const written = await stream(evil, Buffer.alloc(0), 16 * MB);
    expect(await evil.closeCode).toBe(1009);
    const rss = await watch.stop();
    await expect.poll(() => disconnects).toEqual([1009, 1009]);
    console.info(
      `[B5 ${adapter}] 1009 on the header; ${(written / MB).toFixed(1)} MiB more written before the server hung up; RSS growth after GC ${(rss.finalGrowth / MB).toFixed(2)} MB, transient peak ${(rss.peakGrowth / MB).toFixed(2)} MB (gc: ${gc.how})`,
    );
    expect(rss.finalGrowth).toBeLessThanOrEqual(2 * MB);
    await othersServed(sut, good);
  });

  it.each(['ws', 'express', 'socket.io'] as const)('B5 %s: a declared length of 2^63 - 1 gets 1009', async (adapter) => {
    const { sut } = await start(adapter);
    const good = await client(sut);
    const evil = adapter === 'socket.io' ? await rawSocketIo(sut) : await raw(sut);
    evil.socket.write(frame(TEXT, Buffer.alloc(0), { declaredLength: 2n ** 63n - 1n }));
    expect(await evil.closeCode).toBe(1009);
    await othersServed(sut, good);
  });

  it('B5 socket.io: a 16 MiB frame over maxHttpBufferSize (1 MB) gets 1009 from engine.io on its header; RSS growth <= 2 MB', async () => {
    const { sut, disconnects } = await start('socket.io');
    const good = await client(sut);
    await warmUp(sut);
    const evil = await rawSocketIo(sut);
    const watch = await rssWatch();
    evil.socket.write(frame(TEXT, Buffer.alloc(0), { declaredLength: 16n * 1024n * 1024n }));
    expect((await evil.frame(CLOSE)).readUInt16BE(0)).toBe(1009);
    const written = await stream(evil, Buffer.alloc(0), 16 * MB);
    expect(await evil.closeCode).toBe(1009);
    const rss = await watch.stop();
    // socket.io reports a transport error; the core hears 1006 (socket.io has no close codes)
    await expect.poll(() => disconnects).toEqual([1006, 1006]);
    console.info(
      `[B5 socket.io] 1009 on the header; ${(written / MB).toFixed(1)} MiB more written before the server hung up; RSS growth after GC ${(rss.finalGrowth / MB).toFixed(2)} MB, transient peak ${(rss.peakGrowth / MB).toFixed(2)} MB (gc: ${gc.how})`,
    );
    expect(rss.finalGrowth).toBeLessThanOrEqual(2 * MB);
    await othersServed(sut, good);
  });

  it('B5 socket.io: a message over maxHttpBufferSize (default 1 MB) from a real client closes its transport; the others stay', async () => {
    const { sut, disconnects } = await start('socket.io');
    const good = await client(sut);
    const evil = await client(sut);
    evil.send({ type: 'ping', requestId: 'x'.repeat(1_100_000) });
    const closed = await evil.closed;
    expect(closed.reason).toBe('transport close');
    await expect.poll(() => disconnects).toEqual([1006]);
    expect(sut.broadcaster.connections.size).toBe(1);
    await othersServed(sut, good);
  });
});

describe('B6 invalid UTF-8', () => {
  it('B6 config: UTF-8 validation is on (skipUTF8Validation === false) in recommendedServerOptions, on the ws server and on engine.io\'s', async () => {
    expect(recommendedServerOptions.skipUTF8Validation).toBe(false);
    const ws = await startServer('ws');
    try {
      expect(ws.wss?.options.skipUTF8Validation).toBe(false);
    } finally {
      await ws.close();
    }
    const io = await startServer('socket.io');
    try {
      const engineWs = (io.io?.engine as unknown as { ws?: { options: { skipUTF8Validation?: boolean } } }).ws;
      expect(engineWs?.options.skipUTF8Validation).toBe(false);
    } finally {
      await io.close();
    }
  });

  const invalid: Array<[string, Buffer]> = [
    ['C0 AF (overlong)', Buffer.from([0xc0, 0xaf])],
    ['ED A0 80 (a UTF-16 surrogate)', Buffer.from([0xed, 0xa0, 0x80])],
    ['E2 82 (truncated)', Buffer.from([0xe2, 0x82])],
    ['F4 90 80 80 (over U+10FFFF)', Buffer.from([0xf4, 0x90, 0x80, 0x80])],
  ];
  describe.each(['express', 'socket.io'] as const)('%s', (adapter) => {
    it.each(invalid)(`B6 ${adapter}: %s in a text frame gets 1007`, async (_name, bytes) => {
      const { sut } = await start(adapter);
      const good = await client(sut);
      const evil = adapter === 'socket.io' ? await rawSocketIo(sut) : await raw(sut);
      evil.socket.write(frame(TEXT, Buffer.concat([Buffer.from(adapter === 'socket.io' ? '4' : '"'), bytes])));
      expect(await evil.closeCode).toBe(1007);
      await othersServed(sut, good);
    });

    it(`B6 ${adapter}: invalid UTF-8 in a close frame's reason gets 1007`, async () => {
      const { sut } = await start(adapter);
      const evil = adapter === 'socket.io' ? await rawSocketIo(sut) : await raw(sut);
      evil.socket.write(frame(CLOSE, Buffer.from([0x03, 0xe8, 0xc0, 0xaf])));
      expect(await evil.closeCode).toBe(1007);
    });

    it(`B6 ${adapter}: valid UTF-8 split inside a code point across fragments is accepted whole`, async () => {
      const { sut } = await start(adapter);
      const evil = adapter === 'socket.io' ? await rawSocketIo(sut) : await raw(sut);
      const text = textOf(adapter, JSON.stringify({ type: 'ping', requestId: 'p€𝄞' }));
      const cut1 = text.indexOf(0xe2) + 1; // inside the euro sign
      const cut2 = text.indexOf(0xf0) + 2; // inside the 4-byte G clef
      evil.socket.write(
        Buffer.concat([
          frame(TEXT, text.subarray(0, cut1), { fin: false }),
          frame(0x0, text.subarray(cut1, cut2), { fin: false }),
          frame(0x0, text.subarray(cut2)),
        ]),
      );
      const pong = (): string | undefined => evil.frames.map((f) => f.payload.toString('utf8')).find((t) => t.includes('"pong"'));
      await expect.poll(pong).toBeDefined();
      expect(pong()).toContain('"requestId":"p€𝄞"');
      expect(sut.broadcaster.connections.size).toBe(1);
    });
  });
});

// The frames of abuse.test.ts (ws), through attachUpgrade and engine.io's server.
const violations: Array<[string, Buffer]> = [
  ['an unmasked client frame', frame(TEXT, Buffer.from('hi'), { mask: false })],
  ['RSV1 without an extension', frame(TEXT, Buffer.from('hi'), { rsv1: true })],
  ['reserved opcode 0x3', frame(0x3, Buffer.from('hi'))],
  ['reserved control opcode 0xB', frame(0xb, Buffer.from('hi'))],
  ['a 126-byte ping', frame(PING, Buffer.alloc(126))],
  ['a fragmented close', frame(CLOSE, Buffer.from([0x03, 0xe8]), { fin: false })],
  ['a fragmented ping', frame(PING, Buffer.from('p'), { fin: false })],
  ['a continuation with nothing to continue', frame(0x0, Buffer.from('hi'))],
  ['a new text frame inside a fragmented message', Buffer.concat([frame(TEXT, Buffer.from('a'), { fin: false }), frame(TEXT, Buffer.from('b'))])],
  ['close code 1005 (never on the wire)', frame(CLOSE, Buffer.from([0x03, 0xed]))],
  ['close code 999', frame(CLOSE, Buffer.from([0x03, 0xe7]))],
  ['a close frame with a 1-byte payload', frame(CLOSE, Buffer.from([0x03]))],
];

describe.each(['express', 'socket.io'] as const)('B7 protocol violations: %s', (adapter) => {
  it.each(violations)(`B7 ${adapter}: %s gets 1002 and the server stays up`, async (_name, bad) => {
    const { sut } = await start(adapter);
    const good = await client(sut);
    const evil = adapter === 'socket.io' ? await rawSocketIo(sut) : await raw(sut);
    evil.socket.write(bad);
    expect(await evil.closeCode).toBe(1002);
    await othersServed(sut, good);
  });
});

describe('B8 tiny-fragment flood', () => {
  it('B8 the installed ws is >= 8.21.0 (maxFragments, advisory of 2026-05-22), for @bcast/ws and for engine.io; the packages require it', () => {
    const versions = {
      '@bcast/ws': wsVersion(new URL('../../../packages/ws/package.json', import.meta.url).href),
      '@bcast/express': wsVersion(new URL('../../../packages/express/package.json', import.meta.url).href),
      'engine.io (socket.io)': wsVersion(createRequire(createRequire(new URL('../../../packages/socket.io/package.json', import.meta.url).href).resolve('socket.io')).resolve('engine.io')),
    };
    for (const [who, version] of Object.entries(versions)) expect(atLeast(version, [8, 21, 0]), `${who} uses ws ${version}`).toBe(true);
    for (const pkg of ['ws', 'express']) {
      const manifest = JSON.parse(readFileSync(new URL(`../../../packages/${pkg}/package.json`, import.meta.url), 'utf8')) as { peerDependencies?: Record<string, string> };
      expect(manifest.peerDependencies?.['ws'], `@bcast/${pkg} peerDependencies.ws`).toMatch(/^>=8\.(2[1-9]|[3-9]\d)\.\d+/);
    }
    expect(recommendedServerOptions.maxFragments).toBe(1_024);
    console.info(`[B8] ws versions: ${JSON.stringify(versions)}`);
  });

  /** One message as `n` one-byte fragments: a first text frame, n - 2 continuations, a final one. */
  function fragments(n: number): Buffer {
    const parts: Buffer[] = [frame(TEXT, Buffer.from('"'), { fin: false })];
    for (let i = 1; i < n - 1; i++) parts.push(frame(0x0, Buffer.from('a'), { fin: false }));
    parts.push(frame(0x0, Buffer.from('"')));
    return Buffer.concat(parts);
  }

  it.each(['ws', 'express'] as const)('B8 %s: 1,025 one-byte fragments (maxFragments 1,024) get 1008; 1,024 are accepted; RSS growth <= 20 MB', async (adapter) => {
    const { sut, disconnects } = await start(adapter, {}, { onMessage: () => {} });
    const good = await client(sut);
    const fine = await raw(sut);
    fine.socket.write(fragments(1_024));
    fine.socket.write(frame(PING, Buffer.from('alive')));
    expect((await fine.frame(PONG)).toString()).toBe('alive');
    const evil = await raw(sut);
    const watch = await rssWatch();
    evil.socket.write(fragments(1_025));
    expect(await evil.closeCode).toBe(1008);
    const rss = await watch.stop();
    await expect.poll(() => disconnects).toEqual([1008]);
    console.info(`[B8 ${adapter}] RSS peak growth ${(rss.peakGrowth / MB).toFixed(2)} MB (gc: ${gc.how})`);
    expect(rss.peakGrowth).toBeLessThanOrEqual(20 * MB);
    await othersServed(sut, good);
  });

  it("B8 socket.io: engine.io's WebSocketServer keeps ws's default maxFragments (16,384): 1,025 fragments pass, 16,385 get 1008", async () => {
    const { sut } = await start('socket.io', {}, { onMessage: () => {} });
    const fine = await rawSocketIo(sut);
    const body = Buffer.from(`42${JSON.stringify(['message', { type: 'ping', requestId: 'f' }])}`);
    // 1,025 fragments: the first carries the packet up to its last byte, then 1,023 empty continuations, then the last byte
    const parts: Buffer[] = [frame(TEXT, body.subarray(0, -1), { fin: false })];
    for (let i = 0; i < 1_023; i++) parts.push(frame(0x0, Buffer.alloc(0), { fin: false }));
    parts.push(frame(0x0, body.subarray(-1)));
    fine.socket.write(Buffer.concat(parts));
    await expect.poll(() => fine.frames.some((f) => f.opcode === TEXT && f.payload.toString().includes('"pong"'))).toBe(true);
    const evil = await rawSocketIo(sut);
    const flood: Buffer[] = [frame(TEXT, Buffer.from('4'), { fin: false })];
    for (let i = 0; i < 16_384; i++) flood.push(frame(0x0, Buffer.alloc(0), { fin: false }));
    evil.socket.write(Buffer.concat(flood));
    expect(await evil.closeCode).toBe(1008);
  });
});

describe('B9 compression bomb', () => {
  it.each(['express', 'socket.io'] as const)('B9 %s (deflate off, the default): no extension in the 101 to a client offering permessage-deflate; its RSV1 frames get 1002', async (adapter) => {
    const { sut } = await start(adapter);
    const evil = await raw(sut, 'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n');
    expect(evil.status).toBe(101);
    expect(evil.head.toLowerCase()).not.toContain('sec-websocket-extensions');
    evil.socket.write(frame(TEXT, Buffer.from([0x4b, 0x04, 0x00]), { rsv1: true }));
    expect(await evil.closeCode).toBe(1002);
  });

  it('B9 ws with deflate on: a 60 KiB frame inflating to 60 MiB gets 1009 on the inflated size; concurrencyLimit <= 10; RSS growth <= 2 x maxPayload + 10 MB', async () => {
    let bomb: Buffer = deflateRawSync(Buffer.alloc(60 * MB), { level: 9, finishFlush: constants.Z_SYNC_FLUSH });
    bomb = bomb.subarray(0, bomb.length - 4); // permessage-deflate drops the 00 00 ff ff tail
    expect(bomb.length).toBeLessThan(64 * 1024);
    const { sut, disconnects } = await start('ws', { wsServer: { perMessageDeflate: true } });
    const good = await client(sut);
    const evil = await raw(sut, 'Sec-WebSocket-Extensions: permessage-deflate\r\n');
    expect(evil.head.toLowerCase()).toContain('sec-websocket-extensions: permessage-deflate');
    const [socket] = [...(sut.wss?.clients ?? [])].filter((ws) => (ws as unknown as { _extensions: Record<string, unknown> })._extensions['permessage-deflate']);
    const deflate = (socket as unknown as { _extensions: Record<string, { _options: { concurrencyLimit?: number } }> })._extensions['permessage-deflate'];
    expect(deflate?._options.concurrencyLimit ?? 10).toBeLessThanOrEqual(10);
    const watch = await rssWatch();
    evil.socket.write(frame(TEXT, bomb, { rsv1: true }));
    expect(await evil.closeCode).toBe(1009);
    const rss = await watch.stop();
    await expect.poll(() => disconnects).toEqual([1009]);
    console.info(`[B9 ws deflate] bomb ${bomb.length} B on the wire for 60 MiB; RSS peak growth ${(rss.peakGrowth / MB).toFixed(2)} MB (gc: ${gc.how})`);
    expect(rss.peakGrowth).toBeLessThanOrEqual(2 * 64 * 1024 + 10 * MB);
    await othersServed(sut, good);
  });
});

