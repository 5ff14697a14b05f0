import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { VERSION } from '../src/index.js';

const root = new URL('../../../', import.meta.url).pathname;
const script = join(root, 'scripts/check-boundaries.mjs');

function runCheck(dir: string): { code: number; output: string } {
  try {
    const output = execFileSync(process.execPath, [join(dir, 'scripts/check-boundaries.mjs')], { encoding: 'utf8', stdio: 'pipe' });
    return { code: 0, output };
  } catch (error) {
    const e = error as { status: number; stderr: string };
    return { code: e.status, output: e.stderr };
  }
}

/** A copy of the parts of the repo the check reads, to mutate. */
function sandbox(): string {
  const dir = mkdtempSync(join(tmpdir(), 'bcast-bound-'));
  mkdirSync(join(dir, 'scripts'));
  cpSync(script, join(dir, 'scripts/check-boundaries.mjs'));
  mkdirSync(join(dir, 'packages/core'), { recursive: true });
  cpSync(join(root, 'packages/core/src'), join(dir, 'packages/core/src'), { recursive: true });
  cpSync(join(root, 'packages/core/package.json'), join(dir, 'packages/core/package.json'));
  return dir;
}

describe('house rules for @bcast/core', () => {
  it('the repository passes the boundary check', () => {
    expect(runCheck(root)).toMatchObject({ code: 0 });
  });

  it('fails when core imports a transport library, even as a type', () => {
    const dir = sandbox();
    writeFileSync(join(dir, 'packages/core/src/leak.ts'), "import type { WebSocket } from 'ws';\nexport type X = WebSocket;\n");
    const r = runCheck(dir);
    expect(r.code).toBe(1);
    expect(r.output).toMatch(/leak\.ts:1 imports "ws"/);
  });

  it.each(['socket.io', 'express', 'ioredis', 'redis'])('fails when core imports %s', (lib) => {
    const dir = sandbox();
    writeFileSync(join(dir, 'packages/core/src/leak.ts'), `export const x = await import('${lib}');\n`);
    expect(runCheck(dir).code).toBe(1);
  });

  it('fails when core depends on anything but cockatiel', () => {
    const dir = sandbox();
    const pkgPath = join(dir, 'packages/core/package.json');
    const pkg = JSON.parse(readFileSync(pkgPath, 'utf8'));
    pkg.dependencies.ws = '^8';
    writeFileSync(pkgPath, JSON.stringify(pkg));
    const r = runCheck(dir);
    expect(r.code).toBe(1);
    expect(r.output).toMatch(/lists "ws" as a dependency/);
  });

  it('VERSION matches package.json (the tracer and meter version)', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'packages/core/package.json'), 'utf8'));
    expect(VERSION).toBe(pkg.version);
  });
});
