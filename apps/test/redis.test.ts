// The docker-compose setup in miniature: the three apps share a Redis backplane, so a broadcast
// posted to one app reaches the clients of all three, whatever their transport.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REDIS_URL, skipReason, whyUnreachable } from '../../packages/redis/test/helpers.js';
import { APPS, attr, connectClient, postJson, quietLogger, startAppProcess, startOtlpReceiver, type ChatClient, type RunningApp } from './helpers.js';
import { guardProcess } from '../../tests/support/processGuard.js';

guardProcess();

const PRODUCER = 4; // OTLP SpanKind
const CONSUMER = 5;

const why = await whyUnreachable(REDIS_URL);
skipReason('the apps Redis suite', why);

describe.skipIf(why !== undefined)('the three apps on one Redis backplane', () => {
  const running: RunningApp[] = [];
  const clients: ChatClient[] = [];

  beforeAll(async () => {
    const redisChannel = `bcast-apps-test-${randomUUID()}`;
    for (const app of APPS) running.push(await app.start({ port: 0, logger: quietLogger, redisUrl: REDIS_URL, redisChannel }));
    for (const [i, app] of APPS.entries()) clients.push(await connectClient(app, running[i]!.url, `user${i}`));
    await Promise.all(clients.map((c) => c.join('lobby')));
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(running.map((r) => r.close()));
  });

  it('delivers a room broadcast posted to one app to the room members of every app', async () => {
    for (const [from, app] of running.entries()) {
      const text = `from ${APPS[from]!.name}`;
      const res = await postJson(`${app.url}/broadcast`, { target: 'room', room: 'lobby', message: { text } });
      expect(res.body.result).toMatchObject({ recipients: 1, delivered: 1 }); // the local member; the others are on other nodes
      await Promise.all(clients.map((c, i) => c.next((m) => m?.text === text, `"${text}" at ${APPS[i]!.name}`)));
    }
    for (const c of clients) expect(c.received.filter((m: any) => typeof m?.text === 'string' && m.text.startsWith('from '))).toHaveLength(3);
  });

  it("shares presence: a room's users on every app, and join events reach the members on the other apps", async () => {
    clients[0]!.send({ type: 'who', room: 'lobby' });
    const list = await clients[0]!.next((m) => m?.type === 'presence' && m.room === 'lobby', 'the presence list');
    expect(list).toEqual({
      type: 'presence',
      room: 'lobby',
      users: [
        { userId: 'user0', connections: 1 },
        { userId: 'user1', connections: 1 },
        { userId: 'user2', connections: 1 },
      ],
      connections: 3,
    });
    const late = await connectClient(APPS[1]!, running[1]!.url, 'late');
    clients.push(late);
    await late.join('lobby');
    for (const i of [0, 2]) {
      expect(await clients[i]!.next((m) => m?.type === 'bcast.presence' && m.userId === 'late', `the join event at ${APPS[i]!.name}`)).toEqual({ type: 'bcast.presence', room: 'lobby', event: 'join', userId: 'late' });
    }
  });

  it('recovers on another app what a client missed: the room history is shared', async () => {
    const first = await connectClient(APPS[0]!, running[0]!.url, 'rover');
    await first.join('news');
    await postJson(`${running[2]!.url}/broadcast`, { target: 'room', room: 'news', message: { text: 'seen' } });
    await first.next((m) => m?.text === 'seen');
    const seen = first.frames.find((f: any) => f?.data?.text === 'seen') as { offset: number; epoch: string };
    await first.close();
    for (const text of ['missed 1', 'missed 2', 'missed 3']) await postJson(`${running[2]!.url}/broadcast`, { target: 'room', room: 'news', message: { text } });

    const again = await connectClient(APPS[1]!, running[1]!.url, 'rover');
    clients.push(again);
    again.send({ type: 'join', room: 'news', since: { offset: seen.offset, epoch: seen.epoch }, requestId: 'rejoin' });
    const ok = await again.next((m) => m?.requestId === 'rejoin', 'the answer to the rejoin');
    // Missed: three messages (presence events are not kept in a room's history: they take no offset).
    expect(ok).toEqual({ type: 'ok', op: 'join', room: 'news', requestId: 'rejoin', recovered: true, position: { offset: seen.offset + 3, epoch: seen.epoch } });
    expect(again.received.filter((m: any) => typeof m?.text === 'string').map((m: any) => m.text)).toEqual(['missed 1', 'missed 2', 'missed 3']);
  });

  it('delivers a user broadcast to that user on another node', async () => {
    const res = await postJson(`${running[0]!.url}/broadcast`, { target: 'user', userId: 'user1', message: { text: 'to user1' } });
    expect(res.status).toBe(200);
    await clients[1]!.next((m) => m?.text === 'to user1', 'the message to user1 on socketio-chat');
  });
});

describe.skipIf(why !== undefined)('one trace across app processes', () => {
  it('shows the delivery on the other node as bcast.deliver under the publishing bcast.broadcast', async () => {
    const receiver = await startOtlpReceiver();
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: '50', BCAST_REDIS_URL: REDIS_URL, BCAST_REDIS_CHANNEL: `bcast-apps-test-${randomUUID()}` };
    const [publisher, other] = await Promise.all([startAppProcess(APPS[0]!, env), startAppProcess(APPS[1]!, env)]);
    try {
      const client = await connectClient(APPS[1]!, other.url, 'dana');
      await client.join('ops');
      await postJson(`${publisher.url}/broadcast`, { target: 'room', room: 'ops', message: { text: 'across' } });
      await client.next((m) => m?.text === 'across', 'the message on the other node');
      await client.close();

      const http = await receiver.waitForSpan((s) => s.service === APPS[0]!.serviceName && attr(s, 'url.path') === '/broadcast', 'the POST span');
      const published = await receiver.waitForSpan((s) => s.name === 'bcast.broadcast' && s.parentSpanId === http.spanId, 'the publishing broadcast');
      expect(attr(published, 'bcast.backplane')).toBe('published');
      expect(published.kind).toBe(PRODUCER);
      expect(attr(published, 'messaging.operation.type')).toBe('send');
      const deliver = await receiver.waitForSpan((s) => s.name === 'bcast.deliver' && s.traceId === http.traceId, 'bcast.deliver in the same trace');
      expect(deliver.service).toBe(APPS[1]!.serviceName);
      expect(deliver.parentSpanId).toBe(published.spanId);
      expect(deliver.kind).toBe(CONSUMER);
      expect(attr(deliver, 'messaging.operation.type')).toBe('process');
      expect(attr(deliver, 'bcast.delivered')).toBe(1);
      // One span per remote delivery: the fan-out on the other node is the bcast.deliver span itself.
      // (Anything of this trace ending before it on that node was exported with it or earlier.)
      expect(receiver.spans.filter((s) => s.traceId === http.traceId && s.service === APPS[1]!.serviceName).map((s) => s.name)).toEqual(['bcast.deliver']);
    } finally {
      await Promise.all([publisher.stop(), other.stop()]);
      await receiver.close();
    }
  });
});
