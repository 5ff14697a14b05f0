/**
 * One bcast node for the multi-node tests: a Broadcaster with the Redis backplane behind one real
 * adapter, driven by its parent over IPC (child_process.fork).
 *
 * Environment: BCAST_ADAPTER (ws | socket.io | express), REDIS_URL, BCAST_CHANNEL, BCAST_NODE_ID.
 * To the parent: { type: 'listening', port, path, nodeId, adapter }, then replies { type: 'reply', id, value }.
 * From the parent: { id, cmd: 'batch', items: Broadcast[] } | { id, cmd: 'health' } | { id, cmd: 'stop' }.
 */
import { createServer, type IncomingMessage } from 'node:http';
import { Broadcaster, type BroadcastResult } from '@bcast/core';
import { attachUpgrade, createBcastRouter } from '@bcast/express';
import { createRedisBackplane } from '@bcast/redis';
import { attachToServer as attachSocketIo } from '@bcast/socket.io';
import { attachToServer as attachWs, recommendedServerOptions } from '@bcast/ws';
import express from 'express';
import { Server as SocketIoServer } from 'socket.io';
import { WebSocketServer } from 'ws';

export interface Broadcast {
  readonly op: 'all' | 'room' | 'user';
  readonly target?: string;
  readonly message: unknown;
}

type Command = { id: number; cmd: 'batch'; items: Broadcast[] } | { id: number; cmd: 'health' } | { id: number; cmd: 'stop' };

const adapter = process.env['BCAST_ADAPTER'] ?? 'ws';
const nodeId = process.env['BCAST_NODE_ID'] ?? `${adapter}-${process.pid}`;
let unhandled = 0;
process.on('unhandledRejection', (reason) => {
  unhandled += 1;
  console.error(`[${nodeId}] unhandled rejection:`, reason);
});

const backplane = createRedisBackplane({
  url: process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379',
  channel: process.env['BCAST_CHANNEL'] ?? 'bcast',
  nodeId,
  probeIntervalMs: 1_000,
});
const broadcaster = new Broadcaster({ backplane, allowClientJoins: true });

const userOf = (request: IncomingMessage): string | Record<string, never> => new URL(request.url ?? '/', 'http://node').searchParams.get('user') ?? {};

const app = adapter === 'express' ? express() : undefined;
const http = app ? createServer(app) : createServer();
let path = '/';
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
} else if (app) {
  app.use('/bcast', createBcastRouter(broadcaster));
  path = '/ws';
  const attached = attachUpgrade(broadcaster, http, { path, authenticate: userOf });
  dispose = () => attached.dispose();
} else {
  throw new Error(`unknown BCAST_ADAPTER ${adapter}`);
}

function run(item: Broadcast): Promise<BroadcastResult> {
  if (item.op === 'room') return broadcaster.toRoom(item.target ?? '', item.message);
  if (item.op === 'user') return broadcaster.toUser(item.target ?? '', item.message);
  return broadcaster.toAll(item.message);
}

process.on('message', (command: Command) => {
  const reply = (value: unknown): void => void process.send?.({ type: 'reply', id: command.id, value });
  if (command.cmd === 'batch') {
    // All started at once, in order: the backplane publishes them in this order.
    void Promise.all(command.items.map(run)).then(reply, (error: unknown) => reply({ error: String(error) }));
  } else if (command.cmd === 'health') {
    reply(broadcaster.getHealthStatus());
  } else if (command.cmd === 'stop') {
    void (async () => {
      await dispose();
      await broadcaster.dispose({ closeBackplane: true });
      await new Promise((resolve) => http.close(resolve));
      reply({ unhandled });
      process.disconnect?.();
    })();
  }
});

await broadcaster.ready();
http.listen(0, '127.0.0.1', () => {
  const { port } = http.address() as { port: number };
  process.send?.({ type: 'listening', port, path, nodeId, adapter });
});
