// Shared by the orchestrator, the server process and the client process.

/**
 * One clock for every process on this machine: milliseconds of CLOCK_MONOTONIC. Both
 * `process.hrtime` and `performance.now()` read libuv's uv_hrtime (CLOCK_MONOTONIC), which is
 * the same system-wide on Linux, so a timestamp taken in the server process can be subtracted
 * from one taken in the client process without any offset estimation (unlike
 * `performance.timeOrigin + performance.now()`, whose origin each process samples separately).
 */
const origin = Number(process.hrtime.bigint()) / 1e6 - performance.now();
export const clock = () => origin + performance.now();

/**
 * Log-linear latency histogram in microseconds: exact below 128 µs, then 64 sub-buckets per
 * power of two (≤ 1.6 % error), up to ~35 minutes. Fixed memory, O(1) record.
 */
const SUB_BITS = 7;
const SUB = 1 << SUB_BITS;
export class Histogram {
  constructor() {
    this.counts = new Float64Array(SUB + (32 - SUB_BITS) * (SUB / 2));
    this.count = 0;
    this.sum = 0;
    this.max = 0;
  }

  /** @param {number} us */
  record(us) {
    const v = us < 0 ? 0 : Math.min(0x7fffffff, Math.floor(us));
    this.count += 1;
    this.sum += v;
    if (v > this.max) this.max = v;
    this.counts[Histogram.index(v)] += 1;
  }

  /** @param {number} v */
  static index(v) {
    if (v < SUB) return v;
    const exp = 32 - Math.clz32(v) - SUB_BITS; // >= 1; (v >>> exp) is in [SUB/2, SUB)
    return SUB + (exp - 1) * (SUB / 2) + ((v >>> exp) - SUB / 2);
  }

  /** Lower bound of a bucket, in µs. @param {number} i */
  static lower(i) {
    if (i < SUB) return i;
    const k = i - SUB;
    const exp = Math.floor(k / (SUB / 2)) + 1;
    return ((k % (SUB / 2)) + SUB / 2) * 2 ** exp;
  }

  /** @param {number} q in [0, 1] @returns {number} µs (bucket midpoint) */
  quantile(q) {
    if (this.count === 0) return NaN;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i];
      if (seen >= rank) {
        const lo = Histogram.lower(i);
        const hi = Histogram.lower(i + 1);
        return Math.min(this.max, (lo + hi) / 2);
      }
    }
    return this.max;
  }

  /** The non-empty buckets as [index, count] pairs: a histogram to send or keep compactly. */
  sparse() {
    const pairs = [];
    for (let i = 0; i < this.counts.length; i++) if (this.counts[i] > 0) pairs.push([i, this.counts[i]]);
    return pairs;
  }

  /** Adds another histogram's `sparse()` buckets; `max` is its largest value, in µs. */
  addSparse(pairs, max) {
    for (const [i, c] of pairs) {
      this.counts[i] += c;
      this.count += c;
    }
    if (max > this.max) this.max = max;
  }

  summary() {
    return {
      count: this.count,
      meanUs: this.count ? this.sum / this.count : NaN,
      p50Us: this.quantile(0.5),
      p90Us: this.quantile(0.9),
      p99Us: this.quantile(0.99),
      maxUs: this.max,
    };
  }
}

/** @param {number[]} values */
export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** @param {number[]} values */
export function range(values) {
  const v = values.filter((x) => Number.isFinite(x));
  return v.length ? { min: Math.min(...v), max: Math.max(...v) } : { min: NaN, max: NaN };
}

/**
 * A realistic structured message of about `bytes` bytes of JSON (a dashboard update: a list of
 * records), so that serializing it per recipient costs what it costs in real code. The header
 * (`type`, `seq`, `t`) comes first: ws clients read `seq` and `t` from the first bytes without
 * parsing the whole message. `items` is shared by every message of a phase; `pad` makes the
 * size exact for a 7-digit seq and a 13-character timestamp (real sizes differ by a few bytes).
 * @param {number} bytes
 */
export function payloadTemplate(bytes) {
  const items = [];
  const size = (extra) => JSON.stringify({ type: 'bench', seq: 1234567, t: 123456789.123, items, pad: extra }).length;
  for (let i = 0; size('') < bytes - 70; i++) {
    items.push({ id: i, user: `user-${1000 + i}`, score: Math.round(((i * 7919) % 1000) * 1.37) / 1000, online: i % 3 !== 0, tags: ['a', 'b'] });
  }
  const pad = 'x'.repeat(Math.max(0, bytes - size('')));
  return { items, pad };
}

/** @param {{items: unknown[], pad: string}} template @param {number} seq @param {number} t */
export function makeMessage(template, seq, t) {
  return { type: 'bench', seq, t: Math.round(t * 1000) / 1000, items: template.items, pad: template.pad };
}

// `"seq":` as bytes: 0x22 s e q 0x22 :
const Q = 0x22;
const S = 0x73;
const E = 0x65;
const Q_ = 0x71;
const COLON = 0x3a;
/**
 * Reads `seq` and `t` from the head of a raw JSON message (`{"type":"bench","seq":12,"t":3.5,...`,
 * or socket.io's `42["message",{"type":"bench","seq":12,...`) in `data[start..end)` without
 * decoding or parsing the rest, in plain JavaScript (no native call, no string): the client
 * process must stay cheap, it shares 2 cores with the server. Returns false when the message is
 * not a bench message.
 * @param {Buffer} data @param {{seq: number, t: number}} out @param {number} [start] @param {number} [end]
 */
export function readHeader(data, out, start = 0, end = data.length) {
  const last = Math.min(end, start + 48) - 6;
  let at = -1;
  for (let i = start; i <= last; i++) {
    if (data[i] === Q && data[i + 1] === S && data[i + 2] === E && data[i + 3] === Q_ && data[i + 4] === Q && data[i + 5] === COLON) {
      at = i;
      break;
    }
  }
  if (at < 0) return false;
  let i = at + 6;
  let seq = 0;
  for (let c = data[i]; i < end && c >= 48 && c <= 57; c = data[++i]) seq = seq * 10 + (c - 48);
  // `,"t":` follows: a non-negative decimal
  i += 5;
  let whole = 0;
  for (let c = data[i]; i < end && c >= 48 && c <= 57; c = data[++i]) whole = whole * 10 + (c - 48);
  let fraction = 0;
  let scale = 1;
  if (i < end && data[i] === 46) {
    for (let c = data[++i]; i < end && c >= 48 && c <= 57; c = data[++i]) {
      fraction = fraction * 10 + (c - 48);
      scale *= 10;
    }
  }
  out.seq = seq;
  out.t = whole + fraction / scale;
  return true;
}

/** The message the child processes speak over IPC; a helper to wait for one of them. */
export function onceMessage(child, type, timeoutMs, what = type) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    const onMessage = (m) => {
      if (m && m.type === 'error') {
        cleanup();
        reject(new Error(`${what}: child reported: ${m.message}`));
      } else if (m && m.type === type) {
        cleanup();
        resolve(m);
      }
    };
    const onExit = (code, signal) => {
      cleanup();
      reject(new Error(`child exited (${signal ?? code}) while waiting for ${what}`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}
