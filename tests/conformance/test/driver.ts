import type { Broadcaster, BroadcasterOptions } from '@bcast/core';
import type { AuthResult, OriginPolicy } from '@bcast/core/adapter';

/**
 * What the conformance suite needs from one adapter. Each adapter provides one driver
 * (drivers/ws.ts, drivers/express.ts, drivers/socketio.ts); the cases in conformance.test.ts
 * run unchanged against each of them, on real servers at port 0 with real clients.
 */
export interface StartOptions {
  /** Passed to the Broadcaster the driver creates. */
  broadcaster?: BroadcasterOptions;
  /** Identity from the upgrade; the token is whatever `ConnectOptions.token` carried. */
  authenticate?: (token: string | undefined) => AuthResult | Promise<AuthResult>;
  allowedOrigins?: OriginPolicy;
  /** How long `authenticate` may take before the handshake is refused. @default the adapter's */
  authTimeoutMs?: number;
}

export interface ServerUnderTest {
  readonly broadcaster: Broadcaster;
  /** The adapter's dispose(): closes clients with 1001, removes listeners, clears timers. */
  dispose(): Promise<void>;
  /** Stops the HTTP server (after dispose). */
  close(): Promise<void>;
  /** Listener counts on the server objects, to prove dispose() left nothing behind. */
  listenerCounts(): Record<string, number>;
  /** listenerCounts() as they were just before the adapter was attached: dispose() must restore exactly these. */
  readonly listenersBeforeAttach: Readonly<Record<string, number>>;
}

export interface TestClient {
  /** Every application message received, parsed from JSON, in order. */
  readonly messages: unknown[];
  /** Resolves with the next message (or one already buffered and not yet taken). */
  next(timeoutMs?: number): Promise<unknown>;
  /** Resolves when at least `n` messages arrived in total. */
  waitFor(n: number, timeoutMs?: number): Promise<unknown[]>;
  /** Resolves when the connection closes, with the close code (socket.io: 1001 for a server disconnect). */
  readonly closed: Promise<{ code: number; reason: string }>;
  /** Sends a protocol message (join / leave) and resolves with the reply. */
  request(message: Record<string, unknown>): Promise<unknown>;
  /** Clean close. */
  close(): void;
  /** Abrupt: destroy the TCP socket, no close frame. */
  destroy(): void;
  /** Stop reading from the socket (the kernel buffers fill up). */
  pauseReading(): void;
}

export interface ConnectOptions {
  token?: string;
  origin?: string;
}

/**
 * How a refused handshake looked from the client (and, for socket.io, from engine.io). Compared
 * whole, so that one kind of refusal can never pass for another (a 401 for a 403...).
 */
export interface Refusal {
  /** ws, express: the HTTP status of the refused upgrade (the `ws` client's `unexpected-response`). */
  readonly status?: number;
  /** socket.io: the `connect_error` message. */
  readonly message?: string;
  /** socket.io: what the transport underneath reported, when the handshake failed below socket.io (the error's `description`). */
  readonly cause?: string;
  /** socket.io: engine.io's `connection_error`s during the attempt, when engine.io refused it (`allowRequest`). */
  readonly engine?: ReadonlyArray<{ readonly code: number; readonly reason: string }>;
}

export interface AdapterDriver {
  readonly name: string;
  start(options: StartOptions): Promise<ServerUnderTest>;
  /** Connects and resolves once the server has registered the connection. */
  connect(server: ServerUnderTest, options?: ConnectOptions): Promise<TestClient>;
  /** Attempts a connection that must be refused and resolves with how it was refused; rejects when it is accepted. */
  connectRejected(server: ServerUnderTest, options?: ConnectOptions): Promise<Refusal>;
}
