// Markdown for RESULTS.md: machine facts, tables, and the issue's targets as ratios with pass/fail.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { median, range } from './common.mjs';
import { aggregate } from './harness.mjs';
import { VARIANTS } from './variants.mjs';

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
const label = (name) => VARIANTS[name]?.label ?? name;
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

/** The issue's targets, evaluated per (clients, payload) cell on ratios of medians from one run. */
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

/** The latency target again, at a fixed offered load below saturation (the latency run). */
export const LATENCY_TARGETS = [
  { id: 'ws-vs-frame-p99-rate', a: 'bcast-ws', b: 'ws-frame', metric: 'p99Ms', pooled: true, extra: true, op: '<=', threshold: 1.2, what: '@bcast/ws vs raw frame-once, p99 latency at a fixed rate (all repetitions pooled; our check, beyond the issue)' },
];

/**
 * Ratios of medians for every target and cell, with the range of per-repetition ratios
 * (repetition r of A over repetition r of B) and the server-CPU ratio for context.
 */
export function evaluateTargets(cells, unavailable = {}, targets = TARGETS) {
  const rows = [];
  const keys = [...new Set(cells.map((c) => `${c.clients}|${c.payloadBytes}`))];
  for (const t of targets) {
    for (const key of keys) {
      const [clients, payloadBytes] = key.split('|').map(Number);
      if (t.payload !== undefined && t.payload !== payloadBytes) continue;
      const a = cells.find((c) => c.variant === t.a && c.clients === clients && c.payloadBytes === payloadBytes);
      const b = cells.find((c) => c.variant === t.b && c.clients === clients && c.payloadBytes === payloadBytes);
      const row = { ...t, clients, payloadBytes, ratio: NaN, low: NaN, high: NaN, cpuRatio: NaN, ceilingRatio: NaN, result: 'n/a', note: '' };
      if (!a || !b) {
        const missing = !a ? t.a : t.b;
        row.note = unavailable[missing] ? `${label(missing)} not available: ${unavailable[missing]}` : `${label(missing)} not measured`;
        rows.push(row);
        continue;
      }
      row.ratio = t.pooled && a.pooled && b.pooled ? a.pooled[t.metric] / b.pooled[t.metric] : a[t.metric].median / b[t.metric].median;
      const perRep = a.runs.map((r) => {
        const other = b.runs.find((x) => x.rep === r.rep);
        return other ? r[t.metric] / other[t.metric] : NaN;
      }).filter(Number.isFinite);
      if (perRep.length) [row.low, row.high] = [Math.min(...perRep), Math.max(...perRep)];
      row.cpuRatio = a.serverCpuUsPerDelivery.median / b.serverCpuUsPerDelivery.median;
      // What one write per message (raw frame-once) itself achieves against B.
      const ceiling = t.ceiling && cells.find((c) => c.variant === t.ceiling && c.clients === clients && c.payloadBytes === payloadBytes);
      if (ceiling) row.ceilingRatio = ceiling[t.metric].median / b[t.metric].median;
      const ok = t.op === '>=' ? row.ratio >= t.threshold : row.ratio <= t.threshold;
      row.result = ok ? 'pass' : 'FAIL';
      rows.push(row);
    }
  }
  return rows;
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

/**
 * @param {{plan: any, matrix: any, facts: any, command: string}} input
 */
export function fanoutMarkdown({ plan, matrix, facts, command }) {
  const cells = aggregate(matrix.sessions);
  const lines = ['## Fan-out', '', ...machineLines(facts, command, matrix.elapsedMs)];
  const perN = plan.clients.map((n) => `${int(Math.max(plan.minMessages ?? 10, Math.round(plan.deliveries / n)))} at N = ${int(n)}`).join(', ');
  lines.push(
    `- Settings: N = ${plan.clients.map(int).join(' and ')} clients in ${(matrix.clientProcesses ?? 1) === 1 ? 'one client process' : `${matrix.clientProcesses} client processes`} (bound round robin to 127.0.0.2-127.0.0.5, server on 127.0.0.1), ${clientText(matrix.client ?? 'library')}; ` +
      `payloads ${plan.payloads.map(bytes).join(' and ')} of JSON (a list of records); measured broadcasts per phase: at least ${perN} (≈${int(plan.deliveries)} deliveries)${plan.minPhaseMs > 0 ? `, and more, a burst at a time, until the phase has run ${plan.minPhaseMs / 1000} s (so a fast variant is measured as long as a slow one)` : ''}, after a warm-up of a fifth of the minimum; ` +
      `${burstText(matrix.burst ?? 1, matrix.window)}; ${plan.reps} repetition(s); each cell shows the median and (min..max) over the repetitions.`,
    '- Columns: deliveries/s = messages received by all clients / (last receipt - first send); latency = receipt time in the client process - the time the broadcast was due, stamped in the message by the server (same CLOCK_MONOTONIC; every broadcast of a burst is due when the burst starts); server CPU = user + system time of the server process over the phase / deliveries; client CPU the same for the client process; RSS = the server\'s peak resident set size sampled every 20 ms during the phase.',
  );
  lines.push(
    `- Disturbed sessions: a session is disturbed when more than ${pct(matrix.maxOtherLoad)} of the machine's CPU went to other processes during one of its phases (or it failed); ` +
      `those are run again after the matrix within the budget and each repetition keeps its least disturbed attempt. This run re-ran ${matrix.rerun} session(s); ${matrix.stillDisturbed} kept session(s) are still disturbed (⚠ in the "other load" column, which shows the worst phase of the cell).`,
  );
  if (matrix.skipped.length) lines.push(`- Skipped to stay within the time budget: ${matrix.skipped.map((s) => `${s.variant} N=${s.clients} rep ${s.rep + 1}`).join(', ')}.`);
  for (const [name, why] of Object.entries(matrix.unavailable)) lines.push(`- **${label(name)} not available**: ${why}. Its rows and targets show n/a.`);
  const failed = matrix.sessions.filter((s) => s.error);
  for (const s of failed) lines.push(`- **Failed**: ${s.variant} N=${s.clients} rep ${s.rep + 1}: ${s.error}`);
  for (const n of plan.clients) {
    for (const payload of plan.payloads) {
      lines.push('', `### N = ${int(n)}, ${bytes(payload)}`, '');
      lines.push('| variant | deliveries/s | p50 ms | p99 ms | server CPU µs/delivery | client CPU µs/delivery | server peak RSS MiB | other load |');
      lines.push('|---|--:|--:|--:|--:|--:|--:|--:|');
      for (const name of plan.variants) {
        const c = cells.find((x) => x.variant === name && x.clients === n && x.payloadBytes === payload);
        if (!c) {
          lines.push(`| ${label(name)} | ${matrix.unavailable[name] ? 'not available' : 'not measured'} | | | | | | |`);
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
  const latencyCells = matrix.latency ? aggregate(matrix.latency.sessions) : [];
  if (matrix.latency) lines.push(...latencyLines(plan, matrix.latency, latencyCells));
  const rows = [...evaluateTargets(cells, matrix.unavailable), ...(matrix.latency ? evaluateTargets(latencyCells, matrix.unavailable, LATENCY_TARGETS) : [])];
  lines.push(
    '',
    '### Targets',
    '',
    'Ratios of the medians above (A / B), with the range of the per-repetition ratios; for the fixed-rate p99, the ratio of the pooled p99s (every delivery of every repetition).  For context: the server-CPU-per-delivery ratio, and for targets against a slower baseline, what raw frame-once (one write per message per socket) itself reaches against the same B: a target above it needs fewer writes than messages, which is what coalescing does.',
    '',
  );
  lines.push('| target | N, payload | A / B | per-repetition range | needed | server CPU A / B | raw frame-once / B | result |');
  lines.push('|---|---|--:|--:|--:|--:|--:|---|');
  for (const r of rows) {
    const range = Number.isFinite(r.low) ? `${fix(r.low, 2)}..${fix(r.high, 2)}` : '';
    lines.push(`| ${r.what} | ${int(r.clients)}, ${bytes(r.payloadBytes)} | ${Number.isFinite(r.ratio) ? `${ratioText(r.ratio, r.threshold)}x` : 'n/a'} | ${range} | ${r.op} ${r.threshold}x | ${Number.isFinite(r.cpuRatio) ? `${fix(r.cpuRatio, 2)}x` : ''} | ${Number.isFinite(r.ceilingRatio) ? `${fix(r.ceilingRatio, 2)}x` : ''} | ${r.result === 'n/a' ? `n/a (${r.note})` : r.result} |`);
  }
  const judged = rows.filter((r) => r.result !== 'n/a' && !r.extra);
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

export function scaleMarkdown({ scale, facts, command }) {
  const lines = ['## Connection scale', '', ...machineLines(facts, command, scale.elapsedMs, false)];
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
  const raw = scale.results.find((s) => s.variant === 'ws-frame' && s.memory);
  const bcast = scale.results.find((s) => s.variant === 'bcast-ws' && s.memory);
  lines.push('', '### Target', '', '| target | measure | @bcast/ws | raw ws | difference | needed | result |', '|---|---|--:|--:|--:|--:|---|');
  for (const [measure, key] of [['heap', 'heapPerConnection'], ['RSS', 'rssPerConnection']]) {
    if (!raw || !bcast) {
      lines.push(`| memory per idle connection <= raw ws + 2 KiB | ${measure} | | | | <= 2 KiB | n/a (${!bcast ? '@bcast/ws' : 'raw ws'} not measured) |`);
      continue;
    }
    const diff = bcast.memory[key] - raw.memory[key];
    lines.push(`| memory per idle connection <= raw ws + 2 KiB | ${measure} | ${kib(bcast.memory[key])} KiB | ${kib(raw.memory[key])} KiB | ${kib(diff)} KiB | <= 2 KiB | ${diff <= 2048 ? 'pass' : 'FAIL'} |`);
  }
  lines.push('', 'Raw ws is the plain `WebSocketServer` of the raw variants (clients tracked in `wss.clients`). Heap is the precise measure; RSS also moves with allocator caches and is noisier.');
  return lines.join('\n');
}

// ---- the file --------------------------------------------------------------------------------

const HEADER = `# bcast benchmark results

Written by \`pnpm bench\` (fan-out) and \`pnpm --filter @bcast/bench bench:scale\` (connection scale); each run replaces its own section. See README.md for what each variant is and how the load is paced.
`;

/** Replaces one marked section of a results file (creating the file when needed). */
export function writeSection(file, section, markdown) {
  const start = `<!-- bcast-bench:${section}:start -->`;
  const end = `<!-- bcast-bench:${section}:end -->`;
  const block = `${start}\n${markdown}\n${end}`;
  let text = existsSync(file) ? readFileSync(file, 'utf8') : HEADER;
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i >= 0 && j > i) text = text.slice(0, i) + block + text.slice(j + end.length);
  else {
    // fan-out before scale
    const scaleAt = section === 'fanout' ? text.indexOf('<!-- bcast-bench:scale:start -->') : -1;
    text = scaleAt >= 0 ? `${text.slice(0, scaleAt)}${block}\n\n${text.slice(scaleAt)}` : `${text.trimEnd()}\n\n${block}\n`;
  }
  writeFileSync(file, text);
}
