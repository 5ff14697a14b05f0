/**
 * One small shim over the two Redis clients people use: ioredis (5, 6) and node-redis (5, 6). The backplane
 * talks to a {@link RedisLink} and never to a client library directly; neither library is
 * imported here, not even as types, so users install only the one they pick.
 */

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- event listener signatures of both client libraries
type Listener = (...args: any[]) => void;

/** The part of an ioredis 5 or 6 client (`new Redis()`) the backplane uses. */
export interface IoRedisClient {
  readonly status: string;
  /** The socket; "ready" with a socket that is no longer writable would queue or refuse commands. */
  readonly stream?: { readonly writable: boolean } | undefined;
  duplicate(override?: Record<string, unknown>): IoRedisClient;
  connect(): Promise<void>;
  publish(channel: string, message: string): Promise<number>;
  subscribe(channel: string): Promise<unknown>;
  unsubscribe(channel: string): Promise<unknown>;
  call(command: string, ...args: string[]): Promise<unknown>;
  quit(): Promise<unknown>;
  disconnect(reconnect?: boolean): void;
  on(event: string, listener: Listener): unknown;
  off(event: string, listener: Listener): unknown;
}

/** The part of a node-redis 5 or 6 client (`createClient()`) the backplane uses. */
export interface NodeRedisClient {
  readonly isOpen: boolean;
  readonly isReady: boolean;
  readonly options?: object | undefined;
  duplicate(overrides?: never): NodeRedisClient;
  connect(): Promise<unknown>;
  publish(channel: string, message: string): Promise<number>;
  subscribe(channel: string, listener: (message: string, channel: string) => unknown): Promise<unknown>;
  unsubscribe(channel: string, listener: (message: string, channel: string) => unknown): Promise<unknown>;
  sendCommand(args: string[]): Promise<unknown>;
  close(): Promise<unknown>;
  destroy(): void;
  on(event: string, listener: Listener): unknown;
  off(event: string, listener: Listener): unknown;
}

/** A Redis client the backplane accepts: ioredis (5, 6) or node-redis (5, 6). */
export type RedisClientLike = IoRedisClient | NodeRedisClient;

export type ClientKind = 'ioredis' | 'node-redis';

/** What a link reports back. Every callback is wrapped: nothing a hook throws escapes. */
export interface LinkHooks {
  ready(): void;
  down(why: string): void;
  error(error: unknown): void;
  /** Subscriber links only: one message read from the channel. */
  message?(raw: string): void;
}

/** Settings for connections the backplane creates itself. */
export interface OwnedSettings {
  readonly retryDelayMs: (attempt: number) => number;
  /** CLIENT SETNAME of the subscriber, so stale subscriber connections can be found and killed. */
  readonly connectionName?: string;
}

/** One Redis connection, whichever client library is behind it. */
export interface RedisLink {
  readonly kind: ClientKind;
  /** Created by the backplane (quit on release) or supplied by the user (left open). */
  readonly owned: boolean;
  isReady(): boolean;
  /** Short state for health: ready, connecting, reconnecting, closed... */
  state(): string;
  publish(channel: string, message: string): Promise<number>;
  /**
   * True when `error`, from `publish` or `command`, was raised before anything was handed to the
   * socket (offline, closed): the command certainly never reached Redis.
   */
  notWritten(error: unknown): boolean;
  command(args: readonly string[]): Promise<unknown>;
  /** SUBSCRIBE on this connection (idempotent). */
  subscribe(channel: string): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  /** Drops the connection and lets the client reconnect; false when the client cannot do that. */
  reconnect(): boolean;
  /** A new connection with the same server settings, configured for subscribing. */
  duplicateForSubscriber(hooks: LinkHooks, settings: OwnedSettings): RedisLink;
  /** A new connection with the same server settings, configured to publish and fail fast. Owned. */
  duplicateForPublisher(hooks: LinkHooks, settings: OwnedSettings): RedisLink;
  /**
   * Removes the backplane's listeners; closes the connection when owned: QUIT first, or at once
   * when `abandon` (a connection that hangs or lost bytes). Never rejects. Idempotent.
   */
  release(abandon?: boolean): Promise<void>;
}

