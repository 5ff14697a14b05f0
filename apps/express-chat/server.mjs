// A chat on an express app: routes from express, WebSockets on the same HTTP server through
// @bcast/express's upgrade handler at /ws, broadcasts through the legacy BroadcastManager facade
// (@bcast/compat) on a bcast Broadcaster.
//   node --import ./instrumentation.mjs server.mjs      (PORT=3003 HOST=127.0.0.1 by default)
import http from 'node:http';
import { BroadcastManager, ConnectionManager } from '@bcast/compat';
import { Broadcaster } from '@bcast/core';
import { appMetrics, backplaneOptions, chatHooks, closeServer, createHttpHandler, demoIdentity, listen, nameFromUrl, runIfMain } from '@bcast/app-shared';
import { attachUpgrade, createBcastRouter } from '@bcast/express';
import express from 'express';

/** @param {import('@bcast/app-shared').StartOptions} [options] */
export async function start({ redisUrl, redisChannel, port = 3003, host = '127.0.0.1', logger = console } = {}) {
  const metrics = appMetrics('bcast-express-chat');
  const chat = chatHooks({ logger });
  const broadcaster = new Broadcaster({ ...chat.options, ...metrics.broadcasterOptions, ...(await backplaneOptions({ redisUrl, redisChannel, logger })), logger });
  // The legacy facade on this Broadcaster; bad input (an invalid room, a message too large)
  // rejects with a BcastError instead of resolving as a failed result, for clear HTTP 400s.
  const manager = new BroadcastManager(new ConnectionManager({ broadcaster }), undefined, { errorMode: 'reject' });
  chat.use(manager, broadcaster);

  const app = express();
  app.disable('x-powered-by');
  app.use('/bcast', createBcastRouter(broadcaster)); // the Broadcaster's own /bcast/health and /bcast/stats
  app.use(createHttpHandler({ title: 'express-chat', transport: 'ws', manager, broadcaster, metrics }));

  const server = http.createServer(app);
  const adapter = attachUpgrade(broadcaster, server, {
    path: '/ws',
    // DEMO ONLY: the name typed on the page (?name=...) is the identity. Verify a session or a
    // signed token here in a real app.
    authenticate: (request) => demoIdentity(nameFromUrl(request.url)),
  });

  await broadcaster.ready(); // subscribed to the backplane, when there is one
  const url = await listen(server, port, host);
  return {
    url,
    broadcaster,
    manager,
    async close() {
      await adapter.dispose();
      await broadcaster.dispose({ closeBackplane: true });
      await closeServer(server);
      await metrics.shutdown();
    },
  };
}

runIfMain(import.meta.url, start, { name: 'express-chat', defaultPort: 3003 });
