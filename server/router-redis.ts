// A Router whose `send` crosses processes and hosts on Redis pub/sub: each server process subscribes to the
// channel of an id (`c1m:id:<id>`) while it holds at least one local stream for that id, and `send` publishes.
//
// Delivery goes through Redis even for the publishing process's own streams: the message comes back through this
// process's subscription, so every process sees one id's messages in the one order Redis gives them. Subscribing
// is asynchronous, so a `send` for an id whose SUBSCRIBE is still in flight here waits for it (a stream that logged
// in here before the send gets the message). A SUBSCRIBE issued by another process at the same instant races the
// PUBLISH, as it would between hosts: "logged in" means "Redis has processed the subscription".
//
// What `send` resolves to (the control API's `delivered`): the PUBLISH reply counts subscribed *processes*, not
// connections, and the other processes' connection counts are not knowable synchronously. So `delivered` is
// this process's streams for the id (exact: the ones the echo will reach unless they close first) plus one for
// each *other* subscribed process (each holds at least one stream for the id, or it would have unsubscribed).
// It is exact with one server and a lower bound across servers; `delivered > 0` means someone got it.
//
// Redis going away: ioredis reconnects (every ≤ reconnectMaxMs); the publisher has no offline queue, so a publish
// while the bus is down fails at once with BusDownError (the control API answers 503) and is counted in
// `lostOnBus`, as is a publish in flight when the connection dropped (Redis may or may not have processed it:
// it is unconfirmed, so it counts as lost). On reconnect the subscriber re-subscribes every local id itself, in
// batches of `batchChannels`, from the live map (ioredis's own auto-resubscribe is off: it would replay its
// set, not ours). Streams stay open throughout; messages other processes publish while this process's
// subscription is down never reach it and cannot be counted here (their publishers see fewer subscribers).
// ioredis is loaded when a Redis router connects, not when this module is imported: the CLI imports this module
// for its flag parsing, and loading ioredis costs every server ~10 MB of RSS whatever router it runs.
import type { Redis, RedisOptions } from 'ioredis';
import { FlagError } from '../lib/flags.js';
import { LocalRouter, type Deliver, type Router, type RouterFactory } from './router.js';

/** Prefix of the per-id channels; `channelOf` is the one place that spells a channel name. */
export const CHANNEL_PREFIX = 'c1m:id:';

/** The Redis channel that carries the messages of `id` (servers subscribe to it, publishers publish to it). */
export function channelOf(id: number): string {
  return CHANNEL_PREFIX + id;
}

/** The id of a channel name, or null when it is not one of ours. */
export function idOfChannel(channel: string): number | null {
  if (!channel.startsWith(CHANNEL_PREFIX)) return null;
  const id = Number(channel.slice(CHANNEL_PREFIX.length));
  return Number.isSafeInteger(id) && id >= 0 ? id : null;
}

/** Every limit of the Redis router, with its default, in one place. */
export const REDIS_LIMITS = {
  /** Channels per SUBSCRIBE/UNSUBSCRIBE command (a 10k-stream ramp is 10 commands, not 10,000). */
  batchChannels: 1000,
  /** Longest wait between reconnect attempts, ms (ioredis backs off 50 ms × attempt up to this). */
  reconnectMaxMs: 500,
  /** How long startup waits for Redis before giving up, ms. */
  connectTimeoutMs: 5000,
} as const;

/** Options of the Redis router. */
export interface RedisRouterOptions {
  /** `redis://[user:pass@]host:port[/db]` (or `rediss://`). */
  url: string;
  batchChannels?: number;
  reconnectMaxMs?: number;
  connectTimeoutMs?: number;
}

/** The bus part of /stats (`bus`), for the Redis router. */
export interface BusStats {
  kind: 'redis';
  /** `up`: both connections ready and every local id subscribed; `down` otherwise. */
  state: 'up' | 'down';
  /** Times the bus went down since start; `lastOutageMs` is the length of the last finished one. */
  outages: number;
  lastOutageMs: number;
  /** ms since the current outage began (0 when up). */
  downForMs: number;
  /** Messages handed to Redis and confirmed by its PUBLISH reply. */
  published: number;
  /** Of those, messages no server process was subscribed to (PUBLISH reply 0). */
  publishedToNobody: number;
  /** Messages this process could not publish (bus down, or in flight when the connection dropped). */
  lostOnBus: number;
  /** Messages that came in through the subscription. */
  received: number;
  /** Of those, messages whose id had no local stream any more when they arrived (the unsubscribe was in flight). */
  receivedToNobody: number;
  /** Channels this process is subscribed to, as Redis last reported it. */
  channels: number;
  /** SUBSCRIBE / UNSUBSCRIBE commands sent (each carries up to batchChannels channels). */
  subscribeCommands: number;
  unsubscribeCommands: number;
  /** Ids re-subscribed after reconnects, in total. */
  resubscribed: number;
}

