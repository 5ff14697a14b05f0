// Prometheus metrics for the sample apps, served by the app's own HTTP server on GET /metrics.
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AggregationType, MeterProvider } from '@opentelemetry/sdk-metrics';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';

/**
 * Broadcasts take well under a millisecond to a few milliseconds (the histogram is in seconds): the
 * SDK's default buckets (0, 5, 10, 25 ... 10000) would put nearly all of them in one bucket.
 * @type {import('@opentelemetry/sdk-metrics').ViewOptions[]}
 */
export const METRIC_VIEWS = [
  {
    instrumentName: 'bcast.broadcast.duration',
    aggregation: { type: AggregationType.EXPLICIT_BUCKET_HISTOGRAM, options: { boundaries: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5] } },
  },
];

/** A Prometheus reader that does not open a port of its own: the app serves it on GET /metrics. */
export function prometheusReader() {
  return new PrometheusExporter({ preventServerStart: true });
}

/** @type {PrometheusExporter | undefined} */
let globalReader;
/** @type {(() => Promise<void>) | undefined} */
let globalShutdown;

/**
 * Called by the SDK setup (telemetry.mjs) once it registered a global MeterProvider with `reader`.
 * @param {PrometheusExporter} reader
 * @param {() => Promise<void>} shutdown flushes and stops the SDK
 */
export function useGlobalTelemetry(reader, shutdown) {
  globalReader = reader;
  globalShutdown = shutdown;
}

/** Flushes pending spans and stops the SDK, when one was started in this process. */
export async function shutdownGlobalTelemetry() {
  await globalShutdown?.();
}

/**
 * @typedef {object} AppMetrics
 * @property {PrometheusExporter} prometheus serves GET /metrics
 * @property {{ meterProvider?: import('@opentelemetry/api').MeterProvider }} broadcasterOptions spread into the Broadcaster's options
 * @property {() => Promise<void>} shutdown
 */

/**
 * Metrics of one app: the global SDK's Prometheus reader when the process was started with
 * `--import ./instrumentation.mjs`, otherwise a private MeterProvider given to the app's Broadcaster
 * (tests, or several apps in one process).
 * @param {string} serviceName
 * @returns {AppMetrics}
 */
export function appMetrics(serviceName) {
  if (globalReader) return { prometheus: globalReader, broadcasterOptions: {}, shutdown: async () => {} };
  const prometheus = prometheusReader();
  const meterProvider = new MeterProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName }),
    readers: [prometheus],
    views: METRIC_VIEWS,
  });
  return { prometheus, broadcasterOptions: { meterProvider }, shutdown: () => meterProvider.shutdown() };
}
