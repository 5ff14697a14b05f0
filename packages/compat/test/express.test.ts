// The express "after" of docs/migration.md: a legacy express app whose WebSocketServer shares the
// app's HTTP server, with only the import changed, plus the optional health and stats routes.
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createBcastRouter } from '@bcast/express';
import express from 'express';
import { afterEach, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { BroadcastManager, ConnectionManager } from '../src/index.js';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

it('express + ws: the legacy routes and sockets work unchanged, and the new routes report on the same Broadcaster', async () => {
  // --- the legacy app, import changed to @bcast/compat ---
  const connections = new ConnectionManager({ logger: { warn: () => {}, error: () => {} } });
  const manager = new BroadcastManager(connections);
  const app = express();
  app.use(express.json());
  app.post('/announce', async (req, res) => {
    res.json(await manager.broadcastToAll(req.body));
  });
  app.get('/stats', (_req, res) => {
    res.json(manager.getStats());
  });
  app.use('/bcast', createBcastRouter(manager.broadcaster)); // new: GET /bcast/health, /bcast/stats
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws, request) => {
    const userId = new URL(request.url ?? '/', 'http://x').searchParams.get('user') ?? 'anonymous';
    connections.connect(userId, ws);
    ws.on('close', () => connections.disconnect(userId, ws));
  });
  cleanup.push(
    () => new Promise<void>((resolve) => server.close(() => resolve())),
    () => void server.closeAllConnections(),
    () => new Promise<void>((resolve) => wss.close(() => resolve())),
    () => manager.dispose(),
  );
  const base = `127.0.0.1:${(server.address() as AddressInfo).port}`;

  const client = new WebSocket(`ws://${base}/?user=alice`);
  cleanup.push(() => client.terminate());
  const message = once(client, 'message');
  await once(client, 'open');

  const response = await fetch(`http://${base}/announce`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ type: 'news', text: 'hi' }) });
  expect(await response.json()).toMatchObject({ successful: 1, failed: 0, totalConnections: 1, messageType: 'news' });
  const [data] = (await message) as [Buffer];
  expect(data.toString()).toBe('{"type":"news","text":"hi"}');

  expect(await (await fetch(`http://${base}/stats`)).json()).toMatchObject({ totalBroadcasts: 1, successfulSends: 1, failedSends: 0 });
  const health = await fetch(`http://${base}/bcast/health`);
  expect(health.status).toBe(200);
  expect(await health.json()).toMatchObject({ status: 'healthy', system: { connections: 1, users: 1 } });
  expect(await (await fetch(`http://${base}/bcast/stats`)).json()).toMatchObject({ connections: 1, deliveries: 1 });
});
