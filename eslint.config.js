// ESLint flat config: the house rules (see CONTRIBUTING.md "Lint"). Not type-aware, so it stays fast.
import { fileURLToPath } from 'node:url';
import tseslint from 'typescript-eslint';
import bcast from './scripts/eslint-plugin-bcast.mjs';

const root = fileURLToPath(new URL('.', import.meta.url));

/** What @bcast/core must never import, not even as a type or for its side effects. */
const TRANSPORT_AND_REDIS = ['ws', 'socket.io', 'socket.io-client', 'socket.io-adapter', 'socket.io-parser', 'engine.io', 'engine.io-client', 'express', 'ioredis', 'redis', '@redis/*'];

export default tseslint.config(
  {
    ignores: ['**/node_modules/**', '**/dist/**', '**/coverage/**', '**/.turbo/**', 'test-artifacts/**', 'bench/results/**'],
  },
  {
    // Sources carry directives for rules this config does not enable (e.g. no-explicit-any).
    linterOptions: { reportUnusedDisableDirectives: 'off' },
  },
  {
    files: ['**/*.{js,mjs,cjs}'],
    languageOptions: { ecmaVersion: 'latest', sourceType: 'module' },
  },
  {
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs' },
  },
  {
    files: ['**/*.{ts,mts,cts}'],
    languageOptions: { parser: tseslint.parser, sourceType: 'module' },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      // Type-only imports are written as such (`import type` or `import { type X }`), so that the
      // emitted JavaScript never loads a module for its types.
      '@typescript-eslint/consistent-type-imports': ['error', { prefer: 'type-imports', fixStyle: 'inline-type-imports', disallowTypeAnnotations: false }],
      // `import { type A } from 'x'` still loads 'x' at run time; write `import type { A } from 'x'`.
      '@typescript-eslint/no-import-type-side-effects': 'error',
    },
  },
  {
    files: ['**/*.{js,mjs,cjs,ts,mts,cts}'],
    plugins: { bcast },
    rules: {
      // Workspace packages are imported through their exports-map entries only
      // (@bcast/core, @bcast/core/adapter, @bcast/core/backplane, @bcast/ws, ...).
      'bcast/workspace-entries': ['error', { root }],
    },
  },
  {
    files: ['packages/core/src/**'],
    rules: {
      'bcast/no-restricted-modules': ['error', { modules: TRANSPORT_AND_REDIS, message: '@bcast/core stays transport-agnostic (no transport or Redis library, not even as a type)' }],
    },
  },
  {
    files: ['packages/*/src/**/*.{ts,mts,cts,js,mjs}'],
    ignores: ['packages/*/src/**/*.test.ts'],
    rules: {
      // Named exports only.
      'no-restricted-exports': ['error', { restrictDefaultExports: { direct: true, named: true, defaultFrom: true, namedFrom: true, namespaceFrom: true } }],
      // A package's API is what it names: no `export *` of another package (e.g. of @bcast/core).
      'no-restricted-syntax': [
        'error',
        {
          selector: 'ExportAllDeclaration[source.value=/^[^.]/]',
          message: "Name what you re-export from another package (export { X } from '@bcast/core'); `export *` would make its whole API part of this one.",
        },
      ],
    },
  },
  {
    files: ['**/*.test.{ts,mts,cts,js,mjs}', '**/test/**/*.{ts,mts,js,mjs}', 'tests/**/*.{ts,mts,js,mjs}'],
    rules: {
      'bcast/no-focused-tests': 'error',
    },
  },
);
