#!/usr/bin/env node
// pnpm bench [-- options]: the fan-out matrix. --scale: the connection-scale run.
// --renovation: before and after for "The core, renovated" (bench:renovation). See README.md.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { REPO_ROOT, buildPackages, prepareBaseline, removeBaseline } from './baseline.mjs';
import { aggregate, runLatency, runMatrix, runScale, windowFor } from './harness.mjs';
import { fanoutMarkdown, machineFacts, renovationMarkdown, scaleMarkdown, writeSection } from './report.mjs';
import { DEFAULT_VARIANTS, SCALE_VARIANTS, VARIANTS, isBefore, resolveVariant, withBefore } from './variants.mjs';

/** bench:renovation: the issue's cells, within 10 minutes on a 2-core machine. */
const RENOVATION = {
  variants: ['ws-frame', 'bcast-ws', 'bcast-compat'],
  clients: '1000',
  payloads: '256,4k',
  burst: '1,10',
  reps: '5',
  deliveries: '100000',
  'min-phase-s': '1',
  'latency-share': '0',
  'scale-clients': '10000',
  scaleVariants: ['ws-frame', 'bcast-ws', 'bcast-compat'],
  'total-s': 570,
  /** kept for bench:send and the scale run */
  reserveS: 90,
  send: { payloads: [256, 4096], rounds: 400, gapMs: 4 },
};
/** The baseline bench:renovation's script names (package.json), left out of the recorded command. */
const RENOVATION_BASELINE = '871779b';

const HELP = `usage: node src/run.mjs [options]

  --scale                 the connection-scale run instead of the fan-out matrix
  --all                   both: the fan-out matrix, then the scale run
  --renovation            what "The core, renovated" needs, before and after (bench:renovation):
                          ${RENOVATION.variants.join(', ')} and their @before twins, N = ${RENOVATION.clients},
                          ${RENOVATION.payloads}, --burst ${RENOVATION.burst}, ${RENOVATION.reps} reps, then
                          bench:send and a scale run of ${RENOVATION['scale-clients']}; at most ${RENOVATION['total-s']} s in all.
                          The other options still apply; its section of RESULTS.md is "The core, renovated"
  --baseline REF          a git ref to compare with (BENCH_BASELINE): a worktree of it in the temp dir,
                          installed and built, and a \`<variant>@before\` twin of every @bcast variant
                          on its packages, run next to the current one
  --baseline-cleanup      remove that worktree afterwards (default: keep it for the next run of the
                          same commit) (BENCH_BASELINE_CLEANUP=1)
  --no-build              --renovation: do not build this checkout's packages first
  --quick                 a ~1 minute smoke run (also BENCH_QUICK=1)
  --variants a,b          variants (BENCH_VARIANTS); default: all of ${DEFAULT_VARIANTS.join(', ')}
  --clients 1000,5000     client counts N (BENCH_CLIENTS)
  --payloads 256,4k       payload sizes in bytes, k = KiB (BENCH_PAYLOADS)
  --reps 5                repetitions (BENCH_REPS)
  --deliveries 100000     deliveries per measured phase at least: M = deliveries / N broadcasts (BENCH_DELIVERIES)
  --min-phase-s 1         and a phase goes on, a burst at a time, until it has run this long, up to
                          20 M broadcasts (BENCH_MIN_PHASE_S)
  --burst 4               broadcasts due together, sent one after another in one tick (BENCH_BURST);
                          1: one broadcast per tick; a list (1,10) runs each, interleaved per repetition
  --window 8              broadcasts in flight: a burst goes out when the window has room for all of
                          it (BENCH_WINDOW); default: two bursts, at least 8
  --latency-share 0.5     after the matrix, raw frame-once and @bcast/ws again at a fixed rate: this
                          share of raw frame-once's deliveries/s; 0 skips it (BENCH_LATENCY_SHARE)
  --client-processes 1    client-load processes sharing the N clients (BENCH_CLIENT_PROCESSES)
  --client lean           the clients: lean (a minimal WebSocket/engine.io client, src/lean-client.mjs)
                          or library (ws and socket.io-client) (BENCH_CLIENT)
  --budget-s 540          stop starting sessions after this many seconds (BENCH_BUDGET_S)
  --max-other-load 0.2    a session is disturbed when more than this share of the machine's CPU
                          went to other processes during a phase (BENCH_MAX_OTHER_LOAD)
  --retries 2             re-runs of a disturbed session, within the budget (BENCH_RETRIES)
  --scale-clients 10000   idle connections in the scale run (BENCH_SCALE_CLIENTS)
  --out FILE              markdown file to update (default: RESULTS.md for a full default run,
                          results/last-run.md for a quick or filtered run)
  --no-write              print only
  --render FILE           no run: rewrite the markdown from a saved results/*.json
`;

