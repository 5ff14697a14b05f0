import { BcastError, ErrorCode } from '@bcast/core';
import { ConnectionBase, type CorkableStream, type EncodedMessage, type WriteCoalescer } from '@bcast/core/adapter';
import type { Namespace, Socket } from 'socket.io';

// The Connection port over a socket.io Socket, and the once-per-broadcast packet it writes.
type AnyNamespace = Namespace<any, any, any, any>;
type AnySocket = Socket<any, any, any, any>;

export interface SocketIoConnectionInit {
  /** @default socket.id */ id?: string;
  userId?: string | undefined;
  data?: unknown;
  /** Event broadcasts are emitted on. @default "message" */ event?: string;
  /** Holds the writes of a burst of broadcasts until the end of the tick; undefined: one write per message. */
  coalescer?: WriteCoalescer | undefined;
}

/** The ws WebSocket under engine.io's websocket transport, and the ws internals the direct write reads. */
interface EngineWs {
  readonly readyState?: number;
  bufferedAmount?: unknown;
  terminate?: () => void;
  readonly _sender?: { readonly _state?: unknown; readonly _queue?: unknown } | null;
  readonly _socket?: Partial<CorkableStream> & { readonly writableEnded?: boolean };
}

/** The engine.io / socket.io internals used here, all feature-checked (docs/decisions.md, 13). */
export interface EngineConn {
  readonly readyState: string;
  readonly writeBuffer?: ReadonlyArray<{ data?: unknown }>;
  readonly transport?: { readonly name?: string; readonly writable?: boolean; readonly perMessageDeflate?: unknown; socket?: EngineWs };
  close(discard?: boolean): void;
  once(event: 'close', listener: () => void): unknown;
}
export interface Internals {
  writeToEngine?: (packets: unknown[], opts: object) => void;
  _encode?: (packet: object, opts: object) => unknown[];
  notifyOutgoingListeners?: (packet: object) => void;
}
/** A broadcast's packet, encoded once; `frame`: its whole WebSocket frame, when engine.io's adapter pre-built one. */
type Prepared = { readonly packet: object; readonly packets: unknown[]; readonly opts: object; readonly frame: Buffer | undefined };

const RESERVED_EVENTS = new Set(['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener']);
const EVENT_PACKET = 2; // socket.io-parser PacketType.EVENT; the encoder turns it into BINARY_EVENT when needed

export function checkEvent(name: unknown, option: string): string {
  if (typeof name === 'string' && name.length > 0 && !RESERVED_EVENTS.has(name)) return name;
  throw new BcastError(ErrorCode.InvalidOption, `${option} must be a non-empty, non-reserved socket.io event name, got ${JSON.stringify(name)}`);
}

// One packet builder per (namespace, event). It is also the `prepare` key, so a broadcast encodes
// its packet once for all sockets of a namespace, the way socket.io's own adapter broadcasts.
const builders = new WeakMap<object, Map<string, (message: EncodedMessage) => Prepared>>();

function builderFor(nsp: AnyNamespace, event: string): (message: EncodedMessage) => Prepared {
  const byEvent = builders.get(nsp) ?? new Map<string, (message: EncodedMessage) => Prepared>();
  builders.set(nsp, byEvent);
  const build =
    byEvent.get(event) ??
    ((message: EncodedMessage): Prepared => {
      const packet = { type: EVENT_PACKET, nsp: nsp.name, data: [event, message.value] };
      const opts = { preEncoded: true };
      // The in-memory adapter's _encode also pre-builds the WebSocket frame (`wsPreEncodedFrame`).
      const adapter = nsp.adapter as unknown as Internals;
      const packets = typeof adapter._encode === 'function' ? adapter._encode(packet, opts) : nsp.server.encoder.encode(packet);
      const parts = (opts as { wsPreEncodedFrame?: unknown }).wsPreEncodedFrame;
      const frame = Array.isArray(parts) && parts.every((p) => Buffer.isBuffer(p)) ? Buffer.concat(parts as Buffer[]) : undefined;
      return { packet, packets, opts, frame };
    });
  byEvent.set(event, build);
  return build;
}

const sizeOf = (data: unknown): number => (typeof data === 'string' ? data.length : ArrayBuffer.isView(data) ? data.byteLength : 0);

const OPEN = 1;
const SENDER_IDLE = 0;

/**
 * The TCP socket under an engine.io connection when a broadcast frame can be written to it
 * directly: websocket transport, open, without compression, nothing queued in engine.io (its
 * write buffer empty and the transport writable), in ws's sender or in the socket (unless this
 * tick's own held writes). Writing there keeps the
 * order of everything engine.io wrote before, and lets the frames of one tick leave in one
 * syscall (the broadcaster's `WriteCoalescer`). Otherwise undefined: the packet goes through engine.io.
 */
