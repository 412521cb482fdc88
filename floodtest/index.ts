// floodtest as a library: `startFlood(options)` opens the connections (in this process, or in child processes with
// `procs` > 1) and returns a handle for samples, the latency histogram and `stop()` → Summary.
import { fork, type ChildProcess } from 'node:child_process';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import v8 from 'node:v8';
import { createHistogram, encodeHistogram, mergeEncoded, summarize, type Histogram } from '../lib/histogram.js';
import { Engine, type EngineOptions } from './engine.js';
import { addErrors, type ErrorCounts, type LoopDelay, type Sample, type Summary } from './sample.js';
import { parseTargets, resolveEndpoints } from './urls.js';

export type { Sample, Summary, ErrorCounts, LoopDelay } from './sample.js';
export { formatStatsLine, encodeRecord, decodeRecord, formatSummary, formatProgress, formatErrors } from './sample.js';
export { generateUrls, readUrlFile, parseUrlText, parseTargets, UrlError } from './urls.js';
export { ResponseParser, ResponseParseError, ParseErrorCode, ExecResult, PARSER_LIMITS } from './parser.js';
export { pace, backoffMs } from './engine.js';

/** Connections one floodtest process is meant to hold: under the 20,000 open-files limit with room to spare. */
export const CONNS_PER_PROC = 18_000;

/**
 * V8 flags that keep a flood process's heap lean: a 1 MiB semi-space instead of up to 16 MiB, and size-optimized
 * heuristics. With 18,000 sockets the young generation alone would otherwise cost ~1–2 KB per connection of RSS.
 */
export const LEAN_HEAP_FLAGS = ['--max-semi-space-size=1', '--optimize-for-size'] as const;

/**
 * Applies LEAN_HEAP_FLAGS to this running process (the CLI and the workers call it first thing, so it holds however
 * node was started, e.g. `node dist/floodtest/cli.js` by the c1m harness). V8 reads these two when it sizes and
 * grows the heap, so setting them at startup takes effect; bench.ts measures the difference.
 */
export function useLeanHeap(): void {
  for (const flag of LEAN_HEAP_FLAGS) v8.setFlagsFromString(flag);
}

/** Every default and limit of a flood, in one place. */
export const FLOOD_DEFAULTS = {
  intervalMs: 0,
  inflight: 256,
  connectTimeoutMs: 10_000,
  reconnect: false,
  reconnectBaseMs: 100,
  reconnectMaxMs: 30_000,
  durationMs: 0,
  sampleIntervalMs: 1000,
  insecure: false,
} as const;

/** Options of startFlood. Only `urls` is required. */
export interface FloodOptions {
  /** http:// or https:// URLs, opened in order; slot i uses urls[i mod urls.length]. */
  urls: readonly string[];
  /** One new connection every intervalMs (fractions allowed; 0 = as fast as the in-flight cap allows). Default 0. */
  intervalMs?: number;
  /** Connects in flight at most, across all processes (default 256, below a typical listen backlog of 511). */
  inflight?: number;
  /** Connections to open (default: one per URL). More than the URL count cycles through the URLs. */
  maxConns?: number;
  /** Connect + response head deadline, ms (default 10,000); then ETIMEDOUT. */
  connectTimeoutMs?: number;
  /** Reopen connections that fail or close, with exponential backoff and jitter (default false, as the seed). */
  reconnect?: boolean;
  /** First reconnect delay, ms (default 100); doubles per consecutive failure. */
  reconnectBaseMs?: number;
  /** Longest reconnect delay, ms (default 30,000). */
  reconnectMaxMs?: number;
  /** Stop by itself after this many ms (0 = run until stop(); default 0). */
  durationMs?: number;
  /** Worker processes (default: ceil(maxConns / 18,000)); 1 runs in this process. */
  procs?: number;
  /** How often onSample is called, ms (default 1000). */
  sampleIntervalMs?: number;
  /** https: skip certificate verification. */
  insecure?: boolean;
  /** Called with a sample every sampleIntervalMs. */
  onSample?: (s: Sample) => void;
  /** Extra node flags for worker processes (default: none). */
  workerExecArgv?: readonly string[];
}

