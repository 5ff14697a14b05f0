// Markdown for RESULTS.md: machine facts, tables, and the issue's targets as ratios with pass/fail.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { median, range } from './common.mjs';
import { aggregate } from './harness.mjs';
import { BEFORE, baseName, beforeName, hasBefore, isBefore, resolveVariant } from './variants.mjs';

const require = createRequire(import.meta.url);

export function machineFacts() {
  const cpus = os.cpus();
  const version = (name) => {
    try {
      return require(`${name}/package.json`).version;
    } catch {
      return 'not installed';
    }
  };
  return {
    date: new Date().toISOString(),
    cpuModel: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memoryGiB: os.totalmem() / 2 ** 30,
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    loadAverage: os.loadavg(),
    versions: { ws: version('ws'), 'socket.io': version('socket.io'), 'socket.io-client': version('socket.io-client'), '@opentelemetry/sdk-trace-base': version('@opentelemetry/sdk-trace-base') },
  };
}

const int = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a');
const fix = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const mib = (x) => (Number.isFinite(x) ? (x / 2 ** 20).toFixed(0) : 'n/a');
const kib = (x) => (Number.isFinite(x) ? (x / 1024).toFixed(2) : 'n/a');
const pct = (x) => (Number.isFinite(x) ? `${Math.round(x * 100)} %` : 'n/a');
/** Two decimals, three when that is what separates a ratio from its threshold. */
const ratioText = (r, threshold) => (Math.abs(r - threshold) < 0.01 && r.toFixed(2) === threshold.toFixed(2) ? r.toFixed(3) : r.toFixed(2));
const bytes = (b) => (b >= 1024 && b % 1024 === 0 ? `${b / 1024} KiB` : `${b} B`);
const label = (name) => resolveVariant(name)?.label ?? name;
const spread = (m, f) => (m.min === m.max ? f(m.median) : `${f(m.median)} (${f(m.min)}..${f(m.max)})`);

function machineLines(facts, command, elapsedMs, otherLoadColumn = true) {
  const v = facts.versions;
  return [
    `- Date: ${facts.date.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}; command: \`${command}\`; took ${(elapsedMs / 60_000).toFixed(1)} min.`,
    `- Machine: ${facts.cpuModel}, ${facts.cores} cores, ${facts.memoryGiB.toFixed(1)} GiB RAM, ${facts.os}; Node ${facts.node}; ws ${v.ws}, socket.io ${v['socket.io']}, socket.io-client ${v['socket.io-client']}, @opentelemetry/sdk-trace-base ${v['@opentelemetry/sdk-trace-base']}.`,
    `- Load average when the run started: ${facts.loadAverage.map((x) => x.toFixed(2)).join(' / ')}. The server, the clients and anything else running share these ${facts.cores} cores${otherLoadColumn ? ': the "other load" column is the share of the machine\'s CPU time that neither bench process used during the phase' : ''}. Treat differences under ~10 % as noise.`,
  ];
}

// ---- fan-out ---------------------------------------------------------------------------------

/**
 * A target: A's `metric` over B's, against `threshold`, in every cell that `payload` and `burst`
 * (when given) pick. `ceiling`: a variant whose ratio to B is shown for context; `pooled`: the
 * ratio of the pooled p99s; `extra`: our own check, counted apart; `report`: shown, not judged.
 * @typedef {{id: string, a: string, b: string, metric: string, op: string, threshold: number, what: string,
 *   payload?: number, burst?: number, ceiling?: string, pooled?: boolean, extra?: boolean, report?: boolean}} Target
 */

/** The issue's targets, evaluated per (clients, payload) cell on ratios of medians from one run. @type {Target[]} */
const TARGETS = [
  { id: 'ws-vs-frame-rate', a: 'bcast-ws', b: 'ws-frame', metric: 'deliveriesPerSec', op: '>=', threshold: 0.95, what: '@bcast/ws vs raw frame-once, deliveries/s' },
  { id: 'ws-vs-frame-cpu', a: 'bcast-ws', b: 'ws-frame', metric: 'serverCpuUsPerDelivery', op: '<=', threshold: 1.1, what: '@bcast/ws vs raw frame-once, server CPU per delivery' },
  { id: 'ws-vs-frame-p99', a: 'bcast-ws', b: 'ws-frame', metric: 'p99Ms', op: '<=', threshold: 1.2, what: '@bcast/ws vs raw frame-once, p99 latency' },
  { id: 'ws-vs-naive-256', a: 'bcast-ws', b: 'ws-naive', ceiling: 'ws-frame', metric: 'deliveriesPerSec', op: '>=', threshold: 1.8, payload: 256, what: '@bcast/ws vs raw naive, deliveries/s' },
  { id: 'ws-vs-naive-4k', a: 'bcast-ws', b: 'ws-naive', ceiling: 'ws-frame', metric: 'deliveriesPerSec', op: '>=', threshold: 5, payload: 4096, what: '@bcast/ws vs raw naive, deliveries/s' },
  { id: 'ws-vs-io', a: 'bcast-ws', b: 'socketio-emit', ceiling: 'ws-frame', metric: 'deliveriesPerSec', op: '>=', threshold: 1.6, what: '@bcast/ws vs socket.io io.emit, deliveries/s' },
  { id: 'io-vs-io', a: 'bcast-socketio', b: 'socketio-emit', metric: 'deliveriesPerSec', op: '>=', threshold: 1.0, what: '@bcast/socket.io vs io.emit, deliveries/s' },
  { id: 'compat-vs-ws', a: 'bcast-compat', b: 'bcast-ws', metric: 'deliveriesPerSec', op: '>=', threshold: 0.95, what: '@bcast/compat vs @bcast/ws, deliveries/s' },
  { id: 'otel-vs-ws', a: 'bcast-ws-otel', b: 'bcast-ws', metric: 'deliveriesPerSec', op: '>=', threshold: 0.9, what: 'tracing on vs off (@bcast/ws), deliveries/s' },
];

