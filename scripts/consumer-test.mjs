#!/usr/bin/env node
// `pnpm test:consumer` (part of `pnpm test`): the packages as an app gets them. Every published
// package is `pnpm pack`ed into a temp folder outside the workspace and installed with plain npm
// into a temp project, with ws, socket.io-client, @opentelemetry/api, typescript and @types/*. Then:
//  (a) an ES module starts a ws server with @bcast/ws, drives it through @bcast/compat's
//      BroadcastManager and checks that a ws client receives broadcastToAll's message;
//  (b) the same from a .cjs file through require() (require(esm), Node >= 20.19);
//  (c) tsc --noEmit on a file importing every entry, with module/moduleResolution nodenext and
//      with module esnext + moduleResolution bundler.
// Needs the packages built (`pnpm build`) and the npm registry. When npm cannot install (no
// network), it says why and exits 0, except under CI (process.env.CI), where that is a failure.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { all, run as runWithLimit } from './lib/process.mjs';
import { packAll, root } from './lib/workspace.mjs';

const TOTAL_MS = 6 * 60_000;
const started = Date.now();
const left = () => Math.max(1_000, TOTAL_MS - (Date.now() - started));

const readJson = (path) => JSON.parse(readFileSync(join(root, path), 'utf8'));
const rootPkg = readJson('package.json');
const wsPkg = readJson('packages/ws/package.json');
const corePkg = readJson('packages/core/package.json');
const compatPkg = readJson('packages/compat/package.json');

/** The third-party packages the temp project installs, at the ranges the workspace develops against. */
const thirdParty = {
  ws: wsPkg.devDependencies.ws,
  'socket.io-client': compatPkg.devDependencies['socket.io-client'],
  '@opentelemetry/api': corePkg.devDependencies['@opentelemetry/api'],
  typescript: rootPkg.devDependencies.typescript,
  '@types/ws': wsPkg.devDependencies['@types/ws'],
  '@types/node': rootPkg.devDependencies['@types/node'],
  '@types/express': compatPkg.devDependencies['@types/express'],
};

/** A labelled run, bounded by what is left of TOTAL_MS. */
const run = (label, command, args, cwd) => runWithLimit(label, command, args, cwd, { timeout: left() });

const ESM = `
import { Broadcaster } from '@bcast/core';
import { attachToServer } from '@bcast/ws';
import { BroadcastManager, ConnectionManager } from '@bcast/compat';
import { WebSocket, WebSocketServer } from 'ws';
// Every other entry loads too.
await import('@bcast/core/adapter');
await import('@bcast/core/backplane');
await import('@bcast/socket.io');
await import('@bcast/express');
await import('@bcast/redis');
__BODY__
`;

const CJS = `
const { Broadcaster } = require('@bcast/core');
const { attachToServer } = require('@bcast/ws');
const { BroadcastManager, ConnectionManager } = require('@bcast/compat');
const { WebSocket, WebSocketServer } = require('ws');
for (const entry of ['@bcast/core/adapter', '@bcast/core/backplane', '@bcast/socket.io', '@bcast/express', '@bcast/redis']) require(entry);
(async () => {
__BODY__
})().catch((error) => { console.error(error); process.exit(1); });
`;

// Shared by (a) and (b): a client connects; broadcastToAll is retried until the adapter has
// registered the connection (bounded), and the client must receive { type: 'hello' }.
const BODY = `
const broadcaster = new Broadcaster();
const wss = new WebSocketServer({ port: 0 });
attachToServer(broadcaster, wss);
const manager = new BroadcastManager(new ConnectionManager({ broadcaster }));
await new Promise((resolve) => wss.once('listening', resolve));
const client = new WebSocket('ws://127.0.0.1:' + wss.address().port);
let received = null;
client.on('message', (data) => {
  const message = JSON.parse(String(data));
  if (message.type === 'hello') received = message;
});
await new Promise((resolve, reject) => { client.once('open', resolve); client.once('error', reject); });
const deadline = Date.now() + 10_000;
while (!received && Date.now() < deadline) {
  await manager.broadcastToAll({ type: 'hello' });
  await new Promise((resolve) => setTimeout(resolve, 50));
}
client.terminate();
await manager.dispose?.();
await broadcaster.dispose?.();
await new Promise((resolve) => wss.close(resolve));
if (!received) { console.error('the client did not receive the broadcast'); process.exit(1); }
console.log('received', JSON.stringify(received));
process.exit(0);
`;

