import type { Connection } from '../connection/Connection.js';
import type { EncodedMessage } from '../connection/EncodedMessage.js';

/** A small in-memory Connection for core unit tests (the core is transport-agnostic). */
export class FakeConnection implements Connection {
  readonly received: string[] = [];
  readonly closes: Array<{ code: number; reason: string }> = [];
  isOpen = true;
  bufferedBytes = 0;
  terminated = false;
  pings = 0;
  throwOnSend: Error | undefined;
  ping: (() => void) | undefined;

  constructor(
    readonly id: string,
    readonly userId: string | undefined = undefined,
    options: { ping?: boolean } = {},
  ) {
    if (options.ping) this.ping = () => void (this.pings += 1);
  }

  send(message: EncodedMessage): void {
    if (this.throwOnSend) throw this.throwOnSend;
    this.received.push(message.text ?? `<binary ${message.byteLength}>`);
  }

  close(code: number, reason: string): void {
    this.closes.push({ code, reason });
    this.isOpen = false;
  }

  terminate(): void {
    this.terminated = true;
    this.isOpen = false;
  }

  /** Messages parsed from JSON. */
  get messages(): unknown[] {
    return this.received.map((t) => JSON.parse(t));
  }
}

/** Logger that records instead of printing. */
export function quietLogger(): { warn: (...a: unknown[]) => void; error: (...a: unknown[]) => void; lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    warn: (...a: unknown[]) => void lines.push(a.map(String).join(' ')),
    error: (...a: unknown[]) => void lines.push(a.map(String).join(' ')),
  };
}
