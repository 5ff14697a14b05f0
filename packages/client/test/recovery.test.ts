import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { guardProcess } from '../../../tests/support/processGuard.js';
import { BcastClient, type BcastClientError } from '../src/index.js';
import { collect, next, startFake, type FakeServer } from './helpers.js';

guardProcess();

let fake: FakeServer | undefined;
let client: BcastClient | undefined;
afterEach(async () => {
  await client?.close();
  await fake?.close();
  client = fake = undefined;
});

async function setup(): Promise<{ fake: FakeServer; client: BcastClient }> {
  fake = await startFake();
  client = new BcastClient({ url: fake.url, WebSocket, minReconnectDelayMs: 5, maxReconnectDelayMs: 20, requestTimeoutMs: 2_000 });
  return { fake, client };
}

const pub = (offset: number, data: unknown, epoch = 'e-abc', room = 'r') => ({ type: 'bcast.pub', room, offset, epoch, data });

describe('recovery (fake server with history)', () => {
  it('rejoins with since = the last position, takes the missed publications, and drops the duplicate at the seam', async () => {
    const { fake, client } = await setup();
    const got = collect(client);
    const joined = client.join('r');
    const join = await fake.nextFrame((f) => f.type === 'join');
    expect(join).toEqual({ type: 'join', room: 'r', requestId: '1' }); // first join: no since
    fake.send({ type: 'ok', op: 'join', room: 'r', requestId: join.requestId, position: { offset: 40, epoch: 'e-abc' } });
    expect((await joined).position).toEqual({ offset: 40, epoch: 'e-abc' });
    expect(client.positions).toEqual({ r: { offset: 40, epoch: 'e-abc' } });

    fake.send(pub(41, { n: 41 }));
    fake.send(pub(42, { n: 42 }));
    await got.waitFor(2);
    expect(got.messages).toEqual([
      [{ n: 41 }, { room: 'r', offset: 41, epoch: 'e-abc' }],
      [{ n: 42 }, { room: 'r', offset: 42, epoch: 'e-abc' }],
    ]);

    const recovery = next(client, 'recovery');
    fake.socket().terminate();
    const rejoin = await fake.nextFrame((f) => f.type === 'join');
    expect(rejoin).toEqual({ type: 'join', room: 'r', requestId: '2', since: { offset: 42, epoch: 'e-abc' } });
    // Missed publications first (overlapping the seam by one), then the ok.
    for (const n of [41, 42, 43, 44]) fake.send(pub(n, { n }));
    fake.send({ type: 'ok', op: 'join', room: 'r', requestId: rejoin.requestId, position: { offset: 44, epoch: 'e-abc' }, recovered: true });
    expect(await recovery).toEqual([{ room: 'r', recovered: true }]);
    expect(got.messages.map(([, m]) => m.offset)).toEqual([41, 42, 43, 44]);
    fake.send(pub(44, 'dup')); // a late duplicate is dropped too
    fake.send(pub(45, { n: 45 }));
    await got.waitFor(5);
    expect(got.messages.map(([d]) => d)).toEqual([{ n: 41 }, { n: 42 }, { n: 43 }, { n: 44 }, { n: 45 }]);
    expect(client.positions).toEqual({ r: { offset: 45, epoch: 'e-abc' } });
  });

  it('publications of several nodes arriving out of order: each delivered once, and a rejoin asks from the last contiguous offset', async () => {
    const { fake, client } = await setup();
    const got = collect(client);
    const joined = client.join('r');
    const join = await fake.nextFrame((f) => f.type === 'join');
    fake.send({ type: 'ok', op: 'join', room: 'r', requestId: join.requestId, position: { offset: 10, epoch: 'e-abc' } });
    await joined;
    for (const n of [11, 13, 12, 13, 15]) fake.send(pub(n, { n }));
    await got.waitFor(4);
    expect(got.messages.map(([, m]) => m.offset)).toEqual([11, 13, 12, 15]);
    expect(client.positions).toEqual({ r: { offset: 13, epoch: 'e-abc' } }); // 14 never came
    fake.socket().terminate();
    const rejoin = await fake.nextFrame((f) => f.type === 'join');
    expect(rejoin.since).toEqual({ offset: 13, epoch: 'e-abc' });
    for (const n of [14, 15]) fake.send(pub(n, { n }));
    fake.send({ type: 'ok', op: 'join', room: 'r', requestId: rejoin.requestId, position: { offset: 15, epoch: 'e-abc' }, recovered: true });
    await got.waitFor(5);
    expect(got.messages.map(([, m]) => m.offset)).toEqual([11, 13, 12, 15, 14]);
    expect(client.positions).toEqual({ r: { offset: 15, epoch: 'e-abc' } });
  });

  it('surfaces recovered: false as a recovery event and continues from the new position (new epoch)', async () => {
    const { fake, client } = await setup();
    const got = collect(client);
    const joined = client.join('r');
    const join = await fake.nextFrame((f) => f.type === 'join');
    fake.send({ type: 'ok', op: 'join', room: 'r', requestId: join.requestId, position: { offset: 7, epoch: 'e-1' } });
    await joined;
    fake.send(pub(8, 'eight', 'e-1'));
    await got.waitFor(1);

    const recovery = next(client, 'recovery');
    fake.socket().terminate();
    const rejoin = await fake.nextFrame((f) => f.type === 'join');
    expect(rejoin.since).toEqual({ offset: 8, epoch: 'e-1' });
    fake.send({ type: 'ok', op: 'join', room: 'r', requestId: rejoin.requestId, position: { offset: 3, epoch: 'e-2' }, recovered: false });
    expect(await recovery).toEqual([{ room: 'r', recovered: false }]);
    expect(client.positions.r).toEqual({ offset: 3, epoch: 'e-2' });
    fake.send(pub(3, 'old', 'e-2')); // at the position: already covered by the app's reload
    fake.send(pub(4, 'four', 'e-2'));
    await got.waitFor(2);
    expect(got.messages).toEqual([
      ['eight', { room: 'r', offset: 8, epoch: 'e-1' }],
      ['four', { room: 'r', offset: 4, epoch: 'e-2' }],
    ]);
  });

  it('treats a rejoin with since whose ok says nothing about recovery as not recovered', async () => {
    const { fake, client } = await setup();
    const joined = client.join('r');
    const join = await fake.nextFrame((f) => f.type === 'join');
    fake.send({ type: 'ok', op: 'join', room: 'r', requestId: join.requestId, position: { offset: 1, epoch: 'e' } });
    await joined;
    const recovery = next(client, 'recovery');
    fake.socket().terminate();
    const rejoin = await fake.nextFrame((f) => f.type === 'join');
    fake.send({ type: 'ok', op: 'join', room: 'r', requestId: rejoin.requestId });
    expect(await recovery).toEqual([{ room: 'r', recovered: false }]);
  });

  it('forgets a room whose rejoin is refused and reports it as an error event', async () => {
    const { fake, client } = await setup();
    const joined = client.join('r');
    const join = await fake.nextFrame((f) => f.type === 'join');
    fake.send({ type: 'ok', op: 'join', room: 'r', requestId: join.requestId });
    await joined;
    const error = next(client, 'error');
    fake.socket().terminate();
    const rejoin = await fake.nextFrame((f) => f.type === 'join');
    fake.send({ type: 'error', code: 'FORBIDDEN', message: 'no longer allowed', requestId: rejoin.requestId });
    const [e] = (await error) as [BcastClientError];
    expect(e).toMatchObject({ code: 'FORBIDDEN', room: 'r', message: 'no longer allowed' });
    expect(client.rooms.size).toBe(0);
  });

  it('emits presence events, app frames and error replies without a requestId', async () => {
    const { fake, client } = await setup();
    await next(client, 'open');
    const got = collect(client);
    const presence = next(client, 'presence');
    const error = next(client, 'error');
    fake.send({ type: 'bcast.presence', room: 'r', event: 'join', userId: 'alice' });
    fake.send({ type: 'error', code: 'RATE_LIMITED', message: 'too many messages; slow down' });
    fake.send({ type: 'chat', text: 'app' });
    fake.send('not json');
    fake.socket().send(Buffer.from([9]));
    expect(await presence).toEqual([{ room: 'r', event: 'join', userId: 'alice' }]);
    expect((await error)[0]).toMatchObject({ code: 'RATE_LIMITED' });
    const messages = await got.waitFor(3);
    expect(messages.slice(0, 2)).toEqual([
      [{ type: 'chat', text: 'app' }, {}],
      ['not json', {}],
    ]);
    expect(new Uint8Array(messages[2]![0] as ArrayBuffer)).toEqual(new Uint8Array([9]));
  });

  it('while disconnected: join() waits for the next open, leave() resolves at once and is not rejoined', async () => {
    const { fake, client } = await setup();
    const joinA = client.join('a');
    await fake.nextFrame((f) => f.type === 'join' && f.room === 'a'); // never answered: the socket drops
    fake.socket().terminate();
    await expect(joinA).rejects.toMatchObject({ code: 'DISCONNECTED', room: 'a' });
    expect(client.rooms.has('a')).toBe(true); // still wanted: it would be rejoined
    expect(client.state).toBe('reconnecting');
    const joinB = client.join('b');
    expect(await client.leave('a')).toEqual({ type: 'ok', op: 'leave', room: 'a' });
    await fake.connection(1);
    const rejoin = await fake.nextFrame((f) => f.type === 'join' && f.room === 'b');
    fake.send({ type: 'ok', op: 'join', room: 'b', requestId: rejoin.requestId });
    expect(await joinB).toMatchObject({ op: 'join', room: 'b' });
    expect(fake.received[1]!.filter((f) => f.type === 'join').map((f) => f.room)).toEqual(['b']);
  });
});
