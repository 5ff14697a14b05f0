// @bcast/core: the API for applications. Adapter authors: '@bcast/core/adapter'; backplane authors: '@bcast/core/backplane'.
export { Broadcaster, type SendOptions, type ShutdownReport } from './Broadcaster.js';
export type { BroadcasterOptions, Logger } from './options.js';
export type { BackplaneStatus, BroadcastContext, BroadcastOperation, BroadcastResult } from './execution/types.js';
export type { ExecutionResult, ExecutionStatus, PropagationOutcome, PropagationStatus } from './execution/ExecutionEngine.js';
export { validateRoomId, validateUserId } from './execution/validate.js';
export type { BroadcasterStats, HealthReport, HealthStatus } from './monitor/HealthReporter.js';
export type { BackplaneCounts, MonitorStats, OperationStats, OperationTotals, Outcome } from './monitor/ExecutionMonitor.js';
export type { ConnectionEntry, ConnectionsView } from './registry/ConnectionRegistry.js';
export type { RoomEvent, RoomsView } from './registry/RoomRegistry.js';
export { BcastError, isBcastError, toBcastError, type ErrorDetails } from './errors/BcastError.js';
export { CloseCode, CloseReason, ErrorCode } from './errors/codes.js';
export { ErrorClassifier, type ErrorCategory, type ErrorClassifierOptions } from './errors/classify.js';
export type { CircuitBreakerOptions, CircuitStateName, ReliabilityOptions, RetryOptions, ScopeOptions, ScopeState } from './reliability/ReliabilityManager.js';
export { ProtocolErrorCode, type ClientMessage, type ServerReply } from './protocol/messages.js';
export type { InboundOptions } from './protocol/InboundProtocol.js';
export type { Backplane, BackplaneHealth, BackplaneHealthStatus } from './backplane/Backplane.js';
export { VERSION } from './version.js';
