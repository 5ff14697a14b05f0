import { afterEach, describe, expect, it } from 'vitest';
import { guardProcess } from '../../support/processGuard.js';
import { socketIoDriver as driver, type SocketIoServerUnderTest } from './drivers/socketio.js';

// What only the socket.io driver has; every behaviour shared by the adapters is in conformance.test.ts,
// which runs it against this driver too (refusals with engine.io's reason, delivery, dead and slow
// clients, dispose, 1,000 clients).

guardProcess();

const servers: SocketIoServerUnderTest[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
});

describe('socket.io driver', () => {
  it('attaches one namespace middleware, one connection listener, an engine allowRequest and the connection caps\' engine listener, and dispose() removes them all', async () => {
    const server = (await driver.start({ allowedOrigins: ['https://app.example'] })) as SocketIoServerUnderTest;
    servers.push(server);
    // The generic dispose case only sees that the counts changed and came back; here, exactly what changed.
    expect(server.listenersBeforeAttach).toMatchObject({ 'engine.allowRequest': 0, 'nsp.connection': 0, 'nsp.middlewares': 0 });
    const before = server.listenersBeforeAttach;
    // engine 'connection': the caps count engine.io sessions (maxConnections is on by default)
    expect(server.listenerCounts()).toEqual({ ...before, 'engine.allowRequest': 1, 'engine.connection': Number(before['engine.connection'] ?? 0) + 1, 'nsp.connection': 1, 'nsp.middlewares': 1 });
    await server.dispose();
    expect(server.listenerCounts()).toEqual(server.listenersBeforeAttach);
  });
});
