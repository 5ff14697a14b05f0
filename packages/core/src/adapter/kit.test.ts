import { once } from 'node:events';
import { createServer as createHttpServer, get } from 'node:http';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Broadcaster, type BroadcasterOptions } from '@bcast/core';
import { ConnectionCaps, ConnectionTracker, anonymous, createVerifier, deliverInbound, refuseRequest, refuseUpgrade, type ConnectionHandle, type SocketControl } from '@bcast/core/adapter';
import { FakeConnection, quietLogger } from '../test-utils/fakeConnection.js';

afterEach(() => {
  vi.useRealTimers();
});

describe('createVerifier', () => {
  const origins = { allowedOrigins: ['https://app.example'] };

  it('refuses credentials that have already expired with 401', async () => {
    const verify = createVerifier({ authenticate: () => ({ userId: 'alice', expiresAt: Date.now() - 1 }) });
    expect(await verify({}, undefined)).toEqual({ refusal: { reason: 'unauthorized', status: 401 } });
    const fresh = createVerifier({ authenticate: () => ({ userId: 'alice', expiresAt: Date.now() + 60_000 }) });
    expect((await fresh({}, undefined)).identity?.userId).toBe('alice');
  });

  it('refuses a foreign origin with 403 before asking authenticate', async () => {
    const authenticate = vi.fn(() => 'alice');
    const verify = createVerifier({ ...origins, authenticate });
    expect(await verify({}, 'https://evil.example')).toEqual({ refusal: { reason: 'origin', status: 403 } });
    expect(authenticate).not.toHaveBeenCalled();
    expect(await verify({}, 'https://app.example')).toEqual({ identity: { userId: 'alice', data: undefined } });
  });

  it('a request without Origin passes an allow-list unless requireOrigin', async () => {
    expect(await createVerifier(origins)({}, undefined)).toEqual({ identity: anonymous });
    expect(await createVerifier({ ...origins, requireOrigin: true })({}, undefined)).toEqual({ refusal: { reason: 'origin', status: 403 } });
  });

  it.each([
    ['false', () => false as const],
    ['null', () => null],
    ['a throw', () => {
      throw new Error('bad token');
    }],
    ['a rejection', () => Promise.reject(new Error('bad token'))],
    ['an invalid user id', () => 'bad\u0000id'],
  ])('refuses with 401 when authenticate answers %s', async (_name, authenticate) => {
    const verify = createVerifier({ authenticate });
    expect(await verify({}, undefined)).toEqual({ refusal: { reason: 'unauthorized', status: 401 } });
  });

  it('refuses with 503 when authenticate does not answer within authTimeoutMs', async () => {
    vi.useFakeTimers();
    const verify = createVerifier({ authenticate: () => new Promise<string>(() => {}), authTimeoutMs: 20 });
    let verdict: unknown;
    const pending = verify({}, undefined).then((v) => (verdict = v));
    await vi.advanceTimersByTimeAsync(19);
    expect(verdict).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    await pending;
    expect(verdict).toEqual({ refusal: { reason: 'timeout', status: 503 } });
  });

  it('gives the identity on success (a user id or an identity object); anonymous without authenticate', async () => {
    const seen: unknown[] = [];
    const byId = createVerifier({ authenticate: (req: { token: string }) => (seen.push(req), 'alice') });
    expect(await byId({ token: 't' }, undefined)).toEqual({ identity: { userId: 'alice', data: undefined } });
    expect(seen).toEqual([{ token: 't' }]);
    const byObject = createVerifier({ authenticate: async () => ({ userId: 'bob', data: { role: 'admin' } }) });
    expect(await byObject({}, undefined)).toEqual({ identity: { userId: 'bob', data: { role: 'admin' } } });
    expect(await createVerifier({})({}, 'https://any.example')).toEqual({ identity: anonymous });
  });

  it('refuses everything with 503 after dispose, including an authenticate still in flight', async () => {
    let answer: ((id: string) => void) | undefined;
    let asked!: () => void;
    const wasAsked = new Promise<void>((resolve) => (asked = resolve));
    const verify = createVerifier({
      authenticate: () => {
        asked();
        return new Promise<string>((resolve) => (answer = resolve));
      },
    });
    const inFlight = verify({}, undefined);
    await wasAsked;
    verify.dispose();
    answer?.('alice');
    expect(await inFlight).toEqual({ refusal: { reason: 'closing', status: 503 } });
    expect(await verify({}, undefined)).toEqual({ refusal: { reason: 'closing', status: 503 } });
    expect(await createVerifier({}).call(undefined, {}, undefined)).toEqual({ identity: anonymous });
  });
});

