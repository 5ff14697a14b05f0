// Real export: each app runs in its own process with its real OpenTelemetry SDK
// (node --import ./instrumentation.mjs server.mjs), exporting OTLP/HTTP to a loopback receiver here.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APPS, attr, connectClient, postJson, startAppProcess, startOtlpReceiver, type AppProcess, type OtlpReceiver, type OtlpSpan } from './helpers.js';
import { guardProcess } from '../../tests/support/processGuard.js';

guardProcess();

const SERVER = 2; // OTLP SpanKind: SPAN_KIND_SERVER
const TRACE_URL = 'http://jaeger.test:16686/trace/{traceId}';
const PRODUCER = 4;

describe.each(APPS)('$name exports its traces over OTLP', (app) => {
  let receiver: OtlpReceiver;
  let proc: AppProcess;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    proc = await startAppProcess(app, { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: '50', BCAST_TRACE_URL: TRACE_URL });
  });
  afterAll(async () => {
    await proc?.stop();
    await receiver?.close();
  });

  it('makes bcast.broadcast a child of the POST /broadcast server span, with the counts', async () => {
    const client = await connectClient(app, proc.url, 'carol');
    try {
      await client.join('ops');
      const res = await postJson(`${proc.url}/broadcast`, { target: 'room', room: 'ops', message: { type: 'alert', text: 'disk full' } });
      expect(res.body.result).toMatchObject({ recipients: 1, delivered: 1 });
      await client.next((m) => m?.text === 'disk full');

      const http = await receiver.waitForSpan((s) => s.kind === SERVER && attr(s, 'http.request.method') === 'POST' && attr(s, 'url.path') === '/broadcast', 'the HTTP server span');
      const broadcast = await receiver.waitForSpan((s: OtlpSpan) => s.name === 'bcast.broadcast' && s.traceId === http.traceId, 'bcast.broadcast in the same trace');
      expect(broadcast.parentSpanId).toBe(http.spanId);
      expect(broadcast.kind).toBe(PRODUCER);
      expect(broadcast.scope).toBe('@bcast/core');
      expect(broadcast.service).toBe(app.serviceName);
      expect(http.service).toBe(app.serviceName);
      expect(attr(broadcast, 'bcast.operation')).toBe('room');
      expect(attr(broadcast, 'messaging.system')).toBe('bcast');
      expect(attr(broadcast, 'messaging.operation.type')).toBe('send');
      // Room names go on spans only with traceRoomNames: true, which the sample apps do not set.
      expect(attr(broadcast, 'messaging.destination.name')).toBeUndefined();
      expect(attr(broadcast, 'bcast.recipients')).toBe(1);
      expect(attr(broadcast, 'bcast.delivered')).toBe(1);
      expect(attr(broadcast, 'bcast.failed')).toBe(0);
      expect(attr(http, 'http.response.status_code')).toBe(200);
      expect([...receiver.contentTypes]).toEqual(['application/json']);
      // socket.io's long-polling, /metrics scrapes and /health probes make no spans.
      await fetch(`${proc.url}/metrics`);
      await postJson(`${proc.url}/broadcast`, { target: 'all', message: 'marker' });
      await receiver.waitForSpan((s) => s.name === 'bcast.broadcast' && attr(s, 'bcast.operation') === 'all' && s.parentSpanId !== undefined && s.parentSpanId !== '', 'the marker broadcast');
      expect(receiver.spans.filter((s) => s.kind === SERVER && attr(s, 'url.path') === '/metrics')).toEqual([]);
    } finally {
      await client.close();
    }
  });
  it("links the dashboard's last broadcast to its trace: POST /broadcast's and a chat message's", async () => {
    const client = await connectClient(app, proc.url, 'erin');
    try {
      await client.join('ops');
      await postJson(`${proc.url}/broadcast`, { target: 'room', room: 'ops', message: { type: 'alert', text: 'linked' } });
      let board = (await (await fetch(`${proc.url}/dashboard.json`)).json()) as any;
      expect(board.traceLinks).toBe(true);
      expect(board.last).toMatchObject({ operation: 'room', messageType: 'alert', delivered: 1, traceId: expect.stringMatching(/^[0-9a-f]{32}$/) });
      expect(board.last.traceUrl).toBe(`http://jaeger.test:16686/trace/${board.last.traceId}`);
      const posted = await receiver.waitForSpan((s) => s.name === 'bcast.broadcast' && s.traceId === board.last.traceId, 'the broadcast in the linked trace');
      expect(attr(posted, 'bcast.delivered')).toBe(1);
      const http = await receiver.waitForSpan((s) => s.spanId === posted.parentSpanId, "the broadcast's parent");
      expect(attr(http, 'url.path')).toBe('/broadcast');

      // A chat message from a client: the app runs it in a span of its own, parent of the broadcast.
      client.send({ type: 'chat', to: 'room', room: 'ops', text: 'from a client' });
      await client.next((m) => m?.text === 'from a client');
      board = (await (await fetch(`${proc.url}/dashboard.json`)).json()) as any;
      expect(board.last).toMatchObject({ operation: 'room', messageType: 'chat', delivered: 1 });
      const chat = await receiver.waitForSpan((s) => s.name === 'chat room' && s.traceId === board.last.traceId, 'the chat span in the linked trace');
      expect(chat.kind).toBe(SERVER);
      expect(chat.parentSpanId ?? '').toBe('');
      const relayed = await receiver.waitForSpan((s) => s.name === 'bcast.broadcast' && s.parentSpanId === chat.spanId, 'the chat broadcast under it');
      expect(attr(relayed, 'bcast.delivered')).toBe(1);
      // The page's poll of /dashboard.json makes no spans.
      expect(receiver.spans.filter((s) => attr(s, 'url.path') === '/dashboard.json')).toEqual([]);
    } finally {
      await client.close();
    }
  });
});

describe('without a collector', () => {
  it('keeps working and says once that export failed, then once that it recovered', async () => {
    const app = APPS[0]!;
    const receiver = await startOtlpReceiver();
    receiver.status = 400; // a collector that refuses everything: each export fails at once
    const proc = await startAppProcess(app, { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: '20' });
    try {
      const failure = /could not export traces/g;
      for (let i = 0; i < 4; i++) {
        const before = receiver.requests;
        expect((await postJson(`${proc.url}/broadcast`, { target: 'all', message: `m${i}` })).status).toBe(200);
        await receiver.waitForRequests(before + 1);
        if (i === 0) await proc.waitForOutput(failure, 'the export failure line');
      }
      receiver.status = 200;
      await postJson(`${proc.url}/broadcast`, { target: 'all', message: 'after' });
      await proc.waitForOutput(/exporting traces to .* again/, 'the recovery line');
      expect(proc.output().match(failure)).toHaveLength(1);
      expect(receiver.requests).toBeGreaterThanOrEqual(5);
    } finally {
      await proc.stop();
      await receiver.close();
    }
  });
});
