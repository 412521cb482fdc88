// c1m chaos: scripted fault scenarios against the reference server, each bounded in time, self-cleaning (it ends
// only the processes it started, by PID) and ending in a pass/fail table.
//
//   worker-kill    comet-server --workers 2, clients with --reconnect, messages flowing; SIGKILL one worker
//   redis-restart  two servers on one real redis-server; kill Redis, restart it on the same port
//   restart-storm  N clients with --reconnect on one server; SIGTERM it and start it again on the same port
//   sigterm        under load, SIGTERM the server; every client must see the terminating chunk
//
// Why witnesses (worker-kill): floodtest counts chunks for all its connections together, and nothing outside the
// server says which worker holds which id. So this process opens a few extra streams of its own ("witnesses", ids
// above the flood's) and publishes to each of them a known number of times. A witness that stays open through the
// kill was held by the surviving worker (the killed worker's streams are cut), and must have received exactly what
// was published to its id: that is "the other clients lose nothing", per id, with no inference.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { FlagError, formatDuration, parseDuration, parseIntFlag } from '../lib/flags.js';
import { freePort, startRedis, type TestRedis } from '../server/redis-testkit.js';
import { startChild, stopChild, type Child } from './children.js';
import { buildUrls } from './run.js';
import type { ServerStats } from './summary.js';
import { floodtestArgs, msggenArgs, parseFloodLine, parseMsggenLine, parseReadyLine, SERVER_NODE_FLAGS, serverEnv, toolCli, type FloodRecord, type MsggenRecord } from './tools.js';

/** The scenarios, in the order `c1m chaos --help` lists them. */
export const SCENARIOS = ['worker-kill', 'redis-restart', 'restart-storm', 'sigterm'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

/** Every bound a scenario is judged by, named once (the issue's figures). */
export const CHAOS_BOUNDS = {
  /** A killed worker's slot has a new, answering worker within this (ms). */
  workerReplacedMs: 2000,
  /** The killed worker's clients (floodtest --reconnect) are all connected again within this (ms). */
  clientsBackMs: 10_000,
  /** Both servers report the Redis bus up (every id re-subscribed) within this after Redis answers again (ms). */
  resubscribeMs: 2000,
  /** After a server restart, all N clients are back within this (ms). */
  stormBackMs: 60_000,
  /** A server given SIGTERM exits by itself within this (ms; its own promise is 5 s). */
  sigtermExitMs: 5000,
};

/** Options of one scenario run; every default is small enough for a shared 2-core machine. */
export interface ChaosOptions {
  /** Flood clients (ids 1..conns). Default 2,000 (restart-storm: 10,000). */
  conns?: number;
  /** Total msggen rate, msg/s (default 200). */
  msgRate?: number;
  /** Messages flow this long before the fault (ms, default 2000). */
  flowMs?: number;
  /** redis-restart: how long Redis stays down (ms, default 2000). */
  gapMs?: number;
  /** redis-restart: length of the after-recovery msggen run (ms, default 3000). */
  afterMs?: number;
  /** worker-kill: witness streams held by this process (default 40). */
  witnesses?: number;
  /** The whole scenario is stopped (and failed) after this (ms, default 180 s). */
  timeLimitMs?: number;
  /** Progress on stderr. */
  log?: (line: string) => void;
}

/** One judged figure. */
export interface ChaosCheck {
  name: string;
  /** What passes, e.g. "≤ 2000 ms". */
  bound: string;
  measured: string;
  ok: boolean;
}

/** What a scenario returns. */
export interface ChaosResult {
  scenario: ScenarioName;
  params: Record<string, number>;
  checks: ChaosCheck[];
  /** Other figures worth reporting (not judged). */
  figures: Record<string, number | string>;
  /** Problems that stopped the scenario early (timeouts, a process that died); any makes it fail. */
  incidents: string[];
  pass: boolean;
  durationMs: number;
}

/** A running scenario. */
export interface ChaosHandle {
  done: Promise<ChaosResult>;
  /** Stops early: every process started is stopped, the result says why. */
  stop(reason?: string): Promise<ChaosResult>;
}

class Stopped extends Error {}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** A deadline for a race: unref'd, so a race already won does not keep the process alive. */
const deadline = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());
const fmt = (n: number | undefined | null): string => (n === undefined || n === null ? '?' : n.toLocaleString('en-US'));
const n = (s: ServerStats | undefined, k: string): number => {
  const v = s?.[k];
  return typeof v === 'number' ? v : 0;
};
const busOf = (s: ServerStats | undefined): ServerStats | undefined => (s?.bus && typeof s.bus === 'object' ? (s.bus as ServerStats) : undefined);
const workersOf = (s: ServerStats | undefined): Array<{ slot: number; pid: number; fresh: boolean; connections: number }> =>
  Array.isArray(s?.workers) ? (s.workers as Array<{ slot: number; pid: number; fresh: boolean; connections: number }>) : [];

