import type { ConnectionEntry } from '@bcast/core';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { guardProcess } from '../../../tests/support/processGuard.js';
import { BcastClient, BcastClientError, type BcastClientOptions } from '../src/index.js';
import { collect, next, startServer, type RealServer } from './helpers.js';

guardProcess();

let server: RealServer | undefined;
const clients: BcastClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await server?.close();
  server = undefined;
});

const connected: ConnectionEntry[] = [];
const disconnects: { id: string; code: number }[] = [];
const tokens: string[] = [];

/** allowClientJoins, except 'secret' (FORBIDDEN) and 'hang' (authorizeJoin never answers). Token auth in the query. */
async function start(): Promise<RealServer> {
  connected.length = 0;
  disconnects.length = 0;
  tokens.length = 0;
  server = await startServer(
    {
      authorizeJoin: (_c, room) => (room === 'hang' ? new Promise<boolean>(() => {}) : room !== 'secret'),
      onConnect: (c) => void connected.push(c),
      onDisconnect: (c, code) => void disconnects.push({ id: c.id, code }),
    },
    {
      authenticate: (request) => {
        const token = new URL(request.url ?? '/', 'http://x').searchParams.get('token') ?? '';
        tokens.push(token);
        return token.startsWith('valid-') ? 'alice' : false;
      },
    },
  );
  return server;
}

function client(options: Partial<BcastClientOptions> = {}): BcastClient {
  let n = 0;
  const c = new BcastClient({
    url: async () => `${server!.url}?token=valid-${++n}`,
    WebSocket,
    minReconnectDelayMs: 5,
    maxReconnectDelayMs: 20,
    ...options,
  });
  clients.push(c);
  return c;
}

