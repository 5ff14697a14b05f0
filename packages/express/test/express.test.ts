import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Broadcaster, ErrorCode, isBcastError } from '@bcast/core';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { guardProcess } from '../../../tests/support/processGuard.js';
import { attachUpgrade, createBcastRouter } from '../src/index.js';

guardProcess();

const quiet = { warn: () => {}, error: () => {} };
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function listen(server: Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return (server.address() as AddressInfo).port;
}

function broadcaster(): Broadcaster {
  const b = new Broadcaster({ logger: quiet });
  cleanups.push(() => b.dispose());
  return b;
}

/** Opens a WebSocket; resolves 'open' or the HTTP status it was refused with. */
function tryConnect(url: string, headers: Record<string, string> = {}): Promise<{ ws: WebSocket; first: Promise<string> } | { status: number }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    // Listening before 'open': a message sent with the 101 response is emitted right after it.
    const first = once(ws, 'message').then(([data]) => String(data));
    first.catch(() => {});
    ws.on('error', reject);
    ws.once('open', () => {
      cleanups.push(() => ws.terminate());
      resolve({ ws, first });
    });
    ws.once('unexpected-response', (req, res) => {
      req.destroy();
      resolve({ status: res.statusCode ?? 0 });
    });
  });
}

describe('createBcastRouter', () => {
  async function app(b: Broadcaster): Promise<string> {
    const application = express();
    application.use('/bcast', createBcastRouter(b));
    return `http://127.0.0.1:${await listen(createServer(application))}/bcast`;
  }

  it('GET /health is 200 with the health report while healthy', async () => {
    const b = broadcaster();
    const base = await app(b);
    const res = await fetch(`${base}/health`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const body = (await res.json()) as { status: string; system: { connections: number }; backplane: { nodeId: string } };
    expect(body.status).toBe('healthy');
    expect(body.system.connections).toBe(0);
    expect(body.backplane.nodeId).toBe(b.nodeId);
  });

  it('GET /health stays 200 when degraded and is 503 when unhealthy', async () => {
    const b = broadcaster();
    const base = await app(b);
    const release = b.isolate('backplane');
    const degraded = await fetch(`${base}/health`);
    expect(degraded.status).toBe(200);
    expect(((await degraded.json()) as { status: string }).status).toBe('degraded');
    release();
    await b.dispose();
    const unhealthy = await fetch(`${base}/health`);
    expect(unhealthy.status).toBe(503);
    const body = (await unhealthy.json()) as { status: string; reasons: string[] };
    expect(body.status).toBe('unhealthy');
    expect(body.reasons).toContain('broadcaster is disposed');
  });

  it('GET /stats returns getStats() as JSON', async () => {
    const b = broadcaster();
    const base = await app(b);
    await b.toAll({ type: 'x' });
    await b.toAll({ type: 'y' });
    const res = await fetch(`${base}/stats`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { nodeId: string; broadcasts: number; connections: number };
    expect(body).toMatchObject({ nodeId: b.nodeId, broadcasts: 2, connections: 0 });
    expect((await fetch(`${base}/nope`)).status).toBe(404);
  });
});

describe('attachUpgrade', () => {
  it('upgrades its own path only and leaves other paths to other upgrade listeners', async () => {
    const b = broadcaster();
    const server = createServer(express());
    const adapter = attachUpgrade(b, server, { path: '/ws', authenticate: (req) => (req.headers['x-user'] as string) || false });
    cleanups.push(() => adapter.dispose());
    const other = new WebSocketServer({ noServer: true });
    cleanups.push(() => void other.close());
    server.on('upgrade', (req, socket, head) => {
      if (req.url?.startsWith('/other')) other.handleUpgrade(req, socket, head, (ws) => ws.send('from the other server'));
    });
    const port = await listen(server);
    const mine = await tryConnect(`ws://127.0.0.1:${port}/ws?room=1`, { 'x-user': 'alice' });
    expect('ws' in mine).toBe(true);
    expect([...b.connections.byUser('alice')]).toHaveLength(1);
    expect(await tryConnect(`ws://127.0.0.1:${port}/ws`)).toEqual({ status: 401 });
    const theirs = await tryConnect(`ws://127.0.0.1:${port}/other`);
    if (!('ws' in theirs)) throw new Error(`refused with ${theirs.status}`);
    expect(await theirs.first).toBe('from the other server');
    expect(b.connections.size).toBe(1);
  });

  it('answers 403 to a foreign origin before authenticate, 401 to bad or throwing credentials, 503 when authenticate does not answer in time', async () => {
    const b = broadcaster();
    const server = createServer(express());
    const asked: string[] = [];
    const adapter = attachUpgrade(b, server, {
      path: '/ws',
      allowedOrigins: ['https://app.example'],
      authTimeoutMs: 100,
      authenticate: (req) => {
        const user = String(req.headers['x-user'] ?? '');
        asked.push(user);
        if (user === 'throw') throw new Error('auth backend down');
        if (user === 'hang') return new Promise<never>(() => {});
        return user === 'alice' ? user : false;
      },
    });
    cleanups.push(() => adapter.dispose());
    const url = `ws://127.0.0.1:${await listen(server)}/ws`;
    const origin = 'https://app.example';
    expect(await tryConnect(url, { 'x-user': 'alice', origin: 'https://evil.example' })).toEqual({ status: 403 });
    expect(asked).toEqual([]); // refused before authenticate ran
    expect(await tryConnect(url, { 'x-user': 'mallory', origin })).toEqual({ status: 401 });
    expect(await tryConnect(url, { 'x-user': 'throw', origin })).toEqual({ status: 401 });
    expect(await tryConnect(url, { origin })).toEqual({ status: 401 });
    expect(await tryConnect(url, { 'x-user': 'hang', origin })).toEqual({ status: 503 });
    expect(asked).toEqual(['mallory', 'throw', '', 'hang']);
    expect(b.connections.size).toBe(0);
    expect('ws' in (await tryConnect(url, { 'x-user': 'alice', origin }))).toBe(true);
    expect([...b.connections.byUser('alice')]).toHaveLength(1);
  });

  it('answers 404 to other paths when it is the only upgrade listener', async () => {
    const b = broadcaster();
    const server = createServer();
    const adapter = attachUpgrade(b, server, { path: '/ws' });
    cleanups.push(() => adapter.dispose());
    const port = await listen(server);
    expect(await tryConnect(`ws://127.0.0.1:${port}/elsewhere`)).toEqual({ status: 404 });
    expect('ws' in (await tryConnect(`ws://127.0.0.1:${port}/ws`))).toBe(true);
  });

  it('dispose closes its clients with 1001 and removes its upgrade listener', async () => {
    const b = broadcaster();
    const server = createServer();
    const before = server.listenerCount('upgrade');
    const adapter = attachUpgrade(b, server, { path: '/ws' });
    expect(server.listenerCount('upgrade')).toBe(before + 1);
    const port = await listen(server);
    const client = await tryConnect(`ws://127.0.0.1:${port}/ws`);
    if (!('ws' in client)) throw new Error('refused');
    const closed = once(client.ws, 'close');
    await adapter.dispose();
    expect((await closed)[0]).toBe(1001);
    expect(server.listenerCount('upgrade')).toBe(before);
    expect(b.connections.size).toBe(0);
  });

  it('rejects a path that does not start with a slash', () => {
    const b = broadcaster();
    try {
      attachUpgrade(b, createServer(), { path: 'ws' });
      expect.unreachable();
    } catch (error) {
      expect(isBcastError(error, ErrorCode.InvalidOption)).toBe(true);
    }
  });
});