/** Everything a scenario starts, so that it can all be stopped by PID whatever happens. */
class Scene {
  readonly children: Child[] = [];
  readonly sockets = new Set<net.Socket>();
  redis: TestRedis | undefined;
  readonly dir = mkdtempSync(join(tmpdir(), 'c1m-chaos-'));
  stopped: string | undefined;
  constructor(readonly log: (l: string) => void) {}

  check(): void {
    if (this.stopped !== undefined) throw new Stopped(this.stopped);
  }

  /** Polls `fn` every `stepMs` until it returns a value, or throws after `ms`. */
  async until<T>(what: string, ms: number, fn: () => T | undefined | Promise<T | undefined>, stepMs = 50): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      this.check();
      const v = await fn();
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`timed out after ${formatDuration(ms)} waiting for ${what}`);
      await sleep(stepMs);
    }
  }

  /** Starts the reference server CLI; resolves with its ports once it printed its ready line. */
  async server(name: string, flags: string[], opts: { port?: number; controlPort?: number } = {}): Promise<{ child: Child; port: number; controlPort: number }> {
    let ready!: (v: { port: number; controlPort: number }) => void;
    const readyP = new Promise<{ port: number; controlPort: number }>((r) => (ready = r));
    const args = [...SERVER_NODE_FLAGS, toolCli('server'), '--host', '127.0.0.1', '--port', String(opts.port ?? 0), '--control-port', String(opts.controlPort ?? 0), ...flags];
    const child = await startChild(name, process.execPath, {
      args,
      env: serverEnv(),
      stderrFile: join(this.dir, `${name}.log`),
      onStderrLine: (l) => {
        const r = parseReadyLine(l);
        if (r) ready(r);
      },
    });
    this.children.push(child);
    const r = await Promise.race([
      readyP,
      child.exited.then((c) => Promise.reject(new Error(`${name} exited (${c}) before it was ready: ${child.stderrTail().slice(-2).join(' | ')}`))),
      deadline(15_000).then(() => Promise.reject(new Error(`${name} not ready within 15 s`))),
    ]);
    this.log(`${name}: pid ${child.pid}, port ${r.port}, control ${r.controlPort}`);
    return { child, ...r };
  }

  /** floodtest on ids 1..conns over the given ports (ids alternate between ports), NDJSON parsed as it comes. */
  async flood(conns: number, ports: number[], extra: string[]): Promise<Flood> {
    const file = join(this.dir, `urls-${ports.join('-')}.txt`);
    writeFileSync(file, buildUrls('http://{host}:{port}/test/{id}', conns, ['127.0.0.1'], ports));
    const f = new Flood();
    f.child = await startChild('floodtest', process.execPath, {
      args: floodtestArgs(file, 0.2, extra),
      stderrFile: join(this.dir, 'floodtest.log'),
      onStdoutLine: (l) => f.feed(l),
    });
    this.children.push(f.child);
    return f;
  }

  /** msggen against a control port: procs × rate/procs msg/s to ids 1..max, until stopped or durationMs. */
  async msggen(controlPort: number, rate: number, max: number, durationMs: number): Promise<Msggen> {
    const procs = Math.max(1, Math.min(10, rate));
    const g = new Msggen();
    g.child = await startChild('msggen', process.execPath, {
      args: msggenArgs({ target: `http://127.0.0.1:${controlPort}`, procs, rate: rate / procs, max, durationMs, extra: ['--quiet'] }),
      stderrFile: join(this.dir, 'msggen.log'),
      onStdoutLine: (l) => g.feed(l),
    });
    this.children.push(g.child);
    return g;
  }

  /** Stops everything still running, newest first (clients before servers), by PID; removes the temp folder. */
  async cleanup(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    for (const c of [...this.children].reverse()) {
      if (!c.hasExited()) await stopChild(c, c.name.startsWith('server') ? 'SIGTERM' : 'SIGINT', 5000);
    }
    await this.redis?.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A floodtest child's latest sample and summary. */
class Flood {
  child!: Child;
  last: FloodRecord | undefined;
  summary: FloodRecord | undefined;
  feed(line: string): void {
    const r = parseFloodLine(line);
    if (r?.type === 'summary') this.summary = r;
    else if (r?.type === 'sample') this.last = r;
  }
  get connected(): number {
    return this.last?.connected ?? 0;
  }
  /** Stops it (SIGINT: it writes its summary) and returns the summary. */
  async stop(): Promise<FloodRecord | undefined> {
    await stopChild(this.child, 'SIGINT', 8000);
    return this.summary ?? this.last;
  }
}

/** A msggen child's summary. */
class Msggen {
  child!: Child;
  summary: MsggenRecord | undefined;
  feed(line: string): void {
    const r = parseMsggenLine(line);
    if (r?.type === 'summary') this.summary = r;
  }
  async stop(): Promise<MsggenRecord | undefined> {
    await stopChild(this.child, 'SIGINT', 8000);
    return this.summary;
  }
  /** Waits for it to finish by itself (its --duration). */
  async finish(ms: number): Promise<MsggenRecord | undefined> {
    await Promise.race([this.child.exited, deadline(ms)]);
    return this.child.hasExited() ? this.summary : this.stop();
  }
  static failed(s: MsggenRecord | undefined): number {
    const f = s?.raw.failed;
    return typeof f === 'number' ? f : 0;
  }
}

/** GET /stats of a control port; undefined when it does not answer within 1 s. */
async function stats(controlPort: number): Promise<ServerStats | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${controlPort}/stats`, { signal: AbortSignal.timeout(1000) });
    return res.ok ? ((await res.json()) as ServerStats) : undefined;
  } catch {
    return undefined;
  }
}

/** Child pids of a process (from /proc/<pid>/task/<tid>/children; empty once it is gone). */
function childrenOf(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((t) => readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
  } catch {
    return [];
  }
}

/** Resident set size of a pid, KB (undefined once it is gone). */
function rssKB(pid: number): number | undefined {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+)/m);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

// ---- worker-kill ----

/** One witness stream: its id, whether it got its 200, how many messages arrived, when it closed. */
interface Witness {
  id: number;
  open: boolean;
  closedAt: number | undefined;
  received: number;
  published: number;
  tail: string;
}

const MARK = 'Recvd msg #';

/** Opens a `/test/<id>` stream held by this process and counts the messages in it (the text, split-safe). */
function openWitness(scene: Scene, port: number, id: number): Promise<Witness> {
  return new Promise((resolve, reject) => {
    const w: Witness = { id, open: false, closedAt: undefined, received: 0, published: 0, tail: '' };
    const s = net.connect({ host: '127.0.0.1', port });
    scene.sockets.add(s);
    let head = '';
    s.setEncoding('latin1');
    s.on('connect', () => s.write(`GET /test/${id} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`));
    s.on('data', (d: string) => {
      if (!w.open) {
        head += d;
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        if (!head.startsWith('HTTP/1.1 200')) {
          reject(new Error(`witness ${id}: ${head.split('\r\n')[0]}`));
          s.destroy();
          return;
        }
        w.open = true;
        d = head.slice(end + 4);
        resolve(w);
      }
      const text = w.tail + d;
      let i = text.indexOf(MARK);
      while (i >= 0) {
        w.received++;
        i = text.indexOf(MARK, i + MARK.length);
      }
      w.tail = text.slice(-(MARK.length - 1));
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      scene.sockets.delete(s);
      w.closedAt ??= Date.now();
      if (!w.open) reject(new Error(`witness ${id}: closed before its response`));
    });
  });
}

async function workerKill(scene: Scene, o: Required<Omit<ChaosOptions, 'log'>>, r: ChaosResult): Promise<void> {
  const N = o.conns;
  const W = o.witnesses;
  const srv = await scene.server('server', ['--workers', '2']);
  const flood = await scene.flood(N, [srv.port], ['--reconnect', '--reconnect-max', '2s']);
  const witnesses: Witness[] = [];
  for (let id = N + 1; id <= N + W; id++) witnesses.push(await openWitness(scene, srv.port, id));
  await scene.until(`${N + W} streams on the server`, 60_000, async () => (n(await stats(srv.controlPort), 'connections') >= N + W && flood.connected >= N ? true : undefined), 200);
  scene.log(`worker-kill: ${N} flood clients + ${W} witnesses connected; messages flowing`);
  const gen = await scene.msggen(srv.controlPort, o.msgRate, N, 10 * 60_000);

  // Witness publisher: one NDJSON batch with a line per witness id, every 200 ms, counted per id when accepted.
  let publishing = true;
  let rounds = 0;
  let roundErrors = 0;
  const publisher = (async () => {
    while (publishing) {
      const body = witnesses.map((w) => JSON.stringify({ id: w.id, msg: `witness round ${rounds}` })).join('\n') + '\n';
      try {
        const res = await fetch(`http://127.0.0.1:${srv.controlPort}/send`, { method: 'POST', body, signal: AbortSignal.timeout(2000) });
        const j = (await res.json()) as { accepted?: number };
        if (res.ok && j.accepted === W) for (const w of witnesses) w.published++;
        else roundErrors++;
      } catch {
        roundErrors++;
      }
      rounds++;
      await sleep(200);
    }
  })();

  await sleep(o.flowMs);
  const before = await stats(srv.controlPort);
  const victim = workersOf(before).find((w) => w.pid > 0 && w.connections > 0);
  if (!victim) throw new Error('no worker holds a stream: cannot pick one to kill');
  const known = new Set(childrenOf(srv.child.pid));
  const t0 = Date.now();
  process.kill(victim.pid, 'SIGKILL');
  scene.log(`worker-kill: SIGKILL worker slot ${victim.slot} pid ${victim.pid} (${fmt(victim.connections)} streams)`);

  // Replaced: the slot has another pid that answers (fresh).
  let replacedMs: number | undefined;
  let backMs: number | undefined;
  const limit = Math.max(CHAOS_BOUNDS.clientsBackMs * 2, 20_000);
  // A poll's answer can take up to ~1 s while a worker is missing (the primary waits for every worker's figures),
  // so each time is measured when the answer arrives (conservative); `asked` is when that poll was sent.
  let replacedAskedMs: number | undefined;
  // The fork itself, seen in /proc as a new child of the primary (finer than the stats polls).
  let forkedMs: number | undefined;
  const forkWatch = setInterval(() => {
    if (forkedMs === undefined && childrenOf(srv.child.pid).some((p) => !known.has(p))) forkedMs = Date.now() - t0;
  }, 10);
  await scene.until('the killed worker to be replaced and its clients back', limit, async () => {
    const asked = Date.now() - t0;
    const s = await stats(srv.controlPort);
    const ws = workersOf(s);
    const slot = ws.find((w) => w.slot === victim.slot);
    if (replacedMs === undefined && slot && slot.pid !== victim.pid && slot.pid > 0 && slot.fresh) {
      replacedMs = Date.now() - t0;
      replacedAskedMs = asked;
    }
    const open = witnesses.filter((w) => w.closedAt === undefined).length;
    if (replacedMs !== undefined && backMs === undefined && ws.every((w) => w.fresh) && n(s, 'connections') >= N + open) backMs = Date.now() - t0;
    return backMs !== undefined ? true : undefined;
  }, 50).catch((e: unknown) => r.incidents.push(e instanceof Error ? e.message : String(e)));
  clearInterval(forkWatch);
  r.figures.newWorkerForkedMs = forkedMs ?? 'not seen';
  r.checks.push({ name: 'worker replaced (slot has a new, answering pid)', bound: `≤ ${CHAOS_BOUNDS.workerReplacedMs} ms`, measured: replacedMs === undefined ? 'never' : `${replacedMs} ms (poll sent at ${replacedAskedMs} ms)`, ok: replacedMs !== undefined && replacedMs <= CHAOS_BOUNDS.workerReplacedMs });
  r.checks.push({ name: "killed worker's clients back (server streams = N + open witnesses)", bound: `≤ ${CHAOS_BOUNDS.clientsBackMs} ms`, measured: backMs === undefined ? 'never' : `${backMs} ms`, ok: backMs !== undefined && backMs <= CHAOS_BOUNDS.clientsBackMs });

  // Keep publishing a moment with everyone back, then let the last deliveries arrive.
  await sleep(1000);
  publishing = false;
  await publisher;
  const g = await gen.stop();
  const survivors = witnesses.filter((w) => w.closedAt === undefined);
  const cut = witnesses.filter((w) => w.closedAt !== undefined);
  await scene.until('the survivors to receive every witness message', 3000, () => (survivors.every((w) => w.received >= w.published) ? true : undefined)).catch(() => undefined);
  const short = survivors.filter((w) => w.received !== w.published);
  const pub = survivors.reduce((a, w) => a + w.published, 0);
  const got = survivors.reduce((a, w) => a + w.received, 0);
  r.checks.push({
    name: 'clients of the surviving worker lost nothing (per id, witnesses that stayed open)',
    bound: 'received = published for every id; ≥ 1 witness on each worker',
    measured: `${survivors.length} stayed open, ${cut.length} cut; ${fmt(got)} received of ${fmt(pub)} published${short.length ? `; short: ${short.slice(0, 5).map((w) => `id ${w.id} ${w.received}/${w.published}`).join(', ')}` : ''}`,
    ok: survivors.length > 0 && cut.length > 0 && short.length === 0 && roundErrors === 0,
  });
  const fl = await flood.stop();
  const after = await stats(srv.controlPort);
  Object.assign(r.figures, {
    killedPid: victim.pid,
    killedStreams: victim.connections,
    witnessRounds: rounds,
    witnessRoundErrors: roundErrors,
    msggenSent: g?.sent ?? 0,
    msggenAcked: g?.acked ?? 0,
    msggenErrors: JSON.stringify(g?.errors ?? {}),
    floodErrors: JSON.stringify(fl?.errors ?? {}),
    workerRestarts: n(after, 'workerRestarts'),
    // Not judged: the cluster's summed counters keep a dead worker's last answer (≤ ~1 s old), so writes of its
    // last moments may be missing from chunksOut; these two show how far apart they end.
    serverChunksOut: n(after, 'chunksOut'),
    clientChunks: (fl?.chunks ?? 0) + witnesses.reduce((a, w) => a + w.received, 0),
  });
}

