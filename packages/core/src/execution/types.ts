import type { ErrorCode } from '../errors/codes.js';

/** Who a broadcast is for. */
export type BroadcastOperation = 'all' | 'user' | 'room' | 'connections';

export const BROADCAST_OPERATIONS: readonly BroadcastOperation[] = ['all', 'user', 'room', 'connections'];

/** Input of one broadcast. */
export interface BroadcastContext {
  readonly operation: BroadcastOperation;
  /** For `user`. */
  readonly userId?: string;
  /** For `room`. */
  readonly room?: string;
  /** For `connections`. */
  readonly connectionIds?: readonly string[];
  /** Connection ids that must not receive it (on every node). */
  readonly except?: readonly string[];
  /** A string (sent as is), bytes (sent as binary) or anything JSON can carry (sent as JSON text). */
  readonly message: unknown;
  /** May be dropped for connections that are behind (above `volatileBufferedBytes`); counted as dropped. */
  readonly volatile?: boolean;
  /** Deliver on this node only; do not publish to the backplane. */
  readonly localOnly?: boolean;
  /** In a room with history: not recorded, sent as it is (no position), like a typing indicator. @default false */
  readonly ephemeral?: boolean;
  /** Close reason for connections found dead during this broadcast. @default "Connection lost during broadcast" */
  readonly deadConnectionReason?: string;
}

/**
 * Propagation to other nodes: `published`; `failed` (not propagated: counted, never thrown);
 * `unknown` (timed out after it was sent: other nodes may or may not have it; never retried);
 * `skipped` (single node, or `localOnly`).
 */
export type BackplaneStatus = 'published' | 'failed' | 'unknown' | 'skipped';

/**
 * What happened to every recipient. Invariant: `recipients === delivered + failed + dropped`.
 * `removed` counts the failed recipients that were closed and unregistered.
 */
export interface BroadcastResult {
  readonly operation: BroadcastOperation;
  readonly recipients: number;
  readonly delivered: number;
  readonly failed: number;
  readonly dropped: number;
  readonly removed: number;
  readonly durationMs: number;
  readonly messageType?: string;
  readonly messageBytes: number;
  /** Propagation to other nodes (see {@link BackplaneStatus}). */
  readonly backplane: BackplaneStatus;
  readonly backplaneError?: ErrorCode;
}
