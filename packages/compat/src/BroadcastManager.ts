import { BcastError, ErrorCode, toBcastError, type BroadcastContext, type Broadcaster, type BroadcasterStats, type ExecutionResult, type HealthReport } from '@bcast/core';
import type { BroadcastResult as CoreResult } from '@bcast/core';
import { ConnectionManager, idOf, internal, type LegacyId } from './ConnectionManager.js';
import { resolveOptions, warn, type CompatOptions } from './options.js';
import { RoomManager } from './RoomManager.js';

/** What a broadcast did. The first four fields are the legacy ones; the others were added. */
export interface BroadcastResult {
  /** Connections the message was written to. */
  successful: number;
  /** Connections skipped (closing, not open) or whose send failed, dead ones included. */
  failed: number;
  totalConnections: number;
  /** The message's `type`, when it is an object with a string `type`. */
  messageType?: string;
  /** Failed connections that were found dead, closed with 1001 and removed. */
  removed: number;
  durationMs: number;
  /** Set when the broadcast was refused before anything was sent: the BcastError code. */
  error?: ErrorCode;
}

/** `getStats()`: the legacy keys, then the core's sections. */
export interface CompatStats extends BroadcasterStats {
  /** Broadcast calls made through this manager. */
  readonly totalBroadcasts: number;
  /** Sum of `successful` over those calls. */
  readonly successfulSends: number;
  /** Sum of `failed` over those calls. */
  readonly failedSends: number;
  readonly totalRooms: number;
  readonly roomMemberships: number;
}

/** Close reason of connections found dead during `broadcastToUser` (others use the core's "Connection lost during broadcast"). */
export const USER_DEAD_CONNECTION_REASON = 'Connection lost';

/**
 * The legacy facade: same methods, arguments and results as the hand-written loop it replaces, but
 * every call runs through the core Broadcaster (validation, encode once, accounting of every
 * recipient, dead-connection cleanup, reliability, stats and OpenTelemetry spans).
 * The broadcast methods never reject because of a socket.
 */
export class BroadcastManager {
  /** The ConnectionManager this manager was built with. */
  readonly connectionManager: ConnectionManager;
  /** The RoomManager given to the constructor, or the one it created. */
  readonly roomManager: RoomManager;
  readonly #counters = { totalBroadcasts: 0, successfulSends: 0, failedSends: 0 };

  /**
   * @param options BroadcasterOptions, or `{ broadcaster }`, plus the compat settings; applied to
   *   the ConnectionManager's Broadcaster (see CompatOptions).
   * @throws BcastError BCAST_INVALID_OPTION for invalid arguments or options (the only place compat throws).
   */
  constructor(connections: ConnectionManager, rooms?: RoomManager | null, options?: CompatOptions | null) {
    if (!(connections instanceof ConnectionManager)) {
      throw new BcastError(ErrorCode.InvalidOption, 'BroadcastManager needs the ConnectionManager from @bcast/compat as its first argument');
    }
    if (rooms !== undefined && rooms !== null && !(rooms instanceof RoomManager && rooms.connectionManager === connections)) {
      throw new BcastError(ErrorCode.InvalidOption, 'BroadcastManager: rooms must be a @bcast/compat RoomManager built on the same ConnectionManager');
    }
    connections[internal].configure(resolveOptions(options, 'BroadcastManager'));
    this.connectionManager = connections;
    this.roomManager = rooms ?? new RoomManager(connections);
    void connections.broadcaster; // start it now, not inside a later call
  }

  /** Same as `connectionManager` (the name earlier compat releases used). */
  get connections(): ConnectionManager {
    return this.connectionManager;
  }

  /** Same as `roomManager` (the name earlier compat releases used). */
  get rooms(): RoomManager {
    return this.roomManager;
  }

  get broadcaster(): Broadcaster {
    return this.connectionManager.broadcaster;
  }

  // ---- rooms: the legacy manager's own room methods, each delegating to `roomManager` ----------

  /** Creates an empty room that stays until deleted. False when it exists, or the id is invalid (logged). */
  createRoom(roomId: LegacyId): boolean {
    return this.roomManager.createRoom(roomId);
  }

  /** Deletes a room and its memberships. False when it did not exist. */
  deleteRoom(roomId: LegacyId): boolean {
    return this.roomManager.deleteRoom(roomId);
  }

