import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerOptions as HttpServerOptions } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Broadcaster, type BroadcasterOptions } from '@bcast/core';
import type { AdapterOptions, Attachment, AuthResult } from '@bcast/core/adapter';
import { attachUpgrade } from '@bcast/express';
import { attachToServer as attachSocketIo } from '@bcast/socket.io';
import { attachToServer as attachWs, recommendedServerOptions } from '@bcast/ws';
import express from 'express';
import { Server as IoServer, type ServerOptions as IoServerOptions } from 'socket.io';
import { WebSocketServer, type ServerOptions as WsServerOptions } from 'ws';

/**
 * Real servers on 127.0.0.1 port 0 for the reliability cases, one shape for the three adapters:
 * - ws: the user's WebSocketServer({ server, ...recommendedServerOptions }) and attachToServer;
 * - express: an express app's HTTP server and attachUpgrade on path /ws (its own internal
 *   WebSocketServer with recommendedServerOptions);
 * - socket.io: the user's socket.io Server on an HTTP server and attachToServer.
 * Unlike the conformance drivers, every adapter option is passed through (requireOrigin, caps...),
 * the HTTP server's options can be set, and one Broadcaster can serve several adapters.
 */

export type AdapterName = 'ws' | 'express' | 'socket.io';
export const ADAPTERS: readonly AdapterName[] = ['ws', 'express', 'socket.io'];
/** The adapters that speak plain WebSocket (raw frames reach bcast's ws server). */
export const WS_ADAPTERS: readonly AdapterName[] = ['ws', 'express'];

/** What a client presented, as every adapter's `authenticate` wrapper reads it. */
export interface Credentials {
  /** ws, express: `Authorization: Bearer <token>`; socket.io: `auth.token`. */
  readonly token: string | undefined;
  /** The `session` cookie, on every adapter. */
  readonly session: string | undefined;
  readonly origin: string | undefined;
}

export interface StartOptions {
  /** Options of the Broadcaster created here, or an existing one to attach (it is then not disposed by close()). */
  broadcaster?: BroadcasterOptions | Broadcaster;
  authenticate?: (credentials: Credentials) => AuthResult | Promise<AuthResult>;
  /** Every other adapter option (allowedOrigins, requireOrigin, authTimeoutMs, caps...). */
  adapter?: Omit<AdapterOptions<unknown>, 'authenticate'>;
  /** ws only: options of the user's WebSocketServer on top of recommendedServerOptions. */
  wsServer?: WsServerOptions;
  /** socket.io only. */
  io?: Partial<IoServerOptions>;
  /** Options of the HTTP server (headersTimeout...). */
  http?: HttpServerOptions;
}

export interface Sut {
  readonly adapter: AdapterName;
  readonly broadcaster: Broadcaster;
  readonly http: HttpServer;
  readonly port: number;
  /** Where a WebSocket client upgrades: ws://127.0.0.1:port/ (ws), /ws (express), engine.io's websocket endpoint (socket.io). */
  readonly wsUrl: string;
  /** http://127.0.0.1:port */
  readonly baseUrl: string;
  readonly io: IoServer | undefined;
  readonly wss: WebSocketServer | undefined;
  /** Connections the application's own `connection` listener saw (wss 'connection' / io 'connection'). */
  readonly appConnections: () => number;
  /** Listener counts on the server objects. */
  listenerCounts(): Record<string, number>;
  /** listenerCounts() just before the adapter was attached. */
  readonly listenersBeforeAttach: Readonly<Record<string, number>>;
  readonly attachment: Attachment;
  close(): Promise<void>;
}

const quiet = { warn: () => {}, error: () => {} };

function cookie(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const [key, ...value] = part.trim().split('=');
    if (key === name) return value.join('=');
  }
  return undefined;
}

function credentialsOf(request: IncomingMessage): Credentials {
  const header = request.headers.authorization;
  return {
    token: header?.startsWith('Bearer ') ? header.slice(7) : undefined,
    session: cookie(request.headers.cookie, 'session'),
    origin: request.headers.origin,
  };
}

