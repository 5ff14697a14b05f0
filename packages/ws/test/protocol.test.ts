import { once } from 'node:events';
import { CloseCode, type ConnectionEntry } from '@bcast/core';
import { afterEach, describe, expect, it } from 'vitest';
import { recommendedServerOptions } from '../src/index.js';
import { openClient, startWs, type Harness } from './helpers.js';
import { guardProcess } from '../../../tests/support/processGuard.js';

guardProcess();

let harness: Harness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

const authenticate = (request: { headers: Record<string, string | string[] | undefined> }) => String(request.headers['x-user'] ?? '') || false;
const as = (user: string) => ({ headers: { 'x-user': user } });

describe('the inbound protocol over a real socket', () => {
  it('joins through authorizeJoin, and answers BAD_JSON, UNKNOWN_TYPE and INVALID_ROOM', async () => {
    const asked: [string | undefined, string][] = [];
    harness = await startWs({
      adapter: { authenticate },
      broadcaster: {
        authorizeJoin: (connection: ConnectionEntry, room: string) => {
          asked.push([connection.userId, room]);
          return room.startsWith(`${connection.userId}:`);
        },
      },
    });
    const client = await openClient(harness.url, as('alice'));
    const [entry] = harness.broadcaster.connections.byUser('alice');
    expect(await client.request(JSON.stringify({ type: 'join', room: 'alice:inbox', requestId: 'r1' }))).toEqual({
      type: 'ok',
      op: 'join',
      room: 'alice:inbox',
      requestId: 'r1',
    });
    expect(harness.broadcaster.rooms.members('alice:inbox').has(entry!.id)).toBe(true);
    expect(await client.request(JSON.stringify({ type: 'join', room: 'bob:inbox', requestId: 2 }))).toMatchObject({
      type: 'error',
      code: 'FORBIDDEN',
      requestId: 2,
    });
    expect(asked).toEqual([
      ['alice', 'alice:inbox'],
      ['alice', 'bob:inbox'],
    ]);
    expect(await client.request('{')).toMatchObject({ type: 'error', code: 'BAD_JSON' });
    expect(await client.request(JSON.stringify({ type: 'nope', requestId: 'r3' }))).toMatchObject({
      type: 'error',
      code: 'UNKNOWN_TYPE',
      requestId: 'r3',
    });
    for (const room of ['x'.repeat(129), 'bad\u0007room', 42]) {
      expect(await client.request(JSON.stringify({ type: 'join', room, requestId: 'r4' }))).toMatchObject({
        type: 'error',
        code: 'INVALID_ROOM',
        requestId: 'r4',
      });
    }
    expect(harness.broadcaster.rooms.roomsOf(entry!.id)).toEqual(new Set(['alice:inbox']));
    // A bad message never closes the connection: a broadcast to the room still arrives.
    await harness.broadcaster.toRoom('alice:inbox', { type: 'hello' });
    expect(JSON.parse(String((await client.waitFor(client.frames.length + 1)).at(-1)))).toEqual({ type: 'hello' });
    expect(client.ws.readyState).toBe(client.ws.OPEN);
  });

  it('closes with 1009 a frame over maxPayload (recommendedServerOptions) and keeps serving others', async () => {
    let unregistered!: (user: string | undefined) => void;
    const gone = new Promise<string | undefined>((resolve) => (unregistered = resolve));
    harness = await startWs({ adapter: { authenticate }, broadcaster: { onDisconnect: (entry) => unregistered(entry.userId) } });
    const big = await openClient(harness.url, as('big'));
    const other = await openClient(harness.url, as('other'));
    big.ws.send('x'.repeat(65_537));
    expect((await big.closed).code).toBe(CloseCode.MessageTooBig);
    expect(await gone).toBe('big');
    expect(harness.broadcaster.connections.size).toBe(1);
    const result = await harness.broadcaster.toAll('still here');
    expect(result.delivered).toBe(1);
    expect(await other.waitFor(1)).toEqual(['still here']);
  });

  it('accepts a message of exactly maxPayload bytes', async () => {
    const received: unknown[] = [];
    let both!: () => void;
    const arrived = new Promise<void>((resolve) => (both = resolve));
    harness = await startWs({
      adapter: { authenticate },
      broadcaster: { protocol: false, onMessage: (_c, message) => void (received.push(message) === 2 && both()) },
    });
    const client = await openClient(harness.url, as('alice'));
    const text = 'y'.repeat(65_536);
    client.ws.send(text);
    client.ws.send('after');
    await arrived;
    expect(received).toEqual([text, 'after']);
    expect(client.ws.readyState).toBe(client.ws.OPEN);
  });
});

