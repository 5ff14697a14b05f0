// What connect() accepts besides raw ws / socket.io sockets: any core Connection, and the ws-like
// test doubles legacy apps used in their own tests (readyState / send / close), driven exactly as
// the legacy loop drove them. Plus: client frames are left to the app unless it opts in.
import { once } from 'node:events';
import { EventEmitter } from 'node:events';
import { CloseCode } from '@bcast/core';
import type { Connection, EncodedMessage } from '@bcast/core/adapter';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { BroadcastManager, ConnectionManager } from '../src/index.js';
import { closeClients, connectClient, recordingLogger, startServer, type AppServer } from './helpers.js';

class FakeConnection implements Connection {
  readonly sent: string[] = [];
  readonly closes: Array<[number, string]> = [];
  isOpen = true;
  bufferedBytes = 0;
  pings = 0;
  ping: (() => void) | undefined;
  constructor(
    readonly id: string,
    readonly userId: string | undefined,
    withPing = false,
  ) {
    if (withPing) this.ping = () => void (this.pings += 1);
  }
  send(message: EncodedMessage): void {
    this.sent.push(message.text ?? '<binary>');
  }
  close(code: number, reason: string): void {
    this.closes.push([code, reason]);
    this.isOpen = false;
  }
}

/** A legacy test double: what apps passed to their manager in unit tests. */
function mockSocket(readyState = 1) {
  return Object.assign(new EventEmitter(), { readyState, send: vi.fn<(data: string) => void>(), close: vi.fn<(code?: number, reason?: string) => void>() });
}

let managers: BroadcastManager[] = [];
let logger = recordingLogger();
function setUp(options: { pingIntervalMs?: number } = {}) {
  logger = recordingLogger();
  const connections = new ConnectionManager();
  const manager = new BroadcastManager(connections, undefined, { logger, ...options });
  managers.push(manager);
  return { connections, manager };
}
afterEach(async () => {
  vi.useRealTimers();
  for (const m of managers.splice(0)) await m.dispose();
  managers = [];
});

describe('core Connections', () => {
  it('are registered under the user id given to connect(), sent the encoded message and closed by disconnect()', async () => {
    const { connections, manager } = setUp();
    const conn = new FakeConnection('c1', undefined);
    const info = connections.connect('alice', conn);
    expect(info).toMatchObject({ connectionId: 'c1', userId: 'alice', socket: conn });
    expect(await manager.broadcastToUser('alice', { type: 't', n: 1 })).toBe(true);
    expect(conn.sent).toEqual(['{"type":"t","n":1}']);
    expect(connections.disconnect('alice', conn, 4001, 'done')).toBe(true);
    expect(conn.closes).toEqual([[4001, 'done']]);
    expect(connections.getUserConnections('alice')).toEqual([]);
  });

  it('one with the same user and no ping is registered as it is', () => {
    const { connections, manager } = setUp();
    const conn = new FakeConnection('c1', 'bob');
    connections.connect('bob', conn);
    expect(manager.broadcaster.connections.get('c1')?.connection).toBe(conn);
  });

  it('are not pinged: nobody could report their pongs, so the heartbeat would cut them off', () => {
    vi.useFakeTimers();
    const { connections } = setUp({ pingIntervalMs: 1_000 });
    const conn = new FakeConnection('c1', 'bob', true);
    const info = connections.connect('bob', conn);
    vi.advanceTimersByTime(5_000);
    expect(conn.pings).toBe(0);
    expect(connections.isConnectionAlive(info)).toBe(true);
  });
});

