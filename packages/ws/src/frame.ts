import { BcastError, ErrorCode, corkForTick, releaseIfFull, type Connection, type CorkableStream, type EncodedMessage } from '@bcast/core';
import type { WebSocket } from 'ws';

/**
 * Frame-once fan-out: the WebSocket frame of a broadcast is built once (with ws's own
 * `Sender.frame`) and the same bytes are written to every socket, instead of `ws.send` framing the
 * payload again for each recipient. socket.io/engine.io do the same (ws issue #617).
 *
 * ws has no public API for this, so these helpers read a few of its internals, checked on every
 * call: `ws._sender` (a Sender whose class has the static `frame`), `_sender._socket`,
 * `_sender._state` (0 when idle), `_sender._queue` and `_sender._firstFragment`. They have this
 * shape in every ws release from 8.18.0 on; when anything differs, or the socket negotiated
 * permessage-deflate, or ws has queued work, the message goes through `ws.send` as usual.
 */

interface FrameOptions {
  fin: boolean;
  mask: boolean;
  opcode: number;
  readOnly: boolean;
  rsv1: boolean;
}

type FrameFn = (data: Buffer, options: FrameOptions) => Buffer[];

interface TransportSocket {
  readonly destroyed?: boolean;
  readonly writableEnded?: boolean;
  write?: unknown;
}

interface SenderInternals {
  readonly constructor: { readonly frame?: unknown };
  readonly _socket?: TransportSocket;
  readonly _state?: unknown;
  readonly _queue?: unknown;
  readonly _firstFragment?: unknown;
}

interface WsInternals {
  readonly _sender?: SenderInternals | null;
  readonly _extensions?: Record<string, unknown>;
}

const OPEN = 1;
/** ws's Sender state when no deflate or blob read is in progress. */
const SENDER_IDLE = 0;

/**
 * ws's static `Sender.frame`, when this socket can take a pre-built frame right now: the internals
 * have the expected shape, no permessage-deflate, and the Sender has nothing in flight.
 * The function doubles as the `EncodedMessage.prepare` key, so each ws copy gets its own frame.
 */
export function frameFunction(ws: WebSocket): FrameFn | undefined {
  const internals = ws as unknown as WsInternals;
  const sender = internals._sender;
  if (!sender || internals._extensions?.['permessage-deflate'] !== undefined) return undefined;
  const frame = sender.constructor.frame;
  if (typeof frame !== 'function' || typeof sender._socket?.write !== 'function') return undefined;
  if (sender._state !== SENDER_IDLE || !Array.isArray(sender._queue) || sender._queue.length > 0 || sender._firstFragment !== true) {
    return undefined;
  }
  return frame as FrameFn;
}

/** One unmasked, final, uncompressed frame carrying the whole message, as a single Buffer. */
export function buildFrame(message: EncodedMessage, frame: FrameFn): Buffer {
  const parts = frame(message.bytes, { fin: true, mask: false, opcode: message.binary ? 2 : 1, readOnly: true, rsv1: false });
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
}

/**
 * Writes one message: the frame built once per broadcast when possible, else `ws.send`. With
 * `coalesce`, the socket is corked until the end of the tick (core's `corkForTick`), so every
 * message the tick writes to it leaves in one syscall.
 * Throws BCAST_CONNECTION_CLOSED when the socket is not open (ws itself would drop it silently).
 * Allocates nothing per recipient on the fast path.
 */
export function sendMessage(ws: WebSocket, message: EncodedMessage, coalesce = true): void {
  if (ws.readyState !== OPEN) {
    throw new BcastError(ErrorCode.ConnectionClosed, `WebSocket is not open (readyState ${ws.readyState})`);
  }
  const socket = (ws as unknown as WsInternals)._sender?._socket;
  if (socket?.destroyed === true || socket?.writableEnded === true) {
    throw new BcastError(ErrorCode.ConnectionClosed, 'WebSocket transport is closed');
  }
  const frame = frameFunction(ws);
  if (frame !== undefined && socket !== undefined) {
    if (coalesce) corkForTick(socket as CorkableStream);
    (socket.write as (data: Buffer) => unknown).call(socket, message.prepare(frame, buildFrame));
    if (coalesce) releaseIfFull(socket as CorkableStream);
    return;
  }
  ws.send(message.bytes, { binary: message.binary });
}

/** The Connection port over one ws socket; see `wsConnection`. */
export class WsConnection implements Connection {
  constructor(
    readonly ws: WebSocket,
    readonly id: string,
    readonly userId: string | undefined,
    readonly data: unknown,
    readonly coalesce = true,
  ) {}

  get isOpen(): boolean {
    return this.ws.readyState === OPEN;
  }

  get bufferedBytes(): number {
    return this.ws.bufferedAmount;
  }

  send(message: EncodedMessage): void {
    sendMessage(this.ws, message, this.coalesce);
  }

  close(code: number, reason: string): void {
    this.ws.close(code, reason);
  }

  terminate(): void {
    this.ws.terminate();
  }

  ping(): void {
    this.ws.ping();
  }
}
