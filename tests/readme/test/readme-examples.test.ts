// Every code example of the published packages' READMEs (packages/*/README.md) and of the root
// README runs here, so that a README that drifts from the code fails `pnpm test`.
//
// - Every fenced block is found: ```js, ```ts (and javascript, typescript, mjs, mts). A block is
//   either run by a scenario below, or run elsewhere (the root README's first example:
//   apps/test/readme.test.ts), or marked in the README, on the line before its fence, with
//   `<!-- example: fragment, <why it cannot run alone> -->`. A fragment that has a scenario runs
//   with the stand-ins the scenario gives it (the names it uses but does not define); one without
//   has its imports checked against the packages. An unmarked block no scenario runs fails, and so
//   do an unknown marker, a marker before no block and a scenario whose block is gone.
// - A block runs as written, as its own ES module in a child process, against the built packages
//   (`@bcast/*` resolve to the workspace's packages, so their `dist/`; `pnpm test` builds first).
//   TypeScript blocks are stripped of their types with typescript's transpileModule first.
//   preload.mjs (node --import) makes every server the block starts listen on 127.0.0.1 on a free
//   port and reports that port, and reports what console.log prints, as JSON, so that the
//   values a block prints are compared with what its comments say. Where a block names a URL
//   for the client (ws://localhost:8080), the scenario rewrites it, once, to the server's port.
// - Then the scenario drives it with real clients (ws, socket.io-client, @bcast/client in another
//   example) and asserts what reaches them; servers with a SIGTERM recipe get SIGTERM and must
//   exit 0 by themselves, in-process examples must exit 0 by themselves. Every child process is
//   killed after 20 s whatever happens, and after its test.
// - Blocks that need Redis use REDIS_URL; without a Redis they are skipped with the reason
//   printed, and fail instead with BCAST_REQUIRE_REDIS=1 (packages/redis/test/helpers.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { runInNewContext } from 'node:vm';
import ts from 'typescript';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { REDIS_URL, skipReason, whyUnreachable } from '../../../packages/redis/test/helpers.js';
import { guardProcess } from '../../support/processGuard.js';

guardProcess();

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const PRELOAD = fileURLToPath(new URL('./preload.mjs', import.meta.url));
/** The workspace's packages (packages/*): their directory and name. */
const PACKAGES = readdirSync(join(ROOT, 'packages'))
  .filter((dir) => existsSync(join(ROOT, 'packages', dir, 'package.json')))
  .sort()
  .map((dir) => ({ dir, name: (JSON.parse(readFileSync(join(ROOT, 'packages', dir, 'package.json'), 'utf8')) as { name: string }).name }));
/** What the examples import besides `@bcast/*` and `node:*`, and the workspace package each one is installed in. */
const THIRD_PARTY: Record<string, string> = { ws: 'ws', 'socket.io': 'socket.io', 'socket.io-client': 'socket.io', express: 'express', ioredis: 'redis', redis: 'redis' };
const CHILD_LIMIT_MS = 20_000;
const WAIT_MS = 10_000;

// ---- the blocks -----------------------------------------------------------------------------------

const RUNNABLE = new Set(['js', 'javascript', 'mjs', 'ts', 'typescript', 'mts']);
const TYPESCRIPT = new Set(['ts', 'typescript', 'mts']);
/** Fence languages that are not code examples. */
const NOT_CODE = new Set(['sh', 'bash', 'shell', 'console', 'text', 'json', 'yaml', 'yml', 'http', 'diff', 'html', 'dockerfile', 'ini', 'toml', 'md', 'markdown']);

interface Block {
  /** e.g. `packages/ws/README.md #1 (line 13)` */
  readonly id: string;
  readonly file: string;
  /** Its number among the file's code blocks, from 1. */
  readonly n: number;
  readonly line: number;
  readonly lang: string;
  readonly code: string;
  /** The reason of its `<!-- example: fragment, ... -->` marker. */
  readonly fragment: string | undefined;
  /** Why the block's marker or fence cannot be honoured. */
  readonly problem: string | undefined;
}

const MARKER = /^<!--\s*example:\s*(.*?)\s*-->$/;

/** The code blocks of one README, and the problems found outside them (markers before no block). */
function readBlocks(file: string): { blocks: Block[]; problems: string[] } {
  const lines = readFileSync(join(ROOT, file), 'utf8').split('\n');
  const blocks: Block[] = [];
  const problems: string[] = [];
  let marker: { text: string; line: number } | undefined;
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i]!.trim();
    const fence = line.match(/^(`{3,}|~{3,})\s*([^\s`]*)/);
    if (!fence) {
      const m = line.match(MARKER);
      if (marker && line !== '') problems.push(`${file}:${marker.line}: "<!-- example: ${marker.text} -->" is not on the line before a code block`);
      if (line !== '') marker = m ? { text: m[1]!, line: i + 1 } : undefined;
      continue;
    }
    const lang = fence[2]!.toLowerCase();
    let end = i + 1;
    while (end < lines.length && !lines[end]!.trim().startsWith(fence[1]!)) end += 1;
    const code = `${lines
      .slice(i + 1, end)
      .join('\n')
      .replace(/^\n+|\s+$/g, '')}\n`;
    if (!NOT_CODE.has(lang)) {
      const n = blocks.filter((b) => b.file === file).length + 1;
      let fragment: string | undefined;
      let problem: string | undefined;
      if (marker) {
        const m = marker.text.match(/^fragment\s*[,:]\s*(\S.*)$/);
        if (m) fragment = m[1];
        else problem = `unknown marker "<!-- example: ${marker.text} -->": write "<!-- example: fragment, <why it cannot run alone> -->"`;
      }
      if (!problem && !RUNNABLE.has(lang) && !fragment) problem = lang === '' ? 'a fence without a language: tag it (```js, ```ts, or ```text when it is not code)' : `\`\`\`${lang} cannot be run here: mark it a fragment, or make it js or ts`;
      blocks.push({ id: `${file} #${n} (line ${i + 1})`, file, n, line: i + 1, lang, code, fragment, problem });
    }
    marker = undefined;
    i = end;
  }
  if (marker) problems.push(`${file}:${marker.line}: "<!-- example: ${marker.text} -->" is not on the line before a code block`);
  return { blocks, problems };
}

