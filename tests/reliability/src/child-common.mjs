// What every child process of the reliability tests shares: the request/reply loop over IPC, and
// the report of process-level problems (unhandledRejection, uncaughtException,
// MaxListenersExceededWarning) to the parent, which asserts there were none.

const problems = [];

export const send = (message) => {
  try {
    if (process.connected) process.send?.(message);
  } catch {
    // the parent is gone
  }
};

const describe = (value) => (value instanceof Error ? `${value.name}: ${value.message}` : String(value));

function problem(text) {
  problems.push(text);
  send({ type: 'problem', text });
}

process.on('unhandledRejection', (reason) => problem(`unhandledRejection: ${describe(reason)}`));
process.on('uncaughtException', (error) => {
  problem(`uncaughtException: ${describe(error)}\n${error?.stack ?? ''}`);
  process.exitCode = 70;
});
process.on('warning', (warning) => {
  if (warning.name === 'MaxListenersExceededWarning') problem(`${warning.name}: ${warning.message}`);
});
// The parent is gone (it was killed, or the test ended): nothing left to do here.
process.on('disconnect', () => {
  if (!process.env.BCAST_CHILD_KEEP_ON_DISCONNECT) process.exit(0);
});

export function problemsSoFar() {
  return [...problems];
}

/**
 * Serves requests `{ id, cmd, ... }` from the parent with `handlers[cmd](message)`; the reply is
 * `{ type: 'reply', id, value }` or `{ type: 'reply', id, error }`.
 */
export function serve(handlers) {
  process.on('message', (message) => {
    if (typeof message !== 'object' || message === null || message.id === undefined) return;
    const handler = handlers[message.cmd];
    if (!handler) return send({ type: 'reply', id: message.id, error: `unknown command ${message.cmd}` });
    Promise.resolve()
      .then(() => handler(message))
      .then(
        (value) => send({ type: 'reply', id: message.id, value }),
        (error) => send({ type: 'reply', id: message.id, error: error instanceof Error ? `${error.message}\n${error.stack}` : String(error) }),
      );
  });
}

/** Counts of `process.getActiveResourcesInfo()` by kind (Timeout, TCPSocketWrap, ...). */
export function resources() {
  const counts = {};
  for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1;
  return counts;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
