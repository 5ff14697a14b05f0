/**
 * The test side of the load, fault and leak cases: child processes (a bcast server, client-load
 * processes) driven over IPC, killed when the file ends even on failure, whose process-level
 * problems (unhandledRejection, uncaughtException, MaxListenersExceededWarning) are collected and
 * asserted like the test process's own; an exclusive lock so that two heavy files never run at
 * the same time; latency percentiles; Redis reachability.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { REDIS_URL, whyUnreachable } from '../../../packages/redis/test/helpers.js';

export { REDIS_URL };

/** Full lengths of the plan (BCAST_LONG=1, `pnpm test:long`), or the shortened CI form. */
export const LONG = process.env['BCAST_LONG'] === '1';
/** Source addresses for many connects (TIME_WAIT spreads over them). */
export const LOCAL_ADDRESSES = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'];

const SERVER = fileURLToPath(new URL('./server.mjs', import.meta.url));
const CLIENTS = fileURLToPath(new URL('./clients.mjs', import.meta.url));
const CYCLER = fileURLToPath(new URL('./cycler.mjs', import.meta.url));

type Message = { type: string; id?: number; value?: unknown; error?: string; text?: string; [key: string]: unknown };

export interface Child {
  readonly name: string;
  readonly process: ChildProcess;
  readonly pid: number;
  /** Process-level problems the child reported. */
  readonly problems: string[];
  /** Messages that were not replies ({ type: 'shutdown', ... } ...). */
  readonly messages: Message[];
  request<T = unknown>(cmd: string, payload?: Record<string, unknown>, timeoutMs?: number): Promise<T>;
  output(): string;
  /** Resolves with the exit code and signal once the child exits. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  kill(signal?: NodeJS.Signals): void;
}

const children = new Set<Child>();

function killAll(): void {
  for (const child of children) {
    try {
      child.process.kill('SIGCONT');
      child.process.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
}
process.once('exit', killAll);

export function spawnChild(name: string, script: string, options: { execArgv?: string[]; env?: Record<string, string> } = {}): Promise<Child> {
  const proc = fork(script, [], {
    execArgv: options.execArgv ?? [],
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    serialization: 'advanced',
  });
  let output = '';
  const keep = (d: Buffer): void => {
    output += d.toString();
    if (output.length > 20_000) output = output.slice(-10_000);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  const problems: string[] = [];
  const messages: Message[] = [];
  let next = 0;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) => {
    proc.once('exit', (code, signal) => {
      for (const p of pending.values()) p.reject(new Error(`${name} exited (${code ?? signal}) before replying: ${output.slice(-2_000)}`));
      pending.clear();
      resolve({ code, signal, at: performance.now() });
    });
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start: ${output}`)), 20_000);
    proc.once('error', reject);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? signal}) before it was ready: ${output}`));
    });
    proc.on('message', (m: Message) => {
      if (m.type === 'ready') {
        clearTimeout(timer);
        const child: Child = {
          name,
          process: proc,
          pid: proc.pid as number,
          problems,
          messages,
          output: () => output,
          exited,
          kill(signal = 'SIGKILL') {
            try {
              proc.kill(signal);
            } catch {
              // gone
            }
          },
          request<T>(cmd: string, payload: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<T> {
            const id = (next += 1);
            return new Promise<T>((res, rej) => {
              const t = setTimeout(() => {
                pending.delete(id);
                rej(new Error(`${name}: no reply to ${cmd} within ${timeoutMs} ms: ${output.slice(-2_000)}`));
              }, timeoutMs);
              pending.set(id, {
                resolve: (v) => {
                  clearTimeout(t);
                  res(v as T);
                },
                reject: (e) => {
                  clearTimeout(t);
                  rej(e);
                },
              });
              if (!proc.connected) return pending.get(id)?.reject(new Error(`${name} is not connected`));
              proc.send({ ...payload, id, cmd });
            });
          },
        };
        children.add(child);
        resolve(child);
      } else if (m.type === 'reply' && m.id !== undefined) {
        const p = pending.get(m.id);
        pending.delete(m.id);
        if (m.error !== undefined) p?.reject(new Error(`${name}: ${m.error}`));
        else p?.resolve(m.value);
      } else if (m.type === 'problem') {
        problems.push(`${name}: ${m.text}`);
      } else {
        messages.push(m);
      }
    });
  });
}

export interface ServerConfig {
  adapter?: 'ws' | 'socket.io';
  port?: number;
  broadcaster?: Record<string, unknown>;
  adapterOptions?: Record<string, unknown>;
  authDelayMs?: number;
  redis?: { url: string; channel: string; nodeId: string; probeIntervalMs?: number };
  sigterm?: { drainTimeoutMs: number };
  record?: boolean;
  /** Count live timers (async_hooks), unref'd ones included. */
  trackTimers?: boolean;
  io?: Record<string, unknown>;
}

