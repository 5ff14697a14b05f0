import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { request } from 'node:http';
import { connect as tcpConnect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { io as connectIo, type Socket as IoClient } from 'socket.io-client';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { guardProcess } from '../../support/processGuard.js';
import { spawnJson, type JsonChild } from './support/child.js';

guardProcess();

// B15 connection exhaustion, at the plan's figures: per-IP cap 100 (loopback aliases 127.0.0.x act
// as IPs), a global cap, and a flood beyond the process's file-descriptor limit. The server
// (@bcast/ws, @bcast/express, @bcast/socket.io) runs in a child with `ulimit -n 512` (Node cannot
// lower its own limit), on the built packages. packages/ws/test/caps.test.ts and
// packages/socket.io/test/caps.test.ts cover the caps themselves with small numbers.

const SERVER = fileURLToPath(new URL('./support/caps-server.mjs', import.meta.url));
const DIST = ['core', 'ws', 'express', 'socket.io'].map((p) => fileURLToPath(new URL(`../../../packages/${p}/dist/index.js`, import.meta.url)));
const FD_LIMIT = 512;
const PER_IP = 100;
const GLOBAL = 400;

const children: JsonChild[] = [];
const wsClients: WebSocket[] = [];
const ioClients: IoClient[] = [];
const sockets: Socket[] = [];
afterEach(() => {
  for (const c of wsClients.splice(0)) c.terminate();
  for (const c of ioClients.splice(0)) c.close();
  for (const s of sockets.splice(0)) s.destroy();
  for (const c of children.splice(0)) {
    c.child.stdin?.end();
    c.kill();
  }
});

/** The caps server in a child under `ulimit -n FD_LIMIT`, and its stats (from its stdin / stdout and /proc). */
async function startCapsServer(adapter: 'ws' | 'express' | 'socket.io') {
  for (const dist of DIST) expect(existsSync(dist), `${dist}: child processes run the built packages (build first)`).toBe(true);
  const config = { adapter, caps: { maxConnections: GLOBAL, maxConnectionsPerIp: PER_IP, retryAfterS: 5 } };
  const server = spawnJson('bash', ['-c', `ulimit -n ${FD_LIMIT} && exec "${process.execPath}" "${SERVER}" '${JSON.stringify(config)}'`]);
  children.push(server);
  const { listening: port, fdLimit } = await server.message<{ listening: number; fdLimit: number }>((l) => 'listening' in l);
  const stats = async (): Promise<{ connections: number; sessions?: number; fds: number; rssMB: number }> => {
    const seen = server.lines.length;
    server.child.stdin?.write('stats\n');
    const line = await server.message<{ stats: { connections: number; sessions?: number } }>((l) => 'stats' in l && server.lines.indexOf(l) >= seen);
    const rssKb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${server.child.pid}/status`, 'utf8'))?.[1]);
    return { ...line.stats, fds: readdirSync(`/proc/${server.child.pid}/fd`).length, rssMB: Math.round(rssKb / 1024) };
  };
  return { server, port, fdLimit, stats };
}

/** 300 idle TCP connections from 127.0.0.7-9: with the clients admitted, past the child's fd limit. */
async function idleFlood(port: number): Promise<Socket[]> {
  const flood: Socket[] = [];
  await Promise.all(
    Array.from({ length: 300 }, (_, i) => {
      const s = tcpConnect({ host: '127.0.0.1', port, localAddress: `127.0.0.${7 + (i % 3)}` });
      s.on('error', () => {});
      flood.push(s);
      sockets.push(s);
      return new Promise<void>((resolve) => {
        s.once('connect', () => resolve());
        s.once('close', () => resolve());
      });
    }),
  );
  return flood;
}

/** Opens a WebSocket from `localAddress`; resolves with it once open, or with the refusal's status and Retry-After. */
function open(url: string, localAddress: string): Promise<{ ws?: WebSocket; status?: number; retryAfter?: string; error?: string }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { localAddress });
    ws.on('error', (error) => resolve({ error: (error as NodeJS.ErrnoException).code ?? error.message }));
    ws.once('open', () => {
      wsClients.push(ws);
      resolve({ ws });
    });
    ws.once('unexpected-response', (req, res) => {
      resolve({ status: res.statusCode ?? 0, ...(res.headers['retry-after'] ? { retryAfter: String(res.headers['retry-after']) } : {}) });
      req.destroy();
    });
  });
}

/** A socket.io-client (websocket transport, no reconnection) from `localAddress`; resolves once connected, or with the connect_error. */
function openIo(port: number, localAddress: string): Promise<{ socket?: IoClient; error?: string }> {
  return new Promise((resolve) => {
    const options = { transports: ['websocket'], reconnection: false, forceNew: true, timeout: 10_000, localAddress }; // localAddress: passed to the ws client
    const socket = connectIo(`http://127.0.0.1:${port}`, options);
    ioClients.push(socket);
    socket.once('connect', () => resolve({ socket }));
    socket.once('connect_error', (error: Error & { description?: { message?: string } }) => resolve({ error: error.description?.message ?? error.message }));
  });
}

