import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { openClient, startWs, type Harness } from './helpers.js';
import { guardProcess } from '../../../tests/support/processGuard.js';

guardProcess();

// RELIABILITY.md B5-B7 and B9 on a real server with recommendedServerOptions: a raw TCP client
// speaks broken WebSocket; the server answers with the right close code, unregisters that
// connection, and keeps serving everybody else.

let harness: Harness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

interface RawClient {
  readonly socket: Socket;
  readonly handshake: string;
  /** Resolves with the close code of the server's close frame (or 1006 when none came). */
  readonly closeCode: Promise<number>;
}

async function rawClient(url: string, extraHeaders = ''): Promise<RawClient> {
  const { hostname, port } = new URL(url);
  const socket = connect({ host: hostname, port: Number(port) });
  await once(socket, 'connect');
  socket.write(
    `GET / HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extraHeaders}\r\n`,
  );
  let buffer = Buffer.alloc(0);
  let handshake = '';
  const headDone = new Promise<void>((resolve) => {
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (!handshake) {
        const end = buffer.indexOf('\r\n\r\n');
        if (end === -1) return;
        handshake = buffer.subarray(0, end).toString();
        buffer = buffer.subarray(end + 4);
        resolve();
      }
    });
  });
  const closeCode = new Promise<number>((resolve) => {
    socket.once('close', () => {
      // Server frames are unmasked; find the first close frame (opcode 8).
      let offset = 0;
      while (offset + 2 <= buffer.length) {
        const opcode = (buffer[offset] as number) & 0x0f;
        let len = (buffer[offset + 1] as number) & 0x7f;
        let head = 2;
        if (len === 126) {
          len = buffer.readUInt16BE(offset + 2);
          head = 4;
        } else if (len === 127) {
          len = Number(buffer.readBigUInt64BE(offset + 2));
          head = 10;
        }
        if (opcode === 8) return resolve(len >= 2 ? buffer.readUInt16BE(offset + head) : 1005);
        offset += head + len;
      }
      resolve(1006);
    });
  });
  socket.on('error', () => {});
  await headDone;
  return { socket, handshake, closeCode };
}

/** A client frame; masked unless told otherwise. `declaredLength` lies about the payload size. */
function frame(opcode: number, payload: Buffer, o: { mask?: boolean; fin?: boolean; rsv1?: boolean; declaredLength?: bigint } = {}): Buffer {
  const mask = o.mask ?? true;
  const first = ((o.fin ?? true) ? 0x80 : 0) | (o.rsv1 ? 0x40 : 0) | opcode;
  let header: Buffer;
  if (o.declaredLength !== undefined) {
    header = Buffer.alloc(10);
    header[1] = 127;
    header.writeBigUInt64BE(o.declaredLength, 2);
  } else if (payload.length < 126) {
    header = Buffer.alloc(2);
    header[1] = payload.length;
  } else {
    header = Buffer.alloc(4);
    header[1] = 126;
    header.writeUInt16BE(payload.length, 2);
  }
  header[0] = first;
  if (!mask) return Buffer.concat([header, payload]);
  header[1] = (header[1] as number) | 0x80;
  const key = Buffer.from([1, 2, 3, 4]);
  const masked = Buffer.from(payload.map((b, i) => b ^ (key[i % 4] as number)));
  return Buffer.concat([header, key, masked]);
}

const TEXT = 1;
const cases: Array<[string, Buffer, number]> = [
  ['invalid UTF-8 (C0 AF)', frame(TEXT, Buffer.from([0xc0, 0xaf])), 1007],
  ['a UTF-16 surrogate (ED A0 80)', frame(TEXT, Buffer.from([0xed, 0xa0, 0x80])), 1007],
  ['a truncated sequence (E2 82)', frame(TEXT, Buffer.from([0xe2, 0x82])), 1007],
  ['an unmasked client frame', frame(TEXT, Buffer.from('hi'), { mask: false }), 1002],
  ['RSV1 without an extension', frame(TEXT, Buffer.from('hi'), { rsv1: true }), 1002],
  ['reserved opcode 0x3', frame(0x3, Buffer.from('hi')), 1002],
  ['a 126-byte ping', frame(0x9, Buffer.alloc(126)), 1002],
  ['a fragmented close', frame(0x8, Buffer.from([0x03, 0xe8]), { fin: false }), 1002],
  ['a continuation with nothing to continue', frame(0x0, Buffer.from('hi')), 1002],
  ['a declared length of 2^63 - 1', frame(TEXT, Buffer.alloc(0), { declaredLength: 2n ** 63n - 1n }), 1009],
  ['a 16 MiB frame header (Autobahn 9.1.6 size)', frame(TEXT, Buffer.alloc(0), { declaredLength: 16n * 1024n * 1024n }), 1009],
];

describe('protocol abuse (recommendedServerOptions)', () => {
  it.each(cases)('%s closes that client with the right code and nobody else notices', async (_name, bad, code) => {
    const disconnects: number[] = [];
    let unregistered!: () => void;
    const gone = new Promise<void>((resolve) => (unregistered = resolve));
    harness = await startWs({ broadcaster: { onDisconnect: (_entry, closeCode) => void (disconnects.push(closeCode), unregistered()) } });
    const good = await openClient(harness.url);
    const evil = await rawClient(harness.url);
    expect(evil.handshake).toMatch(/^HTTP\/1\.1 101/);
    expect(harness.broadcaster.connections.size).toBe(2);
    evil.socket.write(bad);
    expect(await evil.closeCode).toBe(code);
    await gone;
    expect(harness.broadcaster.connections.size).toBe(1);
    // onDisconnect (and the disconnect metric) hear the code the server closed with, not 1006
    expect(disconnects).toEqual([code]);
    expect(harness.broadcaster.getStats().monitor.disconnects).toEqual({ [`${code}:protocol_error`]: 1 });
    const result = await harness.broadcaster.toAll({ after: 'abuse' });
    expect(result).toMatchObject({ recipients: 1, delivered: 1 });
    expect(await good.waitFor(1)).toEqual(['{"after":"abuse"}']);
  });

  it('valid UTF-8 split inside a code point across fragments is accepted: the message arrives whole', async () => {
    let received!: (message: unknown) => void;
    const arrived = new Promise<unknown>((resolve) => (received = resolve));
    harness = await startWs({ broadcaster: { onMessage: (_connection, message) => received(message) } });
    const evil = await rawClient(harness.url);
    const euro = Buffer.from('{"t":"€"}');
    const cut = euro.indexOf(0xe2) + 1;
    evil.socket.write(Buffer.concat([frame(TEXT, euro.subarray(0, cut), { fin: false }), frame(0x0, euro.subarray(cut))]));
    expect(await arrived).toEqual({ t: '€' });
    evil.socket.write(frame(0x9, Buffer.from('p')));
    // the server answers the ping: the connection is still open after the split text
    await new Promise<void>((resolve) => evil.socket.on('data', (d: Buffer) => ((d[0] as number) & 0x0f) === 0xa && resolve()));
    expect(harness.broadcaster.connections.size).toBe(1);
    evil.socket.destroy();
  });

  it('does not negotiate permessage-deflate, and RSV1 frames from a client that offered it get 1002', async () => {
    harness = await startWs();
    const evil = await rawClient(harness.url, 'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n');
    expect(evil.handshake).toMatch(/^HTTP\/1\.1 101/);
    expect(evil.handshake.toLowerCase()).not.toContain('sec-websocket-extensions');
    evil.socket.write(frame(TEXT, Buffer.from([0x4b, 0x04, 0x00]), { rsv1: true }));
    expect(await evil.closeCode).toBe(1002);
  });
});
