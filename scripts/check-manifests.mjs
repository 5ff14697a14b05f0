#!/usr/bin/env node
// House rules on the published packages' package.json files (imports are checked by ESLint,
// eslint.config.js):
// - @bcast/core depends on cockatiel only (@opentelemetry/api is a peer dependency);
// - every published package is ESM-only with types, an exports map, sideEffects false,
//   engines >=20.19 and the MIT license, and has the registry metadata (repository, homepage,
//   bugs, keywords, author);
// - internal dependencies use workspace:^ (never workspace:*), and every other package
//   whose sources import @bcast/core takes it as a peer dependency (one copy of core per app), with a
//   workspace:^ devDependency;
// - README links are absolute (relative ones are broken on the registry's page).
// Usage: node scripts/check-manifests.mjs [root]   (root defaults to this repository)
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = process.argv[2] ? resolve(process.argv[2]) : fileURLToPath(new URL('..', import.meta.url));
const problems = [];

/** Whether a package's published sources (not its tests) import @bcast/core. */
function importsCore(dir) {
  if (!existsSync(dir)) return false;
  return readdirSync(dir, { recursive: true, withFileTypes: true }).some(
    (entry) =>
      entry.isFile() &&
      /\.[cm]?[jt]s$/.test(entry.name) &&
      !/\.test\.[cm]?[jt]s$/.test(entry.name) &&
      /['"]@bcast\/core(?:\/[\w-]+)?['"]/.test(readFileSync(join(entry.parentPath ?? entry.path, entry.name), 'utf8')),
  );
}
const REPOSITORY = 'git+https://github.com/bcast-dev/bcast.git';

const core = JSON.parse(readFileSync(join(root, 'packages/core/package.json'), 'utf8'));
for (const d of Object.keys(core.dependencies ?? {})) {
  if (d !== 'cockatiel') problems.push(`packages/core lists "${d}" as a dependency; only cockatiel is allowed`);
}
if (!core.peerDependencies?.['@opentelemetry/api']) problems.push('packages/core must list @opentelemetry/api as a peer dependency');

for (const dir of readdirSync(join(root, 'packages'))) {
  let pkg;
  try {
    pkg = JSON.parse(readFileSync(join(root, 'packages', dir, 'package.json'), 'utf8'));
  } catch {
    continue;
  }
  if (pkg.private) continue;
  const where = `packages/${dir}/package.json`;
  if (pkg.type !== 'module') problems.push(`${where}: "type" must be "module" (ESM-only)`);
  if (pkg.sideEffects !== false) problems.push(`${where}: "sideEffects" must be false`);
  if (pkg.engines?.node !== '>=20.19') problems.push(`${where}: engines.node must be ">=20.19"`);
  if (pkg.license !== 'MIT') problems.push(`${where}: license must be MIT`);
  const exp = pkg.exports;
  if (!exp?.['.']) problems.push(`${where}: needs an exports map with "."`);
  for (const [key, target] of Object.entries(exp ?? {})) {
    if (key === './package.json') continue;
    if (typeof target !== 'object' || !target?.types || !target?.default) problems.push(`${where}: exports["${key}"] needs "types" and "default"`);
    else if (Object.keys(target)[0] !== 'types') problems.push(`${where}: exports["${key}"]: "types" must come first`);
  }

  const repo = pkg.repository;
  if (repo?.type !== 'git' || repo?.url !== REPOSITORY || repo?.directory !== `packages/${dir}`) {
    problems.push(`${where}: repository must be { "type": "git", "url": "${REPOSITORY}", "directory": "packages/${dir}" }`);
  }
  if (typeof pkg.homepage !== 'string' || !pkg.homepage.startsWith('https://')) problems.push(`${where}: needs a homepage`);
  if (typeof pkg.bugs?.url !== 'string') problems.push(`${where}: needs bugs.url`);
  if (!Array.isArray(pkg.keywords) || pkg.keywords.length === 0) problems.push(`${where}: needs keywords`);
  if (!pkg.author) problems.push(`${where}: needs an author`);

  for (const field of ['dependencies', 'peerDependencies', 'devDependencies', 'optionalDependencies']) {
    for (const [name, range] of Object.entries(pkg[field] ?? {})) {
      if (range.startsWith('workspace:') && range !== 'workspace:^') problems.push(`${where}: ${field}["${name}"] is "${range}"; internal ranges are "workspace:^"`);
    }
  }
  const usesCore = pkg.dependencies?.['@bcast/core'] || pkg.peerDependencies?.['@bcast/core'] || importsCore(join(root, 'packages', dir, 'src'));
  if (pkg.name !== '@bcast/core' && usesCore) {
    if (pkg.dependencies?.['@bcast/core']) problems.push(`${where}: @bcast/core must be a peerDependency, not a dependency (one copy of core per app)`);
    if (pkg.peerDependencies?.['@bcast/core'] !== 'workspace:^') problems.push(`${where}: peerDependencies["@bcast/core"] must be "workspace:^"`);
    if (pkg.devDependencies?.['@bcast/core'] !== 'workspace:^') problems.push(`${where}: devDependencies["@bcast/core"] must be "workspace:^"`);
  }

  const readme = join(root, 'packages', dir, 'README.md');
  if (existsSync(readme)) {
    readFileSync(readme, 'utf8')
      .split('\n')
      .forEach((line, i) => {
        for (const m of line.matchAll(/\]\(([^)\s]+)\)/g)) {
          if (!/^(https?:|mailto:|#)/.test(m[1])) problems.push(`packages/${dir}/README.md:${i + 1}: relative link "${m[1]}"; use https://github.com/bcast-dev/bcast/blob/main/...`);
        }
      });
  }
}

if (problems.length > 0) {
  console.error(`check-manifests: ${problems.length} problem(s)\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log('check-manifests: ok');
