// Shared test harness for the sample apps: the three apps, real clients (ws, socket.io-client), a
// loopback OTLP/HTTP receiver, and the app processes started the way a user starts them.
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { io as ioClient, type Socket } from 'socket.io-client';
import type { Broadcaster } from '@bcast/core';
import WebSocket from 'ws';

export interface RunningApp {
  url: string;
  broadcaster: Broadcaster;
  close(): Promise<void>;
}

export interface AppInfo {
  name: 'ws-chat' | 'socketio-chat' | 'express-chat';
  transport: 'ws' | 'socket.io';
  serviceName: string;
  dir: string;
  start(options: { port: number; host?: string; logger?: Pick<Console, 'warn' | 'error'>; redisUrl?: string; redisChannel?: string; traceUrl?: string }): Promise<RunningApp>;
}

const dirOf = (name: string): string => fileURLToPath(new URL(`../${name}/`, import.meta.url));

type StartFn = AppInfo['start'];
const load = (name: string) => async (options: Parameters<StartFn>[0]) => {
  const module = (await import(`../${name}/server.mjs`)) as { start: StartFn };
  return module.start(options);
};

export const APPS: readonly AppInfo[] = [
  { name: 'ws-chat', transport: 'ws', serviceName: 'bcast-ws-chat', dir: dirOf('ws-chat'), start: load('ws-chat') },
  { name: 'socketio-chat', transport: 'socket.io', serviceName: 'bcast-socketio-chat', dir: dirOf('socketio-chat'), start: load('socketio-chat') },
  { name: 'express-chat', transport: 'ws', serviceName: 'bcast-express-chat', dir: dirOf('express-chat'), start: load('express-chat') },
];

export const quietLogger = { warn: () => {}, error: (...args: unknown[]) => console.error(...args) };

// ---- clients ------------------------------------------------------------------------------------

/**
 * A chat client on either transport: every message it receives, and a way to wait for one. The
 * messages of rooms with history (every chat room) arrive as `{ type: "bcast.pub", room, offset,
 * epoch, data }`: `received` holds their `data`, `frames` everything as it came.
 */
export interface ChatClient {
  readonly received: unknown[];
  readonly frames: unknown[];
  send(message: unknown): void;
  /** Resolves with the first message (already received or coming) that matches. */
  next(match: (message: any) => boolean, what?: string): Promise<any>;
  /** Sends join and waits for the server's ok. */
  join(room: string): Promise<void>;
  close(): Promise<void>;
}

function inbox(): { received: unknown[]; frames: unknown[]; push(frame: unknown): void; next: ChatClient['next'] } {
  const received: unknown[] = [];
  const frames: unknown[] = [];
  const waiters = new Set<{ match: (m: any) => boolean; resolve: (m: unknown) => void }>();
  return {
    received,
    frames,
    push(frame) {
      frames.push(frame);
      const message = (frame as { type?: unknown } | null)?.type === 'bcast.pub' ? (frame as { data: unknown }).data : frame;
      received.push(message);
      for (const w of waiters) {
        if (w.match(message)) {
          waiters.delete(w);
          w.resolve(message);
        }
      }
    },
    next(match, what = 'a matching message') {
      const found = received.find(match);
      if (found !== undefined) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const waiter = { match, resolve: (m: unknown) => (clearTimeout(timer), resolve(m)) };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`timed out waiting for ${what}; received ${JSON.stringify(received)}`));
        }, 10_000);
        waiters.add(waiter);
      });
    },
  };
}

let requestIds = 0;

/** Connects to an app as `name` (its demo identity) over the app's transport. */
export async function connectClient(app: AppInfo, url: string, name: string): Promise<ChatClient> {
  const box = inbox();
  const join = async (send: (m: unknown) => void, room: string): Promise<void> => {
    const requestId = `join-${++requestIds}`;
    const answer = box.next((m) => m?.requestId === requestId, `the answer to join ${room}`);
    send({ type: 'join', room, requestId });
    const reply = await answer;
    if (reply.type !== 'ok') throw new Error(`join refused: ${JSON.stringify(reply)}`);
  };
  if (app.transport === 'socket.io') {
    const socket: Socket = ioClient(url, { auth: { name }, transports: ['websocket'], reconnection: false, forceNew: true });
    socket.on('message', (m: unknown) => box.push(typeof m === 'string' ? tryJson(m) : m));
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    });
    const send = (m: unknown): void => void socket.emit('message', m);
    return {
      received: box.received,
      frames: box.frames,
      send,
      next: box.next,
      join: (room) => join(send, room),
      close: async () => {
        if (socket.connected) {
          const gone = new Promise((resolve) => socket.once('disconnect', resolve));
          socket.disconnect();
          await gone;
        }
      },
    };
  }
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws?name=${encodeURIComponent(name)}`);
  ws.on('message', (data, isBinary) => box.push(isBinary ? data : tryJson(data.toString())));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const send = (m: unknown): void => ws.send(JSON.stringify(m));
  return {
    received: box.received,
    frames: box.frames,
    send,
    next: box.next,
    join: (room) => join(send, room),
    close: async () => {
      if (ws.readyState === WebSocket.CLOSED) return;
      const closed = once(ws, 'close');
      ws.close(1000);
      await closed;
    },
  };
}

/** Resolves with how the server refused a connection as `name` (an HTTP status or socket.io's error message). */
export async function refusedConnection(app: AppInfo, url: string, name: string): Promise<string> {
  if (app.transport === 'socket.io') {
    const socket = ioClient(url, { auth: { name }, transports: ['websocket'], reconnection: false, forceNew: true });
    try {
      return await new Promise<string>((resolve, reject) => {
        socket.once('connect', () => reject(new Error('connected')));
        socket.once('connect_error', (error) => resolve(error.message));
      });
    } finally {
      socket.disconnect();
      socket.io.engine?.close(); // a refused socket leaves its engine.io connection open
    }
  }
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws?name=${encodeURIComponent(name)}`);
  return new Promise<string>((resolve, reject) => {
    ws.once('open', () => reject(new Error('connected')));
    ws.once('unexpected-response', (_req, res: IncomingMessage) => {
      resolve(String(res.statusCode));
      ws.terminate();
    });
    ws.once('error', () => {});
  });
}

function tryJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export async function postJson(url: string, body: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: tryJson(text) };
}

// ---- an app in its own process, with its real OpenTelemetry SDK ------------------------------------

export interface AppProcess {
  url: string;
  child: ChildProcess;
  /** Everything it printed (stdout and stderr). */
  output(): string;
  /** Resolves once its output matches. */
  waitForOutput(pattern: RegExp, what: string): Promise<void>;
  stop(): Promise<void>;
}

/** `node --import ./instrumentation.mjs server.mjs` in the app's folder, on a free port (PORT=0). */
export async function startAppProcess(app: AppInfo, env: Record<string, string>): Promise<AppProcess> {
  const child = fork('server.mjs', [], {
    cwd: app.dir,
    execArgv: ['--import', './instrumentation.mjs'],
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let out = '';
  const listeners = new Set<() => void>();
  const onData = (chunk: Buffer): void => {
    out += chunk.toString();
    for (const l of listeners) l();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const waitForOutput = (pattern: RegExp, what: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (!pattern.test(out)) return;
        listeners.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        listeners.delete(check);
        reject(new Error(`timed out waiting for ${what}; output:\n${out}`));
      }, 20_000);
      listeners.add(check);
      check();
    });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${app.name} did not start; output:\n${out}`)), 20_000);
    child.on('message', (m: { type?: string; url?: string }) => {
      if (m?.type === 'listening' && m.url) {
        clearTimeout(timer);
        resolve(m.url);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${app.name} exited with ${code}; output:\n${out}`));
    });
  });
  return {
    url,
    child,
    output: () => out,
    waitForOutput,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

// ---- a loopback OTLP/HTTP receiver -------------------------------------------------------------

export interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
  doubleValue?: number;
}
export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: { key: string; value: OtlpValue }[];
  events?: { name: string }[];
  /** Added here: the resource's service.name and the instrumentation scope. */
  service: string;
  scope: string;
}

export interface OtlpReceiver {
  readonly url: string;
  readonly spans: OtlpSpan[];
  /** Content types of the accepted exports. */
  readonly contentTypes: ReadonlySet<string>;
  /** Requests to /v1/traces so far. */
  readonly requests: number;
  /** What /v1/traces answers from now on. */
  status: number;
  waitForSpan(match: (span: OtlpSpan) => boolean, what: string): Promise<OtlpSpan>;
  waitForRequests(count: number): Promise<void>;
  close(): Promise<void>;
}

export function attr(span: OtlpSpan, key: string): string | number | boolean | undefined {
  const value = span.attributes.find((a) => a.key === key)?.value;
  if (!value) return undefined;
  if (value.intValue !== undefined) return Number(value.intValue);
  return value.stringValue ?? value.boolValue ?? value.doubleValue;
}

/** An OTLP/HTTP endpoint on 127.0.0.1 that decodes the JSON exports of the trace exporter. */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: OtlpSpan[] = [];
  const contentTypes = new Set<string>();
  const changed = new Set<() => void>();
  let requests = 0;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/v1/traces') {
        requests += 1;
        if (receiver.status === 200) {
          contentTypes.add(String(req.headers['content-type']));
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
            resourceSpans?: { resource?: { attributes?: OtlpSpan['attributes'] }; scopeSpans?: { scope?: { name?: string }; spans?: Omit<OtlpSpan, 'service' | 'scope'>[] }[] }[];
          };
          for (const rs of body.resourceSpans ?? []) {
            const service = rs.resource?.attributes?.find((a) => a.key === 'service.name')?.value.stringValue ?? '';
            for (const ss of rs.scopeSpans ?? []) for (const s of ss.spans ?? []) spans.push({ ...s, service, scope: ss.scope?.name ?? '' });
          }
        }
      }
      res.writeHead(req.url === '/v1/traces' ? receiver.status : 404, { 'content-type': 'application/json' });
      res.end('{}');
      for (const c of changed) c();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const wait = (done: () => boolean, what: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (!done()) return;
        changed.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        changed.delete(check);
        reject(new Error(`timed out waiting for ${what}; spans so far: ${spans.map((s) => `${s.service}:${s.name}`).join(', ')}`));
      }, 20_000);
      changed.add(check);
      check();
    });
  const receiver: OtlpReceiver = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    spans,
    contentTypes,
    get requests() {
      return requests;
    },
    status: 200,
    async waitForSpan(match, what) {
      await wait(() => spans.some(match), what);
      return spans.find(match) as OtlpSpan;
    },
    waitForRequests: (count) => wait(() => requests >= count, `${count} export requests`),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
  return receiver;
}
