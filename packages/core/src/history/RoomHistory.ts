import { EncodedMessage } from '../connection/EncodedMessage.js';
import { BcastError } from '../errors/BcastError.js';
import { ErrorCode } from '../errors/codes.js';
import type { HistoryLimits, HistoryStore, StreamPosition } from './HistoryStore.js';

/** The `type` of a message of a room with history, as clients receive it. */
export const PUBLICATION_TYPE = 'bcast.pub';

/**
 * A message of a room with history, as written to clients:
 * `{"type":"bcast.pub","room":…,"offset":…,"epoch":…,"data":<the app's message>}` (offset and
 * epoch left out when the history could not record it). Built once per broadcast.
 */
export class Publication extends EncodedMessage {
  constructor(
    readonly room: string,
    readonly position: StreamPosition | undefined,
    /** The app's message as JSON text. */
    readonly json: string,
    init: { type: string | undefined; volatile: boolean },
  ) {
    const pos = position === undefined ? '' : `,"offset":${position.offset},"epoch":${JSON.stringify(position.epoch)}`;
    const text = `{"type":"${PUBLICATION_TYPE}","room":${JSON.stringify(room)}${pos},"data":${json}}`;
    super({ value: undefined, text, bytes: Buffer.from(text, 'utf8'), type: init.type, volatile: init.volatile });
  }

  #value: unknown;
  override get value(): unknown {
    return (this.#value ??= JSON.parse(this.text as string));
  }
}

/** A room pattern: a RegExp, a predicate, or a string where a trailing `*` matches any suffix. */
export type RoomPattern = RegExp | string | ((room: string) => boolean);

export interface HistoryOptions extends Partial<HistoryLimits> {
  /** Rooms that keep a history (e.g. `'chat:*'`, `/^doc:/`). */
  rooms: RoomPattern;
  /** @default a bounded in-memory store (one process); several processes share `@bcast/redis`'s store */
  store?: HistoryStore;
}

export interface HistoryStats {
  readonly appended: number;
  readonly appendErrors: number;
  readonly recovered: number;
  /** Joins with `since` answered `recovered: false` (gap not covered, or the store unavailable). */
  readonly notRecovered: number;
  readonly storeErrors: number;
}

/** The JSON text of a message's `data` in a publication; throws for binary messages. */
export function dataOf(message: EncodedMessage): string {
  if (message.binary || message.text === undefined) {
    throw new BcastError(ErrorCode.InvalidMessage, 'a room with history takes text or JSON messages, not binary ones', { details: { reason: 'binary' } });
  }
  return typeof message.value === 'string' ? JSON.stringify(message.value) : message.text;
}

/** Which rooms keep a history, and the calls to its store (whose failures never block delivery). */
export class RoomHistory {
  readonly #matches: (room: string) => boolean;
  readonly #store: HistoryStore;
  readonly #limits: HistoryLimits;
  readonly #log: (level: 'warn' | 'error', message: string, error?: unknown) => void;
  readonly #stats = { appended: 0, appendErrors: 0, recovered: 0, notRecovered: 0, storeErrors: 0 };
  /** Store failures not logged yet: one line at most every 10 s while a store is down, with the count. */
  #quiet = { until: 0, suppressed: 0 };

  constructor(options: HistoryOptions, store: HistoryStore, log: (level: 'warn' | 'error', message: string, error?: unknown) => void) {
    this.#matches = matcher(options.rooms);
    this.#store = store;
    this.#limits = { maxMessages: options.maxMessages ?? 1_000, ttlMs: options.ttlMs ?? 300_000 };
    this.#log = (level, message, error) => {
      const now = Date.now();
      if (now < this.#quiet.until) {
        this.#quiet.suppressed += 1;
        return;
      }
      const more = this.#quiet.suppressed > 0 ? ` (and ${this.#quiet.suppressed} more store failures in the last 10 s)` : '';
      this.#quiet = { until: now + 10_000, suppressed: 0 };
      log(level, message + more, error);
    };
  }

  async close(): Promise<void> {
    await this.#store.close?.();
  }

  has(room: string): boolean {
    return this.#matches(room);
  }

  get stats(): HistoryStats {
    return { ...this.#stats };
  }

  /**
   * Records a message in the room's history and returns the publication every recipient gets: at
   * once when the store answers synchronously (in memory), so the broadcast keeps its place among
   * the others; with a promise when it answers later (Redis).
   */
  record(room: string, message: EncodedMessage): Publication | Promise<Publication> {
    const data = dataOf(message);
    const failed = (error: unknown): Publication => {
      // Live delivery goes on without a position; the store changes its epoch once it is back.
      this.#stats.appendErrors += 1;
      this.#log('warn', `history: could not record a message of ${JSON.stringify(room)}`, error);
      return new Publication(room, undefined, data, message);
    };
    const recorded = (position: StreamPosition): Publication => {
      this.#stats.appended += 1;
      return new Publication(room, position, data, message);
    };
    let appended: StreamPosition | Promise<StreamPosition>;
    try {
      appended = this.#store.append(room, data, this.#limits);
    } catch (error) {
      return failed(error);
    }
    return appended instanceof Promise ? appended.then(recorded, failed) : recorded(appended);
  }

  /** What a client that last saw `since` missed, as publications; `recovered: false` when that cannot be told. */
  async recover(room: string, since: StreamPosition): Promise<{ recovered: boolean; position: StreamPosition | undefined; messages: Publication[] }> {
    try {
      const read = await this.#store.since(room, since, this.#limits);
      if (read.recovered) this.#stats.recovered += 1;
      else this.#stats.notRecovered += 1;
      const messages = read.recovered ? read.records.map((r) => new Publication(room, { offset: r.offset, epoch: read.position?.epoch ?? since.epoch }, r.data, noType)) : [];
      return { recovered: read.recovered, position: read.position, messages };
    } catch (error) {
      this.#stats.notRecovered += 1;
      this.#stats.storeErrors += 1;
      this.#log('warn', `history: recovery of ${JSON.stringify(room)} failed`, error);
      return { recovered: false, position: undefined, messages: [] };
    }
  }

  async position(room: string): Promise<StreamPosition | undefined> {
    try {
      return await this.#store.position(room);
    } catch (error) {
      this.#stats.storeErrors += 1;
      this.#log('warn', `history: position of ${JSON.stringify(room)} unavailable`, error);
      return undefined;
    }
  }
}

const noType = { type: undefined, volatile: false };

function matcher(pattern: RoomPattern): (room: string) => boolean {
  if (typeof pattern === 'function') return pattern;
  if (pattern instanceof RegExp) return (room) => pattern.test(room);
  if (pattern.endsWith('*')) {
    const prefix = pattern.slice(0, -1);
    return (room) => room.startsWith(prefix);
  }
  return (room) => room === pattern;
}