export interface Server extends Child {
  readonly port: number;
  readonly nodeId: string;
}

export async function startServer(config: ServerConfig, options: { name?: string; gc?: boolean } = {}): Promise<Server> {
  const child = await spawnChild(options.name ?? 'server', SERVER, { execArgv: options.gc ? ['--expose-gc'] : [] });
  const { port, nodeId } = await child.request<{ port: number; nodeId: string }>('init', { config: { adapter: 'ws', ...config } });
  return Object.assign(child, { port, nodeId });
}

export function startClients(name = 'clients'): Promise<Child> {
  return spawnChild(name, CLIENTS);
}

/** The connect/disconnect cycler of R1 (src/cycler.mjs). */
export function startCycler(): Promise<Child> {
  return spawnChild('cycler', CYCLER);
}

/** What `run` in the server returns. */
export interface RunResult {
  sent: number;
  sentByKey: Record<string, number>;
  recipients: number;
  delivered: number;
  failed: number;
  dropped: number;
  removed: number;
  rejected: number;
  thrown: number;
  backplaneFailed: number;
  rejections: string[];
  /** Codes of the failed backplane publishes. */
  backplaneErrors: Record<string, number>;
  /** Results by `backplane` status (and error code): published, failed/..., unknown/..., skipped. */
  backplaneStatus: Record<string, number>;
  health?: unknown;
  durationMs: number;
  eld: { p50: number; p99: number; max: number };
  callMs: { p50: number; p99: number };
  rssStart: number;
  rssPeak: number;
  cpuMs: number;
}

export interface Sparse {
  pairs: Array<[number, number]>;
  max: number;
}

/** What `report` in a client process returns. */
export interface ClientReport {
  received: number;
  /** In order. */
  ok: number;
  /** Second copies. */
  dup: number;
  /** Messages that came after a later one of their stream (each had been counted as a gap until it came). */
  late: number;
  /** Skipped and never received. */
  gaps: number;
  wrong: number;
  other: number;
  missing: number;
  missingByKey: Record<string, number>;
  incomplete: number;
  cpuMs: number;
  latency: Sparse;
  closeCodes: Record<string, number>;
  refusals: Record<string, number>;
  open: number;
  clients: number;
  reconnects: number;
  lastReconnectAt: number;
  stoppedReadingAt: number | undefined;
}

export interface ServerStats {
  connections: number;
  users: number;
  rooms: number;
  roomMemberships: number;
  broadcasts: number;
  deliveries: number;
  monitor: { dropped: Record<string, number>; disconnects: Record<string, number>; errorsByCategory: Record<string, number>; backplane: Record<string, unknown> };
  opened: number;
  sockets: number;
  memory: NodeJS.MemoryUsage;
  resources: Record<string, number>;
  /** Live timers, unref'd ones included (servers started with `trackTimers`). */
  timers: number | undefined;
  problems: string[];
}

/** The q-quantile (ms, upper bucket bound) of one or more latency histograms. */
export function quantile(histograms: Sparse | Sparse[], q: number): number {
  const list = Array.isArray(histograms) ? histograms : [histograms];
  const map = new Map<number, number>();
  let max = 0;
  for (const s of list) {
    for (const [i, c] of s.pairs) map.set(i, (map.get(i) ?? 0) + c);
    max = Math.max(max, s.max);
  }
  const pairs = [...map.entries()].sort((a, b) => a[0] - b[0]);
  const total = pairs.reduce((n, [, c]) => n + c, 0);
  if (total === 0) return Number.NaN;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (const [i, c] of pairs) {
    seen += c;
    if (seen >= rank) return Math.min(i + 1, Math.ceil(max));
  }
  return max;
}

export const MB = 1024 * 1024;

