// Where memlog's socket table comes from: eBPF (fastest; root), the kernel's sock_diag netlink dump (fast), or
// /proc/net/tcp text (anywhere).
//
// Counting a tree's connections needs the set of ESTABLISHED socket inodes on the watched local ports. Reading
// /proc/net/tcp makes the kernel print ~150 bytes for every TCP socket of the host, ours or not (~2 µs a line: with a
// million connections and their clients on the same host, ~4 s per sample). A SOCK_DIAG_BY_FAMILY dump runs a small
// filter program inside the kernel and returns only the matching sockets as binary records. Node cannot open a
// netlink socket, so the dump itself is in a small C addon (memlog/native/sockdiag.c, built by `npm run build`, which
// also lists and reads fd links without a string per fd); the filter program is built here, in TypeScript, where it
// is table-tested. Faster still, for root: an eBPF program (assembled in bpf.ts from the kernel's BTF, loaded by the
// same addon) walks the established table itself and writes just the inode of each matching socket, with no
// inet_diag record and no lock per socket (or, on older kernels, a bpf_iter "tcp" program does). `auto`
// takes bpf when it loads, else netlink, else /proc (no addon, not Linux, C1M_NO_NATIVE=1, or the watched process
// in another network namespace: both kernel interfaces see only memlog's own), and says why in the log's header.

