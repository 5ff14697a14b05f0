// Before and after migration: the same legacy calls, in the same order, on the hand-written legacy
// manager (fixtures/legacy-manager.ts) and on @bcast/compat, each on a real server with real
// clients. Callers must get the same return values (legacy fields) and clients the same messages
// and closes. The app code is the legacy app's: connect in the connection handler, disconnect on close.
import { afterEach, describe, expect, it } from 'vitest';
import { BroadcastManager, ConnectionManager, RoomManager, type CompatOptions } from '../src/index.js';
import { LegacyBroadcastManager, LegacyConnectionManager, LegacyRoomManager } from './fixtures/legacy-manager.js';
import { closeClients, connectClient, startServer, type AppServer, type Closed, type TestClient, type TransportName } from './helpers.js';

const quiet = { warn: () => {}, error: () => {} };

interface Flavor {
  readonly name: string;
  readonly transport: TransportName;
  /** How the legacy app sent on this transport. */
  readonly legacy: 'text' | 'emit';
  readonly compat: CompatOptions;
}

const flavors: Flavor[] = [
  { name: 'ws', transport: 'ws', legacy: 'text', compat: {} },
  { name: 'socket.io, values (legacy socket.emit)', transport: 'socket.io', legacy: 'emit', compat: {} },
  { name: 'socket.io, JSON text (legacy socket.send)', transport: 'socket.io', legacy: 'text', compat: { socketIo: { payload: 'json' } } },
];

/** The managers as the app holds them; legacy and compat have the same surface. */
type LegacyFields = { successful: number; failed: number; totalConnections: number; messageType?: string };
type RoomMethods = Pick<RoomManager, 'createRoom' | 'deleteRoom' | 'joinRoom' | 'leaveRoom' | 'leaveAllRooms' | 'getRoomConnections' | 'getConnectionRooms'>;
interface Managers {
  connections: Pick<ConnectionManager, 'connect' | 'disconnect' | 'getUserConnections' | 'getConnectionById' | 'isConnectionAlive' | 'activeConnections'>;
  rooms: RoomMethods;
  /** The legacy manager has the room methods itself, and its two managers as properties. */
  manager: RoomMethods & {
    readonly connectionManager: unknown;
    readonly roomManager: unknown;
    broadcastToAll(message: unknown): Promise<LegacyFields>;
    broadcastToUser(userId: string, message: unknown): Promise<boolean>;
    broadcastToRoom(roomId: string, message: unknown): Promise<LegacyFields>;
    getStats(): { totalBroadcasts: number; successfulSends: number; failedSends: number; totalRooms: number; roomMemberships: number };
  };
  dispose(): Promise<void>;
}

function legacyManagers(flavor: Flavor): Managers {
  const connections = new LegacyConnectionManager();
  const rooms = new LegacyRoomManager(connections);
  const manager = new LegacyBroadcastManager(connections, rooms, flavor.legacy);
  return { connections: connections as unknown as Managers['connections'], rooms, manager, dispose: async () => {} };
}

function compatManagers(flavor: Flavor): Managers {
  const connections = new ConnectionManager({ logger: quiet, ...flavor.compat });
  const rooms = new RoomManager(connections);
  const manager = new BroadcastManager(connections, rooms);
  return { connections, rooms, manager, dispose: () => manager.dispose() };
}

const legacyResult = (r: LegacyFields) => {
  const { successful, failed, totalConnections, messageType } = r;
  return messageType === undefined ? { successful, failed, totalConnections } : { successful, failed, totalConnections, messageType };
};

interface Transcript {
  calls: Array<[string, unknown]>;
  received: Record<string, unknown[]>;
  closes: Record<string, Closed>;
}

let server: AppServer | undefined;
afterEach(async () => {
  closeClients();
  await server?.close();
  server = undefined;
});

