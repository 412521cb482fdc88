// Preflight: can this machine, as configured, hold N connections in the given topology?
//
// `checkPreflight` is a pure function over a typed snapshot of kernel and process readings (see procfs.ts for the
// reader), so every rule below is table-tested on fixture readings. It never changes anything: each shortfall
// carries the exact command a person can run to fix it.
//
// The model (all on one machine, loopback): every connection is two sockets (client end and server end), two
// file descriptors (one in a server process, one in a client process), one ephemeral source port per
// (source address, destination address, destination port) tuple, and one conntrack entry when conntrack is loaded.

/** Soft and hard RLIMIT_NOFILE; `Infinity` stands for "unlimited". */
export interface NofileLimits {
  soft: number;
  hard: number;
}

/** Readings preflight needs; `undefined` means the file was missing or unreadable (the check reports "unknown"). */
export interface ProcSnapshot {
  /** Open-files limits of this process (children such as the server and floodtest inherit them). */
  selfNofile?: NofileLimits;
  /** Open-files limits of an already running server given by `--server-pid`. */
  server?: { pid: number; nofile?: NofileLimits };
  /** fs.nr_open: the ceiling for any process's hard open-files limit. */
  nrOpen?: number;
  /** fs.file-max: system-wide open files. */
  fileMax?: number;
  /** Files already allocated system-wide (first field of fs.file-nr). */
  fileAllocated?: number;
  /** net.ipv4.ip_local_port_range [low, high]. */
  portRange?: [number, number];
  somaxconn?: number;
  tcpMaxSynBacklog?: number;
  /** net.ipv4.tcp_mem [low, pressure, high] in pages. */
  tcpMem?: [number, number, number];
  /** net.ipv4.tcp_rmem / tcp_wmem [min, default, max] in bytes. */
  tcpRmem?: [number, number, number];
  tcpWmem?: [number, number, number];
  /** Present only when conntrack is loaded (/proc/sys/net/netfilter/nf_conntrack_max exists). */
  conntrack?: { max: number; count: number };
  memTotalKB?: number;
  memAvailableKB?: number;
  /** Page size in bytes (tcp_mem is counted in pages). */
  pageSize: number;
}

/** The run preflight checks against. */
export interface Topology {
  conns: number;
  serverProcs: number;
  clientProcs: number;
  destHosts: string[];
  destPorts: number[];
  /** New connections per second during the ramp. */
  connectRate: number;
}

export type CheckStatus = 'ok' | 'short' | 'unknown';

/** One line of the report. */
export interface Check {
  id: string;
  title: string;
  status: CheckStatus;
  /** What the run needs, in words with numbers. */
  need: string;
  /** What the machine has. */
  have: string;
  /** Most connections this check allows as configured (absent when the check does not bound N). */
  maxConns?: number;
  /** Exact commands or flags that fix a shortfall, best first. */
  fixes: string[];
  note?: string;
}

/** The whole answer. */
export interface PreflightReport {
  topology: Topology;
  checks: Check[];
  /** Connections this machine reaches as configured: the smallest bound over all checks. */
  reachable: number;
  /** True when `reachable >= conns`; rate-only shortfalls (backlog) do not make this false. */
  canReach: boolean;
  /** Every check ok (no shortfall of any kind, unknowns allowed). */
  allOk: boolean;
  memoryEstimate: MemoryEstimate;
}

// ---- Every constant of the model, named with its reason, in one place. ----

/** File descriptors a Node process holds besides its connections (stdio, epoll, listeners, libuv, pipes). */
export const FD_RESERVE_PER_PROC = 100;
/**
 * Usable ephemeral ports per (source, destination address, destination port) tuple, as a share of the range.
 * Linux's connect() tries even ports first and only then odd ones, so past half the range it searches long and
 * connects stall: measured here, one source to one address:port stalls near 14k of 28,232 ports.
 */
export const EPHEMERAL_USABLE_SHARE = 0.5;
/** Longest stall of the server's accept loop the listen backlog must absorb (GC pause, a large fan-out). */
export const ACCEPT_STALL_SECONDS = 0.1;
/** Node's default listen backlog (server.listen uses 511 unless told otherwise); the kernel caps it at somaxconn. */
export const NODE_LISTEN_BACKLOG = 511;
/** Per-connection memory of a server process (raw node:net measured ~2.2 KB marginal; rounded up for buffers in flight). */
export const SERVER_KB_PER_CONN = 4;
/** Per-connection memory of a floodtest process (raw node:net clients measured 2.2–3.7 KB). */
export const CLIENT_KB_PER_CONN = 4;
/** Kernel memory per connection: two TCP sockets (tcp_sock slab ~2.3 KB, socket inode + file + dentry ~1 KB each end). */
export const KERNEL_KB_PER_CONN = 7;
/** Base RSS of one Node process (the mapped binary is ~37 MB of it). */
export const NODE_BASE_MB = 50;
/** Other processes of a bench: msggen, memlog and c1m itself. */
export const HELPER_PROCS = 3;
/** Memory left free for the rest of the system. */
export const MEM_HEADROOM_MB = 512;

