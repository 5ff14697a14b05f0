// The legacy BroadcastManager contract (docs/legacy-api.md), case by case, on real ws and socket.io
// servers with real clients. The app code in these tests is what legacy code did: hand each raw
// socket to `connections.connect(userId, socket)` in the server's connection handler.
import type { ConnectionEntry } from '@bcast/core';
import { Broadcaster, CloseCode, ErrorCode, isBcastError } from '@bcast/core';
import { attachToServer } from '@bcast/socket.io';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BroadcastManager, ConnectionManager, RoomManager, type CompatOptions } from '../src/index.js';
import {
  closeClients,
  connectClient,
  decoded,
  epipe,
  failNextWrite,
  recordingLogger,
  serverSideClosed,
  startServer,
  type AppServer,
  type TestClient,
  type TransportName,
} from './helpers.js';

const LEGACY_KEYS = ['connectionId', 'userId', 'socket', 'connectedAt', 'messageCount', 'errorCount', 'isClosing'];

describe.each<TransportName>(['ws', 'socket.io'])('legacy contract on %s', (transport) => {
  let server: AppServer;
  let connections: ConnectionManager;
  let rooms: RoomManager;
  let manager: BroadcastManager;
  let logger: ReturnType<typeof recordingLogger>;
  let disconnects: Array<{ userId: string | undefined; code: number; reason: string }>;

  async function setUp(options: CompatOptions = {}): Promise<void> {
    logger = recordingLogger();
    disconnects = [];
    connections = new ConnectionManager();
    rooms = new RoomManager(connections);
    manager = new BroadcastManager(connections, rooms, {
      logger,
      onDisconnect: (entry: ConnectionEntry, code: number, reason: string) => void disconnects.push({ userId: entry.userId, code, reason }),
      ...options,
    });
    server = await startServer(transport, (userId, socket) => connections.connect(userId, socket));
  }

  beforeEach(() => setUp());
  afterEach(async () => {
    closeClients();
    await manager.dispose();
    await server.close();
  });

  const infoOf = (tag: string) => {
    const socket = server.sockets.get(tag);
    const info = [...connections.activeConnections.values()].flat().find((i) => i.socket === socket);
    if (!info) throw new Error(`${tag} is not registered`);
    return info;
  };
  /** What a client received, decoded; waits for `n` messages first. */
  const got = async (client: TestClient, n: number): Promise<unknown[]> => {
    await client.waitFor(n);
    return decoded(client);
  };

  it('connect() registers a raw socket and returns a live ConnectionInfo with the legacy fields', async () => {
    await connectClient(server, 'alice', 'a1');
    const infos = connections.getUserConnections('alice');
    expect(infos).toHaveLength(1);
    const info = infos[0]!;
    expect(Object.keys(info).sort()).toEqual([...LEGACY_KEYS].sort());
    expect(info).toMatchObject({ userId: 'alice', messageCount: 0, errorCount: 0, isClosing: false });
    expect(info.connectionId).toEqual(expect.any(String));
    expect(info.connectedAt).toBeInstanceOf(Date);
    expect(info.socket).toBe(server.sockets.get('a1'));
    expect(connections.getConnectionById(info.connectionId)).toBe(info);
    expect(connections.getConnectionById('nope')).toBeUndefined();
    expect(connections.getUserConnections('nobody')).toEqual([]);
    expect(connections.activeConnections).toEqual(new Map([['alice', [info]]]));
    expect(connections.isConnectionAlive(info)).toBe(true);
    // The same socket again is the same connection, not a second registration.
    expect(connections.connect('alice', server.sockets.get('a1'))).toBe(info);
    expect(manager.broadcaster.connections.size).toBe(1);
    // A view over the core's entry, not a copy: the Broadcaster's counters show through.
    await manager.broadcastToAll({ n: 1 });
    expect(info.messageCount).toBe(1);
    expect(manager.broadcaster.connections.get(info.connectionId)?.messageCount).toBe(1);
  });

  it('broadcastToAll reaches every connection of every user: objects as JSON, strings as they are', async () => {
    const clients = [await connectClient(server, 'alice', 'a1'), await connectClient(server, 'alice', 'a2'), await connectClient(server, 'bob', 'b1')];
    const first = await manager.broadcastToAll({ type: 'news', text: 'hello' });
    expect(first).toEqual({ successful: 3, failed: 0, totalConnections: 3, messageType: 'news', removed: 0, durationMs: expect.any(Number) });
    const second = await manager.broadcastToAll('plain text');
    expect(second).toMatchObject({ successful: 3, failed: 0, totalConnections: 3 });
    expect(second).not.toHaveProperty('messageType');
    for (const client of clients) {
      await client.waitFor(2);
      expect(client.received).toEqual(transport === 'ws' ? ['{"type":"news","text":"hello"}', 'plain text'] : [{ type: 'news', text: 'hello' }, 'plain text']);
    }
    expect(connections.getUserConnections('alice').map((i) => i.messageCount)).toEqual([2, 2]);
    expect(await manager.broadcastToAll([1, 2])).not.toHaveProperty('messageType');
  });

  it('broadcastToUser reaches all connections of that user only; false for an unknown user', async () => {
    const a1 = await connectClient(server, 'alice', 'a1');
    const a2 = await connectClient(server, 'alice', 'a2');
    const b1 = await connectClient(server, 'bob', 'b1');
    expect(await manager.broadcastToUser('alice', { type: 'dm', text: 'hi' })).toBe(true);
    expect(await manager.broadcastToUser('nobody', { type: 'dm' })).toBe(false);
    await manager.broadcastToAll('marker');
    expect(await got(a1, 2)).toEqual([{ type: 'dm', text: 'hi' }, 'marker']);
    expect(await got(a2, 2)).toEqual([{ type: 'dm', text: 'hi' }, 'marker']);
    expect(await got(b1, 1)).toEqual(['marker']);
  });

  it('false for a user whose connections are all gone', async () => {
    const b1 = await connectClient(server, 'bob', 'b1');
    const closed = serverSideClosed(transport, server.sockets.get('b1'));
    b1.close();
    await closed;
    expect(await manager.broadcastToUser('bob', { text: 'anyone?' })).toBe(false);
  });

  it('rooms: create, join, leave, list, delete; broadcastToRoom reaches the members only', async () => {
    const a1 = await connectClient(server, 'alice', 'a1');
    const b1 = await connectClient(server, 'bob', 'b1');
    const c1 = await connectClient(server, 'carol', 'c1');
    const [a, b] = [infoOf('a1').connectionId, infoOf('b1').connectionId];

    expect(rooms.createRoom('lobby')).toBe(true);
    expect(rooms.createRoom('lobby')).toBe(false);
    expect(await manager.broadcastToRoom('lobby', { type: 'x' })).toEqual({
      successful: 0, failed: 0, totalConnections: 0, messageType: 'x', removed: 0, durationMs: expect.any(Number),
    });
    expect(rooms.joinRoom(a, 'lobby')).toBe(true);
    expect(rooms.joinRoom(a, 'lobby')).toBe(false);
    expect(rooms.joinRoom(b, 'lobby')).toBe(true);
    expect(rooms.joinRoom('no-such-connection', 'lobby')).toBe(false);
    expect(rooms.joinRoom(b, 'games')).toBe(true);
    expect(rooms.getRoomConnections('lobby')).toEqual(new Set([a, b]));
    expect(rooms.getConnectionRooms(b)).toEqual(new Set(['lobby', 'games']));
    expect(rooms.getRoomConnections('unknown')).toEqual(new Set());

    expect(await manager.broadcastToRoom('lobby', { type: 'room', n: 1 })).toMatchObject({ successful: 2, failed: 0, totalConnections: 2, messageType: 'room' });
    expect(await manager.broadcastToRoom('unknown', { type: 'room', n: 2 })).toMatchObject({ successful: 0, failed: 0, totalConnections: 0 });

    expect(rooms.leaveRoom(b, 'lobby')).toBe(true);
    expect(rooms.leaveRoom(b, 'lobby')).toBe(false);
    expect(await manager.broadcastToRoom('lobby', 'only alice')).toMatchObject({ successful: 1, totalConnections: 1 });
    rooms.leaveAllRooms(b);
    expect(rooms.getConnectionRooms(b)).toEqual(new Set());
    expect(rooms.deleteRoom('lobby')).toBe(true);
    expect(rooms.deleteRoom('lobby')).toBe(false);
    expect(rooms.getConnectionRooms(a)).toEqual(new Set());

    await manager.broadcastToAll('end');
    expect(await got(a1, 3)).toEqual([{ type: 'room', n: 1 }, 'only alice', 'end']);
    expect(await got(b1, 2)).toEqual([{ type: 'room', n: 1 }, 'end']);
    expect(await got(c1, 1)).toEqual(['end']);
  });

  it('a connection marked isClosing is skipped and counts as failed, and stays registered', async () => {
    const a1 = await connectClient(server, 'alice', 'a1');
    const b1 = await connectClient(server, 'bob', 'b1');
    infoOf('b1').isClosing = true;
    expect(await manager.broadcastToAll({ type: 'x' })).toMatchObject({ successful: 1, failed: 1, totalConnections: 2, removed: 0 });
    expect(connections.isConnectionAlive(infoOf('b1'))).toBe(false);
    infoOf('b1').isClosing = false;
    await manager.broadcastToAll('after');
    expect(await got(a1, 2)).toEqual([{ type: 'x' }, 'after']);
    expect(await got(b1, 1)).toEqual(['after']);
  });

  it.each([
    ['broadcastToAll', 'Connection lost during broadcast'],
    ['broadcastToRoom', 'Connection lost during broadcast'],
    ['broadcastToUser', 'Connection lost'],
  ] as const)('%s: a connection found dead is closed with 1001 "%s" and removed from the registry and its rooms', async (method, reason) => {
    const a1 = await connectClient(server, 'alice', 'a1');
    const b1 = await connectClient(server, 'bob', 'b1');
    rooms.createRoom('lobby');
    rooms.joinRoom(infoOf('a1').connectionId, 'lobby');
    rooms.joinRoom(infoOf('b1').connectionId, 'lobby');
    const bob = infoOf('b1');

    failNextWrite(transport, server.sockets.get('b1'), epipe());
    const message = { type: 'news' };
    const outcome =
      method === 'broadcastToAll' ? await manager.broadcastToAll(message)
      : method === 'broadcastToRoom' ? await manager.broadcastToRoom('lobby', message)
      : await manager.broadcastToUser('bob', message);
    if (method === 'broadcastToUser') expect(outcome).toBe(false);
    else expect(outcome).toMatchObject({ successful: 1, failed: 1, totalConnections: 2, removed: 1 });

    expect(connections.getUserConnections('bob')).toEqual([]);
    expect(connections.getConnectionById(bob.connectionId)).toBeUndefined();
    expect(rooms.getRoomConnections('lobby')).toEqual(new Set([infoOf('a1').connectionId]));
    expect(bob.isClosing).toBe(true);
    expect(connections.isConnectionAlive(bob)).toBe(false);
    expect(disconnects).toEqual([{ userId: 'bob', code: CloseCode.GoingAway, reason }]);
    // The client itself observes the close: ws carries the code and reason; socket.io has no close codes.
    expect(await b1.closed).toEqual(transport === 'ws' ? { code: 1001, reason } : { code: 0, reason: 'io server disconnect' });
    if (method !== 'broadcastToUser') expect(await got(a1, 1)).toEqual([message]);
  });

  it('an unexpected send error increments errorCount, is logged and never escapes; the connection stays', async () => {
    const a1 = await connectClient(server, 'alice', 'a1');
    const b1 = await connectClient(server, 'bob', 'b1');
    failNextWrite(transport, server.sockets.get('b1'), new Error('boom'));
    const result = await manager.broadcastToAll({ type: 'x' });
    expect(result).toMatchObject({ successful: 1, failed: 1, totalConnections: 2, removed: 0 });
    expect(result).not.toHaveProperty('error');
    expect(infoOf('b1')).toMatchObject({ errorCount: 1, messageCount: 0, isClosing: false });
    expect(logger.lines.some((line) => line.includes('boom'))).toBe(true);
    expect(await manager.broadcastToUser('bob', 'again')).toBe(true);
    expect(infoOf('b1')).toMatchObject({ errorCount: 1, messageCount: 1 });
    expect(await got(b1, 1)).toEqual(['again']);
    expect(await got(a1, 1)).toEqual([{ type: 'x' }]);
  });

  it('a client that leaves is removed from the registry and from every room', async () => {
    await connectClient(server, 'alice', 'a1');
    const b1 = await connectClient(server, 'bob', 'b1');
    const bob = infoOf('b1');
    rooms.joinRoom(bob.connectionId, 'lobby');
    const closed = serverSideClosed(transport, server.sockets.get('b1'));
    b1.close();
    await closed;
    expect(connections.getUserConnections('bob')).toEqual([]);
    expect(connections.activeConnections.has('bob')).toBe(false);
    expect(rooms.getRoomConnections('lobby')).toEqual(new Set());
    expect(disconnects.map((d) => d.userId)).toEqual(['bob']);
    expect(await manager.broadcastToAll('x')).toMatchObject({ successful: 1, failed: 0, totalConnections: 1 });
  });

  it('disconnect(userId, socket, code, reason) closes that socket and removes it now', async () => {
    const a1 = await connectClient(server, 'alice', 'a1');
    const a2 = await connectClient(server, 'alice', 'a2');
    const socket = server.sockets.get('a1');
    rooms.joinRoom(infoOf('a1').connectionId, 'lobby');
    expect(connections.disconnect('bob', socket, 4000, 'bye')).toBe(false); // not bob's
    expect(connections.disconnect('alice', socket, 4000, 'bye')).toBe(true);
    expect(connections.getUserConnections('alice').map((i) => i.socket)).toEqual([server.sockets.get('a2')]);
    expect(rooms.getRoomConnections('lobby')).toEqual(new Set());
    expect(connections.disconnect('alice', socket)).toBe(false);
    expect(await a1.closed).toEqual(transport === 'ws' ? { code: 4000, reason: 'bye' } : { code: 0, reason: 'io server disconnect' });
    expect(disconnects).toEqual([{ userId: 'alice', code: 4000, reason: 'bye' }]);
    await manager.broadcastToUser('alice', 'still here');
    expect(await got(a2, 1)).toEqual(['still here']);
  });

  it('disconnect without a code closes with 1000', async () => {
    const a1 = await connectClient(server, 'alice', 'a1');
    expect(connections.disconnect('alice', server.sockets.get('a1'))).toBe(true);
    expect(await a1.closed).toEqual(transport === 'ws' ? { code: 1000, reason: '' } : { code: 0, reason: 'io server disconnect' });
  });

  describe('invalid caller input resolves a zero-delivery result with the error code (nothing is sent)', () => {
    it.each([
      ['undefined', undefined, ErrorCode.InvalidMessage],
      ['a function', () => 1, ErrorCode.InvalidMessage],
      ['a circular object', (() => { const o: Record<string, unknown> = { type: 'loop' }; o.self = o; return o; })(), ErrorCode.InvalidMessage],
      ['a BigInt', { type: 'big', n: 10n }, ErrorCode.InvalidMessage],
      ['over 1 MiB', { type: 'huge', text: 'x'.repeat(1_100_000) }, ErrorCode.MessageTooLarge],
    ])('broadcastToAll(%s)', async (_name, message, code) => {
      const clients = [await connectClient(server, 'alice', 'a1'), await connectClient(server, 'bob', 'b1')];
      const result = await manager.broadcastToAll(message);
      expect(result).toMatchObject({ successful: 0, failed: 2, totalConnections: 2, removed: 0, error: code });
      const type = (message as { type?: string } | undefined)?.type;
      if (typeof message === 'object' && type) expect(result.messageType).toBe(type);
      expect(logger.lines.some((line) => line.includes(code))).toBe(true);
      // Nothing was sent: the first thing each client gets is the next broadcast.
      await manager.broadcastToAll('next');
      for (const client of clients) expect(await got(client, 1)).toEqual(['next']);
      expect(manager.getStats()).toMatchObject({ totalBroadcasts: 2, successfulSends: 2, failedSends: 2 });
    });

    it('broadcastToRoom with an invalid room id gives a zero result; broadcastToUser with an invalid user id gives false', async () => {
      const a1 = await connectClient(server, 'alice', 'a1');
      rooms.joinRoom(infoOf('a1').connectionId, 'lobby');
      expect(await manager.broadcastToRoom('', 'x')).toMatchObject({ successful: 0, failed: 0, totalConnections: 0, error: ErrorCode.InvalidRoom });
      expect(await manager.broadcastToRoom(undefined as unknown as string, 'x')).toMatchObject({ totalConnections: 0, error: ErrorCode.InvalidRoom });
      expect(await manager.broadcastToRoom('lobby', undefined)).toMatchObject({ successful: 0, failed: 1, totalConnections: 1, error: ErrorCode.InvalidMessage });
      expect(await manager.broadcastToUser(undefined as unknown as string, 'x')).toBe(false);
      expect(await manager.broadcastToUser('alice', undefined)).toBe(false);
      expect(rooms.createRoom('bad\u0000room')).toBe(false);
      expect(rooms.joinRoom(infoOf('a1').connectionId, 'x'.repeat(129))).toBe(false);
      await manager.broadcastToAll('next');
      expect(await got(a1, 1)).toEqual(['next']);
    });

    it('with errorMode "reject" the same calls reject with the typed error', async () => {
      await manager.dispose();
      await server.close();
      await setUp({ errorMode: 'reject' });
      await connectClient(server, 'alice', 'a1');
      const codeOf = (p: Promise<unknown>) => p.then(() => 'resolved', (e: unknown) => (isBcastError(e) ? e.code : 'not a BcastError'));
      expect(await codeOf(manager.broadcastToAll(undefined))).toBe(ErrorCode.InvalidMessage);
      expect(await codeOf(manager.broadcastToRoom('', 'x'))).toBe(ErrorCode.InvalidRoom);
      expect(await codeOf(manager.broadcastToUser('', 'x'))).toBe(ErrorCode.InvalidUser);
      // Unknown targets are not errors.
      expect(await manager.broadcastToUser('nobody', 'x')).toBe(false);
      expect(await manager.broadcastToRoom('unknown', 'x')).toMatchObject({ totalConnections: 0 });
      await manager.dispose();
      expect(await codeOf(manager.broadcastToAll('x'))).toBe(ErrorCode.Shutdown);
    });
  });

  it('getStats keeps the legacy keys and adds the core sections; getHealthStatus reports the system', async () => {
    await connectClient(server, 'alice', 'a1');
    await connectClient(server, 'bob', 'b1');
    rooms.createRoom('lobby');
    rooms.joinRoom(infoOf('a1').connectionId, 'lobby');
    rooms.joinRoom(infoOf('b1').connectionId, 'lobby');
    rooms.joinRoom(infoOf('b1').connectionId, 'games');
    infoOf('b1').isClosing = true;
    await manager.broadcastToAll({ type: 'a' });
    await manager.broadcastToRoom('lobby', { type: 'b' });
    await manager.broadcastToUser('alice', { type: 'c' });
    const stats = manager.getStats();
    expect(stats).toMatchObject({ totalBroadcasts: 3, successfulSends: 3, failedSends: 2, totalRooms: 2, roomMemberships: 3 });
    expect(stats).toMatchObject({ connections: 2, users: 2, rooms: 2, broadcasts: 3, deliveries: 3 });
    expect(stats.monitor.operations).toHaveProperty('all');
    expect(stats.reliability).toEqual(expect.any(Object));
    expect(rooms.getStats()).toEqual({ totalRooms: 2, roomMemberships: 3 });

    const health = manager.getHealthStatus();
    expect(health).toMatchObject({ status: 'healthy', system: { connections: 2, users: 2, rooms: 2 }, monitoring: { successRate: expect.any(Number) } });
    expect(health.monitoring.latencyMs).toEqual({ p50: expect.any(Number), p95: expect.any(Number), p99: expect.any(Number) });
    expect(health.reliability).toEqual({ circuits: expect.any(Object) });
    expect(health.system.uptimeMs).toBeGreaterThanOrEqual(0);
  });

  it('a socket that connects after the broadcaster is disposed gets a closing ConnectionInfo, no throw', async () => {
    await manager.broadcaster.dispose();
    const socket = { readyState: 1, send: () => {}, close: () => {} };
    const info = connections.connect('late', socket);
    expect(info).toMatchObject({ userId: 'late', isClosing: true, socket });
    expect(connections.getUserConnections('late')).toEqual([]);
    expect(logger.lines.some((line) => line.includes('BCAST_SHUTDOWN') || line.includes('disposed'))).toBe(true);
  });
});