import { closeSync, existsSync, readlinkSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { loadAddon, type AddonLoad } from '../lib/native.js';
import { Btf, VMLINUX_BTF } from './btf.js';
import { WALK_VALUE_SIZE, walkValue, tcpIterLayout, tcpIterProgram, tcpWalkLayout, tcpWalkProgram, type InodeVia, type TcpIterLayout, type TcpWalkLayout } from './bpf.js';
import { FLAG_ESTABLISHED, FLAG_PRESENT, FULL_RESCAN_EVERY, TcpTableScanner, fsFdReader, openFdCount, portRanges, type FdReader, type InodeTable } from './tcptable.js';

export { portRanges };

/** Address families as the kernel numbers them. */
export const AF_INET = 2;
export const AF_INET6 = 10;
/** TCP_ESTABLISHED in include/net/tcp_states.h; idiag_states is a mask of 1 << state. */
export const TCPF_ESTABLISHED = 1 << 1;
/** TCP_LISTEN's bit in idiag_states. */
export const TCPF_LISTEN = 1 << 10;

/** inet_diag_bc_op codes (include/uapi/linux/inet_diag.h). */
export const BC_JMP = 1;
export const BC_S_GE = 2;
export const BC_S_LE = 3;
export const BC_S_EQ = 11;

/** The addon's functions; errors carry code SOCKDIAG_ERRNO_<errno> or SOCKDIAG_BAD_ARGS. */
export interface SockDiag {
  /**
   * Inodes (nonzero) of the `family` TCP sockets whose state is in `states`, whose local port is `sport` (when
   * given and nonzero: checked from the request header, before any program) and that pass the filter program.
   */
  dump(family: number, states: number, bytecode: Uint8Array | null, sport?: number): Uint32Array;
  /** The pid's open fd numbers (getdents64 on /proc/<pid>/fd, no string per fd), any order. */
  listFds(pid: number): Int32Array;
  /** The socket inode behind each of the pid's `fds`, 0 for other files and closed fds. */
  socketInodes(pid: number, fds: Int32Array): Uint32Array;
  /**
   * Loads a BPF_PROG_TYPE_TRACING program (BPF_TRACE_ITER, attach_btf_id `attachBtfId` in vmlinux, license GPL) and
   * links it: returns the link's fd (close it with fs.closeSync). A refused program throws SOCKDIAG_ERRNO_<n> with
   * the end of the verifier's log in the message.
   */
  iterLoad(insns: Uint8Array, attachBtfId: number): number;
  /** Runs the iterator of a link once (BPF_ITER_CREATE, read to EOF): the 4-byte records its program wrote. */
  iterRead(linkFd: number): Uint32Array;
  /**
   * Creates the table walk's map (one array value of `valueSize` bytes, starting as `init`: bpf.ts walkValue) and
   * loads its raw tracepoint program (bpf.ts tcpWalkInsns) with the map as fd_array[0]; the handle holds both
   * (walkClose frees them).
   */
  walkOpen(insns: Uint8Array, valueSize: number, init: Uint8Array): WalkHandle;
  /** One whole walk: the program run until the table is done (BPF_PROG_TEST_RUN), the inodes of all runs. */
  walkRun(walk: WalkHandle): Uint32Array;
  /** The last walk's runs, the table's buckets, buckets walked again, kernel reads that failed. */
  walkStats(walk: WalkHandle): { runs: number; buckets: number; restarts: number; faults: number };
  /** Unloads the walk's program and frees its map. */
  walkClose(walk: WalkHandle): void;
  /** uapi constants as the addon's build headers define them (bpf.ts hard-codes them; a test compares). */
  readonly bpfConstants: Record<string, number>;
}

const ERRNO_NAMES = new Map(Object.entries(osConstants.errno).map(([name, n]) => [n, name]));

/** Gives an addon error the errno name node:fs would use (ENOENT, EACCES, ...) as its code. */
function withErrnoName(err: unknown): unknown {
  const e = err as NodeJS.ErrnoException;
  const m = /^SOCKDIAG_ERRNO_(\d+)$/.exec(e.code ?? '');
  if (m) e.code = ERRNO_NAMES.get(Number(m[1])) ?? e.code;
  return e;
}

/** SocketOwnership's fd reader on the addon: one call per process instead of a string and a syscall per fd. */
export function nativeFdReader(addon: SockDiag): FdReader {
  return {
    openCount: openFdCount,
    listFds(pid) {
      try {
        return addon.listFds(pid);
      } catch (err) {
        throw withErrnoName(err);
      }
    },
    socketInodes(pid, fds) {
      try {
        return addon.socketInodes(pid, fds);
      } catch (err) {
        // The process exited between listing and reading: no fd holds anything any more.
        if ((withErrnoName(err) as NodeJS.ErrnoException).code === 'ENOENT') return new Uint32Array(fds.length);
        throw err;
      }
    },
  };
}

/** The fastest fd reader available: the addon's when it is built, node:fs otherwise. */
export function bestFdReader(): FdReader {
  const { addon } = loadSockDiag();
  return addon ? nativeFdReader(addon) : fsFdReader;
}

/** An opaque handle of the addon's table walk (a napi external). */
export type WalkHandle = { readonly __walk: unique symbol };

/** Where the addon is built, relative to this file (dist/memlog/ or memlog/). */
export const ADDON_PATH = fileURLToPath(new URL('../../memlog/native/build/Release/sockdiag.node', import.meta.url));

let loaded: AddonLoad<SockDiag> | null = null;

/** Loads the addon once; `reason` says why it is unavailable. */
export function loadSockDiag(): AddonLoad<SockDiag> {
  return (loaded ??= loadAddon<SockDiag>(ADDON_PATH, 'netlink sock_diag'));
}

/**
 * The in-kernel filter "local port in one of `ports`" as an inet_diag bytecode program.
 *
 * The kernel runs it as: at each 4-byte op {code u8, yes u8, no u16}, jump `yes` bytes forward if the test holds,
 * else `no` bytes; landing exactly on the end accepts the socket, past the end rejects it. Port tests take the port
 * in the `no` field of the following op. `yes` is only 8 bits, so a match never jumps to the end directly: it
 * lands on a JMP (always taken through its 16-bit `no`) that does. Per range:
 *
 *   single port p:  S_EQ p  (yes → JMP, no → next range)  [0 0 p]  JMP → end
 *   range lo..hi:   S_GE lo (yes → S_LE, no → next range) [0 0 lo]  S_LE hi (yes → JMP, no → next range) [0 0 hi]  JMP → end
 *
 * "Next range" after the last range is end + 4: reject. The kernel's checker (inet_diag_bc_audit) walks the `yes`
 * edges and wants every `no` target on an op boundary reachable that way, which the JMP's yes = 4 provides.
 */
export function portFilter(ports: readonly number[]): Uint8Array {
  const ranges = portRanges(ports);
  const sizes = ranges.map(([lo, hi]) => (lo === hi ? 12 : 20));
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total > 0xfffc) throw new RangeError(`too many port ranges for one filter (${ranges.length})`);
  const bc = new Uint8Array(total);
  const view = new DataView(bc.buffer);
  // The kernel reads ops in host byte order.
  const le = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  const op = (at: number, code: number, yes: number, no: number): void => {
    view.setUint8(at, code);
    view.setUint8(at + 1, yes);
    view.setUint16(at + 2, no, le);
  };
  let at = 0;
  ranges.forEach(([lo, hi], i) => {
    const next = at + sizes[i]!; // where the next range starts; `total` + 4 rejects after the last one
    const onFail = (from: number): number => (i === ranges.length - 1 ? total + 4 : next) - from;
    if (lo === hi) {
      op(at, BC_S_EQ, 8, onFail(at));
      op(at + 4, 0, 0, lo);
      op(at + 8, BC_JMP, 4, total - (at + 8));
    } else {
      op(at, BC_S_GE, 8, onFail(at));
      op(at + 4, 0, 0, lo);
      op(at + 8, BC_S_LE, 8, onFail(at + 8));
      op(at + 12, 0, 0, hi);
      op(at + 16, BC_JMP, 4, total - (at + 16));
    }
    at = next;
  });
  return bc;
}

