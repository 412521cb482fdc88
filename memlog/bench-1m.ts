// How long one memlog sample takes with up to a million real connections (a script, not a test).
//
//   flock /tmp/c1m-bench.lock node dist/memlog/bench-1m.js [--conns 1000000] [--per 18000] [--base-port 21000]
//       [--one-port] [--clients-netns] [--child-ehash N] [--addrs auto] [--runs 5] [--record 20s] [--proc-runs 1]
//       [--settle 30s]
//
// It builds a server tree like a comet server with workers: one root process and ceil(conns / per) holder children
// that keep every connection they accept (paused, nothing read or written). Holder i listens on 0.0.0.0:(base-port
// + i), or with --one-port all of them accept from one listening socket on base-port, as node:cluster workers
// share a server's port (in turns, `per` each). As many client processes (outside the tree) each open `per`
// connections, spread over enough destination addresses that no source/destination pair runs short of ephemeral
// ports. Every process stays under the 20,000 open-files limit. Then a measuring process times, on the real kernel
// tables: the netlink dump (walk only, and walk + fill, through a filter program and through the port in the
// request header), the bpf TCP iterator (walk only, and walk + an inode written per match, by two ways to the
// inode), the /proc text scan, fd → inode ownership (cold and warm), whole recorder samples with netlink and with
// bpf, and a recorder at a 1 s interval for --record with each. Prints tables; ends every process it started (by pid) and stops by
// itself within 15 min.
//
// Placement. By default everything is on loopback in the host's network namespace, so the host's TCP hash table
// holds both ends of every connection (2M sockets for 1M connections) and the dump walks all of them. On a real
// server the clients are other hosts and its table holds only its own ends. --clients-netns (root) rebuilds that:
//
//   host ── unshare --net ──▶ namespace A: this script's orchestrator and the client processes
//                               sets A's own net.ipv4.tcp_child_ehash_entries (per namespace: it shapes only
//                               namespaces created from A; the host's settings are not touched)
//                             ── unshare --net ──▶ namespace B: the holder tree, with its own TCP hash table
//                                                  (tcp_ehash_entries = --child-ehash) and the measuring process
//                                                  (memlog must share the holders' namespace), entered by nsenter
//   A and B are joined by a veth pair: c1m-a 10.201.0.1/16 in A, c1m-b with 10.201.1.1.. (--addrs) in B.
//
// Nothing outlives the run: the namespaces have no names (no `ip netns add`), so they and the veth pair go away
// with their last process; no host interface or sysctl is created or changed.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseDuration, parseIntFlag, parsePortList } from '../lib/flags.js';
import { InodeTable, SocketOwnership, FLAG_COUNTED } from './tcptable.js';
import { AF_INET, TCPF_ESTABLISHED, loadSockDiag, BpfSource, NetlinkSource, ProcSource, kernelLayout, nativeFdReader, portFilter, type SockDiag, type SourceName } from './netlink.js';
import { processTree, readStat, readPssKb } from './proc.js';
import { startRecorder } from './recorder.js';
import { timeIt, formatTimes } from './timing.js';

const SELF = fileURLToPath(import.meta.url);
const LEAN = ['--max-semi-space-size=1', '--optimize-for-size'];
const DEADLINE_MS = 15 * 60_000;
/** Connection attempts in flight per client process. */
const INFLIGHT = 256;
/**
 * With --one-port, attempts in flight over all client processes. One process accepts at a time there, and an
 * overflowing accept queue loses connections silently: the kernel answers with a SYN cookie, drops the cookie's ACK
 * while the queue is full, and an idle client never sends again (at 14,336 in flight, 11.5% of a million were lost).
 */
const INFLIGHT_ONE_PORT = 2048;
/**
 * Connections per source/destination address pair and port. connect() tries ports of one parity first (half of
 * the 28,232 ephemeral ports): past ~13,500 on one pair each connect scanned the taken half and a one-port ramp
 * fell from thousands to ~180 connections/s.
 */
const PER_PAIR = 8_000;
/** The veth pair of --clients-netns: A's address, and B's addresses 10.201.1.1 upwards. */
const NET_A = '10.201.0.1';
const netB = (i: number): string => `10.201.${1 + (i >> 8)}.${(i & 255) + 1}`;
const VETH_A = 'c1m-a';
const VETH_B = 'c1m-b';

