import { context as otelContext, propagation as otelPropagation } from '@opentelemetry/api';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { isBcastError, type BcastError } from '../errors/BcastError.js';
import { ErrorCode } from '../errors/codes.js';
import type { BroadcastExecutor, BroadcastJob } from '../execution/BroadcastExecutor.js';
import type { ExecutionEngine, Propagation } from '../execution/ExecutionEngine.js';
import { Publication } from '../history/RoomHistory.js';
import type { ConnectionLifecycle } from '../lifecycle/ConnectionLifecycle.js';
import type { ExecutionMonitor } from '../monitor/ExecutionMonitor.js';
import { BACKPLANE_SCOPE, type ResolvedOptions } from '../options.js';
import type { ScopeOptions } from '../reliability/ReliabilityManager.js';
import type { Backplane, BackplaneEnvelope } from './Backplane.js';
import { envelopeProblem, fromEnvelope, toEnvelope } from './envelope.js';

/** Longest a publish waits behind publishes being retried (their retry comes 50 ms after the failure). */
const RETRY_WAIT_MS = 100;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** Without one successful publish for this long, publish timeouts count against the circuit: slow has become down. */
export const STALL_MS = 2_000;

export interface BridgeDeps {
  readonly backplane: Backplane;
  readonly engine: ExecutionEngine;
  readonly executor: BroadcastExecutor;
  readonly lifecycle: ConnectionLifecycle;
  readonly monitor: ExecutionMonitor;
  readonly options: ResolvedOptions;
}

/**
 * Between this node and the others. Outgoing: the propagation step the engine runs (under the
 * `backplane` reliability scope) beside each local broadcast. Incoming: every envelope is
 * untrusted input, checked (shape, signature, then the same limits as a local broadcast) and
 * delivered as one remote operation (one `bcast.deliver` span, counted as remote).
 *
 * Slow is not down: a publish that timed out may still be delivered, so it is `unknown`, never
 * retried, and it counts against the circuit only when nothing has been published for
 * {@link STALL_MS}. Only a publish the backplane says was never written (`details.written:
 * false`) is retried.
 */
export class BackplaneBridge implements Propagation<BroadcastJob> {
  readonly scope = BACKPLANE_SCOPE;
  readonly #d: BridgeDeps;
  #lastPublishedAt = Date.now();
  /**
   * Publishes that failed unwritten and will be retried. While there are any, later publishes wait
   * behind them, so other nodes still get this node's broadcasts in the order they were made.
   */
  readonly #retrying = new Set<BroadcastJob>();
  #settled: { promise: Promise<void>; resolve: () => void } | undefined;
  #unsubscribe: (() => void) | undefined;
  #stopped = false;
  readonly subscribed: Promise<void>;

  constructor(deps: BridgeDeps) {
    this.#d = deps;
    this.subscribed = this.#subscribe();
  }

  /** The retry and circuit predicates of the backplane scope. */
  static predicates(bridge: () => BackplaneBridge | undefined): Pick<ScopeOptions, 'retryWhen' | 'failureWhen'> {
    return {
      retryWhen: (error) => isBcastError(error) && error.details?.['written'] === false,
      failureWhen: (error) => {
        if (!isBcastError(error)) return true;
        // A timeout, or a refusal while a connection that timed out is replaced: slow until nothing got through for STALL_MS.
        if (error.code === ErrorCode.Timeout || error.details?.['afterTimeout'] === true) return bridge()?.stalled() ?? true;
        return error.code !== ErrorCode.CircuitOpen && error.code !== ErrorCode.CircuitIsolated;
      },
    };
  }

  /** True when no publish has succeeded for {@link STALL_MS}. */
  stalled(): boolean {
    return Date.now() - this.#lastPublishedAt >= STALL_MS;
  }

  // ---- outgoing (the engine's propagation step) ----------------------------------------------

  wanted(job: BroadcastJob): boolean {
    return job.origin === 'local' && job.request.localOnly !== true && this.#d.backplane.isLocal !== true;
  }

