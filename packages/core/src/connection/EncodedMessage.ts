import { BcastError } from '../errors/BcastError.js';
import { ErrorCode } from '../errors/codes.js';

/**
 * A message encoded once per broadcast. Every recipient gets the same `text` / `bytes`; a transport
 * that can do better (a pre-built WebSocket frame, a pre-encoded socket.io packet) builds it once
 * with {@link EncodedMessage.prepare} and reuses it for every socket of the broadcast.
 */
export class EncodedMessage {
  /** JSON text (objects), the string itself (strings), undefined for binary messages. */
  readonly text: string | undefined;
  /** The UTF-8 bytes of `text`, or the binary payload. */
  readonly bytes: Buffer;
  readonly binary: boolean;
  /** The message's `type` field, when it is an object with a string `type`. */
  readonly type: string | undefined;
  /** May be dropped for a client that is behind (see `volatile` in BroadcastContext). */
  readonly volatile: boolean;
  readonly #value: unknown;
  #prepared: Map<object, unknown> | undefined;
  #lastKey: object | undefined;
  #lastValue: unknown;

  constructor(init: { value: unknown; text: string | undefined; bytes: Buffer; type: string | undefined; volatile?: boolean }) {
    this.#value = init.value;
    this.text = init.text;
    this.bytes = init.bytes;
    this.binary = init.text === undefined;
    this.type = init.type;
    this.volatile = init.volatile ?? false;
  }

  /** The value the caller passed (already proven JSON-serialisable, or a string / bytes). */
  get value(): unknown {
    return this.#value;
  }

  get byteLength(): number {
    return this.bytes.byteLength;
  }

  /** What to hand to a `send(data)` style API: the text, or the bytes for binary messages. */
  get data(): string | Buffer {
    return this.text ?? this.bytes;
  }

  /**
   * Returns the transport-specific form of this message, built on first use and cached for the rest
   * of the broadcast. `key` identifies the transport's form (a module-level object, or e.g. the
   * framing function itself); `build` receives it, so a module-level builder needs no closure.
   */
  prepare<K extends object, T>(key: K, build: (message: EncodedMessage, key: K) => T): T {
    // Called once per recipient: a single-entry fast path before the Map, no allocation.
    if (this.#lastKey === key) return this.#lastValue as T;
    const cache = (this.#prepared ??= new Map());
    let built: T;
    if (cache.has(key)) built = cache.get(key) as T;
    else {
      built = build(this, key);
      cache.set(key, built);
    }
    this.#lastKey = key;
    this.#lastValue = built;
    return built;
  }
}

/** Default upper bound of an encoded message: 1 MiB. */
export const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024;

/**
 * Encodes a caller's message once: strings as they are, bytes as binary, anything else as JSON.
 * Throws `BCAST_INVALID_MESSAGE` for what JSON cannot carry faithfully (undefined, functions, symbols,
 * BigInt, cycles) and `BCAST_MESSAGE_TOO_LARGE` past `maxBytes`.
 */
export function encodeMessage(message: unknown, options: { maxBytes?: number; volatile?: boolean } = {}): EncodedMessage {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  let text: string | undefined;
  let bytes: Buffer;
  switch (typeof message) {
    case 'string':
      text = message;
      break;
    case 'undefined':
    case 'function':
    case 'symbol':
    case 'bigint':
      throw invalid(`a message cannot be ${typeof message === 'undefined' ? 'undefined' : `a ${typeof message}`}`, typeof message);
    default:
      if (message instanceof Uint8Array) {
        bytes = Buffer.isBuffer(message) ? message : Buffer.from(message.buffer, message.byteOffset, message.byteLength);
        return sized(new EncodedMessage({ value: message, text: undefined, bytes, type: undefined, volatile: options.volatile ?? false }), maxBytes);
      }
      try {
        text = JSON.stringify(message);
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        const kind = /circular/i.test(reason) ? 'circular' : /bigint/i.test(reason) ? 'bigint' : 'unserializable';
        throw new BcastError(ErrorCode.InvalidMessage, `message cannot be encoded as JSON (${kind}): ${reason}`, {
          cause: error,
          details: { reason: kind },
        });
      }
      if (text === undefined) throw invalid('message encodes to nothing (toJSON returned undefined)', 'undefined');
  }
  // Cheap bound first: a UTF-16 string of n units encodes to at most 3n UTF-8 bytes.
  if (text.length > maxBytes) throw tooLarge(Buffer.byteLength(text), maxBytes);
  bytes = Buffer.from(text, 'utf8');
  return sized(
    new EncodedMessage({ value: message, text, bytes, type: typeOf(message), volatile: options.volatile ?? false }),
    maxBytes,
  );
}

function sized(message: EncodedMessage, maxBytes: number): EncodedMessage {
  if (message.byteLength > maxBytes) throw tooLarge(message.byteLength, maxBytes);
  return message;
}

function typeOf(message: unknown): string | undefined {
  if (typeof message === 'object' && message !== null && !Array.isArray(message)) {
    let type: unknown;
    try {
      type = (message as { type?: unknown }).type;
    } catch (error) {
      throw new BcastError(ErrorCode.InvalidMessage, 'reading the message\'s type threw', { cause: error, details: { reason: 'type' } });
    }
    if (typeof type === 'string') return type;
  }
  return undefined;
}

function invalid(message: string, reason: string): BcastError {
  return new BcastError(ErrorCode.InvalidMessage, message, { details: { reason } });
}

function tooLarge(bytes: number, maxBytes: number): BcastError {
  return new BcastError(ErrorCode.MessageTooLarge, `message is ${bytes} bytes; the limit is ${maxBytes} (maxMessageBytes)`, {
    details: { bytes, maxBytes },
  });
}
