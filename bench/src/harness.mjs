// The orchestrator: starts a server process and client-load process(es) per session, relays
// completion reports from the clients to the server (the pacing), collects the numbers.
import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Histogram, median, onceMessage, range } from './common.mjs';
import { resolveVariant } from './variants.mjs';

const SERVER = fileURLToPath(new URL('./server.mjs', import.meta.url));
const CLIENT = fileURLToPath(new URL('./client.mjs', import.meta.url));

/** USER_HZ: /proc/stat counts in 1/100 s on every Linux build that matters here. */
const TICKS_PER_SEC = 100;

/** Extra node flags for the server process, e.g. BENCH_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof". */
const SERVER_NODE_ARGS = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
/** The same for the client-load processes (BENCH_CLIENT_NODE_ARGS). */
const CLIENT_NODE_ARGS = (process.env.BENCH_CLIENT_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);

/** Loopback addresses the clients bind to, round robin (Linux routes all of 127/8 to lo). */
export const LOCAL_ADDRESSES = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'];

/**
 * @typedef {object} PhaseSpec
 * @property {number} payloadBytes
 * @property {number} messages     measured broadcasts
 * @property {number} [warmupMessages] broadcasts sent (and awaited) before, not measured
 * @property {number} [minMs] closed loop: the measured phase goes on, a burst at a time, until it has run this long
 * @property {number} [maxMessages] the most broadcasts that takes; default `messages`
 * @property {number} [rate] broadcasts per second, open loop (see server.mjs); default: the window
 *
 * @typedef {object} SessionOptions
 * @property {string} variant
 * @property {number} clients       total clients
 * @property {PhaseSpec[]} phases
 * @property {number} [window]      broadcasts in flight (sent, not yet received by every client); default 4
 * @property {number} [burst]       closed loop: broadcasts sent together, in one tick, when the window has room for all; default 1
 * @property {number} [clientProcesses] default 1
 * @property {'lean' | 'library'} [client] the client implementation (client.mjs); default 'lean'
 * @property {string[]} [localAddresses] default LOCAL_ADDRESSES
 * @property {boolean} [measureMemory] GC'd server memory before and after the clients connect
 * @property {string} [baselineDir] the checkout whose packages the `@before` variants load
 * @property {number} [connectTimeoutMs] default 120 s
 * @property {number} [phaseTimeoutMs] per phase; default 60 s
 * @property {(line: string) => void} [log]
 */

/**
 * One server process and its clients: connect, then for each phase a warm-up and a measured run.
 * Never throws: a failure is returned as `error` with whatever was measured before it.
 * @param {SessionOptions} options
 */
