import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Broadcaster } from '@bcast/core';
import { attachToServer, recommendedServerOptions } from '@bcast/ws';
import { WebSocketServer } from 'ws';
import type { AdapterDriver, ServerUnderTest } from '../driver.js';
import { connectWs, connectWsRejected, tokenOf } from './wsClient.js';

const quiet = { warn: () => {}, error: () => {} };
const urls = new WeakMap<ServerUnderTest, string>();

/** @bcast/ws: the user's WebSocketServer on the user's HTTP server, attachToServer on it. */
export const wsDriver: AdapterDriver = {
  name: 'ws',
  async start(options) {
    const server = createServer();
    const wss = new WebSocketServer({ server, ...recommendedServerOptions });
    const broadcaster = new Broadcaster({ logger: quiet, ...options.broadcaster });
    const listenerCounts = (): Record<string, number> => ({
      'server.upgrade': server.listenerCount('upgrade'),
      'server.request': server.listenerCount('request'),
      'server.error': server.listenerCount('error'),
      'wss.connection': wss.listenerCount('connection'),
      'wss.error': wss.listenerCount('error'),
      'wss.headers': wss.listenerCount('headers'),
      'wss.verifyClient': wss.options.verifyClient ? 1 : 0,
    });
    const listenersBeforeAttach = listenerCounts();
    const authenticate = options.authenticate;
    const adapter = attachToServer(broadcaster, wss, {
      ...(authenticate ? { authenticate: (request) => authenticate(tokenOf(request)) } : {}),
      ...(options.allowedOrigins ? { allowedOrigins: options.allowedOrigins } : {}),
      ...(options.authTimeoutMs === undefined ? {} : { authTimeoutMs: options.authTimeoutMs }),
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const sut: ServerUnderTest = {
      broadcaster,
      listenersBeforeAttach,
      listenerCounts,
      dispose: () => adapter.dispose(),
      async close() {
        await adapter.dispose();
        await broadcaster.dispose();
        for (const ws of wss.clients) ws.terminate();
        await new Promise<void>((resolve) => wss.close(() => resolve()));
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
    urls.set(sut, `ws://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return sut;
  },
  connect: (server, options) => connectWs(urls.get(server)!, options),
  connectRejected: (server, options) => connectWsRejected(urls.get(server)!, options),
};
