// One scheduler and its HTTP pool: issues the sends of the workers it drives, at their scheduled times, to the
// server's control API, and counts what happened. Runs in the main thread or inside a worker thread (thread.ts).
//
// One timer drives all of this engine's workers (the schedule interleaves them, see pace.ts). When the timer fires,
// every send that is due goes out at once, up to the in-flight bound; with --batch K, due sends are packed K to a
// request. When the bound is reached, the remaining due sends wait (they are not dropped, and the schedule does not
// move): a completing request wakes the pump, which then finds them overdue, issues them and counts them late.
// Their latency is measured from their scheduled time, so the stall is visible.
import { Pool } from 'undici';
import { Redis } from 'ioredis';
import { channelOf, quitRedis } from '../server/router-redis.js';
import type { Dispatcher } from 'undici';
import { formatMessage } from '../lib/marker.js';
import { createHistogram, encodeHistogram, recordLatency, type Histogram } from '../lib/histogram.js';
import { dueCount, isLate, scheduledMs, sendOf, totalSends, type Schedule } from './pace.js';
import { Rng, idSampler, type Distribution, type IdSampler } from './random.js';

/** Every limit of the engine, with its default, in one place. */
export const LIMITS = {
  /** A send issued more than this many ms after its scheduled time counts as late (timer jitter is ~1 ms). */
  lateMs: 10,
  /** On stop, in-flight requests get this long to finish before the pool is destroyed (they then count as errors). */
  drainMs: 5000,
  /** A request with no response headers (or no body progress) for this long fails with UND_ERR_*_TIMEOUT. */
  requestTimeoutMs: 30_000,
  /** Keep-alive connections to the control API. */
  connections: 8,
  /** Requests per connection before waiting for a response (1 = no HTTP pipelining). */
  pipelining: 1,
} as const;

/** What an engine needs; plain data so it can cross into a worker thread. */
export interface EngineConfig {
  target: string;
  token: string | undefined;
  /** When set, messages are PUBLISHed straight to this Redis (one connection per engine) instead of the control API. */
  redis: string | undefined;
  /**
   * When set, each single message is POSTed (raw body) to this path-and-query on `target`, with every `{id}`
   * replaced by the id (e.g. `/pub?id={id}` for nginx+nchan); any 2xx is an ack. Never with batch > 1 or redis.
   */
  publishPath: string | undefined;
  schedule: Schedule;
  max: number;
  dist: Distribution;
  zipfExponent: number;
  seed: number;
  text: string;
  batch: number;
  connections: number;
  pipelining: number;
  lateMs: number;
  drainMs: number;
  requestTimeoutMs: number;
  /** Sends scheduled at or after this many ms are not part of the run (Infinity: no --duration). */
  durationMs: number;
  /** Open the connections before the clock starts (see Engine.warmup). */
  warmup: boolean;
}

/** Counts kept per interval and in total. Messages: sent/acked/failed/late/delivered; requests: requests/errors. */
export interface Counters {
  /** Messages issued (a batch of K counts K). */
  sent: number;
  /** Messages the server accepted (200, or the `accepted` count of a batch). */
  acked: number;
  /** Messages in requests that failed (network error or non-200), minus any lines the server says it applied. */
  failed: number;
  /** Messages issued more than lateMs after their scheduled time. */
  late: number;
  /** Sum of the server's `delivered` answers (connections reached; a batch reports its total). */
  delivered: number;
  /** Acked messages whose answer carried no `delivered` count (a third-party publisher): `delivered` leaves them out. */
  deliveredUnreported: number;
  /** HTTP requests completed or failed. */
  requests: number;
  /** Failed requests by code: `ECONNREFUSED`, `UND_ERR_SOCKET`, `HTTP_401`, `HTTP_413`, ... */
  errors: Record<string, number>;
}

/** One interval's counts plus instant state, as an engine reports it. */
export interface EngineSample extends Counters {
  /** Requests waiting for a response now. */
  inFlight: number;
  /** Sends that are due but not issued yet (the in-flight bound is holding them back). */
  behind: number;
  /** Serialized histogram of this interval's publish latencies (µs from scheduled time to response). */
  latency: string;
}

/** Why an engine stopped issuing sends. */
export type StopReason = 'num' | 'duration' | 'stop';