export async function runSession(options) {
  const {
    variant: name,
    clients: total,
    phases,
    window = 4,
    burst = 1,
    clientProcesses = 1,
    client: clientKind = 'lean',
    localAddresses = LOCAL_ADDRESSES,
    measureMemory = false,
    baselineDir,
    connectTimeoutMs = 120_000,
    phaseTimeoutMs = 60_000,
    log = () => {},
  } = options;
  const variant = resolveVariant(name, { baselineDir });
  const session = { variant: name, clients: total, client: clientKind, window, burst, phases: /** @type {any[]} */ ([]), connectMs: NaN, memory: undefined, error: undefined, unavailable: false };
  if (!variant) return { ...session, error: `unknown variant ${name}` };
  /** @type {import('node:child_process').ChildProcess[]} */
  const children = [];
  const spawn = (file, execArgv) => {
    const child = fork(file, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv, serialization: 'advanced' });
    child.on('message', (m) => {
      if (m?.type === 'log') log(`  [${name}] ${m.message}`);
    });
    child.on('error', () => {});
    children.push(child);
    return child;
  };
  try {
    const server = spawn(SERVER, ['--expose-gc', ...SERVER_NODE_ARGS]);
    server.send({ cmd: 'init', variant: name, baselineDir });
    const listening = await onceMessage(server, 'listening', 30_000, `${name} server start`).catch((error) => {
      if (/not available|not built|does not export/.test(error.message)) session.unavailable = true;
      throw error;
    });
    const before = measureMemory ? await ask(server, { cmd: 'memory' }, 'memory', 30_000) : undefined;

    const shares = Array.from({ length: clientProcesses }, (_, i) => Math.floor(total / clientProcesses) + (i < total % clientProcesses ? 1 : 0));
    const clients = shares.map(() => spawn(CLIENT, CLIENT_NODE_ARGS));
    // The pacing relay: a message is complete when every client process has reported it.
    const pending = new Map();
    for (const client of clients) {
      client.on('message', (m) => {
        if (m?.type !== 'complete') return;
        const count = (pending.get(m.seq) ?? 0) + 1;
        if (count < clients.length) return void pending.set(m.seq, count);
        pending.delete(m.seq);
        if (server.connected) server.send({ cmd: 'complete', seq: m.seq });
      });
    }
    const connectStarted = performance.now();
    const connected = await Promise.all(
      clients.map((client, i) => {
        // Each process binds to its own slice of the local addresses when there are enough.
        const own = localAddresses.filter((_, k) => clients.length <= localAddresses.length ? k % clients.length === i : true);
        return ask(client, { cmd: 'connect', port: listening.port, n: shares[i], transport: variant.transport, client: clientKind, localAddresses: own, concurrency: 100, timeoutMs: 30_000 }, 'connected', connectTimeoutMs);
      }),
    );
    const failed = connected.reduce((s, c) => s + c.failed, 0);
    if (failed > 0) throw new Error(`${failed} of ${total} clients could not connect`);
    const ready = await ask(server, { cmd: 'await-connections', n: total, timeoutMs: 30_000 }, 'ready', 40_000);
    if (ready.connections !== total) throw new Error(`server registered ${ready.connections} of ${total} connections`);
    session.connectMs = performance.now() - connectStarted;
    if (measureMemory) {
      const after = await ask(server, { cmd: 'memory' }, 'memory', 30_000);
      session.memory = {
        before,
        after,
        rssPerConnection: (after.rss - before.rss) / total,
        heapPerConnection: (after.heapUsed - before.heapUsed) / total,
      };
    }

    let id = 0;
    for (const spec of phases) {
      const run = async (messages, minMs = 0, maxMessages = messages) => {
        pending.clear();
        const phaseId = ++id;
        await Promise.all(clients.map((c) => ask(c, { cmd: 'phase', id: phaseId, messages: maxMessages }, 'armed', 10_000)));
        const machine0 = machineCpu();
        const done = await ask(server, { cmd: 'phase', id: phaseId, messages, minMs, maxMessages, window, burst, payloadBytes: spec.payloadBytes, rate: spec.rate }, 'phase-done', phaseTimeoutMs);
        const machine = machineCpu(machine0);
        const reports = await Promise.all(clients.map((c) => ask(c, { cmd: 'report', id: phaseId, messages: done.sent }, 'report', 10_000)));
        return summarize(spec, done.sent, total, done, reports, machine);
      };
      if (spec.warmupMessages) await run(spec.warmupMessages);
      session.phases.push(await run(spec.messages, spec.minMs, Math.max(spec.messages, spec.maxMessages ?? spec.messages)));
    }
  } catch (error) {
    session.error = error instanceof Error ? error.message : String(error);
  } finally {
    await stopAll(children);
  }
  return session;
}

function ask(child, message, type, timeoutMs) {
  const reply = onceMessage(child, type, timeoutMs, `${message.cmd} -> ${type}`);
  child.send(message);
  return reply;
}

/**
 * Machine-wide CPU time from /proc/stat (all processes, interrupts included), in µs, or the
 * difference from an earlier sample. Shows how much else ran during a phase (other tests on a
 * shared machine, kernel networking not charged to either process). Undefined off Linux.
 */
