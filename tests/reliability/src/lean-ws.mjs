// A lean WebSocket client for the load and fault tests (the approach of bench/src/lean-client.mjs:
// a plain `net` socket, the RFC 6455 handshake, an in-place frame parser, no per-message events),
// plus what the reliability cases need: a request path, the close code the server sent (1006 when
// the TCP connection ended without a close frame), the HTTP status of a refused upgrade, pausing
// (a client that stops reading), a read budget (a client that reads at a fixed rate) and client
// frames of any size. Speaks plain WebSocket and engine.io v4 / socket.io over WebSocket.
import { createHash, randomBytes } from 'node:crypto';
import { connect } from 'node:net';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
export const OP_TEXT = 1;
export const OP_CLOSE = 8;
export const OP_PING = 9;
export const OP_PONG = 10;

/** One clock for every process of this machine (CLOCK_MONOTONIC, in ms): server timestamps are subtracted from client ones. */
const origin = Number(process.hrtime.bigint()) / 1e6 - performance.now();
export const clock = () => origin + performance.now();

/** A masked client frame, as RFC 6455 requires of clients. */
export function clientFrame(opcode, payload) {
  const len = payload.length;
  const header = len < 126 ? 2 : len < 65_536 ? 4 : 10;
  const out = Buffer.allocUnsafe(header + 4 + len);
  out[0] = 0x80 | opcode;
  if (header === 2) out[1] = 0x80 | len;
  else if (header === 4) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(len, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeUInt32BE(0, 2);
    out.writeUInt32BE(len, 6);
  }
  const mask = randomBytes(4);
  mask.copy(out, header);
  for (let i = 0; i < len; i++) out[header + 4 + i] = payload[i] ^ mask[i & 3];
  return out;
}

/**
 * Incremental parser of server frames (never masked): `onMessage(buffer, start, end)` for each
 * text or binary message, `onControl(opcode, payload)` for close, ping and pong.
 */
export class FrameParser {
  constructor(onMessage, onControl) {
    this.onMessage = onMessage;
    this.onControl = onControl;
    this.pending = null;
  }

  push(chunk) {
    let buf = chunk;
    if (this.pending !== null) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = null;
    }
    let off = 0;
    const size = buf.length;
    while (size - off >= 2) {
      const b0 = buf[off];
      const b1 = buf[off + 1];
      if (b1 & 0x80) throw new Error('protocol error: masked server frame');
      let len = b1 & 0x7f;
      let header = 2;
      if (len === 126) {
        if (size - off < 4) break;
        len = buf.readUInt16BE(off + 2);
        header = 4;
      } else if (len === 127) {
        if (size - off < 10) break;
        len = buf.readUInt32BE(off + 2) * 2 ** 32 + buf.readUInt32BE(off + 6);
        header = 10;
      }
      const end = off + header + len;
      if (end > size) break;
      const opcode = b0 & 0x0f;
      if (opcode === 1 || opcode === 2) {
        if ((b0 & 0x80) === 0) throw new Error('unsupported: fragmented server message');
        this.onMessage(buf, off + header, end);
      } else if (opcode >= OP_CLOSE) this.onControl(opcode, buf.subarray(off + header, end));
      else throw new Error(`unsupported: opcode ${opcode}`);
      off = end;
    }
    if (off < size) this.pending = buf.subarray(off);
  }
}

const CRLF2 = Buffer.from('\r\n\r\n');
const ENGINE_CONNECT = Buffer.from('40');
const ENGINE_PONG = Buffer.from('3');

