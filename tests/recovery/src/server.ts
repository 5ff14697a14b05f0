/**
 * One bcast node for the recovery tests: a Broadcaster with the Redis backplane, the Redis history
 * (rooms `room:*`) and the Redis presence, behind one real adapter, driven by its parent over IPC.
 *
 * Environment: BCAST_ADAPTER (ws | socket.io), REDIS_URL, BCAST_CHANNEL, BCAST_NODE_ID,
 * BCAST_PREFIX (of every key), BCAST_HEARTBEAT_MS, PORT (0: any).
 * To the parent: { type: 'listening', port, nodeId, adapter }, then replies { type: 'reply', id, value }.
 * From the parent: { id, cmd: 'publish', items: Array<{ room, message }> } (in order, appended in
 * that order) | { id, cmd: 'presence', room } | { id, cmd: 'stats' } | { id, cmd: 'stop' }.
 */
import { createServer, type IncomingMessage } from 'node:http';
import { Broadcaster } from '@bcast/core';
import { createRedisBackplane, createRedisHistory, createRedisPresence } from '@bcast/redis';
import { attachToServer as attachSocketIo } from '@bcast/socket.io';
import { attachToServer as attachWs, recommendedServerOptions } from '@bcast/ws';
import { Server as SocketIoServer } from 'socket.io';
import { WebSocketServer } from 'ws';

type Command =
  | { id: number; cmd: 'publish'; items: Array<{ room: string; message: unknown }> }
  | { id: number; cmd: 'presence'; room: string }
  | { id: number; cmd: 'stats' }
  | { id: number; cmd: 'stop' };

const adapter = process.env['BCAST_ADAPTER'] ?? 'ws';
const nodeId = process.env['BCAST_NODE_ID'] ?? `${adapter}-${process.pid}`;
const url = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const prefix = process.env['BCAST_PREFIX'] ?? 'bcast-recovery:';
let unhandled = 0;
process.on('unhandledRejection', (reason) => {
  unhandled += 1;
  console.error(`[${nodeId}] unhandled rejection:`, reason);
});

const backplane = createRedisBackplane({ url, channel: process.env['BCAST_CHANNEL'] ?? 'bcast', nodeId, probeIntervalMs: 1_000 });
const history = createRedisHistory({ url, prefix: `${prefix}h:` });
const presence = createRedisPresence({ url, prefix: `${prefix}p:`, heartbeatMs: Number(process.env['BCAST_HEARTBEAT_MS'] ?? 5_000) });
const broadcaster = new Broadcaster({
  backplane,
  allowClientJoins: true,
  history: { rooms: 'room:*', store: history },
  presence: { events: true, store: presence },
});

const userOf = (request: IncomingMessage): string | Record<string, never> => new URL(request.url ?? '/', 'http://node').searchParams.get('user') ?? {};

const http = createServer();
let dispose: () => Promise<void>;
if (adapter === 'ws') {
  const wss = new WebSocketServer({ server: http, ...recommendedServerOptions });
  const attached = attachWs(broadcaster, wss, { authenticate: userOf });
  dispose = async () => {
    await attached.dispose();
    wss.close();
  };
} else if (adapter === 'socket.io') {
  const io = new SocketIoServer(http);
  const attached = attachSocketIo(broadcaster, io, { authenticate: (handshake) => (handshake.auth as { user?: string }).user ?? {} });
  dispose = async () => {
    await attached.dispose();
    await io.close();
  };
} else {
  throw new Error(`unknown BCAST_ADAPTER ${adapter}`);
}

/** Publishes in order, 50 at a time: each batch is appended in its order, and no append waits behind a thousand others. */
async function publish(items: Array<{ room: string; message: unknown }>): Promise<{ delivered: number; withoutPosition: number }> {
  let delivered = 0;
  for (let i = 0; i < items.length; i += 50) {
    const results = await Promise.all(items.slice(i, i + 50).map((item) => broadcaster.toRoom(item.room, item.message)));
    for (const r of results) delivered += r.delivered;
  }
  return { delivered, withoutPosition: history.stats().appendErrors };
}

process.on('message', (command: Command) => {
  const reply = (value: unknown): void => void process.send?.({ type: 'reply', id: command.id, value });
  const fail = (error: unknown): void => reply({ error: String(error) });
  if (command.cmd === 'publish') {
    publish(command.items).then(reply, fail);
  } else if (command.cmd === 'presence') {
    broadcaster.presence(command.room).then(reply, fail);
  } else if (command.cmd === 'stats') {
    reply({ history: history.stats(), presence: presence.stats(), connections: broadcaster.connections.size });
  } else if (command.cmd === 'stop') {
    void (async () => {
      await dispose();
      await broadcaster.dispose({ closeBackplane: true });
      await history.close();
      await new Promise((resolve) => http.close(resolve));
      reply({ unhandled });
      process.disconnect?.();
    })();
  }
});

await broadcaster.ready();
await Promise.all([history.ready(), presence.ready()]);
http.listen({ port: Number(process.env['PORT'] ?? 0), host: '127.0.0.1', backlog: 2_048 }, () => {
  const { port } = http.address() as { port: number };
  process.send?.({ type: 'listening', port, nodeId, adapter });
});
