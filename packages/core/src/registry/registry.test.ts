import { describe, expect, it } from 'vitest';
import { ConnectionRegistry } from './ConnectionRegistry.js';
import { RoomRegistry, type RoomEvent } from './RoomRegistry.js';
import { FakeConnection } from '../test-utils/fakeConnection.js';

describe('ConnectionRegistry', () => {
  it('indexes by id and by user and forgets empty users', () => {
    const r = new ConnectionRegistry();
    r.add(new FakeConnection('a', 'u'));
    r.add(new FakeConnection('b', 'u'));
    r.add(new FakeConnection('c'));
    expect(r.size).toBe(3);
    expect(r.userCount).toBe(1);
    expect([...r.byUser('u')].map((e) => e.id)).toEqual(['a', 'b']);
    r.remove('a');
    r.remove('b');
    expect(r.userCount).toBe(0);
    expect(r.byUser('u').size).toBe(0);
    expect(r.remove('zzz')).toBeUndefined();
  });

  it('replaces an entry registered again under the same id', () => {
    const r = new ConnectionRegistry();
    r.add(new FakeConnection('a', 'u1'));
    r.add(new FakeConnection('a', 'u2'));
    expect(r.size).toBe(1);
    expect(r.byUser('u1').size).toBe(0);
    expect(r.get('a')?.userId).toBe('u2');
  });
});

describe('RoomRegistry', () => {
  it('keeps two mirrored maps and emits lifecycle events', () => {
    const rooms = new RoomRegistry();
    const events: RoomEvent[] = [];
    rooms.on((e) => events.push(e));
    expect(rooms.join('c1', 'r')).toBe(true);
    expect(rooms.join('c1', 'r')).toBe(false);
    rooms.join('c2', 'r');
    rooms.join('c1', 's');
    expect([...rooms.members('r')]).toEqual(['c1', 'c2']);
    expect([...rooms.roomsOf('c1')]).toEqual(['r', 's']);
    expect(rooms.membershipCount).toBe(3);
    expect(rooms.leaveAll('c1').sort()).toEqual(['r', 's']);
    expect(rooms.roomsOf('c1').size).toBe(0);
    expect(rooms.has('s')).toBe(false);
    expect(rooms.leave('c2', 'r')).toBe(true);
    expect(rooms.size).toBe(0);
    expect(events.map((e) => e.type)).toEqual([
      'create-room', 'join-room', 'join-room', 'create-room', 'join-room',
      'leave-room', 'leave-room', 'delete-room', 'leave-room', 'delete-room',
    ]);
  });

  it('a created room persists while empty until deleted; delete removes memberships', () => {
    const rooms = new RoomRegistry();
    expect(rooms.create('r')).toBe(true);
    expect(rooms.create('r')).toBe(false);
    rooms.join('c', 'r');
    rooms.leave('c', 'r');
    expect(rooms.has('r')).toBe(true);
    rooms.join('c', 'r');
    expect(rooms.delete('r')).toBe(true);
    expect(rooms.has('r')).toBe(false);
    expect(rooms.roomsOf('c').size).toBe(0);
    expect(rooms.delete('r')).toBe(false);
  });
});