describe('legacy ws-like sockets (test doubles, other WebSocket implementations)', () => {
  it('are sent JSON text for objects and strings as they are, through send()', async () => {
    const { connections, manager } = setUp();
    const socket = mockSocket();
    connections.connect('alice', socket);
    expect(await manager.broadcastToAll({ type: 'a', n: 1 })).toMatchObject({ successful: 1, failed: 0, totalConnections: 1, messageType: 'a' });
    await manager.broadcastToUser('alice', 'plain');
    expect(socket.send.mock.calls).toEqual([['{"type":"a","n":1}'], ['plain']]);
    expect(connections.getUserConnections('alice')[0]?.messageCount).toBe(2);
  });

  it('a socket whose readyState is not OPEN counts as failed and is closed with 1001 and removed', async () => {
    const { connections, manager } = setUp();
    const open = mockSocket();
    const gone = mockSocket(3);
    connections.connect('alice', open);
    connections.connect('bob', gone);
    expect(await manager.broadcastToAll({ type: 'x' })).toMatchObject({ successful: 1, failed: 1, totalConnections: 2, removed: 1 });
    expect(gone.send).not.toHaveBeenCalled();
    expect(gone.close.mock.calls).toEqual([[CloseCode.GoingAway, 'Connection lost during broadcast']]);
    expect(connections.getUserConnections('bob')).toEqual([]);
  });

  it('a send that throws "not open" is a dead connection; any other throw is counted in errorCount', async () => {
    const { connections, manager } = setUp();
    const dead = mockSocket();
    dead.send.mockImplementation(() => {
      throw new Error('WebSocket is not open: readyState 2 (CLOSING)');
    });
    const flaky = mockSocket();
    flaky.send.mockImplementationOnce(() => {
      throw new TypeError('something odd');
    });
    connections.connect('dead', dead);
    connections.connect('flaky', flaky);
    expect(await manager.broadcastToUser('dead', 'x')).toBe(false);
    expect(dead.close.mock.calls).toEqual([[1001, 'Connection lost']]);
    expect(await manager.broadcastToAll('y')).toMatchObject({ successful: 0, failed: 1, totalConnections: 1, removed: 0 });
    expect(connections.getUserConnections('flaky')[0]).toMatchObject({ errorCount: 1, messageCount: 0 });
    expect(logger.lines.join('\n')).toContain('something odd');
  });

  it('never throw, whatever was handed over: null, a number, a socket whose getters throw', async () => {
    const { connections, manager } = setUp();
    const good = mockSocket();
    const hostile = {
      get readyState(): number {
        throw new Error('hostile');
      },
      send: () => {},
    };
    for (const [user, socket] of [['a', null], ['b', 42], ['c', hostile], ['d', good]] as const) connections.connect(user, socket);
    expect(await manager.broadcastToAll('hello')).toMatchObject({ successful: 1, failed: 3, totalConnections: 4, removed: 3 });
    expect(good.send).toHaveBeenCalledWith('hello');
    expect([...connections.activeConnections.keys()]).toEqual(['d']);
  });

  it("are removed when they emit 'close'", async () => {
    const { connections } = setUp();
    const socket = mockSocket();
    const info = connections.connect('alice', socket);
    socket.emit('close', 1000, Buffer.from('bye'));
    expect(connections.getUserConnections('alice')).toEqual([]);
    expect(info.isClosing).toBe(true);
  });
});

describe('numeric ids, as JS callers used them', () => {
  it('work for users and rooms, and ConnectionInfo keeps the id as given', async () => {
    const { connections, manager } = setUp();
    const socket = mockSocket();
    const info = connections.connect(42, socket);
    expect(info.userId).toBe(42);
    expect(connections.getUserConnections(42)).toEqual([info]);
    expect(connections.activeConnections.get(42 as unknown as string)).toEqual([info]);
    expect(await manager.broadcastToUser(42, { type: 'dm' })).toBe(true);
    expect(manager.rooms.joinRoom(info.connectionId, 7)).toBe(true);
    expect(manager.rooms.getRoomConnections(7)).toEqual(new Set([info.connectionId]));
    expect(await manager.broadcastToRoom(7, 'room seven')).toMatchObject({ successful: 1, totalConnections: 1 });
    expect(socket.send.mock.calls).toEqual([['{"type":"dm"}'], ['room seven']]);
    expect(connections.disconnect(42, socket, 4000, 'bye')).toBe(true);
    expect(socket.close.mock.calls).toEqual([[4000, 'bye']]);
  });
});

describe("client frames stay the app's business", () => {
  let server: AppServer;
  afterEach(async () => {
    closeClients();
    await server?.close();
  });

  it('the Broadcaster compat creates does not answer client frames (the core protocol is off)', async () => {
    const { connections, manager } = setUp();
    const seen: string[] = [];
    server = await startServer('ws', (userId, socket) => {
      connections.connect(userId, socket);
      socket.on('message', (data: Buffer) => seen.push(data.toString())); // the app's own handler
    });
    const client = await connectClient(server, 'alice', 'a1');
    const serverSocket = server.sockets.get('a1');
    const frames = ['{"type":"join","room":"lobby"}', 'not json', '{"type":"chat","text":"hi"}'];
    for (const frame of frames) {
      const received = once(serverSocket, 'message');
      client.send(frame);
      await received; // compat's listener ran before the app's: any reply would already be on its way
    }
    expect(seen).toEqual(frames);
    await manager.broadcastToAll('marker');
    await client.waitFor(1);
    expect(client.received).toEqual(['marker']); // no protocol reply came before it
    expect(manager.broadcaster.rooms.size).toBe(0);
    expect(manager.getStats().monitor.inboundRejected).toEqual({});
  });
});

