#!/usr/bin/env node
// `pnpm check:packages`: what a user gets from the registry, checked on the real tarballs.
// - every published package is `pnpm pack`ed (workspace: ranges replaced) into a temp folder;
// - publint --strict and @arethetypeswrong/cli --profile esm-only on each tarball;
// - each tarball's source maps and declaration maps point at files that are in the tarball;
// - sherif: one version range per dependency across the workspace.
// Needs the packages built (`pnpm build`); runs offline.
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import { packAll, root } from './lib/workspace.mjs';

const bin = (name) => join(root, 'node_modules/.bin', name);
const problems = [];

const execFileAsync = promisify(execFile);

async function run(label, command, args) {
  try {
    await execFileAsync(command, args, { cwd: root, encoding: 'utf8', timeout: 120_000, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, FORCE_COLOR: '0', NO_COLOR: '1' } });
    console.log(`  ok  ${label}`);
  } catch (error) {
    const e = /** @type {{ stdout?: string, stderr?: string, message: string }} */ (error);
    problems.push(`${label} failed:\n${[e.stdout, e.stderr].filter(Boolean).join('\n').trim() || e.message}`);
    console.log(`  FAIL ${label}`);
  }
}

/** Runs the jobs two at a time (the machines have 2 cores). */
async function pool(jobs, width = 2) {
  const queue = [...jobs];
  await Promise.all(Array.from({ length: width }, async () => {
    while (queue.length > 0) await queue.shift()();
  }));
}

/** Every file under dir, relative to it. */
function* walk(dir, base = dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* walk(path, base);
    else yield relative(base, path);
  }
}

function checkContents(name, dir) {
  const files = [...walk(dir)];
  const tests = files.filter((f) => /\.test\.[cm]?[jt]s$/.test(f) || f.includes('test-utils/'));
  if (tests.length > 0) problems.push(`${name}: the tarball ships test files: ${tests.join(', ')}`);
  for (const file of files.filter((f) => f.endsWith('.map'))) {
    const map = JSON.parse(readFileSync(join(dir, file), 'utf8'));
    if (Array.isArray(map.sourcesContent) && map.sourcesContent.every((s) => typeof s === 'string')) continue;
    for (const source of map.sources ?? []) {
      const target = resolve(dirname(join(dir, file)), map.sourceRoot ?? '', source);
      if (!existsSync(target)) problems.push(`${name}: ${file} points at ${source}, which is not in the tarball`);
    }
  }
  console.log(`  ok  ${name}: ${files.length} files, maps resolve`);
}

const work = mkdtempSync(join(tmpdir(), 'bcast-check-packages-'));
try {
  console.log('check-packages: packing');
  const tarballs = packAll(work);
  const jobs = [];
  for (const { name, tarball } of tarballs) {
    const dir = join(work, 'unpacked', name);
    mkdirSync(dir, { recursive: true });
    execFileSync('tar', ['-xzf', tarball, '-C', dir, '--strip-components=1']);
    checkContents(name, dir);
    jobs.push(() => run(`${name}: publint --strict`, bin('publint'), ['--strict', tarball]));
    jobs.push(() => run(`${name}: attw --profile esm-only`, bin('attw'), ['--profile', 'esm-only', '--format', 'ascii', tarball]));
  }
  // apps/* also matches apps/test, a folder of tests and no package. apps/shared pins the
  // OpenTelemetry SDK exactly (2.12.0, next to its 0.223.0 exporters) where the rest of the
  // workspace says ^2.12.0, the same version in the lockfile: that one pin is tolerated, any other
  // drift fails.
  const sherifArgs = ['--ignore-rule', 'packages-without-package-json', '--ignore-dependency', '@opentelemetry/core@2.12.0', '--ignore-dependency', '@opentelemetry/sdk-metrics@2.12.0'];
  jobs.push(() => run('sherif (one range per dependency)', bin('sherif'), sherifArgs));
  await pool(jobs);
} finally {
  rmSync(work, { recursive: true, force: true });
}

if (problems.length > 0) {
  console.error(`\ncheck-packages: ${problems.length} problem(s)\n\n${problems.join('\n\n')}`);
  process.exit(1);
}
console.log('check-packages: ok');