// ---- redis-restart ----

async function redisRestart(scene: Scene, o: Required<Omit<ChaosOptions, 'log'>>, r: ChaosResult): Promise<void> {
  const N = o.conns;
  scene.redis = await startRedis();
  const redis = scene.redis;
  scene.log(`redis-restart: redis-server pid ${redis.pid} on port ${redis.port}`);
  const a = await scene.server('server-a', ['--router', redis.url]);
  const b = await scene.server('server-b', ['--router', redis.url]);
  const flood = await scene.flood(N, [a.port, b.port], []);
  const both = async (): Promise<[ServerStats | undefined, ServerStats | undefined]> => Promise.all([stats(a.controlPort), stats(b.controlPort)]);
  await scene.until(`${N} streams over both servers, every id subscribed`, 60_000, async () => {
    const [sa, sb] = await both();
    const up = busOf(sa)?.state === 'up' && busOf(sb)?.state === 'up';
    return up && n(sa, 'connections') + n(sb, 'connections') >= N && n(busOf(sa), 'channels') + n(busOf(sb), 'channels') >= N && flood.connected >= N ? true : undefined;
  }, 200);
  scene.log(`redis-restart: ${N} streams (A ${Math.ceil(N / 2)}, B ${Math.floor(N / 2)}); msggen → A at ${o.msgRate} msg/s`);

  // The gap run: msggen through A from before the kill until both servers are back.
  const [a0, b0] = await both();
  const c0 = flood.last?.chunks ?? 0;
  const gen1 = await scene.msggen(a.controlPort, o.msgRate, N, 10 * 60_000);
  await sleep(o.flowMs);
  await redis.kill();
  scene.log(`redis-restart: redis-server killed (SIGKILL); down for ${o.gapMs} ms`);
  await sleep(o.gapMs);
  await redis.restart();
  const tBack = Date.now();
  scene.log(`redis-restart: redis-server back (pid ${redis.pid}, same port ${redis.port})`);
  const upMs: Record<'A' | 'B', number | undefined> = { A: undefined, B: undefined };
  await scene.until('both servers to re-subscribe', 10_000, async () => {
    const [sa, sb] = await both();
    if (upMs.A === undefined && busOf(sa)?.state === 'up') upMs.A = Date.now() - tBack;
    if (upMs.B === undefined && busOf(sb)?.state === 'up') upMs.B = Date.now() - tBack;
    return upMs.A !== undefined && upMs.B !== undefined ? true : undefined;
  }, 25).catch((e: unknown) => r.incidents.push(e instanceof Error ? e.message : String(e)));
  for (const k of ['A', 'B'] as const) {
    r.checks.push({ name: `server ${k} re-subscribed (bus up) after Redis returned`, bound: `≤ ${CHAOS_BOUNDS.resubscribeMs} ms`, measured: upMs[k] === undefined ? 'never' : `${upMs[k]} ms`, ok: upMs[k] !== undefined && upMs[k]! <= CHAOS_BOUNDS.resubscribeMs });
  }
  await sleep(500);
  const g1 = await gen1.stop();
  const drain = async (target: () => number, c: number): Promise<number> => {
    await scene.until('floodtest to count the written chunks', 4000, () => ((flood.last?.chunks ?? 0) - c >= target() ? true : undefined), 100).catch(() => undefined);
    await sleep(1100); // one more floodtest sample, so a surplus would show too
    return (flood.last?.chunks ?? 0) - c;
  };
  let [a1, b1] = await both();
  const written1 = (): number => n(a1, 'chunksOut') + n(b1, 'chunksOut') - n(a0, 'chunksOut') - n(b0, 'chunksOut');
  const got1 = await drain(written1, c0);
  [a1, b1] = await both();
  const lost = n(busOf(a1), 'lostOnBus') - n(busOf(a0), 'lostOnBus');
  const e503 = g1?.errors.HTTP_503 ?? 0;
  const otherErrors = Object.entries(g1?.errors ?? {}).filter(([k]) => k !== 'HTTP_503');
  r.checks.push({
    name: 'messages published during the gap are counted as lostOnBus',
    bound: 'A bus.lostOnBus = msggen 503s > 0; sent = acked + 503s; no other error',
    measured: `lostOnBus ${fmt(lost)}, 503s ${fmt(e503)}; sent ${fmt(g1?.sent)} = acked ${fmt(g1?.acked)} + failed ${fmt(Msggen.failed(g1))}${otherErrors.length ? `; other errors ${JSON.stringify(Object.fromEntries(otherErrors))}` : ''}`,
    ok: g1 !== undefined && lost > 0 && lost === e503 && g1.sent === g1.acked + e503 && otherErrors.length === 0,
  });
  const accepted1 = n(a1, 'messagesIn') - n(a0, 'messagesIn');
  r.checks.push({
    name: 'gap run: accepted = acked, written = received',
    bound: 'equal',
    measured: `acked ${fmt(g1?.acked)}, A messagesIn ${fmt(accepted1)}; chunks written A+B ${fmt(written1())}, received ${fmt(got1)}`,
    ok: g1 !== undefined && accepted1 === g1.acked && written1() === got1,
  });

  // After recovery: a fresh msggen run; every message sent must arrive (each id has exactly one stream).
  const [a2, b2] = await both();
  const c2 = flood.last?.chunks ?? 0;
  const gen2 = await scene.msggen(a.controlPort, o.msgRate, N, o.afterMs);
  const g2 = await gen2.finish(o.afterMs + 15_000);
  let [a3, b3] = await both();
  const written2 = (): number => n(a3, 'chunksOut') + n(b3, 'chunksOut') - n(a2, 'chunksOut') - n(b2, 'chunksOut');
  const got2 = await drain(() => g2?.sent ?? 0, c2);
  [a3, b3] = await both();
  r.checks.push({
    name: 'none lost after recovery: sent = acked = written = received',
    bound: 'equal, no publish error',
    measured: `sent ${fmt(g2?.sent)}, acked ${fmt(g2?.acked)}, written A+B ${fmt(written2())}, received ${fmt(got2)}${Object.keys(g2?.errors ?? {}).length ? `, errors ${JSON.stringify(g2?.errors)}` : ''}`,
    ok: g2 !== undefined && g2.sent > 0 && g2.sent === g2.acked && g2.acked === written2() && written2() === got2,
  });
  const fl = await flood.stop();
  r.checks.push({ name: 'streams stayed open through the outage', bound: 'floodtest closed = 0', measured: `closed ${fmt(fl?.closed)}, errors ${JSON.stringify(fl?.errors ?? {})}`, ok: fl !== undefined && fl.closed === 0 });
  Object.assign(r.figures, {
    redisPort: redis.port,
    gapAcceptedButUnsubscribed: n(busOf(a1), 'publishedToNobody') - n(busOf(a0), 'publishedToNobody'),
    outagesA: n(busOf(a3), 'outages'),
    outagesB: n(busOf(b3), 'outages'),
    resubscribedA: n(busOf(a3), 'resubscribed'),
    resubscribedB: n(busOf(b3), 'resubscribed'),
  });
}