/** The latency target again, at a fixed offered load below saturation (the latency run). @type {Target[]} */
export const LATENCY_TARGETS = [
  { id: 'ws-vs-frame-p99-rate', a: 'bcast-ws', b: 'ws-frame', metric: 'p99Ms', pooled: true, extra: true, op: '<=', threshold: 1.2, what: '@bcast/ws vs raw frame-once, p99 latency at a fixed rate (all repetitions pooled; our check, beyond the issue)' },
];

/**
 * The issue "The core, renovated" (performance part), on the cells of a run with `--burst 1,10`.
 * `burst` and `payload` pick the cells; `report: true` is shown, not judged.
 * @type {Target[]}
 */
export const RENOVATION_TARGETS = [
  { id: 'ws-permsg-cpu', a: 'bcast-ws', b: 'ws-frame', metric: 'serverCpuUsPerDelivery', op: '<=', threshold: 1.05, burst: 1, what: 'per-message path (`--burst 1`): @bcast/ws vs raw frame-once, server CPU per delivery' },
  { id: 'compat-permsg-cpu', a: 'bcast-compat', b: 'ws-frame', metric: 'serverCpuUsPerDelivery', op: '<=', threshold: 1.05, burst: 1, report: true, what: 'per-message path (`--burst 1`): @bcast/compat vs raw frame-once, server CPU per delivery (reported, not judged)' },
  { id: 'ws-burst10-rate', a: 'bcast-ws', b: 'ws-frame', metric: 'deliveriesPerSec', op: '>=', threshold: 3, burst: 10, payload: 256, what: 'bursts of 10 in one tick: @bcast/ws vs raw frame-once, deliveries/s' },
  { id: 'compat-burst10-rate', a: 'bcast-compat', b: 'ws-frame', metric: 'deliveriesPerSec', op: '>=', threshold: 3, burst: 10, payload: 256, report: true, what: 'bursts of 10 in one tick: @bcast/compat vs raw frame-once, deliveries/s (reported, not judged)' },
];

/**
 * Ratios of medians for every target and cell, with the range of per-repetition ratios
 * (repetition r of A over repetition r of B) and the server-CPU ratio for context. When the run
 * has `@before` twins, also the same ratio before (A@before / B, or / B@before when B is a @bcast
 * variant too) and A's own after / before.
 * @param {any[]} cells @param {Record<string, string>} [unavailable] @param {Target[]} [targets]
 * @param {Record<string, string>} [failed] why a variant has no cells although it ran (its sessions failed)
 */
export function evaluateTargets(cells, unavailable = {}, targets = TARGETS, failed = {}) {
  const rows = [];
  const keys = [...new Set(cells.map((c) => `${c.clients}|${c.payloadBytes}|${c.burst}`))];
  const find = (variant, clients, payloadBytes, burst) => cells.find((c) => c.variant === variant && c.clients === clients && c.payloadBytes === payloadBytes && c.burst === burst);
  for (const t of targets) {
    let matched = 0;
    for (const key of keys) {
      const [clients, payloadBytes, burstText] = key.split('|');
      const burst = burstText === 'undefined' ? undefined : Number(burstText);
      if (t.payload !== undefined && t.payload !== Number(payloadBytes)) continue;
      if (t.burst !== undefined && t.burst !== burst) continue;
      matched += 1;
      rows.push(evaluateCell(t, Number(clients), Number(payloadBytes), burst, find, unavailable, failed));
    }
    if (matched === 0 && t.burst !== undefined) {
      rows.push({ ...t, clients: NaN, payloadBytes: t.payload ?? NaN, ratio: NaN, low: NaN, high: NaN, cpuRatio: NaN, ceilingRatio: NaN, beforeRatio: NaN, afterOverBefore: NaN, result: 'n/a', note: `no \`--burst ${t.burst}\` cells in this run` });
    }
  }
  return rows;
}

