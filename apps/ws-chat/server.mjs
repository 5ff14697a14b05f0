// A chat on a plain `ws` WebSocketServer: the page at /, WebSockets at /ws, broadcasts through the
// legacy BroadcastManager facade (@bcast/compat) on a bcast Broadcaster.
//   node --import ./instrumentation.mjs server.mjs      (PORT=3001 HOST=127.0.0.1 by default)
import http from 'node:http';
import { BroadcastManager, ConnectionManager } from '@bcast/compat';
import { Broadcaster } from '@bcast/core';
import { appMetrics, backplaneOptions, chatHooks, closeServer, createHttpHandler, demoIdentity, listen, nameFromUrl, runIfMain } from '@bcast/app-shared';
import { attachToServer, recommendedServerOptions } from '@bcast/ws';
import { WebSocketServer } from 'ws';

/** @param {import('@bcast/app-shared').StartOptions} [options] */
export async function start({ redisUrl, redisChannel, port = 3001, host = '127.0.0.1', logger = console } = {}) {
  const metrics = appMetrics('bcast-ws-chat');
  const chat = chatHooks({ logger });
  const broadcaster = new Broadcaster({ ...chat.options, ...metrics.broadcasterOptions, ...(await backplaneOptions({ redisUrl, redisChannel, logger })), logger });
  // The legacy facade on this Broadcaster; bad input (an invalid room, a message too large)
  // rejects with a BcastError instead of resolving as a failed result, for clear HTTP 400s.
  const manager = new BroadcastManager(new ConnectionManager({ broadcaster }), undefined, { errorMode: 'reject' });
  chat.use(manager, broadcaster);

  const server = http.createServer(createHttpHandler({ title: 'ws-chat', transport: 'ws', manager, broadcaster, metrics }));
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
    manager,
    async close() {
      await adapter.dispose();
      await broadcaster.dispose({ closeBackplane: true });
      await new Promise((resolve) => wss.close(resolve));
      await closeServer(server);
      await metrics.shutdown();
    },
  };
}

runIfMain(import.meta.url, start, { name: 'ws-chat', defaultPort: 3001 });
