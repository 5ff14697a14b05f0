// The three sample apps in process, on port 0, with real clients.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APPS, connectClient, postJson, quietLogger, refusedConnection, type ChatClient, type RunningApp } from './helpers.js';
import { guardProcess } from '../../tests/support/processGuard.js';

guardProcess();

describe.each(APPS)('$name', (app) => {
  let running: RunningApp;
  let alice: ChatClient;
  let bob: ChatClient;

  beforeAll(async () => {
    running = await app.start({ port: 0, logger: quietLogger });
    alice = await connectClient(app, running.url, 'alice');
    bob = await connectClient(app, running.url, 'bob');
  });
  afterAll(async () => {
    await Promise.all([alice?.close(), bob?.close()]);
    await running?.close();
  });

  it('delivers POST /broadcast to real clients: to a room (with its history position), to one user, to everyone', async () => {
    await alice.join('lobby');

    const room = await postJson(`${running.url}/broadcast`, { target: 'room', room: 'lobby', message: { type: 'news', text: 'r1' } });
    expect(room.status).toBe(200);
    expect(room.body).toMatchObject({ target: 'room', room: 'lobby', result: { operation: 'room', recipients: 1, delivered: 1, failed: 0, dropped: 0, removed: 0, messageType: 'news' } });
    expect(await alice.next((m) => m?.text === 'r1')).toEqual({ type: 'news', text: 'r1' });
    // Chat rooms keep a history: the message came as a publication with its position.
    expect(alice.frames.find((f: any) => f?.data?.text === 'r1')).toEqual({ type: 'bcast.pub', room: 'lobby', offset: expect.any(Number), epoch: expect.any(String), data: { type: 'news', text: 'r1' } });

    const user = await postJson(`${running.url}/broadcast`, { target: 'user', userId: 'bob', message: { text: 'u1' } });
    expect(user).toMatchObject({ status: 200, body: { target: 'user', userId: 'bob', result: { operation: 'user', recipients: 1, delivered: 1 } } });
    await bob.next((m) => m?.text === 'u1', 'the message to bob');
    const nobody = await postJson(`${running.url}/broadcast`, { target: 'user', userId: 'nobody', message: { text: 'u2' } });
    expect(nobody.body.result).toMatchObject({ recipients: 0, delivered: 0 });

    const all = await postJson(`${running.url}/broadcast`, { target: 'all', message: 'plain text a1' });
    expect(all.body.result).toMatchObject({ operation: 'all', recipients: 2, delivered: 2, failed: 0 });
    await alice.next((m) => m === 'plain text a1', 'a1 at alice');
    await bob.next((m) => m === 'plain text a1', 'a1 at bob');
    // Each connection's frames arrive in order: bob got a1, so r1 (sent before it) was not for him.
    expect(bob.received.some((m: any) => m?.text === 'r1')).toBe(false);
    expect(alice.received.some((m: any) => m?.text === 'u1')).toBe(false);
  });

  it('relays chat messages from clients with the sender identity from the connection, not the body', async () => {
    alice.send({ type: 'chat', to: 'room', room: 'lobby', text: 'hello lobby', from: 'mallory' });
    const inRoom = await alice.next((m) => m?.type === 'chat' && m.text === 'hello lobby');
    expect(inRoom).toMatchObject({ from: 'alice', to: 'room', room: 'lobby' });

    bob.send({ type: 'chat', to: 'room', room: 'lobby', text: 'not a member' });
    expect(await bob.next((m) => m?.type === 'notice')).toMatchObject({ level: 'error' });

    bob.send({ type: 'chat', to: 'user', userId: 'alice', text: 'psst' });
    expect(await alice.next((m) => m?.text === 'psst')).toMatchObject({ type: 'chat', from: 'bob', to: 'user', userId: 'alice' });
    await bob.next((m) => m?.text === 'psst', "bob's own copy");

    alice.send({ type: 'chat', to: 'all', text: 'hi all' });
    await bob.next((m) => m?.type === 'chat' && m.text === 'hi all' && m.from === 'alice', 'the chat to everyone');
  });

  it("tells a room's members who joins and leaves, and lists who is there", async () => {
    bob.send({ type: 'who', room: 'lobby' });
    expect(await bob.next((m) => m?.type === 'notice' && /join "lobby" first/.test(m.text))).toMatchObject({ level: 'error' });

    await bob.join('lobby');
    // presence: { events: true }: alice, in the room, hears that bob joined (not kept in the room's history).
    expect(await alice.next((m) => m?.type === 'bcast.presence' && m.userId === 'bob')).toEqual({ type: 'bcast.presence', room: 'lobby', event: 'join', userId: 'bob' });
    bob.send({ type: 'who', room: 'lobby' });
    expect(await bob.next((m) => m?.type === 'presence')).toEqual({
      type: 'presence',
      room: 'lobby',
      users: [
        { userId: 'alice', connections: 1 },
        { userId: 'bob', connections: 1 },
      ],
      connections: 2,
    });
  });

  it('refuses a connection without a valid demo name', async () => {
    const refusal = await refusedConnection(app, running.url, '  ');
    expect(refusal).toBe(app.transport === 'socket.io' ? 'unauthorized' : '401');
  });

  it('answers /health, /stats and /metrics', async () => {
    const health = await fetch(`${running.url}/health`);
    expect(health.status).toBe(200);
    const report = await health.json();
    expect(report).toMatchObject({ status: 'healthy', system: { connections: 2 } });

    const stats = (await (await fetch(`${running.url}/stats`)).json()) as Record<string, any>;
    expect(stats.broadcasts).toBeGreaterThanOrEqual(6);
    expect(stats.deliveries).toBeGreaterThanOrEqual(5);
    expect(stats.monitor.totals.errorRate).toBe(0);

    const metrics = await fetch(`${running.url}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await metrics.text();
    expect(text).toMatch(/^bcast_broadcasts_total\{bcast_operation="room",bcast_outcome="success",[^}]*\} [1-9]/m);
    expect(text).toMatch(/^bcast_deliveries_total\{bcast_operation="all",[^}]*\} [1-9]/m);
    expect(text).toMatch(/^bcast_connections\{[^}]*\} 2$/m);
    expect(text).toMatch(/^bcast_broadcast_duration_bucket\{[^}]*le="0\.25"\} \d+/m);
    expect(text).toContain(`service_name="${app.serviceName}"`);
  });

  it('serves what the page panel shows on /dashboard.json: the last broadcast, deliveries per second, health, circuits', async () => {
    const posted = await postJson(`${running.url}/broadcast`, { target: 'all', message: { type: 'tick', text: 'measured' } });
    const board = (await (await fetch(`${running.url}/dashboard.json`)).json()) as any;
    expect(board.last).toEqual({
      operation: 'all',
      messageType: 'tick',
      recipients: 2,
      delivered: 2,
      failed: 0,
      dropped: 0,
      removed: 0,
      durationMs: posted.body.result.durationMs,
      backplane: 'skipped',
      at: expect.any(String),
      // in process, without the OpenTelemetry SDK: no trace to link (otlp.test.ts checks the link)
    });
    expect(board.health).toEqual({ status: 'healthy', reasons: [] });
    expect(board).toMatchObject({ connections: 2, backplane: 'healthy', traceLinks: false, deliveries: { windowSeconds: 60 } });
    expect(board.deliveries.perSecond).toHaveLength(60);
    expect(board.broadcasts).toBeGreaterThanOrEqual(7);
  });

  it('rejects a bad POST /broadcast with 400 and says why', async () => {
    const url = `${running.url}/broadcast`;
    expect(await postJson(url, { target: 'everyone', message: 'x' })).toMatchObject({ status: 400, body: { error: { code: 'BAD_REQUEST' } } });
    expect(await postJson(url, { target: 'all' })).toMatchObject({ status: 400, body: { error: { code: 'BAD_REQUEST' } } });
    expect(await postJson(url, '{not json')).toMatchObject({ status: 400, body: { error: { code: 'BAD_JSON' } } });
    expect(await postJson(url, { target: 'room', room: '', message: 'x' })).toMatchObject({ status: 400, body: { error: { code: 'BCAST_INVALID_ROOM' } } });
    expect(await postJson(url, { target: 'user', userId: 'u'.repeat(300), message: 'x' })).toMatchObject({ status: 400, body: { error: { code: 'BCAST_INVALID_USER' } } });
    expect(await postJson(url, { target: 'all', message: 'x'.repeat(70_000) })).toMatchObject({ status: 413, body: { error: { code: 'TOO_LARGE' } } });
    expect((await fetch(url)).status).toBe(405);
  });

  it('serves the chat page with its transport', async () => {
    const res = await fetch(running.url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
    const html = await res.text();
    expect(html).toContain(`data-transport="${app.transport}"`);
    expect(html).toContain('<script type="module" src="/app.js"></script>');
    const js = await fetch(`${running.url}/app.js`);
    expect(js.headers.get('content-type')).toMatch(/^text\/javascript/);
    expect(await js.text()).toContain("from '/bcast-client/index.js'");
    // @bcast/client, from the package's dist, as the ES modules the page imports (no bundler)
    const module = await fetch(`${running.url}/bcast-client/index.js`);
    expect(module.status).toBe(200);
    expect(module.headers.get('content-type')).toMatch(/^text\/javascript/);
    expect(await module.text()).toMatch(/export class BcastClient\b/);
    expect((await fetch(`${running.url}/bcast-client/types.js`)).status).toBe(200);
    if (app.transport === 'socket.io') {
      expect(html).toContain('<script src="/socket.io/socket.io.js"></script>');
      const client = await fetch(`${running.url}/socket.io/socket.io.js`);
      expect(client.status).toBe(200);
      expect(await client.text()).toContain('io');
    }
  });
});
