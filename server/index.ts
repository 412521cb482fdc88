// The reference comet server as a library: `startCometServer(opts)` starts the streaming listener, the router
// and the control API, and returns a handle with the bound ports, live stats and a graceful `stop()`.
import type http from 'node:http';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { startControl, isLoopback } from './control.js';
import {
  DEFAULT_CONTROL_HOST,
  DEFAULT_CONTROL_PORT,
  DEFAULT_HOST,
  DEFAULT_LIMITS,
  DEFAULT_PORT,
  LIMIT_RANGES,
  type Limits,
} from './limits.js';
import { LocalRouter, type Router, type RouterFactory } from './router.js';
import { Counters, snapshot, type ServerStats } from './stats.js';
import type { BusStats } from './router-redis.js';
import { StreamServer, type Conn, type Transport } from './stream.js';
import { loadWriter, wrapAvailable } from './wrap.js';
import { fdPoolAvailable } from './fdpool.js';
import { startHeapBudget } from './heap.js';

export type { ServerStats } from './stats.js';
export type { Limits } from './limits.js';
export type { Router, RouterFactory, Deliver } from './router.js';
export { DEFAULT_LIMITS } from './limits.js';

/** Options of startCometServer; every limit defaults to DEFAULT_LIMITS. */
export interface CometServerOptions {
  /** Public (streaming) address; default 0.0.0.0. */
  host?: string;
  /** Public port; default 8000, 0 picks a free port. */
  port?: number;
  /** Control API address; default 127.0.0.1. A non-loopback address requires a token. */
  controlHost?: string;
  /** Control API port; default 8001, 0 picks a free port. */
  controlPort?: number;
  /** When set, the control API requires `Authorization: Bearer <token>` (except /healthz). */
  token?: string;
  /** Most open sockets on the public port (0 = no limit). */
  maxConns?: number;
  /** SSE heartbeat interval in ms. */
  heartbeatMs?: number;
  /** Unsent output per stream before it is cut as a slow consumer, in bytes. */
  maxBufferBytes?: number;
  /** Most ids per streaming connection. */
  maxIdsPerConn?: number;
  /** Time to send a complete request head, in ms. */
  requestTimeoutMs?: number;
  /** Largest single message (POST /send/<id> body), in bytes. */
  maxMessageBytes?: number;
  /** Largest NDJSON batch (POST /send body), in bytes. */
  maxBatchBytes?: number;
  /** Heap garbage before the server asks for a full GC, in bytes (0 = leave it to V8; needs --expose-gc). */
  heapSlackBytes?: number;
  /** Any other limit. */
  limits?: Partial<Limits>;
  /** Builds the router; default: the in-process LocalRouter. */
  router?: RouterFactory<Conn>;
  /**
   * More public listeners besides host:port (`--listen`), all feeding the same streams, so clients can spread over
   * several addresses/ports. When given, the first entry replaces host/port.
   */
  listen?: Array<{ host: string; port: number }>;
  /** Start the control API (default true; a cluster worker has none: the primary serves it). */
  control?: boolean;
  /**
   * How the streaming port holds connections (`--transport`): 'fd' reads each request on a libuv TCP handle and then
   * holds the stream as a bare fd in the native epoll set (~0.7 KB less per connection than a handle, fdpool.ts),
   * 'wrap' keeps the libuv handles (~1.2 KB less than net.Socket, Node internals, see wrap.ts), 'net' uses
   * net.Socket; 'auto' (default) is the first of those this process supports. Overridden by C1M_TRANSPORT when the
   * option is not given.
   */
  transport?: TransportOption;
  /**
   * Who makes the streaming sockets' writes (`--writer`, fd and wrap transports): 'pool' hands each tick's writes to a
   * thread of libuv's pool as one batch (server/native/writer.c), 'main' writes from the JavaScript thread, 'auto'
   * (default) is 'pool' when the addon is built. Overridden by C1M_WRITER when the option is not given.
   */
  writer?: WriterOption;
}

/** Who writes the streaming sockets: the writer addon's pool thread, or the main thread. */
export type Writer = 'pool' | 'main';
/** A writer choice as given: a writer, or 'auto'. */
export type WriterOption = Writer | 'auto';

