import type { Connection } from './Connection.js';
import type { EncodedMessage } from './EncodedMessage.js';

/** A registered connection and what bcast knows about it. */
export interface ConnectionEntry {
  readonly id: string;
  readonly userId: string | undefined;
  readonly connection: Connection;
  readonly connectedAt: Date;
  /** Messages written to this connection. */
  messageCount: number;
  /** Sends that failed for another reason than a dead socket. */
  errorCount: number;
  /** Set once bcast (or the app) started closing it; it receives nothing more. */
  isClosing: boolean;
  /** Last time the connection proved alive (pong, inbound frame). */
  lastSeenAt: number;
  /** Awaiting a pong since the last heartbeat tick. */
  awaitingPong: boolean;
  /** When its credentials expire (ms since the epoch; see `authExpiry`); undefined: never. */
  expiresAt?: number | undefined;
  /** @internal Broadcasts held while the connection recovers a room's history (sent after the missed ones). */
  recovering?: EncodedMessage[] | undefined;
}
