import type { EncodedMessage } from './EncodedMessage.js';

/**
 * The port every transport adapter implements: one live client connection.
 * Keep it a plain object; the core never sees the socket library behind it.
 */
export interface Connection {
  /** Unique within this process. */
  readonly id: string;
  /** The authenticated user, from the upgrade (never from a message body). */
  readonly userId: string | undefined;
  /** Whatever `authenticate` returned besides the user id. */
  readonly data?: unknown;
  /** True while frames can be written. */
  readonly isOpen: boolean;
  /** Bytes accepted by the transport but not yet written to the kernel. */
  readonly bufferedBytes: number;
  /** Writes one message. Throws synchronously when it cannot (closed socket...). */
  send(message: EncodedMessage): void;
  /** Starts a clean close with a WebSocket close code and reason. */
  close(code: number, reason: string): void;
  /** Destroys the socket without a close handshake. Falls back to `close` when absent. */
  readonly terminate?: (() => void) | undefined;
  /** Sends a transport-level ping; the adapter reports the pong through `ConnectionHandle.pong()`. */
  readonly ping?: (() => void) | undefined;
}