const READMES = ['README.md', ...PACKAGES.map((p) => `packages/${p.dir}/README.md`).filter((file) => existsSync(join(ROOT, file)))];
const found = READMES.map(readBlocks);
const BLOCKS = found.flatMap((f) => f.blocks);
const MARKER_PROBLEMS = found.flatMap((f) => f.problems);

function blockOf(file: string, n: number): Block {
  const block = BLOCKS.find((b) => b.file === file && b.n === n);
  if (!block) throw new Error(`${file} has no code block #${n}`);
  return block;
}

// ---- running a block ------------------------------------------------------------------------------

let TMP = '';
let WebSocketClass: WsClass;
let io: IoFunction;

/** Links `@bcast/*` and the third-party modules the examples import into a temp dir's node_modules, where the examples are written. */
function prepareTmp(): void {
  TMP = mkdtempSync(join(tmpdir(), 'bcast-readme-'));
  for (const { dir, name } of PACKAGES) {
    if (!existsSync(join(ROOT, 'packages', dir, 'dist', 'index.js'))) throw new Error(`packages/${dir}/dist is missing: build first (npx -y pnpm@12.4.2 build)`);
    mkdirSync(dirname(join(TMP, 'node_modules', name)), { recursive: true });
    symlinkSync(join(ROOT, 'packages', dir), join(TMP, 'node_modules', name), 'dir');
  }
  for (const [module, owner] of Object.entries(THIRD_PARTY)) symlinkSync(realpathSync(join(ROOT, 'packages', owner, 'node_modules', module)), join(TMP, 'node_modules', module), 'dir');
}

/** Imports a module as the workspace package `owner` resolves it (the test's own directory has no node_modules). */
async function importFrom(owner: string, module: string): Promise<Record<string, unknown>> {
  const path = createRequire(join(ROOT, 'packages', owner, 'package.json')).resolve(module);
  return (await import(pathToFileURL(path).href)) as Record<string, unknown>;
}

interface Parts {
  /** Stand-ins for what a fragment uses but does not define; imports in it must not clash with the block's. */
  prelude?: string;
  /** Runs after the block, in the same module: observes what the block set up. */
  epilogue?: string;
  /** Each replaced exactly once, before the block is transpiled. */
  replace?: Array<[string, string]>;
}

/** The ES module a block runs as. */
function program(block: Block, parts: Parts = {}): string {
  let code = block.code;
  for (const [from, to] of parts.replace ?? []) {
    const count = code.split(from).length - 1;
    if (count !== 1) throw new Error(`${block.id}: the scenario rewrites ${JSON.stringify(from)}, found ${count} times instead of once`);
    code = code.replace(from, () => to);
  }
  if (TYPESCRIPT.has(block.lang)) {
    code = ts.transpileModule(code, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 }, fileName: 'example.ts' }).outputText;
  }
  return [parts.prelude ?? '', `// ---- ${block.id}`, code, '// ---- the test', parts.epilogue ?? ''].join('\n');
}

type Event = { event: 'listening'; port: number } | { event: 'log'; args: unknown[] };

/** Items that arrive over time; `next` resolves with the first one that matches, already there or still to come. */
class Feed<T> {
  readonly items: T[] = [];
  readonly #waiters = new Set<() => void>();
  #ended: string | undefined;

  constructor(private readonly context: () => string = () => '') {}

  push(item: T): void {
    this.items.push(item);
    for (const w of [...this.#waiters]) w();
  }

  end(why: string): void {
    this.#ended ??= why;
    for (const w of [...this.#waiters]) w();
  }

  next(match: (item: T) => boolean, what: string, timeoutMs = WAIT_MS): Promise<T> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      const check = (): void => {
        const hit = this.items.find(match);
        if (hit !== undefined) {
          done();
          resolve(hit);
        } else if (this.#ended !== undefined) {
          done();
          reject(new Error(`${what}: never came, ${this.#ended}${this.context()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}${this.context()}`));
      }, timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const running = new Set<Example>();
let started = 0;

/** One block running in a child process. */
class Example {
  readonly events: Feed<Event>;
  output = '';
  readonly exited: Promise<Exit>;
  readonly #child: ChildProcess;
  #exit: Exit | undefined;

  constructor(
    readonly name: string,
    source: string,
    env: Record<string, string> = {},
  ) {
    this.events = new Feed<Event>(() => `\n--- ${this.name} output:\n${this.output}`);
    const file = join(TMP, `${(started += 1)}-${name.replace(/[^\w.-]+/g, '-')}.mjs`);
    writeFileSync(file, source);
    this.#child = spawn(process.execPath, ['--import', pathToFileURL(PRELOAD).href, file], {
      cwd: TMP,
      env: { ...process.env, REDIS_URL, ...env },
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    });
    running.add(this);
    this.#child.on('error', (error) => void (this.output += `\n[spawn] ${error.message}\n`));
    for (const stream of [this.#child.stdout!, this.#child.stderr!]) {
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => void (this.output += chunk));
    }
    let partial = '';
    const reports = this.#child.stdio[3] as Readable;
    reports.setEncoding('utf8');
    reports.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop()!;
      for (const line of lines) this.events.push(JSON.parse(line) as Event);
    });
    const limit = setTimeout(() => this.#child.kill('SIGKILL'), CHILD_LIMIT_MS);
    this.exited = new Promise((resolve) => {
      this.#child.once('close', (code, signal) => {
        clearTimeout(limit);
        running.delete(this);
        this.#exit = { code, signal };
        this.events.end(`the example exited (code ${code}, signal ${signal})`);
        resolve(this.#exit);
      });
    });
  }

  async port(): Promise<number> {
    const e = await this.events.next((e) => e.event === 'listening', `${this.name} to listen`);
    return (e as { port: number }).port;
  }

  /** The arguments of every console.log so far. */
  get logs(): unknown[][] {
    return this.events.items.flatMap((e) => (e.event === 'log' ? [e.args] : []));
  }

  async log(match: (args: unknown[]) => boolean, what: string, timeoutMs = WAIT_MS): Promise<unknown[]> {
    const e = await this.events.next((e) => e.event === 'log' && match(e.args), `${this.name} to log ${what}`, timeoutMs);
    return (e as { args: unknown[] }).args;
  }

  signal(signal: NodeJS.Signals): void {
    if (!this.#exit) this.#child.kill(signal);
  }

  /** Resolves with how it exited, or rejects after `timeoutMs` (and kills it). */
  async exit(what: string, timeoutMs = WAIT_MS): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name} did not exit by itself within ${timeoutMs} ms ${what}\n--- output:\n${this.output}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
      this.signal('SIGKILL');
    }
  }

