import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { guardProcess } from '../../support/processGuard.js';
import { connect, connectRefused, type Client } from './support/clients.js';
import { rawRequest, rawUpgrade, type RawClient } from './support/raw.js';
import { ADAPTERS, startServer, type AdapterName, type Credentials, type Sut } from './support/servers.js';

guardProcess();

// A1 cross-site WebSocket hijacking and A2 bad credentials, on each adapter: the refusal happens
// before a connection exists (no `connection` event, nothing in the registries), fast, and leaves
// no listener behind.

const quiet = { warn: () => {}, error: () => {} };
const APP = 'https://app.example';
const EVIL = 'https://evil.example';

let sut: Sut | undefined;
const clients: Client[] = [];
const raws: RawClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  for (const r of raws.splice(0)) r.socket.destroy();
  await sut?.close();
  sut = undefined;
});

/** Sessions and tokens the app knows; `expired:<ms>` tokens carry their expiry. */
function authenticator() {
  const calls: Credentials[] = [];
  const authenticate = (c: Credentials) => {
    calls.push(c);
    if (c.session === 'alice-session') return 'alice';
    if (c.token === 'bob-token') return 'bob';
    if (c.token?.startsWith('expired:')) {
      const expiresAt = Number(c.token.slice('expired:'.length));
      // an app that checks expiry itself says no; one that hands the expiry to bcast returns it
      return c.token.endsWith('0') ? false : { userId: 'carol', expiresAt };
    }
    return false;
  };
  return { authenticate, calls };
}

function upgradeHead(s: Sut, headers: string): string {
  const { pathname, search } = new URL(s.wsUrl);
  return (
    `GET ${pathname}${search} HTTP/1.1\r\nHost: 127.0.0.1:${s.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${headers}\r\n`
  );
}