const { values: args } = parseArgs({
  // `pnpm bench -- --x` hands the `--` on: options follow it all the same
  args: process.argv.slice(2).filter((a) => a !== '--'),
  options: {
    scale: { type: 'boolean' },
    all: { type: 'boolean' },
    renovation: { type: 'boolean' },
    baseline: { type: 'string' },
    'baseline-cleanup': { type: 'boolean' },
    'no-build': { type: 'boolean' },
    quick: { type: 'boolean' },
    variants: { type: 'string' },
    clients: { type: 'string' },
    payloads: { type: 'string' },
    reps: { type: 'string' },
    deliveries: { type: 'string' },
    'min-phase-s': { type: 'string' },
    window: { type: 'string' },
    burst: { type: 'string' },
    client: { type: 'string' },
    'client-processes': { type: 'string' },
    'latency-share': { type: 'string' },
    'budget-s': { type: 'string' },
    'max-other-load': { type: 'string' },
    retries: { type: 'string' },
    'scale-clients': { type: 'string' },
    out: { type: 'string' },
    'no-write': { type: 'boolean' },
    render: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
  allowPositionals: false,
});
if (args.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

const env = process.env;
const quick = args.quick === true || env.BENCH_QUICK === '1' || env.BENCH_QUICK === 'true';
const renovation = args.renovation === true;
/** An option, else its environment variable, else (with --renovation) the preset's value. */
const pick = (arg, name) => args[arg] ?? env[name] ?? (renovation && typeof RENOVATION[arg] === 'string' ? RENOVATION[arg] : undefined);
const list = (text, parse = String) => text.split(',').map((s) => s.trim()).filter(Boolean).map(parse);
const size = (s) => {
  const m = /^(\d+(?:\.\d+)?)\s*(k|kib|kb)?$/i.exec(s);
  if (!m) throw new Error(`bad payload size ${s}`);
  return Math.round(Number(m[1]) * (m[2] ? 1024 : 1));
};
const positive = (s, what) => {
  const n = Number(s);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${what} must be a positive number, got ${s}`);
  return n;
};

const clientKind = (s) => {
  if (s !== 'lean' && s !== 'library') throw new Error(`--client must be lean or library, got ${s}`);
  return s;
};

const filtered = ['variants', 'clients', 'payloads', 'reps', 'deliveries', 'min-phase-s', 'window', 'burst', 'client', 'client-processes', 'scale-clients'].some((k) => args[k] !== undefined || env[`BENCH_${k.toUpperCase().replaceAll('-', '_')}`] !== undefined);
const variants = pick('variants', 'BENCH_VARIANTS') ? list(pick('variants', 'BENCH_VARIANTS')) : renovation ? RENOVATION.variants : undefined;
for (const v of variants ?? []) {
  if (!resolveVariant(v)) throw new Error(`unknown variant ${v}; known: ${Object.keys(VARIANTS).join(', ')}, and <name>@before of the @bcast ones with --baseline`);
}
const baselineRef = args.baseline ?? env.BENCH_BASELINE;
if (!baselineRef && (variants ?? []).some(isBefore)) throw new Error('a @before variant needs --baseline <git-ref>');
const twins = (names) => (baselineRef ? withBefore(names) : names);
const bursts = list(pick('burst', 'BENCH_BURST') ?? '4', (s) => positive(s, 'burst'));
const window = pick('window', 'BENCH_WINDOW') === undefined ? undefined : positive(pick('window', 'BENCH_WINDOW'), 'window');
for (const b of bursts) windowFor(b, window); // throws when a burst exceeds the window

const plan = {
  variants: twins(variants ?? DEFAULT_VARIANTS),
  clients: pick('clients', 'BENCH_CLIENTS') ? list(pick('clients', 'BENCH_CLIENTS'), (s) => positive(s, 'clients')) : quick ? [1000] : [1000, 5000],
  payloads: pick('payloads', 'BENCH_PAYLOADS') ? list(pick('payloads', 'BENCH_PAYLOADS'), size) : [256, 4096],
  reps: positive(pick('reps', 'BENCH_REPS') ?? (quick ? 1 : 5), 'reps'),
  deliveries: positive(pick('deliveries', 'BENCH_DELIVERIES') ?? (quick ? 20_000 : 100_000), 'deliveries'),
  minPhaseMs: Number(pick('min-phase-s', 'BENCH_MIN_PHASE_S') ?? (quick ? 0.3 : 1)) * 1000,
  // one burst size: a number, as before; several: the list (and the window of each, when not given)
  window: window ?? (bursts.length === 1 ? windowFor(bursts[0]) : undefined),
  burst: bursts.length === 1 ? bursts[0] : bursts,
  client: clientKind(pick('client', 'BENCH_CLIENT') ?? 'lean'),
  latencyShare: Number(pick('latency-share', 'BENCH_LATENCY_SHARE') ?? 0.5),
  clientProcesses: positive(pick('client-processes', 'BENCH_CLIENT_PROCESSES') ?? 1, 'client-processes'),
  maxOtherLoad: Number(pick('max-other-load', 'BENCH_MAX_OTHER_LOAD') ?? 0.2),
  retries: Number(pick('retries', 'BENCH_RETRIES') ?? 2),
  minMessages: 10,
  budgetMs: positive(pick('budget-s', 'BENCH_BUDGET_S') ?? (quick ? 75 : renovation ? RENOVATION['total-s'] : 540), 'budget-s') * 1000,
  log: (line) => console.log(line),
};
const scaleClients = positive(pick('scale-clients', 'BENCH_SCALE_CLIENTS') ?? (quick ? 2_000 : 10_000), 'scale-clients');
const scaleVariants = twins(renovation ? (pick('variants', 'BENCH_VARIANTS') ? variants : RENOVATION.scaleVariants) : (variants ?? SCALE_VARIANTS));

const resultsDir = new URL('../results/', import.meta.url);
const outFile = args.out ?? (quick || filtered ? new URL('last-run.md', resultsDir).pathname : new URL('../RESULTS.md', import.meta.url).pathname);
const argv = process.argv.slice(2).filter((a) => a !== '--');
const command = renovation ? renovationCommand(argv) : `${quick && !args.quick ? 'BENCH_QUICK=1 ' : ''}${args.scale ? 'pnpm --filter @bcast/bench bench:scale' : 'pnpm bench'}${argv.filter((a) => a !== '--scale').length ? ` -- ${argv.filter((a) => a !== '--scale').join(' ')}` : ''}`;

/** The command as one would type it: the package script, and what was added to it. */
function renovationCommand(list) {
  const rest = list.filter((a) => a !== '--renovation');
  if (rest[0] === '--baseline' && rest[1] === RENOVATION_BASELINE) rest.splice(0, 2);
  const env = baselineRef && !args.baseline ? `BENCH_BASELINE=${baselineRef} ` : '';
  return `${env}pnpm --filter @bcast/bench bench:renovation${rest.length ? ` ${rest.join(' ')}` : ''}`;
}
const write = args['no-write'] !== true;
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
if (write) mkdirSync(resultsDir, { recursive: true });

if (args.render) {
  const saved = JSON.parse(readFileSync(args.render, 'utf8'));
  const file = args.out ?? new URL('../RESULTS.md', import.meta.url).pathname;
  const section = saved.renovation ? 'renovation' : saved.matrix ? 'fanout' : 'scale';
  const markdown = saved.renovation
    ? renovationMarkdown(saved)
    : saved.matrix
      ? fanoutMarkdown({ plan: saved.plan, matrix: saved.matrix, facts: saved.facts, command: saved.command ?? 'pnpm bench' })
      : scaleMarkdown({ scale: saved.scale, facts: saved.facts, command: saved.command ?? 'pnpm --filter @bcast/bench bench:scale' });
  console.log(markdown);
  if (write) {
    writeSection(file, section, markdown);
    console.log(`wrote ${file}`);
  }
  process.exit(0);
}

/**
 * The fixed-rate latency run: raw frame-once and @bcast/ws (those of the plan's variants), at
 * `latencyShare` of the deliveries/s raw frame-once reached in the matrix, 3 repetitions.
 */
async function latencyRun(matrix) {
  const variants = ['ws-frame', 'bcast-ws'].filter((v) => plan.variants.includes(v));
  const firstBurst = Array.isArray(plan.burst) ? plan.burst[0] : plan.burst;
  const frame = aggregate(matrix.sessions.filter((s) => !s.error)).filter((c) => c.variant === 'ws-frame' && c.burst === firstBurst);
  const rateOf = (n, payloadBytes) => {
    const cell = frame.find((c) => c.clients === n && c.payloadBytes === payloadBytes);
    return cell ? (cell.deliveriesPerSec.median * plan.latencyShare) / n : undefined;
  };
  const reps = Math.min(3, plan.reps);
  console.log(`latency: ${variants.join(', ')} at ${Math.round(plan.latencyShare * 100)} % of raw frame-once's deliveries/s, ${reps} rep(s)`);
  // The whole run stays under 10 minutes: the matrix has budgetMs, the latency run 60 s more.
  const deadline = runStarted + plan.budgetMs + 60_000;
  const run = await runLatency({ variants, clients: plan.clients, payloads: plan.payloads, reps, rateOf, seconds: 4, deadline, client: plan.client, baselineDir: plan.baselineDir, log: plan.log });
  return { ...run, variants, reps, loadShare: plan.latencyShare };
}

const runStarted = performance.now();
let failures = 0;
const doFanout = args.scale !== true || args.all === true || renovation;
const doScale = args.scale === true || args.all === true || renovation;

/** The baseline's worktree (installed and built), when there is one. */
let baseline;
if (baselineRef) {
  baseline = prepareBaseline(baselineRef, { log: plan.log });
  plan.baselineDir = baseline.dir;
}
if (renovation && args['no-build'] !== true) {
  console.log("this checkout's packages:");
  buildPackages(REPO_ROOT, plan.log);
}
/** What is saved and rendered: never a path of this machine. */
const baselineFacts = baseline && { ref: baseline.ref, hash: baseline.hash, subject: baseline.subject };
const planData = () => {
  const { log: _log, baselineDir: _dir, ...data } = plan;
  return { ...data, ...(baselineFacts ? { baseline: baselineFacts } : {}) };
};

if (renovation) {
  const facts = machineFacts();
  const head = checkoutHead();
  // The matrix gets what the budget leaves after the baseline, the build, bench:send and the scale run.
  plan.budgetMs = Math.max(60_000, plan.budgetMs - (performance.now() - runStarted) - RENOVATION.reserveS * 1000);
  console.log(`renovation: ${plan.variants.join(', ')} x N ${plan.clients.join('/')} x ${plan.payloads.join('/')} B x bursts of ${[plan.burst].flat().join(' and ')} x ${plan.reps} rep(s), ${Math.round(plan.budgetMs / 1000)} s for the matrix`);
  const matrix = await runMatrix(plan);
  const send = [];
  for (const payloadBytes of RENOVATION.send.payloads.filter((p) => plan.payloads.includes(p))) {
    const r = await sendPath({ n: plan.clients[0], payloadBytes });
    if (r) send.push(r);
  }
  console.log(`scale: ${scaleVariants.join(', ')} with ${scaleClients} idle connections each`);
  const scale = await runScale({ variants: scaleVariants, clients: scaleClients, client: plan.client, baselineDir: plan.baselineDir, log: plan.log });
  failures += matrix.sessions.filter((s) => s.error).length + scale.results.filter((s) => s.error).length;
  const saved = { renovation: true, command, facts, plan: planData(), matrix, scale, send, baseline: baselineFacts, head, elapsedMs: performance.now() - runStarted };
  const markdown = renovationMarkdown(saved);
  console.log(`\n${markdown}\n`);
  if (write) {
    writeFileSync(new URL(`renovation-${stamp}.json`, resultsDir), JSON.stringify(saved, null, 1));
    writeSection(outFile, 'renovation', markdown);
    console.log(`wrote ${outFile}`);
  }
} else {
  if (doFanout) {
    const facts = machineFacts();
    console.log(`fan-out: ${plan.variants.length} variants x N ${plan.clients.join('/')} x ${plan.payloads.map(String).join('/')} B x ${plan.reps} rep(s), ${plan.deliveries} deliveries and ${plan.minPhaseMs / 1000} s per phase at least, ${[plan.burst].flat().map((b) => `bursts of ${b}, window ${windowFor(b, window)}`).join('; ')}, ${plan.client} clients`);
    const matrix = await runMatrix(plan);
    if (plan.latencyShare > 0) matrix.latency = await latencyRun(matrix);
    failures += matrix.sessions.filter((s) => s.error).length + (matrix.latency?.sessions.filter((s) => s.error).length ?? 0);
    const markdown = fanoutMarkdown({ plan, matrix, facts, command, head: baselineFacts ? [`- Before: \`${baselineFacts.ref}\` (${baselineFacts.hash.slice(0, 9)}, "${baselineFacts.subject}"): the \`(before)\` rows are the same server code on that commit's packages, built in a temporary git worktree.`] : [] });
    console.log(`\n${markdown}\n`);
    if (write) {
      writeFileSync(new URL(`fanout-${stamp}.json`, resultsDir), JSON.stringify({ command, facts, plan: planData(), matrix }, null, 1));
      writeSection(outFile, 'fanout', markdown);
      console.log(`wrote ${outFile}`);
    }
  }

  if (doScale) {
    const facts = machineFacts();
    console.log(`scale: ${scaleVariants.join(', ')} with ${scaleClients} idle connections each`);
    const scale = await runScale({ variants: scaleVariants, clients: scaleClients, client: plan.client, baselineDir: plan.baselineDir, log: plan.log });
    failures += scale.results.filter((s) => s.error).length;
    const markdown = scaleMarkdown({ scale, facts, command });
    console.log(`\n${markdown}\n`);
    if (write) {
      writeFileSync(new URL(`scale-${stamp}.json`, resultsDir), JSON.stringify({ command, facts, scale }, null, 1));
      writeSection(outFile, 'scale', markdown);
      console.log(`wrote ${outFile}`);
    }
  }
}

if (baseline && (args['baseline-cleanup'] === true || env.BENCH_BASELINE_CLEANUP === '1')) {
  removeBaseline(baseline.dir);
  console.log(`removed the baseline worktree ${baseline.dir}`);
}

if (failures > 0) {
  console.error(`${failures} session(s) failed; see above`);
  process.exitCode = 1;
}

/** This checkout's commit, and whether its packages have uncommitted changes. */
function checkoutHead() {
  try {
    const hash = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'packages'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim() !== '';
    return { hash, dirty };
  } catch {
    return undefined;
  }
}

/**
 * bench:send (src/send-path.mjs) in its own process, with the baseline's @bcast/ws as a third
 * side: the per-message path, interleaved. Undefined when it fails (the run goes on).
 */
async function sendPath({ n, payloadBytes }) {
  const { rounds, gapMs } = RENOVATION.send;
  const script = fileURLToPath(new URL('./send-path.mjs', import.meta.url));
  const argsOut = [script, String(n), String(rounds), String(gapMs), '--payload', String(payloadBytes), '--json', ...(plan.baselineDir ? ['--baseline-dir', plan.baselineDir] : [])];
  console.log(`bench:send: N = ${n}, ${payloadBytes} B, ${rounds} broadcasts`);
  const child = spawn(process.execPath, argsOut, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const code = await new Promise((resolve) => child.on('close', resolve));
  clearTimeout(timer);
  for (const line of err.trim().split('\n').filter(Boolean)) console.log(`  ${line}`);
  const last = out.trim().split('\n').pop();
  if (code !== 0 || !last?.startsWith('{')) {
    console.log(`  bench:send failed (${code}); left out`);
    failures += 1;
    return undefined;
  }
  return JSON.parse(last);
}