  async stop(): Promise<void> {
    this.signal('SIGKILL');
    await this.exited;
  }
}

function run(block: Block, parts: Parts = {}, env: Record<string, string> = {}, name = block.file.replace(/\/?README\.md$/, '').replace(/^packages\//, '') || 'root'): Example {
  return new Example(`${name}#${block.n}`, program(block, parts), env);
}

/** A module with only the block's import declarations: every name it imports must exist. */
function importsOnly(block: Block): string {
  const imports = block.code.match(/^import\s[\s\S]*?from\s*['"][^'"]+['"];?|^import\s*['"][^'"]+['"];?/gm) ?? [];
  return `${imports.join('\n')}\nconsole.log('imports resolved');\n`;
}

// ---- clients (in this process) ----------------------------------------------------------------

interface WsSocket {
  readonly readyState: number;
  on(event: string, listener: (...args: any[]) => void): unknown;
  send(data: string): void;
  terminate(): void;
}
type WsClass = new (url: string, options?: { headers?: Record<string, string> }) => WsSocket;
interface IoSocket {
  on(event: string, listener: (...args: any[]) => void): IoSocket;
  emit(event: string, ...args: unknown[]): IoSocket;
  disconnect(): IoSocket;
}
type IoFunction = (url: string, options: Record<string, unknown>) => IoSocket;

const cleanups = new Set<() => void>();

class WsClient {
  readonly frames: Feed<any> = new Feed<any>((): string => `\n--- frames: ${JSON.stringify(this.frames.items)}`);
  readonly opened: Promise<void>;
  readonly closed: Promise<{ code: number; reason: string }>;
  /** The HTTP status of a refused upgrade. */
  readonly refused: Promise<number>;
  readonly #ws: WsSocket;

  constructor(url: string, headers: Record<string, string> = {}) {
    const ws = (this.#ws = new WebSocketClass(url, { headers }));
    ws.on('error', () => {}); // a refused upgrade, or terminate() before it completed
    ws.on('message', (data: Buffer) => {
      const text = data.toString();
      try {
        this.frames.push(JSON.parse(text));
      } catch {
        this.frames.push(text);
      }
    });
    this.opened = new Promise((resolve, reject) => {
      ws.on('open', () => resolve());
      ws.on('unexpected-response', (_request: unknown, response: { statusCode: number }) => reject(new Error(`upgrade refused: ${response.statusCode}`)));
    });
    this.opened.catch(() => {});
    this.refused = new Promise((resolve, reject) => {
      ws.on('unexpected-response', (_request: unknown, response: { statusCode: number }) => resolve(response.statusCode));
      ws.on('open', () => reject(new Error('the upgrade was accepted')));
    });
    this.refused.catch(() => {});
    this.closed = new Promise((resolve) => ws.on('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })));
    cleanups.add(() => ws.terminate());
  }

  send(frame: unknown): void {
    this.#ws.send(JSON.stringify(frame));
  }
}

/** A socket.io client that never reconnects by itself; `events` gets [event, ...args] for every message, connect, connect_error and disconnect. */
function sioClient(url: string, options: Record<string, unknown>): { socket: IoSocket; events: Feed<unknown[]> } {
  const events: Feed<unknown[]> = new Feed<unknown[]>((): string => `\n--- events: ${JSON.stringify(events.items)}`);
  const socket = io(url, { transports: ['websocket'], reconnection: false, ...options });
  socket.on('connect', () => events.push(['connect']));
  socket.on('connect_error', (error: Error) => events.push(['connect_error', error.message]));
  socket.on('disconnect', (reason: string) => events.push(['disconnect', reason]));
  socket.on('message', (value: unknown) => events.push(['message', value]));
  cleanups.add(() => socket.disconnect());
  return { socket, events };
}

/** One HTTP request on its own connection (no keep-alive agent left behind). */
function http(method: string, url: string, body?: unknown): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false, headers: body === undefined ? {} : { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // not JSON: the text
        }
        resolve({ status: res.statusCode ?? 0, body: parsed });
      });
    });
    req.setTimeout(WAIT_MS, () => req.destroy(new Error(`${method} ${url}: no answer within ${WAIT_MS} ms`)));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

// ---- reading what the README says ---------------------------------------------------------------

/** The comment (` // <text>`) on the block's line that contains `anchor`. */
function commentText(block: Block, anchor: string): string {
  const line = block.code.split('\n').find((l) => l.includes(anchor));
  const text = line?.match(/\s\/\/\s+(.*)$/)?.[1];
  if (text === undefined) throw new Error(`${block.id}: no line with ${JSON.stringify(anchor)} and a comment`);
  return text;
}

/** The value that comment shows, read as a JS literal; a trailing `...` (the rest) is dropped. */
function commentValue(block: Block, anchor: string): unknown {
  const text = commentText(block, anchor).replace(/,\s*\.\.\.(?=\s*[}\]])/g, '');
  return JSON.parse(JSON.stringify(runInNewContext(`(${text})`)));
}

/** The key paths of the object a comment shows, such as `{ a, b: 1, c: { d, ... } }`: a, b, c, c.d. */
function shownKeys(text: string): string[] {
  const tokens =
    text
      .replace(/'[^']*'|"[^"]*"/g, "''")
      .replace(/\[[^\]]*\]/g, '[]')
      .match(/\.\.\.|[A-Za-z_$][\w$]*|[{}:,]/g) ?? [];
  const keys: string[] = [];
  const path: string[] = [];
  let key: string | undefined; // the key whose value comes next
  let expectKey = false;
  for (const t of tokens) {
    if (t === '{') {
      path.push(key ?? '');
      key = undefined;
      expectKey = true;
    } else if (t === '}') {
      path.pop();
      expectKey = false;
    } else if (t === ',') {
      key = undefined;
      expectKey = true;
    } else if (t === ':') {
      expectKey = false;
    } else if (expectKey && t !== '...') {
      key = t;
      keys.push([...path.slice(1), t].join('.'));
      expectKey = false;
    }
  }
  return keys;
}

