import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BcastClient, type MessageMeta } from '@bcast/client';
import { Redis } from 'ioredis';
import { io as ioClient, type Socket as IoSocket } from 'socket.io-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { REDIS_URL, freePort, skipReason, until, whyUnreachable } from '../../../packages/redis/test/helpers.js';
import { guardProcess } from '../../support/processGuard.js';

guardProcess();

/**
 * Server processes (ws or socket.io) sharing one Redis for the backplane, the history of rooms
 * `room:*` and presence, with real clients: a client recovers on another node what it missed, a
 * thousand clients recover at once after their node was killed, and a killed node's users leave
 * the others' presence by themselves.
 */

const SERVER = fileURLToPath(new URL('../dist/server.js', import.meta.url));
const STORM_CLIENTS = fileURLToPath(new URL('../dist/storm-clients.js', import.meta.url));

const why = await whyUnreachable(REDIS_URL);
skipReason('the recovery suite', why);

type Adapter = 'ws' | 'socket.io';
type Json = Record<string, unknown>;

interface NodeProcess {
  readonly adapter: Adapter;
  readonly child: ChildProcess;
  readonly port: number;
  readonly nodeId: string;
  request<T>(command: Json): Promise<T>;
  kill(): Promise<void>;
  stop(): Promise<{ unhandled?: number; code: number | null }>;
}

/** A child process driven over IPC: `request` sends `{ ...command, id }` and resolves with the reply's value. */
function ipc(child: ChildProcess, label: string, output: () => string) {
  let next = 0;
  const pending = new Map<number, (value: unknown) => void>();
  child.on('message', (message: { type: string; id?: number; value?: unknown }) => {
    if (message.type !== 'reply' || message.id === undefined) return;
    pending.get(message.id)?.(message.value);
    pending.delete(message.id);
  });
  return <T>(command: Json, timeoutMs = 60_000): Promise<T> => {
    const id = (next += 1);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${label}: no reply to ${String(command['cmd'])}: ${output()}`)), timeoutMs);
      pending.set(id, (value) => {
        clearTimeout(timer);
        const error = (value as { error?: string } | undefined)?.error;
        if (error !== undefined) reject(new Error(`${label}: ${String(command['cmd'])} failed: ${error}`));
        else resolve(value as T);
      });
      child.send({ ...command, id });
    });
  };
}

const running = new Set<NodeProcess>();

async function startNode(adapter: Adapter, env: { channel: string; prefix: string; heartbeatMs?: number; port?: number; nodeId?: string }): Promise<NodeProcess> {
  const nodeId = env.nodeId ?? `${adapter}-${randomUUID().slice(0, 8)}`;
  const child = fork(SERVER, [], {
    env: {
      ...process.env,
      BCAST_ADAPTER: adapter,
      BCAST_CHANNEL: env.channel,
      BCAST_NODE_ID: nodeId,
      BCAST_PREFIX: env.prefix,
      BCAST_HEARTBEAT_MS: String(env.heartbeatMs ?? 5_000),
      PORT: String(env.port ?? 0),
      REDIS_URL,
    },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${adapter} node did not start: ${output}`)), 20_000);
    child.once('exit', (code) => reject(new Error(`${adapter} node exited with ${code}: ${output}`)));
    child.on('message', (message: { type: string; port?: number }) => {
      if (message.type !== 'listening') return;
      clearTimeout(timer);
      resolve(message.port as number);
    });
  });
  const request = ipc(child, `${adapter} node ${nodeId}`, () => output);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const node: NodeProcess = {
    adapter,
    child,
    port,
    nodeId,
    request,
    async kill() {
      running.delete(node);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      running.delete(node);
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const reply = await request<{ unhandled: number }>({ cmd: 'stop' }).catch((error: unknown) => ({ error: String(error) }));
      const code = await exited;
      clearTimeout(timer);
      return { ...reply, code };
    },
  };
  running.add(node);
  return node;
}