describe('socket.io payload "json": objects arrive as JSON text, as with socket.send(JSON.stringify(message))', () => {
  let server: AppServer;
  let manager: BroadcastManager;
  afterEach(async () => {
    closeClients();
    await manager.dispose();
    await server.close();
  });

  it('sends JSON text for objects and strings as they are, with the legacy cleanup', async () => {
    const connections = new ConnectionManager({ socketIo: { payload: 'json' } });
    manager = new BroadcastManager(connections);
    server = await startServer('socket.io', (userId, socket) => connections.connect(userId, socket));
    const a1 = await connectClient(server, 'alice', 'a1');
    const b1 = await connectClient(server, 'bob', 'b1');
    expect(await manager.broadcastToAll({ type: 'news', n: 1 })).toMatchObject({ successful: 2, messageType: 'news' });
    expect(await manager.broadcastToUser('alice', 'hi')).toBe(true);
    await a1.waitFor(2);
    expect(a1.received).toEqual(['{"type":"news","n":1}', 'hi']);
    const closed = serverSideClosed('socket.io', server.sockets.get('b1'));
    b1.close();
    await closed;
    expect(connections.getUserConnections('bob')).toEqual([]);
    failNextWrite('socket.io', server.sockets.get('a1'), epipe());
    expect(await manager.broadcastToAll({ n: 2 })).toMatchObject({ successful: 0, failed: 1, removed: 1 });
    expect(await a1.closed).toEqual({ code: 0, reason: 'io server disconnect' });
  });
});

