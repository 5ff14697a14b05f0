import type { ConnectionRegistry } from '../registry/ConnectionRegistry.js';
import type { RoomEvent, RoomRegistry } from '../registry/RoomRegistry.js';
import type { RoomPattern } from '../history/RoomHistory.js';

/** One connection in a room, on some node. */
export interface PresenceMember {
  readonly connectionId: string;
  readonly userId: string | undefined;
  readonly nodeId: string;
}

/**
 * The presence port for several processes: who is in which room on every node. `@bcast/redis`
 * keeps it in Redis with entries each node refreshes on a heartbeat, so the members of a node that
 * died expire by themselves. Calls may answer synchronously or with a promise.
 */
export interface PresenceStore {
  add(room: string, member: PresenceMember): void | Promise<void>;
  remove(room: string, connectionId: string): void | Promise<void>;
  /** Everyone in the room, on every node (members of dead nodes excluded). */
  list(room: string): readonly PresenceMember[] | Promise<readonly PresenceMember[]>;
  /** Stops refreshing this node's entries (they expire). */
  close?(): void | Promise<void>;
}

export interface PresenceOptions {
  /** Rooms whose members are tracked. @default every room */
  rooms?: RoomPattern;
  /** Send `{"type":"bcast.presence","room","event":"join"|"leave","userId"}` to a room's members when a user's connection joins or leaves it. @default false */
  events?: boolean;
  /** @default this process's own registry (one process); several processes share `@bcast/redis`'s store */
  store?: PresenceStore;
}

/** Who is in a room: users with their connection counts, and all connections (anonymous ones included). */
export interface PresenceReport {
  readonly room: string;
  readonly users: ReadonlyArray<{ readonly userId: string; readonly connections: number }>;
  readonly connections: number;
}

/** The presence event sent to a room's members. */
export interface PresenceEvent {
  readonly type: 'bcast.presence';
  readonly room: string;
  readonly event: 'join' | 'leave';
  readonly userId: string;
}

/** Presence across processes: the store follows the room registry; events are announced by the caller. */
export class Presence {
  readonly #connections: ConnectionRegistry;
  readonly #rooms: RoomRegistry;
  readonly #store: PresenceStore | undefined;
  readonly #matches: (room: string) => boolean;
  readonly #events: boolean;
  readonly #nodeId: string;
  readonly #log: (level: 'warn' | 'error', message: string, error?: unknown) => void;

  constructor(
    deps: { connections: ConnectionRegistry; rooms: RoomRegistry; nodeId: string; log: (level: 'warn' | 'error', message: string, error?: unknown) => void },
    options: PresenceOptions,
  ) {
    this.#connections = deps.connections;
    this.#rooms = deps.rooms;
    this.#nodeId = deps.nodeId;
    this.#log = deps.log;
    this.#store = options.store;
    this.#events = options.events === true;
    const rooms = options.rooms;
    this.#matches =
      rooms === undefined ? () => true : typeof rooms === 'function' ? rooms : rooms instanceof RegExp ? (r) => rooms.test(r) : rooms.endsWith('*') ? (r) => r.startsWith(rooms.slice(0, -1)) : (r) => r === rooms;
  }

  /** Whether registry changes matter (a shared store, or events to send). */
  get tracking(): boolean {
    return this.#store !== undefined || this.#events;
  }

  /** Follows one registry change (a connection leaves its rooms before it is unregistered); returns the event to announce, if any. */
  update(event: RoomEvent): { event: PresenceEvent; except: string } | undefined {
    if ((event.type !== 'join-room' && event.type !== 'leave-room') || !this.#matches(event.room)) return undefined;
    const { room, connectionId } = event;
    const join = event.type === 'join-room';
    const userId = this.#connections.get(connectionId)?.userId;
    if (this.#store) {
      const stored = join ? this.#store.add(room, { connectionId, userId, nodeId: this.#nodeId }) : this.#store.remove(room, connectionId);
      if (stored instanceof Promise) stored.catch((error: unknown) => this.#log('warn', `presence: could not update ${JSON.stringify(room)}`, error));
    }
    if (!this.#events || userId === undefined) return undefined;
    return { event: { type: 'bcast.presence', room, event: join ? 'join' : 'leave', userId }, except: connectionId };
  }

  /** Who is in `room`, on every node when a store is shared. */
  async list(room: string): Promise<PresenceReport> {
    const members: ReadonlyArray<{ userId: string | undefined }> = this.#store
      ? await this.#store.list(room)
      : [...this.#rooms.members(room)].map((id) => ({ userId: this.#connections.get(id)?.userId }));
    const users = new Map<string, number>();
    for (const m of members) if (m.userId !== undefined) users.set(m.userId, (users.get(m.userId) ?? 0) + 1);
    return { room, users: [...users].map(([userId, connections]) => ({ userId, connections })).sort((a, b) => a.userId.localeCompare(b.userId)), connections: members.length };
  }

  async close(): Promise<void> {
    await this.#store?.close?.();
  }
}