// ---- restart-storm ----

async function restartStorm(scene: Scene, o: Required<Omit<ChaosOptions, 'log'>>, r: ChaosResult): Promise<void> {
  const N = o.conns;
  const port = await freePort();
  const controlPort = await freePort();
  const s1 = await scene.server('server', [], { port, controlPort });
  const flood = await scene.flood(N, [port], ['--reconnect']);
  await scene.until(`${N} streams`, 120_000, async () => (n(await stats(controlPort), 'connections') >= N ? true : undefined), 200);
  const idleRss = rssKB(s1.child.pid);
  scene.log(`restart-storm: ${N} streams on pid ${s1.child.pid} (RSS ${fmt(idleRss)} KB); SIGTERM`);
  const t0 = Date.now();
  process.kill(s1.child.pid, 'SIGTERM');
  const exit = await Promise.race([s1.child.exited, deadline(CHAOS_BOUNDS.sigtermExitMs + 3000).then(() => 'timeout' as const)]);
  const exitMs = Date.now() - t0;
  if (exit === 'timeout') await stopChild(s1.child, 'SIGKILL', 2000);
  r.checks.push({ name: 'old server exited by itself after SIGTERM', bound: `≤ ${CHAOS_BOUNDS.sigtermExitMs} ms, exit 0`, measured: `${exitMs} ms, exit ${String(exit)}`, ok: exit === 0 && exitMs <= CHAOS_BOUNDS.sigtermExitMs });
  const s2 = await scene.server('server-2', [], { port, controlPort });
  const tReady = Date.now();
  let peak = 0;
  const rssTimer = setInterval(() => (peak = Math.max(peak, rssKB(s2.child.pid) ?? 0)), 50);
  let backMs: number | undefined;
  let sinceSigtermMs: number | undefined;
  try {
    await scene.until(`all ${N} clients back`, CHAOS_BOUNDS.stormBackMs + 30_000, async () => (n(await stats(controlPort), 'connections') >= N ? true : undefined), 100);
    backMs = Date.now() - tReady;
    sinceSigtermMs = Date.now() - t0;
  } catch (e) {
    r.incidents.push(e instanceof Error ? e.message : String(e));
  } finally {
    clearInterval(rssTimer);
    peak = Math.max(peak, rssKB(s2.child.pid) ?? 0);
  }
  r.checks.push({ name: `all ${fmt(N)} clients back after the restart (from the new server's ready line)`, bound: `≤ ${CHAOS_BOUNDS.stormBackMs} ms`, measured: backMs === undefined ? 'never' : `${backMs} ms (${sinceSigtermMs} ms after SIGTERM)`, ok: backMs !== undefined && backMs <= CHAOS_BOUNDS.stormBackMs });
  await sleep(1500);
  const settled = rssKB(s2.child.pid);
  const fl = await flood.stop();
  Object.assign(r.figures, {
    serverDownMs: tReady - t0,
    rssBeforeKB: idleRss ?? 0,
    peakRssDuringStormKB: peak,
    rssAfterStormKB: settled ?? 0,
    floodErrors: JSON.stringify(fl?.errors ?? {}),
    floodClosed: fl?.closed ?? 0,
  });
  r.checks.push({ name: 'server peak RSS during the storm (reported)', bound: 'reported', measured: `${(peak / 1024).toFixed(1)} MiB (before SIGTERM ${((idleRss ?? 0) / 1024).toFixed(1)} MiB, settled ${((settled ?? 0) / 1024).toFixed(1)} MiB)`, ok: peak > 0 });
}

