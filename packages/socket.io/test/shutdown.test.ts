import { afterEach, describe, expect, it } from 'vitest';
import { client, closeAll, connected, refusal, startIo } from './helpers.js';

afterEach(closeAll);

describe('G1 graceful shutdown on @bcast/socket.io', () => {
  it('closes every client, refuses new ones with "server shutting down" and reports what it did', async () => {
    const h = await startIo();
    const clients = await Promise.all([connected(client(h.url)), connected(client(h.url))]);
    const gone = clients.map((c) => new Promise<string>((resolve) => c.socket.once('disconnect', (reason) => resolve(reason))));
    const report = await h.broadcaster.shutdown({ drainTimeoutMs: 2_000 });
    expect(report).toMatchObject({ closed: 2, terminated: 0 });
    // socket.io has no close codes: the client sees the server end the session
    expect(await Promise.all(gone)).toEqual(['io server disconnect', 'io server disconnect']);
    expect(await refusal(client(h.url, { reconnection: false }))).toMatchObject({ message: 'server shutting down' });
  });
});
