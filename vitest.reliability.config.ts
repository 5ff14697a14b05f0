import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

// The reliability plan (tests/reliability): one file at a time, so each case's figures (latency,
// event-loop delay, RSS) are measured without the rest of the suite competing for the two cores.
// `pnpm test` runs it after the main suite; `pnpm test:long` runs it at full length (BCAST_LONG=1).
export default defineConfig({
  resolve: base.resolve,
  test: {
    include: ['tests/reliability/test/**/*.test.ts'],
    exclude: ['**/node_modules/**', '**/dist/**'],
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    reporters: ['default'],
  },
});
