// msggen as a library: `startMsggen(options)` runs `procs` message generators at `rate` sends per second each
// against a comet server's control API and returns a handle; the CLI (cli.ts) and the c1m harness both use it.
import { Worker } from 'node:worker_threads';
import { createHistogram, mergeEncoded, summarize, type LatencySummary } from '../lib/histogram.js';
import { Engine, LIMITS, addCounters, emptyCounters, type Counters, type EngineConfig, type EngineFinal, type EngineSample, type StopReason } from './engine.js';
import { fullSchedule, threadSchedule } from './pace.js';
import { DISTRIBUTIONS, MAX_IDS, randomSeed, type Distribution } from './random.js';
import type { FromThread, ToThread } from './thread.js';
import { redactUrl } from '../server/router-redis.js';

export { LIMITS } from './engine.js';
export type { Counters, StopReason } from './engine.js';
export type { Distribution } from './random.js';

/** Options of a run; everything but what is marked required has a default. */
export interface MsggenOptions {
  /** Control API base URL. Default `http://127.0.0.1:8001`. */
  target?: string;
  /**
   * Publish straight to Redis at this `redis://host:port` URL (PUBLISH on the servers' per-id channels, see
   * server/router-redis.ts) instead of through a control API; `target` and `token` are then unused.
   */
  redis?: string;
  /**
   * Publish each message with `POST <publishTemplate>`, every `{id}` replaced by the id and the message as the raw
   * body (text/plain), to a third-party publisher such as nginx+nchan's `http://127.0.0.1:8080/pub?id={id}`. Any 2xx
   * is an ack; a JSON answer with a numeric `delivered` is counted, otherwise `deliveredUnreported` counts the ack.
   * Replaces `target` (the pool opens to the template's origin). Not with `batch` > 1 or `redis`. Default none.
   */
  publishTemplate?: string;
  /** Bearer token for the control API. Default none. */
  token?: string;
  /** Number of workers (the seed's parallel msggen processes). Default 10. */
  procs?: number;
  /** Sends per second of each worker (the seed's Interval = 1000/rate ms); may be fractional. Default 10. */
  rate?: number;
  /** Sends per worker; the run ends when every worker sent them. Default 1,000,000. */
  num?: number;
  /** Ids are drawn from 1..max. Default 10,000. */
  max?: number;
  /** Run length in ms (sends scheduled later are not made). Default: no limit (num ends the run). */
  durationMs?: number;
  /** Id distribution. Default `uniform`. */
  dist?: Distribution;
  /** Zipf exponent s in P(k) ∝ 1/k^s. Default 1. */
  zipfExponent?: number;
  /** Seed for the id streams (0..2^53-1); each worker's stream derives from (seed, worker index). Default random. */
  seed?: number;
  /** Message prefix: `<text> Num = <n> @t=<µs>`. Default `Fake message`. */
  text?: string;
  /** Messages per request; >1 uses `POST /send` with NDJSON. Default 1 (`POST /send/<id>`). */
  batch?: number;
  /** Worker threads to spread the workers over (each has its own pool). Default 1 (no extra thread). */
  threads?: number;
  /** Keep-alive connections to the control API (split across threads). Default LIMITS.connections. */
  connections?: number;
  /** Requests per connection in flight (HTTP pipelining). Default LIMITS.pipelining. */
  pipelining?: number;
  /** A send issued more than this many ms after its scheduled time is late. Default LIMITS.lateMs. */
  lateMs?: number;
  /** Time in-flight requests get to finish at the end. Default LIMITS.drainMs. */
  drainMs?: number;
  /** Per-request timeout. Default LIMITS.requestTimeoutMs. */
  requestTimeoutMs?: number;
  /** Open the keep-alive connections (one `GET /healthz` each) before the clock starts. Default true. */
  warmup?: boolean;
  /** Sample period in ms. Default 1000. */
  sampleMs?: number;
  /** Called with each sample (every sampleMs, plus a last partial one at the end). */
  onSample?: (sample: Sample) => void;
}

/** One sample: what happened during the last interval (one NDJSON record with `--json`). */
export interface Sample extends Counters {
  type: 'sample';
  /** Seconds since the start, at the end of this interval. */
  t: number;
  /** Length of this interval in seconds. */
  interval: number;
  /** sent / interval. */
  rate: number;
  /** Requests waiting for a response at the end of the interval. */
  inFlight: number;
  /** Sends due but held back by the in-flight bound at the end of the interval. */
  behind: number;
  /** Publish latency of the messages acked in this interval, µs from their scheduled time. */
  latency: LatencySummary;
}

