import type { AuthResult, Broadcaster, BroadcasterOptions, OriginPolicy } from '@bcast/core';

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
}

export interface ServerUnderTest {
  readonly broadcaster: Broadcaster;
  /** The adapter's dispose(): closes clients with 1001, removes listeners, clears timers. */
  dispose(): Promise<void>;
  /** Stops the HTTP server (after dispose). */
  close(): Promise<void>;
  /** Listener counts on the server objects, to prove dispose() left nothing behind. */
  listenerCounts(): Record<string, number>;
  /**
   * listenerCounts() as they were just before the adapter was attached (optional). When present,
   * the dispose case requires the counts to return to exactly these after dispose(); without it,
   * it can only check that dispose() removed some listeners and added none.
   */
  readonly listenersBeforeAttach?: Readonly<Record<string, number>>;
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

export interface AdapterDriver {
  readonly name: string;
  start(options: StartOptions): Promise<ServerUnderTest>;
  /** Connects and resolves once the server has registered the connection. */
  connect(server: ServerUnderTest, options?: ConnectOptions): Promise<TestClient>;
  /** Attempts a connection that must be refused; resolves with the HTTP status (ws, express) or the connect_error message (socket.io). */
  connectRejected(server: ServerUnderTest, options?: ConnectOptions): Promise<{ status?: number; message?: string }>;
}
