import { BcastError, ErrorCode, validateRoomId } from '@bcast/core';
import { ConnectionManager, idOf, internal, type LegacyId } from './ConnectionManager.js';
import { warn } from './options.js';

/**
 * Legacy rooms over the Broadcaster's RoomRegistry. A room made by `createRoom` lives until
 * `deleteRoom`; a room `joinRoom` creates goes away with its last member. A connection that
 * disconnects, or is found dead during a broadcast, leaves all its rooms. Never throws.
 */
export class RoomManager {
  readonly connections: ConnectionManager;

  /** @throws BcastError BCAST_INVALID_OPTION when `connections` is not a compat ConnectionManager. */
  constructor(connections: ConnectionManager) {
    if (!(connections instanceof ConnectionManager)) {
      throw new BcastError(ErrorCode.InvalidOption, 'RoomManager needs the ConnectionManager from @bcast/compat (new RoomManager(connections))');
    }
    this.connections = connections;
  }

  /** Creates an empty room that stays until deleted. False when it exists, or the id is invalid (logged). */
  createRoom(roomId: LegacyId): boolean {
    const b = this.connections.broadcaster;
    const room = idOf(roomId);
    try {
      validateRoomId(room, b.limits);
    } catch (error) {
      warn(this.connections[internal].logger, 'createRoom refused', error);
      return false;
    }
    return b.rooms.create(room as string);
  }

  /** Deletes a room and its memberships. False when it did not exist. */
  deleteRoom(roomId: LegacyId): boolean {
    return this.connections.broadcaster.rooms.delete(idOf(roomId));
  }

  /** Adds a registered connection to a room (creating the room). False when already in it, unknown, or the room id is invalid (logged). */
  joinRoom(connectionId: string, roomId: LegacyId): boolean {
    try {
      return this.connections.broadcaster.join(connectionId, idOf(roomId));
    } catch (error) {
      warn(this.connections[internal].logger, 'joinRoom refused', error);
      return false;
    }
  }

  /** False when the connection was not in the room. */
  leaveRoom(connectionId: string, roomId: LegacyId): boolean {
    return this.connections.broadcaster.leave(connectionId, idOf(roomId));
  }

  leaveAllRooms(connectionId: string): void {
    this.connections.broadcaster.rooms.leaveAll(connectionId);
  }

  /** Connection ids in the room (a copy; empty for an unknown room). */
  getRoomConnections(roomId: LegacyId): Set<string> {
    return new Set(this.connections.broadcaster.rooms.members(idOf(roomId)));
  }

  /** Rooms of a connection (a copy). */
  getConnectionRooms(connectionId: string): Set<string> {
    return new Set(this.connections.broadcaster.rooms.roomsOf(connectionId));
  }

  hasRoom(roomId: LegacyId): boolean {
    return this.connections.broadcaster.rooms.has(idOf(roomId));
  }

  /** Room statistics with the legacy keys. */
  getStats(): { totalRooms: number; roomMemberships: number } {
    const rooms = this.connections.broadcaster.rooms;
    return { totalRooms: rooms.size, roomMemberships: rooms.membershipCount };
  }
}
