export { ConnectionRegistry, type ConnectionEntry } from './ConnectionRegistry.js';
export { RoomRegistry, type RoomEvent } from './RoomRegistry.js';
