import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode, isBcastError } from '@bcast/core';
import { ENVELOPE_VERSION, type BackplaneEnvelope } from '@bcast/core/backplane';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRedisBackplane, type RedisBackplane, type RedisBackplaneOptions } from '../src/index.js';
import { RedisServer, freePort, processProblems, quietLogger, skipReason, until, whyNoRedisServer } from './helpers.js';

const run = promisify(execFile);
const skip = skipReason('security tests (they run their own redis-server)', whyNoRedisServer());
const OPENSSL = process.env['OPENSSL_BIN'] ?? '/usr/bin/openssl';

/** The `ACL SETUSER bcast …` line of SECURITY.md, as arguments, with `>password` replaced. */
async function aclLineOfSecurityMd(password: string): Promise<string[]> {
  const text = await readFile(new URL('../../../SECURITY.md', import.meta.url), 'utf8');
  const line = text.split('\n').find((l) => l.startsWith('ACL SETUSER bcast '));
  if (line === undefined) throw new Error('SECURITY.md has no line starting with "ACL SETUSER bcast "');
  return line
    .trim()
    .split(/\s+/)
    .slice(2)
    .map((arg) => (arg.startsWith('>') ? `>${password}` : arg));
}

describe.skipIf(skip)('security: ACL user, wrong credentials, TLS (own redis-server)', () => {
  const cleanup: Array<() => Promise<unknown> | unknown> = [];
  const problems = processProblems();

  beforeAll(() => problems.start());
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
    expect(problems.list).toEqual([]);
  });
  afterAll(() => problems.stop());

  const envelope = (nodeId: string): BackplaneEnvelope => ({
    v: ENVELOPE_VERSION,
    id: randomUUID(),
    nodeId,
    op: 'all',
    enc: 'json',
    payload: '{"secure":true}',
    ts: Date.now(),
  });

  function backplane(options: RedisBackplaneOptions): RedisBackplane {
    const bp = createRedisBackplane({ logger: quietLogger(), probeIntervalMs: 100, probeTimeoutMs: 500, readyTimeoutMs: 2_000, reconnectMaxDelayMs: 200, ...options });
    cleanup.push(() => bp.close());
    return bp;
  }

  async function nodeRedis(url: string, extra: Record<string, unknown> = {}): Promise<ReturnType<typeof createClient>> {
    const client = createClient({ url, disableOfflineQueue: true, ...extra });
    client.on('error', () => {});
    cleanup.push(() => (client.isOpen ? client.destroy() : undefined));
    await client.connect();
    return client;
  }

  /** A publishes, B receives, both probes succeed and both report healthy. */
  async function works(A: RedisBackplane, B: RedisBackplane): Promise<void> {
    const got: string[] = [];
    await B.subscribe((e) => got.push(e.id));
    expect(await A.ready(5_000)).toBe(true);
    expect(await B.ready(5_000)).toBe(true);
    const e = envelope(A.nodeId);
    await A.publish(e);
    await until('the envelope on B', () => got.includes(e.id), 5_000);
    await until('a probe on each', () => A.stats().probe.ok >= 1 && B.stats().probe.ok >= 1, 5_000);
    expect(A.health()).toMatchObject({ status: 'healthy', reasons: [] });
    expect(B.health()).toMatchObject({ status: 'healthy', reasons: [] });
  }

  /** Nothing gets through: not subscribed, publishes refused before anything is written, the reason in health. */
  async function failsClosed(bp: RedisBackplane, reason: RegExp): Promise<void> {
    const stop = await bp.subscribe(() => {}); // resolves, never rejects: the backplane keeps retrying
    expect(typeof stop).toBe('function');
    expect(bp.stats().subscribed).toBe(false);
    await until('the reason in health', () => reason.test(bp.health().reasons.join('\n')), 5_000);
    expect(bp.health().status).toBe('degraded');
    const error = await bp.publish(envelope(bp.nodeId)).catch((e: unknown) => e);
    expect(isBcastError(error, ErrorCode.BackplaneUnavailable)).toBe(true);
    expect((error as { details?: unknown }).details).toEqual({ written: false });
  }

  describe('an ACL user limited to the channel (the line in SECURITY.md)', () => {
    let server: RedisServer;
    let admin: Redis;
    const password = randomUUID();

    beforeAll(async () => {
      server = new RedisServer(await freePort());
      await server.start();
      const setup = new Redis(server.url, { maxRetriesPerRequest: 1 });
      setup.on('error', () => {});
      try {
        await setup.call('ACL', 'SETUSER', 'admin', 'on', '>admin-secret', '~*', '&*', '+@all');
        expect(await setup.call('ACL', 'SETUSER', ...(await aclLineOfSecurityMd(password)))).toBe('OK');
      } finally {
        setup.disconnect();
      }
      admin = new Redis(`redis://admin:admin-secret@127.0.0.1:${server.port}`, { maxRetriesPerRequest: 1 });
      admin.on('error', () => {});
      await admin.call('ACL', 'SETUSER', 'default', 'off'); // no anonymous access at all
    });
    afterAll(async () => {
      admin?.disconnect();
      await server?.kill();
    });

    const url = (user: string, pass: string): string => `redis://${user}:${pass}@127.0.0.1:${server.port}`;

    it('the anonymous default user is refused, and the bcast user may not touch keys or other channels', async () => {
      const anonymous = new Redis(server.url, { maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false, lazyConnect: true });
      anonymous.on('error', () => {});
      cleanup.push(() => anonymous.disconnect());
      await anonymous.connect().catch(() => {});
      await expect(anonymous.call('PING')).rejects.toThrow(/NOAUTH|Stream isn't writeable|closed/);
      const bcast = new Redis(url('bcast', password), { maxRetriesPerRequest: 0 });
      bcast.on('error', () => {});
      cleanup.push(() => bcast.disconnect());
      expect(await bcast.publish('bcast', 'x')).toBe(0);
      await expect(bcast.publish('other', 'x')).rejects.toThrow(/NOPERM/);
      await expect(bcast.get('k')).rejects.toThrow(/NOPERM/);
      await expect(bcast.call('CLIENT', 'KILL', 'TYPE', 'pubsub')).rejects.toThrow(/NOPERM/);
      await expect(bcast.call('CONFIG', 'GET', '*')).rejects.toThrow(/NOPERM/);
    });

    it.each(['ioredis', 'node-redis'] as const)('the backplane works as that user (%s)', async (library) => {
      const via: RedisBackplaneOptions =
        library === 'ioredis' ? { url: url('bcast', password) } : { client: await nodeRedis(url('bcast', password)) };
      const A = backplane({ ...via, channel: 'bcast', nodeId: `A-${library}` });
      const B = backplane({ url: url('bcast', password), channel: 'bcast', nodeId: `B-${library}` });
      await works(A, B);
      expect(A.stats()).toMatchObject({ client: library, dropped: { total: 0 } });
    });

    it('fails closed with a wrong password, and on a channel the user may not use', async () => {
      await failsClosed(backplane({ url: url('bcast', 'wrong'), channel: 'bcast' }), /WRONGPASS/);
      await failsClosed(backplane({ url: url('nobody', password), channel: 'bcast' }), /WRONGPASS/);
      await failsClosed(backplane({ url: server.url, channel: 'bcast' }), /NOAUTH/);
      const otherChannel = backplane({ url: url('bcast', password), channel: 'other' });
      await otherChannel.subscribe(() => {});
      await until('the SUBSCRIBE refusal in health', () => /NOPERM/.test(otherChannel.health().reasons.join('\n')), 5_000);
      expect(otherChannel.health().status).toBe('degraded');
      expect(otherChannel.stats().subscribed).toBe(false);
      // connected, so the PUBLISH was written, and Redis refused it: not retried
      const error = await otherChannel.publish(envelope(otherChannel.nodeId)).catch((e: unknown) => e);
      expect(isBcastError(error, ErrorCode.BackplaneUnavailable)).toBe(true);
      expect((error as Error).message).toMatch(/NOPERM/);
      expect((error as { details?: unknown }).details).toEqual({ written: true });
    });
  });

  describe.skipIf(!existsSync(OPENSSL))('TLS with client certificates (rediss://)', () => {
    let server: RedisServer;
    let dir: string;
    let files: { ca: Buffer; cert: Buffer; key: Buffer };

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'bcast-tls-'));
      const at = (name: string): string => join(dir, name);
      const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
      await run(OPENSSL, ['req', '-x509', ...ec, '-keyout', at('ca.key'), '-out', at('ca.pem'), '-days', '1', '-subj', '/CN=bcast test CA']);
      await writeFile(at('san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
      for (const [name, cn] of [['server', 'localhost'], ['client', 'bcast']] as const) {
        await run(OPENSSL, ['req', ...ec, '-keyout', at(`${name}.key`), '-out', at(`${name}.csr`), '-subj', `/CN=${cn}`]);
        await run(OPENSSL, ['x509', '-req', '-in', at(`${name}.csr`), '-CA', at('ca.pem'), '-CAkey', at('ca.key'), '-CAcreateserial', '-days', '1', '-out', at(`${name}.pem`), '-extfile', at('san.ext')]);
      }
      files = { ca: await readFile(at('ca.pem')), cert: await readFile(at('client.pem')), key: await readFile(at('client.key')) };
      const port = await freePort();
      server = new RedisServer(port, [
        '--port', '0',
        '--tls-port', String(port),
        '--tls-cert-file', at('server.pem'),
        '--tls-key-file', at('server.key'),
        '--tls-ca-cert-file', at('ca.pem'),
        '--tls-auth-clients', 'yes',
      ]);
      await server.start();
    });
    afterAll(async () => {
      await server?.kill();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    const url = (): string => `rediss://localhost:${server.port}`;

    it('ioredis: createRedisBackplane({ url: "rediss://…", redisOptions: { tls: { ca, cert, key } } }) works', async () => {
      const tls = { ca: files.ca, cert: files.cert, key: files.key };
      await works(backplane({ url: url(), redisOptions: { tls }, nodeId: 'A' }), backplane({ url: url(), redisOptions: { tls }, nodeId: 'B' }));
    });

    it('node-redis: a rediss:// client with the same files works', async () => {
      const client = await nodeRedis(url(), { socket: { tls: true, ca: files.ca, cert: files.cert, key: files.key } });
      await works(backplane({ client, nodeId: 'A' }), backplane({ url: url(), redisOptions: { tls: { ...files } }, nodeId: 'B' }));
      expect(client.isReady).toBe(true);
    });

    it('fails closed: an unknown server certificate, a missing client certificate, plain TCP', async () => {
      await failsClosed(backplane({ url: url(), nodeId: 'no-ca' }), /certificate/);
      await failsClosed(backplane({ url: url(), redisOptions: { tls: { ca: files.ca } }, nodeId: 'no-client-cert' }), /closed|reset|ECONNRESET|alert|certificate/i);
      await failsClosed(backplane({ url: `redis://localhost:${server.port}`, nodeId: 'plain' }), /not connected/);
    });
  });
});
