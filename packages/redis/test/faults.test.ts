import { randomUUID } from 'node:crypto';
import type { BroadcastResult } from '@bcast/core';
import type { BackplaneHealthStatus } from '@bcast/core/backplane';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRedisBackplane, type RedisBackplane, type RedisBackplaneOptions } from '../src/index.js';
import { RedisServer, FaultProxy, freePort, node, processProblems, quietLogger, skipReason, until, whyNoRedisServer, type Node } from './helpers.js';

const skip = skipReason('fault tests (they run their own redis-server)', whyNoRedisServer());

/** Short intervals so that faults are found and repaired in seconds. */
const fast = { probeIntervalMs: 300, probeTimeoutMs: 300, reconnectBaseDelayMs: 100, reconnectMaxDelayMs: 500 } as const;
const RECOVERY_TIMEOUT_MS = 1_000;

describe.skipIf(skip)('Redis backplane under faults (own redis-server)', () => {
  let server: RedisServer;
  let admin: Redis;
  const cleanup: Array<() => Promise<unknown> | unknown> = [];
  const problems = processProblems();

  beforeAll(async () => {
    server = new RedisServer(await freePort());
    await server.start();
    admin = new Redis(server.url, { maxRetriesPerRequest: 1, retryStrategy: () => 100 });
    admin.on('error', () => {});
    problems.start();
  });
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
    if (!server.running) await server.start();
    expect(problems.list).toEqual([]);
  });
  afterAll(async () => {
    problems.stop();
    admin?.disconnect();
    await server?.kill();
  });

  const numsub = async (channel: string): Promise<number> => Number(((await admin.call('PUBSUB', 'NUMSUB', channel)) as [string, number])[1]);

  interface Member extends Node {
    readonly bp: RedisBackplane;
    readonly statuses: BackplaneHealthStatus[];
  }

  function member(nodeId: string, channel: string, options: RedisBackplaneOptions = {}): Member {
    const statuses: BackplaneHealthStatus[] = [];
    const bp = createRedisBackplane({ url: server.url, channel, nodeId, logger: quietLogger(), onHealthChange: (h) => statuses.push(h.status), ...fast, ...options });
    const n = node({
      backplane: bp,
      reliability: { scopes: { backplane: { circuitBreaker: { failureThreshold: 5, recoveryTimeoutMs: RECOVERY_TIMEOUT_MS } } } },
    });
    cleanup.push(
      () => bp.close(),
      () => n.broadcaster.dispose(),
    );
    return { ...n, bp, statuses };
  }

  /** Broadcasts from `from` every 100 ms until `to` receives one of them; returns the first seq received and the last seq sent. */
  async function deliveryResumes(from: Member, to: ReturnType<Member['add']>, tag: string, timeoutMs: number): Promise<{ first: number; last: number }> {
    let seq = 0;
    let stop = false;
    const pump = (async () => {
      while (!stop) {
        await from.broadcaster.toAll({ tag, seq: (seq += 1) });
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    try {
      const first = await to.waitFor((m) => m['tag'] === tag, timeoutMs);
      stop = true;
      await pump;
      return { first: first['seq'] as number, last: seq };
    } finally {
      stop = true;
      await pump;
    }
  }

  it('Redis SIGKILLed mid-stream: breaker opens, local delivery stays whole, health degrades, remote delivery resumes after restart', async () => {
    const channel = `faults-${randomUUID()}`;
    const A = member('A', channel);
    const B = member('B', channel);
    await Promise.all([A.broadcaster.ready(), B.broadcaster.ready()]);
    const a1 = A.add('a1');
    A.add('a2');
    const b1 = B.add('b1');

    await A.broadcaster.toAll({ tag: 'before', seq: 0 });
    await b1.waitFor((m) => m['tag'] === 'before');

    await server.kill();
    await until('A to see Redis gone', () => A.bp.health().status === 'degraded');

    const during: BroadcastResult[] = [];
    for (let i = 0; i < 20; i += 1) during.push(await A.broadcaster.toAll({ tag: 'during', seq: i }));
    // local delivery is untouched, the backplane failure is counted, never thrown
    expect(during.map((r) => r.delivered)).toEqual(Array(20).fill(2));
    expect(during.every((r) => r.backplane === 'failed' && r.backplaneError !== undefined)).toBe(true);
    expect(a1.messages.filter((m) => m['tag'] === 'during')).toHaveLength(20);
    expect(A.broadcaster.getHealthStatus().reliability.circuits['backplane']).toMatchObject({ state: 'open', opens: 1 });
    expect(during.some((r) => r.backplaneError === 'BCAST_CIRCUIT_OPEN')).toBe(true);
    const stats = A.broadcaster.getStats();
    expect(stats.monitor.backplane.publishErrors).toBe(20);
    // a dead Redis costs one fast failure per broadcast once the circuit is open: far fewer wire attempts than broadcasts
    expect(A.bp.stats().publishErrors).toBeLessThan(20);

    const health = A.broadcaster.getHealthStatus();
    expect(health.status).toBe('degraded');
    expect(health.reasons.join('\n')).toMatch(/circuit "backplane" is open/);
    expect(health.reasons.join('\n')).toMatch(/backplane: Redis publisher not connected/);
    expect(B.bp.health()).toMatchObject({ status: 'degraded' });
    expect(B.bp.health().reasons.join('\n')).toMatch(/subscriber not connected/);

    await server.start();
    const after = await deliveryResumes(A, b1, 'after', RECOVERY_TIMEOUT_MS + 2_000);
    await A.broadcaster.toAll({ tag: 'fence' });
    await b1.waitFor((m) => m['tag'] === 'fence');
    // nothing published during the outage was queued and replayed afterwards
    expect(b1.messages.filter((m) => m['tag'] === 'during')).toEqual([]);
    // from the first broadcast delivered after the restart on, every one arrives once and in order;
    // the ones that failed before it (circuit open, reconnecting) never arrive late
    const seqs = b1.messages.filter((m) => m['tag'] === 'after').map((m) => m['seq']);
    expect(seqs).toEqual(Array.from({ length: after.last - after.first + 1 }, (_, i) => after.first + i));
    await until('A healthy again', () => A.broadcaster.getHealthStatus().status === 'healthy');
    await until('B healthy again', () => B.bp.health().status === 'healthy');
    expect(A.statuses).toEqual(['degraded', 'healthy', 'degraded', 'healthy']);
    expect(await numsub(channel)).toBe(2);
    expect(problems.list).toEqual([]);
  });

  it('publishes while disconnected fail fast and are never queued and replayed after the reconnect', async () => {
    const channel = `faults-${randomUUID()}`;
    const proxy = new FaultProxy(server.port);
    await proxy.listen();
    cleanup.push(() => proxy.close());
    const A = member('A', channel, { url: proxy.url });
    const B = member('B', channel);
    await Promise.all([A.broadcaster.ready(), B.broadcaster.ready()]);
    const b1 = B.add('b1');
    await A.broadcaster.toAll({ tag: 'before' });
    await b1.waitFor((m) => m['tag'] === 'before');

    proxy.refuse();
    expect(proxy.dropAll()).toBe(2); // A's publisher and subscriber; B stays subscribed throughout
    await until('A to see Redis gone', () => A.bp.health().status === 'degraded');
    const during = await Promise.all(Array.from({ length: 10 }, (_, seq) => A.broadcaster.toAll({ tag: 'during', seq })));
    expect(during.every((r) => r.backplane === 'failed')).toBe(true);

    proxy.accept();
    await deliveryResumes(A, b1, 'after', RECOVERY_TIMEOUT_MS + 5_000);
    expect(b1.messages.filter((m) => m['tag'] === 'during')).toEqual([]);
    expect(problems.list).toEqual([]);
  });

  it('subscriber connections killed (CLIENT KILL TYPE pubsub): detected, health degraded meanwhile, repaired without duplicate subscriptions', async () => {
    const channel = `faults-${randomUUID()}`;
    const A = member('A', channel);
    const B = member('B', channel);
    await Promise.all([A.broadcaster.ready(), B.broadcaster.ready()]);
    const b1 = B.add('b1');
    await A.broadcaster.toAll({ tag: 'before' });
    await b1.waitFor((m) => m['tag'] === 'before');
    await until('a first probe', () => B.bp.stats().probe.ok >= 1);
    const before = B.statuses.length;

    expect(Number(await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub'))).toBeGreaterThanOrEqual(2);

    await until('B to notice', () => B.statuses.slice(before).includes('degraded'));
    await deliveryResumes(A, b1, 'after', 5_000);
    await until('B healthy again', () => B.bp.health().status === 'healthy');
    expect(B.statuses.slice(before)).toEqual(['degraded', 'healthy']);
    expect(B.bp.stats().subscriptions).toBe(2);
    await until('a probe after the repair', () => B.bp.stats().probe.consecutiveFailures === 0 && B.bp.stats().probe.ok >= 2);
    expect(await numsub(channel)).toBe(2);
    expect(problems.list).toEqual([]);
  });

  it.each(['ioredis', 'node-redis'] as const)('a subscriber starved while its TCP connection stays up is found only by the probe, reconnected, and its zombie killed (%s)', async (library) => {
    const channel = `faults-${randomUUID()}`;
    const proxy = new FaultProxy(server.port);
    await proxy.listen();
    cleanup.push(() => proxy.close());
    const A = member('A', channel);
    let viaProxy: RedisBackplaneOptions = { url: proxy.url };
    if (library === 'node-redis') {
      const client = createClient({ url: proxy.url, disableOfflineQueue: true });
      client.on('error', () => {});
      await client.connect();
      cleanup.push(() => client.destroy());
      viaProxy = { client };
    }
    const B = member('B', channel, viaProxy);
    await Promise.all([A.broadcaster.ready(), B.broadcaster.ready()]);
    const b1 = B.add('b1');
    await A.broadcaster.toAll({ tag: 'before' });
    await b1.waitFor((m) => m['tag'] === 'before');
    await until('a first probe', () => B.bp.stats().probe.ok >= 1);
    const before = B.statuses.length;

    expect(proxy.starveSubscribers()).toBe(1);
    // Nothing tells the client: Redis still counts the subscription, the socket is open.
    expect(await numsub(channel)).toBe(2);

    await until('B degraded by the probe', () => B.statuses.slice(before).includes('degraded'), 5_000);
    const reasons = (): string => B.bp.stats().probe.lastFailure ?? '';
    expect(reasons()).toMatch(/no echo within 300 ms/);
    await deliveryResumes(A, b1, 'after', 5_000);
    await until('B healthy again', () => B.bp.health().status === 'healthy');
    expect(B.bp.stats()).toMatchObject({ client: library });
    expect(B.bp.stats().subscriberRecoveries).toBeGreaterThanOrEqual(1);
    expect(B.bp.stats().publisherResets).toBe(0); // the subscriber was the failing side, not the publisher
    // the starved connection is still open on the server side: the node found and killed it
    await until('one subscription per node', async () => (await numsub(channel)) === 2);
    expect(B.bp.stats().staleSubscribersKilled).toBeGreaterThanOrEqual(1);
    expect(problems.list).toEqual([]);
  });

  it.each(['ioredis', 'node-redis'] as const)(
    'a publisher whose PUBLISH replies are lost while its echoes arrive is found by the probe, named, and reset (%s)',
    async (library) => {
      const channel = `faults-${randomUUID()}`;
      const proxy = new FaultProxy(server.port);
      await proxy.listen();
      cleanup.push(() => proxy.close());
      const A = member('A', channel);
      let viaProxy: RedisBackplaneOptions = { url: proxy.url };
      if (library === 'node-redis') {
        const client = createClient({ url: proxy.url, disableOfflineQueue: true });
        client.on('error', () => {});
        await client.connect();
        cleanup.push(() => (client.isOpen ? client.destroy() : undefined));
        viaProxy = { client };
      }
      const B = member('B', channel, viaProxy);
      await Promise.all([A.broadcaster.ready(), B.broadcaster.ready()]);
      const a1 = A.add('a1');
      await B.broadcaster.toAll({ tag: 'before' });
      await a1.waitFor((m) => m['tag'] === 'before');
      await until('a first probe', () => B.bp.stats().probe.ok >= 1);
      const before = B.statuses.length;

      // The bytes of B's publisher replies are lost: its PUBLISHes reach Redis (the echoes come
      // back on the subscriber) but none is ever answered. No traffic: only the probe can tell.
      expect(proxy.swallowPublisherReplies()).toBe(1);
      await until('B degraded by the probe', () => B.statuses.slice(before).includes('degraded'), 5_000);
      expect(B.bp.stats().probe.lastFailure).toMatch(/^PUBLISH got no reply within 300 ms \(its echo arrived\)/);
      await until('B healthy again', () => B.bp.health().status === 'healthy', 5_000);
      expect(B.statuses.slice(before)).toEqual(['degraded', 'healthy']);
      // the publisher was the failing side, not the subscriber
      expect(B.bp.stats()).toMatchObject({ client: library, publisherResets: 1, subscriberRecoveries: 0 });
      await deliveryResumes(B, a1, 'after', 5_000);
      await until('a probe after the reset', () => B.bp.stats().probe.consecutiveFailures === 0);
      expect(problems.list).toEqual([]);
    },
  );

  it.each(['ioredis', 'node-redis'] as const)(
    'through the broadcaster, a publish whose reply is lost is "unknown" and delivered once (never retried); the connection is replaced and the next broadcast is published (%s)',
    async (library) => {
      const channel = `faults-${randomUUID()}`;
      const proxy = new FaultProxy(server.port);
      await proxy.listen();
      cleanup.push(() => proxy.close());
      const A = member('A', channel);
      let viaProxy: RedisBackplaneOptions = { url: proxy.url };
      if (library === 'node-redis') {
        const client = createClient({ url: proxy.url, disableOfflineQueue: true });
        client.on('error', () => {});
        await client.connect();
        cleanup.push(() => (client.isOpen ? client.destroy() : undefined));
        viaProxy = { client };
      }
      // no probe on B: the publish timeout alone finds the broken connection
      const B = member('B', channel, { ...viaProxy, probeIntervalMs: 0 });
      await Promise.all([A.broadcaster.ready(), B.broadcaster.ready()]);
      const a1 = A.add('a1');
      await B.broadcaster.toAll({ tag: 'before' });
      await a1.waitFor((m) => m['tag'] === 'before');

      expect(proxy.swallowPublisherReplies()).toBe(1);
      const lost = await B.broadcaster.toAll({ tag: 'lost' });
      expect(lost).toMatchObject({ backplane: 'unknown', backplaneError: 'BCAST_TIMEOUT' });
      await a1.waitFor((m) => m['tag'] === 'lost'); // it did arrive
      // the fresh connection is not ready for a few ms: those publishes are not written, so the broadcaster retries them
      const next = await B.broadcaster.toAll({ tag: 'next' });
      expect(next.backplane).toBe('published');
      await B.broadcaster.toAll({ tag: 'fence' });
      await a1.waitFor((m) => m['tag'] === 'fence');
      expect(a1.messages.map((m) => m['tag'])).toEqual(['before', 'lost', 'next', 'fence']);
      expect(B.bp.stats()).toMatchObject({ publisherResets: 1, publishTimeouts: expect.any(Number) as number });
      expect(B.bp.stats().publishTimeouts + B.bp.stats().publishAborts).toBe(1);
      expect(B.broadcaster.getHealthStatus().reliability.circuits['backplane']).toMatchObject({ state: 'closed', opens: 0 });
      expect(B.bp.health().status).toBe('healthy');
      expect(problems.list).toEqual([]);
    },
  );
});
