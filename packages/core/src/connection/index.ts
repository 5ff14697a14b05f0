export type { Connection } from './Connection.js';
export { EncodedMessage, encodeMessage, DEFAULT_MAX_MESSAGE_BYTES } from './EncodedMessage.js';
export { TICK_CORK_MAX_HELD_BYTES, corkForTick, inBurst, isHeldForTick, releaseIfFull, type CorkableStream } from './tickCork.js';
