#!/usr/bin/env node
// `pnpm test:peers`: proves both ends of every third-party peer range the packages publish, with
// the packed tarballs installed by plain npm outside the workspace.
//
// The ranges come from the published packages' peerDependencies (one range per dependency: the
// packages that share a peer must declare the same one). For a range with one alternative the
// cells are its lowest and its newest published version (ws ">=8.21.0 <9": 8.21.0 and the newest
// 8.x); for "A || B" the newest of each alternative (express "^4.21.0 || ^5.0.0": the newest 4.x and
// the newest 5.x). `npm view NAME@RANGE version` resolves them at run time, and `npm view
// NAME@VERSION engines` is checked against Node 20 (a version that does not support it is reported,
// not failed). The cells go into as few temp projects as there are cells per dependency: project 1
// takes every dependency's first cell, project 2 the second... Each project installs every tarball
// and its versions with `npm install --strict-peer-deps` (an ERESOLVE fails the cells concerned),
// then runs one short smoke script per cell:
//   ws        @bcast/ws on a WebSocketServer, real ws clients: 401 without credentials, toAll,
//             toUser, a burst of 20 in order, every broadcast through the pre-built frame (ws's
//             internals _sender, _socket, Sender.frame; never ws.send), and a client that stops
//             reading closed with 1013 as a slow consumer (ws's bufferedAmount) while the others stay
//   express   @bcast/express on app.listen()'s server: /bcast/health and /bcast/stats, 401 and 404
//             upgrades, a client joins a room and gets toRoom's message
//   ioredis   two Broadcasters in this process, each with its own @bcast/redis backplane on the
//   redis     Redis at REDIS_URL (a unique channel): a broadcast on node A reaches a ws client on
//             node B and back (ioredis: node A from `url`, node B from your client; node-redis: clients)
//   socket.io @bcast/socket.io with socket.io-client: "unauthorized" without credentials, a
//             websocket client (the frame written straight to its TCP socket) and a polling client
//             (one pre-encoded packet through writeToEngine), a join and toRoom, a burst in order
// Servers listen on 127.0.0.1 port 0; every smoke stops itself after SMOKE_MS, the whole script
// after TOTAL_MS, and the temp folder is removed. Needs the packages built (`pnpm build`) and the
// npm registry: when npm cannot reach it, it says why and exits 0, except under CI
// (process.env.CI). Without a Redis the ioredis and redis smokes are skipped with the reason,
// except with BCAST_REQUIRE_REDIS=1 (as in .ci/run and packages/redis/test), where they fail.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { killChildren, pool, run } from './lib/process.mjs';
import { whyRedisUnreachable } from './lib/redis.mjs';
import { compareVersions, parseVersion, satisfies } from './lib/semver.mjs';
import { packAll, publishedPackages, root } from './lib/workspace.mjs';

const TOTAL_MS = 6 * 60_000;
const SMOKE_MS = 45_000;
const started = Date.now();
const left = () => Math.max(1_000, TOTAL_MS - (Date.now() - started));
const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const requireRedis = process.env.BCAST_REQUIRE_REDIS === '1';
/** npm installs and smokes at once; 2 on a 2-core machine. */
const CONCURRENCY = Math.max(2, Math.min(4, availableParallelism()));

/** The third-party peers the matrix proves, and the smoke script of each. */
const SUBJECTS = {
  ws: { smoke: 'ws' },
  express: { smoke: 'express' },
  ioredis: { smoke: 'redis', redis: true },
  redis: { smoke: 'redis', redis: true },
  'socket.io': { smoke: 'socket.io' },
};
/** Third-party peers left out of the matrix, and why. */
const NOT_IN_MATRIX = {
  '@opentelemetry/api': 'the API-only peer of @bcast/core (no-op without an SDK); test:consumer installs it',
};

const readJson = (path) => JSON.parse(readFileSync(path, 'utf8'));
const corePkg = readJson(join(root, 'packages/core/package.json'));
const compatPkg = readJson(join(root, 'packages/compat/package.json'));
/** Installed in every project besides the subjects, at the ranges the workspace develops against. */
const helpers = {
  'socket.io-client': compatPkg.devDependencies['socket.io-client'],
  '@opentelemetry/api': corePkg.devDependencies['@opentelemetry/api'],
};

