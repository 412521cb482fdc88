// `comet-server --workers N`: a primary and N `node:cluster` workers sharing the public listener(s).
//
// Who does what:
// - Workers hold the streaming connections (StreamServer + a ClusterRouter node each) and have no control listener.
// - The primary holds no streams. It serves the control API (publish, /stats, /metrics, /healthz) on one port, keeps
//   the registry of which worker holds which id (ClusterHub) and routes each message only to those workers.
// - Accepting: node's default round-robin policy on Linux has the primary accept each connection and pass the handle
//   to a worker over IPC; the primary closes its copy as soon as the worker has taken it, so it holds no fd or memory
//   per connection (measured: see README). Round-robin keeps the workers even, which matters when each must stay under
//   the 20,000 open-files limit; NODE_CLUSTER_SCHED_POLICY=none (the kernel spreads accepts) is a trade of balance for
//   the primary's accept CPU.
// - A worker that dies is replaced in its slot; its streams are counted as closed (from its last stats answer, at
//   most one second old), its ids leave the registry, and the other workers' clients never notice.
import cluster, { type Worker } from 'node:cluster';
import type http from 'node:http';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { startControl } from './control.js';
import { DEFAULT_CONTROL_PORT, DEFAULT_HOST, DEFAULT_PORT } from './limits.js';
import { ServerConfigError, resolveControlAccess, resolveLimits, type CometServer, type CometServerOptions } from './index.js';
import { ClusterHub, workerLink, type HubNodeCounters } from './router-cluster.js';
import { Counters, snapshot, type ServerStats, type WorkerStats } from './stats.js';

/** Options of a cluster: the server's options plus the worker count. */
export interface ClusterOptions extends CometServerOptions {
  /** Worker processes (≥ 1). */
  workers: number;
  /** Notices (a worker died and was replaced); default: none. */
  onEvent?: (line: string) => void;
  /** Longest wait for the workers to be listening, in ms (default 15 s). */
  startTimeoutMs?: number;
}

/** A running cluster: the CometServer handle, plus its workers. */
export interface CometCluster extends Omit<CometServer, 'stats'> {
  stats(): Promise<ServerStats>;
  /** Pids of the live workers by slot. */
  workerPids(): number[];
  /** The registry (for tests and diagnostics). */
  readonly hub: ClusterHub;
}

/** What the primary passes to each worker (JSON in C1M_WORKER_CONFIG). */
export interface WorkerConfig {
  opts: Omit<CometServerOptions, 'router'>;
  slot: number;
}

export { autoWorkers, parseListen } from './listen.js';

// /stats fields that only grow (a dead worker's are kept), and gauges (a dead worker's are dropped).
const COUNTER_KEYS = [
  'connectionsTotal', 'closed', 'accepted', 'messagesIn', 'messagesDelivered', 'toNobody', 'chunksQueued', 'chunksOut',
  'chunksDropped', 'bytesOut', 'writes', 'slowDrops', 'badRequests', 'timeouts', 'rejected', 'inputAbuse', 'heartbeats',
  'socketErrors', 'unauthorized', 'acceptErrors', 'heapGcs',
] as const satisfies ReadonlyArray<keyof ServerStats>;
const GAUGE_KEYS = ['connections', 'sockets', 'rss', 'heapUsed', 'heapTotal', 'external', 'arrayBuffers'] as const satisfies ReadonlyArray<keyof ServerStats>;

interface Slot {
  worker: Worker | null;
  startedAt: number;
  restarts: number;
  last: ServerStats | null;
  fresh: boolean;
}

const WORKER_SCRIPT = fileURLToPath(new URL('./worker.js', import.meta.url));

