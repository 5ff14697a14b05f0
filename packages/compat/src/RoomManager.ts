import { BcastError, ErrorCode } from '@bcast/core';
import { ConnectionManager, idOf, internal, type LegacyId } from './ConnectionManager.js';
import { warn } from './options.js';

/**
 * Legacy rooms over the Broadcaster's rooms. A room made by `createRoom` lives until
 * `deleteRoom`; a room `joinRoom` creates goes away with its last member. A connection that
 * disconnects, or is found dead during a broadcast, leaves all its rooms. Never throws.
 * `BroadcastManager` has the same room methods, delegating to its `roomManager`.
 */
export class RoomManager {
  /** The ConnectionManager this manager was built with. */
  readonly connectionManager: ConnectionManager;

  /** @throws BcastError BCAST_INVALID_OPTION when `connections` is not a compat ConnectionManager. */
  constructor(connections: ConnectionManager) {
    if (!(connections instanceof ConnectionManager)) {
      throw new BcastError(ErrorCode.InvalidOption, 'RoomManager needs the ConnectionManager from @bcast/compat (new RoomManager(connections))');
    }
    this.connectionManager = connections;
  }

  /** Same as `connectionManager` (the name earlier compat releases used). */
  get connections(): ConnectionManager {
    return this.connectionManager;
  }

  /** Creates an empty room that stays until deleted. False when it exists, or the id is invalid (logged). */
  createRoom(roomId: LegacyId): boolean {
    try {
      return this.connectionManager.broadcaster.createRoom(idOf(roomId));
    } catch (error) {
      warn(this.connectionManager[internal].logger, 'createRoom refused', error);
      return false;
    }
  }

  /** Deletes a room and its memberships. False when it did not exist. */
  deleteRoom(roomId: LegacyId): boolean {
    try {
      return this.connectionManager.broadcaster.deleteRoom(idOf(roomId));
    } catch (error) {
      warn(this.connectionManager[internal].logger, 'deleteRoom refused', error);
      return false;
    }
  }

  /** Adds a registered connection to a room (creating the room). False when already in it, unknown, or the room id is invalid (logged). */
  joinRoom(connectionId: string, roomId: LegacyId): boolean {
    try {
      return this.connectionManager.broadcaster.join(connectionId, idOf(roomId));
    } catch (error) {
      warn(this.connectionManager[internal].logger, 'joinRoom refused', error);
      return false;
    }
  }

  /** False when the connection was not in the room. */
  leaveRoom(connectionId: string, roomId: LegacyId): boolean {
    try {
      return this.connectionManager.broadcaster.leave(connectionId, idOf(roomId));
    } catch (error) {
      warn(this.connectionManager[internal].logger, 'leaveRoom refused', error);
      return false;
    }
  }

  leaveAllRooms(connectionId: string): void {
    try {
      this.connectionManager.broadcaster.leaveAll(connectionId);
    } catch (error) {
      warn(this.connectionManager[internal].logger, 'leaveAllRooms refused', error);
    }
  }

  /** Connection ids in the room (a copy; empty for an unknown room). */
  getRoomConnections(roomId: LegacyId): Set<string> {
    return new Set(this.connectionManager.broadcaster.rooms.members(idOf(roomId)));
  }

  /** Rooms of a connection (a copy; empty for an unknown connection). */
  getConnectionRooms(connectionId: string): Set<string> {
    return new Set(this.connectionManager.broadcaster.rooms.roomsOf(connectionId));
  }

  hasRoom(roomId: LegacyId): boolean {
    return this.connectionManager.broadcaster.rooms.has(idOf(roomId));
  }

  /** Room statistics with the legacy keys. */
  getStats(): { totalRooms: number; roomMemberships: number } {
    const rooms = this.connectionManager.broadcaster.rooms;
    let roomMemberships = 0;
    for (const room of rooms.rooms()) roomMemberships += rooms.members(room).size;
    return { totalRooms: rooms.size, roomMemberships };
  }
}
