// The legacy manager's own room methods (docs/legacy-api.md, "Rooms"): legacy code called
// `manager.createRoom(...)`, `manager.joinRoom(...)`... and read `manager.roomManager` /
// `manager.connectionManager`. One ConnectionManager takes sockets from a real ws server and a
// real socket.io server at once, as an app serving both would; every room test mixes the two.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BroadcastManager, ConnectionManager, RoomManager } from '../src/index.js';
import { closeClients, connectClient, decoded, recordingLogger, startServer, type AppServer, type TestClient } from './helpers.js';

let logger: ReturnType<typeof recordingLogger>;
let connections: ConnectionManager;
let rooms: RoomManager;
let manager: BroadcastManager;
let wsServer: AppServer;
let ioServer: AppServer;
/** Clients by tag: a* and c* on ws, b* and d* on socket.io. */
let clients: Map<string, TestClient>;

beforeEach(async () => {
  logger = recordingLogger();
  connections = new ConnectionManager({ logger });
  rooms = new RoomManager(connections);
  manager = new BroadcastManager(connections, rooms);
  const connect = (userId: string, socket: unknown): void => void connections.connect(userId, socket);
  wsServer = await startServer('ws', connect);
  ioServer = await startServer('socket.io', connect);
  clients = new Map([
    ['a1', await connectClient(wsServer, 'alice', 'a1')],
    ['b1', await connectClient(ioServer, 'bob', 'b1')],
    ['c1', await connectClient(wsServer, 'carol', 'c1')],
    ['d1', await connectClient(ioServer, 'dave', 'd1')],
  ]);
});

afterEach(async () => {
  closeClients();
  await manager.dispose();
  await wsServer.close();
  await ioServer.close();
});

/** The connection id of a client's server-side socket, found through the legacy registry. */
function id(tag: string): string {
  const socket = (wsServer.sockets.get(tag) ?? ioServer.sockets.get(tag)) as unknown;
  const info = [...connections.activeConnections.values()].flat().find((i) => i.socket === socket);
  if (!info) throw new Error(`${tag} is not registered`);
  return info.connectionId;
}

/**
 * Everything each client received up to a marker broadcast to all, decoded. Messages on one
 * socket arrive in order, so a room message that reached a client shows up before the marker.
 */
async function receivedUpToMarker(marker: string): Promise<Record<string, unknown[]>> {
  expect(await manager.broadcastToAll(marker)).toMatchObject({ successful: clients.size });
  const out: Record<string, unknown[]> = {};
  for (const [tag, client] of clients) {
    await client.waitForValue(marker);
    out[tag] = decoded(client);
  }
  return out;
}