const { values } = parseArgs({
  strict: true,
  options: {
    role: { type: 'string' },
    port: { type: 'string' },
    ports: { type: 'string' },
    host: { type: 'string' },
    'tree-pid': { type: 'string' },
    inflight: { type: 'string', default: String(INFLIGHT) },
    expect: { type: 'string' },
    conns: { type: 'string', default: '1000000' },
    per: { type: 'string', default: '18000' },
    'base-port': { type: 'string', default: '21000' },
    'one-port': { type: 'boolean', default: false },
    'clients-netns': { type: 'boolean', default: false },
    'child-ehash': { type: 'string' },
    'host-netns': { type: 'string' },
    addrs: { type: 'string', default: 'auto' },
    runs: { type: 'string', default: '5' },
    'proc-runs': { type: 'string', default: '1' },
    record: { type: 'string', default: '20s' },
    settle: { type: 'string', default: '30s' },
  },
});

const say = (line: string): void => void process.stdout.write(line + '\n');
const note = (line: string): void => void process.stderr.write(`bench-1m: ${line}\n`);

/** Every child process ends itself at the deadline too (paused sockets alone would not keep a client alive). */
const stayUntilDeadline = (): void => void setTimeout(() => process.exit(0), DEADLINE_MS);

/**
 * Tree root: forks the holders, reports when all are up, runs until killed. With --one-port the holders take turns
 * on one listening socket: holder 0 opens it, and a holder that has `per` connections hands it back through the
 * root to the next one. (All of them polling it at once, as a shared listener would, wakes every holder for each
 * connection: that ramp ran at ~1,100 connections/s instead of ~10,000.)
 */
async function root(base: number, procs: number, onePort: boolean, per: number): Promise<void> {
  const kids: ChildProcess[] = [];
  process.on('SIGTERM', () => {
    for (const k of kids) k.kill('SIGKILL');
    process.exit(0);
  });
  let up = 0;
  let turn = 0;
  for (let i = 0; i < procs; i++) {
    const args = ['--role', 'holder', '--per', String(per), ...(!onePort ? ['--port', String(base + i)] : i === 0 ? ['--port', String(base), '--one-port'] : ['--one-port'])];
    const k = spawn(process.execPath, [...LEAN, SELF, ...args], { stdio: ['ignore', 'pipe', 'inherit', ...(onePort ? ['ipc' as const] : [])] });
    kids.push(k);
    // A raw handle (not a net.Server) is not polled here: the root never accepts.
    k.on('message', (m, handle) => {
      if (m !== 'full' || !handle || ++turn >= procs) return;
      const h = handle as unknown as { close(): void };
      kids[turn]!.send('listen', handle as never, () => h.close());
    });
    createInterface({ input: k.stdout! }).on('line', (l) => {
      if (l === 'listening' && ++up === procs) say(`ready ${kids.map((c) => c.pid).join(',')}`);
      else if (l.startsWith('error')) say(l);
    });
  }
}

/** One holder: keeps every connection it accepts, reading nothing; with --one-port, `per` at most, then passes the listener on. */
function holder(port: number | null, onePort: boolean, per: number): void {
  const held: net.Socket[] = [];
  const server = net.createServer({ pauseOnConnect: true }, (s) => {
    s.on('error', () => {});
    held.push(s);
    if (onePort && held.length === per) {
      // Hand the listening socket on; this copy closes once it is sent (a few more may arrive until then).
      process.send!('full', (server as unknown as { _handle: net.Server })._handle, () => server.close());
    }
  });
  server.on('error', (err) => say(`error port ${port}: ${(err as NodeJS.ErrnoException).code}`));
  if (port !== null) {
    server.listen({ port, host: '0.0.0.0', backlog: 4096 }, () => say('listening'));
    return;
  }
  say('listening'); // up, and waits for its turn
  process.on('message', (m, handle) => {
    // The backlog again: listen() on a handle otherwise sets Node's default 511 on the shared socket.
    if (m === 'listen' && handle) server.listen(handle as never, 4096);
  });
}

