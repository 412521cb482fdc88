// Where memlog's socket table comes from: the kernel's sock_diag netlink dump (fast), or /proc/net/tcp text (anywhere).
//
// Counting a tree's connections needs the set of ESTABLISHED socket inodes on the watched local ports. Reading
// /proc/net/tcp makes the kernel print ~150 bytes for every TCP socket of the host, ours or not (~2 µs a line: with a
// million connections and their clients on the same host, ~4 s per sample). A SOCK_DIAG_BY_FAMILY dump runs a small
// filter program inside the kernel and returns only the matching sockets as binary records. Node cannot open a
// netlink socket, so the dump itself is in a small C addon (memlog/native/sockdiag.c, built by `npm run build`, which
// also lists and reads fd links without a string per fd); the filter program is built here, in TypeScript, where it
// is table-tested. Without the addon (no compiler, not Linux, C1M_NO_NATIVE=1) or when the watched process lives in
// another network namespace (a netlink socket sees only memlog's own), memlog reads /proc instead and says so in
// the log's header.

import { readlinkSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { loadAddon, type AddonLoad } from '../lib/native.js';
import { FLAG_ESTABLISHED, FLAG_PRESENT, FULL_RESCAN_EVERY, TcpTableScanner, fsFdReader, openFdCount, type FdReader, type InodeTable } from './tcptable.js';

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

/** Where the addon is built, relative to this file (dist/memlog/ or memlog/). */
export const ADDON_PATH = fileURLToPath(new URL('../../memlog/native/build/Release/sockdiag.node', import.meta.url));

let loaded: AddonLoad<SockDiag> | null = null;

/** Loads the addon once; `reason` says why it is unavailable. */
export function loadSockDiag(): AddonLoad<SockDiag> {
  return (loaded ??= loadAddon<SockDiag>(ADDON_PATH, 'netlink sock_diag'));
}

/** Sorted, merged [lo, hi] ranges of a port list. */
export function portRanges(ports: readonly number[]): [number, number][] {
  const sorted = [...new Set(ports)].sort((a, b) => a - b);
  const out: [number, number][] = [];
  for (const p of sorted) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw new RangeError(`port ${p} is not in 1-65535`);
    const last = out[out.length - 1];
    if (last && p === last[1] + 1) last[1] = p;
    else out.push([p, p]);
  }
  return out;
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
  /** 'netlink' or 'proc', written into the log's header. */
  readonly name: 'netlink' | 'proc';
  /**
   * Adds the watched-port sockets to `table`: every established one with FLAG_PRESENT | FLAG_ESTABLISHED (the proc
   * source also adds the other states with FLAG_PRESENT). Returns how many established sockets it added.
   */
  fill(table: InodeTable): number;
}

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
}

/** How to read the socket table: `auto` takes netlink when it can, else /proc. */
export type SocketsMode = 'auto' | 'netlink' | 'proc';

/** Thrown when `--sockets netlink` was asked for and cannot be had. */
export class SocketSourceError extends Error {
  readonly code = 'C1M_MEMLOG_NO_NETLINK';
}

function netNs(pid: number | 'self'): string | null {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return null;
  }
}

/**
 * Picks the socket source for watching `pid` on `ports`; `note` says why /proc was chosen in auto mode. Netlink
 * needs the addon and the same network namespace as the watched process.
 */
export function openSocketSource(mode: SocketsMode, pid: number, ports: readonly number[]): { source: SocketSource; note: string } {
  if (mode === 'proc') return { source: new ProcSource(pid, ports), note: '' };
  const { addon, reason } = loadSockDiag();
  let why = reason;
  if (addon) {
    const mine = netNs('self');
    const theirs = netNs(pid);
    if (mine !== null && mine === theirs) return { source: new NetlinkSource(addon, ports), note: '' };
    why = theirs === null ? `cannot read /proc/${pid}/ns/net` : `pid ${pid} is in another network namespace (${theirs}, memlog is in ${mine})`;
  }
  if (mode === 'netlink') throw new SocketSourceError(`--sockets netlink: ${why}`);
  return { source: new ProcSource(pid, ports), note: why };
}