/** A running flood. */
export interface FloodHandle {
  /** Connections asked for. */
  readonly asked: number;
  /** Processes doing the work (1 = this process). */
  readonly procs: number;
  /** PIDs of the processes holding the connections (this process's when procs is 1, else the workers'). */
  readonly pids: readonly number[];
  /** Totals and gauges now (across processes: the latest each worker reported). */
  sample(): Sample;
  /** The latency histogram so far, serialized (lib/histogram encodeHistogram form), for merging elsewhere. */
  encodedHistogram(): string;
  /**
   * The latency histogram of the interval of the latest onSample sample, serialized (after stop: of the rest since
   * that sample). Used by the --procs workers; with procs > 1 it is the parent's merged current interval.
   */
  encodedIntervalHistogram(): string;
  /** Stops: closes every connection, ends the workers, returns the summary. Idempotent. */
  stop(): Promise<Summary>;
  /** Resolves with the summary when the flood ends (duration elapsed or stop()). */
  readonly done: Promise<Summary>;
}

/** An invalid option, naming it and what it accepts. */
export class FloodOptionError extends RangeError {
  readonly code = 'C1M_BAD_OPTION';
  constructor(readonly option: string, message: string) {
    super(`${option}: ${message}`);
    this.name = 'FloodOptionError';
  }
}

/** Default process count for `asked` connections. */
export function defaultProcs(asked: number): number {
  return Math.max(1, Math.ceil(asked / CONNS_PER_PROC));
}

/** The options after defaults and range checks: the engine's (URLs not parsed yet) and the run's own. */
interface Resolved extends Omit<EngineOptions, 'targets'> {
  urls: readonly string[];
  durationMs: number;
  procs: number;
  sampleIntervalMs: number;
  insecure: boolean;
  onSample: ((s: Sample) => void) | undefined;
  workerExecArgv: readonly string[];
}

function check(option: string, v: number, min: number, max: number, integer = true): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    throw new FloodOptionError(option, `${String(v)} is out of range (allowed: ${min} to ${max}${integer ? ', whole number' : ''})`);
  }
  return v;
}

function resolveOptions(o: FloodOptions): Resolved {
  if (!Array.isArray(o.urls) || o.urls.length === 0) throw new FloodOptionError('urls', 'at least one URL is required');
  const d = FLOOD_DEFAULTS;
  const maxConns = check('maxConns', o.maxConns ?? o.urls.length, 1, 10_000_000);
  const r: Resolved = {
    urls: o.urls,
    intervalMs: check('intervalMs', o.intervalMs ?? d.intervalMs, 0, 3_600_000, false),
    inflight: check('inflight', o.inflight ?? d.inflight, 1, 100_000),
    maxConns,
    connectTimeoutMs: check('connectTimeoutMs', o.connectTimeoutMs ?? d.connectTimeoutMs, 1, 3_600_000),
    reconnect: o.reconnect ?? d.reconnect,
    reconnectBaseMs: check('reconnectBaseMs', o.reconnectBaseMs ?? d.reconnectBaseMs, 1, 3_600_000),
    reconnectMaxMs: check('reconnectMaxMs', o.reconnectMaxMs ?? d.reconnectMaxMs, 1, 3_600_000),
    durationMs: check('durationMs', o.durationMs ?? d.durationMs, 0, 365 * 86_400_000),
    procs: check('procs', o.procs ?? defaultProcs(maxConns), 1, 256),
    sampleIntervalMs: check('sampleIntervalMs', o.sampleIntervalMs ?? d.sampleIntervalMs, 10, 3_600_000),
    insecure: o.insecure ?? d.insecure,
    onSample: o.onSample,
    workerExecArgv: o.workerExecArgv ?? [],
  };
  if (r.reconnectMaxMs < r.reconnectBaseMs) throw new FloodOptionError('reconnectMaxMs', `must be at least reconnectBaseMs (${r.reconnectBaseMs})`);
  if (r.procs > r.maxConns) r.procs = r.maxConns;
  return r;
}