describe('recommendedServerOptions', () => {
  it('are the documented safe limits', () => {
    expect(recommendedServerOptions).toEqual({ maxPayload: 65_536, perMessageDeflate: false, skipUTF8Validation: false, maxFragments: 1_024 });
    expect(Object.isFrozen(recommendedServerOptions)).toBe(true);
  });

  it('closes invalid UTF-8 with 1007 and a 1,025-fragment message with 1008', async () => {
    harness = await startWs({ adapter: { authenticate } });
    const invalid = await openClient(harness.url, as('invalid'));
    invalid.ws.send(Buffer.from([0x7b, 0xc0, 0xaf, 0x7d]), { binary: false });
    expect((await invalid.closed).code).toBe(CloseCode.InvalidPayload);
    const flood = await openClient(harness.url, as('flood'));
    for (let i = 0; i < 1_025; i++) flood.ws.send('a', { fin: false });
    flood.ws.send('a', { fin: true });
    expect((await flood.closed).code).toBe(CloseCode.PolicyViolation);
    const fine = await openClient(harness.url, as('fine'));
    for (let i = 0; i < 1_000; i++) fine.ws.send(' ', { fin: false });
    expect(await fine.request('{"type":"ping","requestId":"p"}')).toEqual({ type: 'pong', requestId: 'p' });
  });
});

describe('heartbeat', () => {
  it('terminates a client that stops answering pings and keeps one that answers', async () => {
    const disconnected: [string | undefined, number][] = [];
    harness = await startWs({
      adapter: { authenticate },
      broadcaster: { pingIntervalMs: 300, onDisconnect: (entry, code) => void disconnected.push([entry.userId, code]) },
    });
    const zombie = await openClient(harness.url, { ...as('zombie'), autoPong: false });
    const healthy = await openClient(harness.url, as('healthy'));
    let pings = 0;
    const pinged = new Promise<void>((resolve) => healthy.ws.on('ping', () => ++pings === 4 && resolve()));
    await zombie.closed;
    await pinged;
    expect(disconnected).toEqual([['zombie', CloseCode.GoingAway]]);
    expect([...harness.broadcaster.connections.byUser('healthy')]).toHaveLength(1);
    expect(healthy.ws.readyState).toBe(healthy.ws.OPEN);
  });
});

describe('connection loss', () => {
  it("unregisters a client whose TCP connection was destroyed without a close frame, from users and rooms, on its socket's close", async () => {
    // The default heartbeat (30 s) cannot be what finds it within this test: the socket's close event does.
    harness = await startWs({ adapter: { authenticate }, broadcaster: { allowClientJoins: true } });
    const victim = await openClient(harness.url, as('victim'));
    await victim.request(JSON.stringify({ type: 'join', room: 'lobby' }));
    expect(harness.broadcaster.rooms.members('lobby').size).toBe(1);
    const serverSide = [...harness.wss.clients][0]!;
    const closed = once(serverSide, 'close');
    (victim.ws as unknown as { _socket: { destroy(): void } })._socket.destroy();
    await closed;
    expect(harness.broadcaster.connections.size).toBe(0);
    expect(harness.broadcaster.connections.userCount).toBe(0);
    expect(harness.broadcaster.rooms.members('lobby').size).toBe(0);
    expect((await harness.broadcaster.toRoom('lobby', 'anyone?')).recipients).toBe(0);
  });
});