describe('BroadcastManager room methods on real ws and socket.io connections', () => {
  it('manager.roomManager is the RoomManager given, manager.connectionManager the ConnectionManager; the old names still work', () => {
    expect(manager.roomManager).toBe(rooms);
    expect(manager.connectionManager).toBe(connections);
    expect(manager.rooms).toBe(rooms);
    expect(manager.connections).toBe(connections);
    expect(rooms.connectionManager).toBe(connections);
    // Without a RoomManager the manager creates one on the same ConnectionManager.
    const other = new BroadcastManager(connections);
    expect(other.roomManager).toBeInstanceOf(RoomManager);
    expect(other.roomManager).not.toBe(rooms);
    expect(other.roomManager.connectionManager).toBe(connections);
    expect(other.connectionManager).toBe(connections);
  });

  it('each room method hands over to the manager\'s roomManager, with the same arguments and its result', () => {
    const calls: Array<[string, unknown[]]> = [];
    const methods = ['createRoom', 'deleteRoom', 'joinRoom', 'leaveRoom', 'leaveAllRooms', 'getRoomConnections', 'getConnectionRooms'] as const;
    const results = new Map<string, unknown>([
      ['createRoom', false], ['deleteRoom', true], ['joinRoom', false], ['leaveRoom', true],
      ['leaveAllRooms', undefined], ['getRoomConnections', new Set(['x'])], ['getConnectionRooms', new Set(['y'])],
    ]);
    for (const name of methods) {
      vi.spyOn(rooms, name).mockImplementation(((...args: unknown[]) => {
        calls.push([name, args]);
        return results.get(name);
      }) as never);
    }
    const a = id('a1');
    expect(manager.createRoom('lobby')).toBe(false);
    expect(manager.deleteRoom('lobby')).toBe(true);
    expect(manager.joinRoom(a, 'lobby')).toBe(false);
    expect(manager.leaveRoom(a, 'lobby')).toBe(true);
    expect(manager.leaveAllRooms(a)).toBeUndefined();
    expect(manager.getRoomConnections('lobby')).toBe(results.get('getRoomConnections'));
    expect(manager.getConnectionRooms(a)).toBe(results.get('getConnectionRooms'));
    expect(calls).toEqual([
      ['createRoom', ['lobby']],
      ['deleteRoom', ['lobby']],
      ['joinRoom', [a, 'lobby']],
      ['leaveRoom', [a, 'lobby']],
      ['leaveAllRooms', [a]],
      ['getRoomConnections', ['lobby']],
      ['getConnectionRooms', [a]],
    ]);
    // Nothing reached the Broadcaster directly.
    expect(manager.broadcaster.rooms.size).toBe(0);
  });

  it('createRoom makes an empty room once: true, then false; broadcasting to it reaches nobody', async () => {
    expect(manager.createRoom('lobby')).toBe(true);
    expect(manager.createRoom('lobby')).toBe(false);
    expect(rooms.createRoom('lobby')).toBe(false); // one room, whichever object created it
    expect(rooms.hasRoom('lobby')).toBe(true);
    expect(manager.getRoomConnections('lobby')).toEqual(new Set());
    expect(manager.getStats()).toMatchObject({ totalRooms: 1, roomMemberships: 0 });
    expect(await manager.broadcastToRoom('lobby', { type: 'nobody' })).toMatchObject({ successful: 0, failed: 0, totalConnections: 0, messageType: 'nobody' });
    const got = await receivedUpToMarker('end');
    for (const tag of clients.keys()) expect(got[tag]).toEqual(['end']);
  });

  it('joinRoom takes ws and socket.io connections alike; broadcastToRoom reaches exactly the members', async () => {
    const [a, b] = [id('a1'), id('b1')];
    manager.createRoom('lobby');
    expect(manager.joinRoom(a, 'lobby')).toBe(true);
    expect(manager.joinRoom(b, 'lobby')).toBe(true);
    expect(manager.joinRoom(b, 'lobby')).toBe(false); // already a member
    expect(manager.joinRoom('no-such-connection', 'lobby')).toBe(false);
    expect(manager.getRoomConnections('lobby')).toEqual(new Set([a, b]));

    const result = await manager.broadcastToRoom('lobby', { type: 'chat', text: 'members only' });
    expect(result).toMatchObject({ successful: 2, failed: 0, totalConnections: 2, messageType: 'chat', removed: 0 });
    const got = await receivedUpToMarker('end');
    expect(got).toEqual({
      a1: [{ type: 'chat', text: 'members only' }, 'end'],
      b1: [{ type: 'chat', text: 'members only' }, 'end'],
      c1: ['end'],
      d1: ['end'],
    });
    // Each transport delivered its own way: JSON text on ws, the value on socket.io.
    expect(clients.get('a1')!.received[0]).toBe('{"type":"chat","text":"members only"}');
    expect(clients.get('b1')!.received[0]).toEqual({ type: 'chat', text: 'members only' });
  });

  it('leaveRoom takes one connection out: true once, then false; the room keeps the others', async () => {
    const [a, b, d] = [id('a1'), id('b1'), id('d1')];
    manager.createRoom('lobby');
    for (const c of [a, b, d]) manager.joinRoom(c, 'lobby');
    expect(manager.leaveRoom(b, 'lobby')).toBe(true);
    expect(manager.leaveRoom(b, 'lobby')).toBe(false);
    expect(manager.leaveRoom(a, 'unknown')).toBe(false);
    expect(manager.getRoomConnections('lobby')).toEqual(new Set([a, d]));
    expect(manager.getConnectionRooms(b)).toEqual(new Set());

    expect(await manager.broadcastToRoom('lobby', 'after leave')).toMatchObject({ successful: 2, totalConnections: 2 });
    expect(await receivedUpToMarker('end')).toEqual({ a1: ['after leave', 'end'], b1: ['end'], c1: ['end'], d1: ['after leave', 'end'] });
  });

  it('getRoomConnections and getConnectionRooms list memberships across both transports, as copies', () => {
    const [a, b, c] = [id('a1'), id('b1'), id('c1')];
    manager.createRoom('lobby');
    manager.joinRoom(a, 'lobby');
    manager.joinRoom(b, 'lobby');
    manager.joinRoom(b, 'games');
    manager.joinRoom(c, 'games');
    expect(manager.getRoomConnections('lobby')).toEqual(new Set([a, b]));
    expect(manager.getRoomConnections('games')).toEqual(new Set([b, c]));
    expect(manager.getRoomConnections('unknown')).toEqual(new Set());
    expect(manager.getConnectionRooms(b)).toEqual(new Set(['lobby', 'games']));
    expect(manager.getConnectionRooms(a)).toEqual(new Set(['lobby']));
    expect(manager.getConnectionRooms(id('d1'))).toEqual(new Set());
    expect(manager.getConnectionRooms('no-such-connection')).toEqual(new Set());
    // The same answers as the RoomManager's, and changing a returned Set changes nothing.
    expect(manager.getRoomConnections('games')).toEqual(rooms.getRoomConnections('games'));
    manager.getRoomConnections('lobby').delete(a);
    manager.getConnectionRooms(b).clear();
    expect(manager.getRoomConnections('lobby')).toEqual(new Set([a, b]));
    expect(manager.getConnectionRooms(b)).toEqual(new Set(['lobby', 'games']));
    expect(manager.getStats()).toMatchObject({ totalRooms: 2, roomMemberships: 4 });
  });

  it('leaveAllRooms takes a connection out of every room; the others stay members', async () => {
    const [a, b, d] = [id('a1'), id('b1'), id('d1')];
    manager.createRoom('lobby');
    manager.createRoom('games');
    for (const room of ['lobby', 'games']) {
      manager.joinRoom(b, room);
      manager.joinRoom(d, room);
    }
    manager.joinRoom(a, 'games');
    expect(manager.leaveAllRooms(b)).toBeUndefined();
    expect(manager.getConnectionRooms(b)).toEqual(new Set());
    expect(manager.getRoomConnections('lobby')).toEqual(new Set([d]));
    expect(manager.getRoomConnections('games')).toEqual(new Set([a, d]));
    manager.leaveAllRooms('no-such-connection'); // no throw

    expect(await manager.broadcastToRoom('lobby', 'L')).toMatchObject({ successful: 1, totalConnections: 1 });
    expect(await manager.broadcastToRoom('games', 'G')).toMatchObject({ successful: 2, totalConnections: 2 });
    expect(await receivedUpToMarker('end')).toEqual({ a1: ['G', 'end'], b1: ['end'], c1: ['end'], d1: ['L', 'G', 'end'] });
  });

  it('deleteRoom removes the room and its memberships: true once, then false; its members get nothing afterwards', async () => {
    const [a, b] = [id('a1'), id('b1')];
    manager.createRoom('lobby');
    manager.joinRoom(a, 'lobby');
    manager.joinRoom(b, 'lobby');
    manager.joinRoom(b, 'games');
    expect(await manager.broadcastToRoom('lobby', 'before')).toMatchObject({ successful: 2 });

    expect(manager.deleteRoom('lobby')).toBe(true);
    expect(manager.deleteRoom('lobby')).toBe(false);
    expect(manager.deleteRoom('unknown')).toBe(false);
    expect(rooms.hasRoom('lobby')).toBe(false);
    expect(manager.getRoomConnections('lobby')).toEqual(new Set());
    expect(manager.getConnectionRooms(a)).toEqual(new Set());
    expect(manager.getConnectionRooms(b)).toEqual(new Set(['games']));
    expect(await manager.broadcastToRoom('lobby', 'after')).toMatchObject({ successful: 0, failed: 0, totalConnections: 0 });
    expect(manager.getStats()).toMatchObject({ totalRooms: 1, roomMemberships: 1 });

    expect(await receivedUpToMarker('end')).toEqual({ a1: ['before', 'end'], b1: ['before', 'end'], c1: ['end'], d1: ['end'] });
    // The connections themselves are untouched: still registered and reachable.
    expect(await manager.broadcastToUser('alice', 'still here')).toBe(true);
    expect(await manager.broadcastToUser('bob', 'still here')).toBe(true);
  });

  it('a deleted room can be created again, empty', async () => {
    const a = id('a1');
    manager.createRoom('lobby');
    manager.joinRoom(a, 'lobby');
    manager.deleteRoom('lobby');
    expect(manager.createRoom('lobby')).toBe(true);
    expect(manager.getRoomConnections('lobby')).toEqual(new Set());
    expect(await manager.broadcastToRoom('lobby', 'x')).toMatchObject({ totalConnections: 0 });
    expect((await receivedUpToMarker('end')).a1).toEqual(['end']);
  });

  it('a member whose client leaves is no longer in any room', async () => {
    const [a, b] = [id('a1'), id('b1')];
    manager.createRoom('lobby');
    manager.joinRoom(a, 'lobby');
    manager.joinRoom(b, 'lobby');
    const gone = new Promise((resolve) => ioServer.sockets.get('b1').once('disconnect', resolve));
    clients.get('b1')!.close();
    clients.delete('b1');
    await gone;
    expect(manager.getRoomConnections('lobby')).toEqual(new Set([a]));
    expect(manager.getConnectionRooms(b)).toEqual(new Set());
    expect(await manager.broadcastToRoom('lobby', 'x')).toMatchObject({ successful: 1, failed: 0, totalConnections: 1 });
  });

  it('numeric room ids work as their string form; invalid room ids are refused with false and logged, never thrown', () => {
    const a = id('a1');
    expect(manager.createRoom(7)).toBe(true);
    expect(manager.joinRoom(a, 7)).toBe(true);
    expect(manager.getRoomConnections('7')).toEqual(new Set([a]));
    expect(manager.getConnectionRooms(a)).toEqual(new Set(['7']));
    expect(manager.leaveRoom(a, 7)).toBe(true);
    expect(manager.deleteRoom(7)).toBe(true);

    expect(manager.createRoom('')).toBe(false);
    expect(manager.createRoom('bad\u0000room')).toBe(false);
    expect(manager.joinRoom(a, 'x'.repeat(129))).toBe(false);
    expect(manager.createRoom(undefined as unknown as string)).toBe(false);
    expect(manager.deleteRoom(undefined as unknown as string)).toBe(false);
    expect(manager.leaveRoom(a, undefined as unknown as string)).toBe(false);
    expect(manager.getRoomConnections(undefined as unknown as string)).toEqual(new Set());
    expect(manager.broadcaster.rooms.size).toBe(0);
    expect(logger.lines.filter((line) => line.includes('refused'))).toHaveLength(4);
  });
});