export function clientKind(client: unknown): ClientKind | undefined {
  if (typeof client !== 'object' || client === null) return undefined;
  const c = client as Record<string, unknown>;
  if (typeof c['status'] === 'string' && typeof c['disconnect'] === 'function' && typeof c['duplicate'] === 'function') return 'ioredis';
  if (typeof c['isReady'] === 'boolean' && typeof c['sendCommand'] === 'function' && typeof c['duplicate'] === 'function') return 'node-redis';
  return undefined;
}

/** Wraps a client. `owned` clients get fail-fast settings at creation (see the factories below). */
export function linkFor(client: RedisClientLike, owned: boolean, hooks: LinkHooks): RedisLink {
  const kind = clientKind(client);
  if (kind === 'ioredis') return new IoRedisLink(client as IoRedisClient, owned, hooks);
  if (kind === 'node-redis') return new NodeRedisLink(client as NodeRedisClient, owned, hooks);
  throw new TypeError('expected an ioredis 5 or 6 client (new Redis()) or a node-redis 5 or 6 client (createClient())');
}

/** ioredis options that make commands fail fast while disconnected and never replay a backlog. */
export function ioredisFailFast(settings: OwnedSettings): Record<string, unknown> {
  return {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    retryStrategy: (times: number) => settings.retryDelayMs(times),
    lazyConnect: false,
  };
}

function ignore(): void {}

function safe(fn: () => void): void {
  try {
    fn();
  } catch {
    // a hook never breaks the client's event loop
  }
}

/** Waits for `work` at most `ms`; resolves either way. */
async function bounded(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work.then(
        () => true,
        () => false,
      ),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), ms);
        timer.unref();
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const QUIT_DEADLINE_MS = 1_000;

class IoRedisLink implements RedisLink {
  readonly kind = 'ioredis' as const;
  readonly #client: IoRedisClient;
  readonly owned: boolean;
  readonly #listeners: Array<[string, Listener]> = [];
  #channel: string | undefined;
  #released = false;

  constructor(client: IoRedisClient, owned: boolean, hooks: LinkHooks) {
    this.#client = client;
    this.owned = owned;
    const listen = (event: string, fn: Listener): void => {
      client.on(event, fn);
      this.#listeners.push([event, fn]);
    };
    listen('error', (error: unknown) => safe(() => hooks.error(error)));
    listen('ready', () => safe(() => hooks.ready()));
    listen('close', () => safe(() => hooks.down('connection closed')));
    listen('end', () => safe(() => hooks.down('connection ended')));
    const onMessage = hooks.message;
    if (onMessage) {
      listen('message', (channel: string, raw: string) => {
        if (channel === this.#channel) safe(() => onMessage(raw));
      });
    }
    if (client.status === 'wait') client.connect().catch(() => {});
  }

  isReady(): boolean {
    const client = this.#client;
    return client.status === 'ready' && client.stream?.writable !== false;
  }

  state(): string {
    const status = this.#client.status;
    return status === 'ready' && !this.isReady() ? 'ready, socket not writable' : status;
  }

  publish(channel: string, message: string): Promise<number> {
    return this.#client.publish(channel, message);
  }

  /** ioredis refuses, before writing, a command it cannot write and may not queue. */
  notWritten(error: unknown): boolean {
    return error instanceof Error && error.message.includes("enableOfflineQueue options is false");
  }

  command(args: readonly string[]): Promise<unknown> {
    const [name, ...rest] = args;
    return this.#client.call(name ?? 'PING', ...rest);
  }

  async subscribe(channel: string): Promise<void> {
    this.#channel = channel;
    await this.#client.subscribe(channel);
  }

  async unsubscribe(channel: string): Promise<void> {
    this.#channel = undefined;
    await this.#client.unsubscribe(channel);
  }

  reconnect(): boolean {
    this.#client.disconnect(true);
    return true;
  }

  duplicateForSubscriber(hooks: LinkHooks, settings: OwnedSettings): RedisLink {
    const client = this.#client.duplicate({
      ...ioredisFailFast(settings),
      autoResubscribe: false,
      disconnectTimeout: 500,
      ...(settings.connectionName ? { connectionName: settings.connectionName } : {}),
    });
    return new IoRedisLink(client, true, hooks);
  }

  duplicateForPublisher(hooks: LinkHooks, settings: OwnedSettings): RedisLink {
    return new IoRedisLink(this.#client.duplicate({ ...ioredisFailFast(settings) }), true, hooks);
  }

  async release(abandon = false): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    const client = this.#client;
    for (const [event, fn] of this.#listeners) client.off(event, fn);
    if (!this.owned) return;
    client.on('error', ignore); // a late error on a discarded client must not crash
    if (!abandon && client.status === 'ready') await bounded(client.quit(), QUIT_DEADLINE_MS);
    if (client.status !== 'end') safe(() => client.disconnect());
  }
}

