/**
 * Write coalescing for transports over Node streams (a `net.Socket` under a WebSocket). In a
 * burst, every stream written during the tick is corked on its first write and uncorked on
 * `process.nextTick`, so all the messages a tick writes to one socket leave in one `writev` (one
 * syscall) instead of one write each. This is the batching Node's own docs show for
 * `writable.cork()`; the tick ends after the promise jobs in which a burst of broadcasts runs, so
 * nothing waits for a timer or for I/O.
 *
 * A lone message is never held: `inBurst(message)` says whether to hold a write. Holding a lone
 * message saves nothing and adds the fan-out loop's time to its latency (measured: p99 1.2x to
 * 1.5x at a fixed rate). A burst is a tick that writes two or more distinct messages; it holds
 * from its second message on. The first message of a tick is always written at once, whatever
 * came before: the decision depends on this tick only, so the same load always gets the same
 * writes. (A version that also held the first message of a tick starting within 5 ms of a burst
 * saved one more syscall per socket, but settled at random into a fast or a slow regime: the
 * same benchmark cell moved by 1.4x between repetitions.)
 *
 * Two guards keep it from holding data where a plain write would not:
 * - a stream holding `maxHeldBytes` (64 KiB by default) or more is uncorked at once;
 * - destroying a held stream (`ws.terminate()`, `socket.destroy()`, in the same tick, by any
 *   code) first uncorks it, so what was written reaches the kernel before the socket closes, as
 *   it would have without coalescing.
 */

/** The part of a Node `Writable` (a `net.Socket`) that coalescing uses. */
export interface CorkableStream {
  cork(): void;
  uncork(): void;
  readonly writableLength: number;
  readonly destroyed?: boolean;
  destroy(error?: Error): unknown;
}

/** Held bytes above which a stream is uncorked before the tick ends. */
export const TICK_CORK_MAX_HELD_BYTES = 64 * 1024;

const held = Symbol('bcast.tickCork.held');
const originalDestroy = Symbol('bcast.tickCork.destroy');

interface Tracked extends CorkableStream {
  [held]?: boolean;
  [originalDestroy]?: (error?: Error) => unknown;
}

let batch: Tracked[] = [];
let scheduled = false;
let tickMessage: object | undefined;
let messagesThisTick = 0;

function schedule(): void {
  if (scheduled) return;
  scheduled = true;
  process.nextTick(endTick);
}

function endTick(): void {
  scheduled = false;
  const streams = batch;
  batch = [];
  for (const stream of streams) release(stream);
  messagesThisTick = 0;
  tickMessage = undefined;
}

/**
 * Whether a write of `message` should be held until the end of the tick (then call
 * `corkForTick`): from the second distinct message of a tick on. One comparison per write.
 */
export function inBurst(message: object): boolean {
  if (message !== tickMessage) {
    tickMessage = message;
    messagesThisTick += 1;
    if (messagesThisTick === 1) schedule();
  }
  return messagesThisTick > 1;
}

function release(stream: Tracked): void {
  if (stream[held] !== true) return;
  stream[held] = false;
  stream.uncork();
}

/** Installed on a stream the first time it is held: release, then the stream's own destroy. */
function destroyReleasing(this: Tracked, error?: Error): unknown {
  release(this);
  return (this[originalDestroy] as (error?: Error) => unknown).call(this, error);
}

/**
 * Holds `stream`'s writes until the end of the current tick (call it right before a write, when
 * `inBurst` says so). Cheap when the stream is already held: one property read.
 */
export function corkForTick(stream: CorkableStream): void {
  const s = stream as Tracked;
  if (s[held] === true || s.destroyed === true) return;
  if (s[held] === undefined) {
    s[originalDestroy] = s.destroy;
    s.destroy = destroyReleasing;
  }
  schedule();
  s[held] = true;
  s.cork();
  batch.push(s);
}

/** Uncorks `stream` now when it holds `maxHeldBytes` or more (call it right after a write). */
export function releaseIfFull(stream: CorkableStream, maxHeldBytes = TICK_CORK_MAX_HELD_BYTES): void {
  if (stream.writableLength >= maxHeldBytes) release(stream as Tracked);
}

/** Whether this module holds `stream`'s writes until the end of the tick. */
export function isHeldForTick(stream: CorkableStream): boolean {
  return (stream as Tracked)[held] === true;
}
