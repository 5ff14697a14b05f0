/**
 * The client side of the reconnect storm: N `ws` clients in one process, each in one room with
 * history, speaking the bcast protocol. Driven by its parent over IPC:
 *   { id, cmd: 'connect', port, n, rooms }  every client connects and joins `rooms[i % rooms.length]`
 *   { id, cmd: 'positions' }                resolves once every client got a publication with its position
 *   { id, cmd: 'closed' }                   resolves once every socket is closed (the server died)
 *   { id, cmd: 'reconnect', port, missed }  all at once: connect, join with `since`; resolves once every
 *                                           client has its join reply, with what each recovered
 *   { id, cmd: 'live', seq }                resolves once every client got the publication `seq` of its room
 * Replies: { type: 'reply', id, value }. Every publication's data is `{ room, seq }`.
 */
import { WebSocket } from 'ws';

type Json = Record<string, unknown>;
interface Pub {
  readonly offset: number | undefined;
  readonly epoch: string | undefined;
  readonly seq: number;
}

interface StormClient {
  readonly index: number;
  readonly room: string;
  ws: WebSocket | undefined;
  open: boolean;
  position: { offset: number; epoch: string } | undefined;
  /** Publications since the last (re)connect, in arrival order, and whether each came before the join reply. */
  pubs: Array<Pub & { readonly beforeOk: boolean }>;
  ok: Json | undefined;
}

const clients: StormClient[] = [];
const waiters = new Set<() => void>();
const wakeAll = (): void => {
  for (const w of [...waiters]) w();
};

function until(what: string, done: () => boolean, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (!done()) return;
      clearTimeout(timer);
      waiters.delete(check);
      resolve();
    };
    const timer = setTimeout(() => {
      waiters.delete(check);
      reject(new Error(`storm clients: ${what} not done within ${timeoutMs} ms`));
    }, timeoutMs);
    waiters.add(check);
    check();
  });
}

/** Connects one client and sends its join (with `since` when it has a position). Resolves when open. */
function connect(client: StormClient, port: number, withSince: boolean): Promise<void> {
  client.pubs = [];
  client.ok = undefined;
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false, handshakeTimeout: 20_000 });
  client.ws = ws;
  ws.on('message', (data) => {
    const m = JSON.parse(String(data)) as Json;
    if (m['type'] === 'bcast.pub') {
      const offset = typeof m['offset'] === 'number' ? m['offset'] : undefined;
      const epoch = typeof m['epoch'] === 'string' ? m['epoch'] : undefined;
      const seq = (m['data'] as { seq: number }).seq;
      client.pubs.push({ offset, epoch, seq, beforeOk: client.ok === undefined });
      if (offset !== undefined && epoch !== undefined) client.position = { offset, epoch };
    } else if (m['type'] === 'ok' && m['op'] === 'join') {
      client.ok = m;
      const p = m['position'] as { offset: number; epoch: string } | undefined;
      if (p && !withSince && client.position === undefined) client.position = p;
    }
    wakeAll();
  });
  ws.on('close', () => {
    client.open = false;
    wakeAll();
  });
  ws.on('error', () => {});
  return new Promise((resolve, reject) => {
    ws.once('open', () => {
      client.open = true;
      const since = withSince ? client.position : undefined;
      ws.send(JSON.stringify({ type: 'join', room: client.room, requestId: client.index, ...(since ? { since } : {}) }));
      resolve();
    });
    ws.once('error', reject);
  });
}

/** What a client got after its reconnect, against what it should have: `missed` publications, once, in order, before the reply. */
function check(client: StormClient, lastSeq: number, since: { offset: number; epoch: string }, missed: number): string | undefined {
  const ok = client.ok;
  if (!ok) return 'no join reply';
  if (ok['recovered'] !== true) return `recovered: ${String(ok['recovered'])}`;
  const before = client.pubs.filter((p) => p.beforeOk);
  const seqs = before.map((p) => p.seq).join(',');
  const want = Array.from({ length: missed }, (_, i) => lastSeq + 1 + i).join(',');
  if (seqs !== want) return `recovered seqs [${seqs}], wanted [${want}]`;
  const offsets = before.map((p) => p.offset).join(',');
  const wantOffsets = Array.from({ length: missed }, (_, i) => since.offset + 1 + i).join(',');
  if (offsets !== wantOffsets) return `offsets [${offsets}], wanted [${wantOffsets}]`;
  if (before.some((p) => p.epoch !== since.epoch)) return 'another epoch';
  return undefined;
}

