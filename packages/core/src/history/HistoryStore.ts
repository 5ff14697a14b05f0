/** Where a message sits in a room's stream: `offset` grows by one per message; `epoch` changes when the history is lost. */
export interface StreamPosition {
  readonly offset: number;
  readonly epoch: string;
}

/** One message of a room's history: its offset and its `data` as JSON text. */
export interface HistoryRecord {
  readonly offset: number;
  readonly data: string;
}

/** What a recovery read found. Never partial: either every message after `since`, or `recovered: false`. */
export interface HistoryRead {
  readonly recovered: boolean;
  /** The room's position after the records (its top); undefined when the room has no history yet. */
  readonly position: StreamPosition | undefined;
  /** The messages after `since`, in order (empty unless recovered). */
  readonly records: readonly HistoryRecord[];
}

export interface HistoryLimits {
  /** Messages kept per room. */
  readonly maxMessages: number;
  /** Messages older than this are dropped. */
  readonly ttlMs: number;
}

/**
 * The history port: one bounded stream per room. In memory for one process (the default); in
 * Redis Streams (`@bcast/redis`) for several, written by the publishing node so a client recovers
 * on any process. A store may answer synchronously or with a promise.
 */
export interface HistoryStore {
  /** Appends a message (`data` is its JSON text) and returns its position. */
  append(room: string, data: string, limits: HistoryLimits): StreamPosition | Promise<StreamPosition>;
  /** Every message after `since`, or `recovered: false` when the history no longer covers the gap (trimmed, expired, other epoch). */
  since(room: string, since: StreamPosition, limits: HistoryLimits): HistoryRead | Promise<HistoryRead>;
  /**
   * The room's current position, `{ offset: 0, epoch }` for a room with no message yet (its epoch is
   * fixed then, so a client that joined an empty room can recover what came after). Undefined only
   * when the store cannot tell.
   */
  position(room: string): StreamPosition | undefined | Promise<StreamPosition | undefined>;
  /** Releases the store's connections; called by the broadcaster's `dispose()` / `shutdown()`. */
  close?(): void | Promise<void>;
}

interface RoomStream {
  readonly epoch: string;
  /** Offset of the next message. */
  next: number;
  readonly records: Array<{ readonly offset: number; readonly data: string; readonly at: number }>;
}

/**
 * The in-memory history of one process: at most `maxMessages` per room, none older than `ttlMs`,
 * and at most `maxRooms` rooms (the least recently written is forgotten first: its clients then
 * get `recovered: false`). A room's epoch is new whenever its stream is created.
 */
export class MemoryHistory implements HistoryStore {
  readonly #rooms = new Map<string, RoomStream>();
  readonly #maxRooms: number;

  constructor(options: { maxRooms?: number } = {}) {
    this.#maxRooms = options.maxRooms ?? 10_000;
  }

  /** Rooms with a stream (bounded by maxRooms). */
  get size(): number {
    return this.#rooms.size;
  }

  append(room: string, data: string, limits: HistoryLimits): StreamPosition {
    const stream = this.#open(room);
    const now = Date.now();
    const offset = stream.next++;
    stream.records.push({ offset, data, at: now });
    trim(stream, limits, now);
    return { offset, epoch: stream.epoch };
  }

  since(room: string, since: StreamPosition, limits: HistoryLimits): HistoryRead {
    const stream = this.#rooms.get(room);
    if (stream === undefined) return { recovered: false, position: undefined, records: [] };
    trim(stream, limits, Date.now());
    const position = { offset: stream.next - 1, epoch: stream.epoch };
    const first = stream.records[0]?.offset ?? stream.next;
    // Covered only when every offset after `since` is still here, in the same epoch.
    if (since.epoch !== stream.epoch || since.offset > position.offset || since.offset + 1 < first) return { recovered: false, position, records: [] };
    const records = stream.records.filter((r) => r.offset > since.offset).map(({ offset, data }) => ({ offset, data }));
    return { recovered: true, position, records };
  }

  position(room: string): StreamPosition {
    const stream = this.#open(room);
    return { offset: stream.next - 1, epoch: stream.epoch };
  }

  /** The room's stream, created when missing, and marked most recently used. */
  #open(room: string): RoomStream {
    let stream = this.#rooms.get(room);
    if (stream === undefined) {
      stream = { epoch: newEpoch(), next: 1, records: [] };
      if (this.#rooms.size >= this.#maxRooms) this.#rooms.delete(this.#rooms.keys().next().value as string);
    } else {
      this.#rooms.delete(room); // re-inserted below: most recently used last
    }
    this.#rooms.set(room, stream);
    return stream;
  }
}

function trim(stream: RoomStream, limits: HistoryLimits, now: number): void {
  const records = stream.records;
  let drop = Math.max(0, records.length - limits.maxMessages);
  while (drop < records.length && now - (records[drop] as { at: number }).at > limits.ttlMs) drop += 1;
  if (drop > 0) records.splice(0, drop);
}

function newEpoch(): string {
  return crypto.randomUUID().slice(0, 8);
}
