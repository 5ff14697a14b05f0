import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const pkg = (name: string, entry = 'index'): string => fileURLToPath(new URL(`./packages/${name}/src/${entry}.ts`, import.meta.url));

// Tests import the packages' TypeScript sources; child processes (multi-node tests, bench) run the
// built dist, which `pnpm test` builds first.
export default defineConfig({
  resolve: {
    alias: [
      { find: /^@bcast\/core$/, replacement: pkg('core') },
      { find: /^@bcast\/core\/adapter$/, replacement: pkg('core', 'adapter') },
      { find: /^@bcast\/core\/backplane$/, replacement: pkg('core', 'backplane') },
      { find: /^@bcast\/ws$/, replacement: pkg('ws') },
      { find: /^@bcast\/socket\.io$/, replacement: pkg('socket.io') },
      { find: /^@bcast\/express$/, replacement: pkg('express') },
      { find: /^@bcast\/compat$/, replacement: pkg('compat') },
      { find: /^@bcast\/redis$/, replacement: pkg('redis') },
      { find: /^@bcast\/client$/, replacement: pkg('client') },
    ],
  },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'packages/*/test/**/*.test.ts', 'tests/*/test/**/*.test.ts', 'apps/*/test/**/*.test.ts', 'apps/test/**/*.test.ts', 'bench/test/**/*.test.ts'],
    // The reliability plan's load, fault and abuse cases run on their own, one file at a time, after
    // the rest (vitest.reliability.config.ts): their figures are measured on a machine they have to themselves.
    exclude: ['**/node_modules/**', '**/dist/**', 'tests/reliability/**'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    reporters: ['default'],
  },
});