async function handle(msg: Json): Promise<unknown> {
  switch (msg['cmd']) {
    case 'connect': {
      const started = performance.now();
      const rooms = msg['rooms'] as string[];
      const n = msg['n'] as number;
      for (let i = 0; i < n; i += 1) clients.push({ index: i, room: rooms[i % rooms.length] as string, ws: undefined, open: false, position: undefined, pubs: [], ok: undefined });
      // 100 handshakes at a time: the first connect is not the storm
      let next = 0;
      await Promise.all(
        Array.from({ length: 100 }, async () => {
          while (next < clients.length) await connect(clients[next++] as StormClient, msg['port'] as number, false);
        }),
      );
      await until('every join reply', () => clients.every((c) => c.ok !== undefined), 30_000);
      return { connected: clients.length, ms: performance.now() - started };
    }
    case 'positions':
      await until('a publication with a position on every client', () => clients.every((c) => c.pubs.some((p) => p.offset !== undefined)), 30_000);
      return { lastSeqs: clients.map((c) => c.pubs.at(-1)?.seq ?? -1) };
    case 'closed':
      await until('every socket closed', () => clients.every((c) => !c.open), 30_000);
      return { closed: clients.length };
    case 'reconnect': {
      const missed = msg['missed'] as number;
      const snapshot = clients.map((c) => ({ lastSeq: c.pubs.at(-1)?.seq ?? -1, since: { ...(c.position as { offset: number; epoch: string }) } }));
      const started = performance.now();
      const opened = await Promise.allSettled(clients.map((c) => connect(c, msg['port'] as number, true)));
      const failed = opened.filter((o) => o.status === 'rejected').length;
      if (failed > 0) return { error: `${failed} clients could not reconnect: ${String((opened.find((o) => o.status === 'rejected') as PromiseRejectedResult).reason)}` };
      const openedMs = performance.now() - started;
      await until('every join reply after the reconnect', () => clients.every((c) => c.ok !== undefined), 60_000);
      const ms = performance.now() - started;
      const problems: string[] = [];
      let exact = 0;
      for (const [i, c] of clients.entries()) {
        const s = snapshot[i] as (typeof snapshot)[number];
        const problem = check(c, s.lastSeq, s.since, missed);
        if (problem === undefined) exact += 1;
        else if (problems.length < 5) problems.push(`client ${i} (${c.room}): ${problem}`);
      }
      const recovered = clients.filter((c) => c.ok?.['recovered'] === true).length;
      const messages = clients.reduce((sum, c) => sum + c.pubs.length, 0);
      return { clients: clients.length, openedMs, ms, recovered, exact, messages, problems };
    }
    case 'live': {
      const seq = msg['seq'] as number;
      await until(`publication ${seq} on every client`, () => clients.every((c) => c.pubs.some((p) => p.seq === seq)), 30_000);
      await new Promise((r) => setTimeout(r, 100)); // a duplicate would have come by now
      const duplicates = clients.filter((c) => new Set(c.pubs.map((p) => p.seq)).size !== c.pubs.length).length;
      const outOfOrder = clients.filter((c) => c.pubs.some((p, i) => i > 0 && p.seq <= (c.pubs[i - 1] as Pub).seq)).length;
      return { duplicates, outOfOrder };
    }
    default:
      throw new Error(`unknown command ${String(msg['cmd'])}`);
  }
}

process.on('message', (msg: Json) => {
  handle(msg).then(
    (value) => process.send?.({ type: 'reply', id: msg['id'], value }),
    (error: unknown) => process.send?.({ type: 'reply', id: msg['id'], value: { error: String(error) } }),
  );
});
process.on('disconnect', () => process.exit(0));
process.send?.({ type: 'ready' });