/** An engine's totals at the end. */
export interface EngineFinal extends Counters {
  stoppedBy: StopReason;
  /** Sends scheduled before sending stopped. */
  scheduled: number;
  /** Scheduled sends never issued (still held back when the run stopped). */
  unsent: number;
  /** Length of the sending window in ms (see index.ts: achieved rate = sent / window). */
  sendWindowMs: number;
  /** Serialized histograms over the whole run. */
  latency: string;
  requestLatency: string;
}

export function emptyCounters(): Counters {
  return { sent: 0, acked: 0, failed: 0, late: 0, delivered: 0, deliveredUnreported: 0, requests: 0, errors: {} };
}

/** Adds b into a. */
export function addCounters(a: Counters, b: Counters): void {
  a.sent += b.sent;
  a.acked += b.acked;
  a.failed += b.failed;
  a.late += b.late;
  a.delivered += b.delivered;
  a.deliveredUnreported += b.deliveredUnreported;
  a.requests += b.requests;
  for (const [code, n] of Object.entries(b.errors)) a.errors[code] = (a.errors[code] ?? 0) + n;
}

/** A stable code for a failed request: the error's `code` (undici's UND_ERR_*, or errno names), else its name. */
export function errorCode(err: unknown): string {
  if (err && typeof err === 'object') {
    const e = err as { code?: unknown; name?: unknown; errors?: unknown };
    if (typeof e.code === 'string' && e.code) return e.code;
    // A connect to a name with several addresses fails with an AggregateError of per-address errors.
    if (Array.isArray(e.errors) && e.errors.length > 0) return errorCode(e.errors[0]);
    if (typeof e.name === 'string' && e.name) return e.name;
  }
  return 'UNKNOWN';
}

const JSON_HEADERS = 'application/x-ndjson';

/** The engine: call start(), then wait on `finished`, or call stop(). */
export class Engine {
  /** Resolves with the totals when the run is over (all sends answered, or duration, or stop()). */
  readonly finished: Promise<EngineFinal>;

  private readonly cfg: EngineConfig;
  private readonly s: Schedule;
  private readonly pool: Pool;
  /** With --redis: the publishing connection (no offline queue: a publish while Redis is down fails and is counted). */
  private readonly redis: Redis | null;
  private readonly rngs: Rng[];
  private readonly ids: IdSampler;
  private readonly total: number;
  private readonly maxInFlight: number;
  private readonly headersSingle: Record<string, string>;
  private readonly headersBatch: Record<string, string>;
  private readonly auth: Record<string, string>;
  /** --publish-template's path and query split at each `{id}` (null: the control API's /send/<id>). */
  private readonly publishParts: string[] | null;
  /** Cancels unanswered warm-up probes when the run ends, so they never hold up the pool's close. */
  private readonly warmupAbort = new AbortController();
  private startMicros = 0;
  private epochOffset = 0;
  /**
   * undici never pipelines a POST unless it is marked idempotent and non-blocking. With --pipelining > 1 we do
   * mark it so; the price is that undici may re-send a pipelined request after a connection failure, so a
   * message can then arrive twice. With the default (1) nothing is ever re-sent.
   */
  private readonly pipelined: boolean;

  private next = 0;
  private inFlight = 0;
  private timer: NodeJS.Timeout | undefined;
  private durationTimer: NodeJS.Timeout | undefined;
  private blocked = false;
  private pumpQueued = false;
  private sending = false;
  private stopReason: StopReason | undefined;
  private stopMs = 0;
  private lastIssueMs = 0;
  private idleWaiters: Array<() => void> = [];
  private resolveFinished!: (f: EngineFinal) => void;
  private finishing = false;

  private interval = emptyCounters();
  private readonly totals = emptyCounters();
  private intervalHist: Histogram = createHistogram();
  private readonly totalHist: Histogram = createHistogram();
  private readonly requestHist: Histogram = createHistogram();

