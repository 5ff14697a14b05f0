import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Broadcaster, type BroadcasterOptions } from '@bcast/core';
import { WebSocket, WebSocketServer, type ClientOptions, type ServerOptions } from 'ws';
import { attachToServer, recommendedServerOptions, type WsAdapter, type WsAdapterOptions } from '../src/index.js';

export interface Harness {
  readonly broadcaster: Broadcaster;
  readonly server: Server;
  readonly wss: WebSocketServer;
  readonly adapter: WsAdapter;
  readonly url: string;
  /** Disposes the adapter and the broadcaster, closes the wss and the HTTP server. */
  close(): Promise<void>;
}

const quiet = { warn: () => {}, error: () => {} };

/** A real HTTP server on 127.0.0.1:0, the user's WebSocketServer on it, the adapter attached. */
export async function startWs(
  init: { broadcaster?: BroadcasterOptions; adapter?: WsAdapterOptions; server?: ServerOptions } = {},
): Promise<Harness> {
  const server = createServer();
  const wss = new WebSocketServer({ server, ...recommendedServerOptions, ...init.server });
  const broadcaster = new Broadcaster({ logger: quiet, ...init.broadcaster });
  const adapter = attachToServer(broadcaster, wss, init.adapter);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    broadcaster,
    server,
    wss,
    adapter,
    url: `ws://127.0.0.1:${port}`,
    async close() {
      await adapter.dispose();
      await broadcaster.dispose();
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface Client {
  readonly ws: WebSocket;
  /** Every data frame received, in order: text as string, binary as Buffer. */
  readonly frames: (string | Buffer)[];
  /** Resolves when at least n frames arrived. */
  waitFor(n: number, timeoutMs?: number): Promise<(string | Buffer)[]>;
  /** Sends a text frame and resolves with the next frame received after it (parsed JSON). */
  request(text: string): Promise<Record<string, unknown>>;
  readonly closed: Promise<{ code: number; reason: string }>;
}

/** Opens a client and resolves once it is open (the server registered it in the same tick). */
export async function openClient(url: string, options: ClientOptions = {}): Promise<Client> {
  const ws = new WebSocket(url, options);
  const frames: (string | Buffer)[] = [];
  const waiters = new Set<() => void>();
  ws.on('message', (data, isBinary) => {
    const bytes = data as Buffer;
    frames.push(isBinary ? bytes : bytes.toString('utf8'));
    for (const wake of waiters) wake();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.once('close', (code, reason) => {
      resolve({ code, reason: reason.toString() });
      for (const wake of waiters) wake();
    });
  });
  ws.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });
  const waitFor = (n: number, timeoutMs = 10_000): Promise<(string | Buffer)[]> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (frames.length >= n) done(() => resolve(frames.slice()));
        else if (ws.readyState === WebSocket.CLOSED) done(() => reject(new Error(`closed after ${frames.length}/${n} frames`)));
      };
      const timer = setTimeout(() => done(() => reject(new Error(`timed out after ${frames.length}/${n} frames`))), timeoutMs);
      const done = (fn: () => void): void => {
        clearTimeout(timer);
        waiters.delete(check);
        fn();
      };
      waiters.add(check);
      check();
    });
  const request = async (text: string): Promise<Record<string, unknown>> => {
    const n = frames.length;
    ws.send(text);
    const all = await waitFor(n + 1);
    return JSON.parse(String(all[n])) as Record<string, unknown>;
  };
  return { ws, frames, waitFor, request, closed };
}

/** Attempts an upgrade that must fail; resolves with the HTTP status. */
export function rejectedStatus(url: string, options: ClientOptions = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options);
    ws.on('error', () => {});
    ws.once('unexpected-response', (req, res) => {
      resolve(res.statusCode ?? 0);
      req.destroy();
    });
    ws.once('open', () => {
      ws.terminate();
      reject(new Error('the upgrade was accepted'));
    });
    ws.once('close', () => reject(new Error('closed without an HTTP answer')));
  });
}
