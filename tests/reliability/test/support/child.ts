import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

/**
 * A child process that reports in JSON lines on stdout. `message(match)` resolves with the first
 * line (parsed) that matches, including lines that arrived before the call; `exited` resolves
 * with the exit code and signal. stderr is kept for error messages.
 */
export interface JsonChild {
  readonly child: ChildProcess;
  readonly lines: unknown[];
  readonly stderr: () => string;
  message<T = Record<string, unknown>>(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<T>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(): void;
}

export function spawnJson(command: string, args: readonly string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): JsonChild {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], ...options });
  const lines: unknown[] = [];
  const waiters = new Set<() => void>();
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => void (stderr = (stderr + d).slice(-20_000)));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      lines.push(JSON.parse(line));
    } catch {
      lines.push({ text: line });
    }
    for (const w of [...waiters]) w();
  });
  let exitCode: number | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      exitCode = code ?? -1;
      resolve({ code, signal });
      for (const w of [...waiters]) w();
    });
  });
  return {
    child,
    lines,
    stderr: () => stderr,
    exited,
    kill: () => void (child.exitCode === null && child.signalCode === null && child.kill('SIGKILL')),
    message<T>(match: (line: Record<string, unknown>) => boolean, timeoutMs = 15_000): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        let seen = 0;
        const check = (): void => {
          for (; seen < lines.length; seen++) {
            const line = lines[seen] as Record<string, unknown>;
            if (typeof line === 'object' && line !== null && match(line)) return finish(() => resolve(line as T));
          }
          if (exitCode !== undefined) finish(() => reject(new Error(`child exited (${exitCode}) without the expected line; last lines: ${JSON.stringify(lines.slice(-3))}; stderr: ${stderr.slice(-2_000)}`)));
        };
        const timer = setTimeout(() => finish(() => reject(new Error(`no expected line from the child within ${timeoutMs} ms; stderr: ${stderr.slice(-2_000)}`))), timeoutMs);
        const finish = (fn: () => void): void => {
          clearTimeout(timer);
          waiters.delete(check);
          fn();
        };
        waiters.add(check);
        check();
      });
    },
  };
}
