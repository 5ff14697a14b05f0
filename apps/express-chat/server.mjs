// A chat on an express app: routes from express, WebSockets on the same HTTP server through
// @bcast/express's upgrade handler at /ws, broadcasts with the bcast Broadcaster (rooms with
// history and presence, see @bcast/app-shared).
//   node --import ./instrumentation.mjs server.mjs      (PORT=3003 HOST=127.0.0.1 by default)
import http from 'node:http';
import { closeServer, createChat, createHttpHandler, demoIdentity, listen, nameFromUrl, runIfMain } from '@bcast/app-shared';
import { attachUpgrade, createBcastRouter } from '@bcast/express';
import express from 'express';

/** @param {import('@bcast/app-shared').StartOptions} [options] */
export async function start({ redisUrl, redisChannel, traceUrl, port = 3003, host = '127.0.0.1', logger = console } = {}) {
  const chat = await createChat({ serviceName: 'bcast-express-chat', logger, redisUrl, redisChannel, traceUrl });
  const { broadcaster, dashboard, metrics } = chat;

  const app = express();
  app.disable('x-powered-by');
  app.use('/bcast', createBcastRouter(broadcaster)); // the Broadcaster's own /bcast/health and /bcast/stats
  app.use(createHttpHandler({ title: 'express-chat', transport: 'ws', broadcaster, dashboard, metrics }));

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
    async close() {
      await chat.shutdown(); // clients get 1001 and half a second to close
      await adapter.dispose();
      await closeServer(server);
      await metrics.shutdown();
    },
  };
}

runIfMain(import.meta.url, start, { name: 'express-chat', defaultPort: 3003 });
