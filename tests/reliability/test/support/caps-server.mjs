// A @bcast/ws, @bcast/express or @bcast/socket.io server for B15, run under a lowered file-descriptor limit
// (`bash -c 'ulimit -n 512 && exec node caps-server.mjs <json: { adapter, caps }>'`). It uses the built packages
// (dist), like every child process of the test suites. No 'error' listener on the HTTP server,
// as in a plain app: an EMFILE that reached it would crash the process, and the test sees the exit.
//
// stdout, one JSON line each: {"listening":port,"fdLimit":n} once; {"fatal":...} before dying of an
// uncaught exception; answers to commands read on stdin, one a line:
//   stats     -> {"stats":{"connections":n}} (socket.io: and "sessions", the engine.io clients)
//   broadcast -> {"broadcast":{"recipients":n,"delivered":n}}
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import { Broadcaster } from '@bcast/core';
import { attachUpgrade } from '@bcast/express';
import { attachToServer, recommendedServerOptions } from '@bcast/ws';
import express from 'express';
import { WebSocketServer } from 'ws';

const { adapter, caps } = JSON.parse(process.argv[2] ?? '{}');
const say = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

process.on('uncaughtException', (error) => {
  say({ fatal: { message: error.message, code: error.code, syscall: error.syscall } });
  process.exit(70);
});

const limits = readFileSync('/proc/self/limits', 'utf8');
const fdLimit = Number(/Max open files\s+(\d+)/.exec(limits)?.[1]);

const broadcaster = new Broadcaster({ pingIntervalMs: 0, logger: { warn: () => {}, error: () => {} } });
let server;
let io;
if (adapter === 'express') {
  const app = express();
  app.get('/ping', (_req, res) => void res.send('pong'));
  server = createServer(app);
  attachUpgrade(broadcaster, server, { path: '/ws', ...caps });
} else if (adapter === 'socket.io') {
  // imported here only: the ws and express servers stay as they were
  const [{ Server }, { attachToServer: attachSocketIo }] = await Promise.all([import('socket.io'), import('@bcast/socket.io')]);
  server = createServer();
  io = new Server(server, { serveClient: false });
  attachSocketIo(broadcaster, io, caps);
} else {
  server = createServer();
  attachToServer(broadcaster, new WebSocketServer({ server, ...recommendedServerOptions }), caps);
}
server.listen(0, '127.0.0.1', () => say({ listening: server.address().port, fdLimit }));

// (open descriptors and RSS are read by the parent in /proc/<pid>: at the fd limit this process
// cannot open those files, and the failure would be the harness's, not the server's)
createInterface({ input: process.stdin }).on('line', async (line) => {
  if (line === 'stats') {
    say({ stats: { connections: broadcaster.connections.size, ...(io ? { sessions: io.engine.clientsCount } : {}) } });
  } else if (line === 'broadcast') {
    const result = await broadcaster.toAll({ type: 'still-here' });
    say({ broadcast: { recipients: result.recipients, delivered: result.delivered } });
  }
});
process.stdin.on('end', () => process.exit(0));