/** The legacy app, run once on `m`: every call's result and every client's observations. */
async function run(flavor: Flavor, m: Managers): Promise<Transcript> {
  const { connections, rooms, manager } = m;
  const closeEvent = flavor.transport === 'ws' ? 'close' : 'disconnect';
  server = await startServer(flavor.transport, (userId, socket) => {
    connections.connect(userId, socket);
    socket.on(closeEvent, () => connections.disconnect(userId, socket));
  });
  const s = server;
  const clients = new Map<string, TestClient>();
  for (const [user, tag] of [['alice', 'a1'], ['alice', 'a2'], ['bob', 'b1'], ['carol', 'c1']] as const) clients.set(tag, await connectClient(s, user, tag));
  const infoOf = (tag: string) => [...connections.activeConnections.values()].flat().find((i) => i.socket === s.sockets.get(tag))!;
  const ids = new Map([...clients.keys()].map((tag) => [infoOf(tag).connectionId, tag]));
  const tags = (set: Iterable<string>) => [...set].map((id) => ids.get(id) ?? `unknown:${id}`).sort();
  const id = (tag: string) => infoOf(tag).connectionId;

  const calls: Array<[string, unknown]> = [];
  const call = (label: string, value: unknown) => void calls.push([label, value]);
  const a1 = infoOf('a1');
  call('connect', { userId: a1.userId, id: typeof a1.connectionId, at: a1.connectedAt instanceof Date, counts: [a1.messageCount, a1.errorCount], closing: a1.isClosing });
  call('getUserConnections', connections.getUserConnections('alice').map((i) => ids.get(i.connectionId)));
  call('getConnectionById', connections.getConnectionById(id('b1'))?.userId);
  call('activeConnections', [...connections.activeConnections.keys()].sort());

  call('createRoom', [rooms.createRoom('lobby'), rooms.createRoom('lobby'), rooms.createRoom('games'), rooms.createRoom('empty')]);
  call('joinRoom', [rooms.joinRoom(id('a1'), 'lobby'), rooms.joinRoom(id('b1'), 'lobby'), rooms.joinRoom(id('b1'), 'lobby'), rooms.joinRoom('nope', 'lobby'), rooms.joinRoom(id('b1'), 'games')]);
  call('getRoomConnections', tags(rooms.getRoomConnections('lobby')));
  call('getConnectionRooms', [...rooms.getConnectionRooms(id('b1'))].sort());

  call('all object', legacyResult(await manager.broadcastToAll({ type: 'hello', n: 1 })));
  call('all string', legacyResult(await manager.broadcastToAll('plain text')));
  call('all nested', legacyResult(await manager.broadcastToAll({ nested: { list: [1, 'two', null], flag: true }, unicode: 'héllo ✓' })));
  call('all array', legacyResult(await manager.broadcastToAll([1, 2, 3])));
  call('user', await manager.broadcastToUser('alice', { type: 'dm', text: 'hi' }));
  call('user unknown', await manager.broadcastToUser('nobody', { type: 'dm' }));
  call('room', legacyResult(await manager.broadcastToRoom('lobby', { type: 'room', n: 4 })));
  call('room unknown', legacyResult(await manager.broadcastToRoom('unknown', { type: 'room', n: 5 })));
  call('room empty', legacyResult(await manager.broadcastToRoom('empty', { type: 'room', n: 6 })));
  call('leaveRoom', [rooms.leaveRoom(id('b1'), 'lobby'), rooms.leaveRoom(id('b1'), 'lobby')]);
  call('room after leave', legacyResult(await manager.broadcastToRoom('lobby', 'lobby: only a1')));

  // The same room operations called on the manager itself, as legacy code did.
  call('manager properties', [manager.connectionManager === connections, manager.roomManager === rooms]);
  call('manager.createRoom', [manager.createRoom('stage'), manager.createRoom('stage'), manager.createRoom('lobby')]);
  call('manager.joinRoom', [
    manager.joinRoom(id('a2'), 'stage'), manager.joinRoom(id('c1'), 'stage'), manager.joinRoom(id('c1'), 'stage'),
    manager.joinRoom('nope', 'stage'), manager.joinRoom(id('c1'), 'lobby'),
  ]);
  call('manager.getRoomConnections', [tags(manager.getRoomConnections('stage')), tags(rooms.getRoomConnections('stage')), tags(manager.getRoomConnections('unknown'))]);
  call('manager.getConnectionRooms', [[...manager.getConnectionRooms(id('c1'))].sort(), [...manager.getConnectionRooms('nope')]]);
  call('stage', legacyResult(await manager.broadcastToRoom('stage', { type: 'stage', n: 1 })));
  call('manager.leaveRoom', [manager.leaveRoom(id('a2'), 'stage'), manager.leaveRoom(id('a2'), 'stage'), manager.leaveRoom(id('a2'), 'unknown')]);
  call('stage after leave', legacyResult(await manager.broadcastToRoom('stage', 'stage: only c1')));
  call('manager.leaveAllRooms', manager.leaveAllRooms(id('c1')));
  call('after leaveAllRooms', [[...manager.getConnectionRooms(id('c1'))], tags(manager.getRoomConnections('lobby')), tags(manager.getRoomConnections('stage'))]);
  call('stage emptied', legacyResult(await manager.broadcastToRoom('stage', { type: 'stage', n: 2 })));
  manager.joinRoom(id('c1'), 'stage');
  manager.joinRoom(id('a1'), 'stage');
  call('manager.deleteRoom', [manager.deleteRoom('stage'), manager.deleteRoom('stage'), manager.deleteRoom('unknown')]);
  call('after deleteRoom', [tags(manager.getRoomConnections('stage')), [...manager.getConnectionRooms(id('c1'))], [...manager.getConnectionRooms(id('a1'))].sort()]);
  call('stage deleted', legacyResult(await manager.broadcastToRoom('stage', { type: 'stage', n: 3 })));

  const carol = infoOf('c1');
  carol.isClosing = true;
  call('all with one closing', legacyResult(await manager.broadcastToAll({ type: 'n', n: 7 })));
  call('alive closing', connections.isConnectionAlive(carol));
  carol.isClosing = false;

  if (flavor.transport === 'ws') {
    // Bob's socket dies under the app (terminated); the next broadcast finds it dead.
    s.sockets.get('b1').terminate();
    call('all with one dead', legacyResult(await manager.broadcastToAll({ type: 'n', n: 8 })));
    call('dead is gone', [connections.getUserConnections('bob').length, tags(rooms.getRoomConnections('games'))]);
  }

  call('disconnect', connections.disconnect('alice', s.sockets.get('a2'), 4001, 'bye'));
  call('disconnect again', connections.disconnect('alice', s.sockets.get('a2'), 4001, 'bye'));
  call('user after disconnect', await manager.broadcastToUser('alice', { type: 'n', n: 9 }));
  call('alive', connections.isConnectionAlive(infoOf('a1')));
  call('all end', legacyResult(await manager.broadcastToAll('end')));

  const received: Record<string, unknown[]> = {};
  const closes: Record<string, Closed> = {};
  for (const [tag, client] of clients) {
    const gone = tag === 'a2' || (tag === 'b1' && flavor.transport === 'ws');
    if (gone) closes[tag] = await client.closed;
    else await client.waitForValue('end');
    received[tag] = [...client.received];
  }
  const stats = manager.getStats();
  call('stats', { totalBroadcasts: stats.totalBroadcasts, successfulSends: stats.successfulSends, failedSends: stats.failedSends, totalRooms: stats.totalRooms, roomMemberships: stats.roomMemberships });
  return { calls, received, closes };
}

