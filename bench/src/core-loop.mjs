// The core's own fan-out loop, without sockets: 10,000 in-memory connections whose send() only
// counts bytes, so what is measured is targeting, accounting and the per-recipient checks.
//   pnpm --filter @bcast/bench bench:core      (prints ns per recipient for all / room / except)
import { Broadcaster } from '@bcast/core';

const N = 10_000;
const ROUNDS = 400;

class CountingConnection {
  constructor(id) {
    this.id = id;
    this.userId = `u${Number(id.slice(1)) % 100}`;
    this.bytes = 0;
  }
  get isOpen() {
    return true;
  }
  get bufferedBytes() {
    return 0;
  }
  send(message) {
    this.bytes += message.byteLength;
  }
  close() {}
}

const bcast = new Broadcaster({ pingIntervalMs: 0 });
for (let i = 0; i < N; i += 1) {
  bcast.register(new CountingConnection(`c${i}`));
  if (i % 2) bcast.join(`c${i}`, 'room');
}
const message = { type: 'tick', data: 'y'.repeat(200) };
for (let i = 0; i < 200; i += 1) await bcast.toAll(message); // warm-up

const cases = [
  ['all', () => bcast.toAll(message), N],
  ['room (half of them)', () => bcast.toRoom('room', message), N / 2],
  ['all except 2', () => bcast.toAll(message, { except: ['c1', 'c2'] }), N - 2],
];
for (const [name, run, recipients] of cases) {
  const started = process.hrtime.bigint();
  for (let i = 0; i < ROUNDS; i += 1) await run();
  const ns = Number(process.hrtime.bigint() - started) / (ROUNDS * recipients);
  console.log(`${name.padEnd(20)} ${ns.toFixed(1)} ns per recipient`);
}
await bcast.dispose();
