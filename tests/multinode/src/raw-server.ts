/**
 * The calibration node of the remote-latency test: what the same two-node setup costs without
 * bcast. A plain ws server and two ioredis connections; a broadcast is published to Redis first,
 * then written to every local client (the message serialized once, `ws.send` per client), and a
 * message from Redis is written to every local client. Same IPC protocol as server.ts ('batch'
 * with `op: 'all'` only, 'stop').
 *
 * Environment: REDIS_URL, BCAST_CHANNEL, BCAST_NODE_ID.
 */
import { createServer } from 'node:http';
import { Redis } from 'ioredis';
import { WebSocketServer } from 'ws';

type Command = { id: number; cmd: 'batch'; items: Array<{ op: 'all'; message: unknown }> } | { id: number; cmd: 'stop' };

const url = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const channel = process.env['BCAST_CHANNEL'] ?? 'bcast';
const nodeId = process.env['BCAST_NODE_ID'] ?? `raw-${process.pid}`;
const publisher = new Redis(url);
const subscriber = new Redis(url);

const http = createServer();
const wss = new WebSocketServer({ server: http, perMessageDeflate: false });
const fanOut = (text: string): void => {
  for (const ws of wss.clients) ws.send(text);
};

await subscriber.subscribe(channel);
subscriber.on('message', (_channel: string, raw: string) => {
  const { from, text } = JSON.parse(raw) as { from: string; text: string };
  if (from !== nodeId) fanOut(text);
});

process.on('message', (command: Command) => {
  const reply = (value: unknown): void => void process.send?.({ type: 'reply', id: command.id, value });
  if (command.cmd === 'batch') {
    for (const item of command.items) {
      const text = JSON.stringify(item.message);
      void publisher.publish(channel, JSON.stringify({ from: nodeId, text }));
      fanOut(text);
    }
    reply({ ok: true });
  } else if (command.cmd === 'stop') {
    for (const ws of wss.clients) ws.terminate();
    void Promise.all([publisher.quit(), subscriber.quit()]).then(() => {
      http.close();
      reply({});
      process.disconnect?.();
    });
  }
});

http.listen(0, '127.0.0.1', () => {
  const { port } = http.address() as { port: number };
  process.send?.({ type: 'listening', port, path: '/', nodeId, adapter: 'raw' });
});
