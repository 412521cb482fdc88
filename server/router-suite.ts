// The shared router test suite: every Router implementation (local now; cross-process and Redis buses later)
// runs exactly these cases through `routerSuite(name, factory, { peer })` from its own *.test.ts. Delivery is
// awaited with a timeout, so buses whose delivery is asynchronous pass the same cases.
import assert from 'node:assert/strict';
import { describe, it, afterEach } from 'node:test';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import type { Deliver, Router, RouterFactory } from './router.js';

/** A stand-in connection: records what it received. */
export interface TestConn {
  name: string;
  got: string[];
}

/** Options of the suite for implementations whose delivery is asynchronous (buses). */
export interface SuiteOptions {
  /** Longest wait for an asynchronous delivery, in ms (default 2000). */
  timeoutMs?: number;
  /**
   * Builds a second node on the same bus as `first` (another worker, another host), for the cross-node cases.
   * A bus returns a new router connected to the same registry or Redis; the local router is a degenerate
   * one-node bus and returns `first` itself.
   */
  peer?: (first: Router<TestConn>, deliver: Deliver<TestConn>) => Router<TestConn> | Promise<Router<TestConn>>;
}

function conn(name: string): TestConn {
  return { name, got: [] };
}

/** Waits until `pred()` holds, polling on the event loop; fails with `what` after the timeout. */
export async function until(pred: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

function gcFunction(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

/** Registers the router test cases for one implementation. */
export function routerSuite(name: string, factory: RouterFactory<TestConn>, options: SuiteOptions = {}): void {
  const timeoutMs = options.timeoutMs ?? 2000;
  describe(`router: ${name}`, () => {
    let router: Router<TestConn> | null = null;
    let peer: Router<TestConn> | null = null;
    const deliver: Deliver<TestConn> = (msg, conns) => {
      for (const c of conns) c.got.push(msg);
      return conns.size;
    };
    const make = async (): Promise<Router<TestConn>> => (router = await factory(deliver));
    const makePair = async (): Promise<[Router<TestConn>, Router<TestConn>]> => {
      const a = await make();
      peer = await options.peer!(a, deliver);
      return [a, peer];
    };
    afterEach(async () => {
      if (peer !== null && peer !== router) await peer.close();
      await router?.close();
      router = null;
      peer = null;
    });

    if (options.peer) {
      it('across nodes: a message sent on one node reaches the connections logged in on the other', async () => {
        const [a, b] = await makePair();
        const x = conn('x');
        a.login(11, x);
        await b.send(11, 'from b');
        await until(() => x.got.length === 1, 'cross-node delivery', timeoutMs);
        assert.deepEqual(x.got, ['from b']);
      });

      it('across nodes: an id logged in on both nodes gets each message exactly once per connection', async () => {
        const [a, b] = await makePair();
        const x = conn('x');
        const y = conn('y');
        a.login(12, x);
        b.login(12, y);
        await a.send(12, 'one');
        await b.send(12, 'two');
        await until(() => x.got.length === 2 && y.got.length === 2, 'both nodes', timeoutMs);
        assert.deepEqual(x.got, ['one', 'two']);
        assert.deepEqual(y.got, ['one', 'two']);
      });

      it('across nodes: after logout nothing more arrives (a later message to another id is the barrier)', async () => {
        const [a, b] = await makePair();
        const x = conn('x');
        const barrier = conn('barrier');
        a.login(13, x);
        a.login(14, barrier);
        a.logout(x);
        await b.send(13, 'too late');
        await b.send(14, 'barrier');
        await until(() => barrier.got.length === 1, 'the barrier message', timeoutMs);
        assert.deepEqual(x.got, []);
      });
    }

    it('delivers to the connection logged in as the id and returns how many it reached', async () => {
      const r = await make();
      const a = conn('a');
      r.login(7, a);
      assert.equal(await r.send(7, 'hello'), 1);
      await until(() => a.got.length === 1, 'delivery', timeoutMs);
      assert.deepEqual(a.got, ['hello']);
    });

    it('sending to an id with no connection reaches 0 and is not an error', async () => {
      const r = await make();
      assert.equal(await r.send(42, 'nobody'), 0);
      r.login(1, conn('a'));
      assert.equal(await r.send(2, 'nobody'), 0);
    });

    it('one connection may log in as several ids and receives each id\'s messages', async () => {
      const r = await make();
      const a = conn('a');
      r.login(1, a);
      r.login(2, a);
      r.login(3, a);
      assert.deepEqual([...r.idsOf(a)].sort(), [1, 2, 3]);
      assert.equal(r.idCount, 3);
      assert.equal(r.connCount, 1);
      assert.equal(await r.send(2, 'two'), 1);
      assert.equal(await r.send(3, 'three'), 1);
      await until(() => a.got.length === 2, 'two deliveries', timeoutMs);
      assert.deepEqual(a.got, ['two', 'three']);
    });

    it('several connections may log in as the same id and all receive the message', async () => {
      const r = await make();
      const a = conn('a');
      const b = conn('b');
      const c = conn('c');
      r.login(5, a);
      r.login(5, b);
      r.login(6, c);
      assert.equal(await r.send(5, 'both'), 2);
      await until(() => a.got.length === 1 && b.got.length === 1, 'both windows', timeoutMs);
      assert.deepEqual(c.got, []);
      assert.equal(r.idCount, 2);
      assert.equal(r.connCount, 3);
    });

    it('login is idempotent: the same id twice delivers once', async () => {
      const r = await make();
      const a = conn('a');
      r.login(9, a);
      r.login(9, a);
      assert.deepEqual(r.idsOf(a), [9]);
      assert.equal(await r.send(9, 'once'), 1);
      await until(() => a.got.length === 1, 'delivery', timeoutMs);
    });

    it('logout removes a connection from every id and leaves the others receiving', async () => {
      const r = await make();
      const a = conn('a');
      const b = conn('b');
      r.login(1, a);
      r.login(2, a);
      r.login(1, b);
      r.logout(a);
      assert.deepEqual(r.idsOf(a), []);
      assert.equal(r.connCount, 1);
      assert.equal(r.idCount, 1);
      assert.equal(await r.send(2, 'gone'), 0);
      assert.equal(await r.send(1, 'still'), 1);
      await until(() => b.got.length === 1, 'delivery to b', timeoutMs);
      assert.deepEqual(a.got, []);
      r.logout(a); // a second logout, or of an unknown connection, is harmless
      r.logout(conn('never'));
      assert.equal(r.connCount, 1);
    });

    it('a connection can log in again after logging out', async () => {
      const r = await make();
      const a = conn('a');
      r.login(3, a);
      r.logout(a);
      r.login(4, a);
      assert.deepEqual(r.idsOf(a), [4]);
      assert.equal(await r.send(3, 'old'), 0);
      assert.equal(await r.send(4, 'new'), 1);
      await until(() => a.got.length === 1, 'delivery', timeoutMs);
      assert.deepEqual(a.got, ['new']);
    });

    it('10,000 connections logging in and out leave empty maps and the heap near idle', async () => {
      const r = await make();
      const gc = gcFunction();
      const round = (): void => {
        const conns: TestConn[] = [];
        for (let i = 0; i < 10_000; i++) {
          const c = conn(String(i));
          conns.push(c);
          r.login(i % 3000, c); // several connections per id
          if (i % 4 === 0) r.login(100_000 + i, c); // and several ids per connection
          if (i % 8 === 0) r.login(i % 3000, c);
        }
        assert.equal(r.connCount, 10_000);
        for (const c of conns) r.logout(c);
        assert.equal(r.connCount, 0);
        assert.equal(r.idCount, 0);
      };
      // A bus router passes the logins and logouts on asynchronously: a send is answered after them, so each
      // measurement waits for one and does not count registry updates still in flight.
      round(); // warm up code and hidden classes before measuring
      assert.equal(await r.send(1, 'x'), 0);
      gc();
      const before = process.memoryUsage().heapUsed;
      round();
      assert.equal(await r.send(1, 'x'), 0);
      gc();
      const after = process.memoryUsage().heapUsed;
      assert.ok(after - before < 1024 * 1024, `heap grew by ${after - before} bytes after a full open/close round`);
    });
  });
}
