// How long one memlog sample takes with up to a million real connections on this host (a script, not a test).
//
//   flock /tmp/c1m-bench.lock node dist/memlog/bench-1m.js [--conns 1000000] [--per 18000] [--base-port 21000]
//       [--addrs 4] [--runs 5] [--record 20s] [--proc-runs 1] [--settle 30s]
//
// It builds a server tree like a comet server with workers: one root process and ceil(conns / per) children, child i
// listening on 0.0.0.0:(base-port + i) and holding every connection it accepts (paused, nothing read or written).
// As many client processes (outside the tree) each open `per` connections to one child, spread over destination
// addresses 127.0.0.1..127.0.0.<addrs> so no source/destination pair runs short of ephemeral ports. Every process
// stays under the 20,000 open-files limit. Then it times, on the real kernel tables: the netlink dump, the /proc
// text scan, the fd → inode ownership pass (cold and warm), whole recorder samples, and a recorder running at a 1 s
// interval for --record. Prints tables; ends every process it started (by pid) and stops by itself within 15 min.

import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseDuration, parseIntFlag } from '../lib/flags.js';
import { InodeTable, SocketOwnership, FLAG_COUNTED } from './tcptable.js';
import { loadSockDiag, NetlinkSource, ProcSource, nativeFdReader } from './netlink.js';
import { processTree, readStat, readPssKb } from './proc.js';
import { startRecorder } from './recorder.js';
import { timeIt, formatTimes } from './timing.js';

const SELF = fileURLToPath(import.meta.url);
const LEAN = ['--max-semi-space-size=1', '--optimize-for-size'];
const DEADLINE_MS = 15 * 60_000;
/** Connection attempts in flight per client process. */
const INFLIGHT = 256;

const { values } = parseArgs({
  strict: true,
  options: {
    role: { type: 'string' },
    port: { type: 'string' },
    conns: { type: 'string', default: '1000000' },
    per: { type: 'string', default: '18000' },
    'base-port': { type: 'string', default: '21000' },
    addrs: { type: 'string', default: '4' },
    runs: { type: 'string', default: '5' },
    'proc-runs': { type: 'string', default: '1' },
    record: { type: 'string', default: '20s' },
    settle: { type: 'string', default: '30s' },
  },
});

const say = (line: string): void => void process.stdout.write(line + '\n');

/** Every child process ends itself at the deadline too (paused sockets alone would not keep a client alive). */
const stayUntilDeadline = (): void => void setTimeout(() => process.exit(0), DEADLINE_MS);

/** Tree root: forks the holders, reports when all listen, keeps running until killed. */
async function root(base: number, procs: number): Promise<void> {
  const kids: ChildProcess[] = [];
  process.on('SIGTERM', () => {
    for (const k of kids) k.kill('SIGKILL');
    process.exit(0);
  });
  let ready = 0;
  for (let i = 0; i < procs; i++) {
    const k = spawn(process.execPath, [...LEAN, SELF, '--role', 'holder', '--port', String(base + i)], { stdio: ['ignore', 'pipe', 'inherit'] });
    kids.push(k);
    createInterface({ input: k.stdout! }).on('line', (l) => {
      if (l === 'listening' && ++ready === procs) say(`ready ${kids.map((c) => c.pid).join(',')}`);
      else if (l.startsWith('error')) say(l);
    });
  }
}

/** One holder: accepts and keeps every connection, reading nothing. */
function holder(port: number): void {
  const held: net.Socket[] = [];
  const server = net.createServer({ pauseOnConnect: true }, (s) => {
    s.on('error', () => {});
    held.push(s);
  });
  server.on('error', (err) => say(`error port ${port}: ${(err as NodeJS.ErrnoException).code}`));
  server.listen({ port, host: '0.0.0.0', backlog: 4096 }, () => say('listening'));
}

/** One client process: opens `count` connections to `port`, reports, holds them until killed. */
function client(port: number, count: number, addrs: number): void {
  const held: net.Socket[] = [];
  let started = 0;
  let ok = 0;
  let failed = 0;
  const errors = new Map<string, number>();
  const t0 = performance.now();
  const next = (): void => {
    while (started < count && started - ok - failed < INFLIGHT) {
      const host = `127.0.0.${1 + (started % addrs)}`;
      started++;
      const s = net.connect({ port, host });
      s.on('error', (err: NodeJS.ErrnoException) => {
        failed++;
        errors.set(err.code ?? 'ERR', (errors.get(err.code ?? 'ERR') ?? 0) + 1);
        next();
      });
      s.once('connect', () => {
        ok++;
        s.pause();
        held.push(s);
        next();
      });
    }
    if (ok + failed === count) say(`done ${ok} ${failed} ${((performance.now() - t0) / 1000).toFixed(1)} ${JSON.stringify(Object.fromEntries(errors))}`);
  };
  next();
}