describe.each(flavors)('the same legacy calls before and after migration: $name', (flavor) => {
  it('give callers the same results and clients the same messages and closes', async () => {
    const legacy = legacyManagers(flavor);
    const before = await run(flavor, legacy);
    await server?.close();
    closeClients();
    const compat = compatManagers(flavor);
    let after: Transcript;
    try {
      after = await run(flavor, compat);
    } finally {
      await compat.dispose();
    }
    // The legacy transcript is what the contract says (so the comparison is not vacuous)...
    const calls = new Map(before.calls);
    expect(calls.get('all object')).toEqual({ successful: 4, failed: 0, totalConnections: 4, messageType: 'hello' });
    expect(calls.get('user unknown')).toBe(false);
    expect(calls.get('room unknown')).toEqual({ successful: 0, failed: 0, totalConnections: 0, messageType: 'room' });
    expect(calls.get('all with one closing')).toMatchObject({ successful: 3, failed: 1 });
    expect(calls.get('manager properties')).toEqual([true, true]);
    expect(calls.get('manager.joinRoom')).toEqual([true, true, false, false, true]);
    expect(calls.get('stage')).toEqual({ successful: 2, failed: 0, totalConnections: 2, messageType: 'stage' });
    expect(calls.get('stage after leave')).toEqual({ successful: 1, failed: 0, totalConnections: 1 });
    expect(calls.get('stage emptied')).toEqual({ successful: 0, failed: 0, totalConnections: 0, messageType: 'stage' });
    expect(calls.get('manager.deleteRoom')).toEqual([true, false, false]);
    expect(calls.get('stage deleted')).toEqual({ successful: 0, failed: 0, totalConnections: 0, messageType: 'stage' });
    if (flavor.transport === 'ws') {
      expect(calls.get('all with one dead')).toEqual({ successful: 3, failed: 1, totalConnections: 4, messageType: 'n' });
      expect(before.closes.a2).toEqual({ code: 4001, reason: 'bye' });
    }
    const asSent = (value: unknown) => (flavor.legacy === 'text' && typeof value !== 'string' ? JSON.stringify(value) : value);
    expect(before.received.b1?.slice(0, 2)).toEqual([asSent({ type: 'hello', n: 1 }), 'plain text']);
    // ...and @bcast/compat reproduces it exactly.
    expect(after.calls).toEqual(before.calls);
    expect(after.received).toEqual(before.received);
    expect(after.closes).toEqual(before.closes);
  });
});

