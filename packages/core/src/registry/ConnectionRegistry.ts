import type { Connection } from '../connection/Connection.js';
import { ConnectionBase } from '../connection/ConnectionBase.js';
import type { ConnectionEntry } from '../connection/ConnectionEntry.js';

export type { ConnectionEntry } from '../connection/ConnectionEntry.js';

/** What applications read of the live connections (`broadcaster.connections`). */
export interface ConnectionsView extends Iterable<ConnectionEntry> {
  readonly size: number;
  /** Distinct users with at least one connection. */
  readonly userCount: number;
  get(id: string): ConnectionEntry | undefined;
  has(id: string): boolean;
  /** Connections of one user (empty when unknown). */
  byUser(userId: string): ReadonlySet<ConnectionEntry>;
  users(): IterableIterator<string>;
  entries(): IterableIterator<ConnectionEntry>;
}

/** Live connections by id and by user. */
export class ConnectionRegistry implements ConnectionsView {
  readonly #byId = new Map<string, ConnectionEntry>();
  readonly #byUser = new Map<string, Set<ConnectionEntry>>();

  get size(): number {
    return this.#byId.size;
  }

  get userCount(): number {
    return this.#byUser.size;
  }

  /** Registers a connection; an id already present is replaced. A {@link ConnectionBase} is its own entry. */
  add(connection: Connection): ConnectionEntry {
    this.remove(connection.id);
    let entry: ConnectionEntry;
    if (connection instanceof ConnectionBase) {
      entry = connection;
      connection.connectedAt = new Date();
      connection.messageCount = 0;
      connection.errorCount = 0;
      connection.isClosing = false;
      connection.lastSeenAt = Date.now();
      connection.awaitingPong = false;
      connection.expiresAt = undefined;
      connection.recovering = undefined;
    } else {
      entry = {
        id: connection.id,
        userId: connection.userId,
        connection,
        connectedAt: new Date(),
        messageCount: 0,
        errorCount: 0,
        isClosing: false,
        lastSeenAt: Date.now(),
        awaitingPong: false,
        expiresAt: undefined,
        recovering: undefined,
      };
    }
    this.#byId.set(entry.id, entry);
    if (entry.userId !== undefined) {
      let set = this.#byUser.get(entry.userId);
      if (!set) this.#byUser.set(entry.userId, (set = new Set()));
      set.add(entry);
    }
    return entry;
  }

  /** Unregisters; returns the entry when it was present. */
  remove(id: string): ConnectionEntry | undefined {
    const entry = this.#byId.get(id);
    if (!entry) return undefined;
    this.#byId.delete(id);
    if (entry.userId !== undefined) {
      const set = this.#byUser.get(entry.userId);
      if (set) {
        set.delete(entry);
        if (set.size === 0) this.#byUser.delete(entry.userId);
      }
    }
    return entry;
  }

  get(id: string): ConnectionEntry | undefined {
    return this.#byId.get(id);
  }

  has(id: string): boolean {
    return this.#byId.has(id);
  }

  /** Connections of one user (empty when unknown). Do not mutate. */
  byUser(userId: string): ReadonlySet<ConnectionEntry> {
    return this.#byUser.get(userId) ?? emptySet;
  }

  users(): IterableIterator<string> {
    return this.#byUser.keys();
  }

  entries(): IterableIterator<ConnectionEntry> {
    return this.#byId.values();
  }

  [Symbol.iterator](): IterableIterator<ConnectionEntry> {
    return this.#byId.values();
  }
}

const emptySet: ReadonlySet<ConnectionEntry> = new Set();