  /** Adds a registered connection to a room (creating the room). False when already in it, unknown, or the room id is invalid (logged). */
  joinRoom(connectionId: string, roomId: LegacyId): boolean {
    return this.roomManager.joinRoom(connectionId, roomId);
  }

  /** False when the connection was not in the room. */
  leaveRoom(connectionId: string, roomId: LegacyId): boolean {
    return this.roomManager.leaveRoom(connectionId, roomId);
  }

  leaveAllRooms(connectionId: string): void {
    this.roomManager.leaveAllRooms(connectionId);
  }

  /** Connection ids in the room (a copy; empty for an unknown room). */
  getRoomConnections(roomId: LegacyId): Set<string> {
    return this.roomManager.getRoomConnections(roomId);
  }

  /** Rooms of a connection (a copy; empty for an unknown connection). */
  getConnectionRooms(connectionId: string): Set<string> {
    return this.roomManager.getConnectionRooms(connectionId);
  }

  /** Every live connection of every user. */
  broadcastToAll(message: unknown): Promise<BroadcastResult> {
    return this.#run({ operation: 'all', message }, (b) => b.connections.size);
  }

  /** All connections of one user: true when at least one send succeeded; false for an unknown or disconnected user. */
  async broadcastToUser(userId: LegacyId, message: unknown): Promise<boolean> {
    const user = idOf(userId);
    const result = await this.#run({ operation: 'user', userId: user, message, deadConnectionReason: USER_DEAD_CONNECTION_REASON }, (b) =>
      b.connections.byUser(user).size,
    );
    return result.successful > 0;
  }

  /** Every connection in the room; an empty or unknown room gives a zero result. */
  broadcastToRoom(roomId: LegacyId, message: unknown): Promise<BroadcastResult> {
    const room = idOf(roomId);
    return this.#run({ operation: 'room', room, message }, (b) => {
      let n = 0;
      for (const id of b.rooms.members(room)) if (b.connections.has(id)) n += 1;
      return n;
    });
  }

  getStats(): CompatStats {
    const core = this.broadcaster.getStats();
    return { ...core, ...this.#counters, totalRooms: core.rooms, roomMemberships: core.roomMemberships };
  }

  /** healthy / degraded / unhealthy with reasons, circuit states, success and error rates, latency percentiles, system. */
  getHealthStatus(): HealthReport {
    return this.broadcaster.getHealthStatus();
  }

  /** Disposes the Broadcaster when compat created it (clients get 1001); see ConnectionManager.dispose. */
  dispose(): Promise<void> {
    return this.connectionManager.dispose();
  }

  async #run(context: BroadcastContext, targets: (b: Broadcaster) => number): Promise<BroadcastResult> {
    const counters = this.#counters;
    counters.totalBroadcasts += 1;
    const b = this.broadcaster;
    let outcome: ExecutionResult<CoreResult>;
    try {
      outcome = await b.execute(context);
    } catch (error) {
      outcome = { status: 'failed', error: toBcastError(error), durationMs: 0, attempts: 0 };
    }
    if (outcome.result) {
      const r = outcome.result;
      const failed = r.failed + r.dropped;
      counters.successfulSends += r.delivered;
      counters.failedSends += failed;
      return {
        successful: r.delivered,
        failed,
        totalConnections: r.recipients,
        ...(r.messageType === undefined ? {} : { messageType: r.messageType }),
        removed: r.removed,
        durationMs: r.durationMs,
      };
    }
    const error = outcome.error ?? new BcastError(ErrorCode.Internal, 'the broadcast produced no result');
    const ctx = this.connectionManager[internal];
    let total = 0;
    try {
      total = targets(b);
    } catch {
      // an id legacy code passed that cannot even be looked up: nothing was targeted
    }
    counters.failedSends += total;
    if (ctx.errorMode === 'reject') throw error;
    warn(ctx.logger, `broadcast to ${context.operation} refused, nothing was sent (${error.code})`, error);
    const messageType = typeOf(context.message);
    return {
      successful: 0,
      failed: total,
      totalConnections: total,
      ...(messageType === undefined ? {} : { messageType }),
      removed: 0,
      durationMs: outcome.durationMs,
      error: error.code,
    };
  }
}

function typeOf(message: unknown): string | undefined {
  try {
    if (typeof message !== 'object' || message === null || Array.isArray(message)) return undefined;
    const type = (message as { type?: unknown }).type;
    return typeof type === 'string' ? type : undefined;
  } catch {
    return undefined;
  }
}
