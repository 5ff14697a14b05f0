import type { ConnectionEntry } from './ConnectionEntry.js';
import type { Connection } from './Connection.js';
import type { EncodedMessage } from './EncodedMessage.js';

/**
 * An optional base class for an adapter's `Connection`: the connection is then its own registry
 * entry, so bcast keeps its per-connection state (counters, closing flag, heartbeat) on the same
 * object instead of a second one. One object less per connection (idle memory) and one pointer
 * less per recipient of every broadcast. A plain-object `Connection` works as well; the registry
 * then wraps it in an entry.
 */
export abstract class ConnectionBase implements Connection, ConnectionEntry {
  abstract readonly id: string;
  abstract readonly userId: string | undefined;
  abstract readonly isOpen: boolean;
  abstract readonly bufferedBytes: number;
  abstract send(message: EncodedMessage): void;
  abstract close(code: number, reason: string): void;
  /** The connection itself. */
  readonly connection: Connection;
  connectedAt = new Date(0);
  messageCount = 0;
  errorCount = 0;
  isClosing = false;
  lastSeenAt = 0;
  awaitingPong = false;
  expiresAt: number | undefined = undefined;
  recovering: EncodedMessage[] | undefined = undefined;

  constructor() {
    this.connection = this;
  }
}
