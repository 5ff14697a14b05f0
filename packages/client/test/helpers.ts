import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { Broadcaster, type BroadcasterOptions } from '@bcast/core';
import { attachToServer, type WsAdapterOptions } from '@bcast/ws';
import { WebSocketServer, type WebSocket as ServerSocket } from 'ws';
import type { BcastClient, ClientEvents, MessageMeta } from '../src/index.js';

const quiet = { warn: () => {}, error: () => {} };

export interface RealServer {
  readonly broadcaster: Broadcaster;
  readonly wss: WebSocketServer;
  readonly url: string;
  close(): Promise<void>;
}

/** A Broadcaster on a ws WebSocketServer on 127.0.0.1, port 0, attached with @bcast/ws. */
export async function startServer(options: BroadcasterOptions = {}, adapter: WsAdapterOptions = {}): Promise<RealServer> {
  const broadcaster = new Broadcaster({ logger: quiet, ...options });
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  const attachment = attachToServer(broadcaster, wss, adapter);
  await once(wss, 'listening');
  const { port } = wss.address() as AddressInfo;
  return {
    broadcaster,
    wss,
    url: `ws://127.0.0.1:${port}/`,
    async close() {
      await attachment.dispose();
      await broadcaster.dispose();
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}

/** The next emission of `event` (that passes `filter`), as its arguments. */
export function next<K extends keyof ClientEvents>(client: BcastClient, event: K, filter: (...args: Parameters<ClientEvents[K]>) => boolean = () => true): Promise<Parameters<ClientEvents[K]>> {
  return new Promise((resolve) => {
    const off = client.on(event, ((...args: Parameters<ClientEvents[K]>) => {
      if (!filter(...args)) return;
      off();
      resolve(args);
    }) as ClientEvents[K]);
  });
}

/** Every message the client emits, with a wait for the n-th. */
export function collect(client: BcastClient): { messages: [unknown, MessageMeta][]; waitFor(n: number): Promise<[unknown, MessageMeta][]> } {
  const messages: [unknown, MessageMeta][] = [];
  const waiters: (() => void)[] = [];
  client.on('message', (data, meta) => {
    messages.push([data, meta]);
    for (const wake of waiters.splice(0)) wake();
  });
  const waitFor = async (n: number): Promise<[unknown, MessageMeta][]> => {
    while (messages.length < n) await new Promise<void>((resolve) => waiters.push(resolve));
    return messages;
  };
  return { messages, waitFor };
}

type Frame = Record<string, unknown> & { type?: string; room?: string; requestId?: string };

/** A fake bcast server speaking the client protocol (with history), driven by the test. */
export interface FakeServer {
  readonly url: string;
  /** Every frame received, parsed, in order, per connection (index = connection number). */
  readonly received: Frame[][];
  /** The current connection. */
  socket(): ServerSocket;
  /** Resolves with the next frame received that passes `filter` (already received ones included). */
  nextFrame(filter: (frame: Frame) => boolean): Promise<Frame>;
  /** Waits for connection number `n` (from 0). */
  connection(n: number): Promise<ServerSocket>;
  send(frame: unknown): void;
  close(): Promise<void>;
}

export async function startFake(): Promise<FakeServer> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(wss, 'listening');
  const { port } = wss.address() as AddressInfo;
  const sockets: ServerSocket[] = [];
  const received: Frame[][] = [];
  const taken = new Set<Frame>();
  const wakers: (() => void)[] = [];
  const wake = (): void => {
    for (const w of wakers.splice(0)) w();
  };
  wss.on('connection', (ws) => {
    const frames: Frame[] = [];
    sockets.push(ws);
    received.push(frames);
    ws.on('message', (data) => {
      frames.push(JSON.parse(String(data)) as Frame);
      wake();
    });
    wake();
  });
  const wait = (): Promise<void> => new Promise((resolve) => wakers.push(resolve));
  return {
    url: `ws://127.0.0.1:${port}/`,
    received,
    socket: () => sockets.at(-1)!,
    async nextFrame(filter) {
      for (;;) {
        const found = received.flat().find((f) => !taken.has(f) && filter(f));
        if (found) {
          taken.add(found);
          return found;
        }
        await wait();
      }
    },
    async connection(n) {
      while (sockets.length <= n) await wait();
      return sockets[n]!;
    },
    send(frame) {
      sockets.at(-1)!.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
    },
    async close() {
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}
