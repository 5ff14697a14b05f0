import { Broadcaster, BcastError, CloseCode, ErrorCode, type BroadcasterOptions, type ConnectionEntry, type Logger } from '@bcast/core';
import { newConnectionId } from '@bcast/core/adapter';
import { resolveOptions, warn, withLegacyDefaults, type CompatOptions, type ResolvedOptions, type SocketIoOptions } from './options.js';
import { isSocketIoSocket, registerSocket } from './sockets.js';

/**
 * One connection as legacy code knows it: a live view over the core's ConnectionEntry (never a
 * copy), so the counters and `isClosing` are always those the Broadcaster uses.
 */
export interface ConnectionInfo<TSocket = any> {
  readonly connectionId: string;
  /** The user the connection was registered for ('' for an anonymous adapter connection). */
  readonly userId: string;
  /** What was handed to `connect()`; for connections an adapter registered, the core Connection. */
  readonly socket: TSocket;
  readonly connectedAt: Date;
  /** Messages written to this connection. */
  messageCount: number;
  /** Sends that failed for another reason than a dead socket. */
  errorCount: number;
  /** Once true the connection receives nothing more (set it to stop sends to it). */
  isClosing: boolean;
}

/** Internal hooks between the compat classes (not exported from the package). */
export const internal = Symbol('@bcast/compat/internal');

export interface CompatContext {
  readonly logger: Logger;
  readonly errorMode: 'result' | 'reject';
  /** Applies a BroadcastManager's options; throws BCAST_INVALID_OPTION when they conflict. */
  configure(options: ResolvedOptions): void;
}

/** A user or room id as legacy code passes it: numbers work as their string form. */
export type LegacyId = string | number;

/** The core's (string) form of a legacy id. Anything else is passed on for the core to refuse. */
export function idOf(value: LegacyId): string {
  return (typeof value === 'number' && Number.isFinite(value) ? String(value) : value) as string;
}

const rawSockets = new WeakMap<ConnectionEntry, unknown>();
/** The user id as legacy code gave it, when that was not the string the registry uses. */
const givenUserIds = new WeakMap<ConnectionEntry, unknown>();
const views = new WeakMap<ConnectionEntry, ConnectionInfo>();
const entries = new WeakMap<object, ConnectionEntry>();

/** The ConnectionInfo of an entry: one per entry, shared by every manager on the Broadcaster. */
export function viewOf(entry: ConnectionEntry): ConnectionInfo {
  const existing = views.get(entry);
  if (existing) return existing;
  const info = {} as ConnectionInfo;
  Object.defineProperties(info, {
    connectionId: { enumerable: true, get: () => entry.id },
    userId: { enumerable: true, get: () => (givenUserIds.has(entry) ? givenUserIds.get(entry) : (entry.userId ?? '')) },
    socket: { enumerable: true, get: () => (rawSockets.has(entry) ? rawSockets.get(entry) : entry.connection) },
    connectedAt: { enumerable: true, get: () => entry.connectedAt },
    messageCount: { enumerable: true, get: () => entry.messageCount, set: (value: number) => void (entry.messageCount = value) },
    errorCount: { enumerable: true, get: () => entry.errorCount, set: (value: number) => void (entry.errorCount = value) },
    isClosing: { enumerable: true, get: () => entry.isClosing, set: (value: boolean) => void (entry.isClosing = value === true) },
  });
  views.set(entry, info);
  entries.set(info, entry);
  return info;
}

/**
 * The legacy registry of live sockets, over a core Broadcaster's registries (there is no second
 * copy that could drift). `connect` takes a raw `ws` WebSocket, a raw socket.io Socket or any core
 * Connection, and wires the socket's close so the registry is cleaned when the client leaves.
 *
 * The Broadcaster is the one in `options.broadcaster`, or one this manager creates (with the other
 * options) when first needed; a BroadcastManager built on this manager may still configure it then.
 */
export class ConnectionManager {
  #broadcaster: Broadcaster | undefined;
  #owned = false;
  #logger: Logger;
  #socketIo: Required<SocketIoOptions>;
  #errorMode: 'result' | 'reject';
  #configured: boolean;

  /** @throws BcastError BCAST_INVALID_OPTION for invalid options (the only throw of this class). */
  constructor(options?: CompatOptions | null) {
    const resolved = resolveOptions(options, 'ConnectionManager');
    this.#logger = resolved.logger ?? console;
    this.#socketIo = resolved.socketIo ?? { event: 'message', payload: 'value' };
    this.#errorMode = resolved.errorMode ?? 'result';
    this.#configured = resolved.broadcaster !== undefined || resolved.broadcasterOptions !== undefined;
    if (resolved.broadcaster) this.#broadcaster = resolved.broadcaster;
    else if (resolved.broadcasterOptions) this.#create(resolved.broadcasterOptions);
  }

  /** The core Broadcaster behind this manager (for the new API: `toRoom`, `except`, `volatile`...). */
  get broadcaster(): Broadcaster {
    return this.#broadcaster ?? this.#create({});
  }