/** 'auto' → 'pool' on the fd and wrap transports when the addon loads; 'pool' where it cannot work is a ServerConfigError. */
export function resolveWriter(w: WriterOption, transport: Transport): Writer {
  if (w === 'main') return w;
  if (w === 'auto') return transport !== 'net' && loadWriter().writer !== null ? 'pool' : 'main';
  if (w === 'pool') {
    if (transport === 'net') throw new ServerConfigError('--writer pool works with the fd and wrap transports only (not net, not --workers)');
    const { writer, reason } = loadWriter();
    if (writer === null) throw new ServerConfigError(`--writer pool: the writer addon is not available (${reason}); use --writer main`);
    return w;
  }
  throw new ServerConfigError(`--writer: '${String(w)}' is not one of auto, pool, main`);
}

/** A transport choice as given: a transport, or 'auto'. */
export type TransportOption = Transport | 'auto';

/**
 * 'auto' → 'fd' when the native socket layer loads, else 'wrap', when this Node has the TCP handle bindings and every
 * public host is an IP address (a bare handle binds addresses; net.Server resolves names), else 'net'; 'fd' or
 * 'wrap' where it cannot work, or an unknown name, is a ServerConfigError.
 */
export function resolveTransport(t: TransportOption, hosts: readonly string[] = []): Transport {
  const named = hosts.find((h) => isIP(h) === 0);
  if (t === 'auto') return !wrapAvailable() || named !== undefined ? 'net' : fdPoolAvailable() ? 'fd' : 'wrap';
  if (t === 'net') return t;
  if (t === 'wrap' || t === 'fd') {
    if (!wrapAvailable()) throw new ServerConfigError(`--transport ${t}: this Node (${process.version}) does not expose the TCP handle bindings; use --transport net`);
    if (named !== undefined) throw new ServerConfigError(`--transport ${t} listens on IP addresses only, not '${named}'; give an address or use --transport net`);
    if (t === 'fd' && !fdPoolAvailable()) throw new ServerConfigError(`--transport fd: the native socket layer is not available (${loadWriter().reason}); use --transport wrap`);
    return t;
  }
  throw new ServerConfigError(`--transport: '${String(t)}' is not one of auto, fd, wrap, net`);
}

/** A running server. */
export interface CometServer {
  /** Bound public port. */
  port: number;
  /** Bound control API port. */
  controlPort: number;
  /** Public address as given. */
  host: string;
  /** Every public listener with its bound port (host:port first, then the rest of `listen`). */
  listening: Array<{ host: string; port: number }>;
  /** Control address as given. */
  controlHost: string;
  /** The streaming transport in use. */
  transport: Transport;
  /** Who writes the streaming sockets. */
  writer: Writer;
  /** The current /stats document. */
  stats(): ServerStats;
  /**
   * Publishes a message in-process (same path and counters as the control API); resolves to connections reached.
   * Deliveries are written on the next setImmediate, so a caller publishing in a tight loop should yield now and then.
   */
  publish(id: number, msg: string): Promise<number>;
  /** Graceful stop: stop accepting, end every stream (terminating chunk), close the control API; ≤ grace period. */
  stop(): Promise<void>;
}

/** A configuration the server refuses to start with; `message` says why. */
export class ServerConfigError extends Error {
  readonly code = 'C1M_SERVER_CONFIG';
  constructor(message: string) {
    super(message);
    this.name = 'ServerConfigError';
  }
}

/** Resolves the options into limits, checking every range. */
export function resolveLimits(opts: CometServerOptions): Limits {
  const limits: Limits = { ...DEFAULT_LIMITS, ...opts.limits };
  const direct: Array<keyof Limits & keyof CometServerOptions> = [
    'maxConns', 'heartbeatMs', 'maxBufferBytes', 'maxIdsPerConn', 'requestTimeoutMs', 'maxMessageBytes', 'maxBatchBytes', 'heapSlackBytes',
  ];
  for (const key of direct) {
    const v = opts[key];
    if (v !== undefined) limits[key] = v as number;
  }
  for (const [key, [lo, hi]] of Object.entries(LIMIT_RANGES) as Array<[keyof Limits, readonly [number, number]]>) {
    const v = limits[key];
    if (!Number.isFinite(v) || v < lo || v > hi) throw new ServerConfigError(`${key} = ${v} is out of range (${lo} to ${hi})`);
  }
  return limits;
}

