// The connection engine: opens many long-lived HTTP streams on raw sockets and counts what arrives.
//
// Memory is the point. A Node socket already costs ~2 KB; everything floodtest adds per connection must be small
// next to that. So:
// - A connection is one object (Conn, which *is* its response parser) with a few number fields; the socket finds it
//   through one symbol property.
// - No closures per connection: the socket handlers are module-level functions that read `this`, registered by
//   reference. Plain-TCP sockets read into ONE shared 64 KiB buffer (the `onread` option), so no read buffer is
//   allocated per connection or per read; the parser copies only what is split across reads.
// - No timer per connection: one engine timer wakes for the connect pace, for reconnect backoffs (a binary heap keyed
//   by due time) and to sweep connect timeouts over the connects in flight (at most `inflight` of them).
// - Failures are data: counted by err.code, `HTTP_<status>` or the parser's HPE_* code, never thrown.
import net from 'node:net';
import tls from 'node:tls';
import type { Histogram } from '../lib/histogram.js';
import { createHistogram, recordLatency } from '../lib/histogram.js';
import { nowMicros } from '../lib/marker.js';
import { ExecResult, ResponseParser } from './parser.js';
import type { TargetTable } from './urls.js';
import type { ErrorCounts } from './sample.js';

/** Engine settings; validated by the caller (index.ts). */
export interface EngineOptions {
  targets: TargetTable;
  /** One new connection every intervalMs (fractions allowed); 0 = as fast as the in-flight cap allows. */
  intervalMs: number;
  /** Connects in flight at most (started, no response head yet). */
  inflight: number;
  /** Connections to open: slot i uses URL i mod the URL count. */
  maxConns: number;
  /** From connect start to the response head, ms; then ETIMEDOUT. */
  connectTimeoutMs: number;
  /** Reopen a slot after it fails or closes, with exponential backoff and jitter. */
  reconnect: boolean;
  reconnectBaseMs: number;
  reconnectMaxMs: number;
  /** https: do not verify the server certificate. */
  insecure: boolean;
}

/**
 * When may the next new connection start? `started` connections have started so far; the k-th (0-based) is due at
 * k × intervalMs after the start. Returns 0 to start now, else the ms to wait. Pure, so it is table-tested.
 */
export function pace(elapsedMs: number, started: number, intervalMs: number): number {
  if (intervalMs <= 0) return 0;
  const due = started * intervalMs;
  return due <= elapsedMs ? 0 : due - elapsedMs;
}

/**
 * Delay before reconnect attempt number `failures` (1-based): base × 2^(failures-1), capped at max, with "equal
 * jitter" (a random half on top of a fixed half) so a server restart is not met by a synchronized herd.
 * `random` is in [0, 1).
 */
export function backoffMs(failures: number, baseMs: number, maxMs: number, random: number): number {
  const exp = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(failures - 1, 0), 30));
  return exp / 2 + (exp / 2) * random;
}

const P_IDLE = 0; // no socket: not started yet, waiting to reconnect, or dead
const P_CONNECTING = 1; // socket opened, waiting for the response head (counts against the in-flight cap)
const P_OPEN = 2; // 200 received: a stream
const P_WAITING = 3; // in the reconnect heap

// Connect timeouts are swept at this granularity rather than timed per connection.
const TIMEOUT_SWEEP_MS = 100;

const kConn = Symbol('floodtest.conn');
type ConnSocket = net.Socket & { [kConn]?: Conn };

/** One connection slot; it is its own response parser. */
class Conn extends ResponseParser {
  socket: ConnSocket | null = null;
  phase = P_IDLE;
  /** Why the current socket is closing (first cause wins). */
  errCode: string | null = null;
  /** Index in the engine's in-flight list while connecting, else -1. */
  ifIdx = -1;
  /** performance.now() when the current connect started. */
  startedAt = 0;
  /** Reconnect: when it is due (performance.now() ms) and its index in the heap. */
  dueAt = 0;
  heapIdx = -1;
  /** Consecutive failures since the last stream opened (drives the backoff). */
  failures = 0;

