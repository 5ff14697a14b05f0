import { afterEach, describe, expect, it } from 'vitest';
import { Broadcaster, type BroadcasterOptions } from '../index.js';
import { FakeConnection, quietLogger } from '../test-utils/fakeConnection.js';
import type { PresenceMember, PresenceStore } from './Presence.js';

const made: Broadcaster[] = [];
afterEach(async () => {
  for (const b of made.splice(0)) await b.dispose();
});

function node(options: BroadcasterOptions = {}) {
  const b = new Broadcaster({ pingIntervalMs: 0, logger: quietLogger(), ...options });
  made.push(b);
  const add = (id: string, userId: string | undefined, rooms: string[]): FakeConnection => {
    const c = new FakeConnection(id, userId);
    b.register(c);
    for (const r of rooms) b.join(id, r);
    return c;
  };
  return { b, add };
}

describe('presence', () => {
  it('lists the users of a room with their connection counts (one process, no configuration)', async () => {
    const { b, add } = node();
    add('a1', 'alice', ['lobby']);
    add('a2', 'alice', ['lobby']);
    add('b1', 'bob', ['lobby', 'dev']);
    add('x', undefined, ['lobby']);
    expect(await b.presence('lobby')).toEqual({
      room: 'lobby',
      users: [
        { userId: 'alice', connections: 2 },
        { userId: 'bob', connections: 1 },
      ],
      connections: 4,
    });
    b.disconnect('b1');
    expect((await b.presence('lobby')).users).toEqual([{ userId: 'alice', connections: 2 }]);
    expect(await b.presence('empty')).toEqual({ room: 'empty', users: [], connections: 0 });
  });

  it('sends join and leave events to the other members when asked to (not to the one that moved)', async () => {
    const { b, add } = node({ presence: { events: true, rooms: 'chat:*' } });
    const settle = () => new Promise((resolve) => setImmediate(resolve));
    const alice = add('a', 'alice', ['chat:1']);
    await settle();
    const bob = add('b', 'bob', ['chat:1', 'other']);
    await settle();
    const carol = add('c', 'carol', ['chat:1']);
    await settle();
    b.leave('b', 'chat:1');
    await settle();
    b.disconnect('a');
    await settle();
    const join = (userId: string) => ({ type: 'bcast.presence', room: 'chat:1', event: 'join', userId });
    const leave = (userId: string) => ({ type: 'bcast.presence', room: 'chat:1', event: 'leave', userId });
    expect(alice.messages).toEqual([join('bob'), join('carol'), leave('bob')]);
    expect(bob.messages).toEqual([join('carol')]); // its own join is not echoed to it
    expect(carol.messages).toEqual([leave('bob'), leave('alice')]);
  });

  it('keeps a shared store in step with joins, leaves and disconnects, and lists from it', async () => {
    const rooms = new Map<string, Map<string, PresenceMember>>();
    const store: PresenceStore = {
      add: (room, m) => void (rooms.get(room) ?? rooms.set(room, new Map()).get(room))?.set(m.connectionId, m),
      remove: (room, id) => void rooms.get(room)?.delete(id),
      list: (room) => [...(rooms.get(room)?.values() ?? []), { connectionId: 'far', userId: 'carol', nodeId: 'other-node' }],
    };
    const { b, add } = node({ presence: { store } });
    add('a', 'alice', ['lobby']);
    add('b', 'bob', ['lobby']);
    expect([...(rooms.get('lobby')?.keys() ?? [])]).toEqual(['a', 'b']);
    expect(rooms.get('lobby')?.get('a')).toEqual({ connectionId: 'a', userId: 'alice', nodeId: b.nodeId });
    b.disconnect('a');
    expect([...(rooms.get('lobby')?.keys() ?? [])]).toEqual(['b']);
    expect((await b.presence('lobby')).users.map((u) => u.userId)).toEqual(['bob', 'carol']);
  });
});
