// A lean WebSocket client for the client-load process: a plain `net` socket, the RFC 6455
// handshake, and a frame parser that hands each message's bytes to a callback without copying,
// decoding or emitting per-message events. It speaks plain WebSocket (the ws variants) and
// engine.io v4 over WebSocket (the socket.io variants: open, connect to "/", ping/pong).
//
// Why: with `ws` and `socket.io-client` as clients, the client process spends as much CPU per
// delivery as the server (socket.io-client parses every packet as JSON: ~40 µs at 4 KiB). On a
// 2-core machine the clients then cap deliveries/s and hide the servers' differences. This
// client costs a few µs per delivery, mostly the kernel's read, so the servers are the limit.
// It is a load generator, not a conforming client: it rejects what the servers never send here
// (masked or fragmented frames) instead of handling it.
import { createHash, randomBytes } from 'node:crypto';
import { connect } from 'node:net';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const OP_TEXT = 1;
const OP_BINARY = 2;
const OP_CLOSE = 8;
const OP_PING = 9;

/**
 * Incremental parser of server-to-client frames (never masked). Calls
 * `onMessage(buffer, start, end)` for each text or binary message and `onControl(opcode, payload)`
 * for close, ping and pong frames. A frame split across chunks is reassembled; whole frames are
 * read in place from the chunk.
 */
export class FrameParser {
  /**
   * @param {(buffer: Buffer, start: number, end: number) => void} onMessage
   * @param {(opcode: number, payload: Buffer) => void} onControl
   */
  constructor(onMessage, onControl) {
    this.onMessage = onMessage;
    this.onControl = onControl;
    /** @type {Buffer | null} */
    this.pending = null;
  }

  /** @param {Buffer} chunk */
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
      if (b1 & 0x80) throw new Error('protocol error: the server sent a masked frame');
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
      if (opcode === OP_TEXT || opcode === OP_BINARY) {
        if ((b0 & 0x80) === 0) throw new Error('unsupported: the server sent a fragmented message');
        this.onMessage(buf, off + header, end);
      } else if (opcode >= OP_CLOSE) {
        this.onControl(opcode, buf.subarray(off + header, end));
      } else {
        throw new Error(`unsupported: frame opcode ${opcode}`);
      }
      off = end;
    }
    if (off < size) this.pending = buf.subarray(off);
  }
}

/** A masked client frame (control or short text), as RFC 6455 requires of clients. */
export function clientFrame(opcode, payload) {
  if (payload.length > 125) throw new Error('clientFrame: payloads up to 125 bytes only');
  const out = Buffer.allocUnsafe(6 + payload.length);
  out[0] = 0x80 | opcode;
  out[1] = 0x80 | payload.length;
  randomBytes(4).copy(out, 2);
  for (let i = 0; i < payload.length; i++) out[6 + i] = payload[i] ^ out[2 + (i & 3)];
  return out;
}

const CRLF2 = Buffer.from('\r\n\r\n');
const ENGINE_CONNECT = Buffer.from('40'); // engine.io message (4) + socket.io CONNECT (0) to "/"
const ENGINE_PONG = Buffer.from('3');

/**
 * Opens one connection and resolves once it can receive broadcasts: after the 101 for plain
 * WebSocket, after socket.io's CONNECT acknowledgement for engine.io.
 * @param {{ port: number, transport: 'ws' | 'socketio', localAddress?: string, timeoutMs: number,
 *   onMessage: (buffer: Buffer, start: number, end: number) => void, onClose: () => void }} options
 */
export function openLean({ port, transport, localAddress, timeoutMs, onMessage, onClose }) {
  const engine = transport === 'socketio';
  const path = engine ? '/socket.io/?EIO=4&transport=websocket' : '/';
  const key = randomBytes(16).toString('base64');
  const accept = createHash('sha1').update(key + GUID).digest('base64');
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ...(localAddress ? { localAddress } : {}), noDelay: true });
    let open = false;
    let closed = false;
    let head = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error(`handshake timed out after ${timeoutMs} ms`)), timeoutMs);
    const fail = (error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    };
    const ready = () => {
      open = true;
      clearTimeout(timer);
      resolve(socket);
    };
    const send = (opcode, payload) => {
      if (!socket.destroyed) socket.write(clientFrame(opcode, payload));
    };
    const onControl = (opcode, payload) => {
      if (opcode === OP_PING) send(OP_PING + 1, payload);
      else if (opcode === OP_CLOSE && !closed) {
        closed = true;
        send(OP_CLOSE, payload.subarray(0, 2));
        socket.end();
      }
    };
    // engine.io: "0{...}" open -> send "40"; "40{...}" connected; "2" ping -> "3"; "4..." data.
    const onEngine = (buffer, start, end) => {
      const type = buffer[start];
      if (type === 0x34 /* 4 */) {
        if (open) onMessage(buffer, start, end);
        else if (buffer[start + 1] === 0x30 /* 0: CONNECT ack */) ready();
        else if (buffer[start + 1] === 0x34 /* 4: CONNECT_ERROR */) fail(new Error(`socket.io refused: ${buffer.toString('utf8', start, end)}`));
      } else if (type === 0x32 /* 2: ping */) send(OP_TEXT, ENGINE_PONG);
      else if (type === 0x30 /* 0: open */) send(OP_TEXT, ENGINE_CONNECT);
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
      if (!/^HTTP\/1\.1 101 /.test(response)) return fail(new Error(`upgrade refused: ${response.split('\r\n')[0]}`));
      const got = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(response)?.[1];
      if (got !== accept) return fail(new Error('upgrade: wrong Sec-WebSocket-Accept'));
      socket.off('data', onHandshake);
      socket.on('data', onData);
      if (!engine) ready();
      if (head.length > at + 4) onData(head.subarray(at + 4));
      head = Buffer.alloc(0);
    };
    socket.on('connect', () => {
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    socket.on('data', onHandshake);
    socket.on('error', (error) => {
      if (!open) fail(error);
    });
    socket.on('close', () => {
      if (open) onClose();
      else fail(new Error('connection closed during the handshake'));
    });
  });
}
