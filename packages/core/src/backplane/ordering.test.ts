import { afterEach, describe, expect, it } from 'vitest';
import { BcastError, Broadcaster, ErrorCode } from '../index.js';
import { quietLogger } from '../test-utils/fakeConnection.js';
import type { Backplane, BackplaneEnvelope } from './Backplane.js';

const made: Broadcaster[] = [];
afterEach(async () => {
  for (const b of made.splice(0)) await b.dispose();
});

describe("other nodes get this node's broadcasts in order, through retries", () => {
  it('a publish retried after an unwritten failure (its connection being replaced after a timeout) is not overtaken by later broadcasts', async () => {
    const published: unknown[] = [];
    let down = true;
    const backplane: Backplane = {
      nodeId: 'me',
      async publish(envelope: BackplaneEnvelope) {
        if (down) throw new BcastError(ErrorCode.BackplaneUnavailable, 'not connected (replacing a connection that timed out)', { details: { written: false, afterTimeout: true } });
        published.push(JSON.parse(envelope.payload));
      },
      subscribe: () => () => {},
      close: async () => {},
    };
    const b = new Broadcaster({ backplane, pingIntervalMs: 0, logger: quietLogger() });
    made.push(b);
    const first = b.toAll({ n: 1 }); // refused unwritten: retried 50 ms later
    await new Promise((resolve) => setImmediate(resolve));
    down = false; // back before the retry: later broadcasts would go first
    const later = [2, 3, 4].map((n) => b.toAll({ n }));
    const results = await Promise.all([first, ...later]);
    expect(results.map((r) => r.backplane)).toEqual(['published', 'published', 'published', 'published']);
    expect(published).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }]);
  });
});