function machineCpu(since) {
  let line;
  try {
    line = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0];
  } catch {
    return undefined;
  }
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
  const total = ticks.slice(0, 8).reduce((a, b) => a + b, 0);
  const sample = { busyUs: ((total - idle) * 1e6) / TICKS_PER_SEC, totalUs: (total * 1e6) / TICKS_PER_SEC };
  if (!since) return sample;
  return { busyUs: sample.busyUs - since.busyUs, totalUs: sample.totalUs - since.totalUs };
}

function summarize(spec, messages, clients, done, reports, machine) {
  const hist = new Histogram();
  let delivered = 0;
  let lastMs = 0;
  let clientCpuUs = 0;
  let disconnects = 0;
  for (const r of reports) {
    delivered += r.delivered;
    lastMs = Math.max(lastMs, r.lastMs);
    clientCpuUs += r.cpuUs;
    disconnects += r.disconnects;
    hist.addSparse(r.hist, r.latency.maxUs);
    hist.sum += r.latency.meanUs * r.latency.count;
  }
  const latency = hist.summary();
  const durationMs = lastMs - done.startMs;
  return {
    payloadBytes: spec.payloadBytes,
    messages,
    clients,
    expected: messages * clients,
    delivered,
    durationMs,
    deliveriesPerSec: delivered / (durationMs / 1000),
    p50Ms: latency.p50Us / 1000,
    p99Ms: latency.p99Us / 1000,
    maxMs: latency.maxUs / 1000,
    serverCpuUsPerDelivery: (done.cpuUserUs + done.cpuSystemUs) / delivered,
    serverSystemCpuShare: done.cpuSystemUs / (done.cpuUserUs + done.cpuSystemUs),
    clientCpuUsPerDelivery: clientCpuUs / delivered,
    peakRssBytes: done.peakRss,
    // CPU time on the whole machine during the phase that neither the server nor the clients used
    otherCpuShare: machine ? Math.max(0, machine.busyUs - (done.cpuUserUs + done.cpuSystemUs) - clientCpuUs) / Math.max(1, machine.totalUs) : NaN,
    machineBusyShare: machine ? machine.busyUs / Math.max(1, machine.totalUs) : NaN,
    disconnects,
    ...(spec.rate ? { offeredPerSec: spec.rate * clients, capped: done.capped ?? 0, hist: { buckets: hist.sparse(), max: hist.max } } : {}),
    ...(done.stats ? { stats: done.stats } : {}),
  };
}

/**
 * p50 and p99 of every delivery of every repetition together (the fixed-rate run keeps each
 * phase's histogram): three 4-second phases make one 12-second sample, whose p99 one hiccup moves
 * far less than it moves a single phase's.
 */
export function pooledLatency(runs) {
  const hist = new Histogram();
  for (const r of runs) {
    if (!r.hist) return undefined;
    hist.addSparse(r.hist.buckets, r.hist.max);
  }
  return hist.count ? { p50Ms: hist.quantile(0.5) / 1000, p99Ms: hist.quantile(0.99) / 1000, count: hist.count } : undefined;
}

async function stopAll(children) {
  // The server first: it exits and the kernel closes its sockets, so TIME_WAIT lands on the
  // server's side and the clients' ephemeral ports are free for the next session.
  for (const child of children) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      if (child.connected) child.send({ cmd: 'close' });
      else child.kill('SIGKILL');
    } catch {
      child.kill('SIGKILL');
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
}

/**
 * Broadcasts in flight for a burst size when none is given: two bursts, and at least 8 (so
 * bursts of 1 and of 4 get 8, bursts of 10 get 20).
 * @param {number} burst @param {number} [window]
 */
export function windowFor(burst, window) {
  const w = window ?? Math.max(8, 2 * burst);
  if (burst > w) throw new Error(`a burst (${burst}) must not exceed the window (${w})`);
  return w;
}

