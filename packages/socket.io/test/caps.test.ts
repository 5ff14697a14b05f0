import { once } from 'node:events';
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Broadcaster } from '@bcast/core';
import { Server } from 'socket.io';
import { afterEach, describe, expect, it } from 'vitest';
import { attachToServer } from '../src/index.js';
import { guardProcess } from '../../../tests/support/processGuard.js';
import { client, closeAll, connected, engineErrors, quiet, refusal, refused, startIo, type TestClient } from './helpers.js';

guardProcess();

const agents: Agent[] = [];
const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  await closeAll();
  for (const fn of cleanup.splice(0).reverse()) await fn();
  for (const agent of agents.splice(0)) agent.destroy();
});

/** socket.io-client options that connect from `ip` (a loopback alias acts as a distinct client IP), polling included. */
function from(ip: string, transports: Array<'polling' | 'websocket'> = ['websocket']) {
  const agent = new Agent({ localAddress: ip });
  agents.push(agent);
  return { localAddress: ip, agent: agent as unknown as string, transports };
}

type Answer = { status: number; retryAfter?: string; body: string };

/**
 * A raw engine.io handshake (a request without `sid`), as socket.io-client sends it first: a
 * polling GET or a direct WebSocket upgrade. Resolves with the HTTP answer; an accepted upgrade
 * (101) is closed at once.
 */
function handshake(url: string, transport: 'polling' | 'websocket', localAddress?: string): Promise<Answer> {
  const upgrade = { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' };
  return new Promise((resolve, reject) => {
    const req = request(`${url}/socket.io/?EIO=4&transport=${transport}`, { agent: false, ...(localAddress ? { localAddress } : {}), headers: transport === 'websocket' ? upgrade : {} });
    req.on('error', reject);
    req.on('upgrade', (_res, socket) => {
      socket.destroy();
      resolve({ status: 101, body: '' });
    });
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        const retryAfter = res.headers['retry-after'];
        resolve({ status: res.statusCode ?? 0, ...(retryAfter === undefined ? {} : { retryAfter }), body });
      });
    });
    req.end();
  });
}

const busy = (retryAfter: string): Answer => ({ status: 503, retryAfter, body: 'Service Unavailable' });
/** What socket.io-client reports for a 503 on its websocket transport (the `ws` client's error). */
const busyOnWebSocket = { message: 'websocket error', cause: 'Unexpected server response: 503' };

async function receives(clients: TestClient[], value: unknown): Promise<void> {
  for (const c of clients) expect(await c.waitFor(1)).toEqual([value]);
}