/** An upgrade the server refused: `status` is its HTTP status (503, 401...), 0 when the connection failed. */
export class UpgradeError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * Opens one connection; resolves with a client once it can receive broadcasts (after the 101, or
 * after socket.io's CONNECT acknowledgement). `onClose({ code, reason, closeFrame })` is called
 * once: `code` is the code of the server's close frame, or 1006 without one.
 *
 * @param {{ port: number, host?: string, path?: string, transport?: 'ws' | 'socketio', localAddress?: string, timeoutMs?: number,
 *   onMessage?: (buffer: Buffer, start: number, end: number) => void, onClose?: (info: { code: number, reason: string, closeFrame: boolean }) => void,
 *   pauseAfterOpen?: boolean }} o
 */
export function openWs(o) {
  const engine = o.transport === 'socketio';
  const path = o.path ?? (engine ? '/socket.io/?EIO=4&transport=websocket' : '/');
  const key = randomBytes(16).toString('base64');
  const accept = createHash('sha1').update(key + GUID).digest('base64');
  const onMessage = o.onMessage ?? (() => {});
  return new Promise((resolve, reject) => {
    const socket = connect({ host: o.host ?? '127.0.0.1', port: o.port, ...(o.localAddress ? { localAddress: o.localAddress } : {}), noDelay: true });
    let open = false;
    let settled = false;
    let head = Buffer.alloc(0);
    const client = {
      socket,
      closeInfo: undefined,
      closeFrameSent: false,
      /** Sends a text frame (JSON text for the bcast protocol; for socket.io, an event packet). */
      send(text) {
        if (socket.destroyed) return;
        const payload = engine ? `42${JSON.stringify(['message', text])}` : text;
        socket.write(clientFrame(OP_TEXT, Buffer.from(payload)));
      },
      /** Starts a clean close (ws), or a socket.io disconnect. */
      close(code = 1000) {
        if (socket.destroyed || client.closeFrameSent) return;
        client.closeFrameSent = true;
        if (engine) {
          socket.write(clientFrame(OP_TEXT, Buffer.from('41')));
          socket.end();
          return;
        }
        const payload = Buffer.alloc(2);
        payload.writeUInt16BE(code, 0);
        socket.write(clientFrame(OP_CLOSE, payload));
      },
      destroy() {
        socket.destroy();
      },
    };
    const timer = setTimeout(() => fail(new UpgradeError(`handshake timed out after ${o.timeoutMs ?? 30_000} ms`, 0, 'ETIMEDOUT')), o.timeoutMs ?? 30_000);
    const fail = (error) => {
      clearTimeout(timer);
      socket.destroy();
      if (!settled) {
        settled = true;
        reject(error);
      }
    };
    const ready = () => {
      open = true;
      clearTimeout(timer);
      settled = true;
      if (o.pauseAfterOpen) socket.pause();
      resolve(client);
    };
    const ctl = (opcode, payload) => {
      if (!socket.destroyed) socket.write(clientFrame(opcode, payload));
    };
    const onControl = (opcode, payload) => {
      if (opcode === OP_PING) ctl(OP_PONG, payload);
      else if (opcode === OP_CLOSE && client.closeInfo === undefined) {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        client.closeInfo = { code, reason: payload.toString('utf8', 2), closeFrame: true };
        if (!client.closeFrameSent) {
          client.closeFrameSent = true;
          ctl(OP_CLOSE, payload.subarray(0, 2));
        }
        socket.end();
      }
    };
    // engine.io: "0{...}" open -> "40"; "40{...}" connected; "2" ping -> "3"; "42[...]" event; "41" disconnect; "1" close.
    const onEngine = (buffer, start, end) => {
      const type = buffer[start];
      if (type === 0x34 /* 4 */) {
        const sub = buffer[start + 1];
        if (sub === 0x32 /* 2: EVENT */) {
          if (open) onMessage(buffer, start, end);
        } else if (sub === 0x30 /* 0: CONNECT ack */) {
          if (!open) ready();
        } else if (sub === 0x34 /* 4: CONNECT_ERROR */) {
          fail(new UpgradeError(`socket.io refused: ${buffer.toString('utf8', start, end)}`, 0, 'CONNECT_ERROR'));
        } else if (sub === 0x31 /* 1: DISCONNECT */ && client.closeInfo === undefined) {
          client.closeInfo = { code: 1001, reason: 'io server disconnect', closeFrame: true };
        }
      } else if (type === 0x32 /* 2: ping */) ctl(OP_TEXT, ENGINE_PONG);
      else if (type === 0x30 /* 0: open */) ctl(OP_TEXT, ENGINE_CONNECT);
      else if (type === 0x31 /* 1: close */ && client.closeInfo === undefined) client.closeInfo = { code: 1001, reason: 'engine close', closeFrame: true };
    };
    const parser = new FrameParser(engine ? onEngine : onMessage, onControl);
    const onData = (chunk) => {
      try {
        parser.push(chunk);
      } catch (error) {
        socket.destroy(error);
      }
    };
    const onHandshake = (chunk) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const at = head.indexOf(CRLF2);
      if (at < 0) return;
      const response = head.toString('latin1', 0, at);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(response)?.[1] ?? 0);
      if (status !== 101) return fail(new UpgradeError(`upgrade refused: ${response.split('\r\n')[0]}`, status, 'REFUSED'));
      const got = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(response)?.[1];
      if (got !== accept) return fail(new UpgradeError('upgrade: wrong Sec-WebSocket-Accept', status, 'BAD_ACCEPT'));
      socket.off('data', onHandshake);
      socket.on('data', onData);
      const rest = head.length > at + 4 ? head.subarray(at + 4) : undefined;
      head = Buffer.alloc(0);
      if (!engine) ready();
      if (rest) onData(rest);
    };
    socket.on('connect', () => {
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${o.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    socket.on('data', onHandshake);
    socket.on('error', (error) => {
      if (!open) fail(new UpgradeError(error.message, 0, error.code));
    });
    socket.on('close', () => {
      if (!open) return fail(new UpgradeError('connection closed during the handshake', 0, 'ECONNRESET'));
      client.closeInfo ??= { code: 1006, reason: '', closeFrame: false };
      o.onClose?.(client.closeInfo);
    });
  });
}

/**
 * Reads the header of a test message, `{"k":"<key>","s":<seq>,"t":<ms>,...` (ws), or the same
 * object inside a socket.io event packet `42["message",{...}]`, without decoding the rest. Fills
 * `out` and returns true, or false for anything else (a protocol reply).
 */
export function readHeader(buffer, start, end, out) {
  let i = buffer.indexOf(0x7b /* { */, start);
  if (i < 0 || i >= end) return false;
  // {"k":"
  if (buffer[i + 2] !== 0x6b /* k */ || buffer[i + 5] !== 0x22) return false;
  let j = i + 6;
  const keyStart = j;
  while (j < end && buffer[j] !== 0x22) j++;
  out.k = buffer.toString('latin1', keyStart, j);
  // ","s":
  j += 6;
  let s = 0;
  while (j < end && buffer[j] >= 0x30 && buffer[j] <= 0x39) s = s * 10 + (buffer[j++] - 0x30);
  out.s = s;
  // ,"t":
  j += 5;
  let t = 0;
  while (j < end && buffer[j] >= 0x30 && buffer[j] <= 0x39) t = t * 10 + (buffer[j++] - 0x30);
  if (buffer[j] === 0x2e /* . */) {
    j++;
    let scale = 0.1;
    while (j < end && buffer[j] >= 0x30 && buffer[j] <= 0x39) {
      t += (buffer[j++] - 0x30) * scale;
      scale /= 10;
    }
  }
  out.t = t;
  i = j;
  return true;
}

/** Latency histogram with 1 ms buckets up to 120 s. */
export class MsHistogram {
  constructor() {
    this.counts = new Uint32Array(120_001);
    this.count = 0;
    this.max = 0;
  }

  record(ms) {
    const v = ms < 0 ? 0 : Math.min(120_000, Math.floor(ms));
    this.counts[v] += 1;
    this.count += 1;
    if (ms > this.max) this.max = ms;
  }

  sparse() {
    const pairs = [];
    for (let i = 0; i < this.counts.length; i++) if (this.counts[i] > 0) pairs.push([i, this.counts[i]]);
    return { pairs, max: this.max };
  }

  static quantile(sparse, q) {
    let total = 0;
    for (const [, c] of sparse.pairs) total += c;
    if (total === 0) return NaN;
    const rank = Math.max(1, Math.ceil(q * total));
    let seen = 0;
    for (const [i, c] of sparse.pairs) {
      seen += c;
      if (seen >= rank) return i + 1; // upper bound of the bucket
    }
    return sparse.max;
  }

  static merge(list) {
    const map = new Map();
    let max = 0;
    for (const s of list) {
      for (const [i, c] of s.pairs) map.set(i, (map.get(i) ?? 0) + c);
      max = Math.max(max, s.max);
    }
    return { pairs: [...map.entries()].sort((a, b) => a[0] - b[0]), max };
  }
}