/** A raw engine.io polling handshake (GET without `sid`) from `localAddress`: its status and Retry-After. */
function poll(port: number, localAddress: string): Promise<{ status?: number; retryAfter?: string; error?: string }> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/socket.io/?EIO=4&transport=polling', agent: false, localAddress }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ...(res.headers['retry-after'] ? { retryAfter: String(res.headers['retry-after']) } : {}) }));
    });
    req.on('error', (error) => resolve({ error: (error as NodeJS.ErrnoException).code ?? error.message }));
    req.end();
  });
}

describe('B15 connection exhaustion', () => {
  it.each(['ws', 'express'] as const)(`B15 %s at the fd limit (ulimit -n ${FD_LIMIT}): per-IP cap ${PER_IP} and global cap ${GLOBAL} answer 503 + Retry-After before the upgrade; a flood past the fd limit gets 0 EMFILE errors and no crash, and the server keeps answering`, async (adapter) => {
    const { server, port, fdLimit, stats } = await startCapsServer(adapter);
    const url = `ws://127.0.0.1:${port}${adapter === 'express' ? '/ws' : '/'}`;
    expect(fdLimit).toBe(FD_LIMIT);

    // per-IP: 100 from 127.0.0.2, the 101st is refused before the upgrade
    const first = await Promise.all(Array.from({ length: PER_IP }, () => open(url, '127.0.0.2')));
    expect(first.filter((r) => r.ws).length).toBe(PER_IP);
    expect(await open(url, '127.0.0.2')).toEqual({ status: 503, retryAfter: '5' });
    // global: 100 more from each of .3, .4, .5 (400 in all), then anyone is refused
    for (const ip of ['127.0.0.3', '127.0.0.4', '127.0.0.5']) {
      const more = await Promise.all(Array.from({ length: PER_IP }, () => open(url, ip)));
      expect(more.filter((r) => r.ws).length, ip).toBe(PER_IP);
    }
    expect(await open(url, '127.0.0.6')).toEqual({ status: 503, retryAfter: '5' });
    expect((await stats()).connections).toBe(GLOBAL);

    // past the fd limit: 300 idle TCP connections and 300 upgrade attempts from other addresses
    const flood = await idleFlood(port);
    const attempts = await Promise.all(Array.from({ length: 300 }, (_, i) => open(url, `127.0.0.${10 + (i % 3)}`)));
    const outcome: Record<string, number> = {};
    for (const a of attempts) {
      const key = a.ws ? 'accepted' : a.status ? String(a.status) : (a.error ?? 'unknown');
      outcome[key] = (outcome[key] ?? 0) + 1;
    }
    const atLimit = await stats();
    // Past the limit, libuv accepts and drops what it cannot keep (its EMFILE trick): those clients see a reset, not a 503
    // (the caps count a connection from its upgrade request; idle TCP connections are not counted).
    console.info(`[B15 ${adapter}] at the limit: ${JSON.stringify(atLimit)} (fd limit ${fdLimit}); 300 upgrade attempts past it: ${JSON.stringify(outcome)}; idle flood sockets still open ${flood.filter((s) => !s.destroyed).length} of 300`);
    expect(atLimit.fds).toBeLessThanOrEqual(FD_LIMIT);
    expect(outcome['accepted'] ?? 0).toBe(0);
    // it never crashed and reported no EMFILE
    expect(server.lines.filter((l) => typeof l === 'object' && l !== null && 'fatal' in l)).toEqual([]);
    expect(server.child.exitCode).toBeNull();
    // existing clients are unaffected
    const seen = server.lines.length;
    server.child.stdin?.write('broadcast\n');
    const sent = await server.message<{ broadcast: { recipients: number; delivered: number } }>((l) => 'broadcast' in l && server.lines.indexOf(l) >= seen);
    expect(sent.broadcast).toEqual({ recipients: GLOBAL, delivered: GLOBAL });
    // and once the flood is gone and one client leaves, it answers again
    for (const s of flood) s.destroy();
    const leaving = wsClients[0]!;
    leaving.close();
    await new Promise((resolve) => leaving.once('close', resolve));
    await expect.poll(async () => (await stats()).connections, { timeout: 5_000 }).toBe(GLOBAL - 1);
    const again = await open(url, '127.0.0.2');
    expect(again.ws?.readyState).toBe(WebSocket.OPEN);
    // and the per-IP cap still holds after the flood
    expect(await open(url, '127.0.0.2')).toEqual({ status: 503, retryAfter: '5' });
    expect(server.lines.filter((l) => typeof l === 'object' && l !== null && 'fatal' in l)).toEqual([]);
    const end = await stats();
    console.info(`[B15 ${adapter}] after the flood: ${JSON.stringify(end)}`);
    expect(end.connections).toBe(GLOBAL);
    expect(end.fds).toBeLessThan(FD_LIMIT);
  }, 60_000);

  it(`B15 socket.io at the fd limit (ulimit -n ${FD_LIMIT}): per-IP cap ${PER_IP} and global cap ${GLOBAL} count engine.io sessions and answer a new handshake (websocket or polling) 503 + Retry-After before any session exists; a flood past the fd limit gets 0 EMFILE errors and no crash, and the clients admitted keep receiving`, async () => {
    const { server, port, fdLimit, stats } = await startCapsServer('socket.io');
    // engine.io's handshake as a direct WebSocket (what socket.io-client sends with transports: ['websocket'])
    const url = `ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`;
    expect(fdLimit).toBe(FD_LIMIT);
    const refused = { status: 503, retryAfter: '5' };

    // per-IP: 100 socket.io clients from 127.0.0.2; the 101st handshake is refused, on either transport
    const first = await Promise.all(Array.from({ length: PER_IP }, () => openIo(port, '127.0.0.2')));
    expect(first.filter((r) => r.socket).length).toBe(PER_IP);
    expect(await open(url, '127.0.0.2')).toEqual(refused);
    expect(await poll(port, '127.0.0.2')).toEqual(refused);
    expect(await openIo(port, '127.0.0.2')).toEqual({ error: 'Unexpected server response: 503' });
    // global: 100 more from each of .3, .4, .5 (400 in all), then anyone is refused
    for (const ip of ['127.0.0.3', '127.0.0.4', '127.0.0.5']) {
      const more = await Promise.all(Array.from({ length: PER_IP }, () => openIo(port, ip)));
      expect(more.filter((r) => r.socket).length, ip).toBe(PER_IP);
    }
    expect(await open(url, '127.0.0.6')).toEqual(refused);
    expect(await poll(port, '127.0.0.6')).toEqual(refused);
    // the refused handshakes created no engine.io session
    expect(await stats()).toMatchObject({ connections: GLOBAL, sessions: GLOBAL });

    // past the fd limit: 300 idle TCP connections and 300 handshakes (websocket and polling) from other addresses
    const flood = await idleFlood(port);
    const attempts = await Promise.all(Array.from({ length: 300 }, (_, i) => (i % 2 === 0 ? open(url, `127.0.0.${10 + (i % 3)}`) : poll(port, `127.0.0.${10 + (i % 3)}`))));
    const outcome: Record<string, number> = {};
    for (const a of attempts) {
      const key = ('ws' in a && a.ws) || a.status === 200 ? 'accepted' : a.status ? String(a.status) : (a.error ?? 'unknown');
      outcome[key] = (outcome[key] ?? 0) + 1;
    }
    const atLimit = await stats();
    console.info(`[B15 socket.io] at the limit: ${JSON.stringify(atLimit)} (fd limit ${fdLimit}); 300 handshakes past it: ${JSON.stringify(outcome)}; idle flood sockets still open ${flood.filter((s) => !s.destroyed).length} of 300`);
    expect(atLimit.fds).toBeLessThanOrEqual(FD_LIMIT);
    expect(outcome['accepted'] ?? 0).toBe(0);
    expect(atLimit.sessions).toBe(GLOBAL);
    expect(server.lines.filter((l) => typeof l === 'object' && l !== null && 'fatal' in l)).toEqual([]);
    expect(server.child.exitCode).toBeNull();
    // existing clients are unaffected: every one of them receives a broadcast
    const admitted = ioClients.filter((c) => c.connected);
    expect(admitted.length).toBe(GLOBAL);
    const received = Promise.all(admitted.map((c) => new Promise<unknown>((resolve) => c.once('message', resolve))));
    const seen = server.lines.length;
    server.child.stdin?.write('broadcast\n');
    const sent = await server.message<{ broadcast: { recipients: number; delivered: number } }>((l) => 'broadcast' in l && server.lines.indexOf(l) >= seen);
    expect(sent.broadcast).toEqual({ recipients: GLOBAL, delivered: GLOBAL });
    expect(new Set((await received).map((m) => JSON.stringify(m)))).toEqual(new Set([JSON.stringify({ type: 'still-here' })]));
    // and once the flood is gone and one client from 127.0.0.2 leaves, its session's slot is free again
    for (const s of flood) s.destroy();
    admitted[0]!.disconnect();
    await expect.poll(async () => (await stats()).sessions, { timeout: 5_000 }).toBe(GLOBAL - 1);
    const again = await openIo(port, '127.0.0.2');
    expect(again.socket?.connected).toBe(true);
    // and the per-IP cap still holds after the flood
    expect(await open(url, '127.0.0.2')).toEqual(refused);
    expect(server.lines.filter((l) => typeof l === 'object' && l !== null && 'fatal' in l)).toEqual([]);
    const end = await stats();
    console.info(`[B15 socket.io] after the flood: ${JSON.stringify(end)}`);
    expect(end).toMatchObject({ connections: GLOBAL, sessions: GLOBAL });
    expect(end.fds).toBeLessThan(FD_LIMIT);
  }, 60_000);
});
