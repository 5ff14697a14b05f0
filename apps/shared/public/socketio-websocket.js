// A WebSocket-shaped face on one socket.io connection, so that @bcast/client drives the socket.io
// app exactly as it drives the ws ones: its reconnect with backoff, rejoin and recovery, not
// socket.io's (reconnection is off here). The URL's `name` goes in socket.io's `auth`; frames
// travel as the "message" event, which @bcast/socket.io uses both ways. Needs the `io` global of
// /socket.io/socket.io.js.
const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

export class SocketIoWebSocket {
  static CONNECTING = CONNECTING;
  static OPEN = OPEN;
  static CLOSING = CLOSING;
  static CLOSED = CLOSED;

  readyState = CONNECTING;
  binaryType = 'arraybuffer';
  onopen = null;
  onmessage = null;
  onclose = null;
  onerror = null;
  #socket;

  constructor(url) {
    const target = new URL(url, location.href);
    const socket = (this.#socket = globalThis.io(target.origin, { auth: { name: target.searchParams.get('name') ?? '' }, reconnection: false, forceNew: true }));
    socket.on('connect', () => {
      this.readyState = OPEN;
      this.onopen?.({ type: 'open' });
    });
    // socket.io hands over what the server emitted, decoded: give it back as the text frame it was.
    socket.on('message', (data) => this.onmessage?.({ type: 'message', data: typeof data === 'string' ? data : JSON.stringify(data) }));
    // Refused by the server's middleware (unauthorized) or unreachable: a failed attempt, like a refused upgrade.
    socket.on('connect_error', (error) => {
      this.onerror?.({ type: 'error', message: error.message });
      this.#closed(1006, error.message);
    });
    // socket.io carries no close code: the server's own disconnect reads as a normal close (1000),
    // a lost transport as 1006. Both reconnect.
    socket.on('disconnect', (reason) => this.#closed(reason === 'io server disconnect' || reason === 'io client disconnect' ? 1000 : 1006, reason));
  }

  send(data) {
    if (this.readyState !== OPEN) throw new Error('socket.io connection is not open');
    this.#socket.emit('message', typeof data === 'string' ? data : new TextDecoder().decode(data));
  }

  close(code = 1000, reason = '') {
    if (this.readyState >= CLOSING) return;
    const wasOpen = this.#socket.connected;
    this.readyState = CLOSING;
    this.#socket.disconnect(); // emits 'disconnect' when it was connected
    if (!wasOpen) this.#closed(code, reason);
  }

  #closed(code, reason) {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    this.#socket.disconnect();
    // Like a WebSocket's close event: after the current task's code, never inside a call to close().
    queueMicrotask(() => this.onclose?.({ type: 'close', code, reason, wasClean: code === 1000 }));
  }
}
