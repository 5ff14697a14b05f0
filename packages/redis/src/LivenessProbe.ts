import { encodeProbe } from './wire.js';

/** What the probe needs from the backplane. */
export interface ProbeHost {
  /** Publisher ready and subscriber subscribed: a probe can tell something. */
  canProbe(): boolean;
  /** PUBLISH on the channel; resolves with the number of subscribers that got it. */
  publish(message: string): Promise<number>;
  /** A probe succeeded or failed: health may have changed. */
  changed(): void;
  /** Its PUBLISH was answered and its echo came back: the path through Redis works both ways. */
  succeeded(): void;
  /** Published but never heard back: the subscriber receives nothing. */
  starved(reason: string): void;
  /** Its PUBLISH got no reply in time: the publishing connection hangs or lost bytes. */
  publisherFailed(reason: string): void;
}

export interface ProbeStats {
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly sent: number;
  readonly ok: number;
  readonly failed: number;
  readonly consecutiveFailures: number;
  readonly lastRttMs: number | undefined;
  readonly lastOkAt: number | undefined;
  readonly lastFailure: string | undefined;
}

type InFlight = { readonly token: string; replied: boolean; echoed: boolean; readonly sentAt: number; readonly timer: NodeJS.Timeout };

/**
 * Every `intervalMs`, publishes `{"v":1,"nodeId":…,"probe":…}` on the channel and waits `timeoutMs`
 * for BOTH the reply to its PUBLISH and its own echo. This finds what no client library notices, and
 * with no traffic at all: a subscriber that is connected but receives nothing (reply, no echo), and a
 * publisher whose replies are lost (echo, no reply: its PUBLISHes reach Redis and every publish
 * still times out). The failing side is named in the reason and reset. One probe in flight at a time.
 */
export class LivenessProbe {
  readonly #nodeId: string;
  readonly #intervalMs: number;
  readonly #timeoutMs: number;
  readonly #host: ProbeHost;
  #timer: NodeJS.Timeout | undefined;
  #inFlight: InFlight | undefined;
  #seq = 0;
  #stopped = false;
  #sent = 0;
  #ok = 0;
  #failed = 0;
  #consecutiveFailures = 0;
  #lastRttMs: number | undefined;
  #lastOkAt: number | undefined;
  #lastFailure: string | undefined;

  constructor(nodeId: string, intervalMs: number, timeoutMs: number, host: ProbeHost) {
    this.#nodeId = nodeId;
    this.#intervalMs = intervalMs;
    this.#timeoutMs = timeoutMs;
    this.#host = host;
  }

  get consecutiveFailures(): number {
    return this.#consecutiveFailures;
  }

  get lastFailure(): string | undefined {
    return this.#lastFailure;
  }

  /** Probes after `delayMs` (now, after a (re)subscribe), unless one is in flight or disabled. */
  schedule(delayMs: number = this.#intervalMs): void {
    if (this.#stopped || this.#intervalMs === 0 || this.#inFlight !== undefined) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#run();
    }, delayMs);
    this.#timer.unref();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    if (this.#inFlight) clearTimeout(this.#inFlight.timer);
    this.#inFlight = undefined;
  }

  /** The echo of one of this node's probes arrived. */
  echo(token: string | undefined): void {
    const probe = this.#inFlight;
    if (!probe || probe.token !== token) return; // a late echo of a probe already given up
    probe.echoed = true;
    if (probe.replied) this.#succeed(probe);
  }

  stats(): ProbeStats {
    return {
      intervalMs: this.#intervalMs,
      timeoutMs: this.#timeoutMs,
      sent: this.#sent,
      ok: this.#ok,
      failed: this.#failed,
      consecutiveFailures: this.#consecutiveFailures,
      lastRttMs: this.#lastRttMs,
      lastOkAt: this.#lastOkAt,
      lastFailure: this.#lastFailure,
    };
  }

  async #run(): Promise<void> {
    if (this.#stopped) return;
    if (!this.#host.canProbe()) {
      // Redis is down or a connection is (re)connecting: health says so already, the clients reconnect.
      this.schedule();
      return;
    }
    const token = `${(this.#seq += 1)}`;
    const probe: InFlight = {
      token,
      replied: false,
      echoed: false,
      sentAt: performance.now(),
      timer: setTimeout(() => {
        const ms = this.#timeoutMs;
        if (probe.replied) this.#fail(token, `no echo within ${ms} ms`, 'subscriber');
        else if (probe.echoed) this.#fail(token, `PUBLISH got no reply within ${ms} ms (its echo arrived): the publisher connection is broken`, 'publisher');
        else this.#fail(token, `no PUBLISH reply and no echo within ${ms} ms`, 'publisher');
      }, this.#timeoutMs),
    };
    probe.timer.unref();
    this.#inFlight = probe;
    this.#sent += 1;
    let receivers: number;
    try {
      receivers = await this.#host.publish(encodeProbe(this.#nodeId, token));
    } catch (error) {
      // A refused or failed command: the client deals with its connection, nothing to reset here.
      this.#fail(token, `PUBLISH failed: ${error instanceof Error ? error.message : String(error)}`, undefined);
      return;
    }
    if (this.#inFlight !== probe) return; // a reply after the probe was given up
    probe.replied = true;
    if (receivers === 0) this.#fail(token, 'PUBLISH reached no subscriber: this node is not subscribed', 'subscriber');
    else if (probe.echoed) this.#succeed(probe);
  }

  #succeed(probe: InFlight): void {
    clearTimeout(probe.timer);
    this.#inFlight = undefined;
    this.#ok += 1;
    this.#consecutiveFailures = 0;
    this.#lastRttMs = Math.round((performance.now() - probe.sentAt) * 100) / 100;
    this.#lastOkAt = Date.now();
    this.#host.succeeded();
    this.#host.changed();
    this.schedule();
  }

  /** `side`: the connection that failed and is reset (none when the client already handles it). */
  #fail(token: string, reason: string, side: 'publisher' | 'subscriber' | undefined): void {
    const probe = this.#inFlight;
    if (!probe || probe.token !== token) return;
    clearTimeout(probe.timer);
    this.#inFlight = undefined;
    this.#failed += 1;
    this.#consecutiveFailures += 1;
    this.#lastFailure = reason;
    this.#host.changed();
    if (side === 'subscriber') this.#host.starved(reason);
    else if (side === 'publisher') this.#host.publisherFailed(reason);
    this.schedule();
  }
}
