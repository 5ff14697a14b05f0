// @bcast/client: a bcast WebSocket client for browsers and Node. No dependencies: it uses the
// platform's WebSocket (or the one passed in), and only the globals every platform has.

import { BcastClientError, type BcastClientErrorCode, type BcastClientOptions, type ClientEvents, type ClientState, type Position, type Reply, type WebSocketConstructor, type WebSocketLike } from './types.js';

export { BcastClientError } from './types.js';
export type { BcastClientErrorCode, BcastClientOptions, ClientEvents, ClientState, MessageMeta, Position, PresenceEvent, Reply, WebSocketConstructor, WebSocketLike } from './types.js';

/** Full jitter: a random delay in [0, min(max, min * 2^attempt)], attempt counting from 0. */
export function reconnectDelay(attempt: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  return Math.floor(random() * Math.min(maxMs, minMs * 2 ** attempt));
}

/** True for close codes the server means as final: 1008 (policy, auth) and application codes 4000-4999. */
export function isFinalCloseCode(code: number): boolean {
  return code === 1008 || (code >= 4000 && code <= 4999);
}

const noop = (): void => {};
// Timers and the WebSocket through globalThis: the same code on every platform, no DOM or Node typings.
const platform = globalThis as unknown as {
  WebSocket?: WebSocketConstructor;
  Blob?: abstract new (...args: never[]) => object;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  queueMicrotask(fn: () => void): void;
};

interface Pending {
  resolve(reply: Reply): void;
  reject(error: BcastClientError): void;
  timer: unknown;
  op?: string;
  room?: string | undefined;
  since?: boolean;
}
type Listeners = { [K in keyof ClientEvents]: Set<ClientEvents[K]> };
type Json = Record<string, unknown>;

export class BcastClient {
  readonly #o: BcastClientOptions & { WebSocket: WebSocketConstructor; requestTimeoutMs: number };
  readonly #listeners: Listeners = { open: new Set(), message: new Set(), close: new Set(), reconnecting: new Set(), error: new Set(), recovery: new Set(), presence: new Set() };
  readonly #rooms = new Set<string>();
  readonly #positions = new Map<string, Position>();
  /** Offsets received above a room's position (publications of several nodes may arrive out of order). */
  readonly #ahead = new Map<string, Set<number>>();
  readonly #pending = new Map<string, Pending>();
  /** join() calls made while not open, settled by the join sent at the next open. */
  readonly #waiters = new Map<string, Set<Pending>>();
  #state: ClientState = 'connecting';
  #socket: WebSocketLike | undefined;
  #attempt = 0;
  #wasOpen = false;
  #seq = 0;
  #timer: unknown;
  #closed: Promise<void> | undefined;

  constructor(options: BcastClientOptions) {
    const WebSocket = options.WebSocket ?? platform.WebSocket;
    if (!WebSocket) throw new TypeError("@bcast/client: no WebSocket on this platform; pass one as options.WebSocket (on Node 20: the ws package's)");
    this.#o = { ...options, WebSocket, requestTimeoutMs: options.requestTimeoutMs ?? 10_000 };
    void this.#connect();
  }

