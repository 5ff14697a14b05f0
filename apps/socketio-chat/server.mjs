// A chat on socket.io: the page at /, socket.io at /socket.io/ (its client script included),
// broadcasts through the legacy BroadcastManager facade (@bcast/compat) on a bcast Broadcaster.
//   node --import ./instrumentation.mjs server.mjs      (PORT=3002 HOST=127.0.0.1 by default)
import http from 'node:http';
import { BroadcastManager, ConnectionManager } from '@bcast/compat';
import { Broadcaster } from '@bcast/core';
import { appMetrics, backplaneOptions, chatHooks, closeServer, createHttpHandler, demoIdentity, listen, runIfMain } from '@bcast/app-shared';
import { attachToServer } from '@bcast/socket.io';
import { Server } from 'socket.io';

/** @param {import('@bcast/app-shared').StartOptions} [options] */
export async function start({ redisUrl, redisChannel, port = 3002, host = '127.0.0.1', logger = console } = {}) {
  const metrics = appMetrics('bcast-socketio-chat');
  const chat = chatHooks({ logger });
  const broadcaster = new Broadcaster({ ...chat.options, ...metrics.broadcasterOptions, ...(await backplaneOptions({ redisUrl, redisChannel, logger })), logger });
  // The legacy facade on this Broadcaster; bad input (an invalid room, a message too large)
  // rejects with a BcastError instead of resolving as a failed result, for clear HTTP 400s.
  const manager = new BroadcastManager(new ConnectionManager({ broadcaster }), undefined, { errorMode: 'reject' });
  chat.use(manager, broadcaster);

  const server = http.createServer(createHttpHandler({ title: 'socketio-chat', transport: 'socket.io', manager, broadcaster, metrics }));
  const io = new Server(server, { maxHttpBufferSize: 65_536 });
  const adapter = attachToServer(broadcaster, io, {
    // DEMO ONLY: the name typed on the page (socket.io `auth: { name }`) is the identity. Verify a
    // session or a signed token here in a real app.
    authenticate: (handshake) => demoIdentity(handshake.auth?.name),
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
      await io.close(); // also closes the HTTP server
      await closeServer(server);
      await metrics.shutdown();
    },
  };
}

runIfMain(import.meta.url, start, { name: 'socketio-chat', defaultPort: 3002 });
