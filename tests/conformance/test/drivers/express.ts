import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Broadcaster } from '@bcast/core';
import { attachUpgrade, createBcastRouter } from '@bcast/express';
import express from 'express';
import type { AdapterDriver, ServerUnderTest } from '../driver.js';
import { connectWs, connectWsRejected, tokenOf } from './wsClient.js';

const quiet = { warn: () => {}, error: () => {} };
const urls = new WeakMap<ServerUnderTest, string>();

/** @bcast/express: an express app's HTTP server, attachUpgrade on path /ws. */
export const expressDriver: AdapterDriver = {
  name: 'express',
  async start(options) {
    const broadcaster = new Broadcaster({ logger: quiet, ...options.broadcaster });
    const app = express();
    app.use('/bcast', createBcastRouter(broadcaster));
    const server = createServer(app);
    const listenerCounts = (): Record<string, number> => ({
      'server.upgrade': server.listenerCount('upgrade'),
      'server.request': server.listenerCount('request'),
      'server.error': server.listenerCount('error'),
      'server.close': server.listenerCount('close'),
    });
    const listenersBeforeAttach = listenerCounts();
    const authenticate = options.authenticate;
    const adapter = attachUpgrade(broadcaster, server, {
      path: '/ws',
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
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
    urls.set(sut, `ws://127.0.0.1:${(server.address() as AddressInfo).port}/ws`);
    return sut;
  },
  connect: (server, options) => connectWs(urls.get(server)!, options),
  connectRejected: (server, options) => connectWsRejected(urls.get(server)!, options),
};