// ---- sigterm ----

async function sigterm(scene: Scene, o: Required<Omit<ChaosOptions, 'log'>>, r: ChaosResult): Promise<void> {
  const N = o.conns;
  const srv = await scene.server('server', []);
  const flood = await scene.flood(N, [srv.port], []);
  await scene.until(`${N} streams`, 60_000, async () => (n(await stats(srv.controlPort), 'connections') >= N && flood.connected >= N ? true : undefined), 200);
  const gen = await scene.msggen(srv.controlPort, o.msgRate, N, 10 * 60_000);
  await sleep(o.flowMs);
  const before = await stats(srv.controlPort);
  scene.log(`sigterm: ${N} streams, ${fmt(n(before, 'chunksOut'))} chunks written so far; SIGTERM pid ${srv.child.pid}`);
  const t0 = Date.now();
  process.kill(srv.child.pid, 'SIGTERM');
  const exit = await Promise.race([srv.child.exited, deadline(CHAOS_BOUNDS.sigtermExitMs + 3000).then(() => 'timeout' as const)]);
  const exitMs = Date.now() - t0;
  r.checks.push({ name: 'server exited by itself', bound: `≤ ${CHAOS_BOUNDS.sigtermExitMs} ms, exit 0`, measured: `${exitMs} ms, exit ${String(exit)}`, ok: exit === 0 && exitMs <= CHAOS_BOUNDS.sigtermExitMs });
  const g = await gen.stop();
  // floodtest's next sample shows every stream closed (it does not reconnect here).
  await scene.until('floodtest to see every stream end', 5000, () => (flood.last && flood.last.connected === 0 && flood.last.closed >= N ? true : undefined), 100).catch(() => undefined);
  const fl = await flood.stop();
  const errs = fl?.errors ?? {};
  const hpe = Object.entries(errs).filter(([k]) => k.startsWith('HPE_'));
  const resets = Object.entries(errs).filter(([k]) => !k.startsWith('HPE_'));
  r.checks.push({
    name: 'every client received the terminating chunk (closed = connected, no error)',
    bound: `closed = ${fmt(N)}, no error`,
    measured: `closed ${fmt(fl?.closed)}${resets.length ? `, errors ${JSON.stringify(Object.fromEntries(resets))}` : ''}`,
    ok: fl !== undefined && fl.closed === N && resets.length === 0,
  });
  r.checks.push({ name: "no half-written chunk seen by floodtest's parser", bound: 'no HPE_* error', measured: hpe.length ? JSON.stringify(Object.fromEntries(hpe)) : 'none', ok: fl !== undefined && hpe.length === 0 });
  r.checks.push({
    name: 'every acknowledged delivery arrived before the end',
    bound: "floodtest chunks ≥ msggen's acked deliveries",
    measured: `chunks ${fmt(fl?.chunks)}, acked deliveries ${fmt(g?.delivered)} (msggen sent ${fmt(g?.sent)}, acked ${fmt(g?.acked)}, errors ${JSON.stringify(g?.errors ?? {})})`,
    ok: fl !== undefined && g !== undefined && fl.chunks >= g.delivered,
  });
  Object.assign(r.figures, { exitMs, chunksBeforeSigterm: n(before, 'chunksOut') });
}