function directStream(conn: EngineConn, coalescer: WriteCoalescer | undefined): CorkableStream | undefined {
  const transport = conn.transport;
  if (conn.readyState !== 'open' || transport?.name !== 'websocket' || transport.writable !== true || transport.perMessageDeflate) return undefined;
  if ((conn.writeBuffer?.length ?? 1) !== 0) return undefined;
  const ws = transport.socket;
  const sender = ws?._sender;
  const stream = ws?._socket;
  if (ws?.readyState !== OPEN || sender?._state !== SENDER_IDLE || !Array.isArray(sender._queue) || sender._queue.length !== 0) return undefined;
  if (stream === undefined || typeof stream.write !== 'function' || typeof stream.cork !== 'function' || typeof stream.uncork !== 'function') return undefined;
  if (typeof stream.destroy !== 'function' || stream.destroyed === true || stream.writableEnded === true) return undefined;
  // Bytes the kernel has not taken yet (a slow reader): let engine.io queue, as it always does.
  if ((stream.writableLength ?? 0) > 0 && coalescer?.isHeld(stream as CorkableStream) !== true) return undefined;
  return stream as CorkableStream;
}

export function terminateConn(conn: EngineConn): void {
  const ws = conn.transport?.socket;
  return typeof ws?.terminate === 'function' ? ws.terminate() : conn.close(true);
}

/** A class rather than an object literal with getters: one small object, fast property access. */
export class SocketIoConnection extends ConnectionBase {
  readonly id: string;
  readonly userId: string | undefined;
  readonly data: unknown;
  readonly #socket: AnySocket;
  readonly #conn: EngineConn;
  readonly #client: Internals;
  readonly #event: string;
  /** With connection state recovery, socket.emit stores packets for replay: keep that path. */
  readonly #preEncoded: boolean;
  readonly #build: (message: EncodedMessage) => Prepared;
  readonly #coalescer: WriteCoalescer | undefined;
  // engine.io's writeBuffer is uncapped (engine.io#420) and replaced on each flush: count it incrementally.
  #counted: unknown = undefined;
  #countedLength = 0;
  #countedBytes = 0;

  constructor(socket: AnySocket, init: SocketIoConnectionInit) {
    super();
    this.#event = checkEvent(init.event ?? 'message', 'event');
    this.id = init.id ?? socket.id;
    this.userId = init.userId;
    this.data = init.data;
    this.#socket = socket;
    this.#conn = socket.conn as unknown as EngineConn;
    this.#client = socket.client as unknown as Internals;
    this.#preEncoded = typeof this.#client.writeToEngine === 'function' && !socket.nsp.server._opts.connectionStateRecovery;
    this.#build = builderFor(socket.nsp, this.#event);
    this.#coalescer = init.coalescer;
  }

  get isOpen(): boolean {
    return this.#socket.connected;
  }

  get bufferedBytes(): number {
    const conn = this.#conn;
    const buffer = conn.readyState === 'closed' ? emptyBuffer : (conn.writeBuffer ?? emptyBuffer);
    if (buffer !== this.#counted || buffer.length < this.#countedLength) {
      this.#counted = buffer;
      this.#countedLength = 0;
      this.#countedBytes = 0;
    }
    for (; this.#countedLength < buffer.length; this.#countedLength++) this.#countedBytes += sizeOf(buffer[this.#countedLength]?.data);
    const ws = conn.transport?.socket;
    return this.#countedBytes + (typeof ws?.bufferedAmount === 'number' ? ws.bufferedAmount : 0);
  }

  send(message: EncodedMessage): void {
    const socket = this.#socket;
    if (!socket.connected) throw new BcastError(ErrorCode.ConnectionClosed, `socket ${socket.id} is disconnected`);
    if (!this.#preEncoded) return void socket.emit(this.#event, message.value);
    const prepared = message.prepare(this.#build, this.#build);
    (socket as unknown as Internals).notifyOutgoingListeners?.(prepared.packet);
    const frame = prepared.frame;
    const coalescer = this.#coalescer;
    const stream = frame === undefined ? undefined : directStream(this.#conn, coalescer);
    if (stream === undefined || frame === undefined) return void this.#client.writeToEngine?.(prepared.packets, prepared.opts);
    if (coalescer?.holding === true) coalescer.write(stream, frame);
    else stream.write(frame);
  }

  close(): void {
    this.#socket.disconnect(true);
  }

  terminate(): void {
    terminateConn(this.#conn);
  }
}

const emptyBuffer: readonly { data?: unknown }[] = [];