/** Deletes every key under `prefix` (never FLUSHALL: the Redis is shared). */
async function deleteKeys(admin: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = (await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1_000)) as [string, string[]];
    cursor = next;
    if (keys.length > 0) await admin.unlink(...keys);
  } while (cursor !== '0');
}

const publish = (node: NodeProcess, items: Array<{ room: string; message: unknown }>) => node.request<{ delivered: number; withoutPosition: number }>({ cmd: 'publish', items });
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe.skipIf(why !== undefined)('recovery across processes (Redis backplane, history and presence)', () => {
  let admin: Redis;
  const prefix = `bcast-test:recovery:${randomUUID().slice(0, 8)}:`;
  const cleanup: Array<() => Promise<unknown> | unknown> = [];

  beforeAll(() => {
    for (const file of [SERVER, STORM_CLIENTS]) if (!existsSync(file)) throw new Error(`${file} is missing: build first (npx turbo run build)`);
    admin = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    admin.on('error', () => {});
  });
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
    // every node still running shuts down cleanly by itself, with no unhandled rejection on the way
    const stopped = await Promise.all([...running].map(async (n) => ({ node: n.nodeId, ...(await n.stop()) })));
    expect(stopped.filter((s) => s.code !== 0 || s.unhandled !== 0)).toEqual([]);
  }, 30_000);
  afterAll(async () => {
    await deleteKeys(admin, prefix);
    await admin.quit();
  });

  const cluster = (adapter: Adapter, options: { heartbeatMs?: number } = {}) => {
    const channel = `recovery-${randomUUID()}`;
    return Promise.all([startNode(adapter, { channel, prefix, ...options }), startNode(adapter, { channel, prefix, ...options })]);
  };

  it('ws: a @bcast/client on node A rejoins node B after A died and gets the 20 messages it missed once, in order, then live ones', async () => {
    const [A, B] = await cluster('ws');
    const room = `room:${randomUUID().slice(0, 8)}`;
    let openB!: (url: string) => void;
    const toB = new Promise<string>((resolve) => (openB = resolve));
    let connects = 0;
    const client = new BcastClient({
      url: () => ((connects += 1) === 1 ? `ws://127.0.0.1:${A.port}/` : toB),
      WebSocket: WebSocket as never,
      minReconnectDelayMs: 20,
      maxReconnectDelayMs: 100,
    });
    cleanup.push(() => client.close());
    const got: Array<{ n: number; meta: MessageMeta }> = [];
    const recoveries: Array<{ room: string; recovered: boolean }> = [];
    client.on('message', (data, meta) => void got.push({ n: (data as { n: number }).n, meta }));
    client.on('recovery', (r) => void recoveries.push(r));
    const closed = new Promise<void>((resolve) => client.on('close', () => resolve()));
    await client.join(room);

    await publish(B, [{ room, message: { n: 0 } }]); // through the backplane to A: the client has a position
    await until('the first message', () => got.length === 1);
    const seen = client.positions[room];
    expect(seen?.offset).toBe(1);

    await A.kill();
    await closed;
    const missed = await publish(B, range(1, 20).map((n) => ({ room, message: { n } })));
    expect(missed.withoutPosition).toBe(0);
    openB(`ws://127.0.0.1:${B.port}/`);
    await until('the recovery', () => recoveries.length === 1, 15_000);
    expect(recoveries).toEqual([{ room, recovered: true }]);
    expect(got.map((g) => g.n)).toEqual(range(0, 20));
    expect(got.map((g) => g.meta.offset)).toEqual(range(1, 21));
    expect(new Set(got.map((g) => g.meta.epoch))).toEqual(new Set([seen?.epoch]));

    await publish(B, range(21, 25).map((n) => ({ room, message: { n } })));
    await until('the live messages', () => got.length === 26);
    await new Promise((r) => setTimeout(r, 100));
    expect(got.map((g) => g.n)).toEqual(range(0, 25));
    expect(client.positions[room]).toEqual({ offset: 26, epoch: seen?.epoch });
  });

  it('socket.io: a client of node A that reconnects to node B with since gets the 20 missed messages once, in order, then live ones', async () => {
    const [A, B] = await cluster('socket.io');
    const room = `room:${randomUUID().slice(0, 8)}`;
    const messages: Json[] = [];
    const open = async (node: NodeProcess): Promise<IoSocket> => {
      const socket = ioClient(`http://127.0.0.1:${node.port}`, { transports: ['websocket'], reconnection: false });
      socket.on('message', (data: unknown) => void messages.push((typeof data === 'string' ? JSON.parse(data) : data) as Json));
      cleanup.push(() => socket.disconnect());
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', () => resolve());
        socket.once('connect_error', reject);
      });
      return socket;
    };
    const pubs = () => messages.filter((m) => m['type'] === 'bcast.pub');
    const onA = await open(A);
    onA.emit('message', { type: 'join', room, requestId: 'a' });
    await until('the join on A', () => messages.some((m) => m['requestId'] === 'a'));
    await publish(B, [{ room, message: { n: 0 } }]);
    await until('the first message', () => pubs().length === 1);
    const first = pubs()[0] as { offset: number; epoch: string };
    const since = { offset: first.offset, epoch: first.epoch };

    const gone = new Promise<void>((resolve) => onA.once('disconnect', () => resolve()));
    await A.kill();
    await gone;
    await publish(B, range(1, 20).map((n) => ({ room, message: { n } })));
    messages.length = 0;
    const onB = await open(B);
    onB.emit('message', { type: 'join', room, requestId: 'b', since });
    await until('the join reply on B', () => messages.some((m) => m['requestId'] === 'b'));
    await publish(B, range(21, 25).map((n) => ({ room, message: { n } })));
    await until('the live messages', () => pubs().length === 25);
    await new Promise((r) => setTimeout(r, 100));
    const reply = messages.findIndex((m) => m['requestId'] === 'b');
    expect(messages[reply]).toEqual({ type: 'ok', op: 'join', room, requestId: 'b', recovered: true, position: { offset: 21, epoch: since.epoch } });
    expect(messages.slice(0, reply).map((m) => (m['data'] as { n: number }).n)).toEqual(range(1, 20)); // before the reply: what was missed
    expect(pubs().map((m) => (m['data'] as { n: number }).n)).toEqual(range(1, 25));
    expect(pubs().map((m) => m['offset'])).toEqual(range(2, 26));
  });

  it('the storm: 1,000 clients of a node killed with SIGKILL reconnect at once and each recovers exactly what it missed', async () => {
    const N = 1_000;
    const ROOMS = 100;
    const MISSED = 10; // per room: 1,000 messages published while the node is dead
    const channel = `recovery-${randomUUID()}`;
    const port = await freePort();
    const tag = randomUUID().slice(0, 8);
    const rooms = range(0, ROOMS - 1).map((i) => `room:storm:${tag}:${i}`);
    let S = await startNode('ws', { channel, prefix, port });
    const P = await startNode('ws', { channel, prefix });
    const child = fork(STORM_CLIENTS, [], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    let output = '';
    child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    cleanup.push(() => child.kill());
    await new Promise<void>((resolve) => child.once('message', () => resolve()));
    const clients = ipc(child, 'storm clients', () => output);

    const connected = await clients<{ connected: number; ms: number }>({ cmd: 'connect', port, n: N, rooms });
    expect(connected.connected).toBe(N);
    await publish(P, rooms.map((room) => ({ room, message: { room, seq: 0 } })));
    await clients({ cmd: 'positions' });

    await S.kill();
    await clients({ cmd: 'closed' });
    const published: Array<{ room: string; message: unknown }> = [];
    for (let seq = 1; seq <= MISSED; seq += 1) for (const room of rooms) published.push({ room, message: { room, seq } });
    expect((await publish(P, published)).withoutPosition).toBe(0);

    S = await startNode('ws', { channel, prefix, port }); // the same address, a new process
    const storm = await clients<{ clients: number; openedMs: number; ms: number; recovered: number; exact: number; messages: number; problems: string[] }>({ cmd: 'reconnect', port, missed: MISSED });
    console.log(
      `[storm] ${storm.clients} clients reconnected at once and recovered ${storm.messages} messages (${MISSED} each) in ${Math.round(storm.ms)} ms ` +
        `(all sockets open after ${Math.round(storm.openedMs)} ms); recovered: ${storm.recovered}, exact: ${storm.exact}`,
    );
    expect(storm.problems).toEqual([]);
    expect(storm).toMatchObject({ clients: N, recovered: N, exact: N, messages: N * MISSED });
    expect(storm.ms).toBeLessThan(10_000);

    // then live, from both nodes: once each, in order
    await publish(P, rooms.map((room) => ({ room, message: { room, seq: MISSED + 1 } })));
    expect(await clients({ cmd: 'live', seq: MISSED + 1 })).toEqual({ duplicates: 0, outOfOrder: 0 });
    await publish(S, rooms.map((room) => ({ room, message: { room, seq: MISSED + 2 } })));
    expect(await clients({ cmd: 'live', seq: MISSED + 2 })).toEqual({ duplicates: 0, outOfOrder: 0 });
  }, 120_000);

  it('presence across two processes: each node lists the other\'s users; a node killed with SIGKILL leaves within 2 x heartbeat', async () => {
    const heartbeatMs = 500;
    const channel = `recovery-${randomUUID()}`;
    const [P1, P2] = await Promise.all([startNode('ws', { channel, prefix, heartbeatMs }), startNode('socket.io', { channel, prefix, heartbeatMs })]);
    const room = `online-${randomUUID().slice(0, 8)}`;
    const join = async (node: NodeProcess, user: string): Promise<void> => {
      if (node.adapter === 'ws') {
        const ws = new WebSocket(`ws://127.0.0.1:${node.port}/?user=${user}`);
        ws.on('error', () => {});
        cleanup.push(() => ws.terminate());
        await new Promise<void>((resolve, reject) => {
          ws.once('open', () => resolve());
          ws.once('error', reject);
        });
        const ok = new Promise<void>((resolve) => ws.on('message', (d) => void ((JSON.parse(String(d)) as Json)['type'] === 'ok' && resolve())));
        ws.send(JSON.stringify({ type: 'join', room, requestId: 1 }));
        await ok;
      } else {
        const socket = ioClient(`http://127.0.0.1:${node.port}`, { auth: { user }, transports: ['websocket'], reconnection: false });
        cleanup.push(() => socket.disconnect());
        const ok = new Promise<void>((resolve) => socket.on('message', (m: Json) => void (m['type'] === 'ok' && resolve())));
        socket.on('connect', () => socket.emit('message', { type: 'join', room, requestId: 1 }));
        await ok;
      }
    };
    await Promise.all([join(P1, 'alice'), join(P1, 'bob'), join(P2, 'carol'), join(P2, 'carol'), join(P2, 'dave')]);
    const online = async (node: NodeProcess): Promise<string> =>
      (await node.request<{ users: Array<{ userId: string; connections: number }> }>({ cmd: 'presence', room })).users.map((u) => `${u.userId}×${u.connections}`).join(' ');
    const everyone = 'alice×1 bob×1 carol×2 dave×1';
    await until('both nodes to list everyone', async () => (await online(P1)) === everyone && (await online(P2)) === everyone);

    await P2.kill();
    const killedAt = performance.now();
    await until('the killed node\'s users to leave', async () => (await online(P1)) === 'alice×1 bob×1', 5_000, 20);
    const goneMs = performance.now() - killedAt;
    console.log(`[presence] the users of a node killed with SIGKILL left the others' presence after ${Math.round(goneMs)} ms (heartbeat ${heartbeatMs} ms)`);
    expect(goneMs).toBeLessThanOrEqual(2 * heartbeatMs + 250); // + the time to observe it (IPC, a Redis read)
  });
});
