import { Broadcaster, type BroadcasterOptions, type ConnectionEntry } from '@bcast/core';
import { afterEach, describe, expect, it } from 'vitest';
import { guardProcess } from '../../support/processGuard.js';
import { connect, type Client } from './support/clients.js';
import { ADAPTERS, startServer, type AdapterName, type Credentials, type Sut } from './support/servers.js';

guardProcess();

type AuthExpiryOptions = NonNullable<BroadcasterOptions['authExpiry']>;

// A3 credentials that expire or are revoked on open connections, on each adapter with real
// clients: closed with 1008 (or the app's 4xxx code) within expiry + grace + 1 s; `refresh` keeps a
// connection open without a reconnect; `revoke` closes one user's connections on every adapter of
// a Broadcaster, and no others.

const quiet = { warn: () => {}, error: () => {} };
const TTL_MS = 300;
const GRACE_MS = 100;

const suts: Sut[] = [];
const clients: Client[] = [];
const broadcasters: Broadcaster[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  for (const s of suts.splice(0)) await s.close();
  for (const b of broadcasters.splice(0)) await b.dispose();
});

/** `user:<id>` tokens; each identity expires TTL_MS after its authentication. */
function expiring(expiries: Map<string, number>) {
  return (c: Credentials) => {
    if (!c.token?.startsWith('user:')) return false;
    const userId = c.token.slice(5);
    const expiresAt = Date.now() + TTL_MS;
    expiries.set(userId, expiresAt);
    return { userId, expiresAt };
  };
}

describe.each(ADAPTERS.map((a) => [a] as const))('%s adapter', (adapter: AdapterName) => {
  async function start(authExpiry: AuthExpiryOptions) {
    const expiries = new Map<string, number>();
    const disconnects: Array<{ userId: string | undefined; code: number; reason: string; at: number }> = [];
    const sut = await startServer(adapter, {
      authenticate: expiring(expiries),
      broadcaster: {
        logger: quiet,
        pingIntervalMs: 0,
        authExpiry,
        onDisconnect: (e: ConnectionEntry, code, reason) => void disconnects.push({ userId: e.userId, code, reason, at: Date.now() }),
      },
    });
    suts.push(sut);
    return { sut, expiries, disconnects };
  }
  async function client(sut: Sut, user: string): Promise<Client> {
    const c = await connect(sut, { token: `user:${user}` });
    clients.push(c);
    return c;
  }
  /** On the wire: ws and express carry the code; socket.io has none (a server disconnect). */
  const wire = (code: number) => (adapter === 'socket.io' ? { code: 1001, reason: 'io server disconnect' } : { code, reason: 'authentication expired' });

  it.each([
    ['1008 (the default)', undefined, 1008],
    ['an application code (closeCode 4001)', 4001, 4001],
  ] as const)(`A3 an identity with expiresAt = now + ${TTL_MS} ms and graceMs ${GRACE_MS}: closed with %s within expiry + grace + 1 s, not before the grace ends`, async (_name, closeCode, code) => {
    const { sut, expiries, disconnects } = await start({ graceMs: GRACE_MS, ...(closeCode === undefined ? {} : { closeCode }) });
    const alice = await client(sut, 'alice');
    const other = await client(sut, 'bob');
    const closed = await alice.closed;
    const closedAt = Date.now();
    const expiresAt = expiries.get('alice')!;
    expect({ code: closed.code, reason: closed.reason }).toEqual(wire(code));
    expect(disconnects.find((d) => d.userId === 'alice')).toMatchObject({ code, reason: 'authentication expired' });
    const late = closedAt - expiresAt;
    console.info(`[A3 ${adapter}] closed with ${code} ${late} ms after expiresAt (grace ${GRACE_MS} ms)`);
    expect(late).toBeGreaterThanOrEqual(GRACE_MS);
    expect(late).toBeLessThanOrEqual(GRACE_MS + 1_000);
    expect(sut.broadcaster.connections.byUser('alice').size).toBe(0);
    // bob expires on his own schedule, not with alice
    await other.closed;
    const bob = disconnects.find((d) => d.userId === 'bob')!;
    expect(bob.at - expiries.get('bob')!).toBeGreaterThanOrEqual(GRACE_MS);
  });

  it('A3 refresh extends the expiry without a reconnect; when it says false, the connection is closed', async () => {
    const calls: number[] = [];
    const { sut, expiries, disconnects } = await start({
      graceMs: GRACE_MS,
      refresh: () => {
        calls.push(Date.now());
        return calls.length < 3 ? Date.now() + TTL_MS : false;
      },
    });
    const alice = await client(sut, 'alice');
    const firstExpiry = expiries.get('alice')!;
    const closed = await alice.closed;
    const closedAt = Date.now();
    // refreshed twice (the same connection: no reconnect), then closed at the third expiry
    expect(calls).toHaveLength(3);
    expect(calls[0]! - firstExpiry).toBeGreaterThanOrEqual(GRACE_MS);
    expect(closedAt - firstExpiry).toBeGreaterThanOrEqual(2 * TTL_MS + GRACE_MS);
    expect({ code: closed.code, reason: closed.reason }).toEqual(wire(1008));
    expect(disconnects).toEqual([expect.objectContaining({ userId: 'alice', code: 1008, reason: 'authentication expired' })]);
  });

  it('A3 refresh keeps a connection open past its expiry and it keeps receiving broadcasts', async () => {
    let refreshed = 0;
    const { sut, expiries } = await start({
      graceMs: GRACE_MS,
      refresh: () => {
        refreshed += 1;
        return Date.now() + 60_000;
      },
    });
    const alice = await client(sut, 'alice');
    const expiresAt = expiries.get('alice')!;
    await expect.poll(() => refreshed, { timeout: TTL_MS + GRACE_MS + 1_000 }).toBe(1);
    expect(Date.now()).toBeGreaterThanOrEqual(expiresAt + GRACE_MS);
    await sut.broadcaster.toUser('alice', { type: 'after-refresh' });
    await alice.waitFor((v) => (v as { type?: string }).type === 'after-refresh', 2_000);
    expect(alice.isOpen).toBe(true);
    expect(sut.broadcaster.connections.byUser('alice').size).toBe(1);
  });
});