/** Starts a flood. Rejects on invalid options or URLs (nothing is opened then). */
export async function startFlood(options: FloodOptions): Promise<FloodHandle> {
  const o = resolveOptions(options);
  // Parse every URL before opening anything, so a bad line fails fast (also in the parent of a multi-process run).
  const targets = parseTargets(o.urls);
  return o.procs > 1 ? startForked(o) : startLocal(o, targets);
}

// Node's event-loop-delay monitor records the whole interval between its timer ticks, resolution included:
// subtract the resolution so an idle loop reads ~0 ms.
const LOOP_DELAY_RESOLUTION_MS = 10;

function loopDelayOf(h: IntervalHistogram): LoopDelay {
  if (h.count === 0) return { p50: 0, p99: 0, max: 0, mean: 0 };
  const ms = (ns: number): number => Math.max(0, Math.round(ns / 1e4 - LOOP_DELAY_RESOLUTION_MS * 100) / 100);
  return { p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), max: ms(h.max), mean: ms(h.mean) };
}

// process.memoryUsage.rss() reads /proc/self/stat, which needs a free file descriptor: when a flood has used them
// all (EMFILE is then counted as data), the sample keeps the last reading instead of throwing.
let lastRss = 0;
function currentRss(): number {
  try {
    lastRss = process.memoryUsage.rss();
  } catch {
    // keep lastRss
  }
  return lastRss;
}

/** The final record: counts from the last sample, plus what only the caller knows (reach, ramp, peak RSS). */
function summaryOf(last: Sample, f: Pick<Summary, 'reason' | 'asked' | 'reached' | 'rampMs' | 'durationMs' | 'rssPeak' | 'procs'>): Summary {
  return {
    type: 'summary',
    reason: f.reason,
    asked: f.asked,
    reached: f.reached,
    short: f.reached < f.asked,
    open: last.connected,
    established: last.established,
    closed: last.closed,
    chunks: last.chunks,
    events: last.events,
    errors: last.errors,
    errorsTotal: Object.values(last.errors).reduce((a, b) => a + b, 0),
    rampMs: f.rampMs,
    connectsPerSec: f.rampMs > 0 ? Math.round((f.reached * 1000) / f.rampMs) : 0,
    durationMs: f.durationMs,
    latency: last.latency,
    rssPeak: f.rssPeak,
    procs: f.procs,
  };
}

/** Serialized form of an interval histogram; an empty one before the first sample. */
function encodeIntervalOf(h: Histogram | null): string {
  if (h !== null) return encodeHistogram(h);
  const empty = createHistogram();
  const enc = encodeHistogram(empty);
  empty.destroy();
  return enc;
}

// ---- one process ----