  constructor(cfg: EngineConfig) {
    this.cfg = cfg;
    this.s = cfg.schedule;
    // Sends scheduled before the duration belong to the run; the -1e-6 leaves out a send exactly at the end.
    this.total = Math.min(totalSends(this.s), Number.isFinite(cfg.durationMs) ? dueCount(this.s, cfg.durationMs - 1e-6) : Infinity);
    this.maxInFlight = cfg.connections * cfg.pipelining;
    this.pipelined = cfg.pipelining > 1;
    this.rngs = this.s.slots.map((w) => new Rng(cfg.seed, w));
    this.ids = idSampler(cfg.dist, cfg.max, cfg.zipfExponent);
    this.publishParts = cfg.publishPath === undefined ? null : cfg.publishPath.split('{id}');
    this.auth = cfg.token === undefined ? {} : { authorization: `Bearer ${cfg.token}` };
    this.headersSingle = { ...this.auth, 'content-type': 'text/plain; charset=utf-8' };
    this.headersBatch = { ...this.auth, 'content-type': JSON_HEADERS };
    this.pool = new Pool(cfg.target, {
      connections: cfg.connections,
      pipelining: cfg.pipelining,
      headersTimeout: cfg.requestTimeoutMs,
      bodyTimeout: cfg.requestTimeoutMs,
      connectTimeout: Math.min(cfg.requestTimeoutMs, 10_000),
    });
    // Failed connects are counted per request; the pool's own 'connectionError' event must not be unhandled.
    this.pool.on('connectionError', () => {});
    this.redis =
      cfg.redis === undefined
        ? null
        : new Redis(cfg.redis, {
            lazyConnect: true,
            enableOfflineQueue: false,
            maxRetriesPerRequest: 0,
            autoResendUnfulfilledCommands: false,
            retryStrategy: (times: number) => Math.min(times * 50, 500),
            disconnectTimeout: 200, // ioredis's 2 s default keeps the process alive after a failed connect
          });
    this.redis?.on('error', () => {}); // failed publishes are counted per request; reconnect errors are not data
    this.finished = new Promise((resolve) => (this.resolveFinished = resolve));
  }