/** The run's totals (the final NDJSON record with `--json`). */
export interface Summary extends Counters {
  type: 'summary';
  target: string;
  procs: number;
  /** Sends per second per worker. */
  rate: number;
  /** procs × rate. */
  requestedRate: number;
  num: number;
  max: number;
  dist: Distribution;
  seed: number;
  batch: number;
  threads: number;
  connections: number;
  startedAt: string;
  /** Seconds from the start until the last answer (includes draining). */
  elapsed: number;
  /** Seconds over which the sends went out (see achievedRate). */
  sendWindow: number;
  stoppedBy: StopReason;
  /** Sends scheduled before sending stopped. */
  scheduled: number;
  /** Scheduled sends never issued. */
  unsent: number;
  /** sent / sendWindow. */
  achievedRate: number;
  /** acked / sendWindow. */
  ackedRate: number;
  /** Publish latency per acked message, µs from its scheduled time to the response. */
  latency: LatencySummary;
  /** Per request, µs from issue to response (service time; no coordinated-omission correction). */
  requestLatency: LatencySummary;
  /** CPU seconds this process (all its threads) used during the run: the generator's own cost. */
  cpu: { user: number; system: number };
}

/** A running msggen. */
export interface MsggenHandle {
  /** Resolves once sending has started (worker threads are up). */
  readonly started: Promise<void>;
  /** Resolves with the summary when the run ends by itself (num, duration) or after stop(). */
  readonly done: Promise<Summary>;
  /** Stops sending, waits for in-flight requests (up to drainMs), and resolves with the summary. */
  stop(): Promise<Summary>;
}

/** A bad option; `message` names the option and the allowed range. */
export class MsggenOptionError extends Error {
  readonly code = 'C1M_BAD_OPTION';
  constructor(readonly option: string, message: string) {
    super(`${option}: ${message}`);
    this.name = 'MsggenOptionError';
  }
}

/** Upper bounds of the options, shared with the CLI's flag parsing. */
export const RANGES = {
  procs: [1, 100_000],
  rate: [0.001, 1_000_000],
  num: [1, Number.MAX_SAFE_INTEGER],
  max: [1, MAX_IDS],
  batch: [1, 10_000],
  threads: [1, 64],
  connections: [1, 1024],
  pipelining: [1, 100],
  zipfExponent: [0.01, 10],
  seed: [0, Number.MAX_SAFE_INTEGER],
} as const;

type Resolved = Required<Omit<MsggenOptions, 'token' | 'onSample' | 'durationMs' | 'seed' | 'redis' | 'publishTemplate'>> & {
  token: string | undefined;
  redis: string | undefined;
  /** --publish-template's path and query, `{id}` kept (target is then its origin). */
  publishPath: string | undefined;
  durationMs: number;
  seed: number;
  onSample: ((s: Sample) => void) | undefined;
};

function checkRange(option: keyof typeof RANGES, value: number, integer = true): number {
  const [lo, hi] = RANGES[option];
  if (typeof value !== 'number' || Number.isNaN(value) || value < lo || value > hi || (integer && !Number.isInteger(value))) {
    throw new MsggenOptionError(option, `${value} is out of range (allowed: ${integer ? 'whole number ' : ''}${lo} to ${hi})`);
  }
  return value;
}