async function startLocal(o: Resolved, targets: ReturnType<typeof parseTargets>): Promise<FloodHandle> {
  await resolveEndpoints(targets);
  const engine = new Engine({
    targets,
    intervalMs: o.intervalMs,
    inflight: o.inflight,
    maxConns: o.maxConns,
    connectTimeoutMs: o.connectTimeoutMs,
    reconnect: o.reconnect,
    reconnectBaseMs: o.reconnectBaseMs,
    reconnectMaxMs: o.reconnectMaxMs,
    insecure: o.insecure,
  });
  let rssPeak = currentRss(); // a first reading while file descriptors are surely free
  const eld = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
  eld.enable();
  let loopDelay: LoopDelay = { p50: 0, p99: 0, max: 0, mean: 0 };
  const startWall = Date.now();
  const t0 = performance.now();

  let finalSample: Sample | null = null; // after stop, the histogram is gone: samples are frozen at the stop
  const sample = (): Sample => {
    if (finalSample !== null) return finalSample;
    const rss = currentRss();
    if (rss > rssPeak) rssPeak = rss;
    return {
      type: 'sample',
      t: Math.round(performance.now() - t0) / 1000,
      ts: Date.now(),
      asked: o.maxConns,
      connected: engine.connected,
      closed: engine.closed,
      chunks: engine.chunks,
      events: engine.events,
      established: engine.established,
      errors: { ...engine.errors },
      inflight: engine.inflight,
      latency: summarize(engine.histogram),
      intervalLatency: summarize(engine.intervalHistogram),
      rss,
      eventLoopDelayMs: loopDelay,
      procs: 1,
    };
  };

  let resolveDone!: (s: Summary) => void;
  const done = new Promise<Summary>((r) => (resolveDone = r));
  let stopping: Promise<Summary> | null = null;
  let finalHistogram: string | null = null;
  let finalInterval: string | null = null;
  let lastInterval: Histogram | null = null; // the interval of the latest sample (engine-owned, swapped each tick)
  const tick = setInterval(() => {
    loopDelay = loopDelayOf(eld);
    eld.reset();
    const s = sample();
    lastInterval = engine.rotateInterval();
    o.onSample?.(s);
  }, o.sampleIntervalMs);
  const durationTimer = o.durationMs > 0 ? setTimeout(() => void stop('duration'), o.durationMs) : null;

  const stop = (reason: Summary['reason']): Promise<Summary> => {
    if (stopping !== null) return stopping;
    clearInterval(tick);
    if (durationTimer !== null) clearTimeout(durationTimer);
    const last = sample();
    // The rest of the interval since the latest sample (its latencies are in `last`), for a worker's final report.
    lastInterval = engine.rotateInterval();
    const durationMs = Date.now() - startWall;
    stopping = engine.stop().then(() => {
      finalSample = last;
      eld.disable();
      const rampMs = engine.peak > 0 ? Math.max(1, Math.round(engine.peakAtMs - (engine.firstConnectAt - engine.t0))) : 0;
      const summary = summaryOf(last, { reason, asked: o.maxConns, reached: engine.peak, rampMs, durationMs, rssPeak, procs: 1 });
      finalHistogram = encodeHistogram(engine.histogram);
      finalInterval = encodeHistogram(lastInterval!);
      lastInterval = null;
      engine.destroyHistograms();
      resolveDone(summary);
      return summary;
    });
    return stopping;
  };

  engine.start();
  return {
    asked: o.maxConns,
    procs: 1,
    pids: [process.pid],
    sample,
    encodedHistogram: () => finalHistogram ?? encodeHistogram(engine.histogram),
    encodedIntervalHistogram: () => finalInterval ?? encodeIntervalOf(lastInterval),
    stop: () => stop('stop'),
    done,
  };
}

// ---- several processes ----

/** Messages between the parent and a worker (worker.ts). */
export type ToWorker = { type: 'start'; options: WorkerOptions } | { type: 'stop' };
export type FromWorker =
  | { type: 'started' }
  | { type: 'sample'; sample: Sample; histogram: string; intervalHistogram: string }
  | { type: 'final'; summary: Summary; sample: Sample; histogram: string; intervalHistogram: string }
  | { type: 'error'; message: string };

/** The serializable part of FloodOptions a worker gets. */
export type WorkerOptions = Omit<Resolved, 'onSample' | 'procs' | 'durationMs' | 'workerExecArgv'>;

interface WorkerState {
  child: ChildProcess;
  last: Sample | null;
  histogram: string | null;
  final: Summary | null;
  exited: boolean;
  /** Most streams this worker reported open at once. */
  peak: number;
}