const RUNNERS: Record<ScenarioName, (scene: Scene, o: Required<Omit<ChaosOptions, 'log'>>, r: ChaosResult) => Promise<void>> = {
  'worker-kill': workerKill,
  'redis-restart': redisRestart,
  'restart-storm': restartStorm,
  sigterm,
};

/** Starts one scenario; the handle's `done` resolves with its result (it never rejects). */
export function runChaos(name: ScenarioName, opts: ChaosOptions = {}): ChaosHandle {
  const log = opts.log ?? (() => undefined);
  const o: Required<Omit<ChaosOptions, 'log'>> = {
    conns: opts.conns ?? (name === 'restart-storm' ? 10_000 : 2000),
    msgRate: opts.msgRate ?? 200,
    flowMs: opts.flowMs ?? 2000,
    gapMs: opts.gapMs ?? 2000,
    afterMs: opts.afterMs ?? 3000,
    witnesses: opts.witnesses ?? 40,
    timeLimitMs: opts.timeLimitMs ?? 180_000,
  };
  const scene = new Scene(log);
  const t0 = Date.now();
  const r: ChaosResult = { scenario: name, params: name === 'restart-storm' ? { conns: o.conns } : { conns: o.conns, msgRate: o.msgRate, flowMs: o.flowMs }, checks: [], figures: {}, incidents: [], pass: false, durationMs: 0 };
  if (name === 'redis-restart') Object.assign(r.params, { gapMs: o.gapMs, afterMs: o.afterMs });
  if (name === 'worker-kill') r.params.witnesses = o.witnesses;
  let limitTimer: NodeJS.Timeout | undefined;
  const done = (async (): Promise<ChaosResult> => {
    try {
      await Promise.race([
        RUNNERS[name](scene, o, r),
        new Promise<never>((_, reject) => {
          limitTimer = setTimeout(() => {
            scene.stopped ??= `time limit of ${formatDuration(o.timeLimitMs)} reached`;
            reject(new Stopped(scene.stopped));
          }, o.timeLimitMs);
        }),
      ]);
    } catch (e) {
      r.incidents.push(e instanceof Error ? e.message : String(e));
    } finally {
      clearTimeout(limitTimer);
      scene.stopped ??= 'finished';
      await scene.cleanup();
    }
    r.durationMs = Date.now() - t0;
    r.pass = r.incidents.length === 0 && r.checks.length > 0 && r.checks.every((c) => c.ok);
    return r;
  })();
  return {
    done,
    stop(reason = 'stopped by the user') {
      scene.stopped ??= reason;
      // Stopping the children makes whatever the scenario awaits fail fast.
      for (const c of scene.children) if (!c.hasExited()) void stopChild(c, 'SIGTERM', 2000);
      return done;
    },
  };
}