/** Fills in defaults and validates every option (throws MsggenOptionError). */
export function resolveOptions(o: MsggenOptions): Resolved {
  const target = o.target ?? 'http://127.0.0.1:8001';
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    throw new MsggenOptionError('target', `'${target}' is not a URL (e.g. http://127.0.0.1:8001)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new MsggenOptionError('target', `'${target}' must be http:// or https://`);
  if (url.pathname !== '/' || url.search || url.hash) throw new MsggenOptionError('target', `'${target}' must be an origin without a path (e.g. http://127.0.0.1:8001)`);
  if (o.redis !== undefined) {
    let r: URL | null = null;
    try {
      r = new URL(o.redis);
    } catch {
      /* reported below */
    }
    if (r === null || (r.protocol !== 'redis:' && r.protocol !== 'rediss:') || r.hostname === '') {
      throw new MsggenOptionError('redis', `'${redactUrl(o.redis)}' is not a redis://host:port URL`);
    }
  }
  let origin = url.origin;
  let publishPath: string | undefined;
  if (o.publishTemplate !== undefined) {
    ({ origin, path: publishPath } = parsePublishTemplate(o.publishTemplate));
    if (o.redis !== undefined) throw new MsggenOptionError('publishTemplate', 'cannot be combined with --redis (choose one way to publish)');
    if ((o.batch ?? 1) > 1) throw new MsggenOptionError('publishTemplate', `cannot be combined with --batch ${o.batch} (a template publishes one message per request; use --batch 1)`);
  }
  const procs = checkRange('procs', o.procs ?? 10);
  const threads = checkRange('threads', o.threads ?? 1);
  if (threads > procs) throw new MsggenOptionError('threads', `${threads} is more than procs (${procs}); allowed: 1 to ${procs}`);
  const connections = checkRange('connections', o.connections ?? LIMITS.connections);
  if (connections < threads) throw new MsggenOptionError('connections', `${connections} is fewer than threads (${threads}); allowed: ${threads} to ${RANGES.connections[1]}`);
  const dist = o.dist ?? 'uniform';
  if (!DISTRIBUTIONS.includes(dist)) throw new MsggenOptionError('dist', `'${String(dist)}' is not one of ${DISTRIBUTIONS.join(', ')}`);
  const durationMs = o.durationMs ?? Infinity;
  if (!(durationMs > 0)) throw new MsggenOptionError('duration', `${durationMs} ms is out of range (must be > 0)`);
  const text = o.text ?? 'Fake message';
  if (typeof text !== 'string' || text.length > 16 * 1024 * 1024) throw new MsggenOptionError('text', 'must be a string of at most 16 MiB');
  const nonNegative = (name: string, v: number): number => {
    if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) throw new MsggenOptionError(name, `${v} is out of range (allowed: 0 or more ms)`);
    return v;
  };
  return {
    target: origin,
    token: o.token,
    redis: o.redis,
    publishPath,
    procs,
    rate: checkRange('rate', o.rate ?? 10, false),
    num: checkRange('num', o.num ?? 1_000_000),
    max: checkRange('max', o.max ?? 10_000),
    durationMs,
    dist,
    zipfExponent: checkRange('zipfExponent', o.zipfExponent ?? 1, false),
    seed: checkRange('seed', o.seed ?? randomSeed()),
    text,
    batch: checkRange('batch', o.batch ?? 1),
    threads,
    connections,
    pipelining: checkRange('pipelining', o.pipelining ?? LIMITS.pipelining),
    lateMs: nonNegative('lateMs', o.lateMs ?? LIMITS.lateMs),
    drainMs: nonNegative('drainMs', o.drainMs ?? LIMITS.drainMs),
    requestTimeoutMs: nonNegative('requestTimeoutMs', o.requestTimeoutMs ?? LIMITS.requestTimeoutMs),
    sampleMs: nonNegative('sampleMs', o.sampleMs ?? 1000) || 1000,
    warmup: o.warmup ?? true,
    onSample: o.onSample,
  };
}

/**
 * Splits a publish template into its origin and its path-and-query (with `{id}` kept as written; the URL parser
 * would percent-encode the braces in a path). Throws MsggenOptionError('publishTemplate') when it is not usable.
 */