/** A socket stand-in: `close` may or may not finish the close; `terminate` always does. */
class FakeSocket {
  closed = false;
  readonly listeners: Array<() => void> = [];
  constructor(
    readonly id: string,
    readonly onClose: 'now' | 'later' | 'never',
  ) {}
  finish(): void {
    if (this.closed) return;
    this.closed = true;
    for (const l of this.listeners.splice(0)) l();
  }
}

function control(log: string[]): SocketControl<FakeSocket> {
  return {
    close: (s) => {
      log.push(`close:${s.id}`);
      if (s.onClose === 'now') s.finish();
      else if (s.onClose === 'later') setTimeout(() => s.finish(), 10);
    },
    terminate: (s) => {
      log.push(`terminate:${s.id}`);
      s.finish();
    },
    isClosed: (s) => s.closed,
    onceClosed: (s, listener) => void s.listeners.push(listener),
  };
}

describe('ConnectionTracker', () => {
  const made: Broadcaster[] = [];
  afterEach(async () => {
    for (const b of made.splice(0)) await b.dispose();
  });

  function world(log: string[], options: BroadcasterOptions = {}) {
    const b = new Broadcaster({ pingIntervalMs: 0, logger: quietLogger(), onDisconnect: (e, code, reason) => void log.push(`core:${e.id}:${code}:${reason}`), ...options });
    made.push(b);
    const tracker = new ConnectionTracker(control(log));
    const track = (socket: FakeSocket): ConnectionHandle => {
      const handle = b.register(new FakeConnection(socket.id));
      tracker.add(socket, handle);
      return handle;
    };
    return { b, tracker, track };
  }

  it('closes each socket with 1001, telling its handle first (the core reports 1001 server shutdown)', async () => {
    const log: string[] = [];
    const { b, tracker, track } = world(log);
    track(new FakeSocket('a', 'now'));
    track(new FakeSocket('b', 'now'));
    expect(tracker.size).toBe(2);
    await tracker.drain(1_000);
    expect(log).toEqual(['core:a:1001:server shutting down', 'close:a', 'core:b:1001:server shutting down', 'close:b']);
    expect(b.connections.size).toBe(0);
    expect(tracker.size).toBe(0);
  });

  it('terminates the sockets still open after the timeout, and only those', async () => {
    vi.useFakeTimers();
    const log: string[] = [];
    const { tracker, track } = world(log);
    const polite = new FakeSocket('polite', 'later');
    const stubborn = new FakeSocket('stubborn', 'never');
    track(polite);
    track(stubborn);
    let drained = false;
    const pending = tracker.drain(100).then(() => (drained = true));
    await vi.advanceTimersByTimeAsync(99);
    expect(polite.closed).toBe(true);
    expect(stubborn.closed).toBe(false);
    expect(log.filter((l) => l.startsWith('terminate'))).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    await pending;
    expect(drained).toBe(true);
    expect(log.filter((l) => l.startsWith('terminate'))).toEqual(['terminate:stubborn']);
    expect(stubborn.closed).toBe(true);
  });

  it('resolves as soon as every socket has closed, without waiting for the timeout', async () => {
    vi.useFakeTimers();
    const log: string[] = [];
    const { tracker, track } = world(log);
    track(new FakeSocket('a', 'later'));
    track(new FakeSocket('b', 'later'));
    let drained = false;
    const pending = tracker.drain(60_000).then(() => (drained = true));
    await vi.advanceTimersByTimeAsync(9);
    expect(drained).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await pending;
    expect(drained).toBe(true);
    expect(log.some((l) => l.startsWith('terminate'))).toBe(false);
    expect(vi.getTimerCount()).toBe(0); // its deadline timer was cleared
  });

  it('forgets a socket that closed by itself; draining nothing resolves at once', async () => {
    const log: string[] = [];
    const { tracker, track } = world(log);
    const s = new FakeSocket('a', 'never');
    track(s);
    s.finish();
    expect(tracker.size).toBe(0);
    await tracker.drain(60_000);
    expect(log).toEqual([]);
  });
});