  /**
   * Opens the pool's keep-alive connections before the clock starts, so the first sends do not pay for TCP
   * connects and undici's one-time HTTP parser compilation (~20 ms: enough to make the first sends late).
   * Sends one `GET /healthz` per connection (the reference server answers 200; any answer, even a 404 from another
   * server, opens the connection). Answers and errors are ignored and not counted; bounded by `timeoutMs`.
   */
  async warmup(timeoutMs = 2000): Promise<void> {
    if (this.redis !== null) {
      // The Redis connection is needed whether or not --no-warmup: connect it now, bounded; a failure shows up
      // as failed publishes (REDIS_UNAVAILABLE) once the clock runs, while ioredis keeps reconnecting.
      let timer: NodeJS.Timeout | undefined;
      const r = this.redis;
      await Promise.race([
        r.connect().catch(() => {}),
        new Promise<void>((resolve) => r.once('error', () => resolve())), // refused: no point waiting the whole timeout
        new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs))),
      ]);
      clearTimeout(timer);
      return;
    }
    if (!this.cfg.warmup) return;
    const probes = Array.from({ length: this.cfg.connections }, () =>
      this.pool
        .request({ path: '/healthz', method: 'GET', headers: this.auth, signal: this.warmupAbort.signal })
        .then((r) => r.body.dump())
        .catch(() => {}),
    );
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(probes), new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
    // A probe still unanswered (a server that accepts but never answers) would occupy its connection: cancel it.
    this.warmupAbort.abort();
  }

  /**
   * Starts sending on a schedule that began at `startEpochMs` (wall clock, ms since the Unix epoch; every thread
   * gets the same one so their schedules interleave). Sends already due are issued at once, and counted late.
   */
  start(startEpochMs: number): void {
    if (this.sending || this.stopReason) return;
    this.startMicros = startEpochMs * 1000;
    this.epochOffset = performance.timeOrigin - startEpochMs;
    this.sending = true;
    if (this.total === 0) {
      void this.finish(Number.isFinite(this.cfg.durationMs) ? 'duration' : 'num');
      return;
    }
    if (Number.isFinite(this.cfg.durationMs)) this.armDuration();
    this.pump();
  }

  /** Ends the run at durationMs; node's timers may fire up to a millisecond early, so re-arm until it is really over. */
  private armDuration(): void {
    const left = this.cfg.durationMs - this.elapsedMs();
    if (left <= 0) {
      void this.finish('duration');
      return;
    }
    this.durationTimer = setTimeout(() => this.armDuration(), Math.ceil(left));
  }

  /** Stops issuing sends, lets in-flight requests finish (up to drainMs), and returns the totals. */
  stop(): Promise<EngineFinal> {
    void this.finish('stop');
    return this.finished;
  }

  /** Takes this interval's counts and latency histogram, and starts a new interval. */
  takeSample(): EngineSample {
    const c = this.interval;
    this.interval = emptyCounters();
    const h = this.intervalHist;
    this.intervalHist = createHistogram();
    const latency = encodeHistogram(h);
    h.destroy();
    const now = this.elapsedMs();
    const behind = this.sending ? Math.max(0, Math.min(this.total, dueCount(this.s, now)) - this.next) : 0;
    return { ...c, inFlight: this.inFlight, behind, latency };
  }

  /** ms since the schedule's start, from the monotonic clock. */
  private elapsedMs(): number {
    return performance.now() + this.epochOffset;
  }

  private readonly pump = (): void => {
    this.timer = undefined;
    this.pumpQueued = false;
    if (!this.sending) return;
    const now = this.elapsedMs();
    if (now >= this.cfg.durationMs) {
      void this.finish('duration');
      return;
    }
    const due = this.issueDue(now);
    if (this.next >= this.total) {
      // Every send is out. If --num ended the run, finish now; if the duration capped it, the run lasts until
      // the duration timer (a caller that asked for 10 minutes gets 10 minutes).
      if (this.total === totalSends(this.s)) void this.finish('num');
      return;
    }
    if (this.next < due) {
      this.blocked = true; // a completion will pump again
      return;
    }
    const wait = scheduledMs(this.s, this.next) - now;
    this.timer = setTimeout(this.pump, Math.max(1, Math.ceil(wait)));
  };

  /** Issues every send due at `now`, as far as the in-flight bound allows; returns the due count. */
  private issueDue(now: number): number {
    const due = Math.min(this.total, dueCount(this.s, now));
    while (this.next < due && this.inFlight < this.maxInFlight) {
      const count = Math.min(this.cfg.batch, due - this.next);
      this.issue(this.next, count, now);
      this.next += count;
    }
    return due;
  }

  /** Issues sends first..first+count-1 as one request. */
  private issue(first: number, count: number, now: number): void {
    let late = 0;
    let body: string;
    let path: string;
    let headers: Record<string, string>;
    if (count === 1 && this.cfg.batch === 1) {
      const { id, msg } = this.message(first);
      path = this.publishParts === null ? `/send/${id}` : this.publishParts.join(String(id));
      body = msg;
      headers = this.headersSingle;
      if (isLate(scheduledMs(this.s, first), now, this.cfg.lateMs)) late++;
    } else {
      const lines: string[] = new Array(count);
      for (let j = 0; j < count; j++) {
        const { id, msg } = this.message(first + j);
        lines[j] = JSON.stringify({ id, msg });
        if (isLate(scheduledMs(this.s, first + j), now, this.cfg.lateMs)) late++;
      }
      path = '/send';
      body = lines.join('\n') + '\n';
      headers = this.headersBatch;
    }
    this.interval.sent += count;
    this.totals.sent += count;
    this.interval.late += late;
    this.totals.late += late;
    this.inFlight++;
    this.lastIssueMs = now;
    if (this.redis !== null) {
      this.publishToRedis(this.redis, first, count, now);
      return;
    }
    this.pool.dispatch({ path, method: 'POST', body, headers, idempotent: this.pipelined, blocking: !this.pipelined }, new SendHandler(this, first, count, now));
  }

  /**
   * Sends first..first+count-1 as one pipeline of PUBLISHes on the servers' channels. The answer is reported like
   * a control API batch: `accepted` = publishes Redis confirmed, `delivered` = the sum of PUBLISH replies, i.e.
   * server processes subscribed to the id (not connections: each such server holds at least one).
   */
  private publishToRedis(redis: Redis, first: number, count: number, now: number): void {
    if (redis.status !== 'ready') {
      const err = Object.assign(new Error('Redis is not connected'), { code: 'REDIS_UNAVAILABLE' });
      // Reported on the next tick, like a network failure, so the issuing loop never re-enters complete().
      setImmediate(() => this.complete(first, count, now, 0, '', err));
      return;
    }
    const pipe = redis.pipeline();
    for (let j = 0; j < count; j++) {
      const { id, msg } = this.message(first + j);
      pipe.publish(channelOf(id), msg);
    }
    pipe.exec().then(
      (results) => {
        let accepted = 0;
        let delivered = 0;
        for (const [err, reply] of results ?? []) {
          if (err) continue;
          accepted++;
          delivered += Number(reply);
        }
        if (accepted === 0) this.complete(first, count, now, 0, '', Object.assign(new Error('publish failed'), { code: 'REDIS_PUBLISH_FAILED' }));
        else this.complete(first, count, now, 200, JSON.stringify({ accepted, delivered }), undefined);
      },
      (err: unknown) => this.complete(first, count, now, 0, '', redisError(err)),
    );
  }

  /** Ends the Redis connection: QUIT when connected, else stop its reconnect loop. */
  private async closeRedis(): Promise<void> {
    if (this.redis !== null) await quitRedis(this.redis);
  }

  /** The id and text of send i (draws from its worker's own stream, so the order of draws per worker is fixed). */
  private message(i: number): { id: number; msg: string } {
    const { k } = sendOf(this.s, i);
    const rng = this.rngs[i % this.s.slots.length]!;
    const id = this.ids.next(rng);
    const micros = this.startMicros + scheduledMs(this.s, i) * 1000;
    return { id, msg: formatMessage(this.cfg.text, k + 1, micros) };
  }

  /** Called by SendHandler when a request is over, successfully or not. */
  complete(first: number, count: number, issuedMs: number, status: number, body: string, err: unknown): void {
    this.inFlight--;
    const now = this.elapsedMs();
    const iv = this.interval;
    const tot = this.totals;
    iv.requests++;
    tot.requests++;
    // The control API answers 200; a third-party publisher (--publish-template) may answer any 2xx (nchan: 201/202).
    const ok = status === 200 || (this.publishParts !== null && status >= 200 && status < 300);
    if (err === undefined && ok) {
      const answer = parseAnswer(body);
      const accepted = answer.accepted ?? count;
      iv.acked += accepted;
      tot.acked += accepted;
      if (answer.delivered === undefined) {
        // Not reported: counted as such, never guessed.
        iv.deliveredUnreported += accepted;
        tot.deliveredUnreported += accepted;
      } else {
        iv.delivered += answer.delivered;
        tot.delivered += answer.delivered;
      }
      if (accepted < count) {
        this.countError('PARTIAL', count - accepted);
      }
      // Publish latency of each message: from its own scheduled time to this response.
      for (let j = 0; j < accepted; j++) {
        const us = (now - scheduledMs(this.s, first + j)) * 1000;
        recordLatency(this.intervalHist, us);
        recordLatency(this.totalHist, us);
      }
      recordLatency(this.requestHist, (now - issuedMs) * 1000);
    } else {
      const code = err === undefined ? `HTTP_${status}` : errorCode(err);
      // A rejected batch may still have applied some lines; the server says how many in `accepted` (and `delivered`).
      const answer = err === undefined ? parseAnswer(body) : {};
      const accepted = Math.min(count, answer.accepted ?? 0);
      const delivered = accepted > 0 ? (answer.delivered ?? 0) : 0;
      iv.acked += accepted;
      tot.acked += accepted;
      iv.delivered += delivered;
      tot.delivered += delivered;
      iv.errors[code] = (iv.errors[code] ?? 0) + 1;
      tot.errors[code] = (tot.errors[code] ?? 0) + 1;
      iv.failed += count - accepted;
      tot.failed += count - accepted;
    }
    if (this.inFlight === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
    if (this.blocked && !this.pumpQueued && this.sending) {
      this.blocked = false;
      this.pumpQueued = true;
      // setImmediate rather than a direct call: lets a burst of completions land first, so one pump fills them all.
      setImmediate(this.pump);
    }
  }

  private countError(code: string, messages: number): void {
    this.interval.errors[code] = (this.interval.errors[code] ?? 0) + 1;
    this.totals.errors[code] = (this.totals.errors[code] ?? 0) + 1;
    this.interval.failed += messages;
    this.totals.failed += messages;
  }

  private idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async finish(reason: StopReason): Promise<void> {
    if (this.finishing) return;
    this.finishing = true;
    this.stopReason = reason;
    const now = this.startMicros === 0 ? 0 : this.elapsedMs(); // stopped before it started: nothing elapsed
    this.stopMs = now;
    // The duration timer and the pump's timer race at the end: sends scheduled before the end still go out.
    if (reason === 'duration' && this.sending) this.issueDue(now);
    const wasSending = this.sending;
    this.sending = false;
    if (this.timer) clearTimeout(this.timer);
    if (this.durationTimer) clearTimeout(this.durationTimer);
    // Sends already due when sending stopped but never issued.
    const scheduled = wasSending ? Math.min(this.total, Math.max(this.next, dueCount(this.s, Math.min(now, this.cfg.durationMs - 1e-6)))) : this.next;
    this.warmupAbort.abort();
    // Wait for in-flight requests and a clean close, up to drainMs in all; whatever is still open then fails
    // with UND_ERR_DESTROYED and is counted like any other error.
    let drainTimer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([
      this.idle().then(() => Promise.all([this.pool.close(), this.closeRedis()])).then(() => true),
      new Promise<boolean>((resolve) => (drainTimer = setTimeout(() => resolve(false), this.cfg.drainMs))),
    ]);
    clearTimeout(drainTimer);
    if (!closed) {
      this.redis?.disconnect(false); // rejects what is in flight: counted as errors below
      await this.pool.destroy();
      await this.idle();
    }
    const totalSec = 1000 / (this.s.procs * this.s.rate);
    // The window over which `sent` went out: to the stop for duration and stop(); for a run that sent everything,
    // up to the last issue plus one interval of the whole schedule, so an on-time run achieves exactly the rate.
    const sendWindowMs =
      reason === 'num' ? Math.max(this.lastIssueMs, scheduledMs(this.s, this.total - 1)) + totalSec : reason === 'duration' ? this.cfg.durationMs : this.stopMs;
    const t = this.totals;
    this.resolveFinished({
      ...t,
      errors: { ...t.errors },
      stoppedBy: reason,
      scheduled,
      unsent: scheduled - this.next,
      sendWindowMs,
      latency: encodeHistogram(this.totalHist),
      requestLatency: encodeHistogram(this.requestHist),
    });
  }
}

