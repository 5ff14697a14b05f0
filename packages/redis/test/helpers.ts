import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { Broadcaster, type BroadcasterOptions } from '@bcast/core';
import type { Connection, EncodedMessage } from '@bcast/core/adapter';

export const REDIS_URL = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
export const REDIS_SERVER_BIN = process.env['REDIS_SERVER_BIN'] ?? '/usr/bin/redis-server';
export const requireRedis = process.env['BCAST_REQUIRE_REDIS'] === '1';

/** Undefined when a Redis answers PING at `url`; otherwise why not. Raw RESP, no client retries. */
export function whyUnreachable(url: string = REDIS_URL, timeoutMs = 1_000): Promise<string | undefined> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname || '127.0.0.1', port: Number(port || 6379) });
    const done = (why: string | undefined): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => done(`no answer from ${url} within ${timeoutMs} ms`), timeoutMs);
    socket.once('error', (error) => done(`${url}: ${error.message}`));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG') ? undefined : `${url} answered ${JSON.stringify(data.toString().trim())}`));
  });
}

/** Decides whether a Redis suite runs: prints why it skips, or throws when BCAST_REQUIRE_REDIS=1. */
export function skipReason(what: string, why: string | undefined): boolean {
  if (why === undefined) return false;
  if (requireRedis) throw new Error(`BCAST_REQUIRE_REDIS=1 but ${what} is not usable: ${why}`);
  console.warn(`[bcast tests] skipping ${what}: ${why} (set REDIS_URL, or BCAST_REQUIRE_REDIS=1 to fail instead)`);
  return true;
}

// ---- fake core connections ----------------------------------------------------------------------

export class FakeConnection implements Connection {
  readonly received: string[] = [];
  isOpen = true;
  bufferedBytes = 0;
  readonly #waiters = new Set<() => void>();

  constructor(
    readonly id: string,
    readonly userId: string | undefined = undefined,
  ) {}

  send(message: EncodedMessage): void {
    this.received.push(message.text ?? `<binary ${message.byteLength}>`);
    for (const w of this.#waiters) w();
  }

  close(): void {
    this.isOpen = false;
  }

  get messages(): Array<Record<string, unknown>> {
    return this.received.map((t) => JSON.parse(t) as Record<string, unknown>);
  }

  /** Resolves when a received message satisfies `match` (checked on arrival, not by polling). */
  waitFor(match: (m: Record<string, unknown>) => boolean, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const hit = this.messages.find(match);
        if (hit === undefined) return false;
        clearTimeout(timer);
        this.#waiters.delete(onMessage);
        resolve(hit);
        return true;
      };
      const onMessage = (): void => void check();
      const timer = setTimeout(() => {
        this.#waiters.delete(onMessage);
        reject(new Error(`${this.id}: no matching message within ${timeoutMs} ms (got ${this.received.length})`));
      }, timeoutMs);
      this.#waiters.add(onMessage);
      check();
    });
  }
}

export const quietLogger = (): { warn: (...a: unknown[]) => void; error: (...a: unknown[]) => void; info: (...a: unknown[]) => void; lines: string[] } => {
  const lines: string[] = [];
  const push = (...a: unknown[]): void => void lines.push(a.map(String).join(' '));
  return { lines, warn: push, error: push, info: push };
};

export interface Node {
  readonly broadcaster: Broadcaster;
  readonly conns: Map<string, FakeConnection>;
  add(id: string, userId?: string, rooms?: string[]): FakeConnection;
}

export function node(options: BroadcasterOptions): Node {
  const broadcaster = new Broadcaster({ pingIntervalMs: 0, logger: quietLogger(), ...options });
  const conns = new Map<string, FakeConnection>();
  return {
    broadcaster,
    conns,
    add(id, userId, rooms = []) {
      const c = new FakeConnection(id, userId);
      conns.set(id, c);
      broadcaster.register(c);
      for (const r of rooms) broadcaster.join(id, r);
      return c;
    },
  };
}

/** Polls a condition that has no event to await (health, server state). */
export async function until<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 10_000, everyMs = 25): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value as NonNullable<T>;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last instanceof Error ? last.message : String(last)})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

// ---- a redis-server of our own, for fault tests ---------------------------------------------------

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export function whyNoRedisServer(): string | undefined {
  return existsSync(REDIS_SERVER_BIN) ? undefined : `${REDIS_SERVER_BIN} not found (apt-get install redis-server, or set REDIS_SERVER_BIN)`;
}

/**
 * A redis-server child on a fixed port that a test may SIGKILL and start again, or SIGSTOP and
 * SIGCONT (a server that hangs: connections stay open, nothing is answered). `extraArgs` are
 * appended to the command line (later directives win: `--port 0 --tls-port <port>` for TLS only).
 */
export class RedisServer {
  #child: ChildProcess | undefined;
  #paused = false;

  constructor(
    readonly port: number,
    readonly extraArgs: readonly string[] = [],
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null;
  }

  get paused(): boolean {
    return this.#paused;
  }

