import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Broadcaster, ErrorCode, isBcastError } from '@bcast/core';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { attachToServer, createUpgradeHandler, recommendedServerOptions } from '../src/index.js';
import { openClient, rejectedStatus, startWs, type Harness } from './helpers.js';
import { guardProcess } from '../../../tests/support/processGuard.js';

guardProcess();

const tokens: Record<string, string> = { alice: 'alice', bob: 'bob' };
const authenticate = (request: { headers: Record<string, string | string[] | undefined> }) => {
  const token = String(request.headers.authorization ?? '').replace(/^Bearer /, '');
  if (token === 'boom') throw new Error('auth backend down');
  if (token === 'hang') return new Promise<never>(() => {});
  return tokens[token] ?? false;
};
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

let harness: Harness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

describe('attachToServer on a WebSocketServer that listens itself', () => {
  it('registers an authenticated connection under its user id', async () => {
    harness = await startWs({ adapter: { authenticate } });
    const client = await openClient(harness.url, bearer('alice'));
    expect(harness.broadcaster.connections.size).toBe(1);
    const [entry] = harness.broadcaster.connections.byUser('alice');
    expect(entry?.userId).toBe('alice');
    client.ws.close();
    expect((await client.closed).code).toBe(1005);
  });

  it('answers 401 to refused, throwing or missing credentials and registers nothing', async () => {
    harness = await startWs({ adapter: { authenticate } });
    expect(await rejectedStatus(harness.url, bearer('mallory'))).toBe(401);
    expect(await rejectedStatus(harness.url, bearer('boom'))).toBe(401);
    expect(await rejectedStatus(harness.url)).toBe(401);
    expect(harness.broadcaster.connections.size).toBe(0);
    expect(harness.wss.clients.size).toBe(0);
  });

  it('answers 503 when authenticate does not answer within authTimeoutMs', async () => {
    harness = await startWs({ adapter: { authenticate, authTimeoutMs: 100 } });
    expect(await rejectedStatus(harness.url, bearer('hang'))).toBe(503);
    expect(harness.broadcaster.connections.size).toBe(0);
  });

  it('answers 403 to a foreign origin before authenticate runs', async () => {
    let calls = 0;
    harness = await startWs({
      adapter: { allowedOrigins: ['https://app.example'], authenticate: (req) => (calls++, authenticate(req)) },
    });
    expect(await rejectedStatus(harness.url, { ...bearer('alice'), origin: 'https://evil.example' })).toBe(403);
    expect(calls).toBe(0);
    await openClient(harness.url, { ...bearer('alice'), origin: 'https://app.example' });
    expect(calls).toBe(1);
    expect(harness.broadcaster.connections.size).toBe(1);
  });

  it('with requireOrigin, refuses a request without Origin', async () => {
    harness = await startWs({ adapter: { allowedOrigins: ['https://app.example'], requireOrigin: true } });
    expect(await rejectedStatus(harness.url)).toBe(403);
    await openClient(harness.url, { origin: 'https://app.example' });
    expect(harness.broadcaster.connections.size).toBe(1);
  });

  it('also guards a noServer WebSocketServer whose upgrades the app routes itself', async () => {
    const broadcaster = new Broadcaster();
    const wss = new WebSocketServer({ noServer: true, ...recommendedServerOptions });
    const adapter = attachToServer(broadcaster, wss, { authenticate });
    const server = createServer();
    server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req)));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      expect(await rejectedStatus(url, bearer('mallory'))).toBe(401);
      expect(broadcaster.connections.size).toBe(0);
      await openClient(url, bearer('bob'));
      expect([...broadcaster.connections.byUser('bob')]).toHaveLength(1);
    } finally {
      await adapter.dispose();
      await broadcaster.dispose();
      wss.close();
      server.closeAllConnections();
      server.close();
    }
  });

  it('refuses a server that already has a verifyClient when checks are asked for', () => {
    const wss = new WebSocketServer({ noServer: true, verifyClient: () => true });
    const broadcaster = new Broadcaster();
    try {
      attachToServer(broadcaster, wss, { authenticate });
      expect.unreachable();
    } catch (error) {
      expect(isBcastError(error, ErrorCode.InvalidOption)).toBe(true);
    }
    void broadcaster.dispose();
  });

  it('dispose closes its clients with 1001, restores verifyClient and removes its listener', async () => {
    harness = await startWs({ adapter: { authenticate } });
    const before = harness.wss.listenerCount('connection');
    expect(harness.wss.options.verifyClient).toBeTypeOf('function');
    const a = await openClient(harness.url, bearer('alice'));
    const b = await openClient(harness.url, bearer('bob'));
    await harness.adapter.dispose();
    expect(await a.closed).toEqual({ code: 1001, reason: 'server shutting down' });
    expect((await b.closed).code).toBe(1001);
    expect(harness.broadcaster.connections.size).toBe(0);
    expect(harness.broadcaster.isDisposed).toBe(false);
    expect(harness.wss.listenerCount('connection')).toBe(before - 1);
    expect(harness.wss.options.verifyClient).toBeNull();
  });
});

describe('createUpgradeHandler with a noServer WebSocketServer', () => {
  it('checks origin and credentials, registers, emits connection, and disposes', async () => {
    const broadcaster = new Broadcaster();
    const wss = new WebSocketServer({ noServer: true, ...recommendedServerOptions });
    const handler = createUpgradeHandler(broadcaster, { authenticate, allowedOrigins: ['https://app.example'], authTimeoutMs: 100 });
    const server = createServer();
    server.on('upgrade', (req, socket, head) => void handler.handleUpgrade(req, socket, head, wss));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const seen: unknown[] = [];
    wss.on('connection', (ws) => seen.push(ws));
    try {
      const origin = 'https://app.example';
      expect(await rejectedStatus(url, { ...bearer('alice'), origin: 'https://evil.example' })).toBe(403);
      expect(await rejectedStatus(url, { ...bearer('nobody'), origin })).toBe(401);
      expect(await rejectedStatus(url, { ...bearer('hang'), origin })).toBe(503);
      expect(broadcaster.connections.size).toBe(0);
      const client = await openClient(url, { ...bearer('bob'), origin });
      expect([...broadcaster.connections.byUser('bob')]).toHaveLength(1);
      expect(seen).toHaveLength(1);
      await handler.dispose();
      expect((await client.closed).code).toBe(1001);
      expect(broadcaster.connections.size).toBe(0);
      expect(await rejectedStatus(url, { ...bearer('bob'), origin })).toBe(503);
    } finally {
      await broadcaster.dispose();
      wss.close();
      server.closeAllConnections();
      server.close();
    }
  });
});
