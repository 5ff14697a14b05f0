import type { AdapterDriver } from '../driver.js';
import { expressDriver } from './express.js';
import { wsDriver } from './ws.js';

/**
 * Every adapter the conformance suite runs against. The socket.io driver (drivers/socketio.ts,
 * written by the socket.io adapter's author) is added here once it exists.
 */
export const drivers: readonly AdapterDriver[] = [wsDriver, expressDriver];
