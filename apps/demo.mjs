// `pnpm demo`: the three sample chat apps, each in its own process with its own OpenTelemetry SDK
// (node --import ./instrumentation.mjs server.mjs), in memory, nothing else to install.
// Ports: WS_CHAT_PORT (3001), SOCKETIO_CHAT_PORT (3002), EXPRESS_CHAT_PORT (3003); HOST (127.0.0.1).
// Traces go to OTEL_EXPORTER_OTLP_ENDPOINT (http://localhost:4318): start Jaeger to see them
// (docs/observability.md); without it the apps run the same and say once that export failed. The
// page's "Measured" panel links the last broadcast's trace with BCAST_TRACE_URL (default: Jaeger's
// http://localhost:16686/trace/{traceId}). Ctrl-C stops everything within about a second.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createConnection } from 'node:net';

// `pnpm demo:cluster` (node demo.mjs --cluster): two app processes (ws and socket.io) sharing one
// Redis (backplane, room history, presence), so a broadcast from either reaches the clients of
// both, a page recovers on either, and Online lists the users of both. Redis from REDIS_URL
// (default redis://127.0.0.1:6379); ports CLUSTER_A_PORT (3011) and CLUSTER_B_PORT (3012).
const cluster = process.argv.includes('--cluster');
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
if (cluster && !(await reachable(redisUrl))) {
  console.error(`demo:cluster needs Redis at ${redisUrl} (set REDIS_URL; e.g. apt-get install redis-server, or docker run -p 6379:6379 redis:7).`);
  process.exit(1);
}

const apps = cluster
  ? [
      { name: 'node-a', dir: 'ws-chat', port: process.env.CLUSTER_A_PORT ?? '3011', what: 'ws, Redis backplane' },
      { name: 'node-b', dir: 'socketio-chat', port: process.env.CLUSTER_B_PORT ?? '3012', what: 'socket.io, Redis backplane' },
    ]
  : [
      { name: 'ws-chat', dir: 'ws-chat', port: process.env.WS_CHAT_PORT ?? '3001', what: 'ws WebSocketServer' },
      { name: 'socketio-chat', dir: 'socketio-chat', port: process.env.SOCKETIO_CHAT_PORT ?? '3002', what: 'socket.io' },
      { name: 'express-chat', dir: 'express-chat', port: process.env.EXPRESS_CHAT_PORT ?? '3003', what: 'express + HTTP upgrade' },
    ];
const width = Math.max(...apps.map((a) => a.name.length));
const traceUrl = process.env.BCAST_TRACE_URL ?? 'http://localhost:16686/trace/{traceId}';
/** Ctrl-C: time the apps get to stop (each stops in about a second) before they are killed. */
const STOP_TIMEOUT_MS = 1_800;

const children = apps.map((app) => {
  const child = spawn(process.execPath, ['--import', './instrumentation.mjs', 'server.mjs'], {
    cwd: fileURLToPath(new URL(`./${app.dir}/`, import.meta.url)),
    env: { ...process.env, PORT: app.port, HOST: process.env.HOST ?? '127.0.0.1', BCAST_TRACE_URL: traceUrl, ...(cluster ? { BCAST_REDIS_URL: redisUrl, OTEL_SERVICE_NAME: `bcast-${app.name}` } : {}) },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const prefix = `[${app.name.padEnd(width)}] `;
  for (const [stream, out] of /** @type {const} */ ([[child.stdout, process.stdout], [child.stderr, process.stderr]])) {
    if (!stream) continue;
    let rest = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      const lines = (rest + chunk).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) out.write(prefix + line + '\n');
    });
  }
  const listening = new Promise((resolve, reject) => {
    child.on('message', (/** @type {any} */ message) => {
      if (message?.type === 'listening') resolve(message.url);
    });
    child.once('exit', (code, signal) => reject(new Error(`${app.name} exited (${signal ?? code}) before listening`)));
  });
  return { app, child, listening };
});

let stopping = false;
async function stop(code = 0) {
  if (stopping) return;
  stopping = true;
  console.log('\nstopping the demo apps…');
  await Promise.all(
    children.map(
      ({ app, child }) =>
        new Promise((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve(undefined);
          const timer = setTimeout(() => {
            console.error(`${app.name} did not stop within ${STOP_TIMEOUT_MS} ms; killed`);
            child.kill('SIGKILL');
          }, STOP_TIMEOUT_MS);
          child.once('exit', () => {
            clearTimeout(timer);
            resolve(undefined);
          });
          // (Ctrl-C in a terminal already sent SIGINT to the whole process group; this is for `kill`.)
          child.kill('SIGTERM');
        }),
    ),
  );
  process.exit(code);
}
process.on('SIGINT', () => void stop(0));
process.on('SIGTERM', () => void stop(0));

try {
  const urls = await Promise.all(children.map((c) => c.listening));
  const rows = children.map(({ app }, i) => `  ${app.name.padEnd(width)}  ${urls[i]}  (${app.what})`);
  console.log(
    [
      '',
      cluster
        ? `bcast cluster demo: two processes sharing Redis at ${redisUrl} (backplane, room history, presence): a message sent on one reaches the clients of both.`
        : 'bcast demo: three chat apps, one per adapter (ws, socket.io, express), the page on @bcast/client.',
      ...rows,
      '',
      'Open one in two browser tabs, pick two names, join a room, and chat. The "Measured" panel shows each broadcast',
      'as bcast counted it, deliveries per second, health and circuit state, and a link to the trace. Also:',
      `  curl -X POST ${urls[0]}/broadcast -H 'content-type: application/json' -d '{"target":"room","room":"lobby","message":{"text":"hello from curl"}}'`,
      `  curl ${urls[0]}/health   curl ${urls[0]}/stats   curl ${urls[0]}/metrics`,
      'Traces: OTLP to ' + (process.env.OTEL_EXPORTER_OTLP_ENDPOINT ?? 'http://localhost:4318') + ` (see docs/observability.md to run Jaeger); trace links: ${traceUrl}`,
      'Ctrl-C stops everything.',
      '',
    ].join('\n'),
  );
  for (const { app, child } of children) {
    child.once('exit', (code, signal) => {
      if (stopping) return;
      console.error(`${app.name} stopped unexpectedly (${signal ?? code}); stopping the demo`);
      void stop(1);
    });
  }
} catch (error) {
  console.error(`demo: ${error instanceof Error ? error.message : error}`);
  console.error('Is a port in use? Set WS_CHAT_PORT, SOCKETIO_CHAT_PORT or EXPRESS_CHAT_PORT.');
  await stop(1);
}

/**
 * True when a TCP connection to the URL's host and port opens within a second.
 * @param {string} url
 * @returns {Promise<boolean>}
 */
function reachable(url) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = createConnection({ host: hostname, port: Number(port || 6379) });
    const done = (/** @type {boolean} */ ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}
