/** Error codes a client may receive in `{ type: "error", code, requestId }`. Stable. */
export const ProtocolErrorCode = {
  BadJson: 'BAD_JSON',
  UnknownType: 'UNKNOWN_TYPE',
  InvalidRoom: 'INVALID_ROOM',
  InvalidArgument: 'INVALID_ARGUMENT',
  Forbidden: 'FORBIDDEN',
  TooManyRooms: 'TOO_MANY_ROOMS',
  RateLimited: 'RATE_LIMITED',
  Internal: 'INTERNAL',
} as const;

export type ProtocolErrorCode = (typeof ProtocolErrorCode)[keyof typeof ProtocolErrorCode];

/** What a client may send (docs/PROTOCOL.md). Anything else goes to `onMessage`, when set. */
export type ClientMessage =
  | { type: 'join'; room: string; requestId?: string | number; since?: { offset: number; epoch: string } }
  | { type: 'leave'; room: string; requestId?: string | number }
  | { type: 'ping'; requestId?: string | number };

/** What the server answers to a client's own requests. */
export type ServerReply =
  | {
      type: 'ok';
      op: 'join' | 'leave';
      room: string;
      requestId?: string | number;
      /** A room with history: its current position. */
      position?: { offset: number; epoch: string };
      /** A join with `since`: whether every missed message was sent before this reply. */
      recovered?: boolean;
    }
  | { type: 'pong'; requestId?: string | number }
  | { type: 'error'; code: ProtocolErrorCode; message: string; requestId?: string | number };
