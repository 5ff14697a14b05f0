import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { io as ioClient, type Socket as IoSocket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REDIS_URL, skipReason, whyUnreachable } from '../../../packages/redis/test/helpers.js';
import { WebSocket } from 'ws';
import { guardProcess } from '../../support/processGuard.js';

guardProcess();

/**
 * Three server processes, one per adapter (ws, socket.io, express upgrade), each a Broadcaster with
 * the Redis backplane, and real clients on each: every client gets every message meant for it
 * exactly once, in each publisher's order.
 */

const SERVER = fileURLToPath(new URL('../dist/server.js', import.meta.url));

const why = await whyUnreachable(REDIS_URL);
skipReason('the multi-process suite', why);

type Adapter = 'ws' | 'socket.io' | 'express';
type Message = Record<string, unknown>;

interface NodeProcess {
  readonly adapter: Adapter;
  readonly child: ChildProcess;
  readonly port: number;
  readonly path: string;
  readonly nodeId: string;
  request<T>(command: Record<string, unknown>): Promise<T>;
  output(): string;
}

async function startNode(adapter: Adapter, channel: string): Promise<NodeProcess> {
  const nodeId = `${adapter}-${randomUUID().slice(0, 8)}`;
  const child = fork(SERVER, [], {
    env: { ...process.env, BCAST_ADAPTER: adapter, BCAST_CHANNEL: channel, BCAST_NODE_ID: nodeId, REDIS_URL },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  let next = 0;
  const pending = new Map<number, (value: unknown) => void>();
  const listening = new Promise<{ port: number; path: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${adapter} node did not start: ${output}`)), 20_000);
    child.once('exit', (code) => reject(new Error(`${adapter} node exited with ${code}: ${output}`)));
    child.on('message', (message: { type: string; id?: number; value?: unknown; port?: number; path?: string }) => {
      if (message.type === 'listening') {
        clearTimeout(timer);
        resolve({ port: message.port as number, path: message.path as string });
      } else if (message.type === 'reply' && message.id !== undefined) {
        pending.get(message.id)?.(message.value);
        pending.delete(message.id);
      }
    });
  });
  const { port, path } = await listening;
  return {
    adapter,
    child,
    port,
    path,
    nodeId,
    output: () => output,
    request<T>(command: Record<string, unknown>) {
      const id = (next += 1);
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${adapter} node: no reply to ${String(command['cmd'])}: ${output}`)), 20_000);
        pending.set(id, (value) => {
          clearTimeout(timer);
          resolve(value as T);
        });
        child.send({ ...command, id });
      });
    },
  };
}

/** A real client of any of the three adapters, speaking the bcast client protocol. */
interface Client {
  readonly name: string;
  readonly messages: Message[];
  join(room: string): Promise<Message>;
  waitFor(match: (m: Message) => boolean, timeoutMs?: number): Promise<void>;
  close(): void;
}

function clientBase(name: string, send: (frame: Message) => void, close: () => void) {
  const messages: Message[] = [];
  const wakers = new Set<() => void>();
  const replies = new Map<string, (m: Message) => void>();
  let requests = 0;
  const receive = (m: Message): void => {
    const requestId = m['requestId'];
    if (typeof requestId === 'string' && replies.has(requestId)) {
      replies.get(requestId)?.(m);
      replies.delete(requestId);
      return;
    }
    messages.push(m);
    for (const wake of wakers) wake();
  };
  const client: Client = {
    name,
    messages,
    join(room) {
      const requestId = `${name}-${(requests += 1)}`;
      return new Promise((resolve) => {
        replies.set(requestId, resolve);
        send({ type: 'join', room, requestId });
      });
    },
    waitFor(match, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (!messages.some(match)) return;
          clearTimeout(timer);
          wakers.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          wakers.delete(check);
          reject(new Error(`${name}: no matching message within ${timeoutMs} ms (got ${messages.length})`));
        }, timeoutMs);
        wakers.add(check);
        check();
      });
    },
    close,
  };
  return { client, receive };
}

async function wsClient(name: string, node: NodeProcess, user: string): Promise<Client> {
  const ws = new WebSocket(`ws://127.0.0.1:${node.port}${node.path}?user=${encodeURIComponent(user)}`);
  ws.on('error', () => {});
  const { client, receive } = clientBase(name, (frame) => ws.send(JSON.stringify(frame)), () => ws.close());
  ws.on('message', (data) => receive(JSON.parse(String(data)) as Message));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => reject(new Error(`${name}: HTTP ${res.statusCode}`)));
    ws.once('close', (code) => reject(new Error(`${name}: closed ${code}`)));
  });
  return client;
}

