import { describe, expect, it } from 'vitest';
import { BACKPLANE_SCOPE, withBackplaneScope } from './options.js';
import { ReliabilityManager } from './reliability/ReliabilityManager.js';

const backplane = (top: Parameters<typeof withBackplaneScope>[0]) => {
  const r = new ReliabilityManager(withBackplaneScope(top, {}));
  const config = { backplane: r.configOf(BACKPLANE_SCOPE), other: r.configOf('other') };
  r.dispose();
  return config;
};

describe('the backplane scope defaults', () => {
  it('a 250 ms timeout, 2 retries from 50 ms without jitter, a circuit of 5 failures that half-opens after 5 s; other scopes keep the general defaults', () => {
    const { backplane: bp, other } = backplane({});
    expect(bp).toMatchObject({ timeoutMs: 250, maxRetries: 2, baseDelayMs: 50, maxDelayMs: 500, jitter: false, failureThreshold: 5, recoveryTimeoutMs: 5_000 });
    expect(other).toMatchObject({ failureThreshold: 5, recoveryTimeoutMs: 30_000 });
  });

  it("the app's settings win: top-level under the scope's own", () => {
    expect(backplane({ circuitBreaker: { recoveryTimeoutMs: 30_000 } }).backplane).toMatchObject({ failureThreshold: 5, recoveryTimeoutMs: 30_000 });
    const both = backplane({ circuitBreaker: { recoveryTimeoutMs: 30_000 }, scopes: { [BACKPLANE_SCOPE]: { circuitBreaker: { failureThreshold: 3 } } } }).backplane;
    expect(both).toMatchObject({ failureThreshold: 3, recoveryTimeoutMs: 30_000 });
  });
});
