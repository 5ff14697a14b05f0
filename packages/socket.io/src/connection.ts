import { BcastError, ErrorCode, type Connection, type EncodedMessage } from '@bcast/core';
import type { Namespace, Socket } from 'socket.io';

// The Connection port over a socket.io Socket, and the once-per-broadcast packet it writes.
type AnyNamespace = Namespace<any, any, any, any>;
type AnySocket = Socket<any, any, any, any>;

export interface SocketIoConnectionInit {
  /** @default socket.id */ id?: string;
  userId?: string | undefined;
  data?: unknown;
  /** Event broadcasts are emitted on. @default "message" */ event?: string;
}

export /** The engine.io / socket.io internals used here, all feature-checked (see docs/decisions-socketio.md). */
interface EngineConn {
  readonly readyState: string;
  readonly writeBuffer?: ReadonlyArray<{ data?: unknown }>;
  readonly transport?: { socket?: { bufferedAmount?: unknown; terminate?: () => void } };
  close(discard?: boolean): void;
  once(event: 'close', listener: () => void): unknown;
}
export interface Internals {
  writeToEngine?: (packets: unknown[], opts: object) => void;
  _encode?: (packet: object, opts: object) => unknown[];
  notifyOutgoingListeners?: (packet: object) => void;
}
type Prepared = { readonly packet: object; readonly packets: unknown[]; readonly opts: object };


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
      return { packet, packets, opts };
    });
  byEvent.set(event, build);
  return build;
}

const sizeOf = (data: unknown): number => (typeof data === 'string' ? data.length : ArrayBuffer.isView(data) ? data.byteLength : 0);

export function terminateConn(conn: EngineConn): void {
  const ws = conn.transport?.socket;
  return typeof ws?.terminate === 'function' ? ws.terminate() : conn.close(true);
}

export /** A class rather than an object literal with getters: one small object, fast property access. */
class SocketIoConnection implements Connection {
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
  // engine.io's writeBuffer is uncapped (engine.io#420) and replaced on each flush: count it incrementally.
  #counted: unknown = undefined;
  #countedLength = 0;
  #countedBytes = 0;

  constructor(socket: AnySocket, init: SocketIoConnectionInit) {
    this.#event = checkEvent(init.event ?? 'message', 'event');
    this.id = init.id ?? socket.id;
    this.userId = init.userId;
    this.data = init.data;
    this.#socket = socket;
    this.#conn = socket.conn as unknown as EngineConn;
    this.#client = socket.client as unknown as Internals;
    this.#preEncoded = typeof this.#client.writeToEngine === 'function' && !socket.nsp.server._opts.connectionStateRecovery;
    this.#build = builderFor(socket.nsp, this.#event);
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
    this.#client.writeToEngine?.(prepared.packets, prepared.opts);
  }

  close(): void {
    this.#socket.disconnect(true);
  }

  terminate(): void {
    terminateConn(this.#conn);
  }
}

const emptyBuffer: readonly { data?: unknown }[] = [];

