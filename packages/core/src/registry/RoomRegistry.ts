export type RoomEvent =
  | { type: 'create-room'; room: string }
  | { type: 'delete-room'; room: string }
  | { type: 'join-room'; room: string; connectionId: string }
  | { type: 'leave-room'; room: string; connectionId: string };

/** What applications read of the rooms (`broadcaster.rooms`). */
export interface RoomsView {
  readonly size: number;
  /** Total (connection, room) pairs. */
  readonly membershipCount: number;
  has(room: string): boolean;
  /** Member ids of a room (empty when unknown). */
  members(room: string): ReadonlySet<string>;
  /** Rooms of a connection (empty when none). */
  roomsOf(connectionId: string): ReadonlySet<string>;
  rooms(): IterableIterator<string>;
  /** Room lifecycle events (created, deleted, joined, left). Returns an unsubscribe function. */
  on(listener: (event: RoomEvent) => void): () => void;
}

/**
 * Rooms as two mirrored maps (room -> connection ids, connection id -> rooms), the shape of
 * socket.io's in-memory adapter. A room made by `create()` lives until `delete()`; a room made
 * implicitly by `join()` goes away with its last member, so rooms never leak.
 */
export class RoomRegistry implements RoomsView {
  readonly #members = new Map<string, Set<string>>();
  readonly #roomsOf = new Map<string, Set<string>>();
  readonly #persistent = new Set<string>();
  readonly #listeners = new Set<(event: RoomEvent) => void>();

  get size(): number {
    return this.#members.size;
  }

  /** Total (connection, room) pairs. */
  get membershipCount(): number {
    let n = 0;
    for (const set of this.#members.values()) n += set.size;
    return n;
  }

  on(listener: (event: RoomEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Creates an empty room that stays until deleted; false when it already exists. */
  create(room: string): boolean {
    if (this.#members.has(room)) {
      this.#persistent.add(room);
      return false;
    }
    this.#members.set(room, new Set());
    this.#persistent.add(room);
    this.#emit({ type: 'create-room', room });
    return true;
  }

  /** Deletes a room and every membership in it; false when it did not exist. */
  delete(room: string): boolean {
    const members = this.#members.get(room);
    if (!members) return false;
    for (const id of [...members]) this.leave(id, room, true);
    this.#members.delete(room);
    this.#persistent.delete(room);
    this.#emit({ type: 'delete-room', room });
    return true;
  }

  has(room: string): boolean {
    return this.#members.has(room);
  }

  /** Adds a connection to a room (creating it); false when it was already a member. */
  join(connectionId: string, room: string): boolean {
    let members = this.#members.get(room);
    if (!members) {
      this.#members.set(room, (members = new Set()));
      this.#emit({ type: 'create-room', room });
    }
    if (members.has(connectionId)) return false;
    members.add(connectionId);
    let rooms = this.#roomsOf.get(connectionId);
    if (!rooms) this.#roomsOf.set(connectionId, (rooms = new Set()));
    rooms.add(room);
    this.#emit({ type: 'join-room', room, connectionId });
    return true;
  }

  /** Removes a connection from a room; false when it was not a member. */
  leave(connectionId: string, room: string, keepEmptyRoom = false): boolean {
    const members = this.#members.get(room);
    if (!members?.delete(connectionId)) return false;
    const rooms = this.#roomsOf.get(connectionId);
    if (rooms) {
      rooms.delete(room);
      if (rooms.size === 0) this.#roomsOf.delete(connectionId);
    }
    this.#emit({ type: 'leave-room', room, connectionId });
    if (members.size === 0 && !keepEmptyRoom && !this.#persistent.has(room)) {
      this.#members.delete(room);
      this.#emit({ type: 'delete-room', room });
    }
    return true;
  }

  /** Removes a connection from every room; returns the rooms it left. */
  leaveAll(connectionId: string): string[] {
    const rooms = this.#roomsOf.get(connectionId);
    if (!rooms) return [];
    const left = [...rooms];
    for (const room of left) this.leave(connectionId, room);
    return left;
  }

  /** Member ids of a room (empty when unknown). Do not mutate. */
  members(room: string): ReadonlySet<string> {
    return this.#members.get(room) ?? emptySet;
  }

  /** Rooms of a connection (empty when none). Do not mutate. */
  roomsOf(connectionId: string): ReadonlySet<string> {
    return this.#roomsOf.get(connectionId) ?? emptySet;
  }

  rooms(): IterableIterator<string> {
    return this.#members.keys();
  }

  #emit(event: RoomEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // a listener never breaks the registry
      }
    }
  }
}

const emptySet: ReadonlySet<string> = new Set();