  async propagate(job: BroadcastJob, signal: AbortSignal): Promise<void> {
    // Wait behind publishes being retried (bounded: a backplane that stays down must not hold
    // broadcasts; their publishes then fail fast and are retried in order, without jitter).
    if (this.#retrying.size > 0 && !this.#retrying.has(job)) await Promise.race([this.#whenRetriesSettle(), delay(RETRY_WAIT_MS)]);
    const carrier: Record<string, string> = {};
    otelPropagation.inject(otelContext.active(), carrier);
    const pub = job.publication === undefined ? undefined : (job.publication.position ?? null);
    const envelope = sign(toEnvelope(job.request, job.encoded!, this.#d.backplane.nodeId, carrier, pub), this.#d.options.signingKey);
    try {
      await this.#d.backplane.publish(envelope, { signal });
    } catch (error) {
      // Refused while a timed-out connection is replaced: it comes back soon, so its retry must not be overtaken.
      if (isBcastError(error) && error.details?.['written'] === false && error.details['afterTimeout'] === true) this.#retrying.add(job);
      throw error;
    }
    this.#lastPublishedAt = Date.now();
    this.#d.monitor.recordBackplane('published');
  }

  published(job: BroadcastJob): void {
    this.#settle(job);
  }

  failed(error: BcastError, job: BroadcastJob): 'failed' | 'unknown' {
    this.#settle(job);
    const m = this.#d.monitor;
    // Timed out, or lost after it was written: other nodes may have it. Never reported as not propagated.
    if (error.code === ErrorCode.Timeout || error.details?.['written'] === true) {
      m.recordBackplane('publish-unknown');
      return 'unknown';
    }
    m.recordBackplane('publish-error');
    m.recordDropped(error.code === ErrorCode.CircuitOpen || error.code === ErrorCode.CircuitIsolated ? 'circuit_open' : 'publish_error');
    return 'failed';
  }

  #whenRetriesSettle(): Promise<void> {
    if (this.#settled === undefined) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.#settled = { promise, resolve };
    }
    return this.#settled.promise;
  }

  #settle(job: BroadcastJob): void {
    if (!this.#retrying.delete(job) || this.#retrying.size > 0) return;
    const settled = this.#settled;
    this.#settled = undefined;
    settled?.resolve();
  }

  // ---- incoming -----------------------------------------------------------------------------

  /** Stops delivering envelopes from other nodes. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.subscribed;
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
  }

  async #subscribe(): Promise<void> {
    if (this.#d.backplane.isLocal) return;
    try {
      this.#unsubscribe = await this.#d.backplane.subscribe((envelope) => this.#receive(envelope));
      if (this.#stopped) this.#unsubscribe();
    } catch (error) {
      this.#d.options.log('error', 'backplane subscribe failed', error);
    }
  }

  #receive(raw: unknown): void {
    if (this.#stopped) return;
    const { monitor, backplane, options } = this.#d;
    const problem = envelopeProblem(raw);
    if (problem !== undefined) return monitor.recordBackplaneDropped('invalid');
    const envelope = raw as BackplaneEnvelope;
    if (envelope.nodeId === backplane.nodeId) return; // our own, echoed by the bus
    if (options.signingKey !== undefined && !verify(envelope, options.signingKey)) return monitor.recordBackplaneDropped('signature');
    if (tooLarge(envelope, options.limits.maxMessageBytes)) return monitor.recordBackplaneDropped('too_large');
    monitor.recordBackplane('received');
    const job: BroadcastJob = { ...fromEnvelope(envelope), origin: 'remote', source: { nodeId: envelope.nodeId, envelopeId: envelope.id } };
    if (envelope.pub !== undefined && envelope.enc !== 'binary') {
      const { offset, epoch } = envelope.pub;
      const position = offset === undefined || epoch === undefined ? undefined : { offset, epoch };
      const json = envelope.enc === 'json' ? envelope.payload : JSON.stringify(envelope.payload);
      job.publication = new Publication(envelope.target as string, position, json, { type: envelope.type, volatile: envelope.volatile === true });
    }
    const parent = envelope.trace ? otelPropagation.extract(otelContext.active(), envelope.trace) : otelContext.active();
    this.#d.engine.execute(this.#d.executor, job, { parent }).then(
      (outcome) => {
        if (outcome.result) this.#d.lifecycle.settle(outcome.result.removals);
        else if (outcome.status === 'rejected') monitor.recordBackplaneDropped(dropReason(outcome.error));
      },
      (error: unknown) => options.log('error', 'remote delivery failed', error),
    );
  }
}

/** A bound checked before the payload is decoded: its UTF-8 (or base64-decoded) size is at least this. */
function tooLarge(envelope: BackplaneEnvelope, maxBytes: number): boolean {
  const n = envelope.payload.length;
  return envelope.enc === 'binary' ? Math.floor((n * 3) / 4) - 2 > maxBytes : n > maxBytes;
}

function dropReason(error: BcastError | undefined): string {
  switch (error?.code) {
    case ErrorCode.MessageTooLarge:
      return 'too_large';
    case ErrorCode.InvalidRoom:
    case ErrorCode.InvalidUser:
    case ErrorCode.InvalidTarget:
      return 'invalid_target';
    default:
      return 'invalid';
  }
}

/** The signed content, in a fixed order whatever order the fields arrived in. */
function signedText(e: BackplaneEnvelope): string {
  return JSON.stringify([e.v, e.id, e.nodeId, e.op, e.target ?? null, e.except ?? null, e.enc, e.payload, e.type ?? null, e.volatile === true, e.ts, e.pub ?? null]);
}

function mac(envelope: BackplaneEnvelope, key: Uint8Array): Buffer {
  return createHmac('sha256', key).update(signedText(envelope)).digest();
}

function sign(envelope: BackplaneEnvelope, key: Uint8Array | undefined): BackplaneEnvelope {
  return key === undefined ? envelope : { ...envelope, sig: mac(envelope, key).toString('base64url') };
}

function verify(envelope: BackplaneEnvelope, key: Uint8Array): boolean {
  if (typeof envelope.sig !== 'string') return false;
  const given = Buffer.from(envelope.sig, 'base64url');
  const expected = mac(envelope, key);
  return given.length === expected.length && timingSafeEqual(given, expected);
}
