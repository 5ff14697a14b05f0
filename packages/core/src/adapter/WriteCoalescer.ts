import type { Broadcaster } from '../Broadcaster.js';
import type { FanOutObserver } from '../connection/FanOutObserver.js';

/** The part of a Node `Writable` (the `net.Socket` under a WebSocket) that coalescing uses. */
export interface CorkableStream {
  cork(): void;
  uncork(): void;
  write(chunk: Buffer): unknown;
  readonly writableLength: number;
  readonly destroyed?: boolean;
  destroy(error?: Error): unknown;
}

/** Held bytes above which a stream is let go before the tick ends. */
export const MAX_HELD_BYTES = 64 * 1024;

const held = Symbol('bcast.coalescer.held');
const ownDestroy = Symbol('bcast.coalescer.destroy');

interface Tracked extends CorkableStream {
  [held]?: boolean;
  [ownDestroy]?: (error?: Error) => unknown;
}

/**
 * Write coalescing for transports over Node streams, driven by the broadcaster's fan-out
 * boundaries. The first fan-out of a tick is written at once (a lone message never waits). From
 * the second fan-out of the same tick on, every stream written is corked on its first write and
 * uncorked when the tick ends, so a burst of broadcasts leaves each socket in one `writev`.
 *
 * Two guards keep it from losing or holding data where a plain write would not:
 * - a stream holding {@link MAX_HELD_BYTES} or more is let go at once;
 * - destroying a held stream (`ws.terminate()`, `socket.destroy()`, by any code in the same
 *   tick) lets out what it holds first, as a plain write would have: the stream's `destroy` is
 *   wrapped once, the first time the stream is held.
 *
 * One coalescer per broadcaster (see {@link coalescerFor}); its state is per tick, never keyed on
 * a message.
 */
export class WriteCoalescer implements FanOutObserver {
  #fanOuts = 0;
  #holding = false;
  #held: Tracked[] = [];
  readonly #endTick = (): void => {
    const streams = this.#held;
    this.#held = [];
    this.#fanOuts = 0;
    this.#holding = false;
    for (const stream of streams) release(stream);
  };

  constructor(readonly maxHeldBytes: number = MAX_HELD_BYTES) {}

  /** True while the current fan-out's writes are held until the end of the tick. */
  get holding(): boolean {
    return this.#holding;
  }

  fanOutStart(): void {
    this.#fanOuts += 1;
    if (this.#fanOuts === 1) process.nextTick(this.#endTick);
    else this.#holding = true;
  }

  fanOutEnd(): void {}

  /** Writes `chunk`, held until the end of the tick when the current fan-out is part of a burst. */
  write(stream: CorkableStream, chunk: Buffer): void {
    if (!this.#holding) {
      stream.write(chunk);
      return;
    }
    const s = stream as Tracked;
    if (s[held] !== true && s.destroyed !== true) {
      if (s[held] === undefined) {
        s[ownDestroy] = s.destroy;
        s.destroy = destroyReleasing;
      }
      s[held] = true;
      s.cork();
      this.#held.push(s);
    }
    s.write(chunk);
    if (s.writableLength >= this.maxHeldBytes) release(s);
  }

  /** Whether this stream's writes are held until the end of the tick. */
  isHeld(stream: CorkableStream): boolean {
    return (stream as Tracked)[held] === true;
  }
}

function release(stream: Tracked): void {
  if (stream[held] !== true) return;
  stream[held] = false;
  stream.uncork();
}

/** Installed on a stream the first time it is held: release, then the stream's own destroy. */
function destroyReleasing(this: Tracked, error?: Error): unknown {
  release(this);
  return (this[ownDestroy] as (error?: Error) => unknown).call(this, error);
}

const coalescers = new WeakMap<Broadcaster, WriteCoalescer>();

/** The broadcaster's coalescer, registered for its fan-out boundaries on first use (shared by every adapter on it). */
export function coalescerFor(broadcaster: Broadcaster): WriteCoalescer {
  let coalescer = coalescers.get(broadcaster);
  if (coalescer === undefined) {
    coalescer = new WriteCoalescer();
    coalescers.set(broadcaster, coalescer);
    broadcaster.observeFanOut(coalescer);
  }
  return coalescer;
}
