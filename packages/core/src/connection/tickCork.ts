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
 * 1.5x at a fixed rate). A burst is a tick that writes two or more distinct messages. It holds
 * from its second message on, and from the first message of a tick that starts within
 * `BURST_GAP_MS` of the end of a burst tick.
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

/** A tick that starts this soon after a burst tick ended is part of the same burst. */
export const BURST_GAP_MS = 5;

let batch: Tracked[] = [];
let scheduled = false;
let tickMessage: object | undefined;
let messagesThisTick = 0;
let burstEndedAt = -Infinity;
let carried = false;

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
  if (messagesThisTick > 1) burstEndedAt = performance.now();
  messagesThisTick = 0;
  tickMessage = undefined;
}

/**
 * Whether a write of `message` should be held until the end of the tick (then call
 * `corkForTick`): from the second distinct message of a tick on, and for every message of a tick
 * that starts within `BURST_GAP_MS` of the end of a burst tick. One comparison per write.
 */
export function inBurst(message: object): boolean {
  if (message !== tickMessage) {
    tickMessage = message;
    messagesThisTick += 1;
    if (messagesThisTick === 1) {
      schedule();
      carried = performance.now() - burstEndedAt < BURST_GAP_MS;
    }
  }
  return carried || messagesThisTick > 1;
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