  constructor(readonly engine: Engine, readonly slot: number) {
    super();
  }

  protected override onHeaders(): boolean {
    return this.engine.headers(this);
  }

  protected override onChunk(marker: number): void {
    const e = this.engine;
    e.chunks++;
    if (marker >= 0) e.record(nowMicros() - marker);
  }

  protected override onEvent(marker: number): void {
    const e = this.engine;
    e.events++;
    if (marker >= 0) e.record(nowMicros() - marker);
  }
}

// ---- Socket handlers, shared by every connection (registered by reference, never re-created) ----

const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

// Returns true: `false` would pause the socket.
function onRead(this: ConnSocket, nread: number, buf: Buffer): boolean {
  const c = this[kConn];
  if (c === undefined || c.socket !== this) return true;
  const r = c.execute(buf, 0, nread);
  if (r !== ExecResult.OK) c.engine.afterExec(c, r);
  return true;
}

const ONREAD = { buffer: READ_BUFFER, callback: onRead };

function onData(this: ConnSocket, buf: Buffer): void {
  onRead.call(this, buf.length, buf);
}

function onError(this: ConnSocket, err: NodeJS.ErrnoException): void {
  const c = this[kConn];
  if (c === undefined || c.socket !== this) return;
  if (c.errCode === null) c.errCode = err.code ?? 'ERROR';
}

function onClose(this: ConnSocket): void {
  const c = this[kConn];
  if (c === undefined || c.socket !== this) return;
  c.engine.socketClosed(c);
}

/** Runs the flood for one process: owns every connection, the pace, the timeouts and the counters. */
export class Engine {
  // Counters read by samples (totals since start unless noted).
  connected = 0; // gauge
  closed = 0;
  chunks = 0;
  events = 0;
  established = 0;
  attempts = 0;
  readonly errors: ErrorCounts = Object.create(null) as ErrorCounts;
  readonly histogram: Histogram = createHistogram();
  /** Latencies of the current sample interval only (since the last rotateInterval()). */
  intervalHistogram: Histogram = createHistogram();
  /** The interval completed by the last rotateInterval(); reused as the next current one (no allocation per tick). */
  private spareHistogram: Histogram = createHistogram();
  /** Most streams open at once, and when (ms after start) that was first reached. */
  peak = 0;
  peakAtMs = 0;
  /** performance.now() at start, and of the first connect. */
  t0 = 0;
  firstConnectAt = -1;

  private readonly conns: Conn[] = [];
  private readonly inflightList: Conn[] = [];
  private readonly heap: Conn[] = [];
  private nextSlot = 0;
  private live = 0; // sockets not yet closed
  private lastSweep = 0;
  private timer: NodeJS.Timeout | null = null;
  private wakeAt = Infinity;
  private stopping = false;
  private stopWaiter: (() => void) | null = null;
  private readonly onTimer = (): void => {
    this.timer = null;
    this.wakeAt = Infinity;
    this.pump();
  };

  constructor(readonly opts: EngineOptions) {}

  /** Connects in flight now. */
  get inflight(): number {
    return this.inflightList.length;
  }

  /** Starts connecting. */
  /** Records one latency (µs) into the run's histogram and the current interval's. */
  record(micros: number): void {
    recordLatency(this.histogram, micros);
    recordLatency(this.intervalHistogram, micros);
  }

  /**
   * Ends the current interval: returns its histogram (valid until the next call) and starts an empty one.
   * The two interval histograms swap roles, so a tick allocates nothing.
   */
  rotateInterval(): Histogram {
    const done = this.intervalHistogram;
    this.spareHistogram.reset();
    this.intervalHistogram = this.spareHistogram;
    this.spareHistogram = done;
    return done;
  }

  /** Frees the histograms (after stop, once they have been read). */
  destroyHistograms(): void {
    this.histogram.destroy();
    this.intervalHistogram.destroy();
    this.spareHistogram.destroy();
  }

  start(): void {
    this.t0 = performance.now();
    this.lastSweep = this.t0;
    this.pump();
  }

