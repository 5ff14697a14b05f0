// A chat on a plain `ws` WebSocketServer: the page at /, WebSockets at /ws, broadcasts with the
// bcast Broadcaster (rooms with history and presence, see @bcast/app-shared).
//   node --import ./instrumentation.mjs server.mjs      (PORT=3001 HOST=127.0.0.1 by default)
import http from 'node:http';
import { closeServer, createChat, createHttpHandler, demoIdentity, listen, nameFromUrl, runIfMain } from '@bcast/app-shared';
import { attachToServer, recommendedServerOptions } from '@bcast/ws';
import { WebSocketServer } from 'ws';

/** @param {import('@bcast/app-shared').StartOptions} [options] */
export async function start({ redisUrl, redisChannel, traceUrl, port = 3001, host = '127.0.0.1', logger = console } = {}) {
  const chat = await createChat({ serviceName: 'bcast-ws-chat', logger, redisUrl, redisChannel, traceUrl });
  const { broadcaster, dashboard, metrics } = chat;

  const server = http.createServer(createHttpHandler({ title: 'ws-chat', transport: 'ws', broadcaster, dashboard, metrics }));
  const wss = new WebSocketServer({ server, path: '/ws', ...recommendedServerOptions });
  wss.on('error', () => {}); // re-emitted HTTP server errors (EADDRINUSE...): listen() below reports them
  const adapter = attachToServer(broadcaster, wss, {
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
      await new Promise((resolve) => wss.close(resolve));
      await closeServer(server);
      await metrics.shutdown();
    },
  };
}

runIfMain(import.meta.url, start, { name: 'ws-chat', defaultPort: 3001 });
