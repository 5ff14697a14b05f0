import { randomUUID } from 'node:crypto';
import { ErrorCode, isBcastError } from '@bcast/core';
import { ENVELOPE_VERSION, type BackplaneEnvelope } from '@bcast/core/backplane';
import { createClient } from 'redis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRedisBackplane, type RedisBackplane, type RedisBackplaneOptions } from '../src/index.js';
import { FaultProxy, RedisServer, freePort, processProblems, quietLogger, settle, skipReason, until, whyNoRedisServer, type Outcome } from './helpers.js';

const skip = skipReason('publish tests (they run their own redis-server)', whyNoRedisServer());
const libraries = ['ioredis', 'node-redis'] as const;
type Library = (typeof libraries)[number];

/** A publish settled with a BcastError of `code` whose details.written is `written`. */
function rejectedWith(outcome: Outcome<void>, code: ErrorCode, written: boolean): void {
  expect(outcome.ok, 'the publish should have rejected').toBe(false);
  const error = outcome.ok ? undefined : outcome.error;
  expect(isBcastError(error, code), `expected ${code}, got ${String(error)}`).toBe(true);
  expect((error as { details?: { written?: unknown } }).details?.written).toBe(written);
}

describe.skipIf(skip)('publish: not written vs written, timeouts, resets, slow vs down (own redis-server)', () => {
  let server: RedisServer;
  const cleanup: Array<() => Promise<unknown> | unknown> = [];
  const problems = processProblems();

  beforeAll(async () => {
    problems.start();
    server = new RedisServer(await freePort());
    await server.start();
  });
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
    server.resume();
    expect(problems.list).toEqual([]);
  });
  afterAll(async () => {
    problems.stop();
    await server?.kill();
  });

  let seq = 0;
  const envelope = (nodeId: string): BackplaneEnvelope => ({
    v: ENVELOPE_VERSION,
    id: `m${(seq += 1)}-${randomUUID()}`,
    nodeId,
    op: 'all',
    enc: 'json',
    payload: JSON.stringify({ seq }),
    ts: Date.now(),
  });

  async function proxyTo(target: RedisServer): Promise<FaultProxy> {
    const proxy = new FaultProxy(target.port);
    await proxy.listen();
    cleanup.push(() => proxy.close());
    return proxy;
  }

  /** The node under test, publishing through `url` with the given library; no probe unless asked. */
  async function publisher(library: Library, url: string, channel: string, options: RedisBackplaneOptions = {}): Promise<RedisBackplane> {
    let via: RedisBackplaneOptions = { url };
    if (library === 'node-redis') {
      const client = createClient({ url, disableOfflineQueue: true });
      client.on('error', () => {});
      await client.connect();
      cleanup.push(() => (client.isOpen ? client.destroy() : undefined));
      via = { client };
    }
    const bp = createRedisBackplane({ channel, nodeId: 'A', logger: quietLogger(), probeIntervalMs: 0, ...via, ...options });
    cleanup.push(() => bp.close());
    expect(await bp.ready(5_000)).toBe(true);
    return bp;
  }

  /** Another node, straight to `target`, that records the envelopes it receives. */
  async function receiver(target: RedisServer, channel: string): Promise<{ ids: Set<string>; got: (id: string) => Promise<boolean> }> {
    const bp = createRedisBackplane({ url: target.url, channel, nodeId: 'B', logger: quietLogger(), probeIntervalMs: 0 });
    cleanup.push(() => bp.close());
    const ids = new Set<string>();
    await bp.subscribe((e) => ids.add(e.id));
    expect(await bp.ready(5_000)).toBe(true);
    return { ids, got: (id) => until(`envelope ${id} on B`, () => ids.has(id), 5_000) };
  }

  it.each(libraries)('%s: rejects at once with written:false while not connected; a failure after the write is never written:false', async (library) => {
    const channel = `publish-${randomUUID()}`;
    const proxy = await proxyTo(server);
    const B = await receiver(server, channel);
    const A = await publisher(library, proxy.url, channel, { publishTimeoutMs: 10_000 });
    const first = envelope('A');
    await A.publish(first);
    await B.got(first.id);

    // in flight: the PUBLISH reached Redis (B got it), its reply is lost, then the connection drops
    expect(proxy.swallowPublisherReplies()).toBe(1);
    const inFlight = envelope('A');
    const pending = A.publish(inFlight);
    await B.got(inFlight.id);
    proxy.refuse();
    proxy.dropAll();
    rejectedWith(await settle(pending, 2_000), ErrorCode.BackplaneUnavailable, true);

    // not connected (reconnecting, refused): nothing is written, so it may be retried
    await until('A publisher down', () => A.stats().publisher !== 'ready');
    for (let i = 0; i < 3; i += 1) {
      const notWritten = envelope('A');
      const outcome = await settle(A.publish(notWritten), 1_000);
      rejectedWith(outcome, ErrorCode.BackplaneUnavailable, false);
      expect(outcome.ms).toBeLessThan(100);
    }

    proxy.accept();
    const after = envelope('A');
    await until('a publish after the reconnect', () => A.publish(after).then(() => true), 5_000);
    await B.got(after.id);

    await A.close();
    rejectedWith(await settle(A.publish(envelope('A')), 1_000), ErrorCode.BackplaneUnavailable, false);
  });

  it.each(libraries)('%s: a PUBLISH with no reply times out after publishTimeoutMs (written:true), the connection is reset, publishing resumes', async (library) => {
    const channel = `publish-${randomUUID()}`;
    const proxy = await proxyTo(server);
    const B = await receiver(server, channel);
    const A = await publisher(library, proxy.url, channel);
    await A.publish(envelope('A'));

    expect(proxy.swallowPublisherReplies()).toBe(1);
    const lost = envelope('A');
    const outcome = await settle(A.publish(lost), 2_000);
    rejectedWith(outcome, ErrorCode.Timeout, true);
    expect(outcome.ms).toBeGreaterThanOrEqual(240); // the default publishTimeoutMs, 250
    expect(outcome.ms).toBeLessThan(500);
    await B.got(lost.id); // "unknown", not "failed": it did arrive

    const resetAt = performance.now();
    await until('a new publisher connection', () => A.stats().publisherResets === 1 && A.stats().publisher === 'ready', 5_000);
    const next = envelope('A');
    await A.publish(next);
    await B.got(next.id);
    const recoveryMs = performance.now() - resetAt;
    expect(recoveryMs).toBeLessThan(1_000);
    expect(A.stats()).toMatchObject({ publishTimeouts: 1, publisherResets: 1 });
    // the hung connection is out of use: closed when the backplane owned it, left to its owner otherwise
    expect(proxy.open.publishers).toBe(library === 'ioredis' ? 1 : 2);
  });

  it.each(libraries)('%s: an aborted signal ends a publish in flight at once and resets the connection; an already aborted one writes nothing', async (library) => {
    const channel = `publish-${randomUUID()}`;
    const proxy = await proxyTo(server);
    const B = await receiver(server, channel);
    const A = await publisher(library, proxy.url, channel, { publishTimeoutMs: 10_000 });
    await A.publish(envelope('A'));

    const early = new AbortController();
    early.abort();
    const never = envelope('A');
    rejectedWith(await settle(A.publish(never, { signal: early.signal }), 1_000), ErrorCode.Timeout, false);

    expect(proxy.swallowPublisherReplies()).toBe(1);
    const controller = new AbortController();
    const inFlight = envelope('A');
    const pending = A.publish(inFlight, { signal: controller.signal });
    await B.got(inFlight.id);
    controller.abort();
    const outcome = await settle(pending, 1_000);
    rejectedWith(outcome, ErrorCode.Timeout, true);
    expect(outcome.ms).toBeLessThan(100);

    await until('a new publisher connection', () => A.stats().publisherResets === 1 && A.stats().publisher === 'ready', 5_000);
    const next = envelope('A');
    await A.publish(next, { signal: new AbortController().signal });
    await B.got(next.id);
    expect(B.ids.has(never.id)).toBe(false);
  });

  it.each(libraries)('%s: Redis hangs (SIGSTOP): one timeout, then fail fast without writing until SIGCONT, then publishing resumes', async (library) => {
    const hung = new RedisServer(await freePort());
    await hung.start();
    cleanup.push(() => hung.kill());
    const channel = `publish-${randomUUID()}`;
    const B = await receiver(hung, channel);
    const A = await publisher(library, hung.url, channel);
    await A.publish(envelope('A'));

    hung.pause();
    cleanup.push(() => hung.resume());
    rejectedWith(await settle(A.publish(envelope('A')), 2_000), ErrorCode.Timeout, true);
    await until('the publisher reset', () => A.stats().publisherResets >= 1);
    // While Redis hangs, the fresh connection cannot finish its handshake: publishes fail fast.
    const whileHung = await settle(A.publish(envelope('A')), 1_000);
    rejectedWith(whileHung, ErrorCode.BackplaneUnavailable, false);
    expect(whileHung.ms).toBeLessThan(100);
    expect(A.health().details).toMatchObject({ publishing: 'down' });

    hung.resume();
    const resumedAt = performance.now();
    const next = envelope('A');
    await until('a publish after SIGCONT', () => A.publish(next).then(() => true), 5_000, 10);
    await B.got(next.id);
    expect(performance.now() - resumedAt).toBeLessThan(2_000);
    expect(A.health().status).toBe('healthy');
  });

  it('slow is not down: late replies degrade health with the publish p99, and every message still arrives', async () => {
    const channel = `publish-${randomUUID()}`;
    const proxy = await proxyTo(server);
    const B = await receiver(server, channel);
    const changes: string[] = [];
    const A = await publisher('ioredis', proxy.url, channel, { slowPublishMs: 40, onHealthChange: (h) => changes.push(`${h.status}: ${h.reasons.join('; ')}`) });
    for (let i = 0; i < 5; i += 1) await A.publish(envelope('A'));
    expect(A.health()).toMatchObject({ status: 'healthy', details: { publishing: 'ok' } });

    proxy.delayReplies(60);
    const slow = Array.from({ length: 10 }, () => envelope('A'));
    for (const e of slow) {
      const outcome = await settle(A.publish(e), 1_000);
      expect(outcome.ok).toBe(true);
      expect(outcome.ms).toBeGreaterThanOrEqual(55);
    }
    for (const e of slow) await B.got(e.id);
    const health = A.health();
    expect(health.status).toBe('degraded');
    expect(health.reasons).toEqual([expect.stringMatching(/^publish slow \(p99 \d+(\.\d+)? ms over the last 15 publishes; threshold 40 ms\)$/)]);
    expect(health.details).toMatchObject({ publishing: 'slow', publishTimeouts: 0, publisherResets: 0, publishErrors: 0 });
    const latency = (health.details as { publishLatencyMs: { samples: number; p50: number; p99: number; max: number } }).publishLatencyMs;
    expect(latency.samples).toBe(15);
    expect(latency.p99).toBeGreaterThanOrEqual(55);
    expect(latency.p99).toBeLessThan(250);
    expect(changes.at(-1)).toMatch(/^degraded: publish slow/);

    // fast again: the slow samples leave the p99 of the last 100 publishes
    proxy.delayReplies(0);
    for (let i = 0; i < 100; i += 1) await A.publish(envelope('A'));
    expect(A.health()).toMatchObject({ status: 'healthy', reasons: [], details: { publishing: 'ok' } });
    expect(changes.at(-1)).toBe('healthy: ');

    // down is another state: not connected, fail fast
    proxy.refuse();
    proxy.dropAll();
    await until('A down', () => A.health().details?.['publishing'] === 'down');
    expect(A.health().status).toBe('degraded');
    expect(A.health().reasons.join('\n')).toMatch(/Redis publisher not connected/);
    rejectedWith(await settle(A.publish(envelope('A')), 1_000), ErrorCode.BackplaneUnavailable, false);
  });
});