/**
 * The fan-out matrix: repetitions x burst sizes x client counts x variants, each session running
 * every payload. The variant order rotates with each repetition so that drift in machine load
 * spreads evenly.
 *
 * A session is *disturbed* when, during one of its phases, more than `maxOtherLoad` of the
 * machine's CPU time went to neither bench process (other tests on a shared machine), or when it
 * failed. Disturbed sessions are run again after the matrix, at most `retries` times each, while
 * the time budget allows; each (variant, burst, N, repetition) keeps its least disturbed attempt.
 * @param {{variants: string[], clients: number[], payloads: number[], reps: number, deliveries: number,
 *   window?: number, burst?: number | number[], minMessages?: number, minPhaseMs?: number, budgetMs?: number, maxOtherLoad?: number, retries?: number,
 *   client?: 'lean' | 'library', clientProcesses?: number, baselineDir?: string, log?: (line: string) => void}} plan
 *   `burst` may list several burst sizes; `window` (one for all) defaults to `windowFor(burst)`.
 */
export async function runMatrix(plan) {
  const { variants, clients, payloads, reps, deliveries, window, burst = 4, minMessages = 10, minPhaseMs = 0, budgetMs = Infinity, maxOtherLoad = 0.2, retries = 2, client = 'lean', clientProcesses = 1, baselineDir, log = () => {} } = plan;
  const bursts = Array.isArray(burst) ? burst : [burst];
  const windows = Object.fromEntries(bursts.map((b) => [b, windowFor(b, window)]));
  const started = performance.now();
  const skipped = [];
  const unavailable = new Map();
  /** @type {Map<string, any[]>} attempts per variant|burst|N|rep, in order */
  const attempts = new Map();
  let sessionMs = 0;
  let count = 0;
  let rerun = 0;
  const fits = () => count === 0 || performance.now() - started + sessionMs / count <= budgetMs;

  const run = async (variant, b, n, rep, retry) => {
    const messages = Math.max(minMessages, Math.round(deliveries / n));
    const warmupMessages = Math.max(3, Math.round(messages / 5));
    // A fast variant's phase goes on until it has run minPhaseMs, up to 20x the broadcasts.
    const timed = { minMs: minPhaseMs, maxMessages: messages * 20 };
    const t0 = performance.now();
    const session = await runSession({ variant, clients: n, window: windows[b], burst: b, client, clientProcesses, baselineDir, phases: payloads.map((payloadBytes) => ({ payloadBytes, messages, warmupMessages, ...timed })), log });
    sessionMs += performance.now() - t0;
    count += 1;
    session.rep = rep;
    session.disturbance = disturbance(session);
    if (session.unavailable) {
      unavailable.set(variant, session.error);
      log(`  ${variant}: not available: ${session.error}`);
      return;
    }
    const key = `${variant}|${b}|${n}|${rep}`;
    attempts.set(key, [...(attempts.get(key) ?? []), session]);
    const flag = session.disturbance > maxOtherLoad ? ` [disturbed: ${session.error ? 'failed' : `${Math.round(session.disturbance * 100)} % other load`}]` : '';
    log(`${describeSession(session, rep, performance.now() - t0, bursts.length > 1)}${retry ? ' (re-run)' : ''}${flag}`);
  };

  for (let rep = 0; rep < reps; rep++) {
    for (const b of bursts) {
      for (const n of clients) {
        const order = variants.map((_, i) => variants[(i + rep) % variants.length]);
        for (const variant of order) {
          if (unavailable.has(variant)) continue;
          if (!fits()) {
            skipped.push({ variant, clients: n, burst: b, rep });
            continue;
          }
          await run(variant, b, n, rep, false);
        }
      }
    }
  }
  const best = (list) => list.reduce((a, b) => (b.disturbance < a.disturbance ? b : a));
  for (let round = 0; round < retries; round++) {
    const todo = [...attempts].filter(([, list]) => best(list).disturbance > maxOtherLoad && list.length <= round + 1);
    for (const [key] of todo) {
      if (!fits()) break;
      const [variant, b, n, rep] = key.split('|');
      rerun += 1;
      await run(variant, Number(b), Number(n), Number(rep), true);
    }
  }
  const sessions = [...attempts.values()].map(best);
  return {
    sessions,
    skipped,
    unavailable: Object.fromEntries(unavailable),
    elapsedMs: performance.now() - started,
    // one burst size: as before, numbers; several: lists, with the window of each
    window: bursts.length === 1 ? windows[bursts[0]] : bursts.map((b) => windows[b]),
    burst: bursts.length === 1 ? bursts[0] : bursts,
    minPhaseMs,
    client,
    clientProcesses,
    maxOtherLoad,
    rerun,
    stillDisturbed: sessions.filter((s) => s.disturbance > maxOtherLoad).length,
  };
}

