import { EncodedMessage } from '../connection/EncodedMessage.js';
import { BROADCAST_OPERATIONS, type BroadcastContext } from '../execution/types.js';
import { ENVELOPE_VERSION, type BackplaneEnvelope } from './Backplane.js';

/** Builds the envelope of a broadcast already validated and encoded on this node. */
export function toEnvelope(
  ctx: BroadcastContext,
  message: EncodedMessage,
  nodeId: string,
  traceCarrier: Record<string, string> | undefined,
  position?: { readonly offset: number; readonly epoch: string } | null,
): BackplaneEnvelope {
  const target =
    ctx.operation === 'user' ? ctx.userId : ctx.operation === 'room' ? ctx.room : ctx.operation === 'connections' ? ctx.connectionIds : undefined;
  const enc = message.binary ? 'binary' : typeof message.value === 'string' ? 'text' : 'json';
  return {
    v: ENVELOPE_VERSION,
    id: crypto.randomUUID(),
    nodeId,
    op: ctx.operation,
    ...(target === undefined ? {} : { target }),
    ...(ctx.except && ctx.except.length > 0 ? { except: ctx.except } : {}),
    enc,
    payload: enc === 'binary' ? message.bytes.toString('base64') : (message.text ?? ''),
    ...(message.type === undefined ? {} : { type: message.type }),
    ...(message.volatile ? { volatile: true } : {}),
    ...(traceCarrier && Object.keys(traceCarrier).length > 0 ? { trace: traceCarrier } : {}),
    ...(position === undefined ? {} : { pub: position === null ? {} : { offset: position.offset, epoch: position.epoch } }),
    ts: Date.now(),
  };
}

/**
 * Checks an envelope received from the bus. Returns a reason string when it must be dropped
 * (garbage, unknown version, malformed fields), undefined when it is deliverable.
 */
export function envelopeProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return 'not an object';
  const e = value as Partial<Record<keyof BackplaneEnvelope, unknown>>;
  if (e.v !== ENVELOPE_VERSION) return `unknown version ${String(e.v)}`;
  if (typeof e.id !== 'string' || typeof e.nodeId !== 'string') return 'missing id or nodeId';
  if (typeof e.op !== 'string' || !(BROADCAST_OPERATIONS as readonly string[]).includes(e.op)) return `unknown op ${String(e.op)}`;
  if (e.enc !== 'json' && e.enc !== 'text' && e.enc !== 'binary') return `unknown enc ${String(e.enc)}`;
  if (typeof e.payload !== 'string') return 'payload is not a string';
  if (e.op === 'user' || e.op === 'room') {
    if (typeof e.target !== 'string') return 'target must be a string';
  } else if (e.op === 'connections') {
    if (!Array.isArray(e.target) || !e.target.every((t) => typeof t === 'string')) return 'target must be a string array';
  }
  if (e.except !== undefined && (!Array.isArray(e.except) || !e.except.every((t) => typeof t === 'string'))) return 'bad except';
  if (e.sig !== undefined && typeof e.sig !== 'string') return 'bad sig';
  if (e.pub !== undefined) {
    const p = e.pub as { offset?: unknown; epoch?: unknown } | null;
    if (e.op !== 'room' || typeof p !== 'object' || p === null) return 'bad pub';
    if ((p.offset === undefined) !== (p.epoch === undefined)) return 'bad pub';
    if (p.offset !== undefined && (typeof p.offset !== 'number' || !Number.isSafeInteger(p.offset) || typeof p.epoch !== 'string')) return 'bad pub';
  }
  if (typeof e.ts !== 'number') return 'bad ts';
  return undefined;
}

/** What a receiving node runs for an envelope: the request (local delivery only) and the message, already encoded. */
export function fromEnvelope(envelope: BackplaneEnvelope): { request: BroadcastContext; encoded: EncodedMessage } {
  const bytes = envelope.enc === 'binary' ? Buffer.from(envelope.payload, 'base64') : Buffer.from(envelope.payload, 'utf8');
  const text = envelope.enc === 'binary' ? undefined : envelope.payload;
  let parsed: unknown;
  let isParsed = envelope.enc !== 'json';
  const encoded = new LazyEncodedMessage(
    {
      value: envelope.enc === 'binary' ? bytes : envelope.payload,
      text,
      bytes,
      type: envelope.type,
      volatile: envelope.volatile === true,
    },
    () => {
      if (!isParsed) {
        parsed = JSON.parse(envelope.payload);
        isParsed = true;
      }
      return parsed;
    },
    envelope.enc === 'json',
  );
  const base = {
    operation: envelope.op,
    message: undefined,
    localOnly: true,
    ...(envelope.except ? { except: envelope.except } : {}),
    ...(envelope.volatile ? { volatile: true } : {}),
  };
  const request: BroadcastContext =
    envelope.op === 'user'
      ? { ...base, userId: envelope.target as string }
      : envelope.op === 'room'
        ? { ...base, room: envelope.target as string }
        : envelope.op === 'connections'
          ? { ...base, connectionIds: envelope.target as readonly string[] }
          : base;
  return { request, encoded };
}

/** An EncodedMessage whose `value` is parsed from JSON only if a transport asks for it. */
class LazyEncodedMessage extends EncodedMessage {
  readonly #parse: () => unknown;
  readonly #json: boolean;

  constructor(init: ConstructorParameters<typeof EncodedMessage>[0], parse: () => unknown, json: boolean) {
    super(init);
    this.#parse = parse;
    this.#json = json;
  }

  override get value(): unknown {
    return this.#json ? this.#parse() : super.value;
  }
}
