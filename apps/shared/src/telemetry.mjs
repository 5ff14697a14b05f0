// The OpenTelemetry SDK for the sample apps: traces over OTLP/HTTP (JSON) to
// OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318), metrics for Prometheus on the app's
// own GET /metrics (and over OTLP too when OTEL_METRICS_EXPORTER contains "otlp"), HTTP server and
// client spans from @opentelemetry/instrumentation-http. Libraries (@bcast/*) only use the OTel API;
// the SDK lives here, in the application.
//
// Load it before the app with `node --import ./instrumentation.mjs server.mjs`, so that the HTTP
// instrumentation is in place before the app's first request.
import { register } from 'node:module';
import { DiagLogLevel, diag, metrics } from '@opentelemetry/api';
import { setGlobalErrorHandler } from '@opentelemetry/core';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import { MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import { createAddHookMessageChannel } from 'import-in-the-middle';
import { METRIC_VIEWS, prometheusReader, useGlobalTelemetry } from './metrics.mjs';

/** @typedef {{ serviceName: string, shutdown: () => Promise<void> }} Telemetry */

/** Longest time the SDK's shutdown may take to flush spans and metrics. */
const SHUTDOWN_FLUSH_MS = 500;

/** @type {Telemetry | undefined} */
let active;

/** Paths whose requests make no HTTP spans: socket.io long-polling, scrapes, health probes and the page's dashboard polls. */
const UNTRACED = [/^\/socket\.io\//, /^\/metrics(?:\?|$)/, /^\/health(?:\?|$)/, /^\/dashboard\.json(?:\?|$)/, /^\/favicon\.ico/];

/**
 * Starts the SDK once per process and registers it globally (tracer provider, meter provider,
 * context manager, propagators, HTTP instrumentation).
 * @param {{ serviceName: string }} options
 * @returns {Promise<Telemetry>}
 */
export async function startTelemetry({ serviceName }) {
  if (active) return active;
  // ESM: the app's `import http from 'node:http'` is instrumented through import-in-the-middle's
  // loader hook, limited to the modules an instrumentation asks for.
  const { registerOptions, waitForAllMessagesAcknowledged } = createAddHookMessageChannel();
  register('import-in-the-middle/hook.mjs', import.meta.url, registerOptions);

  const logger = console;
  diag.setLogger(onceLogger(logger), { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true });
  // Export failures are reported once by ReportOnce below; the SDK's own error handler would log
  // every failed batch through diag.
  setGlobalErrorHandler(() => {});

  const name = process.env.OTEL_SERVICE_NAME || serviceName;
  const resource = defaultResource().merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: name }));
  const endpoint = process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || `${(process.env.OTEL_EXPORTER_OTLP_ENDPOINT || 'http://localhost:4318').replace(/\/$/, '')}/v1/traces`;

  const spanExporter = new ReportOnce(new OTLPTraceExporter(), `traces to ${endpoint}`, logger);
  const tracerProvider = new NodeTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(spanExporter)] });
  tracerProvider.register();

  const prometheus = prometheusReader();
  /** @type {import('@opentelemetry/sdk-metrics').IMetricReader[]} */
  const readers = [prometheus];
  const reporters = [spanExporter];
  if ((process.env.OTEL_METRICS_EXPORTER ?? '').split(',').includes('otlp')) {
    const metricExporter = new ReportOnce(new OTLPMetricExporter(), 'metrics over OTLP', logger);
    reporters.push(metricExporter);
    readers.push(new PeriodicExportingMetricReader({ exporter: metricExporter }));
  }
  const meterProvider = new MeterProvider({ resource, readers, views: METRIC_VIEWS });
  metrics.setGlobalMeterProvider(meterProvider);

  registerInstrumentations({
    tracerProvider,
    meterProvider,
    instrumentations: [
      new HttpInstrumentation({
        ignoreIncomingRequestHook: (request) => UNTRACED.some((path) => path.test(request.url ?? '')),
        // The apps make no outgoing HTTP calls of their own besides the exporter's.
        disableOutgoingRequestInstrumentation: true,
      }),
    ],
  });
  await waitForAllMessagesAcknowledged();
  // On the way out (Ctrl-C) the SDK flushes what it holds, for SHUTDOWN_FLUSH_MS at most. Without
  // a collector the OTLP exporter would retry a refused connection for up to 10 s: it gives up
  // then, quietly (the spans are dropped; nobody was listening for them).
  const shutdown = async () => {
    for (const reporter of reporters) reporter.stopping = true;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    const deadline = new Promise((resolve) => {
      timer = setTimeout(resolve, SHUTDOWN_FLUSH_MS);
      timer.unref();
    });
    await Promise.race([Promise.allSettled([tracerProvider.shutdown(), meterProvider.shutdown()]), deadline]);
    clearTimeout(timer);
  };
  useGlobalTelemetry(prometheus, shutdown);

  active = { serviceName: name, shutdown };
  return active;
}

