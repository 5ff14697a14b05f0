import { afterEach, describe, expect, it } from 'vitest';
import { openClient, rejectedStatus, startWs, type Harness } from './helpers.js';

let harness: Harness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});

describe('G1 graceful shutdown on @bcast/ws', () => {
  it('refuses new upgrades with 503, closes every client with 1001 and reports what it did', async () => {
    harness = await startWs();
    const clients = await Promise.all([openClient(harness.url), openClient(harness.url), openClient(harness.url)]);
    await harness.broadcaster.toAll({ before: 'shutdown' });
    const report = await harness.broadcaster.shutdown({ drainTimeoutMs: 2_000 });
    expect(report).toMatchObject({ closed: 3, terminated: 0 });
    for (const c of clients) {
      expect(await c.closed).toEqual({ code: 1001, reason: 'server shutting down' });
      expect(c.frames).toEqual(['{"before":"shutdown"}']);
    }
    expect(await rejectedStatus(harness.url)).toBe(503);
    await expect(harness.broadcaster.toAll('late')).rejects.toMatchObject({ code: 'BCAST_SHUTDOWN' });
  });
});