/** Memory the run is expected to use, in KB, with its parts. */
export interface MemoryEstimate {
  serverKB: number;
  clientKB: number;
  kernelKB: number;
  helpersKB: number;
  headroomKB: number;
  totalKB: number;
  perConnKB: number;
  fixedKB: number;
}

/** Estimate of server + client + kernel memory for the topology, from the constants above. */
export function estimateMemory(t: Topology): MemoryEstimate {
  const baseKB = NODE_BASE_MB * 1024;
  const serverKB = t.serverProcs * baseKB + t.conns * SERVER_KB_PER_CONN;
  const clientKB = t.clientProcs * baseKB + t.conns * CLIENT_KB_PER_CONN;
  const kernelKB = t.conns * KERNEL_KB_PER_CONN;
  const helpersKB = HELPER_PROCS * baseKB;
  const headroomKB = MEM_HEADROOM_MB * 1024;
  const perConnKB = SERVER_KB_PER_CONN + CLIENT_KB_PER_CONN + KERNEL_KB_PER_CONN;
  const fixedKB = (t.serverProcs + t.clientProcs + HELPER_PROCS) * baseKB + headroomKB;
  return { serverKB, clientKB, kernelKB, helpersKB, headroomKB, totalKB: serverKB + clientKB + kernelKB + helpersKB + headroomKB, perConnKB, fixedKB };
}

const fmt = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'unlimited');
const lim = (n: number): string => (Number.isFinite(n) ? String(n) : 'unlimited');
/** Next "round" value at or above n, so suggested settings are easy to read (65535 style for small ones). */
function roundUp(n: number): number {
  if (n <= 65535) {
    for (const v of [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65535]) if (v >= n) return v;
  }
  const step = 10 ** Math.max(3, Math.floor(Math.log10(n)) - 1);
  return Math.ceil(n / step) * step;
}
const isLoopbackV4 = (h: string): boolean => /^127\.\d+\.\d+\.\d+$/.test(h);

/**
 * Open-files check for one kind of process (server or client). Node raises its soft RLIMIT_NOFILE to the hard
 * limit at startup, so for processes bench starts (`nodeChild`) the hard limit is what counts; for an already
 * running server (`--server-pid`) its current soft limit is.
 */
function nofileCheck(
  id: string,
  title: string,
  limits: NofileLimits | undefined,
  nrOpen: number | undefined,
  conns: number,
  procs: number,
  procFlag: string,
  whose: string,
  nodeChild: boolean,
): Check {
  const perProc = Math.ceil(conns / procs);
  const need = perProc + FD_RESERVE_PER_PROC;
  const needText = `${fmt(need)} fds per process (${fmt(perProc)} connections over ${procs} process${procs > 1 ? 'es' : ''} + ${FD_RESERVE_PER_PROC} reserve)`;
  if (!limits) return { id, title, status: 'unknown', need: needText, have: 'limits unreadable', fixes: [] };
  const have = `soft ${lim(limits.soft)}, hard ${lim(limits.hard)} (${whose})`;
  const effective = nodeChild ? limits.hard : limits.soft;
  const maxConns = Math.max(0, (effective - FD_RESERVE_PER_PROC) * procs);
  const note = nodeChild && limits.soft < need ? 'Node raises its soft limit to the hard limit at startup' : undefined;
  if (need <= effective) return { id, title, status: 'ok', need: needText, have, maxConns, fixes: [], note };
  const fixes: string[] = [];
  // Beyond the hard limit, more processes are the only fix without root.
  const usable = Math.min(limits.hard, nrOpen ?? Infinity) - FD_RESERVE_PER_PROC;
  if (usable > 0 && Number.isFinite(usable)) fixes.push(`${procFlag} ${Math.ceil(conns / usable)}`);
  if (need <= limits.hard) fixes.push(`ulimit -n ${need}   # in the shell that starts the server`);
  else {
    if (nrOpen !== undefined && need > nrOpen) fixes.push(`sysctl -w fs.nr_open=${roundUp(need)}`);
    fixes.push(`ulimit -Hn ${need} && ulimit -n ${need}   # as root, or raise 'nofile' in /etc/security/limits.conf`);
  }
  return { id, title, status: 'short', need: needText, have, maxConns, fixes, note };
}