  /** Registers a socket for a user. Connecting the same socket again returns its existing info. Never throws. */
  connect(userId: LegacyId, socket: any): ConnectionInfo {
    const b = this.broadcaster;
    const user = idOf(userId);
    for (const entry of b.connections.byUser(user)) {
      if (rawSockets.get(entry) === socket || entry.connection === socket) return viewOf(entry);
    }
    try {
      // A socket.io socket @bcast/socket.io's attachToServer already registered (its id is
      // socket.id): adopt it. The identity its `authenticate` gave stays authoritative.
      const adopted = isSocketIoSocket(socket) ? b.connections.get(String(socket.id)) : undefined;
      if (adopted && adopted.userId !== user) {
        warn(this.#logger, `connect(${JSON.stringify(userId)}): socket ${adopted.id} is already registered for user ${JSON.stringify(adopted.userId)} by the adapter; keeping that`);
      }
      const entry = adopted ?? registerSocket(b, user, socket, this.#socketIo).entry;
      if (!adopted && user !== userId) givenUserIds.set(entry, userId);
      rawSockets.set(entry, socket);
      return viewOf(entry);
    } catch (error) {
      warn(this.#logger, `connect(${JSON.stringify(userId)}) could not register the socket`, error);
      return this.#detached(userId, socket);
    }
  }

  /**
   * Closes a user's socket with `code` (default 1000) and `reason` and removes it from the registry
   * and from every room now. False when that socket is not registered for that user. Never throws.
   */
  disconnect(userId: LegacyId, socket: any, code?: number, reason?: string): boolean {
    const b = this.broadcaster;
    for (const entry of b.connections.byUser(idOf(userId))) {
      if (rawSockets.get(entry) === socket || entry.connection === socket || views.get(entry) === socket) {
        return b.disconnect(entry.id, code ?? CloseCode.Normal, reason ?? '');
      }
    }
    return false;
  }

  getUserConnections(userId: LegacyId): ConnectionInfo[] {
    return Array.from(this.broadcaster.connections.byUser(idOf(userId)), viewOf);
  }

  getConnectionById(connectionId: string): ConnectionInfo | undefined {
    const entry = this.broadcaster.connections.get(connectionId);
    return entry ? viewOf(entry) : undefined;
  }

  /** Registered, not closing, and its socket is open. */
  isConnectionAlive(info: ConnectionInfo): boolean {
    try {
      const b = this.broadcaster;
      const entry = (isObject(info) ? entries.get(info) : undefined) ?? (isObject(info) ? b.connections.get(String(info.connectionId)) : undefined);
      return entry !== undefined && b.connections.get(entry.id) === entry && !entry.isClosing && entry.connection.isOpen;
    } catch {
      return false;
    }
  }

  /** userId -> its connections, built from the registry on each read (changing the Map changes nothing). */
  get activeConnections(): Map<string, ConnectionInfo[]> {
    const registry = this.broadcaster.connections;
    const map = new Map<string, ConnectionInfo[]>();
    for (const userId of registry.users()) {
      const infos = Array.from(registry.byUser(userId), viewOf);
      map.set(infos[0]?.userId ?? userId, infos);
    }
    return map;
  }

  /**
   * Disposes the Broadcaster when this manager created it (clients get 1001 "server shutting down");
   * a Broadcaster passed in options is left to its owner.
   */
  async dispose(): Promise<void> {
    if (this.#owned && this.#broadcaster) await this.#broadcaster.dispose();
  }

  /** @internal */
  get [internal](): CompatContext {
    return {
      logger: this.#logger,
      errorMode: this.#errorMode,
      configure: (options) => this.#configure(options),
    };
  }

  #configure(options: ResolvedOptions): void {
    const wanted = options.broadcaster !== undefined || options.broadcasterOptions !== undefined;
    if (wanted && this.#broadcaster !== undefined && options.broadcaster !== this.#broadcaster) {
      const why = this.#configured ? 'was given its own Broadcaster options' : 'has already started its Broadcaster (it was used before this BroadcastManager was created)';
      throw new BcastError(
        ErrorCode.InvalidOption,
        `the ConnectionManager ${why}; pass the options to new ConnectionManager(options), or create the BroadcastManager before using the ConnectionManager`,
      );
    }
    if (options.logger) this.#logger = options.logger;
    if (options.socketIo) this.#socketIo = options.socketIo;
    if (options.errorMode) this.#errorMode = options.errorMode;
    if (!wanted || this.#broadcaster !== undefined) return;
    this.#configured = true;
    if (options.broadcaster) this.#broadcaster = options.broadcaster;
    else this.#create(options.broadcasterOptions ?? {});
  }

  #create(options: BroadcasterOptions): Broadcaster {
    const broadcaster = new Broadcaster(withLegacyDefaults({ logger: this.#logger, ...options }));
    this.#broadcaster = broadcaster;
    this.#owned = true;
    return broadcaster;
  }

  /** The info of a socket that could not be registered (the broadcaster is disposed...): closing, in no registry. */
  #detached(userId: LegacyId, socket: unknown): ConnectionInfo {
    const id = newConnectionId();
    const entry: ConnectionEntry = {
      id,
      userId: idOf(userId),
      connection: { id, userId: idOf(userId), isOpen: false, bufferedBytes: 0, send: () => {}, close: () => {} },
      connectedAt: new Date(),
      messageCount: 0,
      errorCount: 0,
      isClosing: true,
      lastSeenAt: Date.now(),
      awaitingPong: false,
    };
    rawSockets.set(entry, socket);
    if (entry.userId !== userId) givenUserIds.set(entry, userId);
    return viewOf(entry);
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}