/** Starts the primary and its workers; resolves once every worker listens and the control API is up. */
export async function startCluster(opts: ClusterOptions): Promise<CometCluster> {
  const n = opts.workers;
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new ServerConfigError(`workers = ${n} is out of range (1 to 256)`);
  if (!cluster.isPrimary) throw new ServerConfigError('startCluster must run in the primary process');
  const limits = resolveLimits(opts);
  const { controlHost, token } = resolveControlAccess(opts);
  const host = opts.listen?.[0]?.host ?? opts.host ?? DEFAULT_HOST;
  const listen = opts.listen ?? [{ host, port: opts.port ?? DEFAULT_PORT }];
  // --max-conns is the whole server's cap; round-robin keeps the workers even, so each gets its share.
  const perWorker = limits.maxConns > 0 ? Math.ceil(limits.maxConns / n) : 0;
  // Workers share the listening ports through node:cluster, which hands them net.Sockets: the wrap transport
  // (its own bound socket per process) cannot take part, so workers use net.
  if (opts.transport === 'wrap') throw new ServerConfigError('--transport wrap works with one process only; --workers uses net (or give --transport auto)');
  if (opts.writer === 'pool') throw new ServerConfigError('--writer pool works with the wrap transport only (not net, not --workers)');
  const workerOpts: WorkerConfig['opts'] = { listen, limits: { ...limits, maxConns: perWorker }, control: false, transport: 'net' };
  const onEvent = opts.onEvent ?? (() => undefined);

  const startedAt = performance.now();
  const counters = new Counters();
  const hub = new ClusterHub();
  const slots: Slot[] = [];
  const retired: Record<string, number> = {};
  let restarts = 0;
  let stopping = false;
  let listening: Array<{ host: string; port: number }> = [];

  // Workers run worker.js with this process's node flags, minus the test runner's.
  cluster.setupPrimary({ exec: WORKER_SCRIPT, execArgv: process.execArgv.filter((a) => !a.startsWith('--test')) });

  let startFailed: ((err: Error) => void) | null = null;
  let readyCount = 0;
  let allReady: (() => void) | null = null;

  const fork = (slot: number): void => {
    const cfg: WorkerConfig = { opts: workerOpts, slot };
    const w = cluster.fork({ C1M_WORKER_CONFIG: JSON.stringify(cfg) });
    const s = (slots[slot] ??= { worker: null, startedAt: 0, restarts: 0, last: null, fresh: false });
    s.worker = w;
    s.startedAt = Date.now();
    s.last = null;
    hub.attach(slot, workerLink(w));
    // A send to a worker that was just killed fails with EPIPE before its 'exit' arrives; the exit handler below
    // replaces it, so the error is reported, never thrown (without a listener it was an uncaught exception).
    w.on('error', (err: NodeJS.ErrnoException) => {
      if (!stopping) onEvent(`worker ${slot} (pid ${w.process.pid}): ${err.code ?? err.message}`);
    });
    w.on('message', (m: unknown) => {
      if (typeof m !== 'object' || m === null || Array.isArray(m)) return;
      const msg = m as { c1m?: string; listening?: Array<{ host: string; port: number }>; message?: string };
      if (msg.c1m === 'ready') {
        if (listening.length === 0 && msg.listening) listening = msg.listening;
        if (++readyCount === n) allReady?.();
      } else if (msg.c1m === 'fail') {
        startFailed?.(new Error(msg.message ?? 'a worker failed to start'));
      }
    });
    w.on('exit', (code, signal) => {
      if (slots[slot]?.worker !== w) return;
      hub.detach(slot);
      retire(s.last);
      s.worker = null;
      s.last = null;
      if (stopping) return;
      if (startFailed) {
        startFailed(new Error(`worker ${slot} exited (${signal ?? code}) before it was listening`));
        return;
      }
      restarts++;
      s.restarts++;
      // A worker that dies right after starting is not restarted in a tight loop.
      const delay = Date.now() - s.startedAt < 1000 ? 1000 : 0;
      onEvent(`worker ${slot} (pid ${w.process.pid}) died (${signal ?? `exit ${code}`}); replacing it${delay ? ` in ${delay} ms` : ''}`);
      setTimeout(() => {
        if (!stopping) fork(slot);
      }, delay).unref();
    });
  };

  /** Folds a dead worker's last figures into the totals: its counters stay, its open streams count as closed. */
  const retire = (last: ServerStats | null): void => {
    if (last === null) return;
    for (const k of COUNTER_KEYS) retired[k] = (retired[k] ?? 0) + (last[k] as number);
    retired.closed = (retired.closed ?? 0) + last.connections;
    retired.chunksDropped = (retired.chunksDropped ?? 0) + Math.max(0, last.chunksQueued - last.chunksOut - last.chunksDropped);
  };

  const killAll = async (graceMs: number): Promise<void> => {
    const live = slots.map((s) => s.worker).filter((w): w is Worker => w !== null && !w.isDead());
    const exits = live.map((w) => new Promise<void>((resolve) => (w.isDead() ? resolve() : w.once('exit', () => resolve()))));
    for (const w of live) w.process.kill('SIGTERM');
    const timer = setTimeout(() => {
      for (const w of live) if (!w.isDead()) w.process.kill('SIGKILL');
    }, graceMs);
    await Promise.all(exits);
    clearTimeout(timer);
  };

  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`workers not listening after ${(opts.startTimeoutMs ?? 15_000) / 1000} s`)), opts.startTimeoutMs ?? 15_000);
      allReady = () => {
        clearTimeout(timer);
        resolve();
      };
      startFailed = (err) => {
        clearTimeout(timer);
        reject(err);
      };
      for (let i = 0; i < n; i++) fork(i);
    });
  } catch (err) {
    stopping = true;
    await killAll(1000);
    hub.close();
    throw err;
  } finally {
    startFailed = null;
    allReady = null;
  }

  const gather = async (): Promise<void> => {
    const docs = await hub.stats(1000);
    for (const [slot, s] of slots.entries()) {
      const doc = docs.get(slot) as ServerStats | null | undefined;
      s.fresh = doc !== undefined && doc !== null;
      if (s.fresh) s.last = doc!;
    }
  };
  // Keeps every worker's last figures at most a second old, so a worker that dies is accounted for.
  const poll = setInterval(() => void gather(), 1000).unref();

  const stats = async (): Promise<ServerStats> => {
    await gather();
    const doc = snapshot(counters, { connections: 0, ids: hub.idCount, sockets: 0 }, startedAt);
    for (const k of COUNTER_KEYS) (doc[k] as number) += retired[k] ?? 0;
    const workers: WorkerStats[] = [];
    for (const [slot, s] of slots.entries()) {
      const w = s.last;
      const c: Partial<HubNodeCounters> = hub.counters(slot) ?? {};
      if (w !== null) {
        for (const k of COUNTER_KEYS) (doc[k] as number) += w[k] as number;
        for (const k of GAUGE_KEYS) (doc[k] as number) += w[k] as number;
      }
      workers.push({
        slot,
        pid: s.worker?.process.pid ?? 0,
        fresh: s.fresh && s.worker !== null,
        connections: w?.connections ?? 0,
        ids: w?.ids ?? 0,
        sockets: w?.sockets ?? 0,
        connectionsTotal: w?.connectionsTotal ?? 0,
        closed: w?.closed ?? 0,
        chunksOut: w?.chunksOut ?? 0,
        chunksDropped: w?.chunksDropped ?? 0,
        rss: w?.rss ?? 0,
        heapUsed: w?.heapUsed ?? 0,
        delivers: c.delivers ?? 0,
        ipcBatches: c.batchesOut ?? 0,
        restarts: s.restarts,
      });
    }
    doc.workers = workers;
    doc.workerRestarts = restarts;
    return doc;
  };

  const publish = async (id: number, msg: string): Promise<number> => {
    counters.messagesIn++;
    const r = hub.send(id, msg);
    const reached = typeof r === 'number' ? r : await r;
    if (reached > 0) counters.messagesDelivered++;
    else counters.toNobody++;
    return reached;
  };

  let control: { server: http.Server; port: number };
  try {
    control = await startControl(
      { publish, stats },
      { host: controlHost, port: opts.controlPort ?? DEFAULT_CONTROL_PORT, token, limits, onUnauthorized: () => counters.unauthorized++ },
    );
  } catch (err) {
    stopping = true;
    clearInterval(poll);
    await killAll(1000);
    hub.close();
    throw err;
  }

  let stopped: Promise<void> | null = null;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      stopping = true;
      clearInterval(poll);
      const controlClosed = new Promise<void>((resolve) => control.server.close(() => resolve()));
      control.server.closeIdleConnections();
      // Workers end their streams gracefully on SIGTERM within the grace period; stragglers are killed after it.
      await killAll(limits.shutdownGraceMs + 500);
      control.server.closeAllConnections();
      await controlClosed;
      hub.close();
    })());

  return {
    port: listening[0]?.port ?? 0,
    controlPort: control.port,
    host,
    controlHost,
    transport: 'net',
    writer: 'main',
    listening,
    stats,
    publish,
    stop,
    hub,
    workerPids: () => slots.map((s) => s.worker?.process.pid ?? 0),
  };
}