describe('against a real @bcast/ws server', () => {
  it('connects with a fresh token, joins, and receives room broadcasts, text, JSON and binary', async () => {
    const s = await start();
    const c = client();
    expect(c.state).toBe('connecting');
    const joined = c.join('lobby'); // before the open: sent when it opens
    expect(await next(c, 'open')).toEqual([{ reconnect: false }]);
    expect(c.state).toBe('open');
    expect(await joined).toEqual({ type: 'ok', op: 'join', room: 'lobby', requestId: '1' });
    expect(tokens).toEqual(['valid-1']);
    expect([...c.rooms]).toEqual(['lobby']);

    const got = collect(c);
    await s.broadcaster.toRoom('lobby', { type: 'chat', text: 'hi' });
    await s.broadcaster.toRoom('elsewhere', { type: 'chat', text: 'not for us' });
    await s.broadcaster.toAll('plain text');
    await s.broadcaster.toAll(new Uint8Array([1, 2, 3]));
    const messages = await got.waitFor(3);
    expect(messages.slice(0, 2)).toEqual([
      [{ type: 'chat', text: 'hi' }, {}],
      ['plain text', {}],
    ]);
    expect(messages[2]![0]).toBeInstanceOf(ArrayBuffer);
    expect([...new Uint8Array(messages[2]![0] as ArrayBuffer)]).toEqual([1, 2, 3]);
  });

  it('answers requests as promises: pong, leave, and FORBIDDEN as a BcastClientError', async () => {
    await start();
    const c = client();
    await next(c, 'open');
    expect(await c.ping()).toMatchObject({ type: 'pong' });
    const refused = await c.join('secret').catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(BcastClientError);
    expect(refused).toMatchObject({ code: 'FORBIDDEN', room: 'secret' });
    expect(c.rooms.has('secret')).toBe(false);
    await c.join('a');
    expect(await c.leave('a')).toMatchObject({ type: 'ok', op: 'leave', room: 'a' });
    expect(c.rooms.size).toBe(0);
  });

  it('times out a request, and rejects the ones in flight with DISCONNECTED when the socket drops', async () => {
    const s = await start();
    const c = client({ requestTimeoutMs: 100 });
    await next(c, 'open');
    await expect(c.join('hang')).rejects.toMatchObject({ code: 'TIMEOUT' });
    const c2 = client();
    await next(c2, 'open');
    const pending = c2.join('hang');
    const id = connected.at(-1)!.id;
    s.broadcaster.disconnect(id, 1012);
    await expect(pending).rejects.toMatchObject({ code: 'DISCONNECTED' });
  });

  it('reconnects after the server drops it, with a fresh token, and rejoins its rooms', async () => {
    const s = await start();
    const c = client();
    await next(c, 'open');
    await c.join('lobby');
    await c.join('news');

    const closed = next(c, 'close');
    const reconnecting = next(c, 'reconnecting');
    const reopened = next(c, 'open');
    for (const ws of s.wss.clients) ws.terminate();
    expect(await closed).toEqual([{ code: 1006, reason: '', willReconnect: true }]);
    expect(c.state).toBe('reconnecting');
    const [{ attempt, delayMs }] = await reconnecting;
    expect(attempt).toBe(1);
    expect(delayMs).toBeGreaterThanOrEqual(0);
    expect(delayMs).toBeLessThanOrEqual(5);
    expect(await reopened).toEqual([{ reconnect: true }]);
    await c.ping(); // replies come in order: the rejoins are done
    const entry = connected.at(-1)!;
    expect(tokens).toEqual(['valid-1', 'valid-2']);
    expect([...s.broadcaster.rooms.roomsOf(entry.id)].sort()).toEqual(['lobby', 'news']);

    s.broadcaster.disconnect(entry.id, 1012); // service restart
    await next(c, 'open');
    const got = collect(c);
    await c.ping();
    await s.broadcaster.toRoom('news', 'after two drops');
    expect(await got.waitFor(1)).toEqual([['after two drops', {}]]);
  });

  it('does not reconnect after 1008 or a 4xxx code, unless reconnectOnCodes says so', async () => {
    const s = await start();
    const final = client();
    await next(final, 'open');
    s.broadcaster.disconnect(connected.at(-1)!.id, 1008, 'credentials expired');
    expect(await next(final, 'close')).toEqual([{ code: 1008, reason: 'credentials expired', willReconnect: false }]);
    expect(final.state).toBe('closed');
    await expect(final.join('x')).rejects.toMatchObject({ code: 'CLOSED' });

    const again = client({ reconnectOnCodes: [4001] });
    await next(again, 'open');
    s.broadcaster.disconnect(connected.at(-1)!.id, 4001, 'expired, reconnect with a new token');
    expect((await next(again, 'close'))[0].willReconnect).toBe(true);
    await next(again, 'open');
    s.broadcaster.disconnect(connected.at(-1)!.id, 4002);
    expect((await next(again, 'close'))[0]).toMatchObject({ code: 4002, willReconnect: false });
  });

  it('keeps retrying while the token is refused (HTTP 401), and gets in once url() returns a valid one', async () => {
    await start();
    let calls = 0;
    const c = client({ url: () => `${server!.url}?token=${++calls < 3 ? 'expired' : 'valid-now'}` });
    const errors: BcastClientError[] = [];
    c.on('error', (e) => void errors.push(e));
    await next(c, 'open');
    expect(tokens).toEqual(['expired', 'expired', 'valid-now']);
    expect(errors.map((e) => e.code)).toEqual(['CONNECTION_ERROR', 'CONNECTION_ERROR']);
    expect(errors[0]!.message).toMatch(/401/);
  });

  it('sends app messages to onMessage', async () => {
    const received: unknown[] = [];
    await start();
    await server!.close();
    let got!: () => void;
    const arrived = new Promise<void>((resolve) => (got = resolve));
    server = await startServer({ allowClientJoins: true, onMessage: (_c, m) => void (received.push(m), received.length === 2 && got()) });
    const c = client({ url: server.url });
    await next(c, 'open');
    c.send({ type: 'chat', text: 'hello' });
    c.send(new Uint8Array([7]));
    await arrived;
    expect(received[0]).toEqual({ type: 'chat', text: 'hello' });
    expect([...(received[1] as Buffer)]).toEqual([7]);
  });

  it('closes cleanly with 1000: pending requests rejected with CLOSED, no reconnect', async () => {
    await start();
    const c = client();
    await next(c, 'open');
    const pending = c.join('hang');
    const events: string[] = [];
    c.on('reconnecting', () => void events.push('reconnecting'));
    c.on('close', (info) => void events.push(`close ${info.code} ${info.willReconnect}`));
    const closing = c.close();
    expect(c.state).toBe('closed');
    await expect(pending).rejects.toMatchObject({ code: 'CLOSED' });
    await closing;
    expect(events).toEqual(['close 1000 false']);
    await expect(c.ping()).rejects.toMatchObject({ code: 'CLOSED' });
    expect(() => c.send('x')).toThrow(BcastClientError);
    await c.close(); // twice is fine
    // The server saw a clean 1000 and no second connection.
    await new Promise<void>((resolve) => {
      const check = (): void => void (disconnects.length > 0 ? resolve() : setImmediate(check));
      check();
    });
    expect(disconnects.map((d) => d.code)).toEqual([1000]);
    expect(connected).toHaveLength(1);
  });
});
