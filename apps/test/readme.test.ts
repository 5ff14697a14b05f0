// The README's first example ("In five lines") runs as written: the JS block is taken from
// README.md and run by node, as its own ES module resolving @bcast/core, @bcast/ws and ws from the
// workspace. One tweak: `port: 8080` becomes `port: 0` (any free port), and a line appended to the
// module prints which port that was. Then a client does what the block's comment says.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { guardProcess } from '../../tests/support/processGuard.js';

guardProcess();

const README = readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');
const APPS_DIR = fileURLToPath(new URL('../', import.meta.url)); // resolves the block's imports

/** The first ```js block after the "## In five lines" heading. */
function firstExample(): string {
  const section = README.split(/^## In five lines\s*$/m)[1];
  const block = section?.match(/```js\n([\s\S]*?)```/)?.[1];
  if (!block) throw new Error('README.md: no ```js block under "## In five lines"');
  return block;
}

describe("the README's first example", () => {
  it('runs as written: alice joins public:lobby and the interval logs a result with delivered: 1', async () => {
    const block = firstExample();
    expect(block.match(/port: 8080/g), 'the example listens on 8080 (the one tweak: port 0)').toHaveLength(1);
    const source = `${block.replace('port: 8080', 'port: 0')}\nwss.on('listening', () => console.log('[readme.test] port', wss.address().port));\n`;
    const child = spawn(process.execPath, ['--input-type=module', '--eval', source], { cwd: APPS_DIR, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const changed = new Set<() => void>();
    for (const stream of [child.stdout, child.stderr]) {
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        output += chunk;
        for (const c of changed) c();
      });
    }
    const exited = once(child, 'exit');
    const waitFor = (pattern: RegExp, what: string): Promise<RegExpMatchArray> =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          const match = output.match(pattern);
          if (!match) return;
          changed.delete(check);
          clearTimeout(timer);
          resolve(match);
        };
        const timer = setTimeout(() => {
          changed.delete(check);
          reject(new Error(`timed out waiting for ${what}; output:\n${output}`));
        }, 10_000);
        changed.add(check);
        child.once('exit', (code) => reject(new Error(`the example exited (${code}) before ${what}; output:\n${output}`)));
        check();
      });
    const sockets: WebSocket[] = [];
    const connect = (query: string): WebSocket => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/${query}`);
      ws.on('error', () => {}); // terminate() before the upgrade completes reports one
      sockets.push(ws);
      return ws;
    };
    let port = 0;
    try {
      port = Number((await waitFor(/\[readme\.test\] port (\d+)/, 'the server to listen'))[1]);

      // "false -> 401": no token, no connection.
      const refused = connect('');
      const [, response] = (await once(refused, 'unexpected-response')) as [unknown, IncomingMessage];
      expect(response.statusCode).toBe(401);
      refused.terminate();

      // "Connect to ws://localhost:8080/?token=alice-token and send {"type":"join","room":"public:lobby"}"
      const alice = connect('?token=alice-token');
      const frames: any[] = [];
      const arrived = new Set<() => void>();
      alice.on('message', (data) => {
        frames.push(JSON.parse(data.toString()));
        for (const a of arrived) a();
      });
      const frame = (match: (f: any) => boolean, what: string): Promise<any> =>
        new Promise((resolve, reject) => {
          const check = (): void => {
            const found = frames.find(match);
            if (found === undefined) return;
            arrived.delete(check);
            clearTimeout(timer);
            resolve(found);
          };
          const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; frames: ${JSON.stringify(frames)}`)), 10_000);
          arrived.add(check);
          check();
        });
      await once(alice, 'open');
      alice.send(JSON.stringify({ type: 'join', room: 'private:x', requestId: 1 }));
      expect(await frame((f) => f.requestId === 1, 'the answer to a join outside public:')).toMatchObject({ type: 'error', code: 'FORBIDDEN' });
      alice.send(JSON.stringify({ type: 'join', room: 'public:lobby' }));
      expect(await frame((f) => f.type === 'ok', 'the ok to the join')).toEqual({ type: 'ok', op: 'join', room: 'public:lobby' });

      // "...then:" the interval's next broadcast reaches alice and logs its result.
      expect(await frame((f) => f.type === 'chat', 'the chat message')).toEqual({ type: 'chat', text: 'hi' });
      // (console.log prints the result on one line, as in the README, or on several when it is long)
      const logged = (await waitFor(/\{\s*operation: 'room',\s*recipients: 1,\s*delivered: 1,[^}]*\}/, 'a logged result with delivered: 1'))[0];
      expect(logged).toMatch(/failed: 0,\s*dropped: 0,\s*removed: 0,\s*durationMs: [\d.]+,\s*messageType: 'chat'/);
    } finally {
      for (const ws of sockets) ws.terminate();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    }
  }, 30_000);
});
