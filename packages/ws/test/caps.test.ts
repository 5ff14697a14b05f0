import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { Broadcaster } from '@bcast/core';
import { WebSocketServer } from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { createUpgradeHandler, recommendedServerOptions } from '../src/index.js';
import { openClient, startWs, type Client, type Harness } from './helpers.js';

let harness: Harness | undefined;
const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
  await harness?.close();
  harness = undefined;
});

/** The status and Retry-After of an upgrade that must be refused. */
function refusedWith(url: string, localAddress?: string): Promise<{ status: number; retryAfter: string | undefined }> {
  return new Promise((resolve, reject) => {
    import('ws').then(({ WebSocket }) => {
      const ws = new WebSocket(url, localAddress ? { localAddress } : {});
      ws.on('error', () => {});
      ws.once('unexpected-response', (req, res) => {
        resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] as string | undefined });
        req.destroy();
      });
      ws.once('open', () => reject(new Error('the upgrade was accepted')));
    }, reject);
  });
}

describe('B15 connection caps', () => {
  it('a per-IP cap answers 503 with Retry-After before the upgrade; other IPs and existing clients are unaffected', async () => {
    harness = await startWs({ adapter: { maxConnectionsPerIp: 3, retryAfterS: 7 } });
    const url = harness.url;
    const first: Client[] = [];
    for (let i = 0; i < 3; i += 1) first.push(await openClient(url, { localAddress: '127.0.0.2' }));
    expect(await refusedWith(url, '127.0.0.2')).toEqual({ status: 503, retryAfter: '7' });
    const other = await openClient(url, { localAddress: '127.0.0.3' });
    expect(harness.broadcaster.connections.size).toBe(4);
    const result = await harness.broadcaster.toAll('still here');
    expect(result).toMatchObject({ recipients: 4, delivered: 4 });
    for (const c of [...first, other]) expect(await c.waitFor(1)).toEqual(['still here']);
    // a slot frees when a connection closes
    first[0]?.ws.close();
    await first[0]?.closed;
    await expect.poll(() => harness?.broadcaster.connections.size).toBe(3);
    const again = await openClient(url, { localAddress: '127.0.0.2' });
    expect(again.ws.readyState).toBe(1);
  });

  it('a global cap holds on the upgrade-handler path too (express, custom routers)', async () => {
    const server = createServer();
    const wss = new WebSocketServer({ noServer: true, ...recommendedServerOptions });
    const broadcaster = new Broadcaster({ logger: { warn: () => {}, error: () => {} } });
    const handler = createUpgradeHandler(broadcaster, { maxConnections: 2 });
    server.on('upgrade', (req, socket, head) => void handler.handleUpgrade(req, socket, head, wss));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanup.push(
      () => new Promise<void>((resolve) => server.close(() => resolve())),
      () => server.closeAllConnections(),
      () => broadcaster.dispose(),
      () => handler.dispose(),
    );
    const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
    await openClient(url);
    await openClient(url);
    expect(await refusedWith(url)).toMatchObject({ status: 503, retryAfter: '5' });
    expect(broadcaster.connections.size).toBe(2);
  });
});