/** One client process: opens `count` connections to `port` on `hosts` in turn, reports, holds them until killed. */
function client(port: number, count: number, hosts: string[], inflight: number): void {
  const held: net.Socket[] = [];
  let started = 0;
  let ok = 0;
  let failed = 0;
  const errors = new Map<string, number>();
  const t0 = performance.now();
  const next = (): void => {
    while (started < count && started - ok - failed < inflight) {
      const host = hosts[started % hosts.length]!;
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
/** The TCP line of a network namespace's sockstat: `inuse` counts that namespace's sockets. */
const sockstat = (pid: number | 'self' = 'self'): string =>
  readFileSync(`/proc/${pid}/net/sockstat`, 'utf8').split('\n').find((l) => l.startsWith('TCP:'))!.replace(/^TCP: /, '');
const loadavg = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const netNs = (pid: number | 'self'): string => readlinkSync(`/proc/${pid}/ns/net`);
/** This namespace's TCP hash table size; negative when the namespace shares the host's table. */
const ehashEntries = (): number => Number(readFileSync('/proc/sys/net/ipv4/tcp_ehash_entries', 'utf8').trim());

/** Runs a command to completion; throws with its stderr when it fails. */
function run(cmd: string, args: string[], input?: string): void {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', stdio: ['pipe', 'ignore', 'pipe'] });
  if (r.error || r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.error?.message ?? r.stderr.trim()}`);
}

/**
 * Times several functions `runs` times each, taking turns (a, b, c, a, b, c, ...), so a drift in the machine's
 * load lands on all of them alike.
 */
function timeTurns<T>(runs: number, fns: (() => T)[]): { ms: number[]; result: T }[] {
  const out = fns.map(() => ({ ms: [] as number[], result: undefined as T }));
  for (let r = 0; r < runs; r++) {
    fns.forEach((fn, i) => {
      const t = performance.now();
      out[i]!.result = fn();
      out[i]!.ms.push(performance.now() - t);
    });
  }
  return out;
}

interface Plan {
  conns: number;
  per: number;
  base: number;
  procs: number;
  onePort: boolean;
  netns: boolean;
  addrs: number;
  childEhash: number;
  /** The host's network namespace (net:[inode]), which the orchestrator must not be in to set sysctls. */
  hostNetns: string;
}

/** Namespace A (or the host, on loopback): starts the tree and the clients, then the measuring process next to the tree. */
async function orchestrate(plan: Plan, measureArgs: string[]): Promise<void> {
  const { conns, per, base, procs, onePort, netns, addrs } = plan;
  const started: ChildProcess[] = [];
  const killAll = (): void => {
    for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  };
  const deadline = setTimeout(() => {
    note('deadline reached, stopping');
    killAll();
    process.exit(1);
  }, DEADLINE_MS);
  process.on('SIGINT', () => {
    killAll();
    process.exit(130);
  });
  process.on('SIGTERM', () => {
    killAll();
    process.exit(143);
  });

  const load0 = loadavg();
  const avail0 = memAvailMB();
  if (netns) {
    // Only ever inside our own unnamed namespace: the host's /proc/sys stays untouched.
    if (!plan.hostNetns.startsWith('net:[') || netNs('self') === plan.hostNetns) throw new Error('refusing to set tcp_child_ehash_entries in the host network namespace');
    run('ip', ['link', 'set', 'lo', 'up']);
    writeFileSync('/proc/sys/net/ipv4/tcp_child_ehash_entries', String(plan.childEhash));
  }
  const portsText = onePort ? `port ${base}, taken in turns by ${procs} holders` : `ports ${base}-${base + procs - 1}`;
  note(`${conns} connections, ${procs} holders on ${portsText}, ${procs} client processes, ${addrs} destination addresses; ` +
    `${netns ? 'clients in namespace A, holders in namespace B' : 'loopback, host namespace'}; load ${load0}, MemAvailable ${avail0} MB`);
  const rootCmd = [SELF, '--role', 'root', '--base-port', String(base), '--conns', String(procs), '--per', String(per), ...(onePort ? ['--one-port'] : [])];
  const tree = netns
    ? spawn('unshare', ['--net', '--', process.execPath, ...rootCmd], { stdio: ['ignore', 'pipe', 'inherit'] })
    : spawn(process.execPath, rootCmd, { stdio: ['ignore', 'pipe', 'inherit'] });
  started.push(tree);
  try {
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: tree.stdout! }).on('line', (l) => {
        if (l.startsWith('ready ')) resolve();
        else if (l.startsWith('error')) reject(new Error(l));
      });
      tree.once('exit', () => reject(new Error('tree root exited')));
    });
    let hosts = Array.from({ length: addrs }, (_, i) => `127.0.0.${1 + i}`);
    let setup = 'placement loopback: holders and clients in the host network namespace (one TCP hash table holds both ends)';
    if (netns) {
      // `unshare` exec'd node, so the root's pid is B's first process: its /proc entry names namespace B.
      const nsB = `/proc/${tree.pid}/ns/net`;
      run('ip', ['link', 'add', VETH_A, 'type', 'veth', 'peer', 'name', VETH_B, 'netns', String(tree.pid)]);
      run('ip', ['-batch', '-'], `addr add ${NET_A}/16 dev ${VETH_A}\nlink set ${VETH_A} up\n`);
      hosts = Array.from({ length: addrs }, (_, i) => netB(i));
      const batch = ['link set lo up', ...hosts.map((h) => `addr add ${h}/16 dev ${VETH_B}`), `link set ${VETH_B} up`];
      run('nsenter', [`--net=${nsB}`, '--', 'ip', '-batch', '-'], batch.join('\n') + '\n');
      setup = `placement clients-netns: clients in namespace A (${netNs('self')}, the host's TCP hash table), holders and memlog in namespace B ` +
        `(${readlinkSync(nsB)}, its own table: A's tcp_child_ehash_entries=${plan.childEhash}); veth ${VETH_A} ${NET_A}/16 <-> ${VETH_B} ${hosts[0]}-${hosts[hosts.length - 1]}/16 (${addrs} addresses)`;
    }
    say(`# ${setup}`);

    const t0 = performance.now();
    const dones: Promise<[number, number]>[] = [];
    for (let i = 0; i < procs; i++) {
      const count = Math.min(per, conns - i * per);
      const port = onePort ? base : base + i;
      const c = spawn(process.execPath, [...LEAN, SELF, '--role', 'client', '--port', String(port), '--conns', String(count), '--host', hosts.join(','), '--inflight', String(onePort ? Math.max(8, Math.floor(INFLIGHT_ONE_PORT / procs)) : INFLIGHT)], { stdio: ['ignore', 'pipe', 'inherit'] });
      started.push(c);
      dones.push(new Promise((resolve, reject) => {
        createInterface({ input: c.stdout! }).on('line', (l) => {
          const m = /^done (\d+) (\d+) ([\d.]+) (.*)$/.exec(l);
          if (m) {
            if (Number(m[2]) > 0) note(`client ${i}: ${m[2]} failed ${m[4]}`);
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
    say(`# ${opened} connections opened (${failed} failed) in ${rampS.toFixed(1)} s = ${Math.round(opened / rampS)}/s; ${procs} holders on ${portsText}; ` +
      `MemAvailable ${avail0} -> ${memAvailMB()} MB; load before ${load0}`);
    say(`# TCP sockstat: host ${sockstat(1)}` + (netns ? ` | namespace A (clients) ${sockstat('self')} | namespace B (holders) ${sockstat(tree.pid!)}` : '') +
      ' (inuse is per namespace; orphan, alloc and mem are host-wide)');

    const measureCmd = [SELF, '--role', 'measure', '--tree-pid', String(tree.pid), '--expect', String(opened),
      '--ports', onePort ? String(base) : `${base}-${base + procs - 1}`, '--base-port', String(base), ...measureArgs];
    const measure = netns
      ? spawn('nsenter', [`--net=/proc/${tree.pid}/ns/net`, '--', process.execPath, ...measureCmd], { stdio: 'inherit' })
      : spawn(process.execPath, measureCmd, { stdio: 'inherit' });
    started.push(measure);
    const code = await new Promise<number>((resolve) => measure.once('exit', (c) => resolve(c ?? 1)));
    if (code !== 0) throw new Error(`the measuring process exited with ${code}`);
  } finally {
    clearTimeout(deadline);
    killAll();
  }
}

/** The measuring process, in the holders' network namespace: waits for every connection, then times each step. */
async function measure(addon: SockDiag): Promise<void> {
  const treeRoot = parseIntFlag('--tree-pid', values['tree-pid']!, 1, 4_194_304);
  const expect = parseIntFlag('--expect', values.expect!, 0, 1_000_000);
  const ports = parsePortList('--ports', values.ports!);
  const runs = parseIntFlag('--runs', values.runs!, 1, 50);
  const procRuns = parseIntFlag('--proc-runs', values['proc-runs']!, 0, 20);
  const recordMs = parseDuration('--record', values.record!, 0, 300_000);
  const settleMs = parseDuration('--settle', values.settle!, 0, 300_000);
  // Below every holder port and every ephemeral port: nothing listens or connects from there.
  const unused = parseIntFlag('--base-port', values['base-port']!, 1024, 65000) - 1;

  // Wait until the holders have accepted them all: the netlink count is the ground truth.
  const source = new NetlinkSource(addon, ports);
  // A dump takes ~1 s at a million, so the wait is bounded in time: 60 s, or 10 s without progress.
  let established = 0;
  const waitStart = performance.now();
  let lastGain = waitStart;
  for (;;) {
    const n = source.fill(new InodeTable(1 << 20));
    if (n > established) lastGain = performance.now();
    established = n;
    if (established >= expect || performance.now() - waitStart > 60_000 || performance.now() - lastGain > 10_000) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  if (established < expect) say(`# WARNING: ${expect - established} of the clients' connections have no established server end (lost in the ramp)`);
  // Let the ramp's CPU backlog drain before timing anything.
  await new Promise((r) => setTimeout(r, settleMs));
  const treePids = processTree(treeRoot);
  const ehash = ehashEntries();
  say(`# measuring in ${netNs('self')}: ${established} established on the watched ports; tree ${treePids.length} processes; ` +
    `tcp_ehash_entries here ${ehash}${ehash < 0 ? " (shares the host's table)" : ''}; TCP ${sockstat()}`);
  say(`# node ${process.version}, 2 cores; load now ${loadavg()}`);
  say('step\tcount\ttime');

  // The kernel's dump at its rawest: IPv4, ESTABLISHED. A port nobody uses times the walk over the table alone
  // (each socket's state, family and port checked, the program run where there is one, nothing filled); the
  // watched ports add a record filled for each match. Program and header are timed in turns.
  const est = (bc: Uint8Array | null, sport = 0) => () => addon.dump(AF_INET, TCPF_ESTABLISHED, bc, sport).length;
  const single = ports.length === 1;
  const steps: [string, () => number][] = [
    [`dump walk only: filter program, port ${unused} (nobody's)`, est(portFilter([unused]))],
    [`dump walk only: port ${unused} in the request header, no program`, est(null, unused)],
    [`dump walk + fill: filter program, the watched port${single ? '' : 's'}`, est(portFilter(ports))],
  ];
  if (single) steps.push([`dump walk + fill: port ${ports[0]} in the request header, no program`, est(null, ports[0])]);
  // The bpf iterator, both families in one walk: a port nobody uses times the walk with the program run on every
  // socket (state test, and the port tree for established ones); the watched ports add the cast to tcp_sock, the
  // inode load and a 4-byte write per match. Two ways to the inode: sk->sk_ino, and sk_socket->file->f_inode.
  const bpfSources: BpfSource[] = [];
  const bpfRow = (label: string, src: BpfSource): void => {
    bpfSources.push(src);
    steps.push([label, () => src.read().length]);
  };
  let bpfWhy = '';
  try {
    for (const via of ['sk_ino', 'socket'] as const) {
      const iterLayout = kernelLayout(via);
      if (via === 'sk_ino') bpfRow(`bpf iterator walk only: port ${unused} (nobody's), IPv4+IPv6`, new BpfSource(addon, [unused], { method: 'iter', iterLayout }));
      bpfRow(`bpf iterator walk + write: the watched port${single ? '' : 's'}, inode from ${via === 'sk_ino' ? 'sk->sk_ino' : 'sk_socket->file->f_inode->i_ino'}`,
        new BpfSource(addon, ports, { method: 'iter', iterLayout }));
    }
  } catch (err) {
    bpfWhy = (err as Error).message.split('\n')[0]!;
    say(`# no bpf iterator rows: ${bpfWhy}`);
  }
  // The table walk (bpf.ts "The table walk"): the same answer without the iterator's per-socket locking.
  let walked: BpfSource | null = null;
  try {
    bpfRow(`bpf table walk only: port ${unused} (nobody's)`, new BpfSource(addon, [unused], { method: 'walk' }));
    walked = new BpfSource(addon, ports, { method: 'walk' });
    bpfRow(`bpf table walk + write: the watched port${single ? '' : 's'}`, walked);
  } catch (err) {
    say(`# no bpf table walk rows: ${(err as Error).message.split('\n')[0]!}`);
  }
  const timed = timeTurns(runs, steps.map(([, fn]) => fn));
  steps.forEach(([label], i) => say(`${label}\t${timed[i]!.result}\t${fmt(timed[i]!.ms)}`));
  if (walked) say(`# the table walk's last pass: ${JSON.stringify(walked.stats())}`);
  for (const src of bpfSources) src.close();

  const table = new InodeTable(1 << 22);
  const nl = timeIt(runs, () => {
    table.clear();
    return source.fill(table);
  });
  say(`memlog's netlink source (filter program, table cleared; the IPv6 listener check included)\t${nl.result}\t${fmt(nl.ms)}`);
  if (!bpfWhy) {
    const bpf = new BpfSource(addon, ports);
    const b = timeIt(runs, () => {
      table.clear();
      return bpf.fill(table);
    });
    bpf.close();
    say(`memlog's bpf source (${bpf.method === 'walk' ? 'table walk' : 'iterator'}, table cleared)\t${b.result}\t${fmt(b.ms)}`);
  }
  if (procRuns > 0) {
    const procTable = new InodeTable(1 << 22);
    const proc = new ProcSource(treeRoot, ports);
    const pr = timeIt(procRuns, () => {
      procTable.clear();
      return proc.fill(procTable);
    });
    say(`/proc/net/tcp + tcp6 text scan (every socket of the namespace)\t${pr.result}\t${fmt(pr.ms)}`);
  }
  const list = treePids.map((pid) => ({ pid, startTime: readStat(pid)!.startTime }));
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

  const walk = timeIt(runs, () => processTree(treeRoot).length);
  say(`process tree walk (/proc children files)\t${walk.result} processes\t${fmt(walk.ms)}`);
  const pss = timeIt(runs, () => treePids.reduce((n, pid) => n + (readPssKb(pid) ?? 0), 0));
  say(`PSS of every tree process (smaps_rollup)\t${Math.round(pss.result / 1024)} MB\t${fmt(pss.ms)}`);
  const recSources: SourceName[] = bpfWhy ? ['netlink'] : ['netlink', 'bpf'];
  for (const sockets of recSources) {
    const rec = startRecorder({ pid: treeRoot, ports, intervalMs: 3_600_000, out: null, sockets });
    const whole = timeIt(runs, () => rec.sampleNow()!.conns);
    say(`whole recorder sample, ${sockets} (stat, PSS of ${treePids.length} processes, tree, sockstat, connections)\t${whole.result}\t${fmt(whole.ms)}`);
    await rec.stop();
  }

  for (const sockets of recordMs > 0 ? recSources : []) {
    const notices: string[] = [];
    const at: number[] = [];
    const took: number[] = [];
    const intervalMs = 1000;
    const rec1 = startRecorder({
      pid: treeRoot, ports, intervalMs, out: null, sockets,
      log: (l) => notices.push(l), onRow: (_row, ms) => (at.push(performance.now()), took.push(ms)),
    });
    await new Promise((r) => setTimeout(r, recordMs));
    await rec1.stop();
    const conns1 = rec1.rows.map((r) => r.conns);
    const gaps = at.slice(1).map((t, i) => t - at[i]!);
    // The first sample is taken at once, then one per slot of the grid: recordMs / interval more.
    const slots = Math.floor(recordMs / intervalMs) + 1;
    const late = gaps.filter((g) => g > 1.5 * intervalMs).length;
    say(`recorder at --interval 1s for ${recordMs / 1000} s, ${sockets}\t${rec1.rows.length} rows of ${slots} slots, conns ${Math.min(...conns1)}-${Math.max(...conns1)}\t` +
      `gaps between rows ${gaps.length ? fmt(gaps) : '-'}, ${late} over 1.5 s (a slot skipped); notices: ${notices.length ? notices.join(' | ') : 'none'}`);
    // The first sample (taken by startRecorder, before the grid) lists and reads every fd: it is the cold one.
    say(`  its samples, in order (ms; the first is the cold one)\t${took.map((ms) => Math.round(ms)).join(' ')}`);
  }
  say(`# after: load ${loadavg()}, MemAvailable ${memAvailMB()} MB`);
}

async function main(): Promise<void> {
  const conns = parseIntFlag('--conns', values.conns!, 1, 1_000_000);
  const per = parseIntFlag('--per', values.per!, 100, 19_000);
  const base = parseIntFlag('--base-port', values['base-port']!, 1024, 65000);
  const onePort = values['one-port']!;
  const procs = Math.ceil(conns / per);
  if (!onePort && base + procs - 1 > 65535) throw new Error(`--base-port ${base} + ${procs} holders passes port 65535`);
  // Each destination port gets conns / ports connections, spread over the addresses.
  const perPort = onePort ? conns : per;
  const addrs = values.addrs === 'auto' ? Math.max(4, Math.ceil(perPort / PER_PAIR)) : parseIntFlag('--addrs', values.addrs!, 1, 250);
  if (perPort / addrs > 28_000) throw new Error(`--addrs ${addrs}: ${Math.ceil(perPort / addrs)} connections per address pair and port is more than the ephemeral ports (use at least ${Math.ceil(perPort / PER_PAIR)})`);
  const { reason } = loadSockDiag();
  if (reason) throw new Error(`the netlink addon is needed here: ${reason}`);
  const measureArgs = ['--runs', values.runs!, '--proc-runs', values['proc-runs']!, '--record', values.record!, '--settle', values.settle!];
  // Validate them here, before any process starts.
  parseIntFlag('--runs', values.runs!, 1, 50);
  parseIntFlag('--proc-runs', values['proc-runs']!, 0, 20);
  parseDuration('--record', values.record!, 0, 300_000);
  parseDuration('--settle', values.settle!, 0, 300_000);
  const plan: Plan = { conns, per, base, procs, onePort, netns: values['clients-netns']!, addrs, childEhash: 0, hostNetns: '' };

  if (values.role === 'ns-a') {
    plan.childEhash = parseIntFlag('--child-ehash', values['child-ehash']!, 128, 16_777_216);
    plan.hostNetns = values['host-netns'] ?? '';
    return orchestrate(plan, measureArgs);
  }
  if (!plan.netns) return orchestrate(plan, measureArgs);
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench-1m: --clients-netns needs root (it creates network namespaces and a veth pair with unshare and ip)\n');
    process.exit(2);
  }
  // By default B's table is as large as the host's, so the only difference from loopback is where the clients are.
  const childEhash = values['child-ehash'] !== undefined ? parseIntFlag('--child-ehash', values['child-ehash'], 128, 16_777_216) : Math.abs(ehashEntries());
  const args = process.argv.slice(2).filter((a, i, all) => a !== '--child-ehash' && all[i - 1] !== '--child-ehash' && !a.startsWith('--child-ehash='));
  const a = spawn('unshare', ['--net', '--', process.execPath, SELF, ...args, '--role', 'ns-a', '--child-ehash', String(childEhash), '--host-netns', netNs('self')], { stdio: 'inherit' });
  const stop = (): void => void a.kill('SIGTERM');
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  const code = await new Promise<number>((resolve) => a.once('exit', (c, sig) => resolve(c ?? (sig ? 1 : 0))));
  process.exit(code);
}

try {
  if (values.role && values.role !== 'ns-a') stayUntilDeadline();
  if (values.role === 'root') await root(parseIntFlag('--base-port', values['base-port']!, 1, 65535), parseIntFlag('--conns', values.conns!, 1, 1000), values['one-port']!, parseIntFlag('--per', values.per!, 100, 19_000));
  else if (values.role === 'holder') holder(values.port === undefined ? null : parseIntFlag('--port', values.port, 1, 65535), values['one-port']!, parseIntFlag('--per', values.per!, 100, 19_000));
  else if (values.role === 'client') client(parseIntFlag('--port', values.port!, 1, 65535), parseIntFlag('--conns', values.conns!, 1, 19_000), values.host!.split(','), parseIntFlag('--inflight', values.inflight!, 1, 4096));
  else if (values.role === 'measure') {
    const { addon, reason } = loadSockDiag();
    if (!addon) throw new Error(`the netlink addon is needed here: ${reason}`);
    await measure(addon);
    process.exit(0);
  } else {
    await main();
    process.exit(0);
  }
} catch (err) {
  process.stderr.write(`bench-1m: ${(err as Error).message}\n`);
  process.exit(err instanceof Error && 'flag' in err ? 2 : 1);
}