describe.each(ADAPTERS.map((a) => [a] as const))('%s adapter', (adapter: AdapterName) => {
  it(`A1 CSWSH: a foreign Origin with a valid session cookie is refused (${adapter === 'socket.io' ? 'by engine.io: HTTP 400 on the upgrade, 403 on polling' : '403'}) before authenticate, 0 sockets accepted; the allowed origin gets 101`, async () => {
    const auth = authenticator();
    sut = await startServer(adapter, { broadcaster: { logger: quiet, pingIntervalMs: 0 }, authenticate: auth.authenticate, adapter: { allowedOrigins: [APP] } });
    const s = sut;
    const engineRefusals: string[] = [];
    s.io?.engine.on('connection_error', (e: { context?: { message?: string } }) => void engineRefusals.push(e.context?.message ?? '?'));
    // 5 hijacking attempts: the browser sends the victim's cookie along
    for (let i = 0; i < 5; i++) {
      const refused = await connectRefused(s, { session: 'alice-session', origin: EVIL });
      if (adapter === 'socket.io') {
        // engine.io refuses in allowRequest and tells only the server why; the client sees its transport fail
        expect(refused.message).toBe('websocket error');
      } else {
        expect(refused.status).toBe(403);
      }
    }
    const raw = await rawRequest(s.port, upgradeHead(s, `Origin: ${EVIL}\r\nCookie: session=alice-session\r\n`));
    expect(raw.status).toBe(adapter === 'socket.io' ? 400 : 403);
    if (adapter === 'socket.io') {
      // the polling handshake (where socket.io's cors applies) is refused too: 403 Forbidden
      const polling = await rawRequest(s.port, `GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: ${EVIL}\r\nCookie: session=alice-session\r\n\r\n`);
      expect(polling.status).toBe(403);
      expect(engineRefusals.length).toBeGreaterThanOrEqual(7);
      expect(new Set(engineRefusals)).toEqual(new Set(['origin not allowed']));
    }
    expect(auth.calls).toEqual([]);
    expect(s.appConnections()).toBe(0);
    expect(s.broadcaster.connections.size).toBe(0);
    // the allowed origin, same cookie: 101 and registered as alice
    const ok = await rawUpgrade(s.wsUrl, { extraHeaders: `Origin: ${APP}\r\nCookie: session=alice-session\r\n` });
    raws.push(ok);
    expect(ok.status).toBe(101);
    if (adapter !== 'socket.io') await expect.poll(() => s.broadcaster.connections.byUser('alice').size).toBe(1);
    const c = await connect(s, { session: 'alice-session', origin: APP });
    clients.push(c);
    await expect.poll(() => s.broadcaster.connections.byUser('alice').size).toBe(adapter === 'socket.io' ? 1 : 2);
  });

  it(`A1 no Origin: accepted with a token by default (not a browser); with requireOrigin, refused (${adapter === 'socket.io' ? 'by engine.io' : '403'}) before authenticate`, async () => {
    const auth = authenticator();
    sut = await startServer(adapter, { broadcaster: { logger: quiet, pingIntervalMs: 0 }, authenticate: auth.authenticate, adapter: { allowedOrigins: [APP] } });
    const c = await connect(sut, { token: 'bob-token' });
    clients.push(c);
    expect(sut.broadcaster.connections.byUser('bob').size).toBe(1);
    // no Origin and no credentials: the origin check lets it through, authenticate refuses it
    expect(await connectRefused(sut, {})).toMatchObject(adapter === 'socket.io' ? { message: 'unauthorized' } : { status: 401 });
    await sut.close();

    const strict = authenticator();
    sut = await startServer(adapter, { broadcaster: { logger: quiet, pingIntervalMs: 0 }, authenticate: strict.authenticate, adapter: { allowedOrigins: [APP], requireOrigin: true } });
    const refused = await connectRefused(sut, { token: 'bob-token' });
    if (adapter === 'socket.io') expect(refused.message).toBe('websocket error');
    else expect(refused.status).toBe(403);
    expect((await rawRequest(sut.port, upgradeHead(sut, 'Authorization: Bearer bob-token\r\n'))).status).toBe(adapter === 'socket.io' ? 400 : 403);
    expect(strict.calls).toEqual([]);
    expect(sut.appConnections()).toBe(0);
    const allowed = await connect(sut, { token: 'bob-token', origin: APP });
    clients.push(allowed);
    expect(sut.broadcaster.connections.byUser('bob').size).toBe(1);
  });

  it(`A2 bad credentials (missing, forged, expired): ${adapter === 'socket.io' ? 'connect_error "unauthorized"' : '401'} within 50 ms (p95 of 40), 0 entries in the registries, listener counts unchanged`, async () => {
    const auth = authenticator();
    sut = await startServer(adapter, { broadcaster: { logger: quiet, pingIntervalMs: 0 }, authenticate: auth.authenticate });
    const s = sut;
    // warm up: the first handshake of a process pays for loading and compiling the code
    const warm = await connect(s, { token: 'bob-token' });
    warm.close();
    await warm.closed;
    await expect.poll(() => s.broadcaster.connections.size).toBe(0);
    const listeners = s.listenerCounts();
    const expiredAt = Date.now() - 60_000;
    const attempts = [{}, { token: 'forged' }, { session: 'stolen-session' }, { token: `expired:${expiredAt - (expiredAt % 10)}` }];
    const times: number[] = [];
    for (let round = 0; round < 10; round++) {
      for (const credentials of attempts) {
        const refused = await connectRefused(s, credentials);
        expect(refused, JSON.stringify(credentials)).toMatchObject(adapter === 'socket.io' ? { message: 'unauthorized' } : { status: 401 });
        times.push(refused.ms);
      }
    }
    const sorted = [...times].sort((a, b) => a - b);
    const p95 = sorted[Math.ceil(sorted.length * 0.95) - 1]!;
    console.info(`[A2 ${adapter}] ${times.length} refusals: median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(1)} ms, p95 ${p95.toFixed(1)} ms, max ${sorted.at(-1)!.toFixed(1)} ms`);
    // <= 50 ms for 95 % of the attempts: on a 2-core box shared with other suites a single attempt can wait for the CPU
    expect(p95).toBeLessThanOrEqual(50);
    expect(s.broadcaster.connections.size).toBe(0);
    const stats = s.broadcaster.getStats();
    expect({ connections: stats.connections, users: stats.users, rooms: stats.rooms, memberships: stats.roomMemberships }).toEqual({ connections: 0, users: 0, rooms: 0, memberships: 0 });
    expect(s.appConnections()).toBe(adapter === 'express' ? 0 : 1); // the warm-up client
    expect(s.listenerCounts()).toEqual(listeners);
  });

  it(`A2 ${adapter === 'socket.io' ? '' : '(ws, express) '}the refused connection is closed by the server${adapter === 'socket.io' ? ' (socket.io: a real client closes its own after connect_error)' : ': the 401 comes with the end of the TCP connection'}`, async () => {
    const auth = authenticator();
    sut = await startServer(adapter, { broadcaster: { logger: quiet, pingIntervalMs: 0 }, authenticate: auth.authenticate });
    if (adapter === 'socket.io') {
      // what a real client does; whether the server closes a refused engine.io connection itself is B14's case
      const refused = await connectRefused(sut, { token: 'forged' });
      expect(refused.message).toBe('unauthorized');
      await expect.poll(() => sut?.io?.engine.clientsCount).toBe(0);
      return;
    }
    const r = await rawUpgrade(sut.wsUrl, { extraHeaders: 'Authorization: Bearer forged\r\n' });
    raws.push(r);
    expect(r.status).toBe(401);
    await Promise.race([r.ended, once(r.socket, 'end')]);
    expect(r.socket.readableEnded || r.socket.destroyed).toBe(true);
  });

  it('A2 an identity whose expiresAt has already passed is refused at the upgrade like any expired credential (not accepted, then closed)', async () => {
    const auth = authenticator();
    const seen: string[] = [];
    sut = await startServer(adapter, { broadcaster: { logger: quiet, pingIntervalMs: 0, onConnect: (e) => void seen.push(e.userId ?? '?') }, authenticate: auth.authenticate });
    const past = Date.now() - 60_000;
    const token = `expired:${past - (past % 10) + 1}`; // the app hands the past expiry to bcast
    const outcome = await connectRefused(sut, { token }).then(
      (r) => r,
      (error: Error) => ({ accepted: error.message }),
    );
    expect(outcome).toMatchObject(adapter === 'socket.io' ? { message: 'unauthorized' } : { status: 401 });
    expect(seen).toEqual([]);
  });
});
