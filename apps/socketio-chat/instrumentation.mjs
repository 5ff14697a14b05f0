// OpenTelemetry SDK for this app; load it first: node --import ./instrumentation.mjs server.mjs
import { startTelemetry } from '@bcast/app-shared/telemetry';

await startTelemetry({ serviceName: 'bcast-socketio-chat' });
