// `pnpm demo` (node apps/demo.mjs, after the build) stopped with Ctrl-C, on a machine without a
// trace collector: it exits with 0 within 2 s and prints no export warning. Ctrl-C in a terminal
// signals the whole process group, so the test starts the demo in a group of its own and sends
// SIGINT to that group: the launcher and its three app processes get it, as they would.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { postJson } from './helpers.js';
import { guardProcess } from '../../tests/support/processGuard.js';

guardProcess();

const DEMO = fileURLToPath(new URL('../demo.mjs', import.meta.url));

/** A loopback port nothing listens on (it was free a moment ago): a collector that is not running. */
async function closedPort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('the demo launcher', () => {
  it('stops on Ctrl-C within 2 s with status 0, without an export warning, when no collector runs', async () => {
    const env: Record<string, string | undefined> = {
      ...process.env,
      WS_CHAT_PORT: '0',
      SOCKETIO_CHAT_PORT: '0',
      EXPRESS_CHAT_PORT: '0',
      HOST: '127.0.0.1',
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${await closedPort()}`,
    };
    // The SDK's defaults: spans wait up to 5 s for their batch, so they are still there at Ctrl-C.
    for (const key of Object.keys(env)) if (key.startsWith('OTEL_') && key !== 'OTEL_EXPORTER_OTLP_ENDPOINT') delete env[key];
    const demo = spawn(process.execPath, [DEMO], { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const changed = new Set<() => void>();
    for (const stream of [demo.stdout, demo.stderr]) {
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        output += chunk;
        for (const c of changed) c();
      });
    }
    const exited = once(demo, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    const killGroup = (signal: NodeJS.Signals): void => {
      try {
        process.kill(-(demo.pid as number), signal);
      } catch {
        // already gone
      }
    };
    let socket: WebSocket | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (!output.includes('Ctrl-C stops everything.')) return;
          changed.delete(check);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => reject(new Error(`the demo did not start; output:\n${output}`)), 30_000);
        changed.add(check);
        demo.once('exit', () => reject(new Error(`the demo exited early; output:\n${output}`)));
        check();
      });
      const urls = [...output.matchAll(/^\s+(ws-chat|socketio-chat|express-chat)\s+(http:\/\/\S+)/gm)].map((m) => m[2] as string);
      expect(urls).toHaveLength(3);

      // Something to shut down: a connected client to drain, and a span per app waiting for its batch.
      socket = new WebSocket(`${urls[0]!.replace(/^http/, 'ws')}/ws?name=dave`);
      await once(socket, 'open');
      const closed = once(socket, 'close');
      for (const url of urls) expect((await postJson(`${url}/broadcast`, { target: 'all', message: { text: 'before Ctrl-C' } })).status).toBe(200);

      const started = performance.now();
      killGroup('SIGINT');
      const timer = setTimeout(() => killGroup('SIGKILL'), 5_000);
      const [code, signal] = await exited;
      const elapsedMs = performance.now() - started;
      clearTimeout(timer);

      console.log(`[demo.test] Ctrl-C to exit: ${Math.round(elapsedMs)} ms`);
      expect({ code, signal }).toEqual({ code: 0, signal: null });
      expect(elapsedMs).toBeLessThan(2_000);
      const [closeCode] = (await closed) as [number];
      expect(closeCode).toBe(1001); // the broadcaster's shutdown: going away
      expect(output).toContain('stopping the demo apps');
      expect(output).not.toMatch(/could not export|keeps running|did not stop|killed|unexpectedly/);
    } finally {
      socket?.terminate();
      if (demo.exitCode === null && demo.signalCode === null) {
        killGroup('SIGKILL');
        await exited;
      }
    }
  }, 60_000);
});
