// What the page's "Measured" panel shows, served as GET /dashboard.json (the page polls it once a
// second): the app's last broadcast as bcast counted it (delivered / failed / dropped / removed,
// duration) with a link to its trace, deliveries per second over the last minute, health and
// circuit states. Everything comes from the Broadcaster's own results, getStats() and
// getHealthStatus(); the app only remembers the last result and samples one counter.
import { SpanKind, SpanStatusCode, TraceFlags, isSpanContextValid, trace } from '@opentelemetry/api';

const WINDOW_SECONDS = 60;
const tracer = trace.getTracer('@bcast/app-shared');

/**
 * Runs `fn` inside a span and hands it the span: the active one when there is one (the HTTP server
 * span of POST /broadcast, from the HTTP instrumentation), else a new span `name` made active
 * around `fn`. A broadcast made inside starts its `bcast.broadcast` span as a child, so the trace
 * id of that span is the broadcast's trace. Without an SDK both are no-ops.
 * @template T
 * @param {string} name
 * @param {(span: import('@opentelemetry/api').Span) => Promise<T>} fn
 * @returns {Promise<T>}
 */
export function inSpan(name, fn) {
  const active = trace.getActiveSpan();
  if (active && isSpanContextValid(active.spanContext())) return fn(active);
  return tracer.startActiveSpan(name, { kind: SpanKind.SERVER }, async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
      throw error;
    } finally {
      span.end();
    }
  });
}

/** The trace id of a span when it is recorded and sampled (so the trace exists in the backend). */
export function traceIdOf(/** @type {import('@opentelemetry/api').Span | undefined} */ span) {
  const context = span?.spanContext();
  if (!context || !isSpanContextValid(context) || (context.traceFlags & TraceFlags.SAMPLED) === 0) return undefined;
  return context.traceId;
}

/**
 * `BCAST_TRACE_URL` (e.g. `http://localhost:16686/trace/{traceId}` for Jaeger) filled in with a
 * trace id; undefined without a template, a trace id, or when the result is not an http(s) URL.
 * @param {string | undefined} template
 * @param {string | undefined} traceId
 */
export function traceLink(template, traceId) {
  if (!template || !traceId || !template.includes('{traceId}')) return undefined;
  try {
    const url = new URL(template.replaceAll('{traceId}', traceId));
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : undefined;
  } catch {
    return undefined;
  }
}

/**
 * @typedef {object} LastBroadcast
 * @property {string} operation
 * @property {string} [messageType]
 * @property {number} recipients
 * @property {number} delivered
 * @property {number} failed
 * @property {number} dropped
 * @property {number} removed
 * @property {number} durationMs
 * @property {string} backplane
 * @property {string} at ISO time
 * @property {string} [traceId]
 * @property {string} [traceUrl]
 */

/**
 * @param {{ broadcaster: import('@bcast/core').Broadcaster, traceUrl?: string | undefined }} options
 */
export function createDashboard({ broadcaster, traceUrl }) {
  /** @type {LastBroadcast | undefined} */
  let last;
  /** Deliveries in each of the last WINDOW_SECONDS seconds, oldest first. */
  const perSecond = new Array(WINDOW_SECONDS).fill(0);
  let counted = broadcaster.getStats().deliveries;
  const sample = () => {
    const deliveries = broadcaster.getStats().deliveries;
    perSecond.push(Math.max(0, deliveries - counted));
    perSecond.shift();
    counted = deliveries;
  };
  const timer = setInterval(sample, 1_000);
  timer.unref();

  return {
    /**
     * Remembers a broadcast the app made (chat messages, POST /broadcast), with its trace.
     * @param {import('@bcast/core').BroadcastResult} result
     * @param {import('@opentelemetry/api').Span | undefined} span the span it was made under
     */
    record(result, span) {
      const traceId = traceIdOf(span);
      const link = traceLink(traceUrl, traceId);
      last = {
        operation: result.operation,
        ...(result.messageType === undefined ? {} : { messageType: result.messageType }),
        recipients: result.recipients,
        delivered: result.delivered,
        failed: result.failed,
        dropped: result.dropped,
        removed: result.removed,
        durationMs: result.durationMs,
        backplane: result.backplane,
        at: new Date().toISOString(),
        ...(traceId ? { traceId } : {}),
        ...(link ? { traceUrl: link } : {}),
      };
    },
    /** What GET /dashboard.json answers. */
    snapshot() {
      const stats = broadcaster.getStats();
      const health = broadcaster.getHealthStatus();
      return {
        last: last ?? null,
        deliveries: { perSecond: [...perSecond], windowSeconds: WINDOW_SECONDS, total: stats.deliveries },
        broadcasts: stats.broadcasts,
        connections: stats.connections,
        health: { status: health.status, reasons: health.reasons },
        circuits: Object.fromEntries(Object.entries(health.reliability.circuits).map(([scope, s]) => [scope, s.state])),
        backplane: health.backplane.status,
        traceLinks: Boolean(traceUrl),
      };
    },
    close() {
      clearInterval(timer);
    },
  };
}
