import { ENVELOPE_VERSION, envelopeProblem, type BackplaneEnvelope } from '@bcast/core/backplane';

/**
 * What travels on the Redis channel (docs/PROTOCOL.md, "Backplane envelope v1"): the core's
 * `BackplaneEnvelope` as JSON text, or a liveness probe `{"v":1,"nodeId":…,"probe":…,"ts":…}`.
 * Both begin with `{"v":1,"nodeId":"<id>",` when written here, so a node recognises its own echo
 * with one `startsWith` instead of a JSON parse.
 */

/** Why an inbound message was dropped. */
export type DropReason = 'invalidJson' | 'unknownVersion' | 'foreign' | 'malformed';

export type Inbound =
  | { readonly kind: 'envelope'; readonly envelope: BackplaneEnvelope }
  | { readonly kind: 'probe'; readonly nodeId: string; readonly token: string }
  | { readonly kind: 'dropped'; readonly reason: DropReason; readonly detail: string };

/** The first bytes of everything `nodeId` writes: `{"v":1,"nodeId":"<id>",`. */
export function ownPrefix(nodeId: string): string {
  return `{"v":${ENVELOPE_VERSION},"nodeId":${JSON.stringify(nodeId)},`;
}

/** The first bytes of `nodeId`'s probes. */
export function ownProbePrefix(nodeId: string): string {
  return `${ownPrefix(nodeId)}"probe":`;
}

/** Serialises an envelope with `v` and `nodeId` first; every other field is carried unchanged. */
export function encodeEnvelope(envelope: BackplaneEnvelope): string {
  const { v, nodeId, ...rest } = envelope;
  return JSON.stringify({ v, nodeId, ...rest });
}

export function encodeProbe(nodeId: string, token: string, ts: number = Date.now()): string {
  return JSON.stringify({ v: ENVELOPE_VERSION, nodeId, probe: token, ts });
}

/** Token of one of `nodeId`'s own probes (`raw` starts with {@link ownProbePrefix}), or undefined. */
export function probeToken(raw: string): string | undefined {
  try {
    const value = JSON.parse(raw) as { probe?: unknown };
    return typeof value.probe === 'string' ? value.probe : undefined;
  } catch {
    return undefined;
  }
}

/** Classifies a message read from the channel. Never throws. */
export function decodeMessage(raw: string): Inbound {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return { kind: 'dropped', reason: 'invalidJson', detail: 'not JSON' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value) || !('v' in value)) {
    return { kind: 'dropped', reason: 'foreign', detail: 'not a bcast message (no "v" field)' };
  }
  const record = value as Record<string, unknown>;
  if (record['v'] !== ENVELOPE_VERSION) {
    return { kind: 'dropped', reason: 'unknownVersion', detail: `unknown version ${JSON.stringify(record['v'])}` };
  }
  if (record['op'] === undefined && typeof record['probe'] === 'string' && typeof record['nodeId'] === 'string') {
    return { kind: 'probe', nodeId: record['nodeId'], token: record['probe'] };
  }
  const problem = envelopeProblem(value);
  if (problem !== undefined) return { kind: 'dropped', reason: 'malformed', detail: problem };
  return { kind: 'envelope', envelope: value as BackplaneEnvelope };
}