const TS = `
import * as core from '@bcast/core';
import * as adapter from '@bcast/core/adapter';
import * as backplane from '@bcast/core/backplane';
import * as ws from '@bcast/ws';
import * as socketio from '@bcast/socket.io';
import * as express from '@bcast/express';
import * as compat from '@bcast/compat';
import * as redis from '@bcast/redis';
import { WebSocketServer } from 'ws';

const broadcaster: core.Broadcaster = new core.Broadcaster();
const adapterRef: ws.WsAdapter = ws.attachToServer(broadcaster, new WebSocketServer({ noServer: true }));
const manager: compat.BroadcastManager = new compat.BroadcastManager(new compat.ConnectionManager({ broadcaster }));
const result: Promise<compat.BroadcastResult> = manager.broadcastToAll({ type: 'hello' });
export const used = [adapter.encodeMessage, backplane.ENVELOPE_VERSION, socketio.attachToServer, express.attachUpgrade, express.createBcastRouter, redis.createRedisBackplane, adapterRef, result] as const;
`;

const TSCONFIG = (module, moduleResolution) =>
  JSON.stringify(
    {
      compilerOptions: { target: 'ES2022', module, moduleResolution, strict: true, noEmit: true, skipLibCheck: false, types: ['node'], lib: ['ES2023'] },
      files: ['index.ts'],
    },
    null,
    2,
  );

const work = mkdtempSync(join(tmpdir(), 'bcast-consumer-'));
const cleanup = () => rmSync(work, { recursive: true, force: true });
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});

let failed = false;
try {
  console.log('consumer-test: packing');
  const packs = join(work, 'packs');
  mkdirSync(packs);
  const tarballs = packAll(packs);

  const app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'bcast-consumer', private: true, version: '0.0.0', type: 'module' }, null, 2));
  console.log('consumer-test: npm install');
  const specs = [...tarballs.map((t) => t.tarball), ...Object.entries(thirdParty).map(([name, range]) => `${name}@${range}`)];
  try {
    await run('npm install', 'npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts', '--prefer-offline', '--no-package-lock', '--fetch-retries=1', '--fetch-retry-mintimeout=2000', '--fetch-retry-maxtimeout=5000', ...specs], app);
  } catch (error) {
    const why = `consumer-test: npm could not install the packages (no registry?):\n${/** @type {Error} */ (error).message}`;
    if (process.env.CI) throw new Error(why);
    console.warn(`${why}\nconsumer-test: SKIPPED (set CI=1 to make this a failure)`);
    cleanup();
    process.exit(0);
  }

  console.log('consumer-test: run');
  writeFileSync(join(app, 'esm.mjs'), ESM.replace('__BODY__', BODY));
  writeFileSync(join(app, 'cjs.cjs'), CJS.replace('__BODY__', BODY));
  await all([
    run('(a) ESM: @bcast/ws + @bcast/compat broadcastToAll reaches a ws client', process.execPath, ['esm.mjs'], app),
    run('(b) CommonJS: the same through require()', process.execPath, ['cjs.cjs'], app),
  ]);

  writeFileSync(join(app, 'index.ts'), TS);
  writeFileSync(join(app, 'tsconfig.nodenext.json'), TSCONFIG('nodenext', 'nodenext'));
  writeFileSync(join(app, 'tsconfig.bundler.json'), TSCONFIG('esnext', 'bundler'));
  const tsc = join(app, 'node_modules/typescript/bin/tsc');
  await all([
    run('(c) tsc --noEmit, module/moduleResolution nodenext', process.execPath, [tsc, '-p', 'tsconfig.nodenext.json'], app),
    run('(c) tsc --noEmit, module esnext + moduleResolution bundler', process.execPath, [tsc, '-p', 'tsconfig.bundler.json'], app),
  ]);
} catch (error) {
  failed = true;
  console.error(`\nconsumer-test: ${/** @type {Error} */ (error).message}`);
} finally {
  cleanup();
}
console.log(failed ? 'consumer-test: FAILED' : 'consumer-test: ok');
process.exit(failed ? 1 : 0);