describe('A3 revocation', () => {
  it("A3 broadcaster.revoke({ userId }) closes that user's connections on every adapter of the broadcaster (1008 'access revoked'), and no others", async () => {
    const disconnects: Array<{ userId: string | undefined; code: number; reason: string }> = [];
    const broadcaster = new Broadcaster({ logger: quiet, pingIntervalMs: 0, onDisconnect: (e, code, reason) => void disconnects.push({ userId: e.userId, code, reason }) });
    broadcasters.push(broadcaster);
    const authenticate = (c: Credentials) => (c.token?.startsWith('user:') ? c.token.slice(5) : false);
    for (const adapter of ADAPTERS) suts.push(await startServer(adapter, { broadcaster, authenticate }));
    const alice: Client[] = [];
    const bob: Client[] = [];
    for (const s of suts) {
      for (const [list, user] of [[alice, 'alice'], [bob, 'bob']] as const) {
        const c = await connect(s, { token: `user:${user}` });
        clients.push(c);
        list.push(c);
      }
    }
    expect(broadcaster.connections.size).toBe(6);
    expect(broadcaster.revoke({ userId: 'alice' })).toBe(3);
    const closes = await Promise.all(alice.map((c) => c.closed));
    expect(closes.map((c) => ({ adapter: alice[closes.indexOf(c)]!.adapter, code: c.code, reason: c.reason }))).toEqual([
      { adapter: 'ws', code: 1008, reason: 'access revoked' },
      { adapter: 'express', code: 1008, reason: 'access revoked' },
      { adapter: 'socket.io', code: 1001, reason: 'io server disconnect' },
    ]);
    expect(disconnects).toEqual(Array.from({ length: 3 }, () => ({ userId: 'alice', code: 1008, reason: 'access revoked' })));
    expect(broadcaster.connections.byUser('alice').size).toBe(0);
    // bob, on every adapter, is untouched and still served
    const result = await broadcaster.toAll({ type: 'after-revoke' });
    expect(result).toMatchObject({ recipients: 3, delivered: 3 });
    for (const c of bob) {
      await c.waitFor((v) => (v as { type?: string }).type === 'after-revoke', 2_000);
      expect(c.isOpen).toBe(true);
    }
    // revoke by connection id: exactly that one
    const [one] = [...broadcaster.connections.byUser('bob')];
    expect(broadcaster.revoke({ connectionId: one!.id })).toBe(1);
    await expect.poll(() => broadcaster.connections.byUser('bob').size).toBe(2);
    expect(broadcaster.revoke({ userId: 'nobody' })).toBe(0);
  });
});