/** The result as a Markdown table with a PASS/FAIL line. */
export function formatChaos(r: ChaosResult): string {
  const out = [`# c1m chaos ${r.scenario}: ${Object.entries(r.params).map(([k, v]) => `${k} ${fmt(v)}`).join(', ')}`, ''];
  out.push('| check | bound | measured | result |', '|---|---|---|---|');
  for (const c of r.checks) out.push(`| ${c.name} | ${c.bound} | ${c.measured} | ${c.ok ? 'pass' : '**FAIL**'} |`);
  for (const i of r.incidents) out.push(`| incident | | ${i} | **FAIL** |`);
  const figs = Object.entries(r.figures);
  if (figs.length) out.push('', figs.map(([k, v]) => `${k}: ${typeof v === 'number' ? fmt(v) : v}`).join('; '));
  out.push('', `**${r.pass ? 'PASS' : 'FAIL'}** (${(r.durationMs / 1000).toFixed(1)} s)`, '');
  return out.join('\n');
}

export const CHAOS_HELP = `c1m chaos <scenario> [flags]: a scripted fault, bounded in time, with a pass/fail table (exit 0 pass, 1 fail)

Scenarios:
  worker-kill    comet-server --workers 2, floodtest --reconnect, msggen; SIGKILL one worker: replaced ≤ 2 s,
                 its clients back ≤ 10 s, the other worker's clients lose nothing (per id, witness streams)
  redis-restart  two servers on one redis-server (started on a free port); kill Redis, restart it on the same port:
                 both re-subscribe ≤ 2 s, messages of the gap counted as lostOnBus, none lost after
  restart-storm  N clients with --reconnect on one server; SIGTERM it, start it again on the same port: all back
                 ≤ 60 s, peak RSS reported
  sigterm        SIGTERM the server under load: every client gets the terminating chunk, no HPE_* error

Flags:
  --conns N        flood clients (default 2000; restart-storm 10000; 1 to 18000)
  --msg-rate R     msggen msg/s (default 200; 1 to 5000)
  --flow D         messages flow this long before the fault (default 2s)
  --gap D          redis-restart: Redis down this long (default 2s)
  --after D        redis-restart: the after-recovery run (default 3s)
  --witnesses N    worker-kill: witness streams (default 40; 2 to 1000)
  --time-limit D   stop and fail after D (default 3m)
  --json           the result as JSON instead of the table
`;

