import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { baselineDir, resolveRef, workspacePackages } from '../src/baseline.mjs';
import { windowFor } from '../src/harness.mjs';
import { RENOVATION_TARGETS, beforeAfterLines, evaluateTargets, memoryTargets, scrubPaths, writeSection } from '../src/report.mjs';
import { Unavailable, baseName, beforeName, distLoader, hasBefore, isBefore, resolveVariant, withBefore } from '../src/variants.mjs';

const tmp = mkdtempSync(join(os.tmpdir(), 'bcast-bench-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A checkout with fake built packages: a Broadcaster and attachToServer that record their calls. */
function fakeCheckout() {
  const root = join(tmp, 'checkout');
  const write = (dir: string, name: string, code: string) => {
    mkdirSync(join(root, 'packages', dir, 'dist'), { recursive: true });
    writeFileSync(join(root, 'packages', dir, 'package.json'), JSON.stringify({ name, type: 'module' }));
    writeFileSync(join(root, 'packages', dir, 'dist', 'index.js'), code);
  };
  write(
    'core',
    '@bcast/core',
    `export const calls = [];
     export class Broadcaster {
       constructor(options) { this.options = options; this.connections = new Map([['c1', {}]]); calls.push('new Broadcaster'); }
       toAll(message) { calls.push('toAll ' + message.seq); return Promise.resolve({ delivered: 1 }); }
       dispose() { calls.push('broadcaster.dispose'); return Promise.resolve(); }
     }`,
  );
  write(
    'ws',
    '@bcast/ws',
    `import { calls } from '../../core/dist/index.js';
     export function attachToServer(broadcaster, wss, options) {
       calls.push('attachToServer ' + JSON.stringify(options ?? {}));
       return { dispose() { calls.push('adapter.dispose'); return Promise.resolve(); } };
     }`,
  );
  return root;
}

describe('before/after plumbing', () => {
  it('names the @before twins of the @bcast variants only', () => {
    expect(withBefore(['ws-frame', 'bcast-ws', 'bcast-compat'])).toEqual(['ws-frame', 'bcast-ws', 'bcast-ws@before', 'bcast-compat', 'bcast-compat@before']);
    expect(withBefore(['ws-naive', 'socketio-emit'])).toEqual(['ws-naive', 'socketio-emit']);
    // a list that names a twin already is taken as it is
    expect(withBefore(['ws-frame', 'bcast-ws@before'])).toEqual(['ws-frame', 'bcast-ws@before']);
    expect(isBefore('bcast-socketio@before')).toBe(true);
    expect(baseName('bcast-socketio@before')).toBe('bcast-socketio');
    expect(beforeName('bcast-ws')).toBe('bcast-ws@before');
    expect(beforeName('bcast-ws@before')).toBe('bcast-ws@before');
    expect(hasBefore('ws-frame')).toBe(false);
    expect(hasBefore('bcast-ws-otel')).toBe(true);
    expect(resolveVariant('ws-frame@before')).toBeUndefined();
    expect(resolveVariant('no-such@before')).toBeUndefined();
    const twin = resolveVariant('bcast-compat@before')!;
    expect(twin).toMatchObject({ name: 'bcast-compat@before', label: '@bcast/compat on ws (before)', transport: 'ws', before: true });
  });

  it('creates a @before variant from the dist of the given checkout, and not without one', async () => {
    const root = fakeCheckout();
    const core = await distLoader(join(root, 'packages'))('@bcast/core', 'core');
    const server = createServer();
    const instance = await resolveVariant('bcast-ws-nocoalesce@before', { baselineDir: root })!.create(server);
    expect(instance.connections()).toBe(1);
    await instance.broadcast({ seq: 7 });
    await instance.close();
    expect(core.calls).toEqual(['new Broadcaster', 'attachToServer {"coalesce":false}', 'toAll 7', 'adapter.dispose', 'broadcaster.dispose']);

    await expect(resolveVariant('bcast-ws@before')!.create(server)).rejects.toBeInstanceOf(Unavailable);
    await expect(resolveVariant('bcast-compat@before', { baselineDir: root })!.create(server)).rejects.toThrow(/not built in the baseline/);
    expect(workspacePackages(root)).toEqual({ '@bcast/core': 'core', '@bcast/ws': 'ws' });
  });

  it('keeps the baseline worktree in the temp dir, named by its commit', () => {
    const hash = '871779b6be220da298929360a927819740605331';
    expect(baselineDir(hash, '/some/tmp')).toBe('/some/tmp/bcast-bench-baseline-871779b6be22');
    expect(baselineDir(hash).startsWith(os.tmpdir())).toBe(true);
    expect(() => baselineDir('../etc')).toThrow(/not a commit hash/);
    const head = resolveRef('HEAD');
    expect(head.hash).toMatch(/^[0-9a-f]{40}$/);
    expect(() => resolveRef('--upload-pack=x')).toThrow(/bad git ref/);
    expect(() => resolveRef('no-such-ref-anywhere')).toThrow(/no such commit/);
  });

  it('gives bursts of 10 a window of two bursts', () => {
    expect(windowFor(1)).toBe(8);
    expect(windowFor(4)).toBe(8);
    expect(windowFor(10)).toBe(20);
    expect(windowFor(10, 12)).toBe(12);
    expect(() => windowFor(10, 8)).toThrow(/must not exceed/);
  });
});

/** A cell as aggregate() makes it, with one repetition. */
function cell(variant: string, burst: number, payloadBytes: number, cpu: number, rate: number, p99 = 10) {
  const m = (x: number) => ({ median: x, min: x, max: x });
  return {
    variant,
    burst,
    clients: 1000,
    payloadBytes,
    runs: [{ rep: 0, serverCpuUsPerDelivery: cpu, deliveriesPerSec: rate, p99Ms: p99 }],
    serverCpuUsPerDelivery: m(cpu),
    deliveriesPerSec: m(rate),
    p99Ms: m(p99),
  };
}

describe('the renovation report', () => {
  const cells = [
    ...[256, 4096].flatMap((p) => [cell('ws-frame', 1, p, 4, 100_000), cell('bcast-ws', 1, p, 4.1, 98_000), cell('bcast-ws@before', 1, p, 4.6, 90_000), cell('bcast-compat', 1, p, 4.4, 95_000)]),
    cell('ws-frame', 10, 256, 4, 100_000),
    cell('bcast-ws', 10, 256, 1.2, 320_000),
    cell('bcast-ws@before', 10, 256, 2, 200_000),
  ];

  it('judges the per-message CPU and the bursts of 10, and reports before and compat', () => {
    const rows = evaluateTargets(cells, {}, RENOVATION_TARGETS);
    const wsCpu = rows.filter((r) => r.id === 'ws-permsg-cpu');
    expect(wsCpu.map((r) => [r.payloadBytes, r.burst, r.result])).toEqual([
      [256, 1, 'pass'],
      [4096, 1, 'pass'],
    ]);
    expect(wsCpu[0]!.ratio).toBeCloseTo(1.025);
    expect(wsCpu[0]!.beforeRatio).toBeCloseTo(1.15);
    expect(wsCpu[0]!.afterOverBefore).toBeCloseTo(4.1 / 4.6);
    expect(rows.filter((r) => r.id === 'compat-permsg-cpu').map((r) => r.result)).toEqual(['reported', 'reported']);
    const burst = rows.find((r) => r.id === 'ws-burst10-rate')!;
    expect(burst).toMatchObject({ burst: 10, payloadBytes: 256, result: 'pass' });
    expect(burst.ratio).toBeCloseTo(3.2);
    expect(burst.beforeRatio).toBeCloseTo(2);
    // compat did not run in bursts of 10: n/a, not a failure
    expect(rows.find((r) => r.id === 'compat-burst10-rate')).toMatchObject({ result: 'n/a' });
    // a run without bursts of 10 says so
    const only1 = evaluateTargets(cells.filter((c) => c.burst === 1), {}, RENOVATION_TARGETS);
    expect(only1.find((r) => r.id === 'ws-burst10-rate')).toMatchObject({ result: 'n/a', note: 'no `--burst 10` cells in this run' });
  });

  it('tabulates before and after per cell, against raw frame-once', () => {
    const lines = beforeAfterLines({ variants: ['ws-frame', 'bcast-ws', 'bcast-ws@before'], clients: [1000], payloads: [256, 4096] }, cells, [1, 10]);
    const row = lines.find((l) => l.startsWith('| burst 1, 1,000, 256 B | @bcast/ws |'))!;
    expect(row).toContain('4.60 → 4.10 | 0.89x');
    expect(row).toContain('1.15x → 1.02x');
    expect(lines.some((l) => l.startsWith('| bursts of 10, 1,000, 256 B | @bcast/ws | 2.00 → 1.20 | 0.60x | 200,000 → 320,000 | 1.60x'))).toBe(true);
    expect(lines.some((l) => l.includes('bursts of 10, 1,000, 4 KiB'))).toBe(false);
  });

  it('judges idle memory per connection against raw ws + 1.1 KiB, and reports the baseline', () => {
    const at = (variant: string, heap: number, rss: number) => ({ variant, memory: { heapPerConnection: heap, rssPerConnection: rss }, phases: [] });
    const scale = { results: [at('ws-frame', 2500, 6000), at('bcast-ws', 3500, 7300), at('bcast-ws@before', 3600, 7100)] };
    const rows = memoryTargets(scale, 1.1 * 1024);
    expect(rows.map((r) => [r.variant, r.measure, r.result])).toEqual([
      ['bcast-ws', 'heap', 'pass'],
      ['bcast-ws', 'RSS', 'FAIL'],
      ['bcast-ws@before', 'heap', 'reported'],
      ['bcast-ws@before', 'RSS', 'reported'],
    ]);
  });

  it("keeps this machine's paths out of what it writes", () => {
    const error = "Cannot find module '/r/main/packages/ws/dist/index.js' imported from file:///r/main/bench/src/variants.mjs; worktree /t/x/bcast-bench-baseline-871779b6be22";
    expect(scrubPaths(error, '/r/main/', '/t/x')).toBe("Cannot find module 'packages/ws/dist/index.js' imported from bench/src/variants.mjs; worktree $TMPDIR/bcast-bench-baseline-871779b6be22");
  });

  it('writes its section above the earlier results and keeps them', () => {
    const file = join(tmp, 'RESULTS.md');
    writeSection(file, 'fanout', 'fan-out 1');
    writeSection(file, 'scale', 'scale 1');
    writeSection(file, 'renovation', 'renovation 1');
    writeSection(file, 'renovation', 'renovation 2');
    const text = readFileSync(file, 'utf8');
    expect(text.indexOf('renovation 2')).toBeLessThan(text.indexOf('fan-out 1'));
    expect(text.indexOf('fan-out 1')).toBeLessThan(text.indexOf('scale 1'));
    expect(text).not.toContain('renovation 1');
  });
});
