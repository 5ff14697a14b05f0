/**
 * Where a broadcast's fan-out starts and ends, told by the executor to the transports that asked
 * (`Broadcaster.observeFanOut`). A transport that coalesces writes decides per fan-out, with no
 * state keyed on message identity: e.g. write the first fan-out of a tick at once and hold the
 * writes of the next ones until the tick ends. Both calls must be cheap and must not throw.
 */
export interface FanOutObserver {
  fanOutStart(): void;
  fanOutEnd(): void;
}