/** `c1m chaos` flags → a run → the table; returns the exit code. */
export async function chaosCmd(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      conns: { type: 'string' },
      'msg-rate': { type: 'string' },
      flow: { type: 'string' },
      gap: { type: 'string' },
      after: { type: 'string' },
      witnesses: { type: 'string' },
      'time-limit': { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(CHAOS_HELP);
    return 0;
  }
  const name = positionals[0];
  if (positionals.length !== 1 || !SCENARIOS.includes(name as ScenarioName)) {
    throw new FlagError('chaos', `expected one scenario (allowed: ${SCENARIOS.join(', ')}), got ${positionals.length ? positionals.join(' ') : 'none'}`);
  }
  const opts: ChaosOptions = { log: (l) => void process.stderr.write(`${l}\n`) };
  if (values.conns !== undefined) opts.conns = parseIntFlag('--conns', values.conns, 1, 18_000);
  if (values['msg-rate'] !== undefined) opts.msgRate = parseIntFlag('--msg-rate', values['msg-rate'], 1, 5000);
  if (values.flow !== undefined) opts.flowMs = parseDuration('--flow', values.flow, 100, 600_000);
  if (values.gap !== undefined) opts.gapMs = parseDuration('--gap', values.gap, 100, 600_000);
  if (values.after !== undefined) opts.afterMs = parseDuration('--after', values.after, 500, 600_000);
  if (values.witnesses !== undefined) opts.witnesses = parseIntFlag('--witnesses', values.witnesses, 2, 1000);
  if (values['time-limit'] !== undefined) opts.timeLimitMs = parseDuration('--time-limit', values['time-limit'], 1000, 3_600_000);
  const h = runChaos(name as ScenarioName, opts);
  const { onInterrupt } = await import('../lib/signals.js');
  const off = onInterrupt(() => void h.stop('stopped by Ctrl-C'), opts.log);
  try {
    const r = await h.done;
    process.stdout.write(values.json ? JSON.stringify(r, null, 2) + '\n' : formatChaos(r));
    return r.pass ? 0 : 1;
  } finally {
    off();
  }
}