export async function startServer(adapter: AdapterName, options: StartOptions = {}): Promise<Sut> {
  const given = options.broadcaster instanceof Broadcaster ? options.broadcaster : undefined;
  const broadcaster = given ?? new Broadcaster({ logger: quiet, ...(options.broadcaster as BroadcasterOptions | undefined) });
  const authenticate = options.authenticate;
  const adapterOptions = options.adapter ?? {};
  let http: HttpServer;
  let io: IoServer | undefined;
  let wss: WebSocketServer | undefined;
  let attachment: Attachment;
  let wsUrlPath: string;
  let appConnections = 0;
  let listenerCounts: () => Record<string, number>;
  let listenersBeforeAttach: Record<string, number>;

  if (adapter === 'ws') {
    http = createServer(options.http ?? {});
    const server = new WebSocketServer({ server: http, ...recommendedServerOptions, ...options.wsServer });
    wss = server;
    server.on('connection', () => void (appConnections += 1));
    listenerCounts = () => ({
      'http.upgrade': http.listenerCount('upgrade'),
      'http.request': http.listenerCount('request'),
      'http.connection': http.listenerCount('connection'),
      'wss.connection': server.listenerCount('connection'),
      'wss.headers': server.listenerCount('headers'),
      'wss.error': server.listenerCount('error'),
    });
    listenersBeforeAttach = listenerCounts();
    attachment = attachWs(broadcaster, server, {
      ...adapterOptions,
      ...(authenticate ? { authenticate: (request: IncomingMessage) => authenticate(credentialsOf(request)) } : {}),
    });
    wsUrlPath = '/';
  } else if (adapter === 'express') {
    const app = express();
    app.get('/ping', (_req, res) => void res.send('pong'));
    http = createServer(options.http ?? {}, app);
    listenerCounts = () => ({
      'http.upgrade': http.listenerCount('upgrade'),
      'http.request': http.listenerCount('request'),
      'http.connection': http.listenerCount('connection'),
      'http.close': http.listenerCount('close'),
    });
    listenersBeforeAttach = listenerCounts();
    attachment = attachUpgrade(broadcaster, http, {
      path: '/ws',
      ...adapterOptions,
      ...(authenticate ? { authenticate: (request: IncomingMessage) => authenticate(credentialsOf(request)) } : {}),
    });
    // express has no connection listener of the app's: what the core registered is what was accepted.
    appConnections = -1;
    wsUrlPath = '/ws';
  } else {
    http = createServer(options.http ?? {});
    const server = new IoServer(http, options.io ?? {});
    io = server;
    server.on('connection', () => void (appConnections += 1));
    listenerCounts = () => ({
      'http.upgrade': http.listenerCount('upgrade'),
      'http.request': http.listenerCount('request'),
      'engine.connection': server.engine.listenerCount('connection'),
      'engine.allowRequest': server.engine.opts.allowRequest === undefined ? 0 : 1,
      'nsp.connection': server.sockets.listenerCount('connection'),
      'nsp.middlewares': (server.sockets as unknown as { _fns: unknown[] })._fns.length,
    });
    listenersBeforeAttach = listenerCounts();
    attachment = attachSocketIo(broadcaster, server, {
      ...adapterOptions,
      ...(authenticate
        ? {
            authenticate: (handshake) =>
              authenticate({
                token: typeof handshake.auth['token'] === 'string' ? (handshake.auth['token'] as string) : undefined,
                session: cookie(handshake.headers.cookie, 'session'),
                origin: handshake.headers.origin,
              }),
          }
        : {}),
    });
    wsUrlPath = '/socket.io/?EIO=4&transport=websocket';
  }

  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  const { port } = http.address() as AddressInfo;
  let closed = false;
  return {
    adapter,
    broadcaster,
    http,
    port,
    wsUrl: `ws://127.0.0.1:${port}${wsUrlPath}`,
    baseUrl: `http://127.0.0.1:${port}`,
    io,
    wss,
    appConnections: () => (appConnections === -1 ? broadcaster.connections.size : appConnections),
    listenerCounts,
    listenersBeforeAttach,
    attachment,
    async close() {
      if (closed) return;
      closed = true;
      await attachment.dispose();
      if (!given) await broadcaster.dispose();
      if (io) {
        await new Promise<void>((resolve) => {
          void io?.close(() => resolve());
          http.closeAllConnections();
        });
        return;
      }
      if (wss) {
        for (const ws of wss.clients) ws.terminate();
        await new Promise<void>((resolve) => wss?.close(() => resolve()));
      }
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}