  get state(): ClientState {
    return this.#state;
  }
  /** The rooms the client is in or will rejoin on the next open. */
  get rooms(): ReadonlySet<string> {
    return new Set(this.#rooms);
  }
  /** The last position seen per room (publications with history, and join replies). */
  get positions(): Readonly<Record<string, Position>> {
    return Object.fromEntries([...this.#positions].map(([room, p]) => [room, { ...p }]));
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof ClientEvents>(event: K, listener: ClientEvents[K]): () => void {
    const set = this.#listeners[event] as Set<ClientEvents[K]>;
    set.add(listener);
    return () => void set.delete(listener);
  }

  /**
   * Joins a room; the client rejoins it after every reconnect until `leave()`. Resolves with the
   * server's ok; a refusal (FORBIDDEN, ...) rejects and forgets the room. Called while not open,
   * the join is sent at the next open.
   */
  join(room: string): Promise<Reply> {
    if (this.#state === 'closed') return Promise.reject(new BcastClientError('CLOSED', 'the client is closed', undefined, room));
    this.#rooms.add(room);
    if (this.#state === 'open') return this.#sendJoin(room);
    return new Promise<Reply>((resolve, reject) => {
      const waiters = this.#waiters.get(room) ?? new Set<Pending>();
      this.#waiters.set(room, waiters);
      const waiter: Pending = { resolve, reject, timer: undefined };
      waiter.timer = platform.setTimeout(() => {
        waiters.delete(waiter);
        reject(new BcastClientError('TIMEOUT', `no reply to join ${JSON.stringify(room)} within ${this.#o.requestTimeoutMs} ms`, undefined, room));
      }, this.#o.requestTimeoutMs);
      waiters.add(waiter);
    });
  }

  /** Leaves a room (no rejoin after a reconnect). While not open it resolves at once: a new connection is in no room. */
  leave(room: string): Promise<Reply> {
    if (this.#state === 'closed') return Promise.reject(new BcastClientError('CLOSED', 'the client is closed', undefined, room));
    this.#rooms.delete(room);
    this.#positions.delete(room);
    settle(this.#takeWaiters(room), undefined, new BcastClientError('CANCELLED', `left ${JSON.stringify(room)} before it was joined`, undefined, room));
    if (this.#state !== 'open') return Promise.resolve({ type: 'ok', op: 'leave', room });
    return this.#request({ type: 'leave', room }, room);
  }

  /** Resolves with the server's pong; rejects with DISCONNECTED when not open. */
  ping(): Promise<Reply> {
    return this.#request({ type: 'ping' });
  }

  /** Sends an app message: strings and bytes as they are, anything else as JSON. Throws when not open. */
  send(data: unknown): void {
    if (this.#state !== 'open' || !this.#socket) throw new BcastClientError(this.#state === 'closed' ? 'CLOSED' : 'DISCONNECTED', `cannot send: the client is ${this.#state}`);
    const raw = typeof data === 'string' || data instanceof ArrayBuffer || ArrayBuffer.isView(data) || (platform.Blob !== undefined && data instanceof platform.Blob);
    this.#socket.send(raw ? (data as string) : JSON.stringify(data));
  }

  /** Closes with 1000: rejects what is pending with CLOSED, stops every timer, never reconnects. Resolves once the socket is closed. */
  close(reason = ''): Promise<void> {
    if (this.#closed) return this.#closed;
    this.#state = 'closed';
    platform.clearTimeout(this.#timer);
    this.#failAll('CLOSED', 'the client was closed');
    const socket = this.#socket;
    this.#socket = undefined;
    this.#closed = new Promise<void>((resolve) => {
      if (!socket) return resolve();
      const done = (event: { code?: number; reason?: string }): void => {
        detach(socket);
        resolve();
        this.#emit('close', { code: event.code ?? 1000, reason: event.reason ?? reason, willReconnect: false });
      };
      detach(socket);
      socket.onclose = done as (event: never) => void;
      try {
        socket.close(1000, reason);
      } catch {
        closeQuietly(socket); // a reason over 123 bytes
      }
    });
    return this.#closed;
  }

  async #connect(): Promise<void> {
    let url: string;
    try {
      url = typeof this.#o.url === 'function' ? await this.#o.url() : this.#o.url;
    } catch (error) {
      if (this.#state === 'closed') return;
      this.#emit('error', new BcastClientError('CONNECTION_ERROR', `url() failed: ${describe(error)}`));
      return this.#dropped(1006, '');
    }
    if (this.#state === 'closed') return;
    let socket: WebSocketLike;
    try {
      socket = this.#o.protocols === undefined ? new this.#o.WebSocket(url) : new this.#o.WebSocket(url, this.#o.protocols);
    } catch (error) {
      this.#emit('error', new BcastClientError('CONNECTION_ERROR', describe(error)));
      return this.#dropped(1006, '');
    }
    this.#socket = socket;
    socket.binaryType = 'arraybuffer';
    this.#timer = platform.setTimeout(() => closeQuietly(socket), this.#o.connectTimeoutMs ?? 10_000); // its close event retries
    socket.onopen = (() => this.#opened()) as () => void;
    socket.onmessage = ((event: { data: unknown }) => this.#received(event.data)) as (event: never) => void;
    socket.onerror = ((event: { message?: string; error?: unknown }) => {
      this.#emit('error', new BcastClientError('CONNECTION_ERROR', event.message ?? (event.error ? describe(event.error) : 'WebSocket error')));
    }) as (event: never) => void;
    socket.onclose = ((event: { code: number; reason: string }) => {
      detach(socket);
      if (this.#socket === socket) this.#dropped(event.code, event.reason);
    }) as (event: never) => void;
  }

  #opened(): void {
    platform.clearTimeout(this.#timer);
    const reconnect = this.#wasOpen;
    this.#state = 'open';
    this.#attempt = 0;
    this.#wasOpen = true;
    for (const room of [...this.#rooms]) {
      const waiters = this.#takeWaiters(room);
      this.#sendJoin(room).then(
        (reply) => settle(waiters, reply, undefined),
        (error: BcastClientError) => {
          // A rejoin nobody awaits reports its failure (e.g. FORBIDDEN now: the room is forgotten).
          if (!waiters?.size && error.code !== 'DISCONNECTED' && error.code !== 'CLOSED') this.#emit('error', error);
          settle(waiters, undefined, error);
        },
      );
    }
    this.#emit('open', { reconnect });
  }

  #dropped(code: number, reason: string): void {
    platform.clearTimeout(this.#timer);
    this.#socket = undefined;
    if (this.#state === 'closed') return;
    this.#failAll('DISCONNECTED', `the connection closed (${code})`, false);
    const on = this.#o.reconnectOnCodes;
    const wanted = typeof on === 'function' ? on(code, reason) : !isFinalCloseCode(code) || (on?.includes(code) ?? false);
    const willReconnect = wanted && this.#attempt < (this.#o.maxReconnectAttempts ?? Infinity);
    this.#state = willReconnect ? 'reconnecting' : 'closed';
    if (!willReconnect) this.#failAll('DISCONNECTED', `the connection closed (${code}) and will not reconnect`);
    this.#emit('close', { code, reason, willReconnect });
    if (!willReconnect || this.#state !== 'reconnecting') return;
    const delayMs = reconnectDelay(this.#attempt, this.#o.minReconnectDelayMs ?? 500, this.#o.maxReconnectDelayMs ?? 10_000);
    this.#attempt += 1;
    this.#emit('reconnecting', { attempt: this.#attempt, delayMs });
    if (this.#state === 'reconnecting') this.#timer = platform.setTimeout(() => void this.#connect(), delayMs);
  }

  #received(data: unknown): void {
    if (typeof data !== 'string') return this.#emit('message', data, {});
    let msg: unknown;
    try {
      msg = JSON.parse(data);
    } catch {
      return this.#emit('message', data, {});
    }
    const m = (typeof msg === 'object' && msg !== null ? msg : {}) as Json;
    const requestId = typeof m.requestId === 'string' || typeof m.requestId === 'number' ? String(m.requestId) : undefined;
    const room = typeof m.room === 'string' ? m.room : undefined;
    switch (m.type) {
      case 'ok':
      case 'pong': {
        const pending = this.#take(requestId);
        if (m.op === 'join' && room !== undefined) {
          if (isPosition(m.position)) this.#track(room, m.position);
          if (typeof m.recovered === 'boolean' || pending?.since) this.#emit('recovery', { room, recovered: m.recovered === true });
        }
        return pending?.resolve(m as Reply);
      }
      case 'error': {
        const pending = this.#take(requestId);
        const error = new BcastClientError(typeof m.code === 'string' ? m.code : 'INTERNAL', typeof m.message === 'string' ? m.message : 'error', requestId, pending?.room ?? room);
        if (!pending) return this.#emit('error', error);
        if (pending.op === 'join' && pending.room !== undefined) this.#forget(pending.room); // a refused join
        return pending.reject(error);
      }
      case 'bcast.pub': {
        const offset = typeof m.offset === 'number' ? m.offset : undefined;
        const epoch = typeof m.epoch === 'string' ? m.epoch : undefined;
        if (room !== undefined && offset !== undefined && epoch !== undefined && !this.#accept(room, offset, epoch)) return; // already delivered
        return this.#emit('message', m.data, { ...(room === undefined ? {} : { room }), ...(offset === undefined ? {} : { offset }), ...(epoch === undefined ? {} : { epoch }) });
      }
      case 'bcast.presence':
        if (room !== undefined && (m.event === 'join' || m.event === 'leave') && typeof m.userId === 'string') this.#emit('presence', { room, event: m.event, userId: m.userId });
        return;
      default:
        this.#emit('message', msg, {});
    }
  }

  #sendJoin(room: string): Promise<Reply> {
    const since = this.#positions.get(room);
    return this.#request(since ? { type: 'join', room, since } : { type: 'join', room }, room, since !== undefined);
  }

  #request(frame: Json & { type: string }, room?: string, since = false): Promise<Reply> {
    const socket = this.#socket;
    if (this.#state !== 'open' || !socket) return Promise.reject(new BcastClientError(this.#state === 'closed' ? 'CLOSED' : 'DISCONNECTED', `cannot send ${String(frame.type)}: the client is ${this.#state}`, undefined, room));
    const requestId = String(++this.#seq);
    return new Promise<Reply>((resolve, reject) => {
      const timer = platform.setTimeout(() => {
        this.#pending.delete(requestId);
        reject(new BcastClientError('TIMEOUT', `no reply to ${String(frame.type)} within ${this.#o.requestTimeoutMs} ms`, requestId, room));
      }, this.#o.requestTimeoutMs);
      this.#pending.set(requestId, { resolve, reject, timer, op: frame.type, room, since });
      try {
        socket.send(JSON.stringify({ ...frame, requestId }));
      } catch (error) {
        this.#take(requestId)?.reject(new BcastClientError('DISCONNECTED', describe(error), requestId, room));
      }
    });
  }

  #take(requestId: string | undefined): Pending | undefined {
    const pending = this.#pending.get(requestId ?? '');
    this.#pending.delete(requestId ?? '');
    platform.clearTimeout(pending?.timer);
    return pending;
  }

  /**
   * Whether a publication is new. A room's position is the highest offset up to which every
   * message arrived (what a rejoin asks from); offsets above it that arrived out of order are kept
   * aside, so nothing is delivered twice and a rejoin still asks for the missing ones.
   */
  #accept(room: string, offset: number, epoch: string): boolean {
    const last = this.#positions.get(room);
    if (!this.#rooms.has(room)) return true;
    if (!last || last.epoch !== epoch) {
      this.#ahead.delete(room);
      this.#positions.set(room, { offset, epoch });
      return true;
    }
    const ahead = this.#ahead.get(room) ?? new Set<number>();
    if (offset <= last.offset || ahead.has(offset)) return false;
    if (offset !== last.offset + 1) {
      ahead.add(offset);
      this.#ahead.set(room, ahead);
      return true;
    }
    let top = offset;
    while (ahead.delete(top + 1)) top += 1;
    if (ahead.size === 0) this.#ahead.delete(room);
    this.#positions.set(room, { offset: top, epoch });
    return true;
  }

  /** Positions are kept for the rooms the client joined (what it rejoins), never moving back within an epoch. */
  #track(room: string, { offset, epoch }: Position): void {
    const last = this.#positions.get(room);
    if (!this.#rooms.has(room) || (last && last.epoch === epoch && offset <= last.offset)) return;
    if (last?.epoch !== epoch) this.#ahead.delete(room);
    this.#positions.set(room, { offset, epoch });
    const ahead = this.#ahead.get(room);
    if (ahead) for (const o of ahead) if (o <= offset) ahead.delete(o);
  }

  #forget(room: string): void {
    this.#rooms.delete(room);
    this.#positions.delete(room);
    this.#ahead.delete(room);
  }

  #takeWaiters(room: string): Set<Pending> | undefined {
    const waiters = this.#waiters.get(room);
    this.#waiters.delete(room);
    return waiters;
  }

  /** Rejects the requests in flight and, unless `andWaiters` is false, the joins waiting for an open. */
  #failAll(code: BcastClientErrorCode, message: string, andWaiters = true): void {
    const pending = [...this.#pending.entries()];
    this.#pending.clear();
    for (const [requestId, p] of pending) {
      platform.clearTimeout(p.timer);
      p.reject(new BcastClientError(code, message, requestId, p.room));
    }
    if (andWaiters) for (const room of [...this.#waiters.keys()]) settle(this.#takeWaiters(room), undefined, new BcastClientError(code, message, undefined, room));
  }

  #emit<K extends keyof ClientEvents>(event: K, ...args: Parameters<ClientEvents[K]>): void {
    for (const listener of [...this.#listeners[event]]) {
      try {
        (listener as (...a: Parameters<ClientEvents[K]>) => void)(...args);
      } catch (error) {
        platform.queueMicrotask(() => {
          throw error; // a listener's bug is reported, not swallowed, and does not break the client
        });
      }
    }
  }
}

function settle(waiters: Set<Pending> | undefined, reply: Reply | undefined, error: BcastClientError | undefined): void {
  for (const w of waiters ?? []) {
    platform.clearTimeout(w.timer);
    if (error) w.reject(error);
    else w.resolve(reply as Reply);
  }
}

function closeQuietly(socket: WebSocketLike): void {
  try {
    socket.close();
  } catch {
    // already closing
  }
}

function detach(socket: WebSocketLike): void {
  socket.onopen = noop;
  socket.onmessage = noop;
  socket.onclose = noop;
  socket.onerror = noop; // never null: the ws package throws an 'error' nobody listens to
}

function isPosition(value: unknown): value is Position {
  const p = value as Position | null;
  return typeof p === 'object' && p !== null && typeof p.offset === 'number' && typeof p.epoch === 'string';
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
