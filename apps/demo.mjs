// Minimal in-memory demo of @bcast/core until the sample apps land: three fake connections,
// a room, and the accounting of every broadcast.
import { Broadcaster } from '@bcast/core';

const bcast = new Broadcaster({ pingIntervalMs: 0 });
const connection = (id, userId) => ({
  id,
  userId,
  isOpen: true,
  bufferedBytes: 0,
  send: (m) => console.log(`  -> ${id} (${userId}) ${m.text}`),
  close: (code, reason) => console.log(`  x  ${id} closed ${code} ${reason}`),
});
for (const [id, user] of [['c1', 'alice'], ['c2', 'alice'], ['c3', 'bob']]) bcast.register(connection(id, user));
bcast.join('c1', 'lobby');
bcast.join('c3', 'lobby');
console.log('toAll:', await bcast.toAll({ type: 'hello', text: 'hi everyone' }));
console.log('toRoom lobby except c1:', await bcast.toRoom('lobby', { type: 'chat', text: 'hi lobby' }, { except: ['c1'] }));
console.log('toUser alice:', await bcast.toUser('alice', { type: 'dm', text: 'hi alice' }));
await bcast.toAll(undefined).catch((e) => console.log('rejected:', e.code, e.message));
console.log('health:', bcast.getHealthStatus().status);
await bcast.dispose();