/** The control API's address and token (null: none); a non-loopback address without a token is refused. */
export function resolveControlAccess(opts: CometServerOptions): { controlHost: string; token: string | null } {
  const controlHost = opts.controlHost ?? DEFAULT_CONTROL_HOST;
  const token = opts.token === undefined || opts.token === '' ? null : opts.token;
  if (!isLoopback(controlHost) && token === null) {
    throw new ServerConfigError(
      `refusing to expose the control API on ${controlHost} without a token: anyone who reaches it could publish to every user; ` +
        'set --token (or C1M_TOKEN), or keep --control-host on loopback',
    );
  }
  return { controlHost, token };
}

/** Starts the comet server: streaming listener, router and control API. */
export async function startCometServer(opts: CometServerOptions = {}): Promise<CometServer> {
  const limits = resolveLimits(opts);
  const host = opts.listen?.[0]?.host ?? opts.host ?? DEFAULT_HOST;
  const { controlHost, token } = resolveControlAccess(opts);
  const startedAt = performance.now();
  const counters = new Counters();
  const transport = resolveTransport(
    opts.transport ?? (process.env.C1M_TRANSPORT as TransportOption | undefined) ?? 'auto',
    [host, ...(opts.listen ?? []).map((l) => l.host)],
  );
  const writer = resolveWriter(opts.writer ?? (process.env.C1M_WRITER as WriterOption | undefined) ?? 'auto', transport);
  const stream = new StreamServer({ host, port: opts.listen?.[0]?.port ?? opts.port ?? DEFAULT_PORT, limits, counters, transport, batched: writer === 'pool' });
  const router: Router<Conn> = await (opts.router ?? ((d) => new LocalRouter<Conn>(d)))(stream.deliver);
  stream.router = router;

  // A bus router (Redis) reports its own part of /stats: state, outages, lost publishes, subscriptions.
  const busStats = (router as { busStats?: () => BusStats }).busStats?.bind(router);
  const stats = (): ServerStats => {
    const s = snapshot(counters, { connections: stream.connections, ids: router.idCount, sockets: stream.sockets }, startedAt);
    if (busStats) s.bus = busStats();
    return s;
  };

  // Counted once the router took it: a bus that is down rejects the send (counted there, in bus.lostOnBus).
  const taken = (reached: number): number => {
    counters.messagesIn++;
    if (reached > 0) counters.messagesDelivered++;
    else counters.toNobody++;
    return reached;
  };
  // The in-process router answers at once: no promise per message then (an NDJSON batch of 1,000 lines made 3,000
  // promises and their reaction jobs, which at fan-out rates outlived scavenges). A bus router's answer is a promise.
  const publishNow = (id: number, msg: string): number | Promise<number> => {
    const r = router.send(id, msg);
    return typeof r === 'number' ? taken(r) : r.then(taken);
  };
  const publish = async (id: number, msg: string): Promise<number> => publishNow(id, msg);

  let port: number;
  const listening: Array<{ host: string; port: number }> = [];
  let control: { server: http.Server; port: number } | null = null;
  try {
    port = await stream.listen();
    listening.push({ host, port });
    // More listeners feed the same streams and limits (and close with them).
    for (const l of (opts.listen ?? []).slice(1)) listening.push({ host: l.host, port: await stream.listenMore(l.host, l.port) });
    if (opts.control !== false) {
      control = await startControl(
        { publish: publishNow, stats },
        { host: controlHost, port: opts.controlPort ?? DEFAULT_CONTROL_PORT, token, limits, onUnauthorized: () => counters.unauthorized++ },
      );
    }
  } catch (err) {
    await stream.stop(0);
    await router.close();
    throw err;
  }

  const heap = startHeapBudget(limits.heapSlackBytes, limits.heapCheckMs, () => counters.heapGcs++);
  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      heap.stop();
      const controlClosed = control ? new Promise<void>((resolve) => control!.server.close(() => resolve())) : Promise.resolve();
      control?.server.closeIdleConnections();
      await stream.stop(limits.shutdownGraceMs);
      control?.server.closeAllConnections();
      await controlClosed;
      await router.close();
    })());

  return { port, controlPort: control?.port ?? 0, host, controlHost, transport, writer, listening, stats, publish, stop };
}
