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

  it('delivers POST /broadcast to real clients: to a room, to one user, to everyone', async () => {
    await alice.join('lobby');

    const room = await postJson(`${running.url}/broadcast`, { target: 'room', room: 'lobby', message: { type: 'news', text: 'r1' } });
    expect(room.status).toBe(200);
    expect(room.body).toMatchObject({ target: 'room', room: 'lobby', result: { successful: 1, failed: 0, totalConnections: 1, messageType: 'news' } });
    expect(await alice.next((m) => m?.text === 'r1')).toEqual({ type: 'news', text: 'r1' });

    const user = await postJson(`${running.url}/broadcast`, { target: 'user', userId: 'bob', message: { text: 'u1' } });
    expect(user).toEqual({ status: 200, body: { target: 'user', userId: 'bob', result: true } });
    await bob.next((m) => m?.text === 'u1', 'the message to bob');
    const nobody = await postJson(`${running.url}/broadcast`, { target: 'user', userId: 'nobody', message: { text: 'u2' } });
    expect(nobody.body.result).toBe(false);

    const all = await postJson(`${running.url}/broadcast`, { target: 'all', message: 'plain text a1' });
    expect(all.body.result).toMatchObject({ successful: 2, failed: 0, totalConnections: 2 });
    await alice.next((m) => m === 'plain text a1', 'a1 at alice');
    await bob.next((m) => m === 'plain text a1', 'a1 at bob');
    // Each connection's frames arrive in order: bob got a1, so r1 (sent before it) was not for him.
    expect(bob.received.some((m: any) => m?.text === 'r1')).toBe(false);
    expect(alice.received.some((m: any) => m?.text === 'u1')).toBe(false);
  });

  it('relays chat messages from clients with the sender identity from the connection, not the body', async () => {
    await bob.next((m) => m?.type === 'presence' && m.users.includes('alice') && m.users.includes('bob'), 'presence with both users');

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

  it('refuses a connection without a valid demo name', async () => {
    const refusal = await refusedConnection(app, running.url, '  ');
    expect(refusal).toBe(app.transport === 'socket.io' ? 'unauthorized' : '401');
  });

  it('answers /health, /stats and /metrics', async () => {
    const health = await fetch(`${running.url}/health`);
    expect(health.status).toBe(200);
    const report = await health.json();
    expect(report).toMatchObject({ status: 'healthy', system: { connections: 2 } });

    const stats = (await (await fetch(`${running.url}/stats`)).json()) as Record<string, unknown>;
    expect(stats.totalBroadcasts).toBeGreaterThanOrEqual(6);
    expect(stats.successfulSends).toBeGreaterThanOrEqual(5);
    expect(stats.failedSends).toBe(0);

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
    expect(await js.text()).toContain('document.getElementById');
    if (app.transport === 'socket.io') {
      expect(html).toContain('<script src="/socket.io/socket.io.js"></script>');
      const client = await fetch(`${running.url}/socket.io/socket.io.js`);
      expect(client.status).toBe(200);
      expect(await client.text()).toContain('io');
    }
  });
});