/** Runs every check of the model on a snapshot; pure. */
export function checkPreflight(s: ProcSnapshot, t: Topology): PreflightReport {
  const checks: Check[] = [];
  const N = t.conns;

  // Open files, this process (floodtest children inherit them).
  checks.push(nofileCheck('nofile-client', 'open files, client processes', s.selfNofile, s.nrOpen, N, t.clientProcs, '--client-procs', 'this process; floodtest inherits them', true));
  // Open files, server: the running server's own limits if given, else ours (bench starts it as our child).
  if (s.server) {
    checks.push(nofileCheck('nofile-server', 'open files, server processes', s.server.nofile, s.nrOpen, N, t.serverProcs, '--server-procs', `pid ${s.server.pid}`, false));
  } else {
    checks.push(nofileCheck('nofile-server', 'open files, server processes', s.selfNofile, s.nrOpen, N, t.serverProcs, '--server-procs', 'inherited from this process', true));
  }

  // fs.nr_open caps what any hard limit can be raised to.
  {
    const need = Math.max(Math.ceil(N / t.serverProcs), Math.ceil(N / t.clientProcs)) + FD_RESERVE_PER_PROC;
    const needText = `${fmt(need)} fds in one process`;
    if (s.nrOpen === undefined) checks.push({ id: 'nr-open', title: 'fs.nr_open', status: 'unknown', need: needText, have: 'unreadable', fixes: [] });
    else {
      const ok = need <= s.nrOpen;
      const minProcs = Math.min(t.serverProcs, t.clientProcs);
      checks.push({
        id: 'nr-open', title: 'fs.nr_open', status: ok ? 'ok' : 'short', need: needText, have: fmt(s.nrOpen),
        maxConns: Math.max(0, (s.nrOpen - FD_RESERVE_PER_PROC) * minProcs),
        fixes: ok ? [] : [`sysctl -w fs.nr_open=${roundUp(need)}`],
      });
    }
  }

  // fs.file-max: both ends of every connection are open files on this machine.
  {
    const procs = t.serverProcs + t.clientProcs + HELPER_PROCS;
    const need = 2 * N + procs * FD_RESERVE_PER_PROC;
    const used = s.fileAllocated ?? 0;
    const needText = `${fmt(need)} files system-wide (2 per connection + reserve)`;
    if (s.fileMax === undefined) checks.push({ id: 'file-max', title: 'fs.file-max', status: 'unknown', need: needText, have: 'unreadable', fixes: [] });
    else {
      const free = s.fileMax - used;
      const ok = need <= free;
      checks.push({
        id: 'file-max', title: 'fs.file-max', status: ok ? 'ok' : 'short', need: needText,
        have: `${fmt(s.fileMax)} (${fmt(used)} in use)`,
        maxConns: Math.max(0, Math.floor((free - procs * FD_RESERVE_PER_PROC) / 2)),
        fixes: ok ? [] : [`sysctl -w fs.file-max=${roundUp(used + need)}`],
      });
    }
  }

  // Ephemeral ports: one source port per (src addr, dst addr, dst port) tuple.
  {
    const tuples = t.destHosts.length * t.destPorts.length;
    const needText = `${fmt(N)} source ports over ${t.destHosts.length} address${t.destHosts.length > 1 ? 'es' : ''} × ${t.destPorts.length} port${t.destPorts.length > 1 ? 's' : ''}`;
    if (!s.portRange) checks.push({ id: 'ephemeral-ports', title: 'ephemeral ports', status: 'unknown', need: needText, have: 'unreadable', fixes: [] });
    else {
      const [lo, hi] = s.portRange;
      const range = hi - lo + 1;
      const perTuple = Math.floor(range * EPHEMERAL_USABLE_SHARE);
      const maxConns = perTuple * tuples;
      const ok = N <= maxConns;
      const fixes: string[] = [];
      if (!ok) {
        const needTuples = Math.ceil(N / perTuple);
        const hostsNeeded = Math.ceil(needTuples / t.destPorts.length);
        if (t.destHosts.every(isLoopbackV4) && hostsNeeded <= 254) {
          const first = t.destHosts[0] ?? '127.0.0.1';
          const base = first.split('.').slice(0, 3).join('.');
          const start = Number(first.split('.')[3]);
          if (start + hostsNeeded - 1 <= 254) fixes.push(`--dest-hosts ${first}-${base}.${start + hostsNeeded - 1}`);
        }
        const portsNeeded = Math.ceil(needTuples / t.destHosts.length);
        const p0 = t.destPorts[0] ?? 8000;
        if (p0 + portsNeeded - 1 <= 65535) fixes.push(`--dest-ports ${p0}-${p0 + portsNeeded - 1}`);
        if (Math.floor((65535 - 1024 + 1) * EPHEMERAL_USABLE_SHARE) * tuples >= N) fixes.push(`sysctl -w net.ipv4.ip_local_port_range="1024 65535"`);
      }
      checks.push({
        id: 'ephemeral-ports', title: 'ephemeral ports', status: ok ? 'ok' : 'short', need: needText,
        have: `${lo}-${hi} (${fmt(range)} ports, ~${fmt(perTuple)} usable per destination × ${tuples})`,
        maxConns, fixes,
        note: 'connect() takes even ports first; past half the range connects stall, so half is counted as usable',
      });
    }
  }

  // Listen backlog vs connect rate: connects arriving during an accept stall must fit in the queue.
  {
    const need = Math.ceil(t.connectRate * ACCEPT_STALL_SECONDS);
    const needText = `${fmt(need)} queued connects (${fmt(t.connectRate)}/s × ${ACCEPT_STALL_SECONDS * 1000} ms accept stall)`;
    for (const [id, title, have, key] of [
      ['somaxconn', 'net.core.somaxconn', s.somaxconn, 'net.core.somaxconn'],
      ['syn-backlog', 'net.ipv4.tcp_max_syn_backlog', s.tcpMaxSynBacklog, 'net.ipv4.tcp_max_syn_backlog'],
    ] as const) {
      if (have === undefined) { checks.push({ id, title, status: 'unknown', need: needText, have: 'unreadable', fixes: [] }); continue; }
      const ok = need <= have;
      checks.push({
        id, title, status: ok ? 'ok' : 'short', need: needText, have: fmt(have),
        fixes: ok ? [] : [`sysctl -w ${key}=${roundUp(need)}`, `--connect-rate ${Math.floor(have / ACCEPT_STALL_SECONDS)}`],
        note: id === 'somaxconn' && need > NODE_LISTEN_BACKLOG ? `Node listens with backlog ${NODE_LISTEN_BACKLOG} unless the server asks for more` : undefined,
      });
    }
  }

  // tcp_mem: worst case, every socket (both ends on loopback) holds its minimum receive and send buffers.
  {
    const perConnBytes = s.tcpRmem && s.tcpWmem ? 2 * (s.tcpRmem[0] + s.tcpWmem[0]) : undefined;
    if (!s.tcpMem || perConnBytes === undefined) {
      checks.push({ id: 'tcp-mem', title: 'net.ipv4.tcp_mem', status: 'unknown', need: `${fmt(N)} × minimum socket buffers`, have: 'unreadable', fixes: [] });
    } else {
      const needPages = Math.ceil((N * perConnBytes) / s.pageSize);
      const [low, pressure, high] = s.tcpMem;
      const maxConns = Math.floor((high * s.pageSize) / perConnBytes);
      const ok = needPages <= high;
      const fixes = ok ? [] : [`sysctl -w net.ipv4.tcp_mem="${Math.max(low, needPages)} ${Math.max(pressure, Math.ceil(needPages * 1.25))} ${Math.ceil(needPages * 1.5)}"`];
      checks.push({
        id: 'tcp-mem', title: 'net.ipv4.tcp_mem', status: ok ? 'ok' : 'short',
        need: `${fmt(needPages)} pages (${fmt(N)} × 2 ends × (rmem ${s.tcpRmem![0]} + wmem ${s.tcpWmem![0]}) B)`,
        have: `${low} ${pressure} ${high} pages (high = ${fmt((high * s.pageSize) / 1048576)} MiB)`,
        maxConns, fixes,
        note: needPages > pressure && ok ? 'above the pressure threshold: the kernel will shrink socket buffers when they fill' : undefined,
      });
    }
  }

  // Conntrack: one entry per connection when the module is loaded (loopback is tracked too).
  if (s.conntrack) {
    const free = s.conntrack.max - s.conntrack.count;
    const ok = N <= free;
    checks.push({
      id: 'conntrack', title: 'net.netfilter.nf_conntrack_max', status: ok ? 'ok' : 'short', need: `${fmt(N)} entries`,
      have: `${fmt(s.conntrack.max)} (${fmt(s.conntrack.count)} in use)`,
      maxConns: Math.max(0, free),
      fixes: ok ? [] : [`sysctl -w net.netfilter.nf_conntrack_max=${roundUp(s.conntrack.count + N + N / 4)}`],
    });
  }

  // Memory: server + client + kernel estimate against MemAvailable.
  const memoryEstimate = estimateMemory(t);
  if (s.memAvailableKB === undefined) {
    checks.push({ id: 'memory', title: 'memory', status: 'unknown', need: `${fmt(memoryEstimate.totalKB / 1024)} MiB`, have: 'MemAvailable unreadable', fixes: [] });
  } else {
    const ok = memoryEstimate.totalKB <= s.memAvailableKB;
    const maxConns = Math.max(0, Math.floor((s.memAvailableKB - memoryEstimate.fixedKB) / memoryEstimate.perConnKB));
    checks.push({
      id: 'memory', title: 'memory', status: ok ? 'ok' : 'short',
      need: `${fmt(memoryEstimate.totalKB / 1024)} MiB (server ${fmt(memoryEstimate.serverKB / 1024)} + clients ${fmt(memoryEstimate.clientKB / 1024)} + kernel ${fmt(memoryEstimate.kernelKB / 1024)} + helpers ${fmt(memoryEstimate.helpersKB / 1024)} + headroom ${fmt(memoryEstimate.headroomKB / 1024)})`,
      have: `${fmt(s.memAvailableKB / 1024)} MiB available of ${s.memTotalKB !== undefined ? fmt(s.memTotalKB / 1024) : '?'} MiB`,
      maxConns,
      fixes: ok ? [] : [`--conns ${maxConns}`],
      note: `${memoryEstimate.perConnKB} KB per connection (server ${SERVER_KB_PER_CONN} + client ${CLIENT_KB_PER_CONN} + kernel ${KERNEL_KB_PER_CONN}) + ${NODE_BASE_MB} MB per Node process`,
    });
  }

  let reachable = Infinity;
  for (const c of checks) if (c.maxConns !== undefined) reachable = Math.min(reachable, c.maxConns);
  if (!Number.isFinite(reachable)) reachable = N; // nothing readable bounds N: do not claim a shortfall we cannot see
  const canReach = reachable >= N;
  return { topology: t, checks, reachable, canReach, allOk: checks.every((c) => c.status !== 'short'), memoryEstimate };
}

