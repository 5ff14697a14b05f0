#!/usr/bin/env node
// After `changeset version`, write each package's version into its src/version.ts, so the
// tracer and meter carry the published version.
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
for (const dir of readdirSync(join(root, 'packages'))) {
  const file = join(root, 'packages', dir, 'src/version.ts');
  if (!existsSync(file)) continue;
  const { version } = JSON.parse(readFileSync(join(root, 'packages', dir, 'package.json'), 'utf8'));
  const text = readFileSync(file, 'utf8').replace(/VERSION = '[^']*'/, `VERSION = '${version}'`);
  writeFileSync(file, text);
}