function evaluateCell(t, clients, payloadBytes, burst, find, unavailable, failed) {
  const a = find(t.a, clients, payloadBytes, burst);
  const b = find(t.b, clients, payloadBytes, burst);
  const row = { ...t, clients, payloadBytes, burst, ratio: NaN, low: NaN, high: NaN, cpuRatio: NaN, ceilingRatio: NaN, beforeRatio: NaN, afterOverBefore: NaN, result: 'n/a', note: '' };
  if (!a || !b) {
    const missing = !a ? t.a : t.b;
    row.note = unavailable[missing] ? `${label(missing)} not available: ${unavailable[missing]}` : failed[missing] ? `${label(missing)} failed: ${failed[missing]}` : `${label(missing)} not measured`;
    return row;
  }
  const value = (c) => (t.pooled && c.pooled ? c.pooled[t.metric] : c[t.metric].median);
  row.ratio = t.pooled && a.pooled && b.pooled ? a.pooled[t.metric] / b.pooled[t.metric] : a[t.metric].median / b[t.metric].median;
  const perRep = a.runs.map((r) => {
    const other = b.runs.find((x) => x.rep === r.rep);
    return other ? r[t.metric] / other[t.metric] : NaN;
  }).filter(Number.isFinite);
  if (perRep.length) [row.low, row.high] = [Math.min(...perRep), Math.max(...perRep)];
  row.cpuRatio = a.serverCpuUsPerDelivery.median / b.serverCpuUsPerDelivery.median;
  // What one write per message (raw frame-once) itself achieves against B.
  const ceiling = t.ceiling && find(t.ceiling, clients, payloadBytes, burst);
  if (ceiling) row.ceilingRatio = ceiling[t.metric].median / b[t.metric].median;
  // The same comparison on the baseline's packages, when the run has them.
  const aBefore = find(beforeName(t.a), clients, payloadBytes, burst);
  const bBefore = hasBefore(t.b) ? find(beforeName(t.b), clients, payloadBytes, burst) : b;
  if (aBefore && bBefore) row.beforeRatio = value(aBefore) / value(bBefore);
  if (aBefore) row.afterOverBefore = value(a) / value(aBefore);
  const ok = t.op === '>=' ? row.ratio >= t.threshold : row.ratio <= t.threshold;
  row.result = t.report ? 'reported' : ok ? 'pass' : 'FAIL';
  return row;
}

/** What the clients were, for the settings line. @param {'lean' | 'library'} kind */
function clientText(kind) {
  return kind === 'lean'
    ? 'the same lean client for every variant (`src/lean-client.mjs`: a `net` socket, the WebSocket handshake and a frame parser; engine.io v4 for the socket.io variants), so every variant meets the same, cheap client'
    : '`ws` clients for the ws variants and `socket.io-client` (websocket transport) for the socket.io variants (`--client library`)';
}

/** The closed loop's pacing, for the settings line. */
function burstText(burst, window) {
  if (burst <= 1) return `one broadcast per tick, at most ${window} in flight (sent, not yet received by every client)`;
  return `broadcasts in bursts of ${burst}, sent one after another in one tick, a burst as soon as the window has room for it, at most ${window} broadcasts (${Math.floor(window / burst)} bursts) in flight`;
}

const listOf = (x) => (Array.isArray(x) ? x : [x]);
/** A pacing's name in headings. */
const burstTitle = (b) => (b <= 1 ? 'One broadcast per tick (`--burst 1`)' : `Bursts of ${b} (\`--burst ${b}\`)`);
const burstShort = (b) => (b <= 1 ? 'burst 1' : `bursts of ${b}`);

/** The closed loop's pacing(s), for the settings line. */
function pacingText(matrix) {
  const bursts = listOf(matrix.burst ?? 1);
  const windows = listOf(matrix.window);
  if (bursts.length === 1) return burstText(bursts[0], windows[0]);
  return `${bursts.length} pacings, each repetition running them in turn (${bursts.map((b, i) => `${burstShort(b)}: ${burstText(b, windows[i])}`).join('; ')})`;
}

/**
 * The fan-out section: settings, a table per (pacing, N, payload), the fixed-rate latency run, the
 * before/after ratios when the run has `@before` twins, and the targets.
 * @param {{plan: any, matrix: any, facts: any, command: string, title?: string, head?: string[], targets?: boolean, elapsedMs?: number}} input
 *   `head`: more lines for the list under the title; `targets: false` leaves the targets out;
 *   `elapsedMs`: what "took" says (default: the matrix's time).
 */