async function startForked(o: Resolved): Promise<FloodHandle> {
  const P = o.procs;
  const workerUrl = new URL('./worker.js', import.meta.url);
  const workers: WorkerState[] = [];
  const startWall = Date.now();
  const t0 = performance.now();
  let peak = 0;
  let rssPeak = 0;
  let resolveDone!: (s: Summary) => void;
  const done = new Promise<Summary>((r) => (resolveDone = r));
  let stopping: Promise<Summary> | null = null;
  let workerErrors: ErrorCounts = {};
  // The parent's current interval: every interval histogram the workers sent since the parent's last sample.
  // Workers sample 4× as often as the parent, so several of each worker's intervals make one of the parent's.
  const interval = createHistogram();
  let intervalDestroyed = false;
  let finalIntervalLatency: Sample['intervalLatency'] | null = null;
  let finalIntervalEncoded: string | null = null;

  const merged = (): Sample => {
    const s: Sample = {
      type: 'sample',
      t: Math.round(performance.now() - t0) / 1000,
      ts: Date.now(),
      asked: o.maxConns,
      connected: 0,
      closed: 0,
      chunks: 0,
      events: 0,
      established: 0,
      errors: { ...workerErrors },
      inflight: 0,
      latency: { count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 },
      intervalLatency: { count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 },
      rss: currentRss(),
      eventLoopDelayMs: { p50: 0, p99: 0, max: 0, mean: 0 },
      procs: P,
    };
    const h = createHistogram();
    for (const w of workers) {
      const x = w.last;
      if (x === null) continue;
      s.connected += x.connected;
      s.closed += x.closed;
      s.chunks += x.chunks;
      s.events += x.events;
      s.established += x.established;
      s.inflight += x.inflight;
      if (!w.exited) s.rss += x.rss;
      addErrors(s.errors, x.errors);
      const d = x.eventLoopDelayMs;
      const m = s.eventLoopDelayMs;
      m.p50 = Math.max(m.p50, d.p50);
      m.p99 = Math.max(m.p99, d.p99);
      m.max = Math.max(m.max, d.max);
      m.mean = Math.max(m.mean, d.mean);
      if (w.histogram !== null) mergeEncoded(h, w.histogram);
    }
    s.latency = summarize(h);
    h.destroy();
    if (!intervalDestroyed) s.intervalLatency = summarize(interval);
    else if (finalIntervalLatency !== null) s.intervalLatency = finalIntervalLatency;
    if (s.connected > peak) peak = s.connected;
    if (s.rss > rssPeak) rssPeak = s.rss;
    return s;
  };

  const mergedHistogram = (): string => {
    const h = createHistogram();
    for (const w of workers) if (w.histogram !== null) mergeEncoded(h, w.histogram);
    const enc = encodeHistogram(h);
    h.destroy();
    return enc;
  };

  // Slot i (0-based) of the whole run goes to worker i mod P, so every worker ramps through the file in order and
  // the global order of connects is kept; each worker paces at P × intervalMs.
  const started: Promise<void>[] = [];
  for (let k = 0; k < P; k++) {
    const urls: string[] = [];
    for (let i = k; i < o.maxConns; i += P) urls.push(o.urls[i % o.urls.length]!);
    const child = fork(workerUrl, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], execArgv: [...o.workerExecArgv] });
    const w: WorkerState = { child, last: null, histogram: null, final: null, exited: false, peak: 0 };
    workers.push(w);
    const opts: WorkerOptions = {
      urls,
      intervalMs: o.intervalMs * P,
      inflight: Math.max(1, Math.floor(o.inflight / P)),
      maxConns: urls.length,
      connectTimeoutMs: o.connectTimeoutMs,
      reconnect: o.reconnect,
      reconnectBaseMs: o.reconnectBaseMs,
      reconnectMaxMs: o.reconnectMaxMs,
      sampleIntervalMs: Math.max(10, Math.floor(o.sampleIntervalMs / 4)),
      insecure: o.insecure,
    };
    started.push(
      new Promise<void>((resolve, reject) => {
        child.on('message', (m: FromWorker) => {
          if (m.type === 'started') resolve();
          else if (m.type === 'sample') {
            w.last = m.sample;
            w.histogram = m.histogram;
            if (!intervalDestroyed) mergeEncoded(interval, m.intervalHistogram);
            if (m.sample.connected > w.peak) w.peak = m.sample.connected;
            let open = 0;
            for (const x of workers) open += x.last?.connected ?? 0;
            if (open > peak) peak = open;
          } else if (m.type === 'final') {
            w.last = m.sample;
            w.histogram = m.histogram;
            if (!intervalDestroyed) mergeEncoded(interval, m.intervalHistogram);
            w.final = m.summary;
          } else if (m.type === 'error') reject(new Error(`worker ${k}: ${m.message}`));
        });
        child.once('exit', (code, signal) => {
          w.exited = true;
          if (w.final === null && stopping === null) {
            // A worker died mid-run (crash, OOM kill): its streams are gone with it; count them as closed.
            workerErrors = { ...workerErrors, WORKER_EXIT: (workerErrors.WORKER_EXIT ?? 0) + 1 };
            if (w.last !== null) w.last = { ...w.last, closed: w.last.closed + w.last.connected, connected: 0, inflight: 0 };
          }
          reject(new Error(`worker ${k} exited (${signal ?? code}) before starting`));
        });
        child.send({ type: 'start', options: opts } satisfies ToWorker);
      }),
    );
  }
  try {
    await Promise.all(started);
  } catch (err) {
    for (const w of workers) if (!w.exited) w.child.kill('SIGKILL');
    intervalDestroyed = true;
    interval.destroy();
    throw err;
  }

  const tick = setInterval(() => {
    const s = merged();
    interval.reset();
    o.onSample?.(s);
  }, o.sampleIntervalMs);
  const durationTimer = o.durationMs > 0 ? setTimeout(() => void stop('duration'), o.durationMs) : null;

  const stop = (reason: Summary['reason']): Promise<Summary> => {
    if (stopping !== null) return stopping;
    clearInterval(tick);
    if (durationTimer !== null) clearTimeout(durationTimer);
    const durationMs = Date.now() - startWall;
    stopping = (async () => {
      const pending = workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.exited) return resolve();
            // A worker that does not finish in time is killed (by its PID, via the handle): its counts stay at the
            // last sample it sent.
            const kill = setTimeout(() => w.child.kill('SIGKILL'), 15_000);
            w.child.once('exit', () => {
              clearTimeout(kill);
              resolve();
            });
            try {
              w.child.send({ type: 'stop' } satisfies ToWorker);
            } catch {
              w.child.kill('SIGKILL');
            }
          }),
      );
      await Promise.all(pending);
      const last = merged();
      finalIntervalLatency = last.intervalLatency;
      finalIntervalEncoded = encodeHistogram(interval);
      intervalDestroyed = true;
      interval.destroy();
      const finals = workers.map((w) => w.final).filter((f): f is Summary => f !== null);
      // Workers' peaks happen at about the same time (they ramp in parallel); the sum of the open counts at the last
      // samples and at stop bounds it from below, the sum of the worker peaks from above.
      const sumPeaks = workers.reduce((a, w) => a + (w.final?.reached ?? w.peak), 0);
      const reached = Math.min(sumPeaks, Math.max(peak, last.connected));
      const rampMs = finals.reduce((a, f) => Math.max(a, f.rampMs), 0);
      const rssMax = Math.max(rssPeak, finals.reduce((a, f) => a + f.rssPeak, 0));
      const summary = summaryOf(last, { reason, asked: o.maxConns, reached, rampMs, durationMs, rssPeak: rssMax, procs: P });
      resolveDone(summary);
      return summary;
    })();
    return stopping;
  };

  return {
    asked: o.maxConns,
    procs: P,
    pids: workers.map((w) => w.child.pid!),
    sample: merged,
    encodedHistogram: mergedHistogram,
    encodedIntervalHistogram: () => finalIntervalEncoded ?? encodeHistogram(interval),
    stop: () => stop('stop'),
    done,
  };
}
