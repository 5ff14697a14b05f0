import { once } from 'node:events';
import { connect, type Socket } from 'node:net';

/**
 * A raw TCP client that speaks (broken) WebSocket: it sends the upgrade request itself and builds
 * its own frames, so it can send what no WebSocket library would. Works against bcast's ws server
 * (ws, express) and engine.io's (socket.io: path /socket.io/?EIO=4&transport=websocket).
 */

export interface RawClient {
  readonly socket: Socket;
  /** The HTTP response head (status line and headers). */
  readonly head: string;
  /** The status code of the HTTP response. */
  readonly status: number;
  /** Resolves when the TCP connection is gone. */
  readonly ended: Promise<void>;
  /** Resolves with the code of the first close frame the server sent (1005 without a code, 1006 when none came), once the TCP connection is gone. */
  readonly closeCode: Promise<number>;
  /** Server frames received so far (opcode, payload), in order. */
  readonly frames: Array<{ opcode: number; payload: Buffer }>;
  /** Resolves when a frame with this opcode arrives. */
  frame(opcode: number, timeoutMs?: number): Promise<Buffer>;
  /** Bytes received after the head, so far. */
  readonly bytesAfterHead: () => number;
}

export interface RawOptions {
  /** Request path. @default the URL's path and query */
  path?: string;
  /** Extra header lines, each ending in \r\n. */
  extraHeaders?: string;
  localAddress?: string;
  /** Stop reading once the head arrived (the kernel buffers fill up). */
  pauseAfterHead?: boolean;
}

export const TEXT = 0x1;
export const BINARY = 0x2;
export const CLOSE = 0x8;
export const PING = 0x9;
export const PONG = 0xa;

export async function rawUpgrade(url: string, options: RawOptions = {}): Promise<RawClient> {
  const { hostname, port, pathname, search } = new URL(url);
  const socket = connect({ host: hostname, port: Number(port), ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
  socket.setNoDelay(true);
  socket.on('error', () => {});
  await once(socket, 'connect');
  const path = options.path ?? `${pathname}${search}`;
  socket.write(
    `GET ${path} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${options.extraHeaders ?? ''}\r\n`,
  );
  let buffer: Buffer = Buffer.alloc(0);
  let head = '';
  let after = 0;
  const frames: Array<{ opcode: number; payload: Buffer }> = [];
  const waiters = new Set<() => void>();
  const parseFrames = (): void => {
    for (;;) {
      if (buffer.length < 2) return;
      const opcode = (buffer[0] as number) & 0x0f;
      let len = (buffer[1] as number) & 0x7f;
      let at = 2;
      if (len === 126) {
        if (buffer.length < 4) return;
        len = buffer.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (buffer.length < 10) return;
        len = Number(buffer.readBigUInt64BE(2));
        at = 10;
      }
      if (buffer.length < at + len) return;
      frames.push({ opcode, payload: Buffer.from(buffer.subarray(at, at + len)) });
      buffer = buffer.subarray(at + len);
      for (const w of [...waiters]) w();
    }
  };
  const headDone = new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      if (head) {
        after += chunk.length;
        buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
        parseFrames();
        return;
      }
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf('\r\n\r\n');
      if (end === -1) return;
      head = buffer.subarray(0, end).toString();
      buffer = buffer.subarray(end + 4);
      after += buffer.length;
      if (options.pauseAfterHead) socket.pause();
      parseFrames();
      resolve();
    });
    socket.once('close', () => reject(new Error(`connection closed before an HTTP answer${head ? '' : ''}`)));
  });
  const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await headDone;
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
  const closeCode = ended.then(() => {
    const close = frames.find((f) => f.opcode === CLOSE);
    if (!close) return 1006;
    return close.payload.length >= 2 ? close.payload.readUInt16BE(0) : 1005;
  });
  return {
    socket,
    head,
    status,
    ended,
    closeCode,
    frames,
    bytesAfterHead: () => after,
    frame(opcode, timeoutMs = 5_000) {
      return new Promise((resolve, reject) => {
        let seen = 0;
        const check = (): void => {
          for (; seen < frames.length; seen++) {
            const f = frames[seen]!;
            if (f.opcode === opcode) return finish(() => resolve(f.payload));
          }
        };
        const timer = setTimeout(() => finish(() => reject(new Error(`no frame with opcode ${opcode} within ${timeoutMs} ms`))), timeoutMs);
        const finish = (fn: () => void): void => {
          clearTimeout(timer);
          waiters.delete(check);
          fn();
        };
        waiters.add(check);
        check();
      });
    },
  };
}

const MASK = Buffer.from([0x37, 0xfa, 0x21, 0x3d]);

/** A client frame; masked unless told otherwise. `declaredLength` lies about the payload size (only the header is built). */
export function frame(opcode: number, payload: Buffer, o: { mask?: boolean; fin?: boolean; rsv1?: boolean; declaredLength?: bigint } = {}): Buffer {
  const mask = o.mask ?? true;
  const first = ((o.fin ?? true) ? 0x80 : 0) | (o.rsv1 ? 0x40 : 0) | opcode;
  const length = o.declaredLength ?? BigInt(payload.length);
  let header: Buffer;
  if (length < 126n) {
    header = Buffer.alloc(2);
    header[1] = Number(length);
  } else if (length < 65_536n) {
    header = Buffer.alloc(4);
    header[1] = 126;
    header.writeUInt16BE(Number(length), 2);
  } else {
    header = Buffer.alloc(10);
    header[1] = 127;
    header.writeBigUInt64BE(length, 2);
  }
  header[0] = first;
  if (!mask) return Buffer.concat([header, payload]);
  header[1] = (header[1] as number) | 0x80;
  return Buffer.concat([header, MASK, maskPayload(payload)]);
}

/** XORs a payload with the fixed client mask (so a masked payload can be built once and reused). */
export function maskPayload(payload: Buffer, offset = 0): Buffer {
  const out = Buffer.allocUnsafe(payload.length);
  for (let i = 0; i < payload.length; i++) out[i] = (payload[i] as number) ^ (MASK[(i + offset) % 4] as number);
  return out;
}

/** The header of a masked frame of `length` bytes, without the payload. */
export function maskedHeader(opcode: number, length: bigint, o: { fin?: boolean; rsv1?: boolean } = {}): Buffer {
  const f = frame(opcode, Buffer.alloc(0), { ...o, declaredLength: length });
  return f;
}

/**
 * A raw HTTP request on a fresh TCP connection; resolves with the status (0 when the connection
 * closed without one), the head, the body (as far as Content-Length says) and the time it took.
 */
export async function rawRequest(port: number, request: string | Buffer, timeoutMs = 10_000): Promise<{ status: number; head: string; body: string; ms: number }> {
  const started = performance.now();
  const socket = connect({ host: '127.0.0.1', port });
  socket.on('error', () => {});
  await once(socket, 'connect');
  socket.write(request);
  let text = '';
  return new Promise((resolve) => {
    let settled = false;
    const done = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const end = text.indexOf('\r\n\r\n');
      const head = end === -1 ? text : text.slice(0, end);
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), head, body: end === -1 ? '' : text.slice(end + 4), ms: performance.now() - started });
    };
    const timer = setTimeout(done, timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = text.slice(0, end);
      if (/^HTTP\/1\.1 101/.test(head)) return done();
      const length = /content-length: *(\d+)/i.exec(head)?.[1];
      if (length !== undefined && text.length - end - 4 >= Number(length)) done();
    });
    socket.once('close', done);
  });
}
