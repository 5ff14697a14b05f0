import { CloseCode, CloseReason, type BroadcasterOptions, type ConnectionEntry } from '@bcast/core';
import { afterEach, describe, expect, it } from 'vitest';
import { guardProcess } from '../../support/processGuard.js';
import type { AdapterDriver, ConnectOptions, Refusal, ServerUnderTest, StartOptions, TestClient } from './driver.js';
import { drivers } from './drivers/index.js';

/**
 * One suite, every adapter (graphql-ws's tests/use.test.ts is the model): real servers on
 * 127.0.0.1 port 0, real clients, the same cases for each driver in drivers/index.ts.
 */

guardProcess();

const authenticate = (token: string | undefined) => {
  if (token === 'throw') throw new Error('auth backend down');
  if (token === 'hang') return new Promise<never>(() => {});
  return token?.startsWith('user:') ? token.slice(5) : false;
};
const as = (user: string, origin?: string): ConnectOptions => (origin === undefined ? { token: `user:${user}` } : { token: `user:${user}`, origin });
const quiet = { warn: () => {}, error: () => {} };

const seq = (n: number, tag = 'n') => Array.from({ length: n }, (_, i) => ({ type: tag, seq: i }));
const END = { type: 'end' };

/**
 * The answer each adapter must give to each kind of refused handshake. Compared whole: a 401 can
 * never pass for a 403, nor an auth refusal for an origin refusal.
 */
const REFUSALS: Readonly<Record<string, { credentials: Refusal; origin: Refusal; authTimeout: Refusal }>> = {
  ws: { credentials: { status: 401 }, origin: { status: 403 }, authTimeout: { status: 503 } },
  express: { credentials: { status: 401 }, origin: { status: 403 }, authTimeout: { status: 503 } },
  'socket.io': {
    credentials: { message: 'unauthorized' },
    // Refused by engine.io's allowRequest before socket.io runs: engine.io answers every refused
    // upgrade with HTTP 400 and gives its reason only on the server (code 4: FORBIDDEN), so the
    // client sees its WebSocket transport fail.
    origin: { message: 'websocket error', cause: 'Unexpected server response: 400', engine: [{ code: 4, reason: 'origin not allowed' }] },
    // socket.io has no status codes: an authenticate that hangs is refused like one that says no.
    authTimeout: { message: 'unauthorized' },
  },
};

