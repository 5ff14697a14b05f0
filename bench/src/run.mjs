#!/usr/bin/env node
// pnpm bench [-- options]: the fan-out matrix. --scale: the connection-scale run. See README.md.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { aggregate, runLatency, runMatrix, runScale } from './harness.mjs';
import { fanoutMarkdown, machineFacts, scaleMarkdown, writeSection } from './report.mjs';
import { DEFAULT_VARIANTS, SCALE_VARIANTS, VARIANTS } from './variants.mjs';

const HELP = `usage: node src/run.mjs [options]

  --scale                 the connection-scale run instead of the fan-out matrix
  --all                   both: the fan-out matrix, then the scale run
  --quick                 a ~1 minute smoke run (also BENCH_QUICK=1)
  --variants a,b          variants (BENCH_VARIANTS); default: all of ${DEFAULT_VARIANTS.join(', ')}
  --clients 1000,5000     client counts N (BENCH_CLIENTS)
  --payloads 256,4k       payload sizes in bytes, k = KiB (BENCH_PAYLOADS)
  --reps 5                repetitions (BENCH_REPS)
  --deliveries 100000     deliveries per measured phase at least: M = deliveries / N broadcasts (BENCH_DELIVERIES)
  --min-phase-s 1         and a phase goes on, a burst at a time, until it has run this long, up to
                          20 M broadcasts (BENCH_MIN_PHASE_S)
  --burst 4               broadcasts due together, sent one after another in one tick (BENCH_BURST);
                          1: one broadcast per tick
  --window 8              broadcasts in flight: a burst goes out when the window has room for all of
                          it (BENCH_WINDOW)
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
  options: {
    scale: { type: 'boolean' },
    all: { type: 'boolean' },
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
const pick = (arg, name) => args[arg] ?? env[name];
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

const filtered = ['variants', 'clients', 'payloads', 'reps', 'deliveries', 'min-phase-s', 'window', 'burst', 'client', 'client-processes'].some((k) => args[k] !== undefined || env[`BENCH_${k.toUpperCase().replaceAll('-', '_')}`] !== undefined);
const variants = pick('variants', 'BENCH_VARIANTS') ? list(pick('variants', 'BENCH_VARIANTS')) : undefined;
for (const v of variants ?? []) if (!VARIANTS[v]) throw new Error(`unknown variant ${v}; known: ${Object.keys(VARIANTS).join(', ')}`);

const plan = {
  variants: variants ?? DEFAULT_VARIANTS,
  clients: pick('clients', 'BENCH_CLIENTS') ? list(pick('clients', 'BENCH_CLIENTS'), (s) => positive(s, 'clients')) : quick ? [1000] : [1000, 5000],
  payloads: pick('payloads', 'BENCH_PAYLOADS') ? list(pick('payloads', 'BENCH_PAYLOADS'), size) : [256, 4096],
  reps: positive(pick('reps', 'BENCH_REPS') ?? (quick ? 1 : 5), 'reps'),
  deliveries: positive(pick('deliveries', 'BENCH_DELIVERIES') ?? (quick ? 20_000 : 100_000), 'deliveries'),
  minPhaseMs: Number(pick('min-phase-s', 'BENCH_MIN_PHASE_S') ?? (quick ? 0.3 : 1)) * 1000,
  window: positive(pick('window', 'BENCH_WINDOW') ?? 8, 'window'),
  burst: positive(pick('burst', 'BENCH_BURST') ?? 4, 'burst'),
  client: clientKind(pick('client', 'BENCH_CLIENT') ?? 'lean'),
  latencyShare: Number(pick('latency-share', 'BENCH_LATENCY_SHARE') ?? 0.5),
  clientProcesses: positive(pick('client-processes', 'BENCH_CLIENT_PROCESSES') ?? 1, 'client-processes'),
  maxOtherLoad: Number(pick('max-other-load', 'BENCH_MAX_OTHER_LOAD') ?? 0.2),
  retries: Number(pick('retries', 'BENCH_RETRIES') ?? 2),
  minMessages: 10,
  budgetMs: positive(pick('budget-s', 'BENCH_BUDGET_S') ?? (quick ? 75 : 540), 'budget-s') * 1000,
  log: (line) => console.log(line),
};
if (plan.burst > plan.window) throw new Error(`--burst (${plan.burst}) must not exceed --window (${plan.window})`);
const scaleClients = positive(pick('scale-clients', 'BENCH_SCALE_CLIENTS') ?? (quick ? 2_000 : 10_000), 'scale-clients');
const scaleVariants = variants ?? SCALE_VARIANTS;

const resultsDir = new URL('../results/', import.meta.url);
const outFile = args.out ?? (quick || filtered ? new URL('last-run.md', resultsDir).pathname : new URL('../RESULTS.md', import.meta.url).pathname);
const extra = process.argv.slice(2).filter((a) => a !== '--scale');
const command = `${quick && !args.quick ? 'BENCH_QUICK=1 ' : ''}${args.scale ? 'pnpm --filter @bcast/bench bench:scale' : 'pnpm bench'}${extra.length ? ` -- ${extra.join(' ')}` : ''}`;
const write = args['no-write'] !== true;
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
if (write) mkdirSync(resultsDir, { recursive: true });

if (args.render) {
  const saved = JSON.parse(readFileSync(args.render, 'utf8'));
  const file = args.out ?? new URL('../RESULTS.md', import.meta.url).pathname;
  const markdown = saved.matrix
    ? fanoutMarkdown({ plan: saved.plan, matrix: saved.matrix, facts: saved.facts, command: saved.command ?? 'pnpm bench' })
    : scaleMarkdown({ scale: saved.scale, facts: saved.facts, command: saved.command ?? 'pnpm --filter @bcast/bench bench:scale' });
  console.log(markdown);
  if (write) {
    writeSection(file, saved.matrix ? 'fanout' : 'scale', markdown);
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
  const frame = aggregate(matrix.sessions.filter((s) => !s.error)).filter((c) => c.variant === 'ws-frame');
  const rateOf = (n, payloadBytes) => {
    const cell = frame.find((c) => c.clients === n && c.payloadBytes === payloadBytes);
    return cell ? (cell.deliveriesPerSec.median * plan.latencyShare) / n : undefined;
  };
  const reps = Math.min(3, plan.reps);
  console.log(`latency: ${variants.join(', ')} at ${Math.round(plan.latencyShare * 100)} % of raw frame-once's deliveries/s, ${reps} rep(s)`);
  // The whole run stays under 10 minutes: the matrix has budgetMs, the latency run 60 s more.
  const deadline = runStarted + plan.budgetMs + 60_000;
  const run = await runLatency({ variants, clients: plan.clients, payloads: plan.payloads, reps, rateOf, seconds: 4, deadline, client: plan.client, log: plan.log });
  return { ...run, variants, reps, loadShare: plan.latencyShare };
}