/** Fills an InodeTable with the sockets on the watched ports; one implementation per way of asking the kernel. */
export interface SocketSource {
  /** 'bpf', 'netlink' or 'proc', written into the log's header. */
  readonly name: SourceName;
  /**
   * Adds the watched-port sockets to `table`: every established one with FLAG_PRESENT | FLAG_ESTABLISHED (the proc
   * source also adds the other states with FLAG_PRESENT). Returns how many established sockets it added.
   */
  fill(table: InodeTable): number;
  /** Releases kernel objects the source holds (the bpf link); idempotent. */
  close(): void;
}

/** The socket sources, fastest first. */
export type SourceName = 'bpf' | 'netlink' | 'proc';

/**
 * The kernel's sock_diag dump, filtered in the kernel by state and local port.
 *
 * Each family's dump walks every socket of the network namespace's TCP hash table (~0.14 µs each; on loopback
 * both ends of every connection), so a family is dumped only when it can hold connections on the ports: it has a
 * listener there (a LISTEN-only dump reads just the small listening table), or its last dump found some, or this
 * is one of the every FULL_RESCAN_EVERY samples that dump both anyway. A server on 0.0.0.0 then costs one walk,
 * not two. The ports always go in a filter program, even a single one that the request header could carry
 * (SockDiag.dump's `sport`): at a million connections the header saved ~80 ms of a walk that matched nothing but
 * nothing measurable (832 vs 834 ms) once the matching sockets' records were filled, and memlog's dumps always
 * fill (memlog/README.md, "Measured").
 */
export class NetlinkSource implements SocketSource {
  readonly name = 'netlink';
  private readonly filter: Uint8Array;
  private readonly active = new Map<number, boolean>();
  private samples = 0;

  constructor(private readonly addon: SockDiag, ports: readonly number[]) {
    this.filter = portFilter(ports);
  }

  fill(table: InodeTable): number {
    const full = this.samples++ % FULL_RESCAN_EVERY === 0;
    let n = 0;
    for (const family of [AF_INET, AF_INET6]) {
      if (!full && !this.active.get(family) && this.addon.dump(family, TCPF_LISTEN, this.filter).length === 0) continue;
      const inodes = this.addon.dump(family, TCPF_ESTABLISHED, this.filter);
      this.active.set(family, inodes.length > 0);
      for (let i = 0; i < inodes.length; i++) table.add(inodes[i]!, FLAG_PRESENT | FLAG_ESTABLISHED);
      n += inodes.length;
    }
    return n;
  }

  close(): void {}
}

/** /proc/<pid>/net/tcp and tcp6, as the watched process's network namespace sees them. */
export class ProcSource implements SocketSource {
  readonly name = 'proc';
  private readonly scanner: TcpTableScanner;