describe('deliverInbound', () => {
  function recording() {
    const calls: Array<{ data: string | Buffer; isBinary: boolean | undefined }> = [];
    const handle = {
      message: (data: string | Buffer, isBinary?: boolean) => {
        calls.push({ data, isBinary });
        return Promise.resolve();
      },
    } as unknown as ConnectionHandle;
    return { calls, handle };
  }

  it.each([
    ['a string: text', 'hello', undefined, 'hello', false],
    ['a Buffer: binary', Buffer.from([1, 2, 3]), undefined, Buffer.from([1, 2, 3]), true],
    ['a Buffer with isBinary true: binary', Buffer.from('x'), true, Buffer.from('x'), true],
    ['a Buffer with isBinary false: text', Buffer.from('{"type":"ping"}'), false, Buffer.from('{"type":"ping"}'), false],
    ['Buffer[] fragments: joined', [Buffer.from('ab'), Buffer.from('cd')], true, Buffer.from('abcd'), true],
    ['Buffer[] text fragments: joined, text', [Buffer.from('{"a"'), Buffer.from(':1}')], false, Buffer.from('{"a":1}'), false],
    ['an ArrayBuffer: binary', new Uint8Array([9, 8]).buffer, undefined, Buffer.from([9, 8]), true],
    ['an object: its JSON text', { type: 'chat', text: 'hi' }, undefined, '{"type":"chat","text":"hi"}', false],
    ['an array with isBinary undefined: its JSON text', ['a', 1], undefined, '["a",1]', false],
  ])('%s', (_name, payload, isBinary, data, binary) => {
    const { calls, handle } = recording();
    deliverInbound(handle, payload, isBinary);
    expect(calls).toHaveLength(1);
    expect(calls[0]?.isBinary).toBe(binary);
    if (typeof data === 'string') expect(calls[0]?.data).toBe(data);
    else {
      expect(Buffer.isBuffer(calls[0]?.data)).toBe(true);
      expect((calls[0]?.data as Buffer).equals(data)).toBe(true);
    }
  });

  it('never rejects, even when the handle does', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      const handle = { message: () => Promise.reject(new Error('boom')) } as unknown as ConnectionHandle;
      expect(() => deliverInbound(handle, 'x')).not.toThrow();
      await new Promise<void>((resolve) => setImmediate(resolve));
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    expect(unhandled).toEqual([]);
  });

  it('reaches the core protocol through a real handle (an object payload is a protocol frame)', async () => {
    const b = new Broadcaster({ pingIntervalMs: 0, logger: quietLogger() });
    try {
      const conn = new FakeConnection('a');
      const handle = b.register(conn);
      deliverInbound(handle, { type: 'ping', requestId: 7 });
      await vi.waitFor(() => expect(conn.messages).toEqual([{ type: 'pong', requestId: 7 }]));
    } finally {
      await b.dispose();
    }
  });
});

