import type { ConnectionEntry } from '@bcast/core';
import { afterEach, describe, expect, it } from 'vitest';
import type { StartOptions, TestClient } from './driver.js';
import { socketIoDriver as driver, type SocketIoServerUnderTest } from './drivers/socketio.js';

// The socket.io driver's key cases, run directly (the shared suite runs them for every adapter).

const servers: SocketIoServerUnderTest[] = [];
const clients: TestClient[] = [];

async function start(options: StartOptions = {}): Promise<SocketIoServerUnderTest> {
  const server = (await driver.start(options)) as SocketIoServerUnderTest;
  servers.push(server);
  return server;
}

async function connect(server: SocketIoServerUnderTest, token?: string): Promise<TestClient> {
  const client = await driver.connect(server, token === undefined ? {} : { token });
  clients.push(client);
  return client;
}


afterEach(async () => {
  for (const client of clients.splice(0)) client.destroy();
  for (const server of servers.splice(0)) {
    await server.dispose();
    await server.close();
  }
});

describe('socket.io driver', () => {
  it('refuses bad credentials and foreign origins before anything is registered', async () => {
    const server = await start({
      authenticate: (token) => (token === 'good' ? { userId: 'u1' } : false),
      allowedOrigins: ['https://app.example'],
    });
    expect(await driver.connectRejected(server, { token: 'forged' })).toEqual({ message: 'unauthorized' });
    expect(await driver.connectRejected(server, {})).toEqual({ message: 'unauthorized' });
    const refusedByEngine: number[] = [];
    server.io.engine.on('connection_error', (error: { code: number }) => refusedByEngine.push(error.code));
    expect(await driver.connectRejected(server, { token: 'good', origin: 'https://evil.example' })).toEqual({ message: 'websocket error' });
    expect(refusedByEngine).toEqual([4]); // engine.io's FORBIDDEN, from allowRequest
    expect(server.broadcaster.connections.size).toBe(0);
    const ok = await driver.connect(server, { token: 'good', origin: 'https://app.example' });
    clients.push(ok);
    expect([...server.broadcaster.connections.entries()].map((e) => e.userId)).toEqual(['u1']);
  });

  it('delivers all / user / room / except to exactly the right clients, in order', async () => {
    const ids: string[] = [];
    const server = await start({
      broadcaster: { allowClientJoins: true, onConnect: (entry: ConnectionEntry) => void ids.push(entry.id) },
      authenticate: (token) => token ?? {},
    });
    const a = await connect(server, 'u1');
    const b = await connect(server, 'u1');
    const c = await connect(server, 'u2');
    const d = await connect(server);
    const [idA] = ids;
    expect(await b.request({ type: 'join', room: 'r', requestId: 'j1' })).toEqual({ type: 'ok', op: 'join', room: 'r', requestId: 'j1' });
    expect(server.broadcaster.join(ids[2] as string, 'r')).toBe(true);

    expect((await server.broadcaster.toAll({ n: 1 })).delivered).toBe(4);
    expect((await server.broadcaster.toUser('u1', { n: 2 })).delivered).toBe(2);
    expect((await server.broadcaster.toRoom('r', { n: 3 })).delivered).toBe(2);
    expect((await server.broadcaster.toAll({ n: 4 }, { except: [idA as string] })).delivered).toBe(3);
    await server.broadcaster.toAll({ n: 'end' });
    await Promise.all([a, b, c, d].map((client) => waitForMessage(client, { n: 'end' })));
    expect(a.messages).toEqual([{ n: 1 }, { n: 2 }, { n: 'end' }]);
    expect(b.messages).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }, { n: 'end' }]);
    expect(c.messages).toEqual([{ n: 1 }, { n: 3 }, { n: 4 }, { n: 'end' }]);
    expect(d.messages).toEqual([{ n: 1 }, { n: 4 }, { n: 'end' }]);
  });

  it('detects a client killed without a close and removes it; the others get everything', async () => {
    const server = await start();
    const [alive1, alive2, victim] = [await connect(server), await connect(server), await connect(server)];
    victim.destroy();
    // The first broadcast goes out before the server has noticed; later ones find it gone.
    let rounds = 0;
    do {
      const result = await server.broadcaster.toAll({ round: rounds });
      expect(result.delivered + result.failed).toBe(result.recipients);
      rounds += 1;
      await Promise.all([alive1, alive2].map((client) => client.waitFor(rounds)));
    } while (server.broadcaster.connections.size > 2 && rounds < 200);
    expect(server.broadcaster.connections.size).toBe(2);
    const result = await server.broadcaster.toAll({ round: 'last' });
    expect(result).toMatchObject({ recipients: 2, delivered: 2, failed: 0 });
    const expected = [...Array.from({ length: rounds }, (_, i) => ({ round: i })), { round: 'last' }];
    expect(await alive1.waitFor(rounds + 1)).toEqual(expected);
    expect(await alive2.waitFor(rounds + 1)).toEqual(expected);
  });

  it('disconnects a client that stops reading while the others receive everything', async () => {
    const closes: Array<[number, string]> = [];
    const onDisconnect = (_e: ConnectionEntry, code: number, reason: string): void => void closes.push([code, reason]);
    const server = await start({ broadcaster: { maxBufferedBytes: 64 * 1024, onDisconnect } });
    const fast = [await connect(server), await connect(server)];
    const slow = await connect(server);
    slow.pauseReading();
    const pad = 'x'.repeat(60_000);
    let sent = 0;
    // The kernel absorbs a few MB first; 1,000 messages of 60 KB is far more than it holds.
    while (server.broadcaster.connections.size === 3 && sent < 1_000) {
      await server.broadcaster.toAll({ seq: sent, pad });
      sent += 1;
      await Promise.all(fast.map((client) => client.waitFor(sent, 20_000)));
    }
    expect(server.broadcaster.connections.size).toBe(2);
    expect(server.broadcaster.getStats().monitor.disconnects).toEqual({ '1013:slow_consumer': 1 });
    expect(closes).toEqual([[1013, 'slow consumer']]);
    for (const client of fast) expect(client.messages.map((m) => (m as { seq: number }).seq)).toEqual(Array.from({ length: sent }, (_, i) => i));
  });

  it('dispose() disconnects every client with 1001 and leaves no listener behind', async () => {
    const server = await start({ allowedOrigins: ['https://app.example'] });
    const attached = server.listenerCounts();
    expect(attached).toMatchObject({ 'engine.allowRequest': 1, 'nsp.connection': 1, 'nsp.middlewares': 1 });
    expect(server.listenersBeforeAttach).toMatchObject({ 'engine.allowRequest': 0, 'nsp.connection': 0, 'nsp.middlewares': 0 });
    const all = [await connect(server), await connect(server), await connect(server)];
    await server.dispose();
    const closes = await Promise.all(all.map((client) => client.closed));
    expect(closes.map((c) => c.code)).toEqual([1001, 1001, 1001]);
    expect(server.broadcaster.connections.size).toBe(0);
    expect(server.listenerCounts()).toEqual(server.listenersBeforeAttach);
  });

  it('delivers one broadcast to 1,000 clients', async () => {
    const server = await start();
    const many: TestClient[] = [];
    const connectBatch = async (n: number): Promise<void> => {
      const batch = await Promise.all(Array.from({ length: n }, () => driver.connect(server)));
      many.push(...batch);
      clients.push(...batch);
    };
    for (let i = 0; i < 1_000; i += 50) await connectBatch(50);
    expect(server.broadcaster.connections.size).toBe(1_000);
    const result = await server.broadcaster.toAll({ hello: 'everyone' });
    expect(result).toMatchObject({ recipients: 1_000, delivered: 1_000, failed: 0 });
    const received = await Promise.all(many.map((client) => client.next(20_000)));
    expect(received.every((m) => (m as { hello?: string }).hello === 'everyone')).toBe(true);
  }, 60_000);
});

async function waitForMessage(client: TestClient, expected: unknown): Promise<void> {
  for (let n = 1; ; n += 1) {
    const messages = await client.waitFor(n);
    if (JSON.stringify(messages[n - 1]) === JSON.stringify(expected)) return;
  }
}
