import { BcastError, ErrorCode } from '@bcast/core';
import { ConnectionBase, type CorkableStream, type EncodedMessage, type WriteCoalescer } from '@bcast/core/adapter';
import type { WebSocket } from 'ws';

/**
 * Frame-once fan-out: a broadcast's WebSocket frame is built once (ws's own `Sender.frame`) and the
 * same bytes go to every socket. ws has no public API for it, so a few of its internals are read,
 * checked on every connection and send; anything unexpected goes through `ws.send` (docs/decisions.md, 12).
 */

type FrameFn = (data: Buffer, options: { fin: boolean; mask: boolean; opcode: number; readOnly: boolean; rsv1: boolean }) => Buffer[];
type TransportSocket = CorkableStream & { readonly writable?: boolean; readonly writableEnded?: boolean };
/** The ws internals read here (see above). */
interface SenderInternals {
  readonly constructor: { readonly frame?: unknown };
  readonly _socket?: Partial<TransportSocket>;
  readonly _state?: unknown;
  readonly _bufferedBytes?: unknown;
  readonly _firstFragment?: unknown;
}
type WsInternals = { readonly _sender?: SenderInternals | null; readonly _extensions?: Record<string, unknown> };
/** What never changes for an open socket: its Sender, its TCP socket and ws's `Sender.frame`. */
type Wire = { readonly sender: SenderInternals; readonly socket: TransportSocket; readonly frame: FrameFn };

const OPEN = 1;
/** ws's Sender state when no deflate or blob read is in progress. */
const SENDER_IDLE = 0;

/**
 * The fixed parts of the frame-once path for an open socket, or null when it cannot take
 * pre-built frames at all: permessage-deflate negotiated, or ws internals of another shape.
 */
function wireOf(ws: WebSocket): Wire | null {
  const internals = ws as unknown as WsInternals;
  const sender = internals._sender;
  if (!sender || internals._extensions?.['permessage-deflate'] !== undefined) return null;
  const frame = sender.constructor.frame;
  const socket = sender._socket as TransportSocket | undefined;
  if (typeof frame !== 'function' || typeof socket?.write !== 'function' || typeof socket.cork !== 'function') return null;
  if (typeof sender._state !== 'number' || typeof sender._bufferedBytes !== 'number') return null;
  return { sender, socket, frame: frame as FrameFn };
}

/** Whether ws's Sender has nothing in flight: no deflate or blob read, nothing queued, no open fragment. */
function senderIdle(sender: SenderInternals): boolean {
  return sender._state === SENDER_IDLE && sender._bufferedBytes === 0 && sender._firstFragment === true;
}

/**
 * ws's static `Sender.frame`, when this socket can take a pre-built frame right now: the internals
 * have the expected shape, no permessage-deflate, and the Sender has nothing in flight.
 * The function doubles as the `EncodedMessage.prepare` key, so each ws copy gets its own frame.
 */
export function frameFunction(ws: WebSocket): FrameFn | undefined {
  const wire = wireOf(ws);
  return wire !== null && senderIdle(wire.sender) ? wire.frame : undefined;
}

/** One unmasked, final, uncompressed frame carrying the whole message, as a single Buffer. */
export function buildFrame(message: EncodedMessage, frame: FrameFn): Buffer {
  const parts = frame(message.bytes, { fin: true, mask: false, opcode: message.binary ? 2 : 1, readOnly: true, rsv1: false });
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
}

const notOpen = (ws: WebSocket): BcastError => new BcastError(ErrorCode.ConnectionClosed, `WebSocket is not open (readyState ${ws.readyState})`);
const transportClosed = (): BcastError => new BcastError(ErrorCode.ConnectionClosed, 'WebSocket transport is closed');

/** The Connection port over one ws socket; see `wsConnection`. */
export class WsConnection extends ConnectionBase {
  /** Looked up on the first send (undefined until then); null: this socket always uses ws.send. */
  #wire: Wire | null | undefined = undefined;

  constructor(
    readonly ws: WebSocket,
    readonly id: string,
    readonly userId: string | undefined,
    readonly data: unknown,
    /** Holds the writes of a burst of broadcasts until the end of the tick; undefined: one write per message. */
    readonly coalescer: WriteCoalescer | undefined,
  ) {
    super();
  }

  get isOpen(): boolean {
    return this.ws.readyState === OPEN;
  }
  get bufferedBytes(): number {
    return this.ws.bufferedAmount;
  }

  /**
   * Writes one message: the frame built once per broadcast when possible, else `ws.send`. With a
   * coalescer, the frames of a burst of broadcasts leave the socket in one syscall at the end of
   * the tick (the first broadcast of a tick is written at once). Throws BCAST_CONNECTION_CLOSED when the
   * socket is not open (ws itself would drop the message silently). Allocates nothing per
   * recipient on the fast path, and touches only the ws, its Sender and its TCP socket's state.
   */
  send(message: EncodedMessage): void {
    const ws = this.ws;
    if (ws.readyState !== OPEN) throw notOpen(ws);
    const wire = this.#wire === undefined ? (this.#wire = wireOf(ws)) : this.#wire;
    if (wire === null) {
      const socket = (ws as unknown as WsInternals)._sender?._socket;
      if (socket?.destroyed === true || socket?.writableEnded === true) throw transportClosed();
      return ws.send(message.bytes, { binary: message.binary });
    }
    const socket = wire.socket;
    if (socket.writable !== true) throw transportClosed();
    if (!senderIdle(wire.sender)) return ws.send(message.bytes, { binary: message.binary });
    const frame = message.prepare(wire.frame, buildFrame);
    const coalescer = this.coalescer;
    if (coalescer?.holding === true) coalescer.write(socket, frame);
    else socket.write(frame);
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
