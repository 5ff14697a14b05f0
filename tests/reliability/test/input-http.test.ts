import { afterEach, describe, expect, it } from 'vitest';
import { guardProcess } from '../../support/processGuard.js';
import { connect, connectRefused, type Client } from './support/clients.js';
import { fdCount } from './support/measure.js';
import { TEXT, frame, rawRequest, rawUpgrade, type RawClient } from './support/raw.js';
import { ADAPTERS, startServer, type AdapterName, type Sut } from './support/servers.js';

guardProcess();

// The HTTP side of the upgrade: header floods (B13, CVE-2024-37890), a ReDoS-shaped
// Sec-WebSocket-Protocol (CVE-2021-32640), and an authenticate that never answers (B14).

const quiet = { warn: () => {}, error: () => {} };

let sut: Sut | undefined;
const clients: Client[] = [];
const raws: RawClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  for (const r of raws.splice(0)) r.socket.destroy();
  await sut?.close();
  sut = undefined;
});

function upgradeRequest(s: Sut, extra = ''): string {
  const { pathname, search } = new URL(s.wsUrl);
  return (
    `GET ${pathname}${search} HTTP/1.1\r\nHost: 127.0.0.1:${s.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`
  );
}

describe.each(ADAPTERS.map((a) => [a] as const))('%s adapter', (adapter: AdapterName) => {
  async function start(): Promise<Sut> {
    sut = await startServer(adapter, { broadcaster: { logger: quiet, pingIntervalMs: 0 } });
    return sut;
  }
  /** The server still accepts and serves a real client. */
  async function stillServing(s: Sut): Promise<void> {
    const c = await connect(s);
    clients.push(c);
    const result = await s.broadcaster.toAll({ type: 'alive' });
    expect(result.delivered).toBeGreaterThanOrEqual(1);
    await c.waitFor((v) => (v as { type?: string }).type === 'alive', 5_000);
  }

  it('B13 header flood with server.maxHeadersCount = 1 (CVE-2024-37890): 400 "Invalid Upgrade header", no crash, nothing registered', async () => {
    const s = await start();
    s.http.maxHeadersCount = 1;
    const flood = Array.from({ length: 100 }, (_, i) => `X-Flood-${i}: ${i}\r\n`).join('');
    const answer = await rawRequest(s.port, upgradeRequest(s, flood));
    expect(answer.status).toBe(400);
    expect(answer.body).toBe('Invalid Upgrade header');
    expect(s.broadcaster.connections.size).toBe(0);
    s.http.maxHeadersCount = 2_000;
    await stillServing(s);
  });

  it('B13 more headers than fit in maxHeaderSize (3,000): 431 from Node before the upgrade; no crash', async () => {
    const s = await start();
    const flood = Array.from({ length: 3_000 }, (_, i) => `X-${i}: y\r\n`).join('');
    const answer = await rawRequest(s.port, upgradeRequest(s, flood));
    expect(answer.status).toBe(431);
    expect(s.broadcaster.connections.size).toBe(0);
    await stillServing(s);
  });

  it.each([
    ['15,000 spaces between two tokens', `a${' '.repeat(15_000)}b`, 400],
    ['5,000 "a, " items', `${'a, '.repeat(5_000)}b`, 400],
    ['7,000 " ," pairs', `${' ,'.repeat(7_000)}b`, 400],
    ['a well-formed list', 'chat, superchat', 101],
  ] as const)('B13 a long Sec-WebSocket-Protocol (CVE-2021-32640, ReDoS-shaped): %s is answered in < 100 ms', async (_name, value, status) => {
    const s = await start();
    // warm the path up once (module loading, JIT), then time the hostile header
    await rawRequest(s.port, upgradeRequest(s, 'Sec-WebSocket-Protocol: warm\r\n'));
    const answer = await rawRequest(s.port, upgradeRequest(s, `Sec-WebSocket-Protocol: ${value}\r\n`));
    expect(answer.status).toBe(status);
    expect(answer.ms).toBeLessThan(100);
    await stillServing(s);
  });

  it('B14 an authenticate that never answers: refused after authTimeoutMs (200 ms here; 5 s by default) and the connection closed by the server', async () => {
    let asked = 0;
    sut = await startServer(adapter, {
      broadcaster: { logger: quiet, pingIntervalMs: 0 },
      authenticate: () => {
        asked += 1;
        return new Promise<never>(() => {});
      },
      adapter: { authTimeoutMs: 200 },
    });
    const s = sut;
    const fdsBefore = fdCount();
    if (adapter === 'socket.io') {
      // the socket.io client: connect_error "unauthorized" after the deadline
      const refused = await connectRefused(s, { token: 'any' });
      expect(refused.message).toBe('unauthorized');
      expect(refused.ms).toBeGreaterThanOrEqual(190);
      expect(refused.ms).toBeLessThan(200 + 300);
      // a raw engine.io client that stays: the server must close the connection it refused
      const evil = await rawUpgrade(s.wsUrl);
      raws.push(evil);
      expect(evil.status).toBe(101);
      const sent = performance.now();
      evil.socket.write(frame(TEXT, Buffer.from('40{"token":"any"}')));
      await expect.poll(() => evil.frames.some((f) => f.payload.toString().startsWith('44')), { timeout: 2_000 }).toBe(true);
      const refusedAt = performance.now() - sent;
      expect(refusedAt).toBeGreaterThanOrEqual(190);
      const closedWithin = await Promise.race([evil.ended.then(() => performance.now() - sent), new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 2_000))]);
      console.info(`[B14 auth hang socket.io] connect_error after ${refused.ms.toFixed(0)} ms; raw client refused after ${refusedAt.toFixed(0)} ms; server closed it ${closedWithin === undefined ? 'not within 2 s' : `after ${closedWithin.toFixed(0)} ms`}`);
      expect(closedWithin, 'the server closes a connection whose authentication timed out').toBeDefined();
    } else {
      const sent = performance.now();
      const evil = await rawUpgrade(s.wsUrl, { extraHeaders: 'Authorization: Bearer any\r\n' });
      raws.push(evil);
      const answeredAt = performance.now() - sent;
      expect(evil.status).toBe(503);
      expect(answeredAt).toBeGreaterThanOrEqual(190);
      expect(answeredAt).toBeLessThan(200 + 300);
      // the server ends the connection itself (socket destroyed), without waiting for the client
      await evil.ended;
      const closedAt = performance.now() - sent;
      console.info(`[B14 auth hang ${adapter}] 503 after ${answeredAt.toFixed(0)} ms, connection closed by the server after ${closedAt.toFixed(0)} ms`);
      expect(closedAt).toBeLessThan(200 + 500);
      raws.splice(raws.indexOf(evil), 1);
    }
    expect(asked).toBeGreaterThanOrEqual(1);
    expect(s.broadcaster.connections.size).toBe(0);
    for (const r of raws.splice(0)) r.socket.destroy();
    // every descriptor of the refused attempts is released
    await expect.poll(fdCount, { timeout: 2_000 }).toBeLessThanOrEqual(fdsBefore);
  });
});
