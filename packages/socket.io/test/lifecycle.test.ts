import { once } from 'node:events';
import type { ConnectionEntry } from '@bcast/core';
import { afterEach, describe, expect, it } from 'vitest';
import { acceptSocket, closeCodeOf } from '../src/index.js';
import { client, closeAll, connected, startIo, tcpOf } from './helpers.js';
import { guardProcess } from '../../../tests/support/processGuard.js';

guardProcess();

afterEach(closeAll);

describe('inbound messages', () => {
  it('feed join / leave and app messages to the core; replies come back on the broadcast event', async () => {
    const appMessages: unknown[] = [];
    const h = await startIo({
      broadcaster: { allowClientJoins: true, onMessage: (_entry, message) => void appMessages.push(message) },
    });
    const c = await connected(client(h.url));
    c.socket.emit('message', { type: 'join', room: 'lobby', requestId: 1 });
    c.socket.emit('message', JSON.stringify({ type: 'join', room: 'games', requestId: 2 }));
    c.socket.emit('message', { type: 'chat', text: 'hi' });
    c.socket.emit('message', Buffer.from([7, 8]));
    c.socket.emit('message', '{not json');
    expect(await c.waitFor(3)).toEqual([
      { type: 'ok', op: 'join', room: 'lobby', requestId: 1 },
      { type: 'ok', op: 'join', room: 'games', requestId: 2 },
      expect.objectContaining({ type: 'error', code: 'BAD_JSON' }),
    ]);
    expect(appMessages).toEqual([{ type: 'chat', text: 'hi' }, Buffer.from([7, 8])]);
    expect((await h.broadcaster.toRoom('games', { in: 'games' })).delivered).toBe(1);
    expect((await c.waitFor(4))[3]).toEqual({ in: 'games' });
  });

  it('listen on a custom inbound event, or on none', async () => {
    const h = await startIo({ broadcaster: { allowClientJoins: true }, adapter: { event: 'out', inboundEvent: 'in' } });
    const c = await connected(client(h.url, { event: 'out' }));
    c.socket.emit('message', { type: 'join', room: 'a', requestId: 'ignored' });
    c.socket.emit('in', { type: 'join', room: 'a', requestId: 'r' });
    expect(await c.waitFor(1)).toEqual([{ type: 'ok', op: 'join', room: 'a', requestId: 'r' }]);

    const deaf = await startIo({ broadcaster: { allowClientJoins: true }, adapter: { inboundEvent: false } });
    const d = await connected(client(deaf.url));
    d.socket.emit('message', { type: 'join', room: 'a' });
    const [entry] = [...deaf.broadcaster.connections.entries()];
    await deaf.broadcaster.toAll('marker');
    expect(await d.waitFor(1)).toEqual(['marker']);
    expect(deaf.broadcaster.rooms.roomsOf(entry!.id).size).toBe(0);
  });
});

