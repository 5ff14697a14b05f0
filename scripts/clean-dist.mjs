#!/usr/bin/env node
// Removes the current package's dist/ (or the folders given as arguments) before a build, so a
// renamed or deleted source file leaves no stale .js or .d.ts in the published tarball.
// Usage (from a package's build script): node ../../scripts/clean-dist.mjs [dir...]
import { rmSync } from 'node:fs';
import { resolve } from 'node:path';

const dirs = process.argv.length > 2 ? process.argv.slice(2) : ['dist'];
for (const dir of dirs) rmSync(resolve(dir), { recursive: true, force: true });
