// @bcast/core/backplane: what a backplane (the scale-out port) is built from.
export { ENVELOPE_VERSION, LocalBackplane, MemoryBus, type Backplane, type BackplaneEnvelope, type BackplaneHealth, type BackplaneHealthStatus, type PublishOptions } from './backplane/Backplane.js';
export { envelopeProblem } from './backplane/envelope.js';
export { MemoryHistory, type HistoryLimits, type HistoryRead, type HistoryRecord, type HistoryStore, type StreamPosition } from './history/HistoryStore.js';
export type { PresenceMember, PresenceStore } from './presence/Presence.js';