describe.each(drivers.map((driver) => [driver.name, driver] as const))('%s adapter', (_name, driver: AdapterDriver) => {
  let server: ServerUnderTest | undefined;
  const clients: TestClient[] = [];

  async function start(options: StartOptions = {}): Promise<ServerUnderTest> {
    server = await driver.start({ authenticate, ...options, broadcaster: { logger: quiet, ...options.broadcaster } });
    return server;
  }
  async function connect(options?: ConnectOptions): Promise<TestClient> {
    const client = await driver.connect(server!, options);
    clients.push(client);
    return client;
  }
  const idOf = (user: string): string => [...server!.broadcaster.connections.byUser(user)][0]!.id;
  const refusals = REFUSALS[driver.name];
  if (!refusals) throw new Error(`REFUSALS has no entry for the ${driver.name} driver`);

  afterEach(async () => {
    for (const client of clients.splice(0)) client.destroy();
    await server?.close();
    server = undefined;
  });

  it('registers an authenticated connection under its userId', async () => {
    const sut = await start();
    await connect(as('alice'));
    expect(sut.broadcaster.connections.size).toBe(1);
    const entries = [...sut.broadcaster.connections.byUser('alice')];
    expect(entries).toHaveLength(1);
    expect(entries[0]!.userId).toBe('alice');
  });

  it('refuses refused, missing and throwing credentials before registration (ws, express: 401; socket.io: "unauthorized")', async () => {
    const sut = await start();
    for (const options of [{ token: 'forged' }, {}, { token: 'throw' }]) {
      expect(await driver.connectRejected(sut, options), JSON.stringify(options)).toEqual(refusals.credentials);
    }
    expect(sut.broadcaster.connections.size).toBe(0);
    expect(sut.broadcaster.connections.userCount).toBe(0);
  });

  it('refuses a foreign origin before authenticate runs (ws, express: 403; socket.io: refused by engine.io)', async () => {
    const asked: (string | undefined)[] = [];
    const sut = await start({ allowedOrigins: ['https://app.example'], authenticate: (token) => (asked.push(token), authenticate(token)) });
    expect(await driver.connectRejected(sut, as('alice', 'https://evil.example'))).toEqual(refusals.origin);
    expect(asked).toEqual([]);
    expect(sut.broadcaster.connections.size).toBe(0);
    await connect(as('alice', 'https://app.example'));
    expect(asked).toEqual(['user:alice']);
    expect(sut.broadcaster.connections.size).toBe(1);
  });

  it('refuses a handshake whose authenticate does not answer within authTimeoutMs (ws, express: 503; socket.io: "unauthorized")', async () => {
    const sut = await start({ authTimeoutMs: 100 });
    expect(await driver.connectRejected(sut, { token: 'hang' })).toEqual(refusals.authTimeout);
    expect(sut.broadcaster.connections.size).toBe(0);
    await connect(as('alice'));
    expect(sut.broadcaster.connections.size).toBe(1);
  });

  it('broadcasts to all: every client gets every message once, in order', async () => {
    const sut = await start();
    const all = [await connect(as('a')), await connect(as('b')), await connect(as('c'))];
    for (const message of seq(20)) await sut.broadcaster.toAll(message);
    await sut.broadcaster.toAll(END);
    for (const client of all) expect(await client.waitFor(21)).toEqual([...seq(20), END]);
  });

  it('broadcasts to a user with two connections, and to nobody else', async () => {
    const sut = await start();
    const alice1 = await connect(as('alice'));
    const alice2 = await connect(as('alice'));
    const bob = await connect(as('bob'));
    for (const message of seq(10)) {
      const result = await sut.broadcaster.toUser('alice', message);
      expect(result).toMatchObject({ recipients: 2, delivered: 2, failed: 0 });
    }
    await sut.broadcaster.toAll(END);
    expect(await alice1.waitFor(11)).toEqual([...seq(10), END]);
    expect(await alice2.waitFor(11)).toEqual([...seq(10), END]);
    expect(await bob.waitFor(1)).toEqual([END]);
  });

  it('broadcasts to a room that clients joined through the protocol and authorizeJoin, or the server joined them to', async () => {
    const authorizeJoin = (connection: ConnectionEntry, room: string) => room !== 'vip' || connection.userId === 'alice';
    const sut = await start({ broadcaster: { authorizeJoin } });
    const alice = await connect(as('alice'));
    const bob = await connect(as('bob'));
    const carol = await connect(as('carol'));
    const dave = await connect(as('dave'));
    expect(await alice.request({ type: 'join', room: 'vip' })).toMatchObject({ type: 'ok', op: 'join', room: 'vip' });
    expect(await bob.request({ type: 'join', room: 'vip' })).toMatchObject({ type: 'error', code: 'FORBIDDEN' });
    expect(await carol.request({ type: 'join', room: 'lobby' })).toMatchObject({ type: 'ok', room: 'lobby' });
    // The server's own join is not the client's request: authorizeJoin does not apply to it.
    expect(sut.broadcaster.join(idOf('dave'), 'vip')).toBe(true);
    expect(sut.broadcaster.rooms.members('vip')).toEqual(new Set([idOf('alice'), idOf('dave')]));
    for (const message of seq(10)) expect(await sut.broadcaster.toRoom('vip', message)).toMatchObject({ recipients: 2, delivered: 2 });
    await sut.broadcaster.toRoom('lobby', { type: 'lobby' });
    await sut.broadcaster.toAll(END);
    expect(await alice.waitFor(11)).toEqual([...seq(10), END]);
    expect(await dave.waitFor(11)).toEqual([...seq(10), END]);
    expect(await bob.waitFor(1)).toEqual([END]);
    expect(await carol.waitFor(2)).toEqual([{ type: 'lobby' }, END]);
  });

  it('broadcasts with except: everyone but the excluded connections', async () => {
    const sut = await start();
    const a = await connect(as('a'));
    const b = await connect(as('b'));
    const c = await connect(as('c'));
    for (const message of seq(10)) {
      const result = await sut.broadcaster.toAll(message, { except: [idOf('b')] });
      expect(result).toMatchObject({ recipients: 2, delivered: 2 });
    }
    await sut.broadcaster.toAll(END);
    expect(await a.waitFor(11)).toEqual([...seq(10), END]);
    expect(await c.waitFor(11)).toEqual([...seq(10), END]);
    expect(await b.waitFor(1)).toEqual([END]);
  });

  it('removes a client killed abruptly (no close frame) from users and rooms', async () => {
    let unregistered!: () => void;
    const gone = new Promise<void>((resolve) => (unregistered = resolve));
    const onDisconnect = (entry: ConnectionEntry): void => void (entry.userId === 'victim' && unregistered());
    const sut = await start({ broadcaster: { allowClientJoins: true, pingIntervalMs: 300, onDisconnect } });
    const victim = await connect(as('victim'));
    const survivor = await connect(as('survivor'));
    await victim.request({ type: 'join', room: 'r' });
    await survivor.request({ type: 'join', room: 'r' });
    const victimId = idOf('victim');
    victim.destroy();
    // Found dead by its close event, a failed send of the next broadcast, or the heartbeat.
    let sent = 0;
    const deadline = Date.now() + 10_000;
    while (sut.broadcaster.connections.has(victimId)) {
      if (Date.now() > deadline) throw new Error('the dead client was never removed');
      const probe = await sut.broadcaster.toRoom('r', { type: 'probe', seq: sent++ });
      expect(probe.delivered + probe.failed + probe.dropped).toBe(probe.recipients);
      // the next probe in 20 ms, unless the client is found dead before
      await Promise.race([gone, new Promise((resolve) => setTimeout(resolve, 20))]);
    }
    expect(sut.broadcaster.connections.byUser('victim').size).toBe(0);
    expect(sut.broadcaster.rooms.roomsOf(victimId).size).toBe(0);
    expect(sut.broadcaster.rooms.members('r')).toEqual(new Set([idOf('survivor')]));
    const result = await sut.broadcaster.toRoom('r', END);
    expect(result).toMatchObject({ recipients: 1, delivered: 1 });
    const received = await survivor.waitFor(sent + 1);
    expect(received).toEqual([...seq(sent, 'probe'), END]);
  });

  it('closes a client that stops reading (1013) while the others get every message', async () => {
    const disconnects: [string | undefined, number, string][] = [];
    const broadcaster: BroadcasterOptions = {
      maxBufferedBytes: 64 * 1024,
      volatileBufferedBytes: 32 * 1024,
      onDisconnect: (entry, code, reason) => void disconnects.push([entry.userId, code, reason]),
    };
    const sut = await start({ broadcaster });
    const slow = await connect(as('slow'));
    const fast = [await connect(as('fast1')), await connect(as('fast2'))];
    const slowId = idOf('slow');
    slow.pauseReading();
    const pad = 'x'.repeat(64 * 1024);
    let sent = 0;
    // The kernel absorbs a few MB before the server sees backpressure; 2,000 x 64 KiB is far more.
    while (sut.broadcaster.connections.has(slowId) && sent < 2_000) {
      await sut.broadcaster.toAll({ type: 'n', seq: sent, pad });
      sent += 1;
      await Promise.all(fast.map((client) => client.waitFor(sent)));
    }
    expect(sut.broadcaster.connections.has(slowId)).toBe(false);
    expect(disconnects).toEqual([['slow', CloseCode.TryAgainLater, CloseReason.SlowConsumer]]);
    expect(sut.broadcaster.getStats().monitor.disconnects).toEqual({ '1013:slow_consumer': 1 });
    await sut.broadcaster.toAll(END);
    for (const client of fast) {
      const received = (await client.waitFor(sent + 1)) as { seq?: number }[];
      expect(received).toHaveLength(sent + 1);
      expect(received.slice(0, sent).map((m) => m.seq)).toEqual(Array.from({ length: sent }, (_, i) => i));
      expect(received[sent]).toEqual(END);
    }
  });

  it('dispose() closes every client with 1001 and leaves no listeners behind (origin check included)', async () => {
    const sut = await start({ allowedOrigins: ['https://app.example'] });
    const all = [await connect(as('a')), await connect(as('a', 'https://app.example')), await connect(as('b'))];
    const attached = sut.listenerCounts();
    expect(attached).not.toEqual(sut.listenersBeforeAttach);
    await sut.dispose();
    for (const client of all) expect((await client.closed).code).toBe(CloseCode.GoingAway);
    expect(sut.broadcaster.connections.size).toBe(0);
    expect(sut.broadcaster.isDisposed).toBe(false); // the adapter's dispose() leaves the broadcaster to the app
    expect(sut.listenerCounts()).toEqual(sut.listenersBeforeAttach);
  });

  it('delivers one broadcast to 1,000 clients connected at once', async () => {
    const sut = await start();
    const total = 1_000;
    const all: TestClient[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        while (next < total) {
          next += 1;
          all.push(await connect(as(`user${next}`)));
        }
      }),
    );
    expect(sut.broadcaster.connections.size).toBe(total);
    const result = await sut.broadcaster.toAll({ type: 'hello' });
    expect(result).toMatchObject({ recipients: total, delivered: total, failed: 0 });
    const received = await Promise.all(all.map((client) => client.next()));
    expect(received).toEqual(Array.from({ length: total }, () => ({ type: 'hello' })));
  }, 60_000);
});