export function parsePublishTemplate(template: string): { origin: string; path: string } {
  const bad = (why: string): never => {
    throw new MsggenOptionError('publishTemplate', `'${template}' ${why} (e.g. http://127.0.0.1:8080/pub?id={id})`);
  };
  if (typeof template !== 'string' || !template.includes('{id}')) bad('has no {id}');
  const m = /^(https?):\/\/([^/?#]+)([^#]*)$/i.exec(template);
  if (!m) bad('must be an http:// or https:// URL without a #fragment');
  let u: URL | null = null;
  try {
    u = new URL(template.replaceAll('{id}', '1'));
  } catch {
    /* reported below */
  }
  if (u === null || u.username !== '' || u.password !== '') bad('is not a URL');
  if (m![2]!.includes('{id}')) bad('must have {id} in its path or query, not its host');
  const rest = m![3]!;
  return { origin: u!.origin, path: rest === '' ? '/' : rest.startsWith('/') ? rest : '/' + rest };
}

/** One engine, local or in a worker thread, seen from the controller. */
interface EngineProxy {
  ready: Promise<void>;
  start(startEpochMs: number): void;
  sample(): Promise<EngineSample>;
  stop(): void;
  final: Promise<EngineFinal>;
}

function localEngine(cfg: EngineConfig): EngineProxy {
  const engine = new Engine(cfg);
  return {
    ready: engine.warmup(),
    start: (startEpochMs) => engine.start(startEpochMs),
    sample: () => Promise.resolve(engine.takeSample()),
    stop: () => void engine.stop(),
    final: engine.finished,
  };
}

function threadEngine(cfg: EngineConfig): EngineProxy {
  const worker = new Worker(new URL('./thread.js', import.meta.url), { workerData: cfg });
  let resolveReady!: () => void;
  let rejectReady!: (e: Error) => void;
  const ready = new Promise<void>((res, rej) => ((resolveReady = res), (rejectReady = rej)));
  let resolveFinal!: (f: EngineFinal) => void;
  let rejectFinal!: (e: Error) => void;
  const final = new Promise<EngineFinal>((res, rej) => ((resolveFinal = res), (rejectFinal = rej)));
  final.catch(() => {});
  ready.catch(() => {});
  const pending = new Map<number, (s: EngineSample) => void>();
  let seq = 0;
  let finished = false;
  // The thread's counts after its last answered sample request; handed out by the next sample() call.
  let last: EngineSample | undefined;
  worker.on('message', (m: FromThread) => {
    if (m.type === 'ready') resolveReady();
    else if (m.type === 'sample') {
      pending.get(m.seq)?.(m.sample);
      pending.delete(m.seq);
    } else if (m.type === 'final') {
      finished = true;
      last = m.last;
      for (const p of pending.values()) p(takeLast());
      pending.clear();
      resolveFinal(m.final);
    } else if (m.type === 'error') {
      const e = new Error(`msggen thread: ${m.message}`);
      rejectReady(e);
      rejectFinal(e);
    }
  });
  const takeLast = (): EngineSample => {
    const s = last ?? emptySample();
    last = undefined;
    return s;
  };
  const fail = (e: Error): void => {
    rejectReady(e);
    rejectFinal(e);
    for (const p of pending.values()) p(emptySample());
    pending.clear();
  };
  worker.on('error', fail);
  worker.on('exit', (code) => {
    if (!finished) fail(new Error(`msggen thread exited with code ${code} before finishing`));
  });
  const post = (m: ToThread): void => worker.postMessage(m);
  return {
    ready,
    start: (startEpochMs) => post({ type: 'start', startEpochMs }),
    sample: () =>
      finished
        ? Promise.resolve(takeLast())
        : new Promise((resolve) => {
            const n = ++seq;
            pending.set(n, resolve);
            post({ type: 'sample', seq: n });
          }),
    stop: () => {
      if (!finished) post({ type: 'stop' });
    },
    final,
  };
}

function emptySample(): EngineSample {
  return { ...emptyCounters(), inFlight: 0, behind: 0, latency: '' };
}

/**
 * Starts a run. Options are validated at once (MsggenOptionError); sending starts as soon as worker threads (if any)
 * are up. The handle's `done` resolves with the summary; `stop()` ends the run early and resolves with it too.
 */
export function startMsggen(options: MsggenOptions = {}): MsggenHandle {
  const o = resolveOptions(options);
  const base = {
    target: o.target,
    token: o.token,
    redis: o.redis,
    publishPath: o.publishPath,
    max: o.max,
    dist: o.dist,
    zipfExponent: o.zipfExponent,
    seed: o.seed,
    text: o.text,
    batch: o.batch,
    pipelining: o.pipelining,
    lateMs: o.lateMs,
    drainMs: o.drainMs,
    requestTimeoutMs: o.requestTimeoutMs,
    durationMs: o.durationMs,
    warmup: o.warmup,
  };
  const engines: EngineProxy[] = [];
  if (o.threads === 1) {
    engines.push(localEngine({ ...base, connections: o.connections, schedule: fullSchedule(o.procs, o.rate, o.num) }));
  } else {
    for (let t = 0; t < o.threads; t++) {
      // Split connections as evenly as possible; every thread has at least one (checked: connections >= threads).
      const connections = Math.floor(o.connections / o.threads) + (t < o.connections % o.threads ? 1 : 0);
      engines.push(threadEngine({ ...base, connections, schedule: threadSchedule(o.procs, o.rate, o.num, t, o.threads) }));
    }
  }

  let startEpochMs = 0;
  let startPerf = 0;
  let startCpu: NodeJS.CpuUsage | undefined;
  let lastSampleAt = 0;
  let sampleTimer: NodeJS.Timeout | undefined;
  let sampling: Promise<void> = Promise.resolve();
  let stopRequested = false;

  const elapsedSec = (): number => (performance.now() - startPerf) / 1000;

  const takeSample = async (): Promise<void> => {
    const parts = await Promise.all(engines.map((e) => e.sample()));
    const t = elapsedSec();
    const c = emptyCounters();
    const h = createHistogram();
    let inFlight = 0;
    let behind = 0;
    for (const p of parts) {
      addCounters(c, p);
      inFlight += p.inFlight;
      behind += p.behind;
      if (p.latency) mergeEncoded(h, p.latency);
    }
    const interval = Math.max(1e-6, t - lastSampleAt);
    lastSampleAt = t;
    const sample: Sample = { type: 'sample', t: round3(t), interval: round3(interval), rate: round3(c.sent / interval), ...c, inFlight, behind, latency: summarize(h) };
    h.destroy();
    o.onSample?.(sample);
  };

  const started = (async () => {
    await Promise.all(engines.map((e) => e.ready));
    startEpochMs = performance.timeOrigin + performance.now();
    startPerf = performance.now();
    startCpu = process.cpuUsage();
    for (const e of engines) e.start(startEpochMs);
    if (stopRequested) for (const e of engines) e.stop();
    sampleTimer = setInterval(() => {
      sampling = sampling.then(takeSample);
    }, o.sampleMs);
  })();

  const done = (async (): Promise<Summary> => {
    try {
      await started;
    } catch (err) {
      for (const e of engines) e.stop();
      throw err;
    }
    let finals: EngineFinal[];
    try {
      finals = await Promise.all(engines.map((e) => e.final));
    } catch (err) {
      // A worker thread died: stop the others so nothing keeps sending behind a failed run.
      clearInterval(sampleTimer);
      for (const e of engines) e.stop();
      throw err;
    }
    clearInterval(sampleTimer);
    await sampling;
    // The last partial interval, so the samples add up to the summary.
    await takeSample();
    return buildSummary(o, finals, startEpochMs, elapsedSec(), process.cpuUsage(startCpu));
  })();
  done.catch(() => {});

  return {
    started,
    done,
    stop() {
      stopRequested = true;
      for (const e of engines) e.stop();
      return done;
    },
  };
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function buildSummary(o: Resolved, finals: EngineFinal[], startEpochMs: number, elapsed: number, cpu: NodeJS.CpuUsage): Summary {
  const c = emptyCounters();
  const lat = createHistogram();
  const req = createHistogram();
  let scheduled = 0;
  let unsent = 0;
  let sendWindowMs = 0;
  // The run stopped by the first reason any engine saw: stop() beats duration beats num.
  const order: StopReason[] = ['stop', 'duration', 'num'];
  let stoppedBy: StopReason = 'num';
  for (const f of finals) {
    addCounters(c, f);
    mergeEncoded(lat, f.latency);
    mergeEncoded(req, f.requestLatency);
    scheduled += f.scheduled;
    unsent += f.unsent;
    sendWindowMs = Math.max(sendWindowMs, f.sendWindowMs);
    if (order.indexOf(f.stoppedBy) < order.indexOf(stoppedBy)) stoppedBy = f.stoppedBy;
  }
  const sendWindow = sendWindowMs / 1000;
  const summary: Summary = {
    type: 'summary',
    target: o.redis !== undefined ? redactUrl(o.redis) : o.publishPath !== undefined ? o.target + o.publishPath : o.target,
    procs: o.procs,
    rate: o.rate,
    requestedRate: o.procs * o.rate,
    num: o.num,
    max: o.max,
    dist: o.dist,
    seed: o.seed,
    batch: o.batch,
    threads: o.threads,
    connections: o.connections,
    startedAt: new Date(startEpochMs).toISOString(),
    elapsed: round3(elapsed),
    sendWindow: round3(sendWindow),
    stoppedBy,
    scheduled,
    unsent,
    ...c,
    achievedRate: sendWindow > 0 ? round3(c.sent / sendWindow) : 0,
    ackedRate: sendWindow > 0 ? round3(c.acked / sendWindow) : 0,
    latency: summarize(lat),
    requestLatency: summarize(req),
    cpu: { user: round3(cpu.user / 1e6), system: round3(cpu.system / 1e6) },
  };
  lat.destroy();
  req.destroy();
  return summary;
}
