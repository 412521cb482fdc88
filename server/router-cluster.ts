// The worker bus: a router across the processes of one host (a primary and its `node:cluster` workers).
//
// Like the seed's router node, the primary keeps a registry of which worker holds which id; each worker tells it
// when an id gets its first local connection (ADD) and loses its last one (DEL). A send goes only to the workers
// that hold the id (none: no IPC at all), so the cost of a message does not grow with the number of workers.
// Every worker keeps its own LocalRouter, which stays the authority on its connections: a registry entry that is a
// moment stale (an id that just left) costs one wasted DELIVER answered with 0, never a wrong delivery.
//
// Everything a process posts to one peer during one event-loop turn goes out as one batch (one IPC message), so
// 1,000 sends to one worker in a turn are one JSON write, not 1,000. The transport is a `Link`: process IPC in a
// real cluster (`processLink`, `workerLink`), or a worker_threads MessagePort (the shared router suite runs a real
// second node on the same hub that way).
import type { MessagePort } from 'node:worker_threads';
import { LocalRouter, type Deliver, type Router } from './router.js';

/** One operation on the bus; a batch is an array of them. */
export type Op =
  | [typeof ADD, number]
  | [typeof DEL, number]
  | [typeof SEND, number, number, string]
  | [typeof COUNT, number, number]
  | [typeof DELIVER, number, number, string]
  | [typeof DONE, number, number]
  | [typeof STATS, number]
  | [typeof STATS_REPLY, number, unknown];

/** node → hub: this node got its first connection for id. */
export const ADD = 0;
/** node → hub: this node's last connection for id left. */
export const DEL = 1;
/** node → hub: deliver (req, id, msg) to every other holder, answer DONE with the count. */
export const SEND = 2;
/** node → hub: answer to DELIVER (req, connections reached). */
export const COUNT = 3;
/** hub → node: deliver (req, id, msg) locally; req 0 wants no answer. */
export const DELIVER = 4;
/** hub → node: answer to SEND (req, connections reached on the other nodes). */
export const DONE = 5;
/** hub → node: send your stats (req). */
export const STATS = 6;
/** node → hub: stats answer (req, document). */
export const STATS_REPLY = 7;

/** A bidirectional message channel carrying batches of ops. */
export interface Link {
  post(batch: Op[]): void;
  /** Registers the single receiver of incoming batches. */
  onMessage(fn: (batch: Op[]) => void): void;
  close(): void;
}

/** Collects ops and posts them as one batch per event-loop turn. */
class Outbox {
  private ops: Op[] = [];
  private scheduled = false;
  /** Batches (IPC messages) and ops posted so far. */
  batches = 0;
  opsPosted = 0;
  constructor(private readonly link: Link) {}
  push(op: Op): void {
    this.ops.push(op);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  }
  readonly flush = (): void => {
    this.scheduled = false;
    if (this.ops.length === 0) return;
    const batch = this.ops;
    this.ops = [];
    this.batches++;
    this.opsPosted += batch.length;
    try {
      this.link.post(batch);
    } catch {
      // The peer is gone (channel closed); its death is handled where the link is owned.
    }
  };
}

interface Pending {
  left: number;
  n: number;
  slots: number[];
  resolve: (n: number) => void;
}

/** Per-node counters kept by the hub. */
export interface HubNodeCounters {
  /** DELIVER ops sent to this node (one per message routed to it). */
  delivers: number;
  /** IPC messages (batches) sent to it. */
  batchesOut: number;
  /** Ops sent to it, of any kind. */
  opsOut: number;
  /** Ops received from it. */
  opsIn: number;
}

interface HubNode {
  link: Link;
  out: Outbox;
  counters: HubNodeCounters;
  ids: number;
}

/**
 * The registry in the primary: id → the node slot(s) holding it, and the routing of sends to those nodes only.
 * A slot is a small integer naming a worker position; a replacement worker takes the slot of the one that died.
 */
export class ClusterHub {
  // One slot as a bare number (the common case), several as an array: as in LocalRouter, a Set per id would cost more
  // than the rest of the registry at 100k ids.
  private readonly byId = new Map<number, number | number[]>();
  private readonly nodes = new Map<number, HubNode>();
  private readonly pending = new Map<number, Pending>();
  private readonly statsWaits = new Map<number, (slot: number, doc: unknown) => void>();
  private nextReq = 1;
  /** SEND ops waiting for the next turn, as (slot, op) pairs. */
  private deferred: Array<number | Op> = [];

  /** Connects a node's link under `slot` (a slot already in use is detached first). */
  attach(slot: number, link: Link): void {
    if (this.nodes.has(slot)) this.detach(slot);
    const node: HubNode = { link, out: new Outbox(link), counters: { delivers: 0, batchesOut: 0, opsOut: 0, opsIn: 0 }, ids: 0 };
    this.nodes.set(slot, node);
    link.onMessage((batch) => {
      if (this.nodes.get(slot) !== node) return; // a late batch of a detached node
      node.counters.opsIn += batch.length;
      for (const op of batch) this.receive(slot, node, op);
    });
  }