/** The worst share of machine CPU used by something else during a phase; 1 for a failed session. */
function disturbance(session) {
  if (session.error) return 1;
  return Math.max(0, ...session.phases.map((p) => (Number.isFinite(p.otherCpuShare) ? p.otherCpuShare : 0)));
}

function describeSession(s, rep, ms, showBurst = false) {
  const head = `  rep ${rep + 1} ${s.variant.padEnd(showBurst ? 20 : 15)}${showBurst ? ` burst ${String(s.burst).padEnd(2)}` : ''} N=${String(s.clients).padEnd(5)} (${(ms / 1000).toFixed(1)} s)`;
  if (s.error && s.phases.length === 0) return `${head} FAILED: ${s.error}`;
  const parts = s.phases.map(
    (p) => `${p.payloadBytes} B: ${Math.round(p.deliveriesPerSec).toLocaleString('en-US')}/s p99 ${p.p99Ms.toFixed(1)} ms cpu ${p.serverCpuUsPerDelivery.toFixed(1)} µs${p.delivered === p.expected ? '' : ` (${p.delivered}/${p.expected} delivered)`}`,
  );
  return `${head} ${parts.join(' | ')}${s.error ? ` FAILED later: ${s.error}` : ''}`;
}

/**
 * Groups repetitions into cells (variant x burst x clients x payload) with median and min..max.
 * @param {any[]} sessions
 */
export function aggregate(sessions) {
  const cells = new Map();
  for (const s of sessions) {
    for (const p of s.phases) {
      const key = `${s.variant}|${s.burst}|${s.clients}|${p.payloadBytes}`;
      const cell = cells.get(key) ?? { variant: s.variant, burst: s.burst, clients: s.clients, payloadBytes: p.payloadBytes, runs: [] };
      cell.runs.push({ ...p, rep: s.rep });
      cells.set(key, cell);
    }
  }
  const metrics = ['deliveriesPerSec', 'p50Ms', 'p99Ms', 'serverCpuUsPerDelivery', 'clientCpuUsPerDelivery', 'peakRssBytes'];
  return [...cells.values()].map((cell) => {
    const out = { ...cell, complete: cell.runs.every((r) => r.delivered === r.expected), pooled: pooledLatency(cell.runs) };
    for (const m of metrics) {
      const values = cell.runs.map((r) => r[m]);
      out[m] = { median: median(values), ...range(values) };
    }
    return out;
  });
}

/**
 * Fan-out latency at a fixed offered load (open loop): for each N and payload, every variant gets
 * the same broadcast rate, `rateOf(n, payloadBytes)` broadcasts per second, for `seconds` after a
 * one-second warm-up. Latency runs from each broadcast's due time, so a variant that falls behind
 * is charged for it. At most `window` broadcasts are in flight; a phase that hits that cap is
 * counted (`capped`): it was saturated, not paced.
 * Sessions start only while `deadline` (a `performance.now()` time) has not passed.
 * @param {{variants: string[], clients: number[], payloads: number[], reps: number, rateOf: (n: number, payloadBytes: number) => number | undefined,
 *   seconds?: number, window?: number, client?: 'lean' | 'library', deadline?: number, log?: (line: string) => void}} plan
 */
