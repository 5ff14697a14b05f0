// Is a Redis there? For the scripts and the bench, which have no Redis client of their own.
import { connect } from 'node:net';

/** Undefined when a Redis answers PING at `url`; otherwise why not. Raw RESP, no client retries. */
export function whyRedisUnreachable(url, timeoutMs = 1_000) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname || '127.0.0.1', port: Number(port || 6379) });
    const done = (why) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => done(`no answer from ${url} within ${timeoutMs} ms`), timeoutMs);
    socket.once('error', (error) => done(`${url}: ${error.message}`));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG') ? undefined : `${url} answered ${JSON.stringify(data.toString().trim())}`));
  });
}