  /** Forgets a node (it died or left): its ids leave the registry, and answers it owed count as 0. */
  detach(slot: number): void {
    const node = this.nodes.get(slot);
    if (node === undefined) return;
    this.nodes.delete(slot);
    node.out.flush();
    for (const [id, s] of this.byId) {
      if (s === slot) this.byId.delete(id);
      else if (Array.isArray(s) && s.includes(slot)) this.dropSlot(id, slot);
    }
    for (const [req, p] of this.pending) {
      for (const s of p.slots) if (s === slot) this.settle(req, p, 0);
    }
  }

  /** Counters of the node in `slot` (undefined when none is attached). */
  counters(slot: number): Readonly<HubNodeCounters> | undefined {
    const node = this.nodes.get(slot);
    if (node === undefined) return undefined;
    node.counters.batchesOut = node.out.batches;
    node.counters.opsOut = node.out.opsPosted;
    return node.counters;
  }

  /** Distinct ids held by at least one node. */
  get idCount(): number {
    return this.byId.size;
  }

  /** The slots the registry holds `id` on. */
  slotsOf(id: number): number[] {
    const s = this.byId.get(id);
    return s === undefined ? [] : typeof s === 'number' ? [s] : s.slice();
  }

  /** Ids the hub believes `slot` holds. */
  idsOn(slot: number): number {
    return this.nodes.get(slot)?.ids ?? 0;
  }

  /**
   * Delivers `msg` to every node holding `id` (but `except`); resolves to the connections reached.
   * No holder: 0 at once, without any IPC.
   */
  send(id: number, msg: string, except = -1): number | Promise<number> {
    const s = this.byId.get(id);
    if (s === undefined) return 0;
    if (typeof s === 'number') {
      if (s === except) return 0;
      return new Promise((resolve) => this.deliverTo([s], id, msg, resolve));
    }
    const slots = except < 0 ? s.slice() : s.filter((x) => x !== except);
    if (slots.length === 0) return 0;
    return new Promise((resolve) => this.deliverTo(slots, id, msg, resolve));
  }

  /** Asks every node for its stats; resolves with what arrived within `timeoutMs` (slot → document). */
  stats(timeoutMs: number): Promise<Map<number, unknown>> {
    const req = this.nextReq++;
    const got = new Map<number, unknown>();
    const expected = this.nodes.size;
    return new Promise((resolve) => {
      if (expected === 0) return resolve(got);
      const done = (): void => {
        clearTimeout(timer);
        this.statsWaits.delete(req);
        resolve(got);
      };
      const timer = setTimeout(done, timeoutMs);
      this.statsWaits.set(req, (slot, doc) => {
        got.set(slot, doc);
        if (got.size >= expected) done();
      });
      for (const node of this.nodes.values()) node.out.push([STATS, req]);
    });
  }

  /** Detaches every node and answers everything pending with 0. */
  close(): void {
    for (const slot of [...this.nodes.keys()]) this.detach(slot);
    this.byId.clear();
  }

  private deliverTo(slots: number[], id: number, msg: string, resolve: (n: number) => void): void {
    const req = this.nextReq++;
    this.pending.set(req, { left: slots.length, n: 0, slots, resolve });
    for (const slot of slots) {
      const node = this.nodes.get(slot)!;
      node.counters.delivers++;
      node.out.push([DELIVER, req, id, msg]);
    }
  }

  private settle(req: number, p: Pending, n: number): void {
    p.n += n;
    if (--p.left > 0) return;
    this.pending.delete(req);
    p.resolve(p.n);
  }

  private receive(slot: number, node: HubNode, op: Op): void {
    switch (op[0]) {
      case ADD: {
        const id = op[1];
        const s = this.byId.get(id);
        if (s === undefined) this.byId.set(id, slot);
        else if (typeof s === 'number') {
          if (s === slot) return;
          this.byId.set(id, [s, slot]);
        } else {
          if (s.includes(slot)) return;
          s.push(slot);
        }
        node.ids++;
        return;
      }
      case DEL: {
        const id = op[1];
        const s = this.byId.get(id);
        if (s === slot) this.byId.delete(id);
        else if (Array.isArray(s) && s.includes(slot)) this.dropSlot(id, slot);
        else return;
        node.ids--;
        return;
      }
      case SEND:
        // Routed one loop turn later, so that registry updates from other nodes that arrived in the same turn (a
        // login that happened before this send, on another worker) are applied first.
        if (this.deferred.length === 0) setImmediate(this.routeDeferred);
        this.deferred.push(slot, op);
        return;
      case COUNT: {
        const p = this.pending.get(op[1]);
        if (p !== undefined) this.settle(op[1], p, op[2]);
        return;
      }
      case STATS_REPLY:
        this.statsWaits.get(op[1])?.(slot, op[2]);
        return;
      default:
        return;
    }
  }