describe('sockets @bcast/socket.io already registered', () => {
  it('are adopted by connect(), not registered twice; the identity from authenticate stays', async () => {
    const logger = recordingLogger();
    const broadcaster = new Broadcaster({ logger });
    const connections = new ConnectionManager({ broadcaster, logger });
    const manager = new BroadcastManager(connections);
    const infos: ReturnType<ConnectionManager['connect']>[] = [];
    let adapter: { dispose(): Promise<void> } | undefined;
    const server = await startServer(
      'socket.io',
      (userId, socket) => infos.push(connections.connect(userId, socket)),
      (io) => void (adapter = attachToServer(broadcaster, io as never, { authenticate: (handshake) => (handshake.auth as { user: string }).user })),
    );
    try {
      // The adapter registers each socket first (its listener came first); the app's connect() adopts it.
      await connectClient(server, 'alice', 'a1');
      const b1 = await connectClient(server, 'bob', 'b1');
      expect(broadcaster.connections.size).toBe(2);
      expect(infos[1]).toMatchObject({ connectionId: server.sockets.get('b1').id, userId: 'bob', socket: server.sockets.get('b1') });
      expect(connections.connect('mallory', server.sockets.get('b1'))).toBe(infos[1]);
      expect(logger.lines.join('\n')).toMatch(/already registered for user "bob"/);
      expect(await manager.broadcastToUser('bob', { type: 'once' })).toBe(true);
      await b1.waitFor(1);
      await manager.broadcastToAll('end');
      await b1.waitForValue('end');
      expect(b1.received).toEqual([{ type: 'once' }, 'end']);
    } finally {
      closeClients();
      await adapter?.dispose();
      await broadcaster.dispose();
      await server.close();
    }
  });
});
