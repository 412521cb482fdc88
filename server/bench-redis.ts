// Redis router benchmark (a script, not a test): publish → deliver latency through Redis with two server
// processes, and the memory cost per subscribed id in Redis and in the server.
//
//   flock /tmp/c1m-bench.lock node dist/server/bench-redis.js [--conns 4000] [--rate 1000] [--duration 10s]
//       [--via control|redis] [--ids 10000] [--mem-ids 10000]
//
// Latency: starts a redis-server on a free port and two comet-server CLIs on it (`--router redis://…`, the CLI's
// own node flags), opens `--conns` idle `/test/<id>` streams (ids 1..conns, half on each server, from this process
// over raw node:net), waits until both servers report every id subscribed, then runs the msggen CLI in a child
// process at `--rate` msgs/s to random ids in 1..conns for `--duration`, either through server A's control API
// (`--via control`: half the messages cross to server B through Redis) or straight into Redis (`--via redis`).
// Latency = read time here − the message's `@t=` stamp (its scheduled send time: coordinated-omission corrected).
//
// Memory: Redis `used_memory` before and after one router subscribes `--mem-ids` ids, and the V8 heap of this
// process (forced GC) with `--mem-ids` ids held by a RedisRouter versus a LocalRouter: the router's own per-id
// cost (maps, ioredis's subscription set) without sockets. Everything is bounded (180 s deadline) and stops by itself.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import { Redis } from 'ioredis';
import { parseChoice, parseDuration, parseIntFlag } from '../lib/flags.js';
import { createHistogram, formatMicros, recordLatency, summarize } from '../lib/histogram.js';
import { findMarker, nowMicros } from '../lib/marker.js';
import { LocalRouter } from './router.js';
import { RedisRouter, type BusStats } from './router-redis.js';
import { startRedis, type TestRedis } from './redis-testkit.js';

const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));
const MSGGEN = fileURLToPath(new URL('../msggen/cli.js', import.meta.url));
import { SERVER_NODE_FLAGS as SERVER_FLAGS } from './node-flags.js';
const DEADLINE_MS = 180_000;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Server {
  child: ChildProcess;
  port: number;
  control: number;
}

async function startServer(url: string): Promise<Server> {
  const child = spawn(process.execPath, [...SERVER_FLAGS, CLI, '--host', '127.0.0.1', '--port', '0', '--control-port', '0', '--router', url], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, C1M_TOKEN: '', MALLOC_ARENA_MAX: '1' },
  });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const deadline = Date.now() + 10_000;
  for (;;) {
    const m = /listening .*port=(\d+) control=(\d+)/.exec(err);
    if (m) return { child, port: Number(m[1]), control: Number(m[2]) };
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`server did not start: ${err}`);
    await sleep(20);
  }
}

async function stats(s: Server): Promise<Record<string, unknown> & { bus: BusStats }> {
  return (await (await fetch(`http://127.0.0.1:${s.control}/stats`)).json()) as Record<string, unknown> & { bus: BusStats };
}

