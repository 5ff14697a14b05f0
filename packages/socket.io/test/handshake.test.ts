import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Broadcaster } from '@bcast/core';
import { Server } from 'socket.io';
import { afterEach, describe, expect, it } from 'vitest';
import { attachToServer } from '../src/index.js';
import { guardProcess } from '../../../tests/support/processGuard.js';
import { client, closeAll, connected, engineErrors, quiet, refusal, refused, startIo } from './helpers.js';

guardProcess();

afterEach(closeAll);

const app = 'https://app.example';
const evil = 'https://evil.example';

describe('authentication', () => {
  it('reads handshake.auth and keeps the identity; refusals get connect_error "unauthorized"', async () => {
    const seen: unknown[] = [];
    const h = await startIo({
      adapter: {
        authenticate: (handshake) => {
          seen.push(handshake.auth);
          if (handshake.auth.token === 'throw') throw new Error('boom');
          return handshake.auth.token === 'good' ? { userId: 'u1', data: { role: 'admin' } } : false;
        },
      },
    });
    await connected(client(h.url, { auth: { token: 'good' } }));
    const [entry] = [...h.broadcaster.connections.entries()];
    expect(entry).toMatchObject({ userId: 'u1', connection: { data: { role: 'admin' } } });
    for (const token of ['bad', 'throw', undefined]) {
      expect(await refusal(client(h.url, token === undefined ? {} : { auth: { token } }))).toEqual({ message: 'unauthorized' });
    }
    expect(seen).toEqual([{ token: 'good' }, { token: 'bad' }, { token: 'throw' }, {}]);
    expect(h.broadcaster.connections.size).toBe(1);
  });

  it('refuses a handshake whose authenticate does not answer within authTimeoutMs', async () => {
    const h = await startIo({ adapter: { authenticate: () => new Promise(() => {}), authTimeoutMs: 100 } });
    expect(await refusal(client(h.url))).toEqual({ message: 'unauthorized' });
    expect(h.broadcaster.connections.size).toBe(0);
  });

  it('refuses an invalid user id from authenticate', async () => {
    const h = await startIo({ adapter: { authenticate: () => 'x'.repeat(1_000) } });
    expect(await refusal(client(h.url))).toEqual({ message: 'unauthorized' });
  });
});

/** What a websocket-transport client sees when engine.io refuses its upgrade, whatever the reason. */
const refusedUpgrade = { message: 'websocket error', cause: 'Unexpected server response: 400' };

describe('origin checks through allowRequest', () => {
  it('refuse a foreign origin at the engine.io handshake, on websocket and on polling', async () => {
    const h = await startIo({ adapter: { allowedOrigins: [app] } });
    const errors = engineErrors(h.io);
    expect(await refusal(client(h.url, { extraHeaders: { origin: evil } }))).toEqual(refusedUpgrade);
    const polling = await refused(client(h.url, { transports: ['polling'], extraHeaders: { origin: evil } }));
    expect(polling).toMatchObject({ message: 'xhr poll error', description: 403 });
    // code 4 is engine.io's FORBIDDEN: refused before any engine.io session or socket.io socket exists
    expect(errors).toEqual([
      { code: 4, reason: 'origin not allowed' },
      { code: 4, reason: 'origin not allowed' },
    ]);
    expect(h.io.engine.clientsCount).toBe(0);
    await connected(client(h.url, { extraHeaders: { origin: app } }));
    await connected(client(h.url, { transports: ['polling'], extraHeaders: { origin: app } }));
    await connected(client(h.url)); // no Origin header: not a browser
    expect(h.broadcaster.connections.size).toBe(3);
  });

  it('chain an allowRequest the app already had, and restore it on dispose', async () => {
    const calls: string[] = [];
    const appCheck = (req: { headers: Record<string, unknown> }, fn: (err: string | null, ok: boolean) => void): void => {
      calls.push(String(req.headers.origin));
      fn(req.headers['x-block'] ? 'blocked by the app' : null, !req.headers['x-block']);
    };
    const h = await startIo({ server: { allowRequest: appCheck }, adapter: { allowedOrigins: [app] } });
    expect(h.io.engine.opts.allowRequest).not.toBe(appCheck);
    const errors = engineErrors(h.io);
    expect(await refusal(client(h.url, { extraHeaders: { origin: evil } }))).toEqual(refusedUpgrade);
    expect(await refusal(client(h.url, { extraHeaders: { origin: app, 'x-block': '1' } }))).toEqual(refusedUpgrade);
    // told apart on the server: ours refused the first, the app's own check the second
    expect(errors).toEqual([
      { code: 4, reason: 'origin not allowed' },
      { code: 4, reason: 'blocked by the app' },
    ]);
    await connected(client(h.url, { extraHeaders: { origin: app } }));
    expect(calls).toEqual([app, app]); // the evil origin never reached the app's check
    await h.adapter.dispose();
    expect(h.io.engine.opts.allowRequest).toBe(appCheck);
    await connected(client(h.url, { extraHeaders: { origin: evil } }));
  });

  it('work on a Server attached to its HTTP server after attachToServer', async () => {
    const io = new Server();
    const broadcaster = new Broadcaster({ logger: quiet });
    const adapter = attachToServer(broadcaster, io, { allowedOrigins: [app] });
    const http = createServer();
    io.attach(http);
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    try {
      const errors = engineErrors(io);
      expect(await refusal(client(url, { extraHeaders: { origin: evil } }))).toEqual(refusedUpgrade);
      expect(errors).toEqual([{ code: 4, reason: 'origin not allowed' }]);
      await connected(client(url, { extraHeaders: { origin: app } }));
      expect(broadcaster.connections.size).toBe(1);
    } finally {
      await adapter.dispose();
      await broadcaster.dispose();
      await new Promise<void>((resolve) => {
        void io.close(() => resolve());
        http.closeAllConnections();
      });
    }
  });

  it('apply to one namespace only when attached to a Namespace (connect_error from its middleware)', async () => {
    const h = await startIo({ namespace: '/chat', adapter: { allowedOrigins: [app], requireOrigin: true } });
    expect(h.io.engine.opts.allowRequest).toBeUndefined();
    expect(await refusal(client(`${h.url}/chat`, { extraHeaders: { origin: evil } }))).toEqual({ message: 'origin not allowed' });
    expect(await refusal(client(`${h.url}/chat`))).toEqual({ message: 'origin not allowed' });
    await connected(client(h.url, { extraHeaders: { origin: evil } })); // the main namespace is not ours
    await connected(client(`${h.url}/chat`, { extraHeaders: { origin: app } }));
    expect(h.broadcaster.connections.size).toBe(1);
  });
});