  /** Closes every socket (not counted as `closed`) and resolves once all are gone. Idempotent. */
  stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      if (this.timer !== null) clearTimeout(this.timer);
      this.timer = null;
      for (const c of this.heap) c.heapIdx = -1;
      this.heap.length = 0;
      for (const c of this.conns) if (c.socket !== null) c.socket.destroy();
    }
    if (this.live === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const prev = this.stopWaiter;
      this.stopWaiter = () => {
        prev?.();
        resolve();
      };
    });
  }

  // ---- called from the parser hooks and socket handlers ----

  /** Response head parsed: a 200 opens a stream, anything else is counted as HTTP_<status> and closed. */
  headers(c: Conn): boolean {
    if (c.statusCode !== 200) {
      c.errCode = `HTTP_${c.statusCode}`;
      c.socket?.destroy();
      return false;
    }
    this.removeInflight(c);
    c.phase = P_OPEN;
    c.failures = 0;
    this.established++;
    if (++this.connected > this.peak) {
      this.peak = this.connected;
      this.peakAtMs = performance.now() - this.t0;
    }
    this.pump();
    return true;
  }

  /** After execute()/finish() returned something other than OK: end the socket and record why. */
  afterExec(c: Conn, r: ExecResult): void {
    if (r === ExecResult.OK) return;
    if (r === ExecResult.ERROR && c.errCode === null) c.errCode = c.error?.code ?? 'HPE_ERROR';
    // DONE: the server ended the response; the stream is over (counted as closed). HALTED: already handled.
    c.socket?.destroy();
  }

  /** A socket is gone: update gauges, count the cause, maybe schedule a reconnect. */
  socketClosed(c: Conn): void {
    if (c.errCode === null && !this.stopping) {
      // Closed without an error or a reason of ours: the peer ended the connection (EOF). That is a clean end
      // for a read-until-close body or an already finished response, else HPE_INVALID_EOF_STATE.
      if (c.finish() === ExecResult.ERROR) c.errCode = c.error?.code ?? 'HPE_ERROR';
    }
    const wasOpen = c.phase === P_OPEN;
    if (c.phase === P_CONNECTING) this.removeInflight(c);
    c.socket = null;
    c.phase = P_IDLE;
    this.live--;
    if (this.stopping) {
      c.reset();
      if (this.live === 0 && this.stopWaiter !== null) {
        const w = this.stopWaiter;
        this.stopWaiter = null;
        w();
      }
      return;
    }
    if (c.errCode !== null) this.countError(c.errCode);
    if (wasOpen) {
      this.connected--;
      this.closed++;
    }
    c.reset(); // drop any buffer the parser held
    if (this.opts.reconnect) {
      c.failures++;
      this.schedule(c, performance.now() + backoffMs(c.failures, this.opts.reconnectBaseMs, this.opts.reconnectMaxMs, Math.random()));
    }
    this.pump();
  }

  private countError(code: string): void {
    this.errors[code] = (this.errors[code] ?? 0) + 1;
  }

  // ---- scheduling: one timer, one pass ----

  private pump(): void {
    if (this.stopping) return;
    const now = performance.now();
    const o = this.opts;
    let wake = Infinity;
    if (this.inflightList.length > 0 && now - this.lastSweep >= TIMEOUT_SWEEP_MS) this.sweepTimeouts(now);
    while (this.heap.length > 0 && this.inflightList.length < o.inflight) {
      const c = this.heap[0]!;
      if (c.dueAt > now) {
        wake = c.dueAt;
        break;
      }
      this.heapPop();
      this.connect(c, now);
    }
    while (this.nextSlot < o.maxConns && this.inflightList.length < o.inflight) {
      const wait = pace(now - this.t0, this.nextSlot, o.intervalMs);
      if (wait > 0) {
        wake = Math.min(wake, now + wait);
        break;
      }
      const c = new Conn(this, this.nextSlot++);
      this.conns.push(c);
      this.connect(c, now);
    }
    if (this.inflightList.length > 0) wake = Math.min(wake, this.lastSweep + TIMEOUT_SWEEP_MS);
    if (wake < this.wakeAt) {
      if (this.timer !== null) clearTimeout(this.timer);
      this.wakeAt = wake;
      this.timer = setTimeout(this.onTimer, Math.max(0, wake - now));
    }
  }

  private sweepTimeouts(now: number): void {
    this.lastSweep = now;
    const limit = this.opts.connectTimeoutMs;
    for (const c of this.inflightList) {
      if (now - c.startedAt >= limit && c.socket !== null && c.errCode === null) {
        c.errCode = 'ETIMEDOUT';
        c.socket.destroy();
      }
    }
  }

  private connect(c: Conn, now: number): void {
    const t = this.opts.targets;
    const url = c.slot % t.paths.length;
    const ep = t.endpoints[t.endpointOf[url]!]!;
    this.attempts++;
    if (this.firstConnectAt < 0) this.firstConnectAt = now;
    c.errCode = null;
    c.reset();
    if (ep.address === null) {
      this.failNow(c, ep.resolveError ?? 'ENOTFOUND', now);
      return;
    }
    let s: ConnSocket;
    try {
      s = ep.tls
        ? tls.connect({ host: ep.address, port: ep.port, servername: net.isIP(ep.host) ? undefined : ep.host, rejectUnauthorized: !this.opts.insecure })
        : net.connect({ host: ep.address, port: ep.port, onread: ONREAD });
    } catch (err) {
      this.failNow(c, (err as NodeJS.ErrnoException).code ?? 'ERROR', now);
      return;
    }
    s[kConn] = c;
    c.socket = s;
    c.phase = P_CONNECTING;
    c.startedAt = now;
    c.ifIdx = this.inflightList.length;
    this.inflightList.push(c);
    this.live++;
    // No 'end' handler (one listener less per socket): without allowHalfOpen, Node closes the socket on EOF and
    // socketClosed asks the parser whether that EOF ended the response cleanly.
    s.on('error', onError);
    s.on('close', onClose);
    if (ep.tls) s.on('data', onData);
    // Written at once: Node queues it until the connection is up, so no 'connect' handler is needed.
    s.write(`GET ${t.paths[url]!} HTTP/1.1\r\nHost: ${ep.hostHeader}\r\nUser-Agent: floodtest\r\nAccept: */*\r\n\r\n`);
  }

  // A connect that failed before a socket existed (unresolved name, synchronous throw). No pump: we are in it.
  private failNow(c: Conn, code: string, now: number): void {
    this.countError(code);
    c.phase = P_IDLE;
    if (this.opts.reconnect) {
      c.failures++;
      this.schedule(c, now + backoffMs(c.failures, this.opts.reconnectBaseMs, this.opts.reconnectMaxMs, Math.random()));
    }
  }

  private removeInflight(c: Conn): void {
    const i = c.ifIdx;
    if (i < 0) return;
    const last = this.inflightList.pop()!;
    if (last !== c) {
      this.inflightList[i] = last;
      last.ifIdx = i;
    }
    c.ifIdx = -1;
  }

  // ---- reconnect heap (min-heap on dueAt) ----

  private schedule(c: Conn, dueAt: number): void {
    c.dueAt = dueAt;
    c.phase = P_WAITING;
    const h = this.heap;
    let i = h.length;
    h.push(c);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]!.dueAt <= dueAt) break;
      h[i] = h[p]!;
      h[i]!.heapIdx = i;
      i = p;
    }
    h[i] = c;
    c.heapIdx = i;
  }

  private heapPop(): Conn {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= h.length) break;
        const r = l + 1;
        const m = r < h.length && h[r]!.dueAt < h[l]!.dueAt ? r : l;
        if (h[m]!.dueAt >= last.dueAt) break;
        h[i] = h[m]!;
        h[i]!.heapIdx = i;
        i = m;
      }
      h[i] = last;
      last.heapIdx = i;
    }
    top.heapIdx = -1;
    return top;
  }
}
