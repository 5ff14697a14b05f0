import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Broadcaster, type BroadcasterOptions } from '@bcast/core';
import type { AuthResult } from '@bcast/core/adapter';
import { MemoryBus } from '@bcast/core/backplane';
import { attachUpgrade, createBcastRouter } from '@bcast/express';
import { attachToServer as attachSocketIo } from '@bcast/socket.io';
import { attachToServer as attachWs, recommendedServerOptions } from '@bcast/ws';
import express from 'express';
import { Server as SocketIoServer } from 'socket.io';
import { io as ioClient, type Socket as IoSocket } from 'socket.io-client';
import { WebSocket, WebSocketServer } from 'ws';

/**
 * Three bcast nodes in this process, each a Broadcaster on its own backplane of one MemoryBus,
 * its own HTTP server on 127.0.0.1:0 and a real adapter: @bcast/ws, @bcast/socket.io and
 * @bcast/express. Clients are real (`ws`, `socket.io-client`) and speak the client protocol.
 */

export type Adapter = 'ws' | 'socket.io' | 'express';
export const ADAPTERS: readonly Adapter[] = ['ws', 'socket.io', 'express'];

export type Message = Record<string, unknown>;

export interface ClusterNode {
  readonly adapter: Adapter;
  /** The backplane's node id: `node-ws`, `node-socket.io`, `node-express`. */
  readonly nodeId: string;
  readonly broadcaster: Broadcaster;
  readonly http: HttpServer;
  /** Where a client connects (ws:// for ws and express, http:// for socket.io). */
  readonly url: string;
}

