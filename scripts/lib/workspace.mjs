// Helpers shared by the packaging scripts: the published packages and `pnpm pack`.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('../..', import.meta.url));

/** The published (non-private) packages under packages/: { name, dir, pkg }. */
export function publishedPackages() {
  const out = [];
  for (const name of readdirSync(join(root, 'packages')).sort()) {
    const file = join(root, 'packages', name, 'package.json');
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, 'utf8'));
    if (!pkg.private) out.push({ name: pkg.name, dir: join(root, 'packages', name), pkg });
  }
  return out;
}

/** The pnpm that runs this script (`pnpm check:packages`), else the version pinned in packageManager through npx. */
function pnpmCommand() {
  const execpath = process.env.npm_execpath;
  if (execpath && /pnpm/.test(process.env.npm_config_user_agent ?? '')) {
    return /\.[cm]?js$/.test(execpath) ? [process.execPath, [execpath]] : [execpath, []];
  }
  const { packageManager } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  return ['npx', ['-y', packageManager]];
}

export function pnpm(args, options = {}) {
  const [command, prefix] = pnpmCommand();
  return execFileSync(command, [...prefix, ...args], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000, ...options });
}

/**
 * `pnpm pack`s every published package into `dest` (workspace: ranges become real ones) and
 * returns [{ name, tarball }]. The packages must be built (dist/) first.
 */
export function packAll(dest) {
  const packages = publishedPackages();
  for (const { name, dir } of packages) {
    if (!existsSync(join(dir, 'dist'))) throw new Error(`${name} has no dist/: run \`pnpm build\` first`);
  }
  pnpm(['--recursive', ...packages.flatMap(({ name }) => ['--filter', name]), 'pack', '--pack-destination', dest]);
  return packages.map(({ name, pkg }) => {
    const tarball = join(dest, `${name.replace(/^@/, '').replace('/', '-')}-${pkg.version}.tgz`);
    if (!existsSync(tarball)) throw new Error(`pnpm pack made no ${tarball}`);
    return { name, tarball };
  });
}
