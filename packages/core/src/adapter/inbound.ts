import type { ConnectionHandle } from '../lifecycle/ConnectionLifecycle.js';

/**
 * Hands one client frame to the core, whatever shape the socket library delivered it in: a
 * Buffer is binary unless `isBinary` is false, and so are a ws fragment list or ArrayBuffer (ws
 * always says `isBinary`); a string is text; anything else (a socket.io event payload) is sent on
 * as its JSON text. Never rejects.
 */
export function deliverInbound(handle: ConnectionHandle, payload: unknown, isBinary?: boolean): void {
  let data: string | Buffer;
  let binary: boolean;
  if (typeof payload === 'string') {
    data = payload;
    binary = false;
  } else if (Buffer.isBuffer(payload) || payload instanceof ArrayBuffer || (Array.isArray(payload) && isBinary !== undefined)) {
    data = Buffer.isBuffer(payload) ? payload : payload instanceof ArrayBuffer ? Buffer.from(payload) : Buffer.concat(payload as Buffer[]);
    binary = isBinary ?? true;
  } else {
    data = JSON.stringify(payload) ?? '';
    binary = false;
  }
  handle.message(data, binary).catch(() => {});
}