export function fanoutMarkdown({ plan, matrix, facts, command, title = '## Fan-out', head = [], targets = true, elapsedMs = matrix.elapsedMs }) {
  const cells = aggregate(matrix.sessions);
  const bursts = listOf(matrix.burst ?? 1);
  const lines = [title, '', ...machineLines(facts, command, elapsedMs), ...head];
  const perN = plan.clients.map((n) => `${int(Math.max(plan.minMessages ?? 10, Math.round(plan.deliveries / n)))} at N = ${int(n)}`).join(', ');
  lines.push(
    `- Settings: N = ${plan.clients.map(int).join(' and ')} clients in ${(matrix.clientProcesses ?? 1) === 1 ? 'one client process' : `${matrix.clientProcesses} client processes`} (bound round robin to 127.0.0.2-127.0.0.5, server on 127.0.0.1), ${clientText(matrix.client ?? 'library')}; ` +
      `payloads ${plan.payloads.map(bytes).join(' and ')} of JSON (a list of records); measured broadcasts per phase: at least ${perN} (≈${int(plan.deliveries)} deliveries)${plan.minPhaseMs > 0 ? `, and more, a burst at a time, until the phase has run ${plan.minPhaseMs / 1000} s (so a fast variant is measured as long as a slow one)` : ''}, after a warm-up of a fifth of the minimum; ` +
      `${pacingText(matrix)}; ${plan.reps} repetition(s); each cell shows the median and (min..max) over the repetitions.`,
    '- Columns: deliveries/s = messages received by all clients / (last receipt - first send); latency = receipt time in the client process - the time the broadcast was due, stamped in the message by the server (same CLOCK_MONOTONIC; every broadcast of a burst is due when the burst starts); server CPU = user + system time of the server process over the phase / deliveries; client CPU the same for the client process; RSS = the server\'s peak resident set size sampled every 20 ms during the phase.',
  );
  lines.push(
    `- Disturbed sessions: a session is disturbed when more than ${pct(matrix.maxOtherLoad)} of the machine's CPU went to other processes during one of its phases (or it failed); ` +
      `those are run again after the matrix within the budget and each repetition keeps its least disturbed attempt. This run re-ran ${matrix.rerun} session(s); ${matrix.stillDisturbed} kept session(s) are still disturbed (⚠ in the "other load" column, which shows the worst phase of the cell).`,
  );
  const skipText = (s) => `${s.variant}${bursts.length > 1 ? ` ${burstShort(s.burst)}` : ''} N=${s.clients} rep ${s.rep + 1}`;
  if (matrix.skipped.length) lines.push(`- Skipped to stay within the time budget: ${matrix.skipped.map(skipText).join(', ')}.`);
  for (const [name, why] of Object.entries(matrix.unavailable)) lines.push(`- **${label(name)} not available**: ${why}. Its rows and targets show n/a.`);
  const failed = matrix.sessions.filter((s) => s.error);
  for (const s of failed) lines.push(`- **Failed**: ${skipText(s)}: ${s.error}`);
  for (const b of bursts) {
    for (const n of plan.clients) {
      for (const payload of plan.payloads) {
        lines.push('', `### ${bursts.length > 1 ? `${burstTitle(b)}, ` : ''}N = ${int(n)}, ${bytes(payload)}`, '');
        lines.push('| variant | deliveries/s | p50 ms | p99 ms | server CPU µs/delivery | client CPU µs/delivery | server peak RSS MiB | other load |');
        lines.push('|---|--:|--:|--:|--:|--:|--:|--:|');
        for (const name of plan.variants) {
          const c = cells.find((x) => x.variant === name && x.clients === n && x.payloadBytes === payload && (bursts.length === 1 || x.burst === b));
          if (!c) {
            const broke = matrix.sessions.some((x) => x.error && x.variant === name && x.clients === n && (bursts.length === 1 || x.burst === b));
            lines.push(`| ${label(name)} | ${matrix.unavailable[name] ? 'not available' : broke ? 'failed (see above)' : 'not measured'} | | | | | | |`);
            continue;
          }
          const other = Math.max(...c.runs.map((r) => (Number.isFinite(r.otherCpuShare) ? r.otherCpuShare : 0)));
          const incomplete = c.complete ? '' : ' (incomplete!)';
          lines.push(
            `| ${label(name)}${incomplete} | ${spread(c.deliveriesPerSec, int)} | ${spread(c.p50Ms, fix)} | ${spread(c.p99Ms, fix)} | ${spread(c.serverCpuUsPerDelivery, fix)} | ${spread(c.clientCpuUsPerDelivery, fix)} | ${spread(c.peakRssBytes, mib)} | ${pct(other)}${other > matrix.maxOtherLoad ? ' ⚠' : ''} |`,
          );
        }
      }
    }
  }
  const latencyCells = matrix.latency ? aggregate(matrix.latency.sessions) : [];
  if (matrix.latency) lines.push(...latencyLines(plan, matrix.latency, latencyCells));
  if (plan.variants.some(isBefore)) lines.push(...beforeAfterLines(plan, cells, bursts));
  if (!targets) return lines.join('\n');
  const failedWhy = Object.fromEntries(matrix.sessions.filter((x) => x.error).map((x) => [x.variant, x.error]));
  const rows = [...evaluateTargets(cells, matrix.unavailable, TARGETS, failedWhy), ...(matrix.latency ? evaluateTargets(latencyCells, matrix.unavailable, LATENCY_TARGETS) : [])];
  const withBefore = rows.some((r) => Number.isFinite(r.beforeRatio));
  lines.push(
    '',
    '### Targets',
    '',
    'Ratios of the medians above (A / B), with the range of the per-repetition ratios; for the fixed-rate p99, the ratio of the pooled p99s (every delivery of every repetition).  For context: the server-CPU-per-delivery ratio, and for targets against a slower baseline, what raw frame-once (one write per message per socket) itself reaches against the same B: a target above it needs fewer writes than messages, which is what coalescing does.' +
      (withBefore ? ' "Before" is the same ratio with A (and B, when it is a @bcast variant) on the baseline\'s packages.' : ''),
    '',
  );
  lines.push(`| target | ${bursts.length > 1 ? 'pacing, ' : ''}N, payload | A / B | per-repetition range | needed | server CPU A / B | raw frame-once / B |${withBefore ? ' before: A / B |' : ''} result |`);
  lines.push(`|---|---|--:|--:|--:|--:|--:|${withBefore ? '--:|' : ''}---|`);
  for (const r of rows) {
    const range = Number.isFinite(r.low) ? `${fix(r.low, 2)}..${fix(r.high, 2)}` : '';
    lines.push(
      `| ${r.what} | ${cellText(r, bursts.length > 1)} | ${Number.isFinite(r.ratio) ? `${ratioText(r.ratio, r.threshold)}x` : 'n/a'} | ${range} | ${r.op} ${r.threshold}x | ${Number.isFinite(r.cpuRatio) ? `${fix(r.cpuRatio, 2)}x` : ''} | ${Number.isFinite(r.ceilingRatio) ? `${fix(r.ceilingRatio, 2)}x` : ''} |${withBefore ? ` ${Number.isFinite(r.beforeRatio) ? `${fix(r.beforeRatio, 2)}x` : ''} |` : ''} ${resultText(r)} |`,
    );
  }
  const judged = rows.filter((r) => r.result === 'pass' || r.result === 'FAIL').filter((r) => !r.extra);
  const extra = rows.filter((r) => r.result !== 'n/a' && r.extra);
  lines.push('', `${judged.filter((r) => r.result === 'pass').length} of ${judged.length} evaluated targets of the issue pass; ${rows.filter((r) => r.result === 'n/a').length} could not be evaluated.`);
  if (extra.length) {
    lines.push(
      '',
      `Our own check beyond the issue's floors, the same p99 limit at an equal, fixed load: ${extra.filter((r) => r.result === 'pass').length} of ${extra.length} cells pass. ` +
        'A lone broadcast costs @bcast/ws a few percent more server CPU than the raw loop (`bench:send` measures it), and at a fixed rate queueing amplifies that in the tail.',
    );
  }
  return lines.join('\n');
}