/** A publish that could not be handed to Redis; the control API answers it with `status`. */
export class BusDownError extends Error {
  readonly code = 'C1M_BUS_DOWN';
  readonly status = 503;
  constructor(message: string) {
    super(message);
    this.name = 'BusDownError';
  }
}

interface Pending {
  channel: string;
  id: number;
  msg: string;
  resolve: (n: number) => void;
  reject: (e: Error) => void;
}
interface Barrier {
  promise: Promise<void>;
  resolve: () => void;
}

function barrier(): Barrier {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** The Redis router; build it with `RedisRouter.connect` (or `redisRouterFactory`). */
export class RedisRouter<C extends object> implements Router<C> {
  // The local connections; it tells `touch` when an id gets its first local stream (subscribe) or loses its last.
  private readonly local: LocalRouter<C>;

  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly batchChannels: number;
  /** Ids whose subscription changed since the last flush; the flush subscribes the held ones, unsubscribes the rest. */
  private dirty = new Set<number>();
  /** Ids whose SUBSCRIBE is not confirmed yet, with the barrier a send for them waits on. */
  private readonly subscribing = new Map<number, Promise<void>>();
  private nextBarrier: Barrier | null = null;
  private queue: Pending[] = [];
  private flushQueued = false;
  /** True once the subscriber is ready and every held id has been re-subscribed on it (commands issued). */
  private subLive = false;
  private subResynced = false;
  private closed = false;
  private downSince = 0;
  private readonly s = {
    outages: 0, lastOutageMs: 0, published: 0, publishedToNobody: 0, lostOnBus: 0, received: 0, receivedToNobody: 0,
    channels: 0, subscribeCommands: 0, unsubscribeCommands: 0, resubscribed: 0,
  };

  private constructor(RedisClass: typeof Redis, deliver: Deliver<C>, opts: RedisRouterOptions) {
    this.local = new LocalRouter<C>(deliver, (id) => this.touch(id));
    this.batchChannels = opts.batchChannels ?? REDIS_LIMITS.batchChannels;
    const reconnectMaxMs = opts.reconnectMaxMs ?? REDIS_LIMITS.reconnectMaxMs;
    const common: RedisOptions = {
      // Fail fast instead of queueing: a command while disconnected, or in flight at a drop, is rejected.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      autoResubscribe: false,
      lazyConnect: true,
      retryStrategy: (times: number) => Math.min(times * 50, reconnectMaxMs),
      connectionName: `c1m-${process.pid}`,
      // A socket still open this long after close() is destroyed; ioredis's 2 s default keeps a stopped
      // server's process alive that long when Redis was unreachable.
      disconnectTimeout: 200,
    };
    this.pub = new RedisClass(opts.url, common);
    this.sub = new RedisClass(opts.url, common);
    // ioredis reports every failed reconnect as an 'error'; the state is in /stats, so these are not fatal.
    this.pub.on('error', () => {});
    this.sub.on('error', () => {});
    this.pub.on('close', () => this.wentDown());
    this.sub.on('close', () => {
      this.subLive = false;
      this.subResynced = false;
      this.wentDown();
    });
    this.pub.on('ready', () => this.maybeUp());
    this.sub.on('ready', () => this.resync());
    this.sub.on('message', (channel: string, msg: string) => this.onMessage(channel, msg));
  }

  /** Connects both Redis connections (waits up to connectTimeoutMs) and returns the router. */
  static async connect<C extends object>(deliver: Deliver<C>, opts: RedisRouterOptions): Promise<RedisRouter<C>> {
    const { Redis: RedisClass } = await import('ioredis');
    const r = new RedisRouter<C>(RedisClass, deliver, opts);
    const timeoutMs = opts.connectTimeoutMs ?? REDIS_LIMITS.connectTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        Promise.all([r.pub.connect(), r.sub.connect()]),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer from Redis at ${redactUrl(opts.url)} within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } catch (err) {
      await r.close();
      const why = err instanceof Error ? err.message : String(err);
      throw new Error(`cannot connect to Redis at ${redactUrl(opts.url)}: ${why}`);
    } finally {
      clearTimeout(timer);
    }
    return r;
  }

  login(id: number, conn: C): void {
    this.local.login(id, conn);
  }

  logout(conn: C): void {
    this.local.logout(conn);
  }

  /** Marks an id for the next flush; a held id gets a barrier that sends for it wait on until Redis confirms. */
  private touch(id: number): void {
    if (this.closed) return;
    this.dirty.add(id);
    if (this.local.has(id) && !this.subscribing.has(id)) {
      this.nextBarrier ??= barrier();
      this.subscribing.set(id, this.nextBarrier.promise);
    }
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    // setImmediate, not nextTick: lets a whole ramp of logins (and a burst of sends) land in one batch, and keeps
    // a SUBSCRIBE issued in this turn of the loop ahead of a PUBLISH issued in it.
    setImmediate(this.flush);
  }

  private readonly flush = (): void => {
    this.flushQueued = false;
    if (this.closed) return;
    const b = this.nextBarrier;
    this.nextBarrier = null;
    if (this.dirty.size > 0) {
      if (this.subLive) {
        const ids = this.dirty;
        this.dirty = new Set();
        const on: string[] = [];
        const off: string[] = [];
        for (const id of ids) (this.local.has(id) ? on : off).push(channelOf(id));
        const done: Array<Promise<unknown>> = [];
        for (let i = 0; i < on.length; i += this.batchChannels) done.push(this.subscribe(on.slice(i, i + this.batchChannels)));
        for (let i = 0; i < off.length; i += this.batchChannels) done.push(this.unsubscribe(off.slice(i, i + this.batchChannels)));
        if (b) void Promise.allSettled(done).then(() => this.release(b));
      } else if (b) {
        // Bus down: the ids stay dirty for the re-subscription; sends must not wait for it (they are lost now).
        this.release(b);
      }
    }
    else if (b) this.release(b);
    if (this.queue.length > 0) this.publishQueued();
  };

  private release(b: Barrier): void {
    for (const [id, p] of this.subscribing) if (p === b.promise) this.subscribing.delete(id);
    b.resolve();
  }

  private subscribe(channels: string[]): Promise<unknown> {
    this.s.subscribeCommands++;
    return this.sub.subscribe(...channels).then(
      (n) => void (this.s.channels = Number(n)),
      () => {}, // the connection dropped: the resync on 'ready' subscribes every held id again
    );
  }

  private unsubscribe(channels: string[]): Promise<unknown> {
    this.s.unsubscribeCommands++;
    return this.sub.unsubscribe(...channels).then(
      (n) => void (this.s.channels = Number(n)),
      () => {},
    );
  }

  private publishQueued(): void {
    const q = this.queue;
    this.queue = [];
    if (this.pub.status !== 'ready') {
      for (const p of q) this.lost(p, 'the message bus (Redis) is down');
      return;
    }
    const pipe = this.pub.pipeline();
    for (const p of q) pipe.publish(p.channel, p.msg);
    pipe.exec().then(
      (results) => {
        for (let i = 0; i < q.length; i++) {
          const [err, reply] = results?.[i] ?? [new Error('no reply'), null];
          if (err) this.lost(q[i]!, `publish failed: ${err.message}`);
          else this.confirmed(q[i]!, Number(reply));
        }
      },
      (err: unknown) => {
        for (const p of q) this.lost(p, `publish failed: ${err instanceof Error ? err.message : String(err)}`);
      },
    );
  }

  private lost(p: Pending, why: string): void {
    this.s.lostOnBus++;
    p.reject(new BusDownError(`${why}: message to id ${p.id} not delivered (counted in /stats bus.lostOnBus)`));
  }

  private confirmed(p: Pending, servers: number): void {
    this.s.published++;
    if (servers === 0) this.s.publishedToNobody++;
    // While this process's subscription is down (or not yet re-subscribed) its own streams will not see the echo.
    const local = this.subResynced ? this.local.countOf(p.id) : 0;
    p.resolve(local + Math.max(0, servers - (local > 0 ? 1 : 0)));
  }

  private onMessage(channel: string, msg: string): void {
    this.s.received++;
    const id = idOfChannel(channel);
    if (id === null || !this.local.has(id)) {
      this.s.receivedToNobody++;
      return;
    }
    this.local.send(id, msg);
  }

  async send(id: number, msg: string): Promise<number> {
    const wait = this.subscribing.get(id);
    if (wait !== undefined) await wait;
    if (this.closed || this.pub.status !== 'ready') {
      this.s.lostOnBus++;
      throw new BusDownError(`the message bus (Redis) is down: message to id ${id} not delivered (counted in /stats bus.lostOnBus)`);
    }
    return new Promise<number>((resolve, reject) => {
      this.queue.push({ channel: channelOf(id), id, msg, resolve, reject });
      this.scheduleFlush();
    });
  }

  private wentDown(): void {
    if (this.downSince === 0 && !this.closed) {
      this.downSince = performance.now();
      this.s.outages++;
    }
  }

  /** The subscriber is (re)connected: subscribe every held id again, in batches, from the live map. */
  private resync(): void {
    if (this.closed) return;
    this.dirty.clear(); // the live map is the whole truth now
    const channels: string[] = [];
    for (const id of this.local.ids()) channels.push(channelOf(id));
    this.subLive = true;
    const isReconnect = this.downSince !== 0;
    const done: Array<Promise<unknown>> = [];
    for (let i = 0; i < channels.length; i += this.batchChannels) done.push(this.subscribe(channels.slice(i, i + this.batchChannels)));
    void Promise.all(done).then(() => {
      if (!this.subLive) return; // dropped again meanwhile
      if (isReconnect) this.s.resubscribed += channels.length;
      this.subResynced = true;
      this.maybeUp();
    });
  }

  private maybeUp(): void {
    if (this.downSince === 0 || !this.subResynced || this.pub.status !== 'ready') return;
    this.s.lastOutageMs = Math.round(performance.now() - this.downSince);
    this.downSince = 0;
  }

  /** The `bus` part of /stats. */
  busStats(): BusStats {
    const up = this.downSince === 0 && this.subResynced && this.pub.status === 'ready';
    return {
      kind: 'redis',
      state: up ? 'up' : 'down',
      ...this.s,
      downForMs: this.downSince === 0 ? 0 : Math.round(performance.now() - this.downSince),
    };
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
    this.dirty.clear();
    if (this.nextBarrier) this.release(this.nextBarrier);
    for (const p of this.queue) this.lost(p, 'the router is closing');
    this.queue = [];
    // local.close() clears the maps synchronously, before anything awaited here can run.
    await Promise.all([this.local.close(), quitRedis(this.pub), quitRedis(this.sub)]);
  }
}

