// The public types of @bcast/client: options, events, replies and errors.

/** The part of a WHATWG WebSocket the client uses (browsers, Node 22+, the `ws` package). */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  onopen: ((event: never) => void) | null;
  onmessage: ((event: never) => void) | null;
  onclose: ((event: never) => void) | null;
  onerror: ((event: never) => void) | null;
  send(data: string | ArrayBuffer | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export type ClientState = 'connecting' | 'open' | 'reconnecting' | 'closed';
/** A room's position in its history: the last publication's offset within an epoch. */
export interface Position {
  offset: number;
  epoch: string;
}
export interface MessageMeta {
  room?: string;
  offset?: number;
  epoch?: string;
}
export interface PresenceEvent {
  room: string;
  event: 'join' | 'leave';
  userId: string;
}
/** A server reply to a request: `{ type: 'ok', op, room, position?, recovered? }` or `{ type: 'pong' }`. */
export interface Reply {
  type: 'ok' | 'pong';
  op?: 'join' | 'leave';
  room?: string;
  requestId?: string;
  position?: Position;
  recovered?: boolean;
  [key: string]: unknown;
}

export interface ClientEvents {
  /** The socket is open; `reconnect` is true after a drop (rooms are being rejoined). */
  open: (info: { reconnect: boolean }) => void;
  message: (data: unknown, meta: MessageMeta) => void;
  close: (info: { code: number; reason: string; willReconnect: boolean }) => void;
  /** A new attempt is scheduled in `delayMs`; `attempt` counts from 1 since the last open. */
  reconnecting: (info: { attempt: number; delayMs: number }) => void;
  error: (error: BcastClientError) => void;
  /** After a rejoin with a position: `recovered: false` means messages were missed (reload the room's state). */
  recovery: (info: { room: string; recovered: boolean }) => void;
  presence: (event: PresenceEvent) => void;
}

/** Server codes (FORBIDDEN, RATE_LIMITED, INVALID_ROOM, TOO_MANY_ROOMS, ...) or the client's own. */
export type BcastClientErrorCode =
  | 'FORBIDDEN' | 'RATE_LIMITED' | 'INVALID_ROOM' | 'TOO_MANY_ROOMS' | 'UNKNOWN_TYPE' | 'BAD_JSON' | 'INVALID_ARGUMENT' | 'INTERNAL'
  | 'TIMEOUT' | 'DISCONNECTED' | 'CLOSED' | 'CANCELLED' | 'CONNECTION_ERROR'
  | (string & {});

export class BcastClientError extends Error {
  override readonly name = 'BcastClientError';
  readonly code: BcastClientErrorCode;
  readonly requestId: string | undefined;
  readonly room: string | undefined;
  constructor(code: BcastClientErrorCode, message: string, requestId?: string, room?: string) {
    super(message);
    this.code = code;
    this.requestId = requestId;
    this.room = room;
  }
}

export interface BcastClientOptions {
  /** The server's URL, or a function returning it, called before every (re)connect (put a fresh token in the query). */
  url: string | (() => string | Promise<string>);
  protocols?: string | string[] | undefined;
  /** The WebSocket class; defaults to `globalThis.WebSocket`. On Node 20 pass the `ws` package's. */
  WebSocket?: WebSocketConstructor | undefined;
  /** Backoff base: attempt n waits a random time in [0, min(max, min * 2^n)]. @default 500 */
  minReconnectDelayMs?: number | undefined;
  /** @default 10_000 */
  maxReconnectDelayMs?: number | undefined;
  /** Consecutive failed attempts before giving up (state 'closed'). @default Infinity */
  maxReconnectAttempts?: number | undefined;
  /**
   * Close codes that reconnect although they are final by default (1008, 4000-4999), or a function
   * deciding for every close code. Nothing reconnects after `close()`.
   */
  reconnectOnCodes?: readonly number[] | ((code: number, reason: string) => boolean) | undefined;
  /** Time for a reply (join, leave, ping) before it rejects with TIMEOUT. @default 10_000 */
  requestTimeoutMs?: number | undefined;
  /** Time for the socket to open before the attempt counts as failed. @default 10_000 */
  connectTimeoutMs?: number | undefined;
}