  constructor(private readonly pid: number | 'self', ports: readonly number[]) {
    this.scanner = new TcpTableScanner(ports);
  }

  fill(table: InodeTable): number {
    const counts = this.scanner.scanFile(`/proc/${this.pid}/net/tcp`, table);
    this.scanner.scanFile(`/proc/${this.pid}/net/tcp6`, table, counts);
    return counts.established;
  }

  close(): void {}
}

/** How the bpf source reads the table: its own walk of the established hash (bpf.ts), or the bpf_iter "tcp" target. */
export type BpfMethod = 'walk' | 'iter';

/** Options of BpfSource: the method ('auto': walk when the kernel allows it, else iter) and the iterator's layout. */
export interface BpfOptions {
  method?: BpfMethod | 'auto';
  /** The iterator's layout (default: the running kernel's, sk_ino when it has one). */
  iterLayout?: TcpIterLayout;
}

/**
 * Established sockets from eBPF: a program inside the kernel returns the 4-byte inode of each ESTABLISHED socket
 * on the watched ports, IPv4 and IPv6 in one pass, and nothing for the others (no inet_diag record per socket).
 *
 * Two ways, same answer (netlink.test.ts compares both with the netlink dump):
 * - 'walk' (the default where it loads): a raw tracepoint program run on demand reads this network namespace's
 *   established hash table itself, under RCU, in runs of bpf.ts WALK_BUDGET steps (bpf.ts, "The table walk").
 *   Needs struct sock's sk_ino (6.16+), bpf_rdonly_cast (6.2+) and the open-coded loop kfuncs (6.4+).
 * - 'iter': a bpf_iter "tcp" program, linked once; each fill() opens the iterator and reads it to the end. The
 *   kernel locks every socket before it runs the program, which costs about as much as netlink's records.
 * Both walk the network namespace of the calling process, as a netlink socket does, and need root (CAP_BPF and
 * CAP_PERFMON), the kernel's BTF and the addon. Unlike NetlinkSource there is no per-family choice to make.
 */
export class BpfSource implements SocketSource {
  readonly name = 'bpf';
  readonly method: BpfMethod;
  /** Why 'auto' did not take the walk ('' when it did, or a method was asked for). */
  readonly walkWhy: string = '';
  private fd = -1;
  private walk: WalkHandle | null = null;

  /** Loads the program for `ports`; throws the addon's error (verifier log included) or a BtfError. */
  constructor(private readonly addon: SockDiag, ports: readonly number[], options: BpfOptions = {}) {
    const method = options.method ?? 'auto';
    if (method !== 'iter') {
      try {
        this.walk = addon.walkOpen(tcpWalkProgram(kernelWalkLayout()), WALK_VALUE_SIZE, walkValue(ports));
      } catch (err) {
        if (method === 'walk') throw err;
        this.walkWhy = (err as Error).message.split('\n')[0]!;
      }
    }
    if (!this.walk) {
      const layout = options.iterLayout ?? kernelLayout();
      this.fd = addon.iterLoad(tcpIterProgram(layout, ports), layout.attachBtfId);
    }
    this.method = this.walk ? 'walk' : 'iter';
  }

  /** One pass: the inodes the program wrote, in the kernel's order. */
  read(): Uint32Array {
    if (this.walk) return this.addon.walkRun(this.walk);
    if (this.fd < 0) throw new Error('BpfSource: used after close()');
    return this.addon.iterRead(this.fd);
  }

  /** The last walk's runs and what it met ('walk' only). */
  stats(): { runs: number; buckets: number; restarts: number; faults: number } | null {
    return this.walk ? this.addon.walkStats(this.walk) : null;
  }

  fill(table: InodeTable): number {
    const inodes = this.read();
    const before = table.size;
    for (let i = 0; i < inodes.length; i++) table.add(inodes[i]!, FLAG_PRESENT | FLAG_ESTABLISHED);
    // Distinct sockets: a walk may meet a socket twice (a bucket walked again; a run resumed after a change).
    return table.size - before;
  }

