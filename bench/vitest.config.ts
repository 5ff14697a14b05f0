import { defineConfig } from 'vitest/config';

// `pnpm --filter @bcast/bench test`: the harness smoke test (raw variants only, so no build needed).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 20_000,
    pool: 'forks',
  },
});
