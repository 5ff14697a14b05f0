// Loaded with `node --import` before every README example that readme-examples.test.ts runs.
// - Every TCP server the example starts listens on 127.0.0.1, on a port the system picks: the
//   example's `listen(8080)`, `app.listen(3000)` or `{ port: 8080 }` becomes port 0, loopback only.
// - What the test needs to know is reported as JSON lines on file descriptor 3: each server's port
//   once it listens, and the values of every console.log (as JSON), so that the test compares the
//   values an example prints with what its comments say. console.log still prints as usual.
// Run by hand (no descriptor 3), an example behaves as it would without this file, except for its ports.
import { writeSync } from 'node:fs';
import net from 'node:net';
import { inspect } from 'node:util';

function report(event) {
  const line = Buffer.from(`${JSON.stringify(event)}\n`);
  for (let written = 0, tries = 0; written < line.length && tries < 1_000; tries += 1) {
    try {
      written += writeSync(3, line, written);
    } catch (error) {
      if (error.code !== 'EAGAIN') return; // EBADF: not run by the test
    }
  }
}

/** A console.log argument as JSON (an Error as its name, message and code; anything else JSON cannot carry, inspected). */
function plain(value) {
  if (value instanceof Error) return { error: value.name, message: value.message, code: value.code };
  try {
    const json = JSON.stringify(value);
    return json === undefined ? inspect(value) : JSON.parse(json);
  } catch {
    return inspect(value);
  }
}

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function listenOnLoopback(...args) {
  const callback = typeof args.at(-1) === 'function' ? [args.pop()] : [];
  const [first] = args;
  const tcp =
    first === undefined ||
    first === null ||
    typeof first === 'number' ||
    (typeof first === 'string' && /^\d*$/.test(first)) ||
    (typeof first === 'object' && !('path' in first) && !('fd' in first) && !('handle' in first) && !('_handle' in first));
  if (!tcp) return listen.call(this, ...args, ...callback); // a pipe or a handle: as asked
  this.once('listening', () => report({ event: 'listening', port: this.address().port }));
  return listen.call(this, { port: 0, host: '127.0.0.1' }, ...callback);
};

const log = console.log;
console.log = (...args) => {
  report({ event: 'log', args: args.map(plain) });
  log(...args);
};
