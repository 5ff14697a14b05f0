import type { ConnectionEntry } from '@bcast/core';
import { afterEach, describe, expect, it } from 'vitest';
import { guardProcess } from '../../support/processGuard.js';
import { ADAPTERS, Cluster, type Client, type Message } from './cluster.js';

// The multi-node tier that runs anywhere: three nodes (ws, socket.io, express) on one MemoryBus in
// this process, real clients on each. Each case ends with a fence (a toAll from every node, which
// per-publisher order puts behind everything that node sent before), so "nothing else arrived" is
// checked, not assumed.

guardProcess();

let cluster: Cluster | undefined;
afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

/** The messages of one kind a client got, as `from/seq` strings, in arrival order. */
const got = (client: Client, kind: string): string[] => client.messages.filter((m) => m['kind'] === kind).map((m) => `${String(m['from'])}/${String(m['seq'])}`);
const msg = (kind: string, from: string, seq: number | string = 0): Message => ({ kind, from, seq });

describe('three nodes, three adapters, one MemoryBus', () => {
  it('toAll from each node reaches every client on every node exactly once, in each publisher’s order', async () => {
    cluster = await Cluster.start();
    for (const adapter of ADAPTERS) for (const user of ['a', 'b']) await cluster.connect(adapter, `${adapter}-${user}`);
    const rounds = 25;
    // All three nodes publish at once, each its messages in one go: only per-publisher order holds.
    const results = await Promise.all(
      cluster.nodes.flatMap((node) => Array.from({ length: rounds }, (_, seq) => node.broadcaster.toAll(msg('all', node.adapter, seq)))),
    );
    for (const result of results) expect(result).toMatchObject({ recipients: 2, delivered: 2, failed: 0, backplane: 'published' });
    await cluster.fence();
    for (const client of cluster.clients) {
      for (const publisher of ADAPTERS) {
        const fromIt = got(client, 'all').filter((m) => m.startsWith(`${publisher}/`));
        expect(fromIt, `${client.name} from ${publisher}`).toEqual(Array.from({ length: rounds }, (_, seq) => `${publisher}/${seq}`));
      }
      expect(client.messages).toHaveLength(rounds * ADAPTERS.length);
    }
  });

  it('toRoom reaches the members on every node and nobody else; joins go through the protocol and authorizeJoin', async () => {
    const asked: Array<[string, string | undefined, string]> = [];
    cluster = await Cluster.start((adapter) => ({
      authorizeJoin: (connection: ConnectionEntry, room: string) => {
        asked.push([adapter, connection.userId, room]);
        return room !== 'staff' || connection.userId === 'boss';
      },
    }));
    const members: Client[] = [];
    const others: Client[] = [];
    for (const adapter of ADAPTERS) {
      const member = await cluster.connect(adapter, 'member');
      const other = await cluster.connect(adapter, 'other');
      expect(await member.request({ type: 'join', room: 'lobby' })).toMatchObject({ type: 'ok', op: 'join', room: 'lobby' });
      expect(await other.request({ type: 'join', room: 'staff' })).toMatchObject({ type: 'error', code: 'FORBIDDEN' });
      members.push(member);
      others.push(other);
    }
    const boss = await cluster.connect('express', 'boss');
    expect(await boss.request({ type: 'join', room: 'staff' })).toMatchObject({ type: 'ok', room: 'staff' });
    expect(asked).toEqual([...ADAPTERS.flatMap((a) => [[a, 'member', 'lobby'], [a, 'other', 'staff']]), ['express', 'boss', 'staff']]);

    for (const node of cluster.nodes) {
      for (let seq = 0; seq < 5; seq++) {
        const result = await node.broadcaster.toRoom('lobby', msg('lobby', node.adapter, seq));
        expect(result).toMatchObject({ recipients: 1, delivered: 1, backplane: 'published' }); // the local member only
      }
      await node.broadcaster.toRoom('staff', msg('staff', node.adapter));
    }
    await cluster.fence();
    const lobby = ADAPTERS.flatMap((a) => Array.from({ length: 5 }, (_, seq) => `${a}/${seq}`));
    for (const member of members) expect(member.messages.map((m) => `${String(m['kind'])}:${String(m['from'])}/${String(m['seq'])}`)).toEqual(lobby.map((m) => `lobby:${m}`));
    for (const other of others) expect(other.messages).toEqual([]);
    expect(boss.messages).toEqual(ADAPTERS.map((a) => msg('staff', a)));
  });

  it('toUser reaches every connection of the user, whatever node it is on, and no other user', async () => {
    cluster = await Cluster.start();
    const alice = [await cluster.connect('ws', 'alice'), await cluster.connect('socket.io', 'alice'), await cluster.connect('express', 'alice'), await cluster.connect('express', 'alice')];
    const bob = [await cluster.connect('ws', 'bob'), await cluster.connect('socket.io', 'bob')];
    for (const node of cluster.nodes) {
      const local = alice.filter((c) => c.node === node).length;
      const result = await node.broadcaster.toUser('alice', msg('dm', node.adapter));
      expect(result).toMatchObject({ recipients: local, delivered: local, backplane: 'published' });
    }
    await cluster.fence();
    for (const c of alice) expect(c.messages, c.name).toEqual(ADAPTERS.map((a) => msg('dm', a)));
    for (const c of bob) expect(c.messages, c.name).toEqual([]);
  });

  it('sendTo and toConnections reach connections on other nodes, and only them', async () => {
    cluster = await Cluster.start();
    const [onWs, onIo, onExpress] = [await cluster.connect('ws', 'u1'), await cluster.connect('socket.io', 'u2'), await cluster.connect('express', 'u3')];
    const bystanders = [await cluster.connect('ws', 'u4'), await cluster.connect('socket.io', 'u5'), await cluster.connect('express', 'u6')];
    // The ids are known only to the node each connection is on.
    expect(cluster.node('ws').broadcaster.connections.has(onIo!.id)).toBe(false);
    const one = await cluster.node('ws').broadcaster.sendTo(onIo!.id, msg('direct', 'ws'));
    expect(one).toMatchObject({ recipients: 0, backplane: 'published' });
    const two = await cluster.node('express').broadcaster.toConnections([onWs!.id, onIo!.id, onExpress!.id], msg('many', 'express'));
    expect(two).toMatchObject({ recipients: 1, delivered: 1, backplane: 'published' }); // the local one
    await cluster.fence();
    expect(onIo!.messages).toEqual([msg('direct', 'ws'), msg('many', 'express')]);
    expect(onWs!.messages).toEqual([msg('many', 'express')]);
    expect(onExpress!.messages).toEqual([msg('many', 'express')]);
    for (const c of bystanders) expect(c.messages, c.name).toEqual([]);
  });

  it('except excludes connections on other nodes as well as local ones', async () => {
    cluster = await Cluster.start();
    for (const adapter of ADAPTERS) for (const user of ['in', 'out']) await cluster.connect(adapter, user);
    const excluded = cluster.clients.filter((c) => c.user === 'out');
    const result = await cluster.node('socket.io').broadcaster.toAll(msg('except', 'socket.io'), { except: excluded.map((c) => c.id) });
    expect(result).toMatchObject({ recipients: 1, delivered: 1, backplane: 'published' });
    await cluster.fence();
    for (const c of cluster.clients) expect(c.messages, c.name).toEqual(c.user === 'out' ? [] : [msg('except', 'socket.io')]);
  });

  it('localOnly stays on the publishing node', async () => {
    cluster = await Cluster.start();
    for (const adapter of ADAPTERS) for (const user of ['x', 'y']) await cluster.connect(adapter, user);
    for (const node of cluster.nodes) {
      const result = await node.broadcaster.toAll(msg('local', node.adapter), { localOnly: true });
      expect(result).toMatchObject({ recipients: 2, delivered: 2, backplane: 'skipped' });
    }
    await cluster.fence(); // published after the localOnly ones: had those been propagated, they would be here by now
    for (const c of cluster.clients) expect(c.messages, c.name).toEqual([msg('local', c.node.adapter)]);
  });
});
