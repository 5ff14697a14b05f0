import { CloseCode, CloseReason } from '../errors/codes.js';
import type { ConnectionHandle } from '../lifecycle/ConnectionLifecycle.js';

/** How a tracker closes one of its sockets. */
export interface SocketControl<S> {
  /** Starts a clean close with 1001. */
  close(socket: S): void;
  /** Destroys it without a close handshake. */
  terminate(socket: S): void;
  isClosed(socket: S): boolean;
  /** Calls `listener` once when the socket has closed. */
  onceClosed(socket: S, listener: () => void): void;
}

/**
 * The sockets one attachment registered, so that `dispose()` closes exactly those: each is told
 * 1001 "server shutdown" (the core hears it first, so `onDisconnect` reports that code), then
 * whatever has not closed within `closeTimeoutMs` is terminated. Shared by every adapter.
 */
export class ConnectionTracker<S> {
  readonly #open = new Map<S, ConnectionHandle>();
  readonly #control: SocketControl<S>;

  constructor(control: SocketControl<S>) {
    this.#control = control;
  }

  get size(): number {
    return this.#open.size;
  }

  add(socket: S, handle: ConnectionHandle): void {
    this.#open.set(socket, handle);
    this.#control.onceClosed(socket, () => this.#open.delete(socket));
  }

  /** Closes every tracked socket with 1001; terminates those still open after `closeTimeoutMs`. */
  async drain(closeTimeoutMs: number): Promise<void> {
    const sockets = [...this.#open];
    this.#open.clear();
    const c = this.#control;
    for (const [socket, handle] of sockets) {
      handle.closed(CloseCode.GoingAway, CloseReason.ServerShutdown);
      c.close(socket);
    }
    const closing = sockets.map(([socket]) => socket).filter((socket) => !c.isClosed(socket));
    if (closing.length === 0) return;
    if (await closedWithin(c, closing, closeTimeoutMs)) return;
    for (const socket of closing) if (!c.isClosed(socket)) c.terminate(socket);
    await closedWithin(c, closing, closeTimeoutMs);
  }
}

/** Resolves true once every socket has closed, false after `ms`. */
function closedWithin<S>(c: SocketControl<S>, sockets: readonly S[], ms: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    let left = sockets.filter((s) => !c.isClosed(s)).length;
    if (left === 0) return resolve(true);
    const timer = setTimeout(() => resolve(false), ms);
    for (const socket of sockets) {
      if (c.isClosed(socket)) continue;
      c.onceClosed(socket, () => {
        if (--left > 0) return;
        clearTimeout(timer);
        resolve(true);
      });
    }
  });
}