  close(): void {
    if (this.walk) this.addon.walkClose(this.walk);
    this.walk = null;
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

const layouts = new Map<string, TcpIterLayout>();

/** The iterator's layout for the running kernel, read from its BTF once per process (~0.1 s). */
export function kernelLayout(via: InodeVia | 'auto' = 'auto'): TcpIterLayout {
  let l = layouts.get(via);
  if (!l) layouts.set(via, (l = tcpIterLayout(Btf.load(VMLINUX_BTF), via)));
  return l;
}

let walkLayout: TcpWalkLayout | null = null;

/** The table walk's layout for the running kernel, from its BTF (once per process). */
export function kernelWalkLayout(): TcpWalkLayout {
  return (walkLayout ??= tcpWalkLayout(Btf.load(VMLINUX_BTF)));
}

/** How to read the socket table: `auto` takes bpf, else netlink, else /proc. */
export type SocketsMode = 'auto' | SourceName;

/** Thrown when `--sockets bpf` or `--sockets netlink` was asked for and cannot be had. */
export class SocketSourceError extends Error {
  constructor(readonly code: 'C1M_MEMLOG_NO_BPF' | 'C1M_MEMLOG_NO_NETLINK', message: string) {
    super(message);
    this.name = 'SocketSourceError';
  }
}

function netNs(pid: number | 'self'): string | null {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return null;
  }
}

/** The bpf source, or why it cannot be had (`full`: the whole error, verifier log included; `why`: its first line). */
function tryBpf(addon: SockDiag, ports: readonly number[]): { source: BpfSource; why: ''; full: '' } | { source: null; why: string; full: string } {
  if (!existsSync(VMLINUX_BTF)) {
    const why = `the kernel has no BTF at ${VMLINUX_BTF} (CONFIG_DEBUG_INFO_BTF)`;
    return { source: null, why, full: why };
  }
  try {
    return { source: new BpfSource(addon, ports), why: '', full: '' };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    let full = e.message;
    if (e.code === 'SOCKDIAG_ERRNO_1') full += ' (loading eBPF programs needs root, or CAP_BPF and CAP_PERFMON)';
    const first = full.split('\n')[0]!;
    return { source: null, why: first.length > 300 ? `${first.slice(0, 300)}...` : first, full };
  }
}

/**
 * Picks the socket source for watching `pid` on `ports`. `auto` takes the first that works of bpf, netlink and
 * /proc, and `note` then says why the faster ones were passed over ('' when bpf's table walk was taken; bpf's
 * iterator comes with the reason the walk could not load). bpf and netlink both
 * need the addon and memlog in the watched process's network namespace; bpf also needs the kernel's BTF and the
 * privilege to load a program.
 */
export function openSocketSource(mode: SocketsMode, pid: number, ports: readonly number[]): { source: SocketSource; note: string } {
  if (mode === 'proc') return { source: new ProcSource(pid, ports), note: '' };
  const { addon, reason } = loadSockDiag();
  let why = reason;
  if (addon) {
    const mine = netNs('self');
    const theirs = netNs(pid);
    if (mine !== null && mine === theirs) {
      if (mode === 'netlink') return { source: new NetlinkSource(addon, ports), note: '' };
      const bpf = tryBpf(addon, ports);
      if (bpf.source) return { source: bpf.source, note: bpf.source.walkWhy ? `the bpf iterator, not the table walk: ${bpf.source.walkWhy}` : '' };
      if (mode === 'bpf') throw new SocketSourceError('C1M_MEMLOG_NO_BPF', `--sockets bpf: ${bpf.full}`);
      return { source: new NetlinkSource(addon, ports), note: `no bpf: ${bpf.why}` };
    }
    why = theirs === null ? `cannot read /proc/${pid}/ns/net` : `pid ${pid} is in another network namespace (${theirs}, memlog is in ${mine})`;
  }
  if (mode === 'bpf') throw new SocketSourceError('C1M_MEMLOG_NO_BPF', `--sockets bpf: ${why}`);
  if (mode === 'netlink') throw new SocketSourceError('C1M_MEMLOG_NO_NETLINK', `--sockets netlink: ${why}`);
  return { source: new ProcSource(pid, ports), note: `no bpf or netlink: ${why}` };
}