async function socketIoClient(name: string, node: NodeProcess, user: string): Promise<Client> {
  const socket: IoSocket = ioClient(`http://127.0.0.1:${node.port}`, { auth: { user }, transports: ['websocket'], reconnection: false });
  const { client, receive } = clientBase(name, (frame) => socket.emit('message', frame), () => socket.disconnect());
  socket.on('message', (data: unknown) => receive((typeof data === 'string' ? JSON.parse(data) : data) as Message));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', (error) => reject(error));
  });
  return client;
}

describe.skipIf(why !== undefined)('three processes, three adapters, one Redis backplane', () => {
  const nodes: NodeProcess[] = [];
  const clients: Client[] = [];

  beforeAll(async () => {
    if (!existsSync(SERVER)) throw new Error(`${SERVER} is missing: build first (npx turbo run build)`);
    const channel = `multinode-${randomUUID()}`;
    nodes.push(...(await Promise.all((['ws', 'socket.io', 'express'] as const).map((adapter) => startNode(adapter, channel)))));
  }, 30_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    const stopped = await Promise.all(
      nodes.map(async (node) => {
        const exited = new Promise((resolve) => node.child.once('exit', resolve));
        const timer = setTimeout(() => node.child.kill('SIGKILL'), 10_000);
        const reply = await node.request<{ unhandled: number }>({ cmd: 'stop' }).catch((error: unknown) => ({ error: String(error) }));
        const code = await exited;
        clearTimeout(timer);
        return { adapter: node.adapter, ...reply, code };
      }),
    );
    // every node shut down cleanly by itself, with no unhandled rejection on the way
    expect(stopped).toEqual(nodes.map((n) => ({ adapter: n.adapter, unhandled: 0, code: 0 })));
  }, 30_000);

  it('all / room with members on every node / a user on two nodes: each client gets each message once, in publisher order', async () => {
    const [wsNode, ioNode, expressNode] = nodes as [NodeProcess, NodeProcess, NodeProcess];
    const layout: Array<{ name: string; node: NodeProcess; user: string; lobby: boolean }> = [
      { name: 'w1', node: wsNode, user: 'alice', lobby: true },
      { name: 'w2', node: wsNode, user: 'bob', lobby: false },
      { name: 's1', node: ioNode, user: 'alice', lobby: false },
      { name: 's2', node: ioNode, user: 'carol', lobby: true },
      { name: 'e1', node: expressNode, user: 'dave', lobby: true },
      { name: 'e2', node: expressNode, user: 'erin', lobby: false },
    ];
    for (const spec of layout) {
      const client = await (spec.node.adapter === 'socket.io' ? socketIoClient : wsClient)(spec.name, spec.node, spec.user);
      clients.push(client);
      if (spec.lobby) expect(await client.join('lobby')).toMatchObject({ type: 'ok', op: 'join', room: 'lobby' });
    }

    const rounds = 30;
    const kinds = ['all', 'room', 'user'] as const;
    const batch = (from: string) =>
      Array.from({ length: rounds }, (_, seq) => {
        const op = kinds[seq % kinds.length]!;
        return { op, target: op === 'room' ? 'lobby' : op === 'user' ? 'alice' : undefined, message: { from, seq, op } };
      });
    const results = await Promise.all(nodes.map((n) => n.request<Array<{ backplane: string }>>({ cmd: 'batch', items: batch(n.nodeId) })));
    for (const r of results) expect(r.map((x) => x.backplane)).toEqual(Array(rounds).fill('published'));

    // Fences: per-publisher order means nothing of a publisher's can arrive after its fence.
    await Promise.all(nodes.map((n) => n.request({ cmd: 'batch', items: [{ op: 'all', message: { from: n.nodeId, fence: true } }] })));
    await Promise.all(clients.flatMap((c) => nodes.map((n) => c.waitFor((m) => m['from'] === n.nodeId && m['fence'] === true))));

    for (const spec of layout) {
      const client = clients.find((c) => c.name === spec.name)!;
      for (const publisher of nodes) {
        const expected = Array.from({ length: rounds }, (_, seq) => seq).filter((seq) => {
          const op = kinds[seq % kinds.length];
          return op === 'all' || (op === 'room' && spec.lobby) || (op === 'user' && spec.user === 'alice');
        });
        const got = client.messages.filter((m) => m['from'] === publisher.nodeId && m['fence'] === undefined).map((m) => m['seq']);
        expect(got, `${spec.name} (${spec.node.adapter}) from ${publisher.adapter}`).toEqual(expected);
      }
      expect(client.messages.filter((m) => m['fence'] === true)).toHaveLength(nodes.length);
    }

    for (const n of nodes) {
      const health = await n.request<{ status: string; backplane: { status: string; details: { dropped: { total: number } } } }>({ cmd: 'health' });
      expect(health.backplane.status, n.adapter).toBe('healthy');
      expect(health.backplane.details.dropped.total).toBe(0);
    }
  });
});
