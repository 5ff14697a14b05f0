#!/usr/bin/env node
// House rules on the published packages' package.json files (imports are checked by ESLint,
// eslint.config.js):
// - @bcast/core depends on cockatiel only (@opentelemetry/api is a peer dependency);
// - every published package is ESM-only with types, an exports map, sideEffects false,
//   engines >=20.19 and the MIT license.
// Usage: node scripts/check-manifests.mjs [root]   (root defaults to this repository)
import { readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = process.argv[2] ? resolve(process.argv[2]) : fileURLToPath(new URL('..', import.meta.url));
const problems = [];

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
}

if (problems.length > 0) {
  console.error(`check-manifests: ${problems.length} problem(s)\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log('check-manifests: ok');
