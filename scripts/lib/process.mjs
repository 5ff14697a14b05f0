// Child processes for the packaging scripts (consumer-test, peer-matrix): labelled runs with a time
// limit, waiting for several at once, bounded concurrency.
import { execFile } from 'node:child_process';

/** Children still running, so that a script that gives up can stop them (`killChildren`). */
const children = new Set();

/**
 * Runs `command args` in `cwd`; prints `  ok  <label> (<ms> ms)` (unless `quiet`) and resolves with
 * its stdout, or rejects with `<label> failed[ (time limit)]:` and its output. `timeout` (ms) kills
 * it; `env` is added to process.env (npm's log level is `error`).
 */
export function run(label, command, args, cwd, { timeout = 60_000, env = {}, quiet = false } = {}) {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = execFile(
      command,
      args,
      { cwd, encoding: 'utf8', timeout, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, npm_config_loglevel: 'error', ...env } },
      (error, stdout, stderr) => {
        children.delete(child);
        if (!error) {
          if (!quiet) console.log(`  ok  ${label} (${Date.now() - t0} ms)`);
          resolve(stdout);
          return;
        }
        const output = [stdout, stderr].filter(Boolean).join('\n').trim() || error.message;
        reject(new Error(`${label} failed${error.killed ? ' (time limit)' : ''}:\n${output}`));
      },
    );
    children.add(child);
  });
}

/** SIGKILLs every child `run` started that is still running. */
export function killChildren() {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
}

/** Waits for every promise; throws all their errors together. */
export async function all(promises) {
  const errors = (await Promise.allSettled(promises)).filter((r) => r.status === 'rejected').map((r) => r.reason.message);
  if (errors.length > 0) throw new Error(errors.join('\n\n'));
}

/**
 * `fn(item, index)` for every item, at most `limit` at a time; resolves, in the items' order, with
 * `{ ok: true, value }` or `{ ok: false, error }` for each (it never rejects).
 */
export async function pool(limit, items, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await Promise.resolve()
        .then(() => fn(items[i], i))
        .then(
          (value) => ({ ok: true, value }),
          (error) => ({ ok: false, error }),
        );
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return results;
}