/** Node versions a cell's engines.node must accept: our own engines floor and this Node. */
const floor = /(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(readJson(join(root, 'package.json')).engines.node);
const nodeVersions = [...new Set([`${floor[1]}.${floor[2] ?? 0}.${floor[3] ?? 0}`, process.versions.node])];

/** npm could not reach the registry (as opposed to refusing what it was asked). */
const NETWORK = /\b(ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|ERR_SOCKET_TIMEOUT|FETCH_ERROR)\b|network request|socket hang up/;

/** npm's network settings: fail within a minute when the registry does not answer (not after 5). */
const NPM_NETWORK = ['--fetch-retries=1', '--fetch-retry-mintimeout=2000', '--fetch-retry-maxtimeout=5000', '--fetch-timeout=30000'];

class Offline extends Error {}

// ---- the smoke scripts (written into each project) --------------------------------------------

const PRELUDE = `
import { once } from 'node:events';
const TIMEOUT_MS = Number(process.env.SMOKE_TIMEOUT_MS || 30000);
const logs = [];
const logger = { warn: (...a) => logs.push('warn: ' + a.join(' ')), error: (...a) => logs.push('error: ' + a.join(' ')), info: () => {} };
let at = 'start';
const step = (what) => { at = what; };
const fail = (error) => {
  console.error('failed at "' + at + '": ' + (error instanceof Error ? error.stack : String(error)));
  if (logs.length > 0) console.error(logs.slice(-20).join('\\n'));
  process.exit(1);
};
setTimeout(() => fail(new Error('time limit of ' + TIMEOUT_MS + ' ms')), TIMEOUT_MS).unref();
process.on('unhandledRejection', fail);
process.on('uncaughtException', fail);
const check = (ok, what) => { if (!ok) throw new Error(what); };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
async function until(what, fn, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    const value = fn();
    if (value) return value;
    if (Date.now() > end) throw new Error('timed out after ' + ms + ' ms waiting for ' + what);
    await sleep(10);
  }
}
/** The messages a client received, and a wait for one. */
function inbox(subscribe) {
  const list = [];
  subscribe((message) => list.push(message));
  return { list, wait: (what, match, ms) => until(what, () => list.find(match), ms), count: (match) => list.filter(match).length };
}
const wsInbox = (ws) => inbox((push) => ws.on('message', (data, isBinary) => push(isBinary ? data : JSON.parse(String(data)))));
const opened = (ws) => new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
/** How the server answered an upgrade it refused: ws's "Unexpected server response: 401". */
const refusal = (ws) => new Promise((resolve) => { ws.once('open', () => resolve('open')); ws.once('error', (error) => resolve(error.message)); });
const inOrder = (box, type, n) => {
  const order = box.list.filter((m) => m.type === type).map((m) => m.i);
  check(order.length === n && order.every((value, i) => value === i), type + ' out of order or incomplete: ' + order.join(','));
};
const done = (main) => main().then((summary) => { console.log('RESULT ' + summary); process.exit(0); }, fail);
`;

const SMOKES = {
  ws: `
import { Broadcaster } from '@bcast/core';
import { attachToServer, recommendedServerOptions } from '@bcast/ws';
import { WebSocket, WebSocketServer } from 'ws';

done(async () => {
  const closes = [];
  const broadcaster = new Broadcaster({
    pingIntervalMs: 0,
    maxBufferedBytes: 256 * 1024,
    logger,
    onDisconnect: (entry, code, reason) => closes.push({ userId: entry.userId, code, reason }),
  });
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, ...recommendedServerOptions });
  await once(wss, 'listening');
  const adapter = attachToServer(broadcaster, wss, { authenticate: (request) => new URL(request.url, 'http://localhost').searchParams.get('user') || false });
  const serverSockets = [];
  wss.on('connection', (ws) => serverSockets.push(ws));
  const url = (user) => 'ws://127.0.0.1:' + wss.address().port + '/' + (user ? '?user=' + user : '');

  step('an upgrade without credentials is refused with 401');
  const refused = await refusal(new WebSocket(url()));
  check(/\\b401\\b/.test(refused), 'expected a 401, got: ' + refused);

  step('three clients connect');
  const clients = ['alice', 'bob', 'carol'].map((user) => new WebSocket(url(user)));
  const [alice, bob, carol] = clients;
  const boxes = clients.map(wsInbox);
  await Promise.all(clients.map(opened));
  await until('3 registered connections', () => broadcaster.getStats().connections === 3 && serverSockets.length === 3);
  // Broadcasts must leave through the pre-built frame (ws internals), never through ws.send.
  let wsSends = 0;
  for (const socket of serverSockets) {
    const send = socket.send;
    socket.send = function (...args) {
      wsSends += 1;
      return send.apply(this, args);
    };
  }

  step('toAll reaches every client');
  const hello = await broadcaster.toAll({ type: 'hello' });
  check(hello.delivered === 3, 'toAll delivered ' + hello.delivered + ' of 3');
  await Promise.all(boxes.map((box) => box.wait('hello', (m) => m.type === 'hello')));

  step('toUser reaches that user only');
  await broadcaster.toUser('bob', { type: 'for-bob' });
  await boxes[1].wait('for-bob', (m) => m.type === 'for-bob');

  step('a burst of 20 broadcasts in one tick arrives complete and in order');
  await Promise.all(Array.from({ length: 20 }, (_, i) => broadcaster.toAll({ type: 'burst', i })));
  for (const box of boxes) await box.wait('20 burst messages', () => box.count((m) => m.type === 'burst') === 20);
  for (const box of boxes) inOrder(box, 'burst', 20);
  check(boxes[0].count((m) => m.type === 'for-bob') === 0 && boxes[2].count((m) => m.type === 'for-bob') === 0, 'toUser reached another user');
  check(wsSends === 0, wsSends + ' broadcasts went through ws.send: the pre-built frame path (ws internals _sender, _socket, Sender.frame) was not taken');

  step('a client that stops reading is closed as a slow consumer (1013)');
  if (typeof carol.pause === 'function') carol.pause();
  else carol._socket.pause();
  const pad = 'x'.repeat(60 * 1024);
  const carolClosed = () => closes.find((c) => c.userId === 'carol');
  const floodUntil = Date.now() + 20000;
  let flooded = 0;
  // Bounded in time and bytes (64 MiB: far more than loopback's socket buffers hold).
  while (!carolClosed() && Date.now() < floodUntil && flooded < 64 * 1048576) {
    await broadcaster.toAll({ type: 'flood', pad });
    flooded += pad.length;
    await new Promise((resolve) => setImmediate(resolve));
  }
  const closed = carolClosed();
  const mib = (flooded / 1048576).toFixed(1);
  check(closed !== undefined, 'carol was not closed after ' + mib + ' MiB');
  check(closed.code === 1013, 'carol was closed with ' + closed.code + ' ' + closed.reason + ', not 1013');
  check(closes.length === 1, 'a client that reads was closed too: ' + JSON.stringify(closes));

  step('the clients that read got the whole flood and stay open');
  await broadcaster.toAll({ type: 'bye' });
  await Promise.all([boxes[0], boxes[1]].map((box) => box.wait('bye after the flood', (m) => m.type === 'bye', 20000)));
  check(alice.readyState === WebSocket.OPEN && bob.readyState === WebSocket.OPEN, 'alice or bob is no longer open');

  step('dispose');
  carol.terminate();
  await adapter.dispose();
  await broadcaster.dispose();
  await new Promise((resolve) => wss.close(resolve));
  return '401, toAll, toUser, burst of 20 in order, all through the pre-built frame (0 ws.send); slow consumer closed 1013 after ' + mib + ' MiB, the others kept up';
});
`,

  express: `
import { Broadcaster } from '@bcast/core';
import { attachUpgrade, createBcastRouter } from '@bcast/express';
import express from 'express';
import { WebSocket } from 'ws';

done(async () => {
  const broadcaster = new Broadcaster({ pingIntervalMs: 0, logger, allowClientJoins: true });
  const app = express();
  app.use('/bcast', createBcastRouter(broadcaster));
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const upgrades = attachUpgrade(broadcaster, server, { path: '/ws', authenticate: (request) => request.headers['x-user'] || false });
  const base = '127.0.0.1:' + server.address().port;

  step('GET /bcast/health and /bcast/stats');
  const health = await fetch('http://' + base + '/bcast/health');
  const body = await health.json();
  check(health.status === 200 && ['healthy', 'degraded'].includes(body.status), '/bcast/health answered ' + health.status + ' ' + JSON.stringify(body).slice(0, 200));
  const stats = await fetch('http://' + base + '/bcast/stats');
  check(stats.status === 200 && typeof (await stats.json()).connections === 'number', '/bcast/stats answered ' + stats.status);

  step('an upgrade without credentials gets 401, one for another path 404');
  const refused = await refusal(new WebSocket('ws://' + base + '/ws'));
  check(/\\b401\\b/.test(refused), 'expected a 401, got: ' + refused);
  const elsewhere = await refusal(new WebSocket('ws://' + base + '/other', { headers: { 'x-user': 'alice' } }));
  check(/\\b404\\b/.test(elsewhere), 'expected a 404, got: ' + elsewhere);

  step('a client connects on /ws, joins a room and receives toRoom');
  const client = new WebSocket('ws://' + base + '/ws', { headers: { 'x-user': 'alice' } });
  const box = wsInbox(client);
  await opened(client);
  client.send(JSON.stringify({ type: 'join', room: 'news', requestId: 1 }));
  await box.wait('the join reply', (m) => m.type === 'ok' && m.op === 'join' && m.requestId === 1);
  const result = await broadcaster.toRoom('news', { type: 'news' });
  check(result.delivered === 1, 'toRoom delivered ' + result.delivered + ' of 1');
  await box.wait('the room message', (m) => m.type === 'news');
  await broadcaster.toUser('alice', { type: 'for-alice' });
  await box.wait('the user message', (m) => m.type === 'for-alice');

  step('dispose');
  await upgrades.dispose();
  await broadcaster.dispose();
  server.closeAllConnections?.();
  await new Promise((resolve) => server.close(resolve));
  return '/bcast/health 200, /bcast/stats, 401 and 404 upgrades, join + toRoom + toUser over /ws';
});
`,

  redis: `
import { randomUUID } from 'node:crypto';
import { Broadcaster } from '@bcast/core';
import { createRedisBackplane } from '@bcast/redis';
import { attachToServer } from '@bcast/ws';
import { WebSocket, WebSocketServer } from 'ws';

const LIBRARY = process.env.SMOKE_SUBJECT; // ioredis | redis
const url = process.env.REDIS_URL;
const channel = 'bcast-peer-matrix:' + LIBRARY + ':' + randomUUID();
const quits = [];

/** A client of the library under test, as the package README shows it. */
async function client() {
  if (LIBRARY === 'ioredis') {
    const { Redis } = await import('ioredis');
    const c = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 0 });
    c.on('error', (error) => logs.push('ioredis: ' + error.message));
    quits.push(() => c.quit());
    return c;
  }
  const { createClient } = await import('redis');
  const c = createClient({ url, disableOfflineQueue: true });
  c.on('error', (error) => logs.push('redis: ' + error.message));
  await c.connect();
  quits.push(() => (typeof c.close === 'function' ? c.close() : c.quit()));
  return c;
}

/** One node: a Broadcaster with its own backplane, a WebSocketServer and one ws client. */
async function node(name, options) {
  const backplane = createRedisBackplane({ channel, logger, probeIntervalMs: 0, ...options });
  const broadcaster = new Broadcaster({ backplane, pingIntervalMs: 0, logger });
  await broadcaster.ready();
  check((await backplane.ready()) === true, name + ': the backplane is not ready: ' + JSON.stringify(backplane.health().reasons));
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(wss, 'listening');
  const adapter = attachToServer(broadcaster, wss);
  const ws = new WebSocket('ws://127.0.0.1:' + wss.address().port + '/');
  const box = wsInbox(ws);
  await opened(ws);
  await until(name + ': its client registered', () => broadcaster.getStats().connections === 1);
  return { name, backplane, broadcaster, wss, adapter, ws, box };
}

done(async () => {
  step('node A and node B subscribe');
  const a = await node('A', LIBRARY === 'ioredis' ? { url } : { client: await client() });
  const b = await node('B', { client: await client() });
  const kind = LIBRARY === 'ioredis' ? 'ioredis' : 'node-redis';
  for (const n of [a, b]) check(n.backplane.health().details.client === kind, n.name + ' runs on ' + n.backplane.health().details.client + ', not ' + kind);

  step('a broadcast on node A reaches the client on node B');
  const fromA = await a.broadcaster.toAll({ type: 'from-a' });
  check(fromA.backplane === 'published', 'node A: backplane ' + fromA.backplane + ' ' + (fromA.backplaneError ?? ''));
  await b.box.wait('from-a on node B', (m) => m.type === 'from-a');
  await a.box.wait('from-a on node A', (m) => m.type === 'from-a');

  step('a broadcast on node B reaches the client on node A');
  const fromB = await b.broadcaster.toAll({ type: 'from-b' });
  check(fromB.backplane === 'published', 'node B: backplane ' + fromB.backplane + ' ' + (fromB.backplaneError ?? ''));
  await a.box.wait('from-b on node A', (m) => m.type === 'from-b');
  for (const n of [a, b]) {
    const health = n.backplane.health();
    check(health.status === 'healthy', n.name + ' backplane ' + health.status + ': ' + health.reasons.join('; '));
  }

  step('dispose');
  for (const n of [a, b]) {
    n.ws.close();
    await n.adapter.dispose();
    await n.broadcaster.dispose({ closeBackplane: true });
    await new Promise((resolve) => n.wss.close(resolve));
  }
  await Promise.all(quits.map((quit) => quit()));
  return 'A → B and B → A over ' + kind + ' (' + (LIBRARY === 'ioredis' ? 'node A from url, node B from your client' : 'both from your clients') + '), both backplanes healthy';
});
`,

  'socket.io': `
import { createServer } from 'node:http';
import { Broadcaster } from '@bcast/core';
import { attachToServer } from '@bcast/socket.io';
import { Server } from 'socket.io';
import { io as connect } from 'socket.io-client';

done(async () => {
  const broadcaster = new Broadcaster({ pingIntervalMs: 0, logger, allowClientJoins: true });
  const httpServer = createServer();
  const io = new Server(httpServer, { maxHttpBufferSize: 65536 });
  const adapter = attachToServer(broadcaster, io, { authenticate: (handshake) => (typeof handshake.auth.user === 'string' ? handshake.auth.user : false) });
  httpServer.listen(0, '127.0.0.1');
  await once(httpServer, 'listening');
  const url = 'http://127.0.0.1:' + httpServer.address().port;
  const sockets = [];
  const client = (options) => {
    const socket = connect(url, { reconnection: false, forceNew: true, ...options });
    sockets.push(socket);
    return socket;
  };
  const connected = (socket) => new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('connect_error', reject); });

  step('a handshake without credentials gets connect_error "unauthorized"');
  const anonymous = client({ transports: ['websocket'] });
  const refused = await new Promise((resolve) => { anonymous.once('connect', () => resolve('connected')); anonymous.once('connect_error', (error) => resolve(error.message)); });
  check(refused === 'unauthorized', 'expected connect_error "unauthorized", got: ' + refused);

  step('a websocket client and a polling client connect');
  const alice = client({ transports: ['websocket'], auth: { user: 'alice' } });
  const bob = client({ transports: ['polling'], auth: { user: 'bob' } });
  const [aliceBox, bobBox] = [alice, bob].map((socket) => inbox((push) => socket.on('message', push)));
  await Promise.all([alice, bob].map(connected));
  await until('2 registered connections', () => broadcaster.getStats().connections === 2);
  // Which path a broadcast takes: straight to the TCP socket (neither counter moves), one
  // pre-encoded packet through engine.io (writeToEngine), or socket.emit.
  const paths = {};
  for (const socket of io.of('/').sockets.values()) {
    const counts = (paths[socket.handshake.auth.user] = { engine: 0, emit: 0 });
    const writeToEngine = socket.client.writeToEngine;
    if (typeof writeToEngine === 'function') {
      socket.client.writeToEngine = function (...args) {
        counts.engine += 1;
        return writeToEngine.apply(this, args);
      };
    }
    const emit = socket.emit;
    socket.emit = function (...args) {
      if (args[0] === 'message') counts.emit += 1;
      return emit.apply(this, args);
    };
  }

  step('toAll reaches both clients');
  const hello = await broadcaster.toAll({ type: 'hello' });
  check(hello.delivered === 2, 'toAll delivered ' + hello.delivered + ' of 2');
  await aliceBox.wait('hello over websocket', (m) => m.type === 'hello');
  await bobBox.wait('hello over polling', (m) => m.type === 'hello');
  check(paths.alice.engine === 0 && paths.alice.emit === 0, 'websocket: the broadcast did not go straight to the TCP socket ' + JSON.stringify(paths.alice));
  check(paths.bob.engine >= 1 && paths.bob.emit === 0, 'polling: the broadcast was not one pre-encoded packet through writeToEngine ' + JSON.stringify(paths.bob));

  step('a client joins a room through the socket.io event and receives toRoom');
  alice.emit('message', { type: 'join', room: 'news', requestId: 1 });
  await aliceBox.wait('the join reply', (m) => m.type === 'ok' && m.op === 'join' && m.requestId === 1);
  const news = await broadcaster.toRoom('news', { type: 'news' });
  check(news.delivered === 1, 'toRoom delivered ' + news.delivered + ' of 1');
  await aliceBox.wait('the room message', (m) => m.type === 'news');

  step('a burst of 20 broadcasts arrives complete and in order on both transports');
  await Promise.all(Array.from({ length: 20 }, (_, i) => broadcaster.toAll({ type: 'burst', i })));
  for (const box of [aliceBox, bobBox]) await box.wait('20 burst messages', () => box.count((m) => m.type === 'burst') === 20);
  for (const box of [aliceBox, bobBox]) inOrder(box, 'burst', 20);

  step('dispose');
  for (const socket of sockets) socket.disconnect();
  await adapter.dispose();
  await broadcaster.dispose();
  await io.close();
  return '"unauthorized" without credentials; websocket: frame straight to the TCP socket; polling: one pre-encoded packet; join + toRoom; burst of 20 in order on both';
});
`,
};

// ---- helpers --------------------------------------------------------------------------------

/** `npm view <spec> <field> --json`, parsed (undefined when npm prints nothing). */
async function npmView(spec, field, cwd) {
  let stdout;
  try {
    stdout = await run(`npm view ${spec} ${field}`, 'npm', ['view', spec, field, '--json', ...NPM_NETWORK], cwd, { timeout: Math.min(left(), 75_000), quiet: true });
  } catch (error) {
    if (NETWORK.test(error.message) || /^\S.* failed \(time limit\):/.test(error.message)) throw new Offline(error.message);
    throw error;
  }
  return stdout.trim() === '' ? undefined : JSON.parse(stdout);
}

/** The third-party peer ranges of the published packages: Map name → { range, declaredBy }; throws on drift. */
function peerRanges() {
  const ranges = new Map();
  const problems = [];
  for (const { name, pkg } of publishedPackages()) {
    for (const [dep, range] of Object.entries(pkg.peerDependencies ?? {})) {
      if (dep.startsWith('@bcast/') || dep in NOT_IN_MATRIX) continue;
      if (!(dep in SUBJECTS)) {
        problems.push(`${name} declares the peer ${dep}@"${range}", which the matrix does not cover: add a smoke for it to scripts/peer-matrix.mjs`);
        continue;
      }
      const seen = ranges.get(dep);
      if (!seen) ranges.set(dep, { range, declaredBy: [name] });
      else if (seen.range === range) seen.declaredBy.push(name);
      else problems.push(`${dep}: ${seen.declaredBy.join(', ')} declare "${seen.range}" but ${name} declares "${range}" (the matrix proves one range per dependency)`);
    }
  }
  for (const dep of Object.keys(SUBJECTS)) if (!ranges.has(dep)) problems.push(`no published package declares ${dep} as a peer any more: remove it from SUBJECTS`);
  if (problems.length > 0) throw new Error(problems.join('\n'));
  return new Map(Object.keys(SUBJECTS).map((dep) => [dep, ranges.get(dep)]));
}

/** The cells of one dependency: lowest and newest of a single range, else the newest of each alternative. */
async function cellsOf(dep, range, cwd) {
  const alternatives = range.split('||').map((a) => a.trim());
  const cells = [];
  for (const alternative of alternatives) {
    const found = await npmView(`${dep}@${alternative}`, 'version', cwd);
    const versions = [found ?? []].flat().filter((v) => parseVersion(v) && !v.includes('-')).sort(compareVersions);
    if (versions.length === 0) throw new Error(`no published version of ${dep} matches "${alternative}" (from "${range}")`);
    const newest = versions[versions.length - 1];
    if (alternatives.length === 1 && versions[0] !== newest) cells.push({ dep, version: versions[0], why: `lowest of "${alternative}"` });
    cells.push({ dep, version: newest, why: `newest of "${alternative}"` });
  }
  return cells;
}

/** Whether a version's engines.node accepts Node 20 (our floor and this Node): { text, ok }. */
async function enginesOf(cell, cwd) {
  const engines = await npmView(`${cell.dep}@${cell.version}`, 'engines', cwd);
  const range = engines?.node;
  if (range === undefined) return { text: 'no engines.node (any Node)', ok: true };
  const verdicts = nodeVersions.map((v) => [v, satisfies(v, range)]);
  const refused = verdicts.filter(([, ok]) => ok === false).map(([v]) => v);
  const unknown = verdicts.some(([, ok]) => ok === undefined);
  if (refused.length > 0) return { text: `engines.node "${range}": DOES NOT SUPPORT Node ${refused.join(', ')}`, ok: false };
  if (unknown) return { text: `engines.node "${range}": could not evaluate it, check by hand`, ok: false };
  return { text: `engines.node "${range}": ok on Node ${nodeVersions.join(' and ')}`, ok: true };
}

/** The first lines of npm's ERESOLVE report that say what conflicts. */
function eresolveSummary(message) {
  const found = /Found: (\S+)/.exec(message)?.[1];
  const peer = /Could not resolve dependency:\s*(?:npm (?:error|ERR!)\s*)?(peer (?:\S+@"[^"]*"|\S+) from \S+)/.exec(message)?.[1];
  return `npm ERESOLVE: ${peer ?? 'a peer range refused'}${found ? `, found ${found}` : ''}`;
}

// ---- the run --------------------------------------------------------------------------------

const work = mkdtempSync(join(tmpdir(), 'bcast-peer-matrix-'));
const cleanup = () => rmSync(work, { recursive: true, force: true });
const stop = (code, why) => {
  if (why) console.error(`\npeer-matrix: ${why}`);
  killChildren();
  cleanup();
  process.exit(code);
};
process.on('SIGINT', () => stop(130));
process.on('SIGTERM', () => stop(143));
setTimeout(() => stop(1, `time limit: not done after ${TOTAL_MS / 60_000} min; FAILED`), TOTAL_MS).unref();

/** Every cell: { dep, version, why, engines, project, status: 'ok' | 'FAIL' | 'skip', detail }. */
let cells = [];
const problems = [];

try {
  console.log('peer-matrix: packing');
  const packs = join(work, 'packs');
  mkdirSync(packs);
  const tarballs = packAll(packs);

  const ranges = peerRanges();
  console.log('peer-matrix: resolving the cells with npm view');
  try {
    // The first dependency alone: when the registry does not answer, that costs one time limit, not one per dependency.
    const [first, ...rest] = [...ranges];
    cells = await cellsOf(first[0], first[1].range, work);
    const perDep = await pool(CONCURRENCY, rest, async ([dep, { range }]) => cellsOf(dep, range, work));
    for (const r of perDep) if (!r.ok) throw r.error;
    cells.push(...perDep.flatMap((r) => r.value));
    const engines = await pool(CONCURRENCY, cells, (cell) => enginesOf(cell, work));
    for (const [i, r] of engines.entries()) {
      if (!r.ok) throw r.error;
      cells[i].engines = r.value;
    }
  } catch (error) {
    if (!(error instanceof Offline)) throw error;
    const why = `npm cannot reach the registry:\n${error.message}`;
    if (process.env.CI) throw new Error(why);
    console.warn(`peer-matrix: ${why}\npeer-matrix: SKIPPED (set CI=1 to make this a failure)`);
    stop(0);
  }
  for (const [dep, { range, declaredBy }] of ranges) {
    const own = cells.filter((c) => c.dep === dep);
    console.log(`  ${dep} "${range}" (${declaredBy.join(', ')}): ${own.map((c) => `${c.version} (${c.why.split(' ')[0]})`).join(', ')}`);
    for (const cell of own) console.log(`      ${dep}@${cell.version}: ${cell.engines.text}`);
  }

  // Project k installs every dependency's k-th cell (its last one when it has fewer).
  const byDep = new Map();
  for (const cell of cells) byDep.set(cell.dep, [...(byDep.get(cell.dep) ?? []), cell]);
  const projectCount = Math.max(...[...byDep.values()].map((list) => list.length));
  const projects = Array.from({ length: projectCount }, (_, k) => {
    const versions = Object.fromEntries([...byDep].map(([dep, list]) => [dep, list[Math.min(k, list.length - 1)].version]));
    const own = [...byDep.values()].map((list) => list[k]).filter(Boolean);
    const project = { name: `project ${k + 1}`, dir: join(work, `project-${k + 1}`), versions, cells: own };
    for (const cell of own) cell.project = project.name;
    return project;
  });
  console.log(`peer-matrix: ${projects.length} projects`);
  for (const p of projects) console.log(`  ${p.name}: ${Object.entries(p.versions).map(([d, v]) => `${d}@${v}`).join(' ')}`);

  const redisWhy = await whyRedisUnreachable(REDIS_URL);
  if (redisWhy !== undefined) {
    const what = `the ioredis and redis smokes: Redis unreachable (${redisWhy})`;
    if (requireRedis) problems.push(`BCAST_REQUIRE_REDIS=1 but ${what}`);
    else console.warn(`peer-matrix: skipping ${what}; set REDIS_URL, or BCAST_REQUIRE_REDIS=1 to fail instead`);
  }

  console.log(`peer-matrix: npm install --strict-peer-deps and smoke runs (at most ${CONCURRENCY} at once)`);
  const offline = [];
  const settled = await pool(CONCURRENCY, projects, async (project) => {
    mkdirSync(project.dir);
    writeFileSync(join(project.dir, 'package.json'), JSON.stringify({ name: `bcast-peer-matrix-${project.name.replace(' ', '-')}`, private: true, version: '0.0.0', type: 'module' }, null, 2));
    const specs = [...tarballs.map((t) => t.tarball), ...Object.entries(project.versions).map(([d, v]) => `${d}@${v}`), ...Object.entries(helpers).map(([d, r]) => `${d}@${r}`)];
    const args = ['install', '--no-audit', '--no-fund', '--ignore-scripts', '--prefer-offline', '--no-package-lock', '--strict-peer-deps', '--legacy-peer-deps=false', ...NPM_NETWORK, ...specs];
    try {
      await run(`${project.name}: npm install`, 'npm', args, project.dir, { timeout: Math.min(left(), 150_000) });
    } catch (error) {
      const message = /** @type {Error} */ (error).message;
      if (NETWORK.test(message) && !/ERESOLVE/.test(message)) {
        offline.push(message);
        for (const cell of project.cells) Object.assign(cell, { status: 'skip', detail: 'npm could not reach the registry' });
        return;
      }
      console.error(`  FAIL ${message.split('\n').slice(0, 40).join('\n       ')}`);
      const reason = /ERESOLVE/.test(message) ? eresolveSummary(message) : `npm install failed: ${message.split('\n')[1] ?? ''}`;
      for (const cell of project.cells) {
        const concerned = new RegExp(`\\bpeer ${cell.dep.replace('.', '\\.')}@|Found: ${cell.dep.replace('.', '\\.')}@`).test(message);
        Object.assign(cell, { status: 'FAIL', detail: concerned ? reason : `not run: ${project.name}'s npm install failed (${reason})` });
      }
      return;
    }

    // npm installed exactly the cell's versions, one copy each (no nested copy under @bcast/*).
    const wrong = [];
    for (const [dep, version] of Object.entries(project.versions)) {
      const manifest = join(project.dir, 'node_modules', dep, 'package.json');
      const got = existsSync(manifest) ? readJson(manifest).version : 'nothing';
      if (got !== version) wrong.push(`${dep}: npm installed ${got}, not ${version}`);
      for (const pkg of readdirSync(join(project.dir, 'node_modules/@bcast'))) {
        if (existsSync(join(project.dir, 'node_modules/@bcast', pkg, 'node_modules', dep))) wrong.push(`@bcast/${pkg} got its own copy of ${dep}`);
      }
    }
    if (wrong.length > 0) {
      for (const cell of project.cells) Object.assign(cell, { status: 'FAIL', detail: wrong.join('; ') });
      return;
    }

    for (const [kind, body] of Object.entries(SMOKES)) writeFileSync(join(project.dir, `smoke-${kind}.mjs`), PRELUDE + body);
    for (const cell of project.cells) {
      const label = `${cell.dep}@${cell.version} (${project.name})`;
      if (SUBJECTS[cell.dep].redis && redisWhy !== undefined) {
        Object.assign(cell, requireRedis ? { status: 'FAIL', detail: `Redis unreachable (${redisWhy}) and BCAST_REQUIRE_REDIS=1` } : { status: 'skip', detail: `Redis unreachable (${redisWhy})` });
        console.log(`  ${cell.status === 'skip' ? 'skip' : 'FAIL'} ${label}: ${cell.detail}`);
        continue;
      }
      const t0 = Date.now();
      try {
        const stdout = await run(label, process.execPath, [`smoke-${SUBJECTS[cell.dep].smoke}.mjs`], project.dir, {
          timeout: Math.min(left(), SMOKE_MS + 5_000),
          env: { SMOKE_SUBJECT: cell.dep, SMOKE_TIMEOUT_MS: String(SMOKE_MS), REDIS_URL },
          quiet: true,
        });
        const summary = /^RESULT (.*)$/m.exec(stdout)?.[1] ?? '(no summary)';
        Object.assign(cell, { status: 'ok', detail: summary, ms: Date.now() - t0 });
        console.log(`  ok  ${label} (${Date.now() - t0} ms): ${summary}`);
      } catch (error) {
        const message = /** @type {Error} */ (error).message;
        Object.assign(cell, { status: 'FAIL', detail: message.split('\n').slice(1).find((l) => l.startsWith('failed at')) ?? message.split('\n')[1] ?? message });
        console.error(`  FAIL ${message.split('\n').join('\n       ')}`);
      }
    }
  });
  for (const r of settled) if (!r.ok) problems.push(r.error instanceof Error ? r.error.stack : String(r.error));
  if (offline.length > 0) {
    const why = `npm could not install (no registry?):\n${offline[0]}`;
    if (process.env.CI) problems.push(why);
    else console.warn(`peer-matrix: ${why}\npeer-matrix: those projects are SKIPPED (set CI=1 to make this a failure)`);
  }
} catch (error) {
  problems.push(/** @type {Error} */ (error).message);
}

if (cells.length > 0) {
  console.log('peer-matrix: cells');
  const width = Math.max(...cells.map((c) => `${c.dep}@${c.version}`.length));
  for (const cell of cells) {
    const status = cell.status ?? 'FAIL';
    const engines = cell.engines && !cell.engines.ok ? `  [${cell.engines.text}]` : '';
    console.log(`  ${status.padEnd(4)}  ${`${cell.dep}@${cell.version}`.padEnd(width)}  ${cell.why.padEnd(26)}  ${cell.project ?? ''}  ${cell.detail ?? 'not run'}${engines}`);
  }
}
const failed = cells.filter((c) => (c.status ?? 'FAIL') === 'FAIL');
const skipped = cells.filter((c) => c.status === 'skip');
const warnings = cells.filter((c) => c.engines && !c.engines.ok);
for (const problem of problems) console.error(`\npeer-matrix: ${problem}`);
const verdict = problems.length > 0 || failed.length > 0 ? 'FAILED' : 'ok';
const counts = [
  `${cells.length - failed.length - skipped.length} of ${cells.length} cells passed`,
  failed.length > 0 && `${failed.length} failed`,
  skipped.length > 0 && `${skipped.length} skipped`,
  warnings.length > 0 && `${warnings.length} without Node 20 in engines.node`,
].filter(Boolean);
console.log(`peer-matrix: ${verdict}${cells.length > 0 ? `: ${counts.join(', ')}` : ''} (${seconds(Date.now() - started)})`);
stop(verdict === 'ok' ? 0 : 1);