/** "1,000, 256 B", with the pacing in front when the run had several. */
function cellText(r, showBurst) {
  if (!Number.isFinite(r.clients)) return `${r.burst !== undefined ? `${burstShort(r.burst)}, ` : ''}${Number.isFinite(r.payloadBytes) ? bytes(r.payloadBytes) : ''}`;
  return `${showBurst && r.burst !== undefined ? `${burstShort(r.burst)}, ` : ''}${int(r.clients)}, ${bytes(r.payloadBytes)}`;
}

const resultText = (r) => (r.result === 'n/a' ? `n/a (${r.note})` : r.result);

/**
 * Before and after, per cell: each @bcast variant on this checkout's packages against its
 * `@before` twin on the baseline's, and both against raw frame-once of the same run.
 * @param {{variants: string[], clients: number[], payloads: number[]}} plan @param {any[]} cells
 * @param {(number | undefined)[]} [bursts] the pacings to show; one entry: every cell, whatever its burst
 */
export function beforeAfterLines(plan, cells, bursts = [undefined]) {
  const twins = plan.variants.filter((v) => !isBefore(v) && plan.variants.includes(beforeName(v)));
  const lines = [
    '',
    '### Before and after',
    '',
    `Each @bcast variant ran twice in every repetition, one session after the other with the same client load: on this checkout's packages ("after") and on the baseline's ("before", the \`${BEFORE}\` rows above). ` +
      'Each value is a median over the repetitions, before → after, then after / before; the last two columns are the variant against raw frame-once of the same pacing, N and payload (before → after). Server CPU and p99: lower is better; deliveries/s: higher is better.',
    '',
    '| pacing, N, payload | variant | server CPU µs/delivery | after / before | deliveries/s | after / before | p99 ms | after / before | CPU / raw frame-once | deliveries/s / raw frame-once |',
    '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|',
  ];
  const ratio = (x, y) => (Number.isFinite(x / y) ? `${(x / y).toFixed(2)}x` : 'n/a');
  for (const b of bursts) {
    for (const n of plan.clients) {
      for (const payload of plan.payloads) {
        const at = (v) => cells.find((c) => c.variant === v && c.clients === n && c.payloadBytes === payload && (b === undefined || bursts.length === 1 || c.burst === b));
        const frame = at('ws-frame');
        for (const name of twins) {
          const after = at(name);
          const before = at(beforeName(name));
          if (!after && !before) continue;
          const m = (c, k) => c?.[k].median ?? NaN;
          const pair = (k, f) => `${f(m(before, k))} → ${f(m(after, k))}`;
          const vsFrame = (k) => (frame ? `${ratio(m(before, k), m(frame, k))} → ${ratio(m(after, k), m(frame, k))}` : 'n/a');
          lines.push(
            `| ${b !== undefined && bursts.length > 1 ? `${burstShort(b)}, ` : ''}${int(n)}, ${bytes(payload)} | ${label(baseName(name))} | ${pair('serverCpuUsPerDelivery', (x) => fix(x, 2))} | ${ratio(m(after, 'serverCpuUsPerDelivery'), m(before, 'serverCpuUsPerDelivery'))} | ${pair('deliveriesPerSec', int)} | ${ratio(m(after, 'deliveriesPerSec'), m(before, 'deliveriesPerSec'))} | ${pair('p99Ms', fix)} | ${ratio(m(after, 'p99Ms'), m(before, 'p99Ms'))} | ${vsFrame('serverCpuUsPerDelivery')} | ${vsFrame('deliveriesPerSec')} |`,
          );
        }
      }
    }
  }
  return lines;
}

