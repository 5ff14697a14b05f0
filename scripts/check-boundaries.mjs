#!/usr/bin/env node
// House rules that a type checker cannot see (DESIGN.md "Rules of the house"):
// - @bcast/core imports no transport or Redis library, not even as types;
// - @bcast/core depends on cockatiel only (@opentelemetry/api is a peer dependency);
// - every published package is ESM-only with types, an exports map, sideEffects false, engines >=20.19.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const problems = [];
const forbidden = /(?:from\s+|import\s*\(\s*|require\s*\(\s*)['"](ws|socket\.io|socket\.io-client|engine\.io|express|ioredis|redis|@redis\/[^'"]+)(?:\/[^'"]*)?['"]/;

function* files(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* files(path);
    else if (/\.[cm]?[jt]s$/.test(name)) yield path;
  }
}

const coreSrc = join(root, 'packages/core/src');
for (const file of files(coreSrc)) {
  const text = readFileSync(file, 'utf8');
  text.split('\n').forEach((line, i) => {
    const m = forbidden.exec(line);
    if (m) problems.push(`${file.slice(root.length)}:${i + 1} imports "${m[1]}": @bcast/core must stay transport-agnostic`);
  });
}

const core = JSON.parse(readFileSync(join(root, 'packages/core/package.json'), 'utf8'));
const deps = Object.keys(core.dependencies ?? {});
for (const d of deps) if (d !== 'cockatiel') problems.push(`packages/core lists "${d}" as a dependency; only cockatiel is allowed`);
if (!core.peerDependencies?.['@opentelemetry/api']) problems.push('packages/core must list @opentelemetry/api as a peer dependency');

for (const dir of readdirSync(join(root, 'packages'))) {
  const path = join(root, 'packages', dir, 'package.json');
  let pkg;
  try {
    pkg = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    continue;
  }
  if (pkg.private) continue;
  const where = `packages/${dir}/package.json`;
  if (pkg.type !== 'module') problems.push(`${where}: "type" must be "module" (ESM-only)`);
  if (pkg.sideEffects !== false) problems.push(`${where}: "sideEffects" must be false`);
  if (pkg.engines?.node !== '>=20.19') problems.push(`${where}: engines.node must be ">=20.19"`);
  if (!pkg.exports?.['.']?.types || !pkg.exports?.['.']?.default) problems.push(`${where}: exports["."] needs "types" and "default"`);
  if (pkg.license !== 'MIT') problems.push(`${where}: license must be MIT`);
}

if (problems.length > 0) {
  console.error(`check-boundaries: ${problems.length} problem(s)\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log('check-boundaries: ok');