describe('disconnects', () => {
  it('map socket.io reasons to close codes', () => {
    expect(closeCodeOf('client namespace disconnect')).toBe(1000);
    for (const reason of ['server namespace disconnect', 'server shutting down', 'forced server close', 'transport close']) expect(closeCodeOf(reason)).toBe(1001);
    for (const reason of ['ping timeout', 'transport error', 'parse error', 'forced close']) expect(closeCodeOf(reason)).toBe(1006);
  });

  it('unregister on client disconnect and on a killed TCP connection, with the mapped code', async () => {
    const closes: Array<[number, string]> = [];
    let bothGone!: () => void;
    const gone = new Promise<void>((resolve) => (bothGone = resolve));
    const onDisconnect = (_e: ConnectionEntry, code: number, reason: string): void => void (closes.push([code, reason]) === 2 && bothGone());
    const h = await startIo({ broadcaster: { onDisconnect } });
    const polite = await connected(client(h.url));
    const killed = await connected(client(h.url));
    polite.socket.disconnect();
    tcpOf(killed).destroy();
    await gone;
    expect(h.broadcaster.connections.size).toBe(0);
    expect(closes.sort()).toEqual([
      [1000, 'client namespace disconnect'],
      [1001, 'transport close'],
    ]);
  });

  it('a slow consumer closed by the core (1013) is terminated even though its writes never drain', async () => {
    const closes: Array<[number, string]> = [];
    const onDisconnect = (_e: ConnectionEntry, code: number, reason: string): void => void closes.push([code, reason]);
    const h = await startIo({ broadcaster: { maxBufferedBytes: 64 * 1024, onDisconnect } });
    const slow = await connected(client(h.url));
    const serverSocket = h.io.sockets.sockets.get(slow.socket.id!)!;
    tcpOf(slow).pause();
    const pad = 'z'.repeat(50_000);
    for (let i = 0; i < 1_000 && h.broadcaster.connections.size === 1; i += 1) {
      await h.broadcaster.toAll({ i, pad });
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(h.broadcaster.getStats().monitor.disconnects).toEqual({ '1013:slow_consumer': 1 });
    expect(closes).toEqual([[1013, 'slow consumer']]); // not the 1001 of the socket.io disconnect it causes
    // disconnect(true) waits for engine.io's write buffer to drain, which never happens: the core's
    // terminate() 1 s later destroys the transport.
    if (serverSocket.conn.readyState !== 'closed') await once(serverSocket.conn, 'close');
    expect(h.io.engine.clientsCount).toBe(0);
  });
});

describe('dispose()', () => {
  it('disconnects its sockets, stops registering new ones and removes its middleware and listener', async () => {
    const h = await startIo();
    const nsp = h.io.sockets as unknown as { _fns: unknown[]; listenerCount(event: string): number };
    expect([nsp._fns.length, nsp.listenerCount('connection')]).toEqual([1, 1]);
    const a = await connected(client(h.url));
    const reasons = new Promise((resolve) => a.socket.once('disconnect', resolve));
    await h.adapter.dispose();
    expect(await reasons).toBe('io server disconnect');
    expect(h.broadcaster.connections.size).toBe(0);
    expect([nsp._fns.length, nsp.listenerCount('connection')]).toEqual([0, 0]);
    await connected(client(h.url));
    expect(h.broadcaster.connections.size).toBe(0);
    await h.adapter.dispose(); // idempotent
  });

  it('destroys transports that cannot flush within closeTimeoutMs', async () => {
    const h = await startIo({ broadcaster: { maxBufferedBytes: 512 * 1024 * 1024 }, adapter: { closeTimeoutMs: 100 } });
    const stalled = await connected(client(h.url));
    const conn = h.io.sockets.sockets.get(stalled.socket.id!)!.conn as unknown as { writeBuffer: unknown[]; readyState: string };
    tcpOf(stalled).pause();
    const pad = 'w'.repeat(100_000);
    for (let i = 0; i < 500 && conn.writeBuffer.length === 0; i += 1) {
      await h.broadcaster.toAll({ i, pad });
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(conn.writeBuffer.length).toBeGreaterThan(0);
    await h.adapter.dispose();
    expect(conn.readyState).toBe('closed');
  });
});

describe('acceptSocket', () => {
  it('registers a socket the app hands over (what @bcast/compat does) and wires it like attachToServer', async () => {
    const closes: Array<[number, string]> = [];
    let unregistered!: () => void;
    const gone = new Promise<void>((resolve) => (unregistered = resolve));
    const h = await startIo({
      namespace: '/unused',
      broadcaster: { allowClientJoins: true, onDisconnect: (_e, code, reason) => void (closes.push([code, reason]), unregistered()) },
    });
    h.io.on('connection', (socket) => acceptSocket(h.broadcaster, socket, { userId: 'legacy', data: { from: 'compat' }, event: 'legacy' }));
    const c = await connected(client(h.url, { event: 'legacy' }));
    const [entry] = [...h.broadcaster.connections.entries()];
    expect(entry).toMatchObject({ id: c.socket.id, userId: 'legacy', connection: { data: { from: 'compat' }, isOpen: true, bufferedBytes: 0 } });
    c.socket.emit('message', { type: 'join', room: 'old', requestId: 'j' });
    expect(await c.waitFor(1)).toEqual([{ type: 'ok', op: 'join', room: 'old', requestId: 'j' }]);
    expect((await h.broadcaster.toRoom('old', { hello: 'legacy' })).delivered).toBe(1);
    expect(await c.waitFor(2)).toEqual([expect.anything(), { hello: 'legacy' }]);
    const connection = entry!.connection;
    c.socket.disconnect();
    await gone;
    expect(h.broadcaster.connections.size).toBe(0);
    expect(closes).toEqual([[1000, 'client namespace disconnect']]);
    expect(connection.isOpen).toBe(false);
    expect(() => connection.send(h.broadcaster.encode('late'))).toThrow(expect.objectContaining({ code: 'BCAST_CONNECTION_CLOSED' }));
  });
});