/** The SDK started by {@link startTelemetry} in this process, if any. */
export function activeTelemetry() {
  return active;
}

/**
 * An exporter wrapper that says once that export failed (and once that it recovered), instead of
 * one line per batch while no collector is running; and nothing once the app is stopping (then a
 * batch that cannot be sent is given up at once when export was already failing). Wraps a
 * SpanExporter or a PushMetricExporter.
 */
class ReportOnce {
  #failing = false;
  /** Set by shutdown: no more reports. */
  stopping = false;

  /**
   * @param {any} exporter a SpanExporter or PushMetricExporter
   * @param {string} what
   * @param {Pick<Console, 'warn' | 'info'>} logger
   */
  constructor(exporter, what, logger) {
    this.exporter = exporter;
    this.what = what;
    this.logger = logger;
    if (typeof exporter.selectAggregationTemporality === 'function') {
      this.selectAggregationTemporality = exporter.selectAggregationTemporality.bind(exporter);
    }
    if (typeof exporter.selectAggregation === 'function') {
      this.selectAggregation = exporter.selectAggregation.bind(exporter);
    }
  }

  /**
   * @param {any} items
   * @param {(result: import('@opentelemetry/core').ExportResult) => void} done
   */
  export(items, done) {
    if (this.stopping && this.#failing) return done({ code: 1, error: new Error('not exported: the app is stopping and the collector is unreachable') });
    this.exporter.export(items, (/** @type {import('@opentelemetry/core').ExportResult} */ result) => {
      if (this.stopping) return done(result);
      if (result.code !== 0 && !this.#failing) {
        this.#failing = true;
        const reason = result.error?.message || 'unknown error';
        this.logger.warn(`[telemetry] could not export ${this.what}: ${reason}. The app keeps running; this is reported once until an export succeeds (is a collector listening? see docs/observability.md)`);
      } else if (result.code === 0 && this.#failing) {
        this.#failing = false;
        this.logger.info(`[telemetry] exporting ${this.what} again`);
      }
      done(result);
    });
  }

  shutdown() {
    return this.exporter.shutdown();
  }

  forceFlush() {
    return this.exporter.forceFlush?.() ?? Promise.resolve();
  }
}

/**
 * A diag logger that prints each distinct message once.
 * @param {Pick<Console, 'warn' | 'error' | 'info' | 'debug'>} logger
 * @returns {import('@opentelemetry/api').DiagLogger}
 */
function onceLogger(logger) {
  const seen = new Set();
  /** @param {'error' | 'warn' | 'info' | 'debug'} level */
  const at = (level) => (/** @type {string} */ message, /** @type {unknown[]} */ ...args) => {
    const key = `${level}:${String(message).slice(0, 200)}`;
    if (seen.has(key) || seen.size > 1_000) return;
    seen.add(key);
    logger[level](`[otel] ${message}`, ...args);
  };
  return { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug'), verbose: at('debug') };
}