// ---- the scenarios --------------------------------------------------------------------------------

interface Scenario {
  readonly file: string;
  readonly n: number;
  /** Text the block contains: a scenario never runs a block it was not written for. */
  readonly has: string;
  /** What the test does with the block (the listing shows it). */
  readonly how: string;
  /** The block is a marked fragment, run with stand-ins. */
  readonly standIns?: boolean;
  readonly redis?: boolean;
  run(block: Block): Promise<void>;
}

const member = (id: string, userId: string | undefined): string =>
  `{ id: ${JSON.stringify(id)}, userId: ${JSON.stringify(userId)}, isOpen: true, bufferedBytes: 0, send() {}, close() {} }`;

/** A ws client joins a room of a @bcast/ws-like server and gets its answers, in the protocol of docs/PROTOCOL.md. */
async function joined(client: WsClient, room: string, requestId: number): Promise<unknown> {
  client.send({ type: 'join', room, requestId });
  return client.frames.next((f) => f?.requestId === requestId, `the answer to joining ${room}`);
}

const SCENARIOS: Scenario[] = [
  {
    file: 'README.md',
    n: 1,
    has: "attachToServer(bcast, wss, { authenticate })",
    how: 'run by apps/test/readme.test.ts (a client joins public:lobby and the logged result says delivered: 1)',
    async run() {
      const other = readFileSync(join(ROOT, 'apps/test/readme.test.ts'), 'utf8');
      expect(other, 'apps/test/readme.test.ts still runs the block under "## In five lines"').toContain('## In five lines');
      expect(readFileSync(join(ROOT, 'README.md'), 'utf8')).toMatch(/^## In five lines\s*\n+```js\n/m);
    },
  },
  {
    file: 'packages/core/README.md',
    n: 1,
    has: "bcast.register(connection('c1', 'alice'));",
    how: 'runs as written; what it prints is what its comments say; exits 0 by itself',
    async run(block) {
      const example = run(block);
      expect(await example.exit('after its last line')).toEqual({ code: 0, signal: null });
      const logs = example.logs;
      expect(logs).toHaveLength(10);
      expect(logs.slice(0, 2)).toEqual([['c1 <- {"type":"hello"}'], ['c2 <- {"type":"hello"}']]);
      expect(logs[2]![0]).toMatchObject(commentValue(block, "bcast.toAll({ type: 'hello' })") as object);
      expect(logs.slice(3, 8)).toEqual([['c2 <- hi lobby'], ['c1 <- {"type":"dm"}'], ['c1 <- {"type":"reply","ok":true}'], ['BCAST_INVALID_MESSAGE'], [commentValue(block, 'getStats().broadcasts')]]);
      expect(logs.slice(8)).toEqual([[expect.stringMatching(/^c1 closed 1001 /)], [expect.stringMatching(/^c2 closed 1001 /)]]);
    },
  },
  {
    file: 'packages/core/README.md',
    n: 2,
    has: "history: { rooms: 'chat:*' }",
    how: 'runs as written; the member gets the bcast.pub frame its comment shows (any epoch); exits 0 by itself',
    async run(block) {
      const example = run(block);
      expect(await example.exit('after its last line')).toEqual({ code: 0, signal: null });
      const shown = JSON.parse(block.code.match(/every member gets (\{.*\})$/m)![1]!) as object;
      expect(example.logs.map((args) => JSON.parse(args[0] as string))).toEqual([{ ...shown, epoch: expect.stringMatching(/^[0-9a-f]+$/) }]);
    },
  },
  {
    file: 'packages/core/README.md',
    n: 3,
    has: "await bcast.presence('lobby');",
    standIns: true,
    how: "stand-ins: a Broadcaster with c1 and c2 of alice and an anonymous c3 in lobby; the call's value (logged) is the one its comment shows",
    async run(block) {
      const example = run(block, {
        prelude: [
          "import { Broadcaster } from '@bcast/core';",
          'const bcast = new Broadcaster();',
          `for (const connection of [${member('c1', 'alice')}, ${member('c2', 'alice')}, ${member('c3', undefined)}]) {`,
          '  bcast.register(connection);',
          "  bcast.join(connection.id, 'lobby');",
          '}',
        ].join('\n'),
        replace: [["await bcast.presence('lobby');", "console.log(await bcast.presence('lobby'));"]],
      });
      expect(await example.exit('after its last line')).toEqual({ code: 0, signal: null });
      expect(example.logs).toEqual([[commentValue(block, "bcast.presence('lobby')")]]);
    },
  },
  {
    file: 'packages/core/README.md',
    n: 4,
    has: 'refresh: async (connection) => (await sessions.renew(connection.userId)) ?? false',
    standIns: true,
    how: "stand-ins: sessions (renews alice only) and an unknown connectionId; then alice's credentials are renewed, bob's expire (1008), and revoking mallory closes her (1008)",
    async run(block) {
      const example = run(block, {
        prelude: [
          "import { Broadcaster } from '@bcast/core';",
          'const renewed = [];',
          "const sessions = { renew: async (userId) => (renewed.push(userId), userId === 'alice' ? Date.now() + 60_000 : undefined) };",
          "const connectionId = 'not-registered';",
        ].join('\n'),
        epilogue: [
          'const closes = {};',
          'const connection = (id, userId) => ({ id, userId, isOpen: true, bufferedBytes: 0, send() {}, close(code, reason) { this.isOpen = false; closes[id] = [code, reason]; } });',
          "bcast.register(connection('a', 'alice'), { expiresAt: Date.now() + 50 });",
          "bcast.register(connection('b', 'bob'), { expiresAt: Date.now() + 50 });",
          "bcast.register(connection('m', 'mallory'));",
          "const revoked = bcast.revoke({ userId: 'mallory' });",
          'await new Promise((resolve) => setTimeout(resolve, 500));',
          'console.log({ revoked, renewed: renewed.sort(), closes });',
          'await bcast.dispose();',
        ].join('\n'),
      });
      expect(await example.exit('after its last line')).toEqual({ code: 0, signal: null });
      expect(example.logs).toEqual([[{ revoked: 1, renewed: ['alice', 'bob'], closes: { m: [1008, 'access revoked'], b: [1008, 'authentication expired'] } }]]);
    },
  },
  {
    file: 'packages/core/README.md',
    n: 5,
    has: "process.once('SIGTERM', async () => {",
    standIns: true,
    how: 'stand-ins: a @bcast/ws server (broadcaster, server, attachment) and an sdk whose shutdown() logs; a ws client connects, SIGTERM: the client gets 1001, the report says closed: 1, the process exits 0',
    async run(block) {
      const example = run(block, {
        prelude: [
          "import { createServer } from 'node:http';",
          "import { Broadcaster } from '@bcast/core';",
          "import { attachToServer } from '@bcast/ws';",
          "import { WebSocketServer } from 'ws';",
          'const broadcaster = new Broadcaster();',
          'const server = createServer();',
          'const attachment = attachToServer(broadcaster, new WebSocketServer({ server }));',
          "const sdk = { shutdown: async () => console.log('sdk.shutdown()') };",
          'server.listen(8080);',
        ].join('\n'),
      });
      const client = new WsClient(`ws://127.0.0.1:${await example.port()}/`);
      await client.opened;
      example.signal('SIGTERM');
      expect((await client.closed).code).toBe(1001);
      expect(await example.exit('after SIGTERM')).toEqual({ code: 0, signal: null });
      expect(example.logs).toEqual([['bcast', { broadcastsFinished: 0, closed: 1, terminated: 0, durationMs: expect.any(Number) }], ['sdk.shutdown()']]);
    },
  },
  {
    file: 'packages/ws/README.md',
    n: 1,
    has: 'attachToServer(broadcaster, wss, {',
    how: 'runs as written; 401 without ?user, 403 from a foreign origin; alice joins alice:inbox (not bob:inbox) and gets the ticker; SIGTERM: 1001, the report, exit 0',
    async run(block) {
      const example = run(block);
      const url = `ws://127.0.0.1:${await example.port()}/`;
      expect(await new WsClient(url).refused).toBe(401);
      expect(await new WsClient(`${url}?user=alice`, { Origin: 'http://evil.example' }).refused).toBe(403);
      const alice = new WsClient(`${url}?user=alice`, { Origin: 'http://localhost:3000' });
      await alice.opened;
      expect(await joined(alice, 'alice:inbox', 1)).toEqual({ type: 'ok', op: 'join', room: 'alice:inbox', requestId: 1 });
      expect(await joined(alice, 'bob:inbox', 2)).toMatchObject({ type: 'error', code: 'FORBIDDEN', requestId: 2 });
      expect(await alice.frames.next((f) => f?.type === 'time', 'a tick of the ticker')).toEqual({ type: 'time', now: expect.any(Number) });
      example.signal('SIGTERM');
      expect((await alice.closed).code).toBe(1001);
      expect(await example.exit('after SIGTERM')).toEqual({ code: 0, signal: null });
      expect(example.logs).toEqual([[{ broadcastsFinished: expect.any(Number), closed: 1, terminated: 0, durationMs: expect.any(Number) }]]);
    },
  },
  {
    file: 'packages/socket.io/README.md',
    n: 1,
    has: 'attachToServer(broadcaster, io, {',
    how: 'runs as written; socket.io-client: "unauthorized" without auth.user, refused from a foreign origin; alice joins alice:inbox and gets the ticker; SIGTERM: "io server disconnect", the report, exit 0',
    async run(block) {
      const example = run(block);
      const url = `http://127.0.0.1:${await example.port()}`;
      const anonymous = sioClient(url, { auth: {} });
      expect(await anonymous.events.next((e) => e[0] === 'connect_error', 'the refusal without auth.user')).toEqual(['connect_error', 'unauthorized']);
      const foreign = sioClient(url, { auth: { user: 'alice' }, extraHeaders: { origin: 'http://evil.example' } });
      expect((await foreign.events.next((e) => e[0] === 'connect_error' || e[0] === 'connect', 'the refusal of a foreign origin'))[0]).toBe('connect_error');
      // The README's client: io(url, { auth: { user: 'alice' } }).on('message', ...).emit('message', { type: 'join', room: 'alice:inbox', requestId: 1 })
      const alice = sioClient(url, { auth: { user: 'alice' } });
      alice.socket.emit('message', { type: 'join', room: 'alice:inbox', requestId: 1 });
      expect(await alice.events.next((e) => e[0] === 'message' && (e[1] as any)?.requestId === 1, 'the answer to the join')).toEqual(['message', { type: 'ok', op: 'join', room: 'alice:inbox', requestId: 1 }]);
      expect(await alice.events.next((e) => e[0] === 'message' && (e[1] as any)?.type === 'time', 'a tick of the ticker')).toEqual(['message', { type: 'time', now: expect.any(Number) }]);
      example.signal('SIGTERM');
      expect(await alice.events.next((e) => e[0] === 'disconnect', 'the disconnect at shutdown')).toEqual(['disconnect', 'io server disconnect']);
      expect(await example.exit('after SIGTERM')).toEqual({ code: 0, signal: null });
      expect(example.logs).toEqual([[{ broadcastsFinished: expect.any(Number), closed: 1, terminated: 0, durationMs: expect.any(Number) }]]);
    },
  },
  {
    file: 'packages/express/README.md',
    n: 1,
    has: 'attachUpgrade(broadcaster, server, {',
    how: 'runs as written; /bcast/health and /bcast/stats answer; 401 without x-user; alice joins announcements and gets what POST /announce sends; SIGTERM: 1001, the report, exit 0',
    async run(block) {
      const example = run(block);
      const base = `127.0.0.1:${await example.port()}`;
      const health = await http('GET', `http://${base}/bcast/health`);
      expect(health).toMatchObject({ status: 200, body: { status: 'healthy' } });
      expect(await http('GET', `http://${base}/bcast/stats`)).toMatchObject({ status: 200, body: { connections: expect.anything() } });
      expect(await new WsClient(`ws://${base}/ws`).refused).toBe(401);
      const alice = new WsClient(`ws://${base}/ws`, { 'x-user': 'alice', Origin: 'http://localhost:3000' });
      await alice.opened;
      alice.send({ type: 'join', room: 'announcements' });
      expect(await alice.frames.next((f) => f?.type === 'ok', 'the ok to the join')).toEqual({ type: 'ok', op: 'join', room: 'announcements' });
      const posted = await http('POST', `http://${base}/announce`, { hello: 1 });
      expect(posted).toMatchObject({ status: 200, body: { recipients: 1, delivered: 1 } });
      expect(await alice.frames.next((f) => f?.hello === 1, 'the announcement')).toEqual({ hello: 1 });
      example.signal('SIGTERM');
      expect((await alice.closed).code).toBe(1001);
      expect(await example.exit('after SIGTERM')).toEqual({ code: 0, signal: null });
      expect(example.logs).toEqual([[{ broadcastsFinished: expect.any(Number), closed: 1, terminated: 0, durationMs: expect.any(Number) }]]);
    },
  },
  {
    file: 'packages/compat/README.md',
    n: 1,
    has: 'new BroadcastManager(connections, rooms)',
    how: 'runs as written; alice (a raw ws socket) is in lobby and gets the ticks; the logged result has the fields its comment shows; /health and / answer',
    async run(block) {
      const example = run(block);
      const base = `127.0.0.1:${await example.port()}`;
      const alice = new WsClient(`ws://${base}/?user=alice`);
      await alice.opened;
      expect(await alice.frames.next((f) => f?.type === 'tick', 'a tick')).toEqual({ type: 'tick', at: expect.any(Number) });
      const [result] = await example.log((args) => (args[0] as any)?.successful === 1, 'a result with successful: 1');
      const comment = block.code.match(/console\.log\(result\);\s*\/\/\s*(\{.*\})/)![1]!;
      expect(Object.keys(result as object).sort()).toEqual(expect.arrayContaining(shownKeys(comment).sort()));
      expect(result).toMatchObject({ successful: 1, failed: 0, totalConnections: 1, messageType: 'tick' });
      expect(await http('GET', `http://${base}/health`)).toMatchObject({ status: 200, body: { status: 'healthy' } });
      expect(await http('GET', `http://${base}/`)).toMatchObject({ status: 200, body: { totalBroadcasts: expect.any(Number), successfulSends: expect.any(Number) } });
    },
  },
  {
    file: 'packages/client/README.md',
    n: 1,
    has: 'new BcastClient({',
    how: "runs against the @bcast/ws README example (itself run as written), its URL rewritten to that server's port; what it logs is what its comments say, a tick arrives; SIGINT: closed 1000, exit 0",
    async run(block) {
      const server = run(blockOf('packages/ws/README.md', 1), {}, {}, 'ws-server-for-client');
      const port = await server.port();
      const client = run(block, { replace: [['ws://localhost:8080/', `ws://127.0.0.1:${port}/`]] });
      expect(await client.log((args) => args[0] === 'connected' || args[0] === 'reconnected', "'connected'")).toEqual(['connected']);
      await client.log((args) => (args[0] as any)?.type === 'pong', 'the pong');
      const said = client.logs.filter((args) => args[0] !== '-'); // without the ticks, which may come at any time
      expect(said.slice(1, 4)).toEqual([
        [commentValue(block, "client.join('alice:inbox')")],
        [commentText(block, "client.join('bob:inbox')")],
        [commentValue(block, 'client.ping()')],
      ]);
      expect(await client.log((args) => args[0] === '-', 'a tick (no room)')).toEqual(['-', { type: 'time', now: expect.any(Number) }]);
      client.signal('SIGINT');
      expect(await client.exit('after SIGINT (client.close())')).toEqual({ code: 0, signal: null });
      expect(client.logs.at(-1)).toEqual(['closed', 1000, '']);
      server.signal('SIGTERM');
      expect(await server.exit('after SIGTERM')).toEqual({ code: 0, signal: null });
    },
  },
  {
    file: 'packages/client/README.md',
    n: 2,
    has: 'url: async () => `wss://example.com/ws?token=${await getToken()}`',
    standIns: true,
    how: 'stand-ins: getToken gives token-1, token-2...; the URL points at a ws server of the test that refuses the first upgrade (401): the retry asks for a new token',
    async run(block) {
      const { WebSocketServer } = (await importFrom('ws', 'ws')) as { WebSocketServer: new (options: object) => any };
      const tokens: string[] = [];
      const wss = new WebSocketServer({
        host: '127.0.0.1',
        port: 0,
        verifyClient: (info: { req: { url: string } }, done: (ok: boolean, status?: number) => void) => {
          tokens.push(new URL(info.req.url, 'http://localhost').searchParams.get('token') ?? '');
          done(tokens.length > 1, 401);
        },
      });
      cleanups.add(() => {
        for (const ws of wss.clients) ws.terminate();
        wss.close();
      });
      const connected = new Feed<string>();
      wss.on('connection', (_ws: unknown, req: { url: string }) => connected.push(req.url));
      await new Promise((resolve) => wss.on('listening', resolve));
      const example = run(block, {
        prelude: [
          "import { BcastClient } from '@bcast/client';",
          "import { WebSocket } from 'ws';",
          'globalThis.WebSocket ??= WebSocket; // Node 20',
          'let issued = 0;',
          'const getToken = async () => `token-${++issued}`;',
        ].join('\n'),
        replace: [['wss://example.com/ws', `ws://127.0.0.1:${wss.address().port}/ws`]],
      });
      expect(await connected.next(() => true, 'the accepted connection')).toBe('/ws?token=token-2');
      expect(tokens).toEqual(['token-1', 'token-2']);
      await example.stop();
    },
  },
  {
    file: 'packages/redis/README.md',
    n: 1,
    has: 'const backplane = createRedisBackplane({ url: process.env.REDIS_URL',
    redis: true,
    how: 'runs as written, twice (PORT=0); a ws client on each node gets the ticks of both nodes',
    async run(block) {
      const nodes = [run(block, {}, { PORT: '0' }, 'redis-node-a'), run(block, {}, { PORT: '0' }, 'redis-node-b')];
      const started = await Promise.all(
        nodes.map(async (node) => {
          const [line] = await node.log((args) => /^node \S+ on :\d+$/.test(String(args[0])), "'node <id> on :<port>'");
          const [, id, port] = String(line).match(/^node (\S+) on :(\d+)$/)!;
          return { id: id!, port: Number(port) };
        }),
      );
      expect(started[0]!.port).toBe(await nodes[0]!.port());
      const clients = started.map(({ port }) => new WsClient(`ws://127.0.0.1:${port}/`));
      await Promise.all(clients.map((c) => c.opened));
      for (const [i, client] of clients.entries()) {
        for (const { id } of started) await client.frames.next((f) => f?.type === 'tick' && f.from === id, `a tick of node ${id} on the client of node ${i}`);
      }
    },
  },
  {
    file: 'packages/redis/README.md',
    n: 2,
    has: "import { Redis } from 'ioredis';",
    redis: true,
    how: "runs as written, then (the test's code) a Broadcaster on that backplane reaches another node's connection; closing the backplane leaves the ioredis client open; after client.quit() the process exits 0 by itself",
    run: (block) => ownClient(block, 'ioredis'),
  },
  {
    file: 'packages/redis/README.md',
    n: 3,
    has: "import { createClient } from 'redis';",
    redis: true,
    how: "runs as written, then (the test's code) a Broadcaster on that backplane reaches another node's connection; closing the backplane leaves the node-redis client open; after client.close() the process exits 0 by itself",
    run: (block) => ownClient(block, 'node-redis'),
  },
  {
    file: 'packages/redis/README.md',
    n: 4,
    has: 'createRedisHistory({ url })',
    redis: true,
    how: "runs as written, then (the test's code) two members of a fresh chat: room: a message comes as bcast.pub with offset 1, presence lists both, bob's join reaches alice; SIGTERM: exits 0 by itself",
    async run(block) {
      const example = run(block, {
        epilogue: [
          "import { randomUUID } from 'node:crypto';",
          'const room = `chat:readme-${randomUUID()}`;',
          'const frames = { c1: [], c2: [] };',
          'const handles = {};',
          '// a transport reports the close it was asked for: shutdown() waits for that',
          'const member = (id, userId) => ({ id, userId, isOpen: true, bufferedBytes: 0, send: (m) => frames[id].push(JSON.parse(m.text)), close(code, reason) { this.isOpen = false; setImmediate(() => handles[id].closed(code, reason)); } });',
          'const until = async (ok) => { for (const end = Date.now() + 5_000; !(await ok()) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20)); };',
          'await broadcaster.ready();',
          "handles.c1 = broadcaster.register(member('c1', 'alice'));",
          "handles.c2 = broadcaster.register(member('c2', 'bob'));",
          "broadcaster.join('c1', room);",
          "await until(async () => (await broadcaster.presence(room)).connections === 1);",
          "broadcaster.join('c2', room);",
          "await until(async () => (await broadcaster.presence(room)).connections === 2);",
          "const result = await broadcaster.toRoom(room, { type: 'chat', text: 'hi' });",
          "await until(() => frames.c1.some((f) => f.type === 'bcast.pub'));",
          'console.log({ room, result, c1: frames.c1, presence: await broadcaster.presence(room) });',
        ].join('\n'),
      });
      const [logged] = await example.log((args) => typeof (args[0] as any)?.room === 'string', 'what the members got');
      const { room, result, c1, presence } = logged as any;
      expect(result).toMatchObject({ recipients: 2, delivered: 2, backplane: 'published' });
      expect(c1).toEqual([
        { type: 'bcast.presence', room, event: 'join', userId: 'bob' },
        { type: 'bcast.pub', room, offset: 1, epoch: expect.any(String), data: { type: 'chat', text: 'hi' } },
      ]);
      expect(presence).toEqual({ room, users: [{ userId: 'alice', connections: 1 }, { userId: 'bob', connections: 1 }], connections: 2 });
      example.signal('SIGTERM');
      expect(await example.exit('after SIGTERM (broadcaster.shutdown({ closeBackplane: true }))')).toEqual({ code: 0, signal: null });
    },
  },
  {
    file: 'packages/redis/README.md',
    n: 5,
    has: 'backplane.health();',
    standIns: true,
    redis: true,
    how: "stand-ins: the first example's backplane, on a Broadcaster; every field its comment shows is in backplane.health()",
    async run(block) {
      const example = run(block, {
        prelude: [
          "import { Broadcaster } from '@bcast/core';",
          "import { createRedisBackplane } from '@bcast/redis';",
          'const backplane = createRedisBackplane({ url: process.env.REDIS_URL });',
          'const broadcaster = new Broadcaster({ backplane });',
          'await broadcaster.ready();',
        ].join('\n'),
        epilogue: [
          'const paths = (value, prefix = "") => typeof value === "object" && value !== null && !Array.isArray(value) ? Object.entries(value).flatMap(([k, v]) => [prefix + k, ...paths(v, `${prefix}${k}.`)]) : [];',
          'const health = backplane.health();',
          'console.log({ status: health.status, paths: paths(health) });',
          'await broadcaster.dispose({ closeBackplane: true });',
        ].join('\n'),
      });
      expect(await example.exit('after broadcaster.dispose({ closeBackplane: true })')).toEqual({ code: 0, signal: null });
      const comment = block.code
        .split('\n')
        .filter((l) => l.trimStart().startsWith('//'))
        .map((l) => l.trimStart().replace(/^\/\/\s?/, ''))
        .join('\n')
        .replace(/'[^']*'/g, "''")
        .replace(/\s\/\/.*$/gm, '');
      const shown = shownKeys(comment);
      expect(shown.length).toBeGreaterThan(30);
      const [{ status, paths }] = example.logs[0] as [{ status: string; paths: string[] }];
      expect(['healthy', 'degraded']).toContain(status);
      expect(shown.filter((key) => !paths.includes(key)), 'fields the README shows that health() does not have').toEqual([]);
    },
  },
];

/** The "Your own client" examples: the backplane on the app's client works, and leaves that client to the app. */
async function ownClient(block: Block, kind: 'ioredis' | 'node-redis'): Promise<void> {
  const example = run(block, {
    epilogue: [
      "import { Broadcaster as TestBroadcaster } from '@bcast/core';",
      "import { createRedisBackplane as testBackplane } from '@bcast/redis';",
      'const received = [];',
      'const node = new TestBroadcaster({ backplane });',
      'const other = new TestBroadcaster({ backplane: testBackplane({ url: process.env.REDIS_URL }) });',
      "other.register({ id: 'remote', userId: 'alice', isOpen: true, bufferedBytes: 0, send: (m) => received.push(JSON.parse(m.text)), close() {} });",
      'await Promise.all([node.ready(), other.ready(), backplane.ready()]);',
      "const result = await node.toAll({ type: 'readme', via: 'own client' });",
      'for (const end = Date.now() + 5_000; received.length === 0 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));',
      'const client_ = backplane.health().details.client;',
      'await node.dispose({ closeBackplane: true });',
      'await other.dispose({ closeBackplane: true });',
      "const open = typeof client.status === 'string' ? client.status === 'ready' : client.isOpen;",
      'console.log({ result, received, client: client_, openAfterClose: open });',
      "await (typeof client.status === 'string' ? client.quit() : client.close());",
    ].join('\n'),
  });
  expect(await example.exit('after the client was quit')).toEqual({ code: 0, signal: null });
  expect(example.logs).toEqual([
    [{ result: expect.objectContaining({ backplane: 'published' }), received: [{ type: 'readme', via: 'own client' }], client: kind, openAfterClose: true }],
  ]);
}

// ---- the tests --------------------------------------------------------------------------------------

const redisWhy = await whyUnreachable(REDIS_URL);
skipReason("the README examples' Redis suite", redisWhy);

beforeAll(async () => {
  prepareTmp();
  WebSocketClass = (await importFrom('ws', 'ws')).default as WsClass;
  const sio = await importFrom('socket.io', 'socket.io-client');
  io = (sio.io ?? (sio.default as Record<string, unknown>).io) as IoFunction;
});

afterEach(async () => {
  for (const cleanup of cleanups) cleanup();
  cleanups.clear();
  await Promise.all([...running].map((example) => example.stop()));
});

afterAll(() => {
  if (TMP) rmSync(TMP, { recursive: true, force: true });
});

function scenarioFor(block: Block): Scenario | undefined {
  return SCENARIOS.find((s) => s.file === block.file && s.n === block.n);
}

/** Why a block cannot be run as the test stands, or undefined. */
function problemOf(block: Block): string | undefined {
  if (block.problem) return block.problem;
  const scenario = scenarioFor(block);
  if (scenario && !block.code.includes(scenario.has)) return `the scenario for ${block.file} #${block.n} expects a block with ${JSON.stringify(scenario.has)}: the blocks moved or changed, update the scenarios of tests/readme`;
  if (scenario?.standIns && !block.fragment) return 'the scenario runs it with stand-ins: mark it "<!-- example: fragment, <why> -->" in the README';
  if (scenario && !scenario.standIns && block.fragment) return 'marked a fragment, but the scenario runs it as written: remove the marker, or give the scenario its stand-ins';
  if (!scenario && !block.fragment) return 'no scenario runs this block and it is not marked a fragment: add a scenario to tests/readme/test/readme-examples.test.ts, make it a complete example, or mark it "<!-- example: fragment, <why> -->"';
  return undefined;
}

function howOf(block: Block): string {
  const scenario = scenarioFor(block);
  if (scenario) return `${scenario.redis ? '[Redis] ' : ''}${scenario.how}`;
  return 'its imports are checked';
}

describe('the README examples', () => {
  it('finds every code block: each runs here, runs elsewhere or is a marked fragment', () => {
    const listing = BLOCKS.map((b) => `${b.id} ${b.lang}${b.fragment ? ` fragment (${b.fragment})` : ''}\n    ${problemOf(b) ? `PROBLEM: ${problemOf(b)}` : howOf(b)}`);
    console.log(`[readme examples] ${BLOCKS.length} code blocks in ${READMES.length} READMEs:\n${listing.join('\n')}`);
    const orphans = SCENARIOS.filter((s) => !BLOCKS.some((b) => b.file === s.file && b.n === s.n)).map((s) => `a scenario for ${s.file} #${s.n}, which has no such block`);
    expect([...MARKER_PROBLEMS, ...orphans, ...BLOCKS.flatMap((b) => (problemOf(b) ? [`${b.id}: ${problemOf(b)}`] : []))]).toEqual([]);
  });

  it('runs a ```ts block without its types', async () => {
    const block: Block = { id: 'a TypeScript block', file: 'none', n: 1, line: 1, lang: 'ts', code: "import type { Broadcaster } from '@bcast/core';\nconst n: number = 2;\nconst b: Broadcaster | undefined = undefined;\nconsole.log(n as number, b ?? null);\n", fragment: undefined, problem: undefined };
    const example = new Example('typescript', program(block));
    expect(await example.exit('after its last line')).toEqual({ code: 0, signal: null });
    expect(example.logs).toEqual([[2, null]]);
  });

  for (const block of BLOCKS) {
    const scenario = scenarioFor(block);
    const skip = scenario?.redis === true && redisWhy !== undefined;
    it.skipIf(skip)(`${block.id}: ${howOf(block)}`, async () => {
      const problem = problemOf(block);
      if (problem) throw new Error(`${block.id}: ${problem}`);
      if (scenario) return scenario.run(block);
      const example = new Example(`${block.file}#${block.n}-imports`, importsOnly(block));
      expect(await example.exit('after importing')).toEqual({ code: 0, signal: null });
      expect(example.logs).toEqual([['imports resolved']]);
    });
  }
});