export async function runLatency(plan) {
  const { variants, clients, payloads, reps, rateOf, seconds = 3, window = 16, client = 'lean', deadline = Infinity, baselineDir, log = () => {} } = plan;
  const started = performance.now();
  const sessions = [];
  const skipped = [];
  for (let rep = 0; rep < reps; rep++) {
    for (const n of clients) {
      const phases = payloads
        .map((payloadBytes) => ({ payloadBytes, rate: rateOf(n, payloadBytes) }))
        .filter((p) => Number.isFinite(p.rate) && p.rate > 0)
        .map((p) => ({ ...p, messages: Math.max(10, Math.round(p.rate * seconds)), warmupMessages: Math.max(3, Math.round(p.rate)) }));
      if (phases.length === 0) continue;
      const order = variants.map((_, i) => variants[(i + rep) % variants.length]);
      for (const variant of order) {
        if (performance.now() > deadline) {
          skipped.push({ variant, clients: n, rep });
          continue;
        }
        const t0 = performance.now();
        const session = await runSession({ variant, clients: n, window, client, phases, baselineDir, log });
        session.rep = rep;
        sessions.push(session);
        const parts = session.phases.map((p) => `${p.payloadBytes} B at ${Math.round(p.offeredPerSec)}/s: p50 ${p.p50Ms.toFixed(1)} p99 ${p.p99Ms.toFixed(1)} ms cpu ${p.serverCpuUsPerDelivery.toFixed(1)} µs${p.capped ? ' (capped)' : ''}`);
        log(`  latency rep ${rep + 1} ${variant.padEnd(15)} N=${String(n).padEnd(5)} (${((performance.now() - t0) / 1000).toFixed(1)} s) ${parts.join(' | ')}${session.error ? ` FAILED: ${session.error}` : ''}`);
      }
    }
  }
  if (skipped.length) log(`  latency: skipped ${skipped.length} session(s) to stay within the time budget`);
  return { sessions, skipped, window, seconds, elapsedMs: performance.now() - started };
}

/**
 * Idle connections at scale: per variant, GC'd memory before and after `clients` connections
 * (spread over two client processes and four loopback addresses), then one broadcast to all.
 * @param {{variants: string[], clients: number, clientProcesses?: number, payloadBytes?: number, client?: 'lean' | 'library', baselineDir?: string, log?: (line: string) => void}} plan
 */
export async function runScale(plan) {
  const { variants, clients, clientProcesses = 2, payloadBytes = 256, client = 'lean', baselineDir, log = () => {} } = plan;
  const started = performance.now();
  const results = [];
  const unavailable = {};
  for (const variant of variants) {
    const t0 = performance.now();
    const s = await runSession({
      variant,
      clients,
      clientProcesses,
      client,
      measureMemory: true,
      baselineDir,
      window: 1,
      phases: [{ payloadBytes, messages: 1 }],
      connectTimeoutMs: 300_000,
      log,
    });
    if (s.unavailable) {
      unavailable[variant] = s.error;
      log(`  ${variant}: not available: ${s.error}`);
      continue;
    }
    results.push(s);
    const p = s.phases[0];
    const m = s.memory;
    log(
      `  ${variant.padEnd(20)} ${clients} idle connections in ${(s.connectMs / 1000).toFixed(1)} s` +
        (m ? `, ${(m.rssPerConnection / 1024).toFixed(1)} KiB RSS and ${(m.heapPerConnection / 1024).toFixed(1)} KiB heap per connection` : '') +
        (p ? `, broadcast reached ${p.delivered}/${p.expected} in ${p.durationMs.toFixed(0)} ms` : '') +
        (s.error ? ` FAILED: ${s.error}` : '') +
        ` (${((performance.now() - t0) / 1000).toFixed(1)} s)`,
    );
  }
  return { clients, clientProcesses, client, payloadBytes, results, unavailable, elapsedMs: performance.now() - started };
}