/** Ends an ioredis connection: QUIT when connected (falling back to a hard disconnect), else stops its reconnect loop. */
export async function quitRedis(r: Redis): Promise<void> {
  if (r.status === 'ready') {
    try {
      await r.quit();
      return;
    } catch {
      /* fall through to a hard disconnect */
    }
  }
  r.disconnect(false);
}

/** The URL without its password, for messages. */
export function redactUrl(url: string): string {
  return url.replace(/(\/\/[^:/@]*:)[^@/]*@/, '$1***@');
}

/** A RouterFactory for startCometServer's `router` option. */
export function redisRouterFactory<C extends object>(opts: RedisRouterOptions | string): RouterFactory<C> {
  const o = typeof opts === 'string' ? { url: opts } : opts;
  return (deliver) => RedisRouter.connect<C>(deliver, o);
}

/**
 * Reads `--router`: `local` (the default in-process router) or a `redis://` / `rediss://` URL; anything else is a
 * FlagError naming the flag. Returns undefined for `local`.
 */
export function parseRouterFlag<C extends object>(flag: string, raw: string): RouterFactory<C> | undefined {
  const v = raw.trim();
  if (v === 'local') return undefined;
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    throw new FlagError(flag, `'${raw}' is neither 'local' nor a redis://host:port URL`);
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new FlagError(flag, `'${redactUrl(raw)}' is neither 'local' nor a redis://host:port URL`);
  }
  if (url.hostname === '') throw new FlagError(flag, `'${redactUrl(raw)}' has no host (redis://host:port)`);
  return redisRouterFactory<C>(v);
}
