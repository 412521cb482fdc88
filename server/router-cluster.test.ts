// The worker bus (ClusterHub + ClusterRouter) on the shared router suite, and its routing cost, in one process:
// each node talks to the hub over its own worker_threads MessageChannel (real asynchronous structured-clone messages,
// as between the primary and a worker). cluster.test.ts runs the same code across real worker processes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MessageChannel } from 'node:worker_threads';
import { ClusterHub, ClusterRouter, portLink } from './router-cluster.js';
import { routerSuite, until, type TestConn } from './router-suite.js';
import type { Deliver, Router } from './router.js';

const hubs = new WeakMap<Router<TestConn>, { hub: ClusterHub; slots: number }>();

/** A node on `hub` in the next free slot; closing the first node of a hub closes the hub. */
function node(hub: ClusterHub, slot: number, deliver: Deliver<TestConn>): ClusterRouter<TestConn> {
  const { port1, port2 } = new MessageChannel();
  hub.attach(slot, portLink(port1));
  port1.once('close', () => hub.detach(slot));
  return new ClusterRouter<TestConn>(deliver, portLink(port2));
}

routerSuite(
  'cluster (hub + worker nodes over MessagePorts)',
  (deliver) => {
    const hub = new ClusterHub();
    const r = node(hub, 0, deliver);
    hubs.set(r, { hub, slots: 1 });
    return r;
  },
  {
    peer: (first, deliver) => {
      const h = hubs.get(first)!;
      return node(h.hub, h.slots++, deliver);
    },
  },
);

describe('cluster hub routing', () => {
  const deliver: Deliver<TestConn> = (msg, conns) => {
    for (const c of conns) c.got.push(msg);
    return conns.size;
  };

  it('routes a message only to the nodes holding its id: one DELIVER per holder, none to the others or for nobody', async () => {
    const hub = new ClusterHub();
    const nodes = [0, 1, 2, 3].map((slot) => node(hub, slot, deliver));
    try {
      const x: TestConn = { name: 'x', got: [] };
      const y: TestConn = { name: 'y', got: [] };
      nodes[1]!.login(500, x);
      nodes[3]!.login(500, y);
      nodes[2]!.login(600, { name: 'z', got: [] });
      await until(() => hub.idCount === 2 && hub.idsOn(3) === 1, 'the registry to learn the ids');
      const before = [0, 1, 2, 3].map((s) => hub.counters(s)!.delivers);
      const sends: Array<number | Promise<number>> = [];
      for (let i = 0; i < 100; i++) sends.push(hub.send(500, `m${i}`));
      for (let i = 0; i < 100; i++) assert.equal(hub.send(700, 'nobody'), 0); // no holder: answered at once, no IPC
      const counts = await Promise.all(sends);
      assert.ok(counts.every((n) => n === 2), 'each message reached both holders');
      const after = [0, 1, 2, 3].map((s) => hub.counters(s)!.delivers);
      assert.deepEqual(after.map((a, i) => a - before[i]!), [0, 100, 0, 100]);
      assert.equal(x.got.length, 100);
      assert.deepEqual(y.got, x.got);
      // 100 sends in one turn travel as a handful of batches, not 100 IPC messages.
      assert.ok(hub.counters(1)!.batchesOut < 10, `batches to node 1: ${hub.counters(1)!.batchesOut}`);
    } finally {
      for (const n of nodes) await n.close();
    }
  });

  it('a detached node leaves the registry and its pending answers count as 0; the others keep receiving', async () => {
    const hub = new ClusterHub();
    const a = node(hub, 0, deliver);
    const b = node(hub, 1, deliver);
    try {
      const x: TestConn = { name: 'x', got: [] };
      const y: TestConn = { name: 'y', got: [] };
      a.login(1, x);
      b.login(1, y);
      await until(() => hub.idsOn(0) === 1 && hub.idsOn(1) === 1, 'both registered');
      const pending = hub.send(1, 'racing the detach');
      hub.detach(0); // before node 0 could answer
      assert.ok((await pending) <= 1);
      assert.equal(hub.idCount, 1);
      assert.equal(await hub.send(1, 'after'), 1);
      await until(() => y.got.includes('after'), 'delivery on the surviving node');
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('an id logged out on the last connection of a node leaves the registry (multi-id connections too)', async () => {
    const hub = new ClusterHub();
    const a = node(hub, 0, deliver);
    try {
      const x: TestConn = { name: 'x', got: [] };
      const y: TestConn = { name: 'y', got: [] };
      a.login(1, x);
      a.login(2, x);
      a.login(3, x);
      a.login(2, y);
      await until(() => hub.idCount === 3, 'three ids');
      a.logout(x); // 1 and 3 go; 2 stays (y)
      await until(() => hub.idCount === 1, 'ids 1 and 3 to leave');
      assert.equal(await hub.send(2, 'still'), 1);
      a.logout(y);
      await until(() => hub.idCount === 0, 'id 2 to leave');
    } finally {
      await a.close();
    }
  });
});