/** The fixed-rate latency tables. */
function latencyLines(plan, latency, cells) {
  const lines = [
    '',
    '### Latency at a fixed rate',
    '',
    `The same fan-out, paced open loop instead of by a window: every variant gets the same broadcast rate, ${pct(latency.loadShare)} of the deliveries/s that raw frame-once reached above, for ${latency.seconds} s after a 1 s warm-up, ${latency.reps} repetition(s). ` +
      (latency.skipped?.length ? `Skipped to stay within the time budget: ${latency.skipped.map((s) => `${s.variant} N=${s.clients} rep ${s.rep + 1}`).join(', ')}. ` : '') +
      'Latency runs from each broadcast\'s due time, so a server that falls behind is charged for it. "Repetitions pooled" is the p99 of every delivery of every repetition together, the steadier figure: a phase\'s p99 rests on its worst few broadcasts. Below saturation this is the latency clients see at a given load; the tables above show it at each variant\'s own saturation, where a faster variant also carries more load.',
  ];
  for (const n of plan.clients) {
    for (const payload of plan.payloads) {
      const rows = latency.variants.map((name) => cells.find((x) => x.variant === name && x.clients === n && x.payloadBytes === payload)).filter(Boolean);
      if (rows.length === 0) continue;
      lines.push('', `#### N = ${int(n)}, ${bytes(payload)}`, '');
      lines.push('| variant | offered deliveries/s | delivered/s | p50 ms | p99 ms | p99 ms, repetitions pooled | max ms | server CPU µs/delivery |');
      lines.push('|---|--:|--:|--:|--:|--:|--:|--:|');
      for (const c of rows) {
        const offered = c.runs[0]?.offeredPerSec ?? NaN;
        const capped = c.runs.some((r) => r.capped > 0) ? ' (saturated: hit the in-flight cap)' : '';
        const max = { median: median(c.runs.map((r) => r.maxMs)), ...range(c.runs.map((r) => r.maxMs)) };
        lines.push(`| ${label(c.variant)}${capped} | ${int(offered)} | ${spread(c.deliveriesPerSec, int)} | ${spread(c.p50Ms, fix)} | ${spread(c.p99Ms, fix)} | ${c.pooled ? fix(c.pooled.p99Ms) : ''} | ${spread(max, fix)} | ${spread(c.serverCpuUsPerDelivery, fix)} |`);
      }
    }
  }
  return lines;
}

// ---- scale -----------------------------------------------------------------------------------

/**
 * The connection-scale section. `threshold`: the memory target, bytes per connection over raw ws
 * (2 KiB: the first issue; 1.1 KiB: "The core, renovated"). `title: false` leaves the heading and
 * the machine lines out (for a section that has them already).
 * @param {{scale: any, facts: any, command: string, threshold?: number, title?: string | false}} input
 */
export function scaleMarkdown({ scale, facts, command, threshold = 2048, title = '## Connection scale' }) {
  const lines = title === false ? [] : [title, '', ...machineLines(facts, command, scale.elapsedMs, false)];
  lines.push(
    `- ${int(scale.clients)} idle connections to one server process, from ${scale.clientProcesses} client processes bound to 127.0.0.2-127.0.0.5, ${scale.client ?? 'library'} clients. Memory is the server's, measured after three forced GCs (\`--expose-gc\`) before the first client connects and after all are registered; the delta is divided by the number of connections. Then one ${bytes(scale.payloadBytes)} broadcast to all of them.`,
    '',
    '| variant | connect time s | RSS per connection KiB | heap per connection KiB | broadcast reached | fan-out to last client ms | p50 ms | p99 ms |',
    '|---|--:|--:|--:|--:|--:|--:|--:|',
  );
  for (const s of scale.results) {
    const p = s.phases[0];
    const m = s.memory;
    const reach = p ? `${int(p.delivered)} / ${int(p.expected)}` : `failed: ${s.error}`;
    lines.push(`| ${label(s.variant)} | ${fix(s.connectMs / 1000)} | ${m ? kib(m.rssPerConnection) : 'n/a'} | ${m ? kib(m.heapPerConnection) : 'n/a'} | ${reach} | ${p ? fix(p.durationMs, 0) : ''} | ${p ? fix(p.p50Ms) : ''} | ${p ? fix(p.p99Ms) : ''} |`);
  }
  for (const [name, why] of Object.entries(scale.unavailable)) lines.push(`| ${label(name)} | not available: ${why} | | | | | | |`);
  lines.push('', title === false ? '#### Target' : '### Target', '', '| target | measure | variant | memory per connection | raw ws | difference | needed | result |', '|---|---|---|--:|--:|--:|--:|---|');
  for (const r of memoryTargets(scale, threshold)) {
    lines.push(`| ${r.what} | ${r.measure} | ${label(r.variant)} | ${r.value === undefined ? '' : `${kib(r.value)} KiB`} | ${r.raw === undefined ? '' : `${kib(r.raw)} KiB`} | ${Number.isFinite(r.diff) ? `${kib(r.diff)} KiB` : ''} | <= ${kibText(threshold)} | ${resultText(r)} |`);
  }
  lines.push('', 'Raw ws is the plain `WebSocketServer` of the raw variants (clients tracked in `wss.clients`). Heap is the precise measure; RSS also moves with allocator caches and is noisier.');
  return lines.join('\n');
}