const runStarted = performance.now();
let failures = 0;
const doFanout = args.scale !== true || args.all === true;
const doScale = args.scale === true || args.all === true;

if (doFanout) {
  const facts = machineFacts();
  console.log(`fan-out: ${plan.variants.length} variants x N ${plan.clients.join('/')} x ${plan.payloads.map(String).join('/')} B x ${plan.reps} rep(s), ${plan.deliveries} deliveries and ${plan.minPhaseMs / 1000} s per phase at least, window ${plan.window}, bursts of ${plan.burst}, ${plan.client} clients`);
  const matrix = await runMatrix(plan);
  if (plan.latencyShare > 0) matrix.latency = await latencyRun(matrix);
  failures += matrix.sessions.filter((s) => s.error).length + (matrix.latency?.sessions.filter((s) => s.error).length ?? 0);
  const markdown = fanoutMarkdown({ plan, matrix, facts, command });
  console.log(`\n${markdown}\n`);
  if (write) {
    const { log: _log, ...planData } = plan;
    writeFileSync(new URL(`fanout-${stamp}.json`, resultsDir), JSON.stringify({ command, facts, plan: planData, matrix }, null, 1));
    writeSection(outFile, 'fanout', markdown);
    console.log(`wrote ${outFile}`);
  }
}

if (doScale) {
  const facts = machineFacts();
  console.log(`scale: ${scaleVariants.join(', ')} with ${scaleClients} idle connections each`);
  const scale = await runScale({ variants: scaleVariants, clients: scaleClients, client: plan.client, log: plan.log });
  failures += scale.results.filter((s) => s.error).length;
  const markdown = scaleMarkdown({ scale, facts, command });
  console.log(`\n${markdown}\n`);
  if (write) {
    writeFileSync(new URL(`scale-${stamp}.json`, resultsDir), JSON.stringify({ command, facts, scale }, null, 1));
    writeSection(outFile, 'scale', markdown);
    console.log(`wrote ${outFile}`);
  }
}

if (failures > 0) {
  console.error(`${failures} session(s) failed; see above`);
  process.exitCode = 1;
}