  async start(): Promise<void> {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no', ...this.extraArgs];
    const child = spawn(REDIS_SERVER_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    this.#paused = false;
    let output = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server on ${this.port} did not start: ${output}`)), 10_000);
      const onData = (data: Buffer): void => {
        output += data.toString();
        if (output.includes('Ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout?.on('data', onData);
      child.stderr?.on('data', onData);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited with ${code}: ${output}`));
      });
    });
    child.stdout?.removeAllListeners('data').resume();
    child.stderr?.removeAllListeners('data').resume();
  }

  /** SIGSTOP: the server hangs with every connection open; the kernel still accepts new ones. */
  pause(): void {
    if (!this.running || this.#paused) return;
    this.#child?.kill('SIGSTOP');
    this.#paused = true;
  }

  /** SIGCONT after {@link pause}. */
  resume(): void {
    if (!this.running || !this.#paused) return;
    this.#child?.kill('SIGCONT');
    this.#paused = false;
  }

  /** SIGKILL, and wait for the process to be gone. */
  async kill(): Promise<void> {
    const child = this.#child;
    if (!child || !this.running) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    this.#paused = false;
  }
}

/**
 * A TCP proxy in front of Redis that injects network faults:
 * - `starveSubscribers()`: replies to connections that sent SUBSCRIBE are swallowed while the TCP
 *   connections stay up; when the client gives up on such a connection its upstream half is left
 *   open (a "cable pull" the server does not notice). New connections pass normally.
 * - `swallowPublisherReplies()`: the same for the other connections (publishers): their commands
 *   reach Redis, and every reply is lost.
 * - `delayReplies(ms)`: every reply, on every connection, arrives `ms` late (in order).
 * - `refuse()` / `accept()`: new connections are reset / let through.
 * - `dropAll()`: resets every current connection.
 */
export class FaultProxy {
  readonly #server: Server;
  readonly #pairs = new Set<{ client: Socket; upstream: Socket; subscriber: boolean; starved: boolean }>();
  #refusing = false;
  #delayMs = 0;
  port = 0;

  constructor(readonly target: number) {
    this.#server = createServer((client) => {
      if (this.#refusing) {
        client.resetAndDestroy();
        return;
      }
      const upstream = connect({ host: '127.0.0.1', port: target });
      const pair = { client, upstream, subscriber: false, starved: false };
      this.#pairs.add(pair);
      client.on('data', (data: Buffer) => {
        if (/subscribe/i.test(data.toString('latin1'))) pair.subscriber = true;
        upstream.write(data);
      });
      upstream.on('data', (data: Buffer) => {
        if (pair.starved) return;
        if (this.#delayMs === 0) client.write(data);
        else setTimeout(() => void (client.destroyed || pair.starved || client.write(data)), this.#delayMs);
      });
      client.on('error', () => {});
      upstream.on('error', () => {});
      client.on('close', () => {
        if (!pair.starved) upstream.destroy();
      });
      upstream.on('close', () => {
        client.destroy();
        this.#pairs.delete(pair);
      });
    });
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.port = (this.#server.address() as { port: number }).port;
  }

  /** Returns how many subscriber connections are now starved. */
  starveSubscribers(): number {
    return this.#starve(true);
  }

  /** Returns how many publisher (not subscribed) connections now lose every reply. */
  swallowPublisherReplies(): number {
    return this.#starve(false);
  }

  /** Every reply from now on arrives `ms` late; 0 restores. */
  delayReplies(ms: number): void {
    this.#delayMs = ms;
  }

  /** Client connections open through the proxy (starved ones included until the client drops them). */
  get open(): { subscribers: number; publishers: number } {
    let subscribers = 0;
    let publishers = 0;
    for (const pair of this.#pairs) {
      if (pair.client.destroyed) continue;
      if (pair.subscriber) subscribers += 1;
      else publishers += 1;
    }
    return { subscribers, publishers };
  }

  refuse(): void {
    this.#refusing = true;
  }

  accept(): void {
    this.#refusing = false;
  }

  /** Resets every connection; returns how many there were. */
  dropAll(): number {
    const n = this.#pairs.size;
    for (const { client, upstream } of this.#pairs) {
      client.resetAndDestroy();
      upstream.destroy();
    }
    return n;
  }

  async close(): Promise<void> {
    for (const { client, upstream } of this.#pairs) {
      client.destroy();
      upstream.destroy();
    }
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #starve(subscribers: boolean): number {
    let n = 0;
    for (const pair of this.#pairs) {
      if (pair.subscriber === subscribers && !pair.client.destroyed) {
        pair.starved = true;
        n += 1;
      }
    }
    return n;
  }
}

// ---- process-wide failures ----------------------------------------------------------------------

/**
 * Collects unhandled rejections and uncaught exceptions while a suite runs: `start()` in
 * beforeAll, `stop()` in afterAll, and `expect(problems.list).toEqual([])` after each test.
 */
export function processProblems(): { readonly list: unknown[]; start(): void; stop(): void } {
  const list: unknown[] = [];
  const onRejection = (reason: unknown): void => void list.push(reason);
  const onException = (error: unknown): void => void list.push(error);
  return {
    list,
    start() {
      process.on('unhandledRejection', onRejection);
      process.on('uncaughtException', onException);
    },
    stop() {
      process.off('unhandledRejection', onRejection);
      process.off('uncaughtException', onException);
    },
  };
}

export type Outcome<T> = { readonly ok: true; readonly value: T; readonly ms: number } | { readonly ok: false; readonly error: unknown; readonly ms: number };

/** How `work` settled and after how many ms; throws if it is still pending after `timeoutMs`. */
export async function settle<T>(work: Promise<T>, timeoutMs: number): Promise<Outcome<T>> {
  const started = performance.now();
  const took = (): number => Math.round((performance.now() - started) * 10) / 10;
  let timer: NodeJS.Timeout | undefined;
  const pending = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still pending after ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([
      work.then(
        (value): Outcome<T> => ({ ok: true, value, ms: took() }),
        (error: unknown): Outcome<T> => ({ ok: false, error, ms: took() }),
      ),
      pending,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