describe('refuseUpgrade', () => {
  let server: Server | undefined;
  const sockets: Socket[] = [];
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    if (server) await new Promise<void>((resolve) => server?.close(() => resolve()));
    server = undefined;
  });

  async function pair(): Promise<{ local: Socket; response: Promise<string> }> {
    const accepted = new Promise<Socket>((resolve) => {
      server = createServer((s) => resolve(s));
    });
    server?.listen(0, '127.0.0.1');
    await once(server as Server, 'listening');
    const address = server?.address();
    // allowHalfOpen: the peer does not answer the FIN, so the local socket closes only if destroyed
    const peer = connect({ port: typeof address === 'object' && address ? address.port : 0, host: '127.0.0.1', allowHalfOpen: true });
    const local = await accepted;
    sockets.push(local, peer);
    let text = '';
    peer.setEncoding('utf8');
    peer.on('data', (d: string) => (text += d));
    const response = once(peer, 'end').then(() => text);
    return { local, response };
  }

  it('writes HTTP/1.1 403 Forbidden with the extra headers, then closes the socket', async () => {
    const { local, response } = await pair();
    const closed = once(local, 'close');
    refuseUpgrade(local, 403, { 'Retry-After': 30, 'X-Reason': 'origin' });
    const text = await response;
    await closed;
    const [head, body] = text.split('\r\n\r\n');
    const lines = head?.split('\r\n') ?? [];
    expect(lines[0]).toBe('HTTP/1.1 403 Forbidden');
    expect(lines).toContain('Connection: close');
    expect(lines).toContain('Retry-After: 30');
    expect(lines).toContain('X-Reason: origin');
    expect(lines).toContain('Content-Length: 9');
    expect(body).toBe('Forbidden');
    expect(local.destroyed).toBe(true);
  });

  it('uses the status text of any status (503 Service Unavailable), and does nothing on a destroyed socket', async () => {
    const { local, response } = await pair();
    const closed = once(local, 'close');
    refuseUpgrade(local, 503);
    expect((await response).startsWith('HTTP/1.1 503 Service Unavailable\r\n')).toBe(true);
    await closed;
    expect(() => refuseUpgrade(local, 401)).not.toThrow();
  });
});

describe('ConnectionCaps for connections that are not a TCP socket of their own (admit, hold, release)', () => {
  it('admit counts per address until release; the global cap is the caller\'s count', () => {
    const caps = new ConnectionCaps({ maxConnections: 10, maxConnectionsPerIp: 2 });
    expect([caps.admit('10.0.0.1', 0), caps.admit('10.0.0.1', 1), caps.admit('10.0.0.1', 2)]).toEqual([true, true, false]);
    expect(caps.admit('10.0.0.2', 2)).toBe(true);
    expect(caps.admit('10.0.0.3', 10)).toBe(false); // global cap, whatever the address
    caps.release('10.0.0.1');
    expect(caps.admit('10.0.0.1', 3)).toBe(true);
    expect(caps.admit('10.0.0.1', 4)).toBe(false);
  });

  it('hold counts a connection that exists already even over the cap, and is released the same way', () => {
    const caps = new ConnectionCaps({ maxConnectionsPerIp: 1 });
    caps.hold('10.0.0.1');
    caps.hold('10.0.0.1');
    expect(caps.admit('10.0.0.1', 0)).toBe(false);
    caps.release('10.0.0.1');
    expect(caps.admit('10.0.0.1', 0)).toBe(false);
    caps.release('10.0.0.1');
    expect(caps.admit('10.0.0.1', 0)).toBe(true);
    caps.release(undefined); // nothing counted for it: a no-op
    expect(caps.admit(undefined, 0)).toBe(true);
    expect(caps.admit(undefined, 0)).toBe(false);
  });
});

describe('refuseRequest', () => {
  it('answers a plain request with the status text as body and the extra headers', async () => {
    const server = createHttpServer((_req, res) => refuseRequest(res, 503, { 'Retry-After': 7 }));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      const answer = await new Promise<{ status: number | undefined; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
        get({ host: '127.0.0.1', port, agent: false }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (body += chunk));
          res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
        }).on('error', reject);
      });
      expect(answer).toMatchObject({ status: 503, body: 'Service Unavailable', headers: { 'retry-after': '7', 'content-type': 'text/plain', 'content-length': '19' } });
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
