import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BcastClient, isFinalCloseCode, reconnectDelay, type BcastClientOptions, type WebSocketLike } from '../src/index.js';

/** A WebSocket that opens or fails when the test says so. */
class FakeSocket implements WebSocketLike {
  static made: FakeSocket[] = [];
  readyState = 0;
  binaryType = 'blob';
  onopen: ((event: never) => void) | null = null;
  onmessage: ((event: never) => void) | null = null;
  onclose: ((event: never) => void) | null = null;
  onerror: ((event: never) => void) | null = null;
  sent: string[] = [];
  closedWith: number | undefined;
  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    FakeSocket.made.push(this);
  }
  send(data: string): void {
    this.sent.push(data);
  }
  close(code?: number): void {
    this.closedWith = code ?? 1005;
    this.drop(code ?? 1006);
  }
  open(): void {
    this.readyState = 1;
    (this.onopen as (e: object) => void)?.({});
  }
  drop(code = 1006, reason = ''): void {
    this.readyState = 3;
    (this.onclose as (e: object) => void)?.({ code, reason });
  }
}

function make(options: Partial<BcastClientOptions> = {}): { client: BcastClient; delays: number[]; attempts: number[] } {
  const client = new BcastClient({ url: 'ws://test/', WebSocket: FakeSocket, ...options });
  const delays: number[] = [];
  const attempts: number[] = [];
  client.on('reconnecting', ({ attempt, delayMs }) => {
    attempts.push(attempt);
    delays.push(delayMs);
  });
  return { client, delays, attempts };
}

let used = 0;
/** Lets the client's connect (an async url()) run, then returns the one socket made since the last call. */
async function socket(): Promise<FakeSocket> {
  await vi.advanceTimersByTimeAsync(0);
  expect(FakeSocket.made.length).toBe(used + 1);
  return FakeSocket.made[used++]!;
}

beforeEach(() => {
  FakeSocket.made = [];
  used = 0;
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe('reconnectDelay (full jitter)', () => {
  it('stays within [0, min(max, base * 2^n)]', () => {
    const caps = [0, 1, 2, 3, 4, 5, 6, 10, 60].map((n) => reconnectDelay(n, 500, 10_000, () => 0.999999));
    expect(caps).toEqual([499, 999, 1999, 3999, 7999, 9999, 9999, 9999, 9999]);
    for (let n = 0; n < 20; n++) {
      expect(reconnectDelay(n, 500, 10_000, () => 0)).toBe(0);
      const d = reconnectDelay(n, 500, 10_000);
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThanOrEqual(Math.min(10_000, 500 * 2 ** n));
    }
    expect(reconnectDelay(3, 500, 10_000, () => 0.5)).toBe(2_000);
  });

  it('knows the final close codes', () => {
    expect([1000, 1001, 1006, 1011, 1012, 1013, 3000, 5000].some(isFinalCloseCode)).toBe(false);
    expect([1008, 4000, 4001, 4999].every(isFinalCloseCode)).toBe(true);
  });
});

describe('the client reconnecting', () => {
  it('grows the delay exponentially, with jitter, and resets it after a successful open', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.999999);
    const { client, delays, attempts } = make();
    const states: string[] = [client.state];
    for (let i = 0; i < 7; i++) {
      (await socket()).drop();
      states.push(client.state);
      await vi.advanceTimersByTimeAsync(delays.at(-1)!);
    }
    expect(delays).toEqual([499, 999, 1999, 3999, 7999, 9999, 9999]);
    expect(attempts).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(states).toEqual(['connecting', ...Array(7).fill('reconnecting')]);

    const s = await socket();
    s.open();
    expect(client.state).toBe('open');
    s.drop(1012);
    expect(delays.at(-1)).toBe(499);
    expect(attempts.at(-1)).toBe(1);

    vi.mocked(Math.random).mockReturnValue(0.25);
    await vi.advanceTimersByTimeAsync(499);
    (await socket()).drop();
    expect(delays.at(-1)).toBe(250); // 0.25 * 1000
    await client.close();
  });

  it('does not wait longer than the delay it announced, and calls url() before every attempt (with the protocols)', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    let calls = 0;
    const { client } = make({ url: async () => `ws://test/?token=${++calls}`, protocols: ['bcast.v1'] });
    (await socket()).drop();
    await vi.advanceTimersByTimeAsync(249);
    expect(FakeSocket.made).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(FakeSocket.made.map((s) => s.url)).toEqual(['ws://test/?token=1', 'ws://test/?token=2']);
    expect(FakeSocket.made.map((s) => [s.protocols, s.binaryType])).toEqual(Array(2).fill([['bcast.v1'], 'arraybuffer']));
    await client.close();
  });

  it('gives up after maxReconnectAttempts consecutive failures', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0);
    const { client, attempts } = make({ maxReconnectAttempts: 2 });
    const closes: boolean[] = [];
    client.on('close', (info) => void closes.push(info.willReconnect));
    for (let i = 0; i < 3; i++) (await socket()).drop();
    expect(attempts).toEqual([1, 2]);
    expect(closes).toEqual([true, true, false]);
    expect(client.state).toBe('closed');
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeSocket.made).toHaveLength(3);
  });

  it('honours reconnectOnCodes as a list and as a function', async () => {
    const list = make({ reconnectOnCodes: [4001] });
    (await socket()).drop(4001);
    expect(list.client.state).toBe('reconnecting');
    await list.client.close();

    const seen: [number, string][] = [];
    const fn = make({ reconnectOnCodes: (code, reason) => (seen.push([code, reason]), false) });
    (await socket()).drop(1012, 'restart');
    expect(fn.client.state).toBe('closed');
    expect(seen).toEqual([[1012, 'restart']]);
  });

  it('retries an attempt that does not open within connectTimeoutMs', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0);
    const { client, attempts } = make({ connectTimeoutMs: 1_000 });
    const s = await socket();
    await vi.advanceTimersByTimeAsync(999);
    expect(s.closedWith).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(s.closedWith).toBe(1005);
    expect(attempts).toEqual([1]);
    await vi.advanceTimersByTimeAsync(1); // a 0 ms timer runs after 1 ms
    expect(FakeSocket.made).toHaveLength(2);
    await client.close();
  });

  it('close() while waiting to reconnect stops the timer: no attempt afterwards', async () => {
    const { client } = make();
    (await socket()).drop();
    await client.close();
    expect(client.state).toBe('closed');
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeSocket.made).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('close() on an open socket sends 1000 and leaves no timer behind', async () => {
    const { client } = make({ requestTimeoutMs: 5_000 });
    const s = await socket();
    s.open();
    const ping = client.ping();
    expect(JSON.parse(s.sent[0]!)).toEqual({ type: 'ping', requestId: '1' });
    await client.close();
    expect(s.closedWith).toBe(1000);
    await expect(ping).rejects.toMatchObject({ code: 'CLOSED' });
    expect(vi.getTimerCount()).toBe(0);
  });
});