/** The clock of lean-ws.mjs (CLOCK_MONOTONIC, ms): the same in every process of this machine, so server event times compare with this process's. */
const clockOrigin = Number(process.hrtime.bigint()) / 1e6 - performance.now();
export const clock = (): number => clockOrigin + performance.now();
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` every `everyMs` until it returns a truthy value (resolved with it) or `timeoutMs` passes (resolved with the last value). */
export async function waitFor<T>(check: () => Promise<T> | T, timeoutMs: number, everyMs = 100): Promise<T> {
  const until = performance.now() + timeoutMs;
  let value = await check();
  while (!value && performance.now() < until) {
    await sleep(everyMs);
    value = await check();
  }
  return value;
}

/** Prints a case's measured figures on one line, so that a run's log carries them. */
export function figures(name: string, values: Record<string, unknown>): void {
  console.log(`[reliability] ${name}: ${JSON.stringify(values)}`);
}

/** True when the Redis cases must skip (the reason is printed); throws instead when BCAST_REQUIRE_REDIS=1. */
export async function skipWithoutRedis(what: string): Promise<boolean> {
  const why = await whyUnreachable(REDIS_URL);
  if (why === undefined) return false;
  if (process.env['BCAST_REQUIRE_REDIS'] === '1') throw new Error(`BCAST_REQUIRE_REDIS=1 but ${what} cannot reach Redis: ${why}`);
  console.warn(`[reliability] skipping ${what}: Redis unreachable (${why}); set REDIS_URL, or BCAST_REQUIRE_REDIS=1 to fail instead`);
  return true;
}

// ---- one heavy file at a time ----------------------------------------------------------------

const LOCK = join(tmpdir(), 'bcast-reliability-heavy.lock');

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Waits until no other heavy reliability file runs (vitest runs files in parallel; two of these
 * at once on 2 cores would measure each other), then holds the lock until `release`.
 * A lock whose holder is dead is taken over.
 */
export async function acquireHeavyLock(timeoutMs = 15 * 60_000): Promise<() => void> {
  const until = performance.now() + timeoutMs;
  for (;;) {
    try {
      mkdirSync(LOCK);
      writeFileSync(join(LOCK, 'pid'), String(process.pid));
      break;
    } catch {
      let holder = 0;
      try {
        holder = Number(readFileSync(join(LOCK, 'pid'), 'utf8'));
      } catch {
        // being written, or just released
      }
      if (holder > 0 && !alive(holder)) rmSync(LOCK, { recursive: true, force: true });
      else if (performance.now() > until) throw new Error(`another heavy reliability file (pid ${holder}) held the lock for ${timeoutMs} ms`);
      else await sleep(250);
    }
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    try {
      if (Number(readFileSync(join(LOCK, 'pid'), 'utf8')) === process.pid) rmSync(LOCK, { recursive: true, force: true });
    } catch {
      // gone
    }
  };
}

/**
 * The hygiene of a heavy file, called once at its top: takes the heavy lock, collects this
 * process's unhandledRejection / uncaughtException / MaxListenersExceededWarning, and after each
 * test asserts none happened, here or in a child process; kills every child in afterAll.
 */
export function heavyFile(options: { lock?: boolean } = {}): void {
  const problems: string[] = [];
  const onRejection = (reason: unknown): void => void problems.push(`unhandledRejection: ${String(reason)}`);
  const onException = (error: unknown): void => void problems.push(`uncaughtException: ${String(error)}`);
  const onWarning = (warning: Error): void => {
    if (warning.name === 'MaxListenersExceededWarning') problems.push(`${warning.name}: ${warning.message}`);
  };
  let release: (() => void) | undefined;
  beforeAll(async () => {
    process.on('unhandledRejection', onRejection);
    process.on('uncaughtException', onException);
    process.on('warning', onWarning);
    if (options.lock !== false) release = await acquireHeavyLock();
  }, 16 * 60_000);
  afterEach(async () => {
    await new Promise((resolve) => setImmediate(resolve));
    const fromChildren = [...children].flatMap((c) => c.problems.splice(0));
    expect([...problems.splice(0), ...fromChildren], 'process-level problems (test process and children)').toEqual([]);
  });
  afterAll(async () => {
    const fromChildren = [...children].flatMap((c) => c.problems.splice(0));
    killAll();
    release?.();
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtException', onException);
    process.off('warning', onWarning);
    expect([...problems.splice(0), ...fromChildren], 'process-level problems after the last test').toEqual([]);
  });
}

/** Kills the given children now (SIGCONT first, for stopped ones). */
export function killChildren(...list: Array<Child | undefined>): void {
  for (const child of list) {
    if (!child) continue;
    child.kill('SIGCONT');
    child.kill('SIGKILL');
  }
}
