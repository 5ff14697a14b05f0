import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import { afterAll, describe, expect, it } from 'vitest';
import { VERSION } from '../src/index.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const eslint = new ESLint({ cwd: root });

/** Lints `code` as if it were the file at `path` (relative to the repository root); the file need not exist. */
async function lint(path: string, code: string): Promise<{ ruleId: string | null; message: string; line: number }[]> {
  const [result] = await eslint.lintText(code, { filePath: join(root, path) });
  return (result?.messages ?? []).map(({ ruleId, message, line }) => ({ ruleId, message, line }));
}

const rules = async (path: string, code: string): Promise<(string | null)[]> => (await lint(path, code)).map((m) => m.ruleId);

describe('lint: @bcast/core stays transport-agnostic', () => {
  const file = 'packages/core/src/x.ts';
  const libs = ['ws', 'socket.io', 'socket.io-client', 'engine.io', 'express', 'ioredis', 'redis', '@redis/client'];

  it.each(libs)('a bare side-effect import of %s fails', async (lib) => {
    expect(await rules(file, `import '${lib}';\n`)).toEqual(['bcast/no-restricted-modules']);
  });

  it.each([
    ['import type', "import type { WebSocket } from 'ws';\nexport type X = WebSocket;\n"],
    ['inline type import', "import { type WebSocket } from 'ws';\nexport type X = WebSocket;\n"],
    ['value import', "import { WebSocketServer } from 'ws';\nexport const X = WebSocketServer;\n"],
    ['subpath import', "import Sender from 'ws/lib/sender.js';\nexport const X = Sender;\n"],
    ['re-export', "export { WebSocket } from 'ws';\n"],
    ['dynamic import', "export const x = await import('ioredis');\n"],
    ['require', "import { createRequire } from 'node:module';\nexport const x = createRequire(import.meta.url);\nconst require = x;\nexport const y: unknown = require('redis');\n"],
    ['TS import type', "export type X = import('socket.io').Socket;\n"],
    ['import = require', "import io = require('socket.io');\nexport type X = io.Socket;\n"],
  ])('a transport library imported by %s fails', async (_, code) => {
    expect(await rules(file, code)).toContain('bcast/no-restricted-modules');
  });

  it('other modules are fine', async () => {
    expect(await rules(file, "import { trace } from '@opentelemetry/api';\nimport { retry } from 'cockatiel';\nimport { x } from './y.js';\nexport { trace, retry, x };\n")).toEqual([]);
  });

  it('other packages may import transports', async () => {
    expect(await rules('packages/ws/src/x.ts', "import 'ws';\nimport type { Server } from 'socket.io';\nexport type S = Server;\n")).toEqual([]);
  });
});