const kibText = (b) => `${Number((b / 1024).toFixed(2))} KiB`;

/**
 * Memory per idle connection of @bcast/ws over raw ws, heap and RSS: judged; the same for its
 * `@before` twin when the run has it: reported.
 */
export function memoryTargets(scale, threshold = 2048) {
  const find = (v) => scale.results.find((s) => s.variant === v && s.memory);
  const raw = find('ws-frame');
  const rows = [];
  const names = ['bcast-ws', ...(scale.results.some((s) => s.variant === beforeName('bcast-ws')) ? [beforeName('bcast-ws')] : [])];
  for (const variant of names) {
    for (const [measure, key] of [['heap', 'heapPerConnection'], ['RSS', 'rssPerConnection']]) {
      const what = `memory per idle connection <= raw ws + ${kibText(threshold)}`;
      const row = { what, measure, variant, threshold, diff: NaN, result: 'n/a', note: '' };
      const own = find(variant);
      if (!raw || !own) {
        rows.push({ ...row, note: `${!own ? label(variant) : 'raw ws'} not measured` });
        continue;
      }
      const diff = own.memory[key] - raw.memory[key];
      rows.push({ ...row, value: own.memory[key], raw: raw.memory[key], diff, result: isBefore(variant) ? 'reported' : diff <= threshold ? 'pass' : 'FAIL' });
    }
  }
  return rows;
}

// ---- "The core, renovated" --------------------------------------------------------------------

/** 1.1 KiB: the renovation's limit on memory per idle connection over raw ws. */
export const RENOVATION_MEMORY_BYTES = 1.1 * 1024;

/**
 * The per-message path interleaved in one process (`bench:send`): rows of { payloadBytes, n,
 * rounds, gapMs, sides: [{ name, wallUs, cpuUs }] } (per delivery).
 */
export function sendPathLines(send) {
  if (!send?.length) return [];
  const lines = [
    '',
    '### The per-message path, interleaved (`bench:send`)',
    '',
    `A cross-check of the per-message CPU target that separate sessions can hardly resolve: one process, N real ws connections (lean clients in a child process), and single broadcasts that alternate between the raw frame-once loop and each @bcast/ws build (after, and before when there is a baseline) over the same sockets, one at a time with ${send[0].gapMs} ms idle between them, in the order A B C C B A. ` +
      'Each broadcast\'s server CPU (user + system of the one process) is counted to its side. Not one of the issue\'s measures; a check on them.',
    '',
    '| N, payload | broadcasts per side | side | CPU µs/delivery | wall µs/delivery | CPU / raw frame-once |',
    '|---|--:|---|--:|--:|--:|',
  ];
  for (const r of send) {
    const raw = r.sides[0];
    for (const side of r.sides) {
      lines.push(`| ${int(r.n)}, ${bytes(r.payloadBytes)} | ${int(side.count)} | ${side.name} | ${fix(side.cpuUs, 3)} | ${fix(side.wallUs, 3)} | ${side === raw ? '' : `${(side.cpuUs / raw.cpuUs).toFixed(3)}x`} |`);
    }
  }
  return lines;
}

/**
 * The section of `bench:renovation`: the fan-out at `--burst 1` and `--burst 10` with the
 * baseline's twins, the issue's targets, the interleaved per-message path and the scale run.
 * @param {{plan: any, matrix: any, scale?: any, send?: any[], facts: any, command: string, baseline?: {ref: string, hash: string, subject: string}, head?: {hash: string, dirty: boolean}, elapsedMs?: number}} input
 *   `elapsedMs`: the whole run's time
 */