const fmt = (ms: number[]): string => formatTimes(ms, 0);
const memAvailMB = (): number => Math.round(Number(/MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))![1]) / 1024);
const sockstat = (): string => readFileSync('/proc/net/sockstat', 'utf8').split('\n').find((l) => l.startsWith('TCP:'))!;

async function main(): Promise<void> {
  const conns = parseIntFlag('--conns', values.conns!, 1, 1_000_000);
  const per = parseIntFlag('--per', values.per!, 100, 19_000);
  const base = parseIntFlag('--base-port', values['base-port']!, 1024, 65000);
  const addrs = parseIntFlag('--addrs', values.addrs!, 1, 200);
  const runs = parseIntFlag('--runs', values.runs!, 1, 50);
  const procRuns = parseIntFlag('--proc-runs', values['proc-runs']!, 0, 20);
  const recordMs = parseDuration('--record', values.record!, 0, 300_000);
  const settleMs = parseDuration('--settle', values.settle!, 0, 300_000);
  const procs = Math.ceil(conns / per);
  if (base + procs - 1 > 65535) throw new Error(`--base-port ${base} + ${procs} holders passes port 65535`);
  const { addon, reason } = loadSockDiag();
  if (!addon) throw new Error(`the netlink addon is needed here: ${reason}`);

  const started: ChildProcess[] = [];
  const killAll = (): void => {
    for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  };
  const deadline = setTimeout(() => {
    process.stderr.write('bench-1m: deadline reached, stopping\n');
    killAll();
    process.exit(1);
  }, DEADLINE_MS);
  process.on('SIGINT', () => {
    killAll();
    process.exit(130);
  });

  const load0 = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const avail0 = memAvailMB();
  process.stderr.write(`bench-1m: ${conns} connections, ${procs} holders on ports ${base}-${base + procs - 1}, ${procs} client processes; load ${load0}, MemAvailable ${avail0} MB\n`);
  const tree = spawn(process.execPath, [SELF, '--role', 'root', '--base-port', String(base), '--conns', String(procs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  started.push(tree);
  try {
    const pids = await new Promise<number[]>((resolve, reject) => {
      createInterface({ input: tree.stdout! }).on('line', (l) => {
        if (l.startsWith('ready ')) resolve(l.slice(6).split(',').map(Number));
        else if (l.startsWith('error')) reject(new Error(l));
      });
      tree.once('exit', () => reject(new Error('tree root exited')));
    });
    const ports = Array.from({ length: procs }, (_, i) => base + i);

    const t0 = performance.now();
    const dones: Promise<[number, number]>[] = [];
    for (let i = 0; i < procs; i++) {
      const count = Math.min(per, conns - i * per);
      const c = spawn(process.execPath, [...LEAN, SELF, '--role', 'client', '--port', String(base + i), '--conns', String(count), '--addrs', String(addrs)], { stdio: ['ignore', 'pipe', 'inherit'] });
      started.push(c);
      dones.push(new Promise((resolve, reject) => {
        createInterface({ input: c.stdout! }).on('line', (l) => {
          const m = /^done (\d+) (\d+) ([\d.]+) (.*)$/.exec(l);
          if (m) {
            if (Number(m[2]) > 0) process.stderr.write(`client ${i}: ${m[2]} failed ${m[4]}\n`);
            resolve([Number(m[1]), Number(m[2])]);
          }
        });
        c.once('exit', (code) => reject(new Error(`client ${i} exited (${code})`)));
      }));
    }
    const results = await Promise.all(dones);
    const opened = results.reduce((n, [ok]) => n + ok, 0);
    const failed = results.reduce((n, [, f]) => n + f, 0);
    const rampS = (performance.now() - t0) / 1000;

    // Wait until the holders have accepted them all: the netlink count is the ground truth.
    const source = new NetlinkSource(addon, ports);
    let established = 0;
    for (let tries = 0; tries < 300; tries++) {
      established = source.fill(new InodeTable(1 << 20));
      if (established >= opened) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    // Let the ramp's CPU backlog drain before timing anything.
    await new Promise((r) => setTimeout(r, settleMs));
    const treePids = processTree(tree.pid!);
    say(`# ${opened} connections opened (${failed} failed) in ${rampS.toFixed(1)} s = ${Math.round(opened / rampS)}/s; ${established} established on ports ${base}-${base + procs - 1}; ` +
      `tree ${treePids.length} processes (holders ${pids.length}); ${sockstat()}; MemAvailable ${avail0} → ${memAvailMB()} MB`);
    say(`# node ${process.version}, load before ${load0}, now ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
    say('step\tcount\ttime');

    const table = new InodeTable(1 << 22);
    const nl = timeIt(runs, () => {
      table.clear();
      return source.fill(table);
    });
    say(`netlink sock_diag dump (filtered in the kernel: ESTABLISHED, local port in range)\t${nl.result}\t${fmt(nl.ms)}`);
    const procTable = new InodeTable(1 << 22);
    const proc = new ProcSource(tree.pid!, ports);
    if (procRuns > 0) {
      const pr = timeIt(procRuns, () => {
        procTable.clear();
        return proc.fill(procTable);
      });
      say(`/proc/net/tcp + tcp6 text scan (every socket of the host)\t${pr.result}\t${fmt(pr.ms)}`);
    }
    const procsOf = (): { pid: number; startTime: number }[] => treePids.map((pid) => ({ pid, startTime: readStat(pid)!.startTime }));
    const list = procsOf();
    const fdReader = nativeFdReader(addon);
    const cold = timeIt(Math.min(runs, 3), () => {
      table.clearFlag(FLAG_COUNTED);
      return new SocketOwnership(fdReader).count(list, table);
    });
    say(`ownership cold (list + readlink every fd of the tree, addon)\t${cold.result.established} of ${cold.result.fds} fds\t${fmt(cold.ms)}`);
    const own = new SocketOwnership(fdReader);
    table.clearFlag(FLAG_COUNTED);
    own.count(list, table);
    const warm = timeIt(runs, () => {
      table.clearFlag(FLAG_COUNTED);
      return own.count(list, table);
    });
    say(`ownership warm (unchanged processes not listed; cached links)\t${warm.result.established} (listed ${warm.result.listed} of ${list.length} processes, readlinks ${warm.result.readlinks})\t${fmt(warm.ms)}`);
    const relist = timeIt(Math.min(runs, 3), () => {
      let n = 0;
      for (const { pid } of list) n += fdReader.listFds(pid).length;
      return n;
    });
    say(`for comparison: listing every fd directory of the tree (addon getdents64)\t${relist.result} fds\t${fmt(relist.ms)}`);

    const walk = timeIt(runs, () => processTree(tree.pid!).length);
    say(`process tree walk (/proc children files)\t${walk.result} processes\t${fmt(walk.ms)}`);
    const pss = timeIt(runs, () => treePids.reduce((n, pid) => n + (readPssKb(pid) ?? 0), 0));
    say(`PSS of every tree process (smaps_rollup)\t${Math.round(pss.result / 1024)} MB\t${fmt(pss.ms)}`);
    const rec = startRecorder({ pid: tree.pid!, ports, intervalMs: 3_600_000, out: null, sockets: 'netlink' });
    const whole = timeIt(runs, () => rec.sampleNow()!.conns);
    say(`whole recorder sample, netlink (stat, PSS of ${treePids.length} processes, tree, sockstat, connections)\t${whole.result}\t${fmt(whole.ms)}`);
    await rec.stop();

    if (recordMs > 0) {
      const notices: string[] = [];
      const at: number[] = [];
      const rec1 = startRecorder({
        pid: tree.pid!, ports, intervalMs: 1000, out: null, sockets: 'netlink',
        log: (l) => notices.push(l), onRow: () => at.push(performance.now()),
      });
      await new Promise((r) => setTimeout(r, recordMs));
      await rec1.stop();
      const conns1 = rec1.rows.map((r) => r.conns);
      const gaps = at.slice(1).map((t, i) => t - at[i]!);
      say(`recorder at --interval 1s for ${recordMs / 1000} s, netlink\t${rec1.rows.length} rows, conns ${Math.min(...conns1)}-${Math.max(...conns1)}\t` +
        `gaps between rows ${gaps.length ? fmt(gaps) : '-'}; notices: ${notices.length ? notices.join(' | ') : 'none'}`);
    }
    say(`# after: load ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}, MemAvailable ${memAvailMB()} MB`);
  } finally {
    clearTimeout(deadline);
    killAll();
  }
}

if (values.role) stayUntilDeadline();
if (values.role === 'root') await root(parseIntFlag('--base-port', values['base-port']!, 1, 65535), parseIntFlag('--conns', values.conns!, 1, 1000));
else if (values.role === 'holder') holder(parseIntFlag('--port', values.port!, 1, 65535));
else if (values.role === 'client') client(parseIntFlag('--port', values.port!, 1, 65535), parseIntFlag('--conns', values.conns!, 1, 19_000), parseIntFlag('--addrs', values.addrs!, 1, 200));
else await main();