describe('documented differences (docs/migration.md)', () => {
  it('a message JSON cannot carry is not sent: legacy wrote an empty frame, compat resolves with the error code', async () => {
    const legacy = legacyManagers(flavors[0]!);
    server = await startServer('ws', (userId, socket) => legacy.connections.connect(userId, socket));
    const before = await connectClient(server, 'alice', 'a1');
    expect(await legacy.manager.broadcastToAll(undefined)).toEqual({ successful: 1, failed: 0, totalConnections: 1 });
    await before.waitFor(1);
    expect(before.received).toEqual([Buffer.alloc(0)]); // ws.send(JSON.stringify(undefined)) wrote an empty binary frame
    await server.close();

    const compat = compatManagers(flavors[0]!);
    server = await startServer('ws', (userId, socket) => compat.connections.connect(userId, socket));
    const after = await connectClient(server, 'alice', 'a1');
    expect(await compat.manager.broadcastToAll(undefined)).toMatchObject({ successful: 0, failed: 1, totalConnections: 1, error: 'BCAST_INVALID_MESSAGE' });
    await compat.manager.broadcastToAll('next');
    await after.waitFor(1);
    expect(after.received).toEqual(['next']);
    await compat.dispose();
  });

  it('a room made by joinRoom goes away with its last member (createRoom rooms stay)', async () => {
    // Legacy kept the emptied 'adhoc' room: totalRooms 2 after leaveAllRooms.
    const legacy = legacyManagers(flavors[0]!);
    const legacyInfo = legacy.connections.connect('alice', { readyState: 1, send: () => {} });
    legacy.manager.createRoom('kept');
    legacy.manager.joinRoom(legacyInfo.connectionId, 'kept');
    legacy.manager.joinRoom(legacyInfo.connectionId, 'adhoc');
    legacy.manager.leaveAllRooms(legacyInfo.connectionId);
    expect(legacy.manager.getStats()).toMatchObject({ totalRooms: 2, roomMemberships: 0 });

    const compat = compatManagers(flavors[0]!);
    const { connections, rooms, manager } = compat;
    const info = connections.connect('alice', { readyState: 1, send: () => {} });
    manager.createRoom('kept');
    rooms.joinRoom(info.connectionId, 'kept');
    manager.joinRoom(info.connectionId, 'adhoc');
    expect(manager.getStats()).toMatchObject({ totalRooms: 2, roomMemberships: 2 });
    manager.leaveAllRooms(info.connectionId);
    expect(manager.getStats()).toMatchObject({ totalRooms: 1, roomMemberships: 0 });
    await compat.dispose();
  });

  it('an invalid room id is refused: legacy made a room named "" or "x\\u0000y"; compat returns false', async () => {
    const legacy = legacyManagers(flavors[0]!);
    const compat = compatManagers(flavors[0]!);
    for (const m of [legacy, compat]) m.connections.connect('alice', { readyState: 1, send: () => {} });
    const idOf = (m: Managers) => m.connections.getUserConnections('alice')[0]!.connectionId;
    expect([legacy.manager.createRoom(''), legacy.manager.joinRoom(idOf(legacy), 'x\u0000y')]).toEqual([true, true]);
    expect([compat.manager.createRoom(''), compat.manager.joinRoom(idOf(compat), 'x\u0000y')]).toEqual([false, false]);
    expect(compat.manager.getStats()).toMatchObject({ totalRooms: 0, roomMemberships: 0 });
    await compat.dispose();
  });
});
