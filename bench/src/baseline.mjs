// The "before" of a before/after run: a git worktree of another commit, installed and built in a
// temp dir outside the repo, whose packages/*/dist the `<variant>@before` variants load.
//
//   prepareBaseline('871779b') -> { ref, hash, subject, dir, reused }
//
// The worktree lives in os.tmpdir()/bcast-bench-baseline-<hash> and is reused by the next run
// with the same commit (a marker file says it was installed and built). `removeBaseline` deletes
// it and its git registration.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The monorepo this bench belongs to. */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The packages the bench's variants import, by package name. */
export const BENCH_PACKAGES = ['@bcast/core', '@bcast/ws', '@bcast/socket.io', '@bcast/compat'];
const PNPM = ['-y', 'pnpm@12.4.2'];
const MARKER = '.bcast-bench-baseline.json';

/** Where the worktree of commit `hash` lives. */
export function baselineDir(hash, tmp = os.tmpdir()) {
  if (!/^[0-9a-f]{7,64}$/.test(hash)) throw new Error(`not a commit hash: ${hash}`);
  return join(tmp, `bcast-bench-baseline-${hash.slice(0, 12)}`);
}

/**
 * Runs a command and returns its output; throws with the tail of its output when it fails.
 * @param {string} cmd @param {string[]} args @param {{cwd: string, env?: NodeJS.ProcessEnv, timeoutMs?: number}} options
 */
function run(cmd, args, { cwd, env, timeoutMs = 600_000 }) {
  const r = spawnSync(cmd, args, { cwd, env: { ...process.env, ...env }, encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * 2 ** 20 });
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (r.status !== 0) {
    const tail = output.trim().split('\n').slice(-15).join('\n');
    throw new Error(`\`${cmd} ${args.join(' ')}\` failed (${r.error?.message ?? r.signal ?? `exit ${r.status}`}):\n${tail}`);
  }
  return output;
}

const git = (args, cwd = REPO_ROOT) => run('git', args, { cwd }).trim();

/** The full hash and subject of a git ref of this repo. */
export function resolveRef(ref, cwd = REPO_ROOT) {
  if (!ref || ref.startsWith('-')) throw new Error(`bad git ref ${JSON.stringify(ref)}`);
  let hash;
  try {
    hash = git(['rev-parse', '--verify', '--quiet', `${ref}^{commit}`], cwd);
  } catch {
    throw new Error(`--baseline ${ref}: no such commit in this repository`);
  }
  return { ref, hash, subject: git(['log', '-1', '--format=%s', hash], cwd) };
}

/** Names of the workspace packages in `root`/packages, by directory. */
export function workspacePackages(root) {
  const dir = join(root, 'packages');
  if (!existsSync(dir)) return {};
  const out = {};
  for (const entry of readdirSync(dir)) {
    const file = join(dir, entry, 'package.json');
    if (existsSync(file)) out[JSON.parse(readFileSync(file, 'utf8')).name] = entry;
  }
  return out;
}

/**
 * Builds the bench's packages (those that exist) in a checkout with turbo: `pnpm exec turbo run
 * build --filter=...` (their workspace dependencies come along through `^build`; turbo needs
 * pnpm on its PATH, which `pnpm exec` gives it). `cacheDir`: turbo's cache, e.g. inside a baseline
 * worktree, which would otherwise share the main checkout's.
 * @returns {string[]} the packages built
 */
export function buildPackages(root, log = () => {}, cacheDir) {
  const present = workspacePackages(root);
  const names = BENCH_PACKAGES.filter((name) => present[name]);
  if (names.length === 0) throw new Error(`no @bcast packages to build in ${root}`);
  const t0 = performance.now();
  run('npx', [...PNPM, 'exec', 'turbo', 'run', 'build', ...names.map((n) => `--filter=${n}`), ...(cacheDir ? [`--cache-dir=${cacheDir}`] : [])], { cwd: root, env: { TURBO_TELEMETRY_DISABLED: '1', TURBO_NO_UPDATE_NOTIFIER: '1', DO_NOT_TRACK: '1' } });
  log(`  built ${names.join(', ')} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return names;
}

/** `pnpm install --frozen-lockfile`, offline first (the store usually has everything), then online. */
function install(root, log) {
  const t0 = performance.now();
  try {
    run('npx', [...PNPM, 'install', '--frozen-lockfile', '--offline'], { cwd: root });
    log(`  installed offline in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } catch (offline) {
    log(`  offline install failed (${offline.message.split('\n')[0]}); trying online`);
    run('npx', [...PNPM, 'install', '--frozen-lockfile'], { cwd: root });
    log(`  installed online in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
}

/** The worktrees git knows of, by path. */
function worktrees() {
  return git(['worktree', 'list', '--porcelain'])
    .split('\n')
    .filter((l) => l.startsWith('worktree '))
    .map((l) => l.slice('worktree '.length));
}

/** The dist entry each bench package has in a checkout, by package name (missing ones left out). */
export function builtPackages(root) {
  const present = workspacePackages(root);
  const out = {};
  for (const name of BENCH_PACKAGES) {
    const dir = present[name];
    if (dir && existsSync(join(root, 'packages', dir, 'dist', 'index.js'))) out[name] = dir;
  }
  return out;
}

/**
 * A worktree of `ref`, installed and built, ready for the `@before` variants.
 * @param {string} ref @param {{log?: (line: string) => void, tmp?: string}} [options]
 */
export function prepareBaseline(ref, { log = () => {}, tmp } = {}) {
  const { hash, subject } = resolveRef(ref);
  const dir = baselineDir(hash, tmp);
  const marker = join(dir, MARKER);
  if (existsSync(marker)) {
    const ready = JSON.parse(readFileSync(marker, 'utf8'));
    if (ready.hash === hash && Object.keys(builtPackages(dir)).length === ready.packages.length) {
      log(`baseline ${ref} (${hash.slice(0, 9)} ${subject}): reusing its worktree`);
      return { ref, hash, subject, dir, reused: true, packages: ready.packages };
    }
  }
  const t0 = performance.now();
  log(`baseline ${ref} (${hash.slice(0, 9)} ${subject}): a worktree in ${dir}, installed and built`);
  if (existsSync(dir) || worktrees().includes(dir)) removeBaseline(dir);
  git(['worktree', 'add', '--detach', dir, hash]);
  try {
    install(dir, log);
    const packages = buildPackages(dir, log, join(dir, '.turbo', 'cache'));
    const built = builtPackages(dir);
    const missing = packages.filter((name) => !built[name]);
    if (missing.length) throw new Error(`the build left no dist/index.js for ${missing.join(', ')}`);
    writeFileSync(marker, JSON.stringify({ hash, packages, builtAt: new Date().toISOString() }));
    log(`  baseline ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return { ref, hash, subject, dir, reused: false, packages };
  } catch (error) {
    // Leave no half-built worktree to be mistaken for a ready one (the marker is written last,
    // so none would be), but keep it for a look at what failed.
    log(`  baseline failed; its worktree stays in ${dir} (remove it with \`git worktree remove --force ${dir}\`)`);
    throw error;
  }
}

/** Removes a baseline worktree and its registration in git. */
export function removeBaseline(dir) {
  try {
    git(['worktree', 'remove', '--force', dir]);
  } catch {
    rmSync(dir, { recursive: true, force: true });
    git(['worktree', 'prune']);
  }
}