function cpuOf(pid: number): number {
  // utime + stime in clock ticks (100/s here) from /proc/<pid>/stat.
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

async function latency(redis: TestRedis, conns: number, rate: number, durationMs: number, via: 'control' | 'redis'): Promise<void> {
  const servers = [await startServer(redis.url), await startServer(redis.url)];
  const BR = Buffer.from('<br/>');
  const hist = createHistogram();
  let received = 0;
  const sockets: net.Socket[] = [];
  try {
    // Open the streams in bounded parallel batches, alternating servers.
    for (let i = 0; i < conns; i += 200) {
      const batch: Array<Promise<void>> = [];
      for (let j = i; j < Math.min(i + 200, conns); j++) {
        batch.push(
          new Promise<void>((resolve, reject) => {
            const s = net.connect({ port: servers[j % 2]!.port, host: '127.0.0.1' });
            sockets.push(s);
            let head = false;
            s.on('connect', () => s.write(`GET /test/${j + 1} HTTP/1.1\r\nHost: bench\r\n\r\n`));
            s.on('data', (d: Buffer) => {
              let from = 0;
              for (let k = d.indexOf(BR); k >= 0; k = d.indexOf(BR, k + 5)) {
                const t = findMarker(d, from, k);
                if (t >= 0) {
                  recordLatency(hist, nowMicros() - t);
                  received++;
                }
                from = k + 5;
              }
              if (!head) {
                head = true;
                resolve();
              }
            });
            s.on('error', reject);
          }),
        );
      }
      await Promise.all(batch);
    }
    const t0 = Date.now();
    for (;;) {
      const [a, b] = await Promise.all(servers.map(stats));
      if (a!.bus.channels === Math.ceil(conns / 2) && b!.bus.channels === Math.floor(conns / 2)) break;
      if (Date.now() - t0 > 20_000) throw new Error(`subscriptions incomplete: ${a!.bus.channels} + ${b!.bus.channels}`);
      await sleep(50);
    }
    const subMs = Date.now() - t0;
    const redisMem = await redisInfo(redis.url);
    const cpu0 = servers.map((s) => cpuOf(s.child.pid!));
    const redisCpu0 = cpuOf(redis.pid);
    const target = via === 'redis' ? ['--redis', redis.url] : ['--target', `http://127.0.0.1:${servers[0]!.control}`];
    const procs = Math.min(100, Math.max(1, Math.round(rate / 10)));
    const gen = spawn(process.execPath, [MSGGEN, ...target, '--procs', String(procs), '--rate', String(rate / procs), '--max', String(conns),
      '--duration', `${durationMs}ms`, '--seed', '1', '--quiet', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    gen.stdout!.on('data', (d) => (out += d));
    await new Promise<void>((resolve) => gen.on('exit', () => resolve()));
    await sleep(500); // the last messages in flight
    const summary = JSON.parse(out.trim().split('\n').pop()!) as { sent: number; acked: number; failed: number; delivered: number; cpu: { user: number; system: number } };
    const cpu1 = servers.map((s) => cpuOf(s.child.pid!));
    const redisCpu1 = cpuOf(redis.pid);
    const [a, b] = await Promise.all(servers.map(stats));
    const l = summarize(hist);
    const secs = durationMs / 1000;
    process.stdout.write(
      `latency via ${via}: ${conns} streams on 2 servers (ids 1..${conns}), ${rate} msg/s for ${secs}s, subscriptions confirmed in ${subMs} ms\n` +
        `  msggen   sent ${summary.sent} acked ${summary.acked} failed ${summary.failed} delivered ${summary.delivered}  cpu ${(summary.cpu.user + summary.cpu.system).toFixed(1)}s\n` +
        `  client   received ${received} of ${summary.acked} (${((received / Math.max(1, summary.acked)) * 100).toFixed(2)}%)\n` +
        `  latency  p50 ${formatMicros(l.p50)}  p90 ${formatMicros(l.p90)}  p99 ${formatMicros(l.p99)}  p99.9 ${formatMicros(l.p999)}  max ${formatMicros(l.max)}\n` +
        `  server A cpu ${((cpu1[0]! - cpu0[0]!) / secs * 100).toFixed(0)}%  rss ${mb(a!.rss as number)}  bus received ${a!.bus.received} published ${a!.bus.published} lost ${a!.bus.lostOnBus}\n` +
        `  server B cpu ${((cpu1[1]! - cpu0[1]!) / secs * 100).toFixed(0)}%  rss ${mb(b!.rss as number)}  bus received ${b!.bus.received} published ${b!.bus.published} lost ${b!.bus.lostOnBus}\n` +
        `  redis    cpu ${((redisCpu1 - redisCpu0) / secs * 100).toFixed(0)}%  used_memory ${mb(redisMem.used)} with ${conns} channels\n`,
    );
  } finally {
    for (const s of sockets) s.destroy();
    for (const s of servers) s.child.kill('SIGKILL');
  }
}

function mb(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MB`;
}

async function redisInfo(url: string): Promise<{ used: number }> {
  const r = new Redis(url, { lazyConnect: true });
  await r.connect();
  const info = await r.info('memory');
  await r.quit();
  return { used: Number(/used_memory:(\d+)/.exec(info)?.[1] ?? NaN) };
}

async function memory(redis: TestRedis, ids: number): Promise<void> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const heap = (): number => {
    gc();
    gc();
    return process.memoryUsage().heapUsed;
  };
  type C = { i: number };
  const conns: C[] = Array.from({ length: ids }, (_, i) => ({ i }));
  // Local router: the baseline per-id cost of the maps.
  const h0 = heap();
  const local = new LocalRouter<C>(() => 0);
  for (const c of conns) local.login(c.i + 1, c);
  const h1 = heap();
  await local.close();
  const r0 = (await redisInfo(redis.url)).used;
  const h2 = heap();
  const router = await RedisRouter.connect<C>(() => 0, { url: redis.url });
  const h3 = heap();
  for (const c of conns) router.login(c.i + 1, c);
  const t0 = Date.now();
  while (router.busStats().channels !== ids) {
    if (Date.now() - t0 > 20_000) throw new Error('subscriptions incomplete');
    await sleep(20);
  }
  const subMs = Date.now() - t0;
  const h4 = heap();
  const r1 = (await redisInfo(redis.url)).used;
  const st = router.busStats();
  await router.close();
  process.stdout.write(
    `memory per subscribed id (${ids} ids, one stream each; forced GC; this process's V8 heap):\n` +
      `  LocalRouter maps      ${((h1 - h0) / ids).toFixed(0)} B/id\n` +
      `  RedisRouter total     ${((h4 - h3) / ids).toFixed(0)} B/id (maps + ioredis subscription set; connection itself ${((h3 - h2) / 1024).toFixed(0)} KB)\n` +
      `  redis-server          ${((r1 - r0) / ids).toFixed(0)} B/id (used_memory ${mb(r0)} → ${mb(r1)})\n` +
      `  subscribing ${ids} ids took ${subMs} ms in ${st.subscribeCommands} SUBSCRIBE commands\n`,
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      conns: { type: 'string', default: '4000' },
      rate: { type: 'string', default: '1000' },
      duration: { type: 'string', default: '10s' },
      via: { type: 'string', default: 'control' },
      'mem-ids': { type: 'string', default: '10000' },
    },
    strict: true,
  });
  const conns = parseIntFlag('--conns', values.conns, 2, 16_000);
  const rate = parseIntFlag('--rate', values.rate, 1, 20_000);
  const durationMs = parseDuration('--duration', values.duration, 1000, 120_000);
  const via = parseChoice('--via', values.via, ['control', 'redis'] as const);
  const memIds = parseIntFlag('--mem-ids', values['mem-ids'], 0, 1_000_000);
  setTimeout(() => {
    process.stderr.write('bench-redis: deadline reached\n');
    process.exit(3);
  }, DEADLINE_MS).unref();
  const redis = await startRedis();
  try {
    process.stdout.write(`node ${process.version}, redis-server on port ${redis.port}, load average ${os.loadavg().map((x: number) => x.toFixed(2)).join(' ')}\n`);
    if (memIds > 0) await memory(redis, memIds);
    await latency(redis, conns, rate, durationMs, via);
  } finally {
    await redis.stop();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench-redis: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