/** Human-readable report: one line per check, then the verdict, then the fixes. */
export function formatReport(r: PreflightReport): string {
  const t = r.topology;
  const lines: string[] = [];
  lines.push(
    `c1m preflight: ${fmt(t.conns)} connections, ${t.serverProcs} server process${t.serverProcs > 1 ? 'es' : ''}, ` +
      `${t.clientProcs} client process${t.clientProcs > 1 ? 'es' : ''}, ${t.destHosts.length} destination address${t.destHosts.length > 1 ? 'es' : ''} × ` +
      `${t.destPorts.length} port${t.destPorts.length > 1 ? 's' : ''}, connect rate ${fmt(t.connectRate)}/s`,
  );
  const w = Math.max(...r.checks.map((c) => c.title.length));
  for (const c of r.checks) {
    const bound = c.maxConns !== undefined ? `  → up to ${fmt(c.maxConns)} conns` : '';
    lines.push(`  ${c.status.padEnd(7)} ${c.title.padEnd(w)}  need ${c.need}; have ${c.have}${bound}`);
    if (c.note && c.status !== 'ok') lines.push(`  ${' '.repeat(7)} ${' '.repeat(w)}  (${c.note})`);
  }
  lines.push(
    r.canReach
      ? `This machine reaches ${fmt(r.reachable)} connections as configured (asked ${fmt(t.conns)}): OK${r.allOk ? '' : ', with warnings below'}`
      : `This machine reaches ${fmt(r.reachable)} connections as configured (asked ${fmt(t.conns)}): SHORT`,
  );
  const short = r.checks.filter((c) => c.status === 'short');
  if (short.length > 0) {
    lines.push('To fix (nothing was changed; run one of the commands for each line):');
    for (const c of short) lines.push(`  ${c.title}: ${c.fixes.join('   or   ')}`);
  }
  return lines.join('\n') + '\n';
}
