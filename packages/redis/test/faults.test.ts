import { randomUUID } from 'node:crypto';
import type { BroadcastResult, ScopeState } from '@bcast/core';
import type { Backplane, BackplaneHealthStatus } from '@bcast/core/backplane';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRedisBackplane, type RedisBackplane, type RedisBackplaneOptions } from '../src/index.js';
import { RedisServer, FaultProxy, freePort, node, processProblems, quietLogger, skipReason, until, whyNoRedisServer, type Node } from './helpers.js';

const skip = skipReason('fault tests (they run their own redis-server)', whyNoRedisServer());

/** Short intervals so that faults are found and repaired in seconds. */
const fast = { probeIntervalMs: 300, probeTimeoutMs: 300, reconnectBaseDelayMs: 100, reconnectMaxDelayMs: 500 } as const;
/** The tests' short halfOpenAfter (the breaker's recoveryTimeoutMs). */
const RECOVERY_TIMEOUT_MS = 1_000;
/** F3: how long Redis stays dead (the plan's 10 s under BCAST_LONG=1). */
const OUTAGE_MS = process.env['BCAST_LONG'] === '1' ? 10_000 : 1_500;

/** One PUBLISH through the backplane, and the state of the circuit when its outcome came back (before the breaker saw it). */
interface Attempt {
  readonly at: number;
  readonly ok: boolean;
  readonly circuit: string;
}

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
    readonly changes: Array<{ status: BackplaneHealthStatus; at: number }>;
  }

  /** A node on the backplane; with `attempts`, every PUBLISH it makes is recorded there. */
  function member(nodeId: string, channel: string, options: RedisBackplaneOptions = {}, attempts?: Attempt[]): Member {
    const statuses: BackplaneHealthStatus[] = [];
    const changes: Array<{ status: BackplaneHealthStatus; at: number }> = [];
    const onHealthChange: RedisBackplaneOptions['onHealthChange'] = (h) => {
      statuses.push(h.status);
      changes.push({ status: h.status, at: Date.now() });
    };
    const bp = createRedisBackplane({ url: server.url, channel, nodeId, logger: quietLogger(), onHealthChange, ...fast, ...options });
    let n: Node | undefined;
    const circuit = (): string => n?.broadcaster.getStats().reliability['backplane']?.state ?? 'closed';
    const observed: Backplane = {
      nodeId: bp.nodeId,
      publish: (envelope, o) =>
        bp.publish(envelope, o).then(
          () => void attempts?.push({ at: Date.now(), ok: true, circuit: circuit() }),
          (error: unknown) => {
            attempts?.push({ at: Date.now(), ok: false, circuit: circuit() });
            throw error;
          },
        ),
      subscribe: (handler) => bp.subscribe(handler),
      close: () => bp.close(),
      health: () => bp.health(),
    };
    n = node({
      backplane: attempts === undefined ? bp : observed,
      reliability: { scopes: { backplane: { circuitBreaker: { failureThreshold: 5, recoveryTimeoutMs: RECOVERY_TIMEOUT_MS } } } },
    });
    cleanup.push(
      () => bp.close(),
      () => n.broadcaster.dispose(),
    );
    return { ...n, bp, statuses, changes };
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

  it('F3 Redis SIGKILL during a storm: the breaker opens after 5 failures ≤ 1 s after the kill, remote publishes then fail fast (circuit_open), local delivery stays whole, remote delivery resumes ≤ halfOpenAfter + 2 s after the restart, nothing replayed', async () => {
    const channel = `faults-${randomUUID()}`;
    const attempts: Attempt[] = [];
    const A = member('A', channel, {}, attempts);
    const B = member('B', channel);
    await Promise.all([A.broadcaster.ready(), B.broadcaster.ready()]);
    const a1 = A.add('a1');
    const a2 = A.add('a2');
    const b1 = B.add('b1');
    const circuit = (): ScopeState | undefined => A.broadcaster.getStats().reliability['backplane'];

    // the storm: cross-node broadcasts every 2 ms (the plan's 500/s, as far as a timer allows), none awaited by the pump
    const sent: Array<{ seq: number; at: number; result?: BroadcastResult }> = [];
    let stop = false;
    const inFlight = new Set<Promise<unknown>>();
    const pump = (async () => {
      for (let seq = 1; !stop; seq += 1) {
        const entry: (typeof sent)[number] = { seq, at: Date.now() };
        sent.push(entry);
        const p = A.broadcaster.toAll({ tag: 'storm', seq }).then((r) => void (entry.result = r));
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    try {
      await until('the storm to cross over', () => b1.messages.filter((m) => m['tag'] === 'storm').length >= 50);

      const killedAt = Date.now();
      await server.kill();
      const opened = await until('the circuit to open', () => (circuit()?.state === 'open' ? circuit() : undefined), 5_000);
      const openedAt = opened.lastTransitionAt ?? Number.NaN;
      // the 5 failures that opened it: wire attempts that failed while the circuit was still closed
      expect(attempts.filter((a) => !a.ok && a.at >= killedAt && a.circuit === 'closed')).toHaveLength(5);
      expect(openedAt - killedAt).toBeLessThanOrEqual(1_000);
      expect(opened.opens).toBe(1);

      await new Promise((r) => setTimeout(r, OUTAGE_MS));
      const health = A.broadcaster.getHealthStatus();
      expect(health.status).toBe('degraded');
      expect(health.reasons.join('\n')).toMatch(/circuit "backplane" is open/);
      expect(health.reasons.join('\n')).toMatch(/backplane: Redis publisher not connected/);
      expect(B.bp.health().status).toBe('degraded');
      expect(B.bp.health().reasons.join('\n')).toMatch(/subscriber not connected/);
      const restartAt = Date.now();
      const lastSeqBeforeRestart = sent.length;
      await server.start();
      // remote delivery resumes: a broadcast sent after the restart reaches B
      await b1.waitFor((m) => m['tag'] === 'storm' && (m['seq'] as number) > lastSeqBeforeRestart, RECOVERY_TIMEOUT_MS + 2_000);
      const resumedMs = Date.now() - restartAt;
      expect(resumedMs).toBeLessThanOrEqual(RECOVERY_TIMEOUT_MS + 2_000);
      await new Promise((r) => setTimeout(r, 200));
      stop = true;
      await pump;
      await Promise.all([...inFlight]);

      const results = sent.map((e) => e.result!);
      // local delivery is untouched throughout, and nothing is thrown
      expect(results.every((r) => r.delivered === 2)).toBe(true);
      for (const c of [a1, a2]) expect(c.messages.filter((m) => m['tag'] === 'storm').map((m) => m['seq'])).toEqual(sent.map((e) => e.seq));

      // while open, remote publishes fail fast, as circuit_open, without a wire attempt (only the half-open trials touch the wire)
      const open = results.filter((r) => r.backplaneError === 'BCAST_CIRCUIT_OPEN');
      expect(open.length).toBeGreaterThan(100);
      expect(open.every((r) => r.backplane === 'failed')).toBe(true);
      const openMs = open.map((r) => r.durationMs).sort((x, y) => x - y);
      expect(openMs[Math.floor(openMs.length * 0.99)]).toBeLessThan(50);
      const stats = A.broadcaster.getStats();
      expect(stats.monitor.dropped['circuit_open']).toBe(open.length);
      const outageAttempts = attempts.filter((a) => a.at >= openedAt && a.at < restartAt);
      expect(outageAttempts.length).toBeLessThanOrEqual(3 * (Math.ceil(OUTAGE_MS / RECOVERY_TIMEOUT_MS) + 1));

      // nothing that failed was queued and replayed later; nothing arrives twice
      await A.broadcaster.toAll({ tag: 'fence' });
      await b1.waitFor((m) => m['tag'] === 'fence');
      const got = b1.messages.filter((m) => m['tag'] === 'storm').map((m) => m['seq'] as number);
      expect(new Set(got).size).toBe(got.length);
      const failedSeqs = new Set(sent.filter((e) => e.result!.backplane === 'failed').map((e) => e.seq));
      expect(got.filter((seq) => failedSeqs.has(seq))).toEqual([]);
      // every broadcast published after the restart arrives, in order
      const after = sent.filter((e) => e.seq > lastSeqBeforeRestart && e.result!.backplane === 'published').map((e) => e.seq);
      expect(after.length).toBeGreaterThan(0);
      expect(got.filter((seq) => seq > lastSeqBeforeRestart)).toEqual(after);

      await until('A healthy again', () => A.broadcaster.getHealthStatus().status === 'healthy');
      await until('B healthy again', () => B.bp.health().status === 'healthy');
      expect(circuit()).toMatchObject({ state: 'closed' });
      expect(await numsub(channel)).toBe(2);
      console.info(
        `[F3] opened ${openedAt - killedAt} ms after the kill; ${results.length} broadcasts, ${open.length} circuit_open (p99 ${openMs[Math.floor(openMs.length * 0.99)]?.toFixed(1)} ms), ` +
          `${outageAttempts.length} wire attempts while open; resumed ${resumedMs} ms after the restart`,
      );
      expect(problems.list).toEqual([]);
    } finally {
      stop = true;
      await pump;
    }
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

  it('F5 Subscriber-only loss (CLIENT KILL TYPE pubsub): detected ≤ 2 × probe interval, health degraded meanwhile, cross-node delivery back ≤ 5 s, PUBSUB NUMSUB == number of nodes', async () => {
    const channel = `faults-${randomUUID()}`;
    const A = member('A', channel);
    const B = member('B', channel);
    await Promise.all([A.broadcaster.ready(), B.broadcaster.ready()]);
    const b1 = B.add('b1');
    await A.broadcaster.toAll({ tag: 'before' });
    await b1.waitFor((m) => m['tag'] === 'before');
    await until('a first probe', () => B.bp.stats().probe.ok >= 1);
    const before = B.statuses.length;

    const killedAt = Date.now();
    expect(Number(await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub'))).toBeGreaterThanOrEqual(2);

    await until('B to notice', () => B.statuses.slice(before).includes('degraded'), 2 * fast.probeIntervalMs + 1_000);
    const detectedMs = B.changes.slice(before).find((c) => c.status === 'degraded')!.at - killedAt;
    expect(detectedMs).toBeLessThanOrEqual(2 * fast.probeIntervalMs);
    await deliveryResumes(A, b1, 'after', 5_000);
    const backMs = Date.now() - killedAt;
    expect(backMs).toBeLessThanOrEqual(5_000);
    await until('B healthy again', () => B.bp.health().status === 'healthy');
    expect(B.statuses.slice(before)).toEqual(['degraded', 'healthy']);
    expect(B.bp.stats().subscriptions).toBe(2);
    await until('a probe after the repair', () => B.bp.stats().probe.consecutiveFailures === 0 && B.bp.stats().probe.ok >= 2);
    expect(await numsub(channel)).toBe(2); // two nodes, one subscription each
    console.info(`[F5] detected ${detectedMs} ms after the kill (limit ${2 * fast.probeIntervalMs}); cross-node delivery back after ${backMs} ms`);
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