class NodeRedisLink implements RedisLink {
  readonly kind = 'node-redis' as const;
  readonly #client: NodeRedisClient;
  readonly owned: boolean;
  readonly #listeners: Array<[string, Listener]> = [];
  readonly #onMessage: ((message: string, channel: string) => void) | undefined;
  #subscribed: string | undefined;
  #released = false;

  constructor(client: NodeRedisClient, owned: boolean, hooks: LinkHooks) {
    this.#client = client;
    this.owned = owned;
    const listen = (event: string, fn: Listener): void => {
      client.on(event, fn);
      this.#listeners.push([event, fn]);
    };
    listen('error', (error: unknown) => safe(() => hooks.error(error)));
    listen('ready', () => safe(() => hooks.ready()));
    listen('reconnecting', () => safe(() => hooks.down('reconnecting')));
    listen('end', () => safe(() => hooks.down('connection ended')));
    const onMessage = hooks.message;
    if (onMessage) this.#onMessage = (raw: string) => safe(() => onMessage(raw));
    if (!client.isOpen) client.connect().catch(() => {});
  }

  isReady(): boolean {
    return this.#client.isReady;
  }

  state(): string {
    if (this.#client.isReady) return 'ready';
    return this.#client.isOpen ? 'connecting' : 'closed';
  }

  publish(channel: string, message: string): Promise<number> {
    return this.#client.publish(channel, message);
  }

  /** node-redis rejects before queueing when the socket is closed, or offline with the offline queue disabled. */
  notWritten(error: unknown): boolean {
    return error instanceof Error && (error.name === 'ClientOfflineError' || error.name === 'ClientClosedError' || /^The client is (offline|closed)$/.test(error.message));
  }

  command(args: readonly string[]): Promise<unknown> {
    return this.#client.sendCommand([...args]);
  }

  /** node-redis keeps subscriptions across its own reconnects, so this subscribes once. */
  async subscribe(channel: string): Promise<void> {
    if (this.#subscribed === channel || !this.#onMessage) return;
    await this.#client.subscribe(channel, this.#onMessage);
    this.#subscribed = channel;
  }

  async unsubscribe(channel: string): Promise<void> {
    if (this.#subscribed !== channel || !this.#onMessage) return;
    this.#subscribed = undefined;
    await this.#client.unsubscribe(channel, this.#onMessage);
  }

  /** node-redis has no public "reconnect": the backplane replaces an owned connection instead. */
  reconnect(): boolean {
    return false;
  }

  duplicateForSubscriber(hooks: LinkHooks, settings: OwnedSettings): RedisLink {
    const base = (this.#client.options ?? {}) as { socket?: object };
    const client = this.#client.duplicate({
      disableOfflineQueue: true,
      ...(settings.connectionName ? { name: settings.connectionName } : {}),
      socket: { ...base.socket, reconnectStrategy: (retries: number) => settings.retryDelayMs(retries + 1) },
    } as never);
    return new NodeRedisLink(client, true, hooks);
  }

  duplicateForPublisher(hooks: LinkHooks, settings: OwnedSettings): RedisLink {
    const base = (this.#client.options ?? {}) as { socket?: object };
    const client = this.#client.duplicate({
      disableOfflineQueue: true,
      socket: { ...base.socket, reconnectStrategy: (retries: number) => settings.retryDelayMs(retries + 1) },
    } as never);
    return new NodeRedisLink(client, true, hooks);
  }

  async release(abandon = false): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    const client = this.#client;
    for (const [event, fn] of this.#listeners) client.off(event, fn);
    if (!this.owned) return;
    client.on('error', ignore); // a late error on a discarded client must not crash
    if (!abandon && client.isReady) await bounded(client.close(), QUIT_DEADLINE_MS);
    if (client.isOpen) safe(() => client.destroy());
  }
}
