// A chat on socket.io: the page at /, socket.io at /socket.io/ (its client script included),
// broadcasts with the bcast Broadcaster (rooms with history and presence, see @bcast/app-shared).
//   node --import ./instrumentation.mjs server.mjs      (PORT=3002 HOST=127.0.0.1 by default)
import http from 'node:http';
import { closeServer, createChat, createHttpHandler, demoIdentity, listen, runIfMain } from '@bcast/app-shared';
import { attachToServer } from '@bcast/socket.io';
import { Server } from 'socket.io';

/** @param {import('@bcast/app-shared').StartOptions} [options] */
export async function start({ redisUrl, redisChannel, traceUrl, port = 3002, host = '127.0.0.1', logger = console } = {}) {
  const chat = await createChat({ serviceName: 'bcast-socketio-chat', logger, redisUrl, redisChannel, traceUrl });
  const { broadcaster, dashboard, metrics } = chat;

  const server = http.createServer(createHttpHandler({ title: 'socketio-chat', transport: 'socket.io', broadcaster, dashboard, metrics }));
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
    async close() {
      await chat.shutdown(); // clients get disconnected and half a second to go
      await adapter.dispose();
      await io.close(); // also closes the HTTP server
      await closeServer(server);
      await metrics.shutdown();
    },
  };
}

runIfMain(import.meta.url, start, { name: 'socketio-chat', defaultPort: 3002 });
