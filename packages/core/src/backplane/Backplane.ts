import type { BroadcastOperation } from '../execution/types.js';

/** Current envelope version. Receivers drop (and count) any other. */
export const ENVELOPE_VERSION = 1;

/**
 * What travels between nodes. Versioned, self-describing, and carrying the encoded payload so a
 * receiving node never re-encodes. Documented in docs/PROTOCOL.md.
 */
export interface BackplaneEnvelope {
  readonly v: typeof ENVELOPE_VERSION;
  /** Message id, unique per publish. */
  readonly id: string;
  /** Publishing node. A node never delivers its own envelope twice. */
  readonly nodeId: string;
  readonly op: BroadcastOperation;
  /** userId for `user`, room for `room`, connection ids for `connections`. */
  readonly target?: string | readonly string[];
  readonly except?: readonly string[];
  /** How `payload` is encoded: JSON text, a plain string, or base64 bytes. */
  readonly enc: 'json' | 'text' | 'binary';
  readonly payload: string;
  readonly type?: string;
  readonly volatile?: boolean;
  /** W3C trace context of the publishing span (`traceparent`, `tracestate`). */
  readonly trace?: Readonly<Record<string, string>>;
  /** Publish time, ms since the epoch. */
  readonly ts: number;
  /** HMAC-SHA256 of the envelope under the cluster's `signingKey` (base64url), when one is set. */
  readonly sig?: string;
  /** A message of a room with history: its stream position (recorded by the publishing node); `{}` when it could not be recorded. */
  readonly pub?: { readonly offset?: number; readonly epoch?: string };
}

export type BackplaneHealthStatus = 'healthy' | 'degraded' | 'unhealthy';

export interface BackplaneHealth {
  readonly status: BackplaneHealthStatus;
  readonly reasons: readonly string[];
  readonly details?: Readonly<Record<string, unknown>>;
}

export interface PublishOptions {
  /** Aborted when the caller gives up waiting (publish timeout, shutdown). */
  readonly signal?: AbortSignal | undefined;
}

/**
 * The scale-out port: `publish`, `subscribe`, `close`. Implementations deliver every envelope
 * published by other nodes to the subscribed handler, in per-publisher order.
 */
export interface Backplane {
  readonly nodeId: string;
  /** True when there is nothing to publish to (single process): the broadcaster skips publishing. */
  readonly isLocal?: boolean;
  /**
   * Sends an envelope to the other nodes. Reject with a BcastError whose `details.written` is
   * `false` when the envelope was certainly not handed to the network (not connected): only those
   * are retried. `signal` aborts when the caller stops waiting (its publish timeout): the envelope
   * may still arrive, so it is never retried; a backplane may reset a connection that hangs.
   */
  publish(envelope: BackplaneEnvelope, options?: PublishOptions): Promise<void>;
  /**
   * Starts delivering envelopes from other nodes. Returns a function that stops it. Must not reject
   * for a transient failure (Redis down...): keep retrying and report it through `health()`; the
   * broadcaster does not call it again.
   */
  subscribe(handler: (envelope: BackplaneEnvelope) => void): Promise<() => void> | (() => void);
  close(): Promise<void>;
  health?(): BackplaneHealth;
}

/** The default: one process, nothing to propagate. */
export class LocalBackplane implements Backplane {
  readonly nodeId: string;
  readonly isLocal = true;

  constructor(nodeId: string = crypto.randomUUID()) {
    this.nodeId = nodeId;
  }

  async publish(): Promise<void> {}

  subscribe(): () => void {
    return () => {};
  }

  async close(): Promise<void> {}

  health(): BackplaneHealth {
    return { status: 'healthy', reasons: [] };
  }
}

/**
 * An in-memory bus joining several broadcasters in one process, for tests and demos of multi-node
 * behaviour without Redis. Delivery is asynchronous (a microtask), like a real network hop.
 */
export class MemoryBus {
  readonly #handlers = new Map<string, (envelope: BackplaneEnvelope) => void>();

  /** A backplane for one node on this bus. */
  backplane(nodeId: string = crypto.randomUUID()): Backplane {
    const bus = this.#handlers;
    return {
      nodeId,
      async publish(envelope) {
        const copy = JSON.parse(JSON.stringify(envelope)) as BackplaneEnvelope;
        queueMicrotask(() => {
          for (const [id, handler] of bus) if (id !== nodeId) handler(copy);
        });
      },
      subscribe(handler) {
        bus.set(nodeId, handler);
        return () => bus.delete(nodeId);
      },
      async close() {
        bus.delete(nodeId);
      },
      health: () => ({ status: 'healthy', reasons: [] }),
    };
  }
}