describe('lint: packages import each other through their public entries', () => {
  it.each(['@bcast/core', '@bcast/core/adapter', '@bcast/core/backplane', '@bcast/ws', '@bcast/redis'])('%s is an entry', async (spec) => {
    expect(await rules('packages/compat/src/x.ts', `import { X } from '${spec}';\nexport const Y = X;\n`)).toEqual([]);
  });

  it.each([
    ['packages/ws/src/x.ts', '@bcast/core/src/foo'],
    ['packages/ws/src/x.ts', '@bcast/core/src/foo.js'],
    ['packages/express/src/x.ts', '@bcast/core/dist/index.js'],
    ['packages/compat/src/x.ts', '@bcast/ws/src/frame.js'],
    ['tests/conformance/test/x.ts', '@bcast/socket.io/dist/index.js'],
    ['apps/ws-chat/x.mjs', '@bcast/core/src/index.js'],
    ['bench/src/x.mjs', '@bcast/compat/src/index.js'],
  ])('%s importing %s fails', async (path, spec) => {
    const messages = await lint(path, `import { X } from '${spec}';\nexport const Y = X;\n`);
    expect(messages.map((m) => m.ruleId)).toEqual(['bcast/workspace-entries']);
    expect(messages[0]?.message).toMatch(/not a public entry/);
  });

  it.each([
    ['packages/ws/src/x.ts', '../../core/src/x.js'],
    ['packages/ws/test/x.test.ts', '../../core/src/Broadcaster.js'],
    ['packages/redis/src/a/b.ts', '../../../core/dist/index.js'],
    ['tests/conformance/test/drivers/x.ts', '../../../../packages/ws/src/index.js'],
    ['apps/test/x.test.ts', '../../packages/core/src/index.js'],
  ])('%s importing the relative path %s fails', async (path, spec) => {
    const messages = await lint(path, `import { X } from '${spec}';\nexport const Y = X;\n`);
    expect(messages.map((m) => m.ruleId)).toEqual(['bcast/workspace-entries']);
    expect(messages[0]?.message).toMatch(/reaches into @bcast\/(core|ws)'s (src|dist)\//);
  });

  it('a dynamic import or vi.mock of a deep path fails too', async () => {
    expect(await rules('packages/ws/test/x.test.ts', "import { vi } from 'vitest';\nvi.mock('@bcast/core/src/Broadcaster.js');\nexport const m = await import('../../core/src/index.js');\n")).toEqual([
      'bcast/workspace-entries',
      'bcast/workspace-entries',
    ]);
  });

  it("a package's own src is fine", async () => {
    expect(await rules('packages/ws/test/x.test.ts', "import { X } from '../src/index.js';\nexport const Y = X;\n")).toEqual([]);
  });
});

describe('lint: exports, type imports and focused tests', () => {
  it.each([
    ['export default', 'export default function f(): void {}\n'],
    ['export { x as default }', 'const x = 1;\nexport { x as default };\n'],
    ['re-exported default', "export { default } from './y.js';\n"],
  ])('%s in packages/*/src fails', async (_, code) => {
    expect(await rules('packages/ws/src/x.ts', code)).toEqual(['no-restricted-exports']);
  });

  it.each(['@bcast/core', '@bcast/core/adapter', '@bcast/core/backplane'])('export * from %s fails', async (spec) => {
    expect(await rules('packages/ws/src/index.ts', `export * from '${spec}';\n`)).toEqual(['no-restricted-syntax']);
    expect(await rules('packages/ws/src/index.ts', `export * as core from '${spec}';\n`)).toEqual(['no-restricted-syntax']);
  });

  it('export * of its own modules is fine', async () => {
    expect(await rules('packages/core/src/index.ts', "export * from './errors/index.js';\n")).toEqual([]);
  });

  it('a value import used only as a type fails; `import { type X }` of types only fails', async () => {
    expect(await rules('packages/ws/src/x.ts', "import { WebSocket } from 'ws';\nexport type X = WebSocket;\n")).toEqual(['@typescript-eslint/consistent-type-imports']);
    expect(await rules('packages/ws/src/x.ts', "import { type WebSocket } from 'ws';\nexport type X = WebSocket;\n")).toEqual(['@typescript-eslint/no-import-type-side-effects']);
    expect(await rules('packages/ws/src/x.ts', "import type { WebSocket } from 'ws';\nimport { WebSocketServer, type ServerOptions } from 'ws';\nexport type X = WebSocket | ServerOptions;\nexport const S = WebSocketServer;\n")).toEqual([]);
  });

  it.each(['it.only', 'describe.only', 'test.only', 'it.only.each([1])', 'describe.concurrent.only', 'it.skipIf(false).only'])('%s in a test fails', async (call) => {
    const code = `import { describe, it, test } from 'vitest';\nvoid describe; void test;\n${call}('x', () => { it('y', () => {}); });\n`;
    expect(await rules('packages/ws/test/x.test.ts', code)).toEqual(['bcast/no-focused-tests']);
    expect(await rules('packages/core/src/x.test.ts', code)).toEqual(['bcast/no-focused-tests']);
    expect(await rules('tests/conformance/test/x.test.ts', code)).toEqual(['bcast/no-focused-tests']);
  });
});

describe('the repository', () => {
  it('passes the lint', async () => {
    const results = await eslint.lintFiles(['.']);
    const problems = results.flatMap((r) => r.messages.map((m) => `${r.filePath.slice(root.length)}:${m.line} ${m.ruleId ?? ''} ${m.message}`));
    expect(problems).toEqual([]);
  }, 60_000);
});

// ---- package.json house rules (scripts/check-manifests.mjs) ----

function runCheck(dir?: string): { code: number; output: string } {
  try {
    const output = execFileSync(process.execPath, [join(root, 'scripts/check-manifests.mjs'), ...(dir ? [dir] : [])], { encoding: 'utf8', stdio: 'pipe' });
    return { code: 0, output };
  } catch (error) {
    const e = error as { status: number; stderr: string };
    return { code: e.status, output: e.stderr };
  }
}

const sandboxes: string[] = [];
afterAll(() => {
  for (const dir of sandboxes) rmSync(dir, { recursive: true, force: true });
});

/** A copy of the packages' package.json, README and sources, to mutate. */
function sandbox(): string {
  const dir = mkdtempSync(join(tmpdir(), 'bcast-manifests-'));
  sandboxes.push(dir);
  for (const name of ['core', 'ws', 'socket.io', 'express', 'compat', 'redis']) {
    mkdirSync(join(dir, 'packages', name), { recursive: true });
    for (const file of ['package.json', 'README.md', 'src']) cpSync(join(root, 'packages', name, file), join(dir, 'packages', name, file), { recursive: true });
  }
  return dir;
}

function edit(dir: string, name: string, change: (pkg: Record<string, any>) => void): void {
  const path = join(dir, 'packages', name, 'package.json');
  const pkg = JSON.parse(readFileSync(path, 'utf8'));
  change(pkg);
  writeFileSync(path, JSON.stringify(pkg));
}

describe('package.json house rules', () => {
  it('the repository passes', () => {
    expect(runCheck()).toMatchObject({ code: 0 });
  });

  it('fails when core depends on anything but cockatiel', () => {
    const dir = sandbox();
    edit(dir, 'core', (pkg) => {
      pkg.dependencies.ws = '^8';
    });
    const r = runCheck(dir);
    expect(r.code).toBe(1);
    expect(r.output).toMatch(/lists "ws" as a dependency/);
  });

  it.each([
    ['not ESM-only', (pkg: Record<string, any>) => void (pkg.type = 'commonjs'), /"type" must be "module"/],
    ['sideEffects', (pkg: Record<string, any>) => void delete pkg.sideEffects, /"sideEffects" must be false/],
    ['engines', (pkg: Record<string, any>) => void (pkg.engines.node = '>=18'), /engines.node/],
    ['exports without types', (pkg: Record<string, any>) => void delete pkg.exports['.'].types, /needs "types" and "default"/],
    ['license', (pkg: Record<string, any>) => void (pkg.license = 'ISC'), /license must be MIT/],
    ['repository', (pkg: Record<string, any>) => void (pkg.repository.directory = 'packages/x'), /repository must be/],
    ['no keywords', (pkg: Record<string, any>) => void delete pkg.keywords, /needs keywords/],
    ['core as a dependency', (pkg: Record<string, any>) => void (pkg.dependencies = { '@bcast/core': 'workspace:^' }), /must be a peerDependency/],
    ['core not a peer', (pkg: Record<string, any>) => void delete pkg.peerDependencies['@bcast/core'], /peerDependencies\["@bcast\/core"\]/],
    ['workspace:*', (pkg: Record<string, any>) => void (pkg.devDependencies['@bcast/core'] = 'workspace:*'), /internal ranges are "workspace:\^"/],
  ])('fails on %s', (_, change, expected) => {
    const dir = sandbox();
    edit(dir, 'ws', change);
    const r = runCheck(dir);
    expect(r.code).toBe(1);
    expect(r.output).toMatch(expected);
  });
});

describe('package READMEs', () => {
  it('fail with a relative link', () => {
    const dir = sandbox();
    const readme = join(dir, 'packages/ws/README.md');
    writeFileSync(readme, `${readFileSync(readme, 'utf8')}\nSee [the docs](../../docs/PROTOCOL.md).\n`);
    const r = runCheck(dir);
    expect(r.code).toBe(1);
    expect(r.output).toMatch(/packages\/ws\/README\.md:\d+: relative link "\.\.\/\.\.\/docs\/PROTOCOL\.md"/);
  });
});

describe('@bcast/core', () => {
  it('VERSION matches package.json (the tracer and meter version)', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'packages/core/package.json'), 'utf8'));
    expect(VERSION).toBe(pkg.version);
  });
});
