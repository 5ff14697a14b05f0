#!/usr/bin/env node
// `pnpm check:release` (part of `pnpm test` and `pnpm release`): the release that `pnpm
// version-packages` would make is coherent (docs/decisions.md, "One version for the family").
// - every published package is in the one `fixed` group of .changeset/config.json, so they share
//   a version, and the peer-range option that keeps a core minor from forcing majors is on;
// - the pending changesets give every published package the same next version, at 1.0.0 or above
//   (at 0.x a core minor leaves the adapters' `^0.y` peer range and changesets makes them major);
// - before the first release (while a `first-release-*.md` changeset exists) it is the only kind:
//   nothing was published, so the first CHANGELOG describes the release, not the drafts before it.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { publishedPackages, root } from './lib/workspace.mjs';

const problems = [];
const published = publishedPackages().map((p) => p.name).sort();
const config = JSON.parse(readFileSync(join(root, '.changeset/config.json'), 'utf8'));

const groups = config.fixed ?? [];
const group = groups.find((g) => g.some((name) => published.includes(name)));
if (groups.length !== 1 || !group || JSON.stringify([...group].sort()) !== JSON.stringify(published)) {
  problems.push(`.changeset/config.json: "fixed" must be one group of exactly the published packages: ${JSON.stringify(published)}`);
}
if (config.___experimentalUnsafeOptions_WILL_CHANGE_IN_PATCH?.onlyUpdatePeerDependentsWhenOutOfRange !== true) {
  problems.push('.changeset/config.json: ___experimentalUnsafeOptions_WILL_CHANGE_IN_PATCH.onlyUpdatePeerDependentsWhenOutOfRange must be true');
}

const pending = readdirSync(join(root, '.changeset')).filter((f) => f.endsWith('.md') && f !== 'README.md');
const firstRelease = pending.filter((f) => f.startsWith('first-release-'));
if (firstRelease.length > 0) {
  for (const f of pending.filter((f) => !f.startsWith('first-release-'))) {
    problems.push(`.changeset/${f}: nothing is published yet; fold this change into the package's .changeset/first-release-*.md instead (its text is the first CHANGELOG)`);
  }
}

const tmp = mkdtempSync(join(tmpdir(), 'bcast-release-plan-'));
try {
  const bin = createRequire(join(root, 'package.json')).resolve('@changesets/cli/bin.js');
  const out = join(tmp, 'plan.json');
  execFileSync(process.execPath, [bin, 'status', `--output=${out}`], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'], timeout: 60_000 });
  const plan = JSON.parse(readFileSync(out, 'utf8'));
  const releases = plan.releases.filter((r) => published.includes(r.name) && r.type !== 'none');
  if (releases.length > 0) {
    const versions = new Set(releases.map((r) => r.newVersion));
    const missing = published.filter((name) => !releases.some((r) => r.name === name));
    if (versions.size !== 1 || missing.length > 0) {
      problems.push(`the next release is not one version for every package: ${releases.map((r) => `${r.name}@${r.newVersion}`).join(', ')}${missing.length ? `; not released: ${missing.join(', ')}` : ''}`);
    }
    for (const r of releases) {
      if (Number(r.newVersion.split('.')[0]) < 1) problems.push(`${r.name}@${r.newVersion}: releases are 1.0.0 or above (see docs/decisions.md)`);
    }
    console.log(`check-release-plan: next release ${[...versions].join(', ')} of ${releases.length} packages from ${plan.changesets.length} changeset(s)`);
  } else {
    console.log('check-release-plan: no release pending');
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

if (problems.length > 0) {
  console.error(`check-release-plan: ${problems.length} problem(s)\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log('check-release-plan: ok');