export function renovationMarkdown({ plan, matrix, scale, send, facts, command, baseline, head, elapsedMs }) {
  const cells = aggregate(matrix.sessions);
  const title = '## The core, renovated: before and after';
  const intro = [
    baseline
      ? `- Before: \`${baseline.ref}\` (${baseline.hash.slice(0, 9)}, "${baseline.subject}"), checked out in a temporary git worktree, installed (\`--frozen-lockfile\`) and built there; the \`(before)\` rows are the same server code on its packages. After: this checkout${head ? ` (${head.hash.slice(0, 9)}${head.dirty ? ' with uncommitted changes under packages/' : ''})` : ''}. Both in the same run, interleaved, with the same client load.`
      : '- **No baseline** (`--baseline <git-ref>`): the "before" rows and columns are empty.',
  ];
  const lines = [fanoutMarkdown({ plan, matrix, facts, command, title, head: intro, targets: false, elapsedMs: elapsedMs ?? matrix.elapsedMs })];
  const failed = Object.fromEntries(matrix.sessions.filter((x) => x.error).map((x) => [x.variant, x.error]));
  const rows = evaluateTargets(cells, matrix.unavailable, RENOVATION_TARGETS, failed);
  const memory = scale ? memoryTargets(scale, RENOVATION_MEMORY_BYTES) : [];
  const bursts = listOf(matrix.burst ?? 1);
  lines.push(
    '',
    '### Targets',
    '',
    'The performance targets of "The core, renovated". Ratios of the medians above (A / B), with the range of the per-repetition ratios; "before" is the same ratio with A on the baseline\'s packages, and "A after / before" is A\'s own change. Memory: the difference per idle connection to raw ws, from the scale run below.',
    '',
    '| target | pacing, N, payload | A / B | per-repetition range | before: A / B | A after / before | needed | result |',
    '|---|---|--:|--:|--:|--:|--:|---|',
  );
  for (const r of rows) {
    const range = Number.isFinite(r.low) ? `${fix(r.low, 2)}..${fix(r.high, 2)}` : '';
    const x = (v) => (Number.isFinite(v) ? `${fix(v, 2)}x` : '');
    lines.push(`| ${r.what} | ${cellText(r, true)} | ${Number.isFinite(r.ratio) ? `${ratioText(r.ratio, r.threshold)}x` : 'n/a'} | ${range} | ${x(r.beforeRatio)} | ${x(r.afterOverBefore)} | ${r.op} ${r.threshold}x | ${resultText(r)} |`);
  }
  const diffOf = (variant, measure) => memory.find((m) => m.variant === variant && m.measure === measure)?.diff;
  for (const r of memory.filter((m) => !isBefore(m.variant))) {
    const before = diffOf(beforeName(r.variant), r.measure);
    lines.push(`| idle memory per connection (${r.measure}): @bcast/ws − raw ws | ${scale ? `${int(scale.clients)} idle` : ''} | ${Number.isFinite(r.diff) ? `${r.diff >= 0 ? '+' : ''}${kib(r.diff)} KiB` : 'n/a'} | | ${Number.isFinite(before) ? `${before >= 0 ? '+' : ''}${kib(before)} KiB` : ''} | | <= +${kibText(RENOVATION_MEMORY_BYTES)} | ${resultText(r)} |`);
  }
  if (!scale) lines.push(`| idle memory per connection: @bcast/ws − raw ws | | n/a | | | | <= +${kibText(RENOVATION_MEMORY_BYTES)} | n/a (no scale run) |`);
  const all = [...rows, ...memory.filter((m) => !isBefore(m.variant))];
  const judged = all.filter((r) => r.result === 'pass' || r.result === 'FAIL');
  lines.push('', `${judged.filter((r) => r.result === 'pass').length} of ${judged.length} evaluated targets pass; ${all.filter((r) => r.result === 'n/a').length + (scale ? 0 : 1)} could not be evaluated${bursts.includes(1) && bursts.includes(10) ? '' : ' (this run did not have both `--burst 1` and `--burst 10`)'}.`);
  lines.push(...sendPathLines(send));
  if (scale) {
    lines.push('', '### Connection scale', '', scaleMarkdown({ scale, facts, command, threshold: RENOVATION_MEMORY_BYTES, title: false }));
  }
  return lines.join('\n');
}

// ---- the file --------------------------------------------------------------------------------

const HEADER = `# bcast benchmark results

Written by \`pnpm --filter @bcast/bench bench:renovation\` (before and after), \`pnpm bench\` (fan-out) and \`pnpm --filter @bcast/bench bench:scale\` (connection scale); each run replaces its own section. See README.md for what each variant is and how the load is paced.
`;

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * The text without this machine's paths (in error messages, say): the repo's own become relative,
 * the temp dir (where a baseline worktree lives) becomes `$TMPDIR`.
 * @param {string} text
 */
export function scrubPaths(text, root = REPO_ROOT, tmp = os.tmpdir()) {
  const dir = (d) => (d.endsWith('/') ? d : `${d}/`);
  let out = text;
  for (const [from, to] of [[`file://${dir(root)}`, ''], [dir(root), ''], [`file://${dir(tmp)}`, '$TMPDIR/'], [dir(tmp), '$TMPDIR/']]) out = out.split(from).join(to);
  return out;
}

/** Replaces one marked section of a results file (creating the file when needed). */
export function writeSection(file, section, markdown) {
  const start = `<!-- bcast-bench:${section}:start -->`;
  const end = `<!-- bcast-bench:${section}:end -->`;
  const block = `${start}\n${scrubPaths(markdown)}\n${end}`;
  let text = existsSync(file) ? readFileSync(file, 'utf8') : HEADER;
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i >= 0 && j > i) text = text.slice(0, i) + block + text.slice(j + end.length);
  else {
    // the newest kind of run first: renovation, then fan-out, then scale
    const later = { renovation: ['fanout', 'scale'], fanout: ['scale'] }[section] ?? [];
    const at = later.map((s) => text.indexOf(`<!-- bcast-bench:${s}:start -->`)).filter((k) => k >= 0);
    const where = at.length ? Math.min(...at) : -1;
    text = where >= 0 ? `${text.slice(0, where)}${block}\n\n${text.slice(where)}` : `${text.trimEnd()}\n\n${block}\n`;
  }
  writeFileSync(file, text);
}
