/** Stable error codes. Never renamed once published; new ones may be added. */
export const ErrorCode = {
  /** The message cannot be encoded: undefined, a function, a symbol, BigInt, a cycle. */
  InvalidMessage: 'BCAST_INVALID_MESSAGE',
  /** The encoded message is larger than `maxMessageBytes`. */
  MessageTooLarge: 'BCAST_MESSAGE_TOO_LARGE',
  /** A room id is empty, too long, not a string or contains control characters. */
  InvalidRoom: 'BCAST_INVALID_ROOM',
  /** A user id is empty, too long or not a string. */
  InvalidUser: 'BCAST_INVALID_USER',
  /** The target of a broadcast is malformed (ids, except list...). */
  InvalidTarget: 'BCAST_INVALID_TARGET',
  /** The operation is not one of all / user / room / connections. */
  UnknownOperation: 'BCAST_UNKNOWN_OPERATION',
  /** A room that must exist does not. */
  UnknownRoom: 'BCAST_UNKNOWN_ROOM',
  /** A connection id is not registered. */
  UnknownConnection: 'BCAST_UNKNOWN_CONNECTION',
  /** An option passed to a factory is invalid. */
  InvalidOption: 'BCAST_INVALID_OPTION',
  /** The circuit for a scope is open: the call failed fast without running. */
  CircuitOpen: 'BCAST_CIRCUIT_OPEN',
  /** The circuit was isolated by an operator. */
  CircuitIsolated: 'BCAST_CIRCUIT_ISOLATED',
  /** An operation did not finish within its deadline. */
  Timeout: 'BCAST_TIMEOUT',
  /** The backplane could not publish (Redis down, circuit open...). */
  BackplaneUnavailable: 'BCAST_BACKPLANE_UNAVAILABLE',
  /** The connection is closed or closing. */
  ConnectionClosed: 'BCAST_CONNECTION_CLOSED',
  /** The transport refused a send for a reason that is not a closed connection. */
  SendFailed: 'BCAST_SEND_FAILED',
  /** The hub is shutting down or disposed; nothing new is accepted. */
  Shutdown: 'BCAST_SHUTDOWN',
  /** Anything that was not a BcastError, wrapped by `toBcastError`. */
  Internal: 'BCAST_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** WebSocket close codes bcast uses (RFC 6455 section 7.4.1 and the IANA registry). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  /** Reserved: never sent; reported when a connection dropped without a close frame. */
  AbnormalClosure: 1006,
  InvalidPayload: 1007,
  PolicyViolation: 1008,
  MessageTooBig: 1009,
  InternalError: 1011,
  TryAgainLater: 1013,
} as const;

export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** Close reasons bcast sends, so tests and clients can rely on them. */
export const CloseReason = {
  ConnectionLost: 'Connection lost during broadcast',
  SlowConsumer: 'slow consumer',
  ServerShutdown: 'server shutting down',
  Unresponsive: 'no pong',
  PolicyViolation: 'policy violation',
  AuthExpired: 'authentication expired',
  Revoked: 'access revoked',
} as const;