  private readonly routeDeferred = (): void => {
    const list = this.deferred;
    this.deferred = [];
    for (let i = 0; i < list.length; i += 2) {
      const slot = list[i] as number;
      const [, req, id, msg] = list[i + 1] as [typeof SEND, number, number, string];
      const node = this.nodes.get(slot);
      if (node === undefined) continue;
      const r = this.send(id, msg, slot);
      if (typeof r === 'number') node.out.push([DONE, req, r]);
      else void r.then((n) => this.nodes.get(slot) === node && node.out.push([DONE, req, n]));
    }
  };

  private dropSlot(id: number, slot: number): void {
    const s = this.byId.get(id) as number[];
    const rest = s.filter((x) => x !== slot);
    if (rest.length === 0) this.byId.delete(id);
    else this.byId.set(id, rest.length === 1 ? rest[0]! : rest);
  }
}

/** Options of a node. */
export interface ClusterRouterOptions {
  /** Answers the hub's stats requests. */
  stats?: () => unknown;
}

/**
 * One node of the worker bus (runs in a worker): local delivery through a LocalRouter, registry updates and
 * cross-node sends through the hub.
 */
export class ClusterRouter<C extends object> implements Router<C> {
  private readonly local: LocalRouter<C>;
  private readonly out: Outbox;
  private readonly waits = new Map<number, (n: number) => void>();
  private nextReq = 1;
  private closed = false;

  constructor(deliver: Deliver<C>, private readonly link: Link, private readonly opts: ClusterRouterOptions = {}) {
    this.out = new Outbox(link);
    // The local router says when an id gets its first local connection or loses its last: that is the hub's ADD/DEL.
    this.local = new LocalRouter<C>(deliver, (id, present) => this.out.push([present ? ADD : DEL, id]));
    link.onMessage((batch) => {
      for (const op of batch) this.receive(op);
    });
  }

  login(id: number, conn: C): void {
    this.local.login(id, conn);
  }

  logout(conn: C): void {
    this.local.logout(conn);
  }

  send(id: number, msg: string): Promise<number> {
    const here = this.local.send(id, msg);
    if (this.closed) return Promise.resolve(here);
    const req = this.nextReq++;
    return new Promise((resolve) => {
      this.waits.set(req, (n) => resolve(here + n));
      this.out.push([SEND, req, id, msg]);
    });
  }

  idsOf(conn: C): readonly number[] {
    return this.local.idsOf(conn);
  }

  get idCount(): number {
    return this.local.idCount;
  }

  get connCount(): number {
    return this.local.connCount;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.out.flush();
    for (const w of this.waits.values()) w(0);
    this.waits.clear();
    this.link.close();
    await this.local.close();
  }

  private receive(op: Op): void {
    switch (op[0]) {
      case DELIVER: {
        const [, req, id, msg] = op;
        const n = this.local.send(id, msg);
        if (req !== 0) this.out.push([COUNT, req, n]);
        return;
      }
      case DONE: {
        const w = this.waits.get(op[1]);
        if (w === undefined) return;
        this.waits.delete(op[1]);
        w(op[2]);
        return;
      }
      case STATS:
        this.out.push([STATS_REPLY, op[1], this.opts.stats?.() ?? null]);
        return;
      default:
        return;
    }
  }
}

/** A Link over a worker_threads MessagePort (the tests' second node on the same hub, in one process). */
export function portLink(port: MessagePort): Link {
  return {
    post: (batch) => port.postMessage(batch),
    onMessage: (fn) => {
      port.on('message', fn);
    },
    close: () => port.close(),
  };
}

/** True when an IPC message is a batch of this bus (cluster IPC also carries the cluster's own messages). */
export function isBatch(m: unknown): m is Op[] {
  return Array.isArray(m);
}

/** The worker's side of process IPC (`process.send`). */
export function processLink(): Link {
  return {
    post: (batch) => {
      if (process.connected) process.send!(batch);
    },
    onMessage: (fn) => {
      process.on('message', (m: unknown) => {
        if (isBatch(m)) fn(m);
      });
    },
    close: () => undefined,
  };
}

/** The primary's side of one worker's IPC. */
export function workerLink(worker: { send(m: unknown): boolean; isConnected(): boolean; on(ev: 'message', fn: (m: unknown) => void): unknown }): Link {
  return {
    post: (batch) => {
      if (worker.isConnected()) worker.send(batch);
    },
    onMessage: (fn) => {
      worker.on('message', (m: unknown) => {
        if (isBatch(m)) fn(m);
      });
    },
    close: () => undefined,
  };
}