describe('B15 connection caps on a socket.io Server: engine.io sessions, refused before the handshake', () => {
  it('a per-IP cap answers a new handshake 503 + Retry-After, polling or websocket, and no session is created; other IPs and existing clients are unaffected', async () => {
    const h = await startIo({ adapter: { maxConnectionsPerIp: 2, retryAfterS: 7 } });
    const errors = engineErrors(h.io);
    const ws = await connected(client(h.url, from('127.0.0.2')));
    const polling = await connected(client(h.url, from('127.0.0.2', ['polling'])));
    // the raw HTTP answers, before engine.io reads the request
    expect(await handshake(h.url, 'websocket', '127.0.0.2')).toEqual(busy('7'));
    expect(await handshake(h.url, 'polling', '127.0.0.2')).toEqual(busy('7'));
    // and what socket.io-client makes of them
    expect(await refusal(client(h.url, from('127.0.0.2')))).toEqual(busyOnWebSocket);
    expect(await refused(client(h.url, from('127.0.0.2', ['polling'])))).toMatchObject({ message: 'xhr poll error', description: 503 });
    expect(h.io.engine.clientsCount).toBe(2);
    expect(errors).toEqual([]); // engine.io never saw them
    const other = await connected(client(h.url, from('127.0.0.3')));
    expect(h.broadcaster.connections.size).toBe(3);
    // the polling client's requests carry its sid: every poll (and the broadcast it brings) passes the cap
    expect(await h.broadcaster.toAll('still here')).toMatchObject({ recipients: 3, delivered: 3 });
    await receives([ws, polling, other], 'still here');
    expect(ws.socket.connected && polling.socket.connected).toBe(true);
  });

  it('a global cap counts sessions of every transport; an existing polling session still upgrades to websocket at the cap', async () => {
    const h = await startIo({ adapter: { maxConnections: 2 } });
    const upgrading = await connected(client(h.url, { transports: ['polling', 'websocket'] }));
    const polling = await connected(client(h.url, { transports: ['polling'] }));
    expect(await handshake(h.url, 'websocket')).toEqual(busy('5'));
    expect(await handshake(h.url, 'polling')).toEqual(busy('5'));
    expect(await handshake(h.url, 'polling', '127.0.0.9')).toEqual(busy('5')); // any IP
    // the upgrade request carries the session's sid: it is not a new session, and it is not refused
    const engine = upgrading.socket.io.engine;
    if (engine.transport.name !== 'websocket') await new Promise((resolve) => engine.once('upgrade', resolve));
    expect(engine.transport.name).toBe('websocket');
    expect(h.io.engine.clientsCount).toBe(2);
    expect(await h.broadcaster.toAll('at the cap')).toMatchObject({ recipients: 2, delivered: 2 });
    await receives([upgrading, polling], 'at the cap');
  });

  it('handshakes in progress count against the cap: 5 at once behind a slow allowRequest give 2 sessions and 3 refusals', async () => {
    const slow = (_req: unknown, fn: (err: string | null, ok: boolean) => void): void => void setTimeout(() => fn(null, true), 50);
    const h = await startIo({ server: { allowRequest: slow }, adapter: { maxConnections: 2 } });
    const answers = await Promise.all(Array.from({ length: 5 }, () => handshake(h.url, 'polling')));
    expect(answers.map((a) => a.status).sort()).toEqual([200, 200, 503, 503, 503]);
    expect(h.io.engine.clientsCount).toBe(2);
  });

  it('a session whose handshake request ended before engine.io created it still counts against its IP', async () => {
    let asked: () => void = () => {};
    const reached = new Promise<void>((resolve) => (asked = resolve));
    const slow = (_req: unknown, fn: (err: string | null, ok: boolean) => void): void => {
      asked();
      setTimeout(() => fn(null, true), 100);
    };
    const h = await startIo({ server: { allowRequest: slow }, adapter: { maxConnectionsPerIp: 1 } });
    const req = request(`${h.url}/socket.io/?EIO=4&transport=polling`, { agent: false, localAddress: '127.0.0.2' });
    req.on('error', () => {});
    req.end();
    await reached;
    req.destroy(); // the slot of the pending handshake is given back; the session engine.io creates after is counted again
    await expect.poll(() => h.io.engine.clientsCount).toBe(1);
    expect(await handshake(h.url, 'polling', '127.0.0.2')).toEqual(busy('5'));
  });

  it('a slot is given back when a session closes: a disconnect, a handshake refused later by engine.io or by authenticate', async () => {
    const app = 'https://app.example';
    const h = await startIo({
      adapter: { maxConnectionsPerIp: 1, allowedOrigins: [app], authenticate: (handshake) => (handshake.auth.token === 'good' ? 'u1' : false) },
    });
    const first = await connected(client(h.url, { ...from('127.0.0.2'), auth: { token: 'good' } }));
    expect(await handshake(h.url, 'websocket', '127.0.0.2')).toEqual(busy('5'));
    first.socket.disconnect();
    await expect.poll(() => h.io.engine.clientsCount).toBe(0);
    // admitted by the cap, then refused by the origin check in allowRequest (403): no session, the slot is free again
    expect(await refused(client(h.url, { ...from('127.0.0.2', ['polling']), extraHeaders: { origin: 'https://evil.example' } }))).toMatchObject({ description: 403 });
    // admitted, a session, refused by authenticate: the server closes the session and the slot is free again
    expect(await refusal(client(h.url, { ...from('127.0.0.2'), auth: { token: 'bad' } }))).toEqual({ message: 'unauthorized' });
    await expect.poll(() => h.io.engine.clientsCount).toBe(0);
    const again = await connected(client(h.url, { ...from('127.0.0.2'), auth: { token: 'good' } }));
    expect(await handshake(h.url, 'polling', '127.0.0.2')).toEqual(busy('5'));
    expect(await h.broadcaster.toAll('back')).toMatchObject({ recipients: 1, delivered: 1 });
    await receives([again], 'back');
  });

  it('shutdown() gives the slots back: the next handshake reaches the middleware ("server shutting down"), not the cap', async () => {
    const h = await startIo({ adapter: { maxConnections: 3, maxConnectionsPerIp: 2 } });
    await Promise.all([connected(client(h.url, from('127.0.0.2'))), connected(client(h.url, from('127.0.0.2'))), connected(client(h.url, from('127.0.0.3')))]);
    expect(await handshake(h.url, 'polling', '127.0.0.2')).toEqual(busy('5'));
    expect(await handshake(h.url, 'polling', '127.0.0.4')).toEqual(busy('5'));
    expect(await h.broadcaster.shutdown({ drainTimeoutMs: 2_000 })).toMatchObject({ closed: 3 });
    await expect.poll(() => h.io.engine.clientsCount).toBe(0);
    expect(await refusal(client(h.url, from('127.0.0.2')))).toEqual({ message: 'server shutting down' });
  });

  it('caps a Server attached to its HTTP server after attachToServer; dispose() removes the hooks', async () => {
    const io = new Server();
    const broadcaster = new Broadcaster({ logger: quiet });
    const adapter = attachToServer(broadcaster, io, { maxConnections: 1, retryAfterS: 2 });
    const http = createServer();
    io.attach(http);
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    cleanup.push(
      () => adapter.dispose(),
      () => broadcaster.dispose(),
      () =>
        new Promise<void>((resolve) => {
          void io.close(() => resolve());
          http.closeAllConnections();
        }),
    );
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    expect(Object.hasOwn(io.engine, 'handleRequest') && Object.hasOwn(io.engine, 'handleUpgrade')).toBe(true);
    await connected(client(url));
    expect(await handshake(url, 'websocket')).toEqual(busy('2'));
    await adapter.dispose();
    expect([Object.hasOwn(io.engine, 'handleRequest'), Object.hasOwn(io.engine, 'handleUpgrade'), Object.hasOwn(io, 'bind')]).toEqual([false, false, false]);
    // dispose() disconnected the adapter's client; with no cap any more, two connect where one could
    await Promise.all([connected(client(url)), connected(client(url))]);
    expect(io.engine.clientsCount).toBe(2);
  });
});

describe('B15 connection caps on a Namespace attachment: its sockets, in the middleware', () => {
  it('refuses past the cap with connect_error "too many connections" and data.retryAfterS; other namespaces are not counted', async () => {
    const h = await startIo({ namespace: '/chat', adapter: { maxConnectionsPerIp: 1, retryAfterS: 3 } });
    const member = await connected(client(`${h.url}/chat`, from('127.0.0.2')));
    const error = await refused(client(`${h.url}/chat`, from('127.0.0.2')));
    expect({ message: error.message, data: (error as { data?: unknown }).data }).toEqual({ message: 'too many connections', data: { retryAfterS: 3 } });
    await connected(client(h.url, from('127.0.0.2'))); // the main namespace is not this attachment's
    await connected(client(`${h.url}/chat`, from('127.0.0.3')));
    expect(h.broadcaster.connections.size).toBe(2);
    member.socket.disconnect();
    await expect.poll(() => h.broadcaster.connections.size).toBe(1);
    await connected(client(`${h.url}/chat`, from('127.0.0.2')));
  });
});
