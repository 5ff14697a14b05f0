import type { AdapterDriver } from '../driver.js';
import { expressDriver } from './express.js';
import { socketIoDriver } from './socketio.js';
import { wsDriver } from './ws.js';

/** Every adapter the conformance suite runs against. */
export const drivers: readonly AdapterDriver[] = [wsDriver, expressDriver, socketIoDriver];
