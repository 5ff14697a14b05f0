import type { IncomingMessage, Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { BcastError, ErrorCode, type Broadcaster } from '@bcast/core';
import { createUpgradeHandler, recommendedServerOptions, type Attachment, type WsAdapterOptions } from '@bcast/ws';
import express, { type Router } from 'express';
import { WebSocketServer } from 'ws';

export interface UpgradeOptions extends WsAdapterOptions {
  /** The only request path (without query string) upgraded here, e.g. "/ws". */
  path: string;
}

/**
 * Serves WebSocket upgrades for one path of your HTTP server (the one `app.listen()` returned):
 * origin check, `authenticate`, then an internal `noServer` WebSocketServer with
 * {@link recommendedServerOptions}. Upgrades for other paths are left to your other `upgrade`
 * listeners; when there is none, they are answered 404 so that no socket is left hanging.
 */
export function attachUpgrade(broadcaster: Broadcaster, server: Server | HttpsServer, options: UpgradeOptions): Attachment {
  const { path, ...adapterOptions } = options;
  if (typeof path !== 'string' || !path.startsWith('/')) {
    throw new BcastError(ErrorCode.InvalidOption, `path must be a string starting with "/", got ${JSON.stringify(path)}`);
  }
  const wss = new WebSocketServer({ noServer: true, ...recommendedServerOptions });
  const handler = createUpgradeHandler(broadcaster, adapterOptions);
  const onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const url = request.url ?? '/';
    const query = url.indexOf('?');
    if ((query === -1 ? url : url.slice(0, query)) === path) {
      handler.handleUpgrade(request, socket, head, wss).catch(() => socket.destroy());
    } else if (server.listenerCount('upgrade') === 1) {
      // Nobody else listens for upgrades: Node would leave this socket open forever.
      socket.on('error', () => socket.destroy());
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n', () => socket.destroy());
    }
  };
  server.on('upgrade', onUpgrade);
  return {
    async dispose() {
      server.off('upgrade', onUpgrade);
      await handler.dispose();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}

/**
 * `GET /health` (200 when healthy or degraded, 503 when unhealthy; body = getHealthStatus()) and
 * `GET /stats` (body = getStats()). Mount it where you like: `app.use('/bcast', createBcastRouter(b))`.
 */
export function createBcastRouter(broadcaster: Broadcaster): Router {
  const router = express.Router();
  router.get('/health', (_req, res) => {
    const health = broadcaster.getHealthStatus();
    res.status(health.status === 'unhealthy' ? 503 : 200).set('Cache-Control', 'no-store').json(health);
  });
  router.get('/stats', (_req, res) => {
    res.set('Cache-Control', 'no-store').json(broadcaster.getStats());
  });
  return router;
}

export { recommendedHttpServerOptions, recommendedServerOptions, type Attachment, type WsAdapter, type WsAdapterOptions } from '@bcast/ws';