/** A Redis failure with a stable code: ioredis's own code or name, else REDIS_ERROR. */
function redisError(err: unknown): Error & { code: string } {
  const e = err instanceof Error ? err : new Error(String(err));
  const code = (e as { code?: unknown }).code;
  if (typeof code === 'string' && code) return e as Error & { code: string };
  return Object.assign(e, { code: /Connection is closed|Stream isn't writeable/.test(e.message) ? 'REDIS_UNAVAILABLE' : `REDIS_${e.name === 'Error' ? 'ERROR' : e.name}` });
}

/** Reads `{"delivered": n}` or `{"accepted": n, "delivered": m}`; missing or unreadable fields are undefined. */
export function parseAnswer(body: string): { accepted?: number; delivered?: number } {
  if (body.length === 0 || body.length > 65536) return {};
  try {
    const v = JSON.parse(body) as unknown;
    if (!v || typeof v !== 'object') return {};
    const o = v as Record<string, unknown>;
    const out: { accepted?: number; delivered?: number } = {};
    if (typeof o.accepted === 'number' && Number.isFinite(o.accepted) && o.accepted >= 0) out.accepted = o.accepted;
    if (typeof o.delivered === 'number' && Number.isFinite(o.delivered) && o.delivered >= 0) out.delivered = o.delivered;
    return out;
  } catch {
    return {};
  }
}

/** Collects one response (status and a small body) and reports it to the engine exactly once. */
class SendHandler implements Dispatcher.DispatchHandler {
  private status = 0;
  private body = '';
  private done = false;

  constructor(
    private readonly engine: Engine,
    private readonly first: number,
    private readonly count: number,
    private readonly issuedMs: number,
  ) {}

  onRequestStart(): void {}

  onResponseStart(_c: Dispatcher.DispatchController, statusCode: number): void {
    this.status = statusCode;
  }

  onResponseData(_c: Dispatcher.DispatchController, chunk: Buffer): void {
    // Answers are a few bytes of JSON; anything longer is not read in full.
    if (this.body.length < 65536) this.body += chunk.toString('utf8');
  }

  onResponseEnd(): void {
    if (this.done) return;
    this.done = true;
    this.engine.complete(this.first, this.count, this.issuedMs, this.status, this.body, undefined);
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    if (this.done) return;
    this.done = true;
    this.engine.complete(this.first, this.count, this.issuedMs, this.status, this.body, err);
  }
}