export interface Client {
  /** Unique in the cluster; also the `tag` its node's authenticate stores in the connection's data. */
  readonly name: string;
  readonly user: string;
  readonly node: ClusterNode;
  /** The server-side connection id on its node. */
  readonly id: string;
  /** Every application message received, in order (replies to requests are not in it). */
  readonly messages: Message[];
  /** Sends a protocol request (`join`, `leave`...) and resolves with the reply. */
  request(message: Message): Promise<Message>;
  /** Resolves once a message matching `match` arrived (or was already there). */
  waitFor(match: (m: Message) => boolean, what: string, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

const quiet = { warn: () => {}, error: () => {} };

/** The identity a client asks for: `?user=&tag=` on ws and express, `auth: { user, tag }` on socket.io. */
function identity(user: unknown, tag: unknown): AuthResult {
  return typeof user === 'string' && user !== '' && typeof tag === 'string' ? { userId: user, data: { tag } } : false;
}
const fromUrl = (request: IncomingMessage): AuthResult => {
  const params = new URL(request.url ?? '/', 'http://node').searchParams;
  return identity(params.get('user'), params.get('tag'));
};

export class Cluster {
  readonly bus = new MemoryBus();
  readonly nodes: ClusterNode[] = [];
  readonly clients: Client[] = [];
  readonly #closers: Array<() => Promise<void>> = [];

  /** Starts the three nodes; `options` adds to each node's BroadcasterOptions. */
  static async start(options: (adapter: Adapter) => BroadcasterOptions = () => ({})): Promise<Cluster> {
    const cluster = new Cluster();
    for (const adapter of ADAPTERS) await cluster.#startNode(adapter, options(adapter));
    await Promise.all(cluster.nodes.map((n) => n.broadcaster.ready()));
    return cluster;
  }

  node(adapter: Adapter): ClusterNode {
    const node = this.nodes.find((n) => n.adapter === adapter);
    if (!node) throw new Error(`no ${adapter} node`);
    return node;
  }

  async #startNode(adapter: Adapter, options: BroadcasterOptions): Promise<void> {
    const nodeId = `node-${adapter}`;
    const broadcaster = new Broadcaster({ logger: quiet, ...options, backplane: this.bus.backplane(nodeId) });
    let http: HttpServer;
    let url: string;
    let closeTransport: () => Promise<void>;
    if (adapter === 'ws') {
      http = createServer();
      const wss = new WebSocketServer({ server: http, ...recommendedServerOptions });
      const attached = attachWs(broadcaster, wss, { authenticate: fromUrl });
      closeTransport = async () => {
        await attached.dispose();
        for (const ws of wss.clients) ws.terminate();
        await new Promise<void>((resolve) => wss.close(() => resolve()));
      };
    } else if (adapter === 'socket.io') {
      http = createServer();
      const io = new SocketIoServer(http);
      const attached = attachSocketIo(broadcaster, io, { authenticate: (handshake) => identity(handshake.auth['user'], handshake.auth['tag']) });
      closeTransport = async () => {
        await attached.dispose();
        await new Promise<void>((resolve) => {
          void io.close(() => resolve());
          http.closeAllConnections();
        });
      };
    } else {
      const app = express();
      app.use('/bcast', createBcastRouter(broadcaster));
      http = createServer(app);
      const attached = attachUpgrade(broadcaster, http, { path: '/ws', authenticate: fromUrl });
      closeTransport = () => attached.dispose();
    }
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    const { port } = http.address() as AddressInfo;
    url = adapter === 'socket.io' ? `http://127.0.0.1:${port}` : `ws://127.0.0.1:${port}${adapter === 'express' ? '/ws' : '/'}`;
    this.nodes.push({ adapter, nodeId, broadcaster, http, url });
    this.#closers.push(async () => {
      await closeTransport();
      await broadcaster.dispose();
      if (http.listening) {
        http.closeAllConnections();
        await new Promise<void>((resolve) => http.close(() => resolve()));
      }
    });
  }

  /** Connects a real client of that node's transport as `user`, and resolves once it is registered. */
  async connect(adapter: Adapter, user: string, name = `${adapter}:${user}:${this.clients.length}`): Promise<Client> {
    const node = this.node(adapter);
    const messages: Message[] = [];
    const replies = new Map<string, (m: Message) => void>();
    const wakers = new Set<() => void>();
    let requests = 0;
    const receive = (m: Message): void => {
      const requestId = m['requestId'];
      const reply = typeof requestId === 'string' ? replies.get(requestId) : undefined;
      if (reply) {
        replies.delete(requestId as string);
        reply(m);
        return;
      }
      messages.push(m);
      for (const wake of wakers) wake();
    };
    let send: (m: Message) => void;
    let close: () => Promise<void>;
    if (adapter === 'socket.io') {
      const socket: IoSocket = ioClient(node.url, { auth: { user, tag: name }, transports: ['websocket'], reconnection: false, forceNew: true });
      socket.on('message', (data: unknown) => receive((typeof data === 'string' ? JSON.parse(data) : data) as Message));
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', () => resolve());
        socket.once('connect_error', (error) => reject(new Error(`${name}: connect_error ${error.message}`)));
      });
      send = (m) => void socket.emit('message', m);
      close = async () => {
        if (!socket.connected) return;
        const gone = new Promise((resolve) => socket.once('disconnect', resolve));
        socket.disconnect();
        await gone;
      };
    } else {
      const ws = new WebSocket(`${node.url}?user=${encodeURIComponent(user)}&tag=${encodeURIComponent(name)}`);
      ws.on('message', (data, isBinary) => receive(isBinary ? { binary: true } : (JSON.parse(String(data)) as Message)));
      ws.on('error', () => {});
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('unexpected-response', (_req, res) => reject(new Error(`${name}: upgrade refused with HTTP ${res.statusCode}`)));
        ws.once('close', (code) => reject(new Error(`${name}: closed with ${code} before it opened`)));
      });
      send = (m) => ws.send(JSON.stringify(m));
      close = async () => {
        if (ws.readyState === WebSocket.CLOSED) return;
        const closed = once(ws, 'close');
        ws.close(1000);
        await closed;
      };
    }
    // ws and socket.io register the connection before the client sees it open.
    const entry = [...node.broadcaster.connections.entries()].find((e) => (e.connection.data as { tag?: unknown } | undefined)?.tag === name);
    if (!entry) throw new Error(`${name} is open but not registered on ${node.nodeId}`);
    const client: Client = {
      name,
      user,
      node,
      id: entry.id,
      messages,
      request(message) {
        const requestId = `${name}#${(requests += 1)}`;
        return new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`${name}: no reply to ${JSON.stringify(message)}`)), 10_000);
          replies.set(requestId, (reply) => {
            clearTimeout(timer);
            resolve(reply);
          });
          send({ ...message, requestId });
        });
      },
      waitFor(match, what, timeoutMs = 10_000) {
        return new Promise((resolve, reject) => {
          const check = (): void => {
            if (!messages.some(match)) return;
            clearTimeout(timer);
            wakers.delete(check);
            resolve();
          };
          const timer = setTimeout(() => {
            wakers.delete(check);
            reject(new Error(`${name} (${adapter}): no ${what} within ${timeoutMs} ms; got ${JSON.stringify(messages)}`));
          }, timeoutMs);
          wakers.add(check);
          check();
        });
      },
      close,
    };
    this.clients.push(client);
    return client;
  }

  /**
   * Per-publisher order makes a fence: once every client got a `toAll` fence from every node,
   * nothing published before it by any node is still on its way. Returns the fences' marker.
   */
  async fence(): Promise<void> {
    const marker = `fence-${Math.random().toString(36).slice(2)}`;
    await Promise.all(this.nodes.map((n) => n.broadcaster.toAll({ fence: marker, from: n.nodeId })));
    await Promise.all(
      this.clients.flatMap((c) => this.nodes.map((n) => c.waitFor((m) => m['fence'] === marker && m['from'] === n.nodeId, `the fence from ${n.nodeId}`))),
    );
    for (const c of this.clients) c.messages.splice(0, c.messages.length, ...c.messages.filter((m) => m['fence'] !== marker));
  }

  async close(): Promise<void> {
    await Promise.all(this.clients.splice(0).map((c) => c.close()));
    for (const closer of this.#closers.splice(0)) await closer();
  }
}
