// Counting a process tree's established connections without netstat.
//
// /proc/net/tcp (and tcp6) lists every TCP socket of the network namespace, one fixed-format line each:
//
//      sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
//       0: 0100007F:1F40 0100007F:9C4E 01 00000000:00000000 00:00000000 00000000  1000        0 41234 1 ...
//
// At a million connections that is ~150 MB of text per read, so the scan never splits lines or runs a regex: it
// walks a reused Buffer by byte offsets, reads the local port (4 hex digits right after the local address) and
// skips the line at once unless the port is watched, and only then reads the state and the inode. The result is a
// hash table from socket inode to state. Ownership comes from the other side: /proc/<pid>/fd/<n> links read
// `socket:[<inode>]` for every socket the process holds, so a connection counts when its inode is in both. The
// table lists sockets of every process on the host (the floodtest clients too, with the port on the remote side);
// the inode match is what restricts the count to the watched tree.
//
// readlink() of a million fds costs more than the table scan (~3-5 µs each), so SocketOwnership caches fd → inode
// per process and re-reads a link only when its cached inode has left the table (the socket closed, so the fd
// number may have been reused), for fds that are not TCP sockets (few: files, pipes, the epoll fd), and for a
// rolling 1/LINK_RECHECK_EVERY of the cached fds each sample, which bounds how long a rare stale entry (a socket
// closed here but kept alive by a dup() or fork elsewhere, its fd number reused) can last. Even listing the fd
// directory costs the kernel ~0.8 µs an fd, so an unchanged process is not listed at all (see SocketOwnership).

import { openSync, readSync, closeSync, readdirSync, readlinkSync, statSync } from 'node:fs';

/** TCP state codes as printed in /proc/net/tcp (include/net/tcp_states.h). */
export const TCP_ESTABLISHED = 0x01;
export const TCP_LISTEN = 0x0a;

/** Flag bits stored per inode in an InodeTable. */
export const FLAG_PRESENT = 1;
export const FLAG_ESTABLISHED = 2;
export const FLAG_COUNTED = 4;

/** List every process's fd directory at least once per this many samples (staggered), even when it looks unchanged. */
export const FULL_RESCAN_EVERY = 30;

/** Re-read each cached fd link at least once per this many samples: 1/LINK_RECHECK_EVERY of the fds per sample. */
export const LINK_RECHECK_EVERY = 300;

/** Bytes read from /proc per read() call: big enough that a 1M-line table takes ~150 calls. */
export const READ_CHUNK_BYTES = 1 << 20;

/** Open-addressing hash set of socket inodes (unsigned 32-bit, never 0) with a flag byte each. */
export class InodeTable {
  private keys: Uint32Array;
  private flags: Uint8Array;
  private mask: number;
  size = 0;

  constructor(initialCapacity = 1 << 12) {
    let cap = 16;
    while (cap < initialCapacity * 2) cap *= 2;
    this.keys = new Uint32Array(cap);
    this.flags = new Uint8Array(cap);
    this.mask = cap - 1;
  }

  /** Forgets every inode (keeps the memory). */
  clear(): void {
    if (this.size === 0) return;
    this.keys.fill(0);
    this.flags.fill(0);
    this.size = 0;
  }

  private slot(inode: number): number {
    let i = Math.imul(inode, 0x9e3779b1) >>> 0 & this.mask;
    const keys = this.keys;
    while (keys[i] !== 0 && keys[i] !== inode) i = (i + 1) & this.mask;
    return i;
  }

  /** ORs `flag` into the inode's flags, adding the inode if new. */
  add(inode: number, flag: number): void {
    let i = this.slot(inode);
    if (this.keys[i] === 0) {
      if ((this.size + 1) * 2 > this.keys.length) {
        this.grow();
        i = this.slot(inode);
      }
      this.keys[i] = inode;
      this.size++;
    }
    this.flags[i]! |= flag;
  }

  /** ORs `flag` into a present inode's flags (an absent one stays absent); returns its flags before, 0 when absent. */
  mark(inode: number, flag: number): number {
    const i = this.slot(inode);
    if (this.keys[i] === 0) return 0;
    const before = this.flags[i]!;
    this.flags[i] = before | flag;
    return before;
  }

  /** The inode's flags, 0 when absent. */
  get(inode: number): number {
    const i = this.slot(inode);
    return this.keys[i] === 0 ? 0 : this.flags[i]!;
  }

  /** Clears one flag bit on every inode (e.g. FLAG_COUNTED, to count again over the same scan). */
  clearFlag(flag: number): void {
    const flags = this.flags;
    for (let i = 0; i < flags.length; i++) flags[i]! &= ~flag;
  }

  private grow(): void {
    const oldKeys = this.keys;
    const oldFlags = this.flags;
    this.keys = new Uint32Array(oldKeys.length * 2);
    this.flags = new Uint8Array(oldKeys.length * 2);
    this.mask = this.keys.length - 1;
    for (let j = 0; j < oldKeys.length; j++) {
      const k = oldKeys[j]!;
      if (k !== 0) {
        const i = this.slot(k);
        this.keys[i] = k;
        this.flags[i] = oldFlags[j]!;
      }
    }
  }
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

const HEX = new Int8Array(256).fill(-1);
for (let c = 0; c < 10; c++) HEX[0x30 + c] = c;
for (let c = 0; c < 6; c++) {
  HEX[0x41 + c] = 10 + c;
  HEX[0x61 + c] = 10 + c;
}

/** What one table scan saw. */
export interface ScanCounts {
  /** Socket lines read. */
  lines: number;
  /** Lines whose local port is watched (any state). */
  onPorts: number;
  /** Of those, ESTABLISHED. */
  established: number;
}

/** Scans /proc/net/tcp-format tables for sockets on a set of local ports. One instance reuses one read buffer. */
export class TcpTableScanner {
  private readonly portMap = new Uint8Array(65536);
  private readonly buf: Buffer;

  constructor(ports: readonly number[], chunkBytes = READ_CHUNK_BYTES) {
    for (const p of ports) this.portMap[p] = 1;
    this.buf = Buffer.allocUnsafe(chunkBytes);
  }

  /**
   * Reads a whole table file and adds each watched-port socket with a nonzero inode to `table` (FLAG_PRESENT, plus
   * FLAG_ESTABLISHED when established). A missing file (no IPv6) counts as empty.
   */
  scanFile(path: string, table: InodeTable, counts: ScanCounts = { lines: 0, onPorts: 0, established: 0 }): ScanCounts {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return counts;
      throw err;
    }
    try {
      const buf = this.buf;
      let have = 0;
      for (;;) {
        const n = readSync(fd, buf, have, buf.length - have, null);
        if (n === 0) break;
        have += n;
        const used = this.scanBuffer(buf, 0, have, table, counts);
        buf.copy(buf, 0, used, have);
        have -= used;
        if (have === buf.length) throw new Error(`${path}: line longer than ${buf.length} bytes`);
      }
      if (have > 0) {
        buf[have] = 0x0a;
        this.scanBuffer(buf, 0, have + 1, table, counts);
      }
    } finally {
      closeSync(fd);
    }
    return counts;
  }

  /**
   * Parses the complete lines in `buf[start, end)` and returns the offset just past the last complete line.
   * Field positions follow the kernel's format string (net/ipv4/tcp_ipv4.c get_tcp4_sock, tcp6 alike):
   * `%4d: %08X:%04X %08X:%04X %02X %08X:%08X %02X:%08lX %08X %5u %8d %lu ...` with 32 hex digits per IPv6 address.
   */
  scanBuffer(buf: Buffer, start: number, end: number, table: InodeTable, counts: ScanCounts): number {
    const portMap = this.portMap;
    let p = start;
    while (p < end) {
      const eol = buf.indexOf(0x0a, p);
      if (eol < 0 || eol >= end) return p;
      // Skip the leading spaces of "%4d"; the header line ("  sl ...") has no ':' right after its digits.
      let q = p;
      while (q < eol && buf[q] === 0x20) q++;
      const firstDigit = q;
      while (q < eol && buf[q]! >= 0x30 && buf[q]! <= 0x39) q++;
      if (q === firstDigit || buf[q] !== 0x3a /* ':' */) {
        p = eol + 1;
        continue;
      }
      counts.lines++;
      const addr = q + 2; // after ": "
      const addrLen = buf[addr + 8] === 0x3a ? 8 : 32;
      const portAt = addr + addrLen + 1;
      const port = (HEX[buf[portAt]!]! << 12) | (HEX[buf[portAt + 1]!]! << 8) | (HEX[buf[portAt + 2]!]! << 4) | HEX[buf[portAt + 3]!]!;
      if (port < 0 || portMap[port] !== 1) {
        p = eol + 1;
        continue;
      }
      counts.onPorts++;
      const stateAt = portAt + 5 + addrLen + 6; // past ":PPPP ", the remote address and ":PPPP "
      const state = (HEX[buf[stateAt]!]! << 4) | HEX[buf[stateAt + 1]!]!;
      // After the state: " %08X:%08X %02X:%08lX %08X" is 39 fixed bytes, then uid, timeout and inode, each
      // space-padded and variable in width.
      let r = stateAt + 2 + 39;
      for (let field = 0; field < 2; field++) {
        while (r < eol && buf[r] === 0x20) r++;
        while (r < eol && buf[r] !== 0x20) r++;
      }
      while (r < eol && buf[r] === 0x20) r++;
      let inode = 0;
      while (r < eol) {
        const c = buf[r]! - 0x30;
        if (c < 0 || c > 9) break;
        inode = inode * 10 + c;
        r++;
      }
      if (state === TCP_ESTABLISHED) counts.established++;
      // Inode 0: no owner any more (TIME_WAIT, or closed and orphaned), so it cannot belong to the tree.
      if (inode !== 0) table.add(inode, state === TCP_ESTABLISHED ? FLAG_PRESENT | FLAG_ESTABLISHED : FLAG_PRESENT);
      p = eol + 1;
    }
    return p;
  }
}

/** Costs of one ownership pass, for benchmarks and `--verbose`. */
export interface OwnershipCounts {
  /** Established watched-port sockets held by the tree (each socket once even if several fds share it). */
  established: number;
  /** fd entries listed (0 for a process whose fd directory was not listed this pass). */
  fds: number;
  /** readlink() calls made (the rest came from the cache). */
  readlinks: number;
  /** Processes whose fd directory was listed (the others were unchanged, see FdCache). */
  listed: number;
}

/** How SocketOwnership reads /proc/<pid>/fd: plain node:fs here, the netlink addon's batch calls in netlink.ts. */
export interface FdReader {
  /** How many fds the pid has open, without listing them; 0 when unknown (then the process is always listed). */
  openCount(pid: number): number;
  /** The pid's open fd numbers, any order; throws ENOENT/ESRCH when the process is gone. */
  listFds(pid: number): ArrayLike<number>;
  /** The socket inode behind each fd (0: not a socket, or closed since it was listed). */
  socketInodes(pid: number, fds: Int32Array): ArrayLike<number>;
}

/** FdReader on node:fs (a string per fd: ~0.9 µs per listed fd, ~5 µs per readlink). */
export const fsFdReader: FdReader = {
  openCount: openFdCount,
  listFds(pid) {
    return readdirSync(`/proc/${pid}/fd`).map(Number);
  },
  socketInodes(pid, fds) {
    const out = new Uint32Array(fds.length);
    const dir = `/proc/${pid}/fd/`;
    for (let i = 0; i < fds.length; i++) {
      try {
        const link = readlinkSync(dir + fds[i]);
        // "socket:[12345]"
        if (link.charCodeAt(0) === 0x73 && link.startsWith('socket:[')) out[i] = Number(link.slice(8, -1)) >>> 0;
      } catch {
        // closed since it was listed: nothing to count
      }
    }
    return out;
  },
};

/** Open fds of a process without listing them: st_size of /proc/<pid>/fd (Linux 6.2+; 0 before, meaning unknown). */
export function openFdCount(pid: number): number {
  try {
    return statSync(`/proc/${pid}/fd`).size;
  } catch {
    return 0;
  }
}

interface FdCache {
  startTime: number;
  /** fd number → socket inode (0: not cached, or not a socket in the table). */
  inodes: Uint32Array;
  /** The fd numbers of the last listing, and how many there were. */
  list: Int32Array;
  listed: number;
  /** The open-fd count read just before that listing (a listing of our own pid includes its own directory fd). */
  openBefore: number;
}

/**
 * Maps a tree's fds to socket inodes, with the per-process cache described at the top of this file.
 *
 * Listing a process's fd directory costs the kernel ~0.6 µs an fd (~0.6 s for a million) even when nothing has
 * changed, so a process is listed again only when it may have changed: its open-fd count (st_size of the
 * directory, Linux 6.2+) differs from the last listing, or one of its cached sockets has left the table (closed,
 * so its fd number may now hold a new socket). Otherwise its cached fds are counted as they are. A change that
 * keeps the count (a file closed and a socket opened in the same interval) waits for the process's next listing,
 * at most FULL_RESCAN_EVERY samples away, staggered across processes so no one sample pays for all of them.
 */
export class SocketOwnership {
  private readonly caches = new Map<number, FdCache>();
  private samples = 0;

  constructor(private readonly fds: FdReader = fsFdReader) {}

  /**
   * Counts the established sockets in `table` held by the processes `procs` ({pid, startTime} pairs; the start
   * time tells a reused pid from the old process). Marks counted inodes with FLAG_COUNTED.
   */
  count(procs: readonly { pid: number; startTime: number }[], table: InodeTable): OwnershipCounts {
    const sample = this.samples++;
    const out: OwnershipCounts = { established: 0, fds: 0, readlinks: 0, listed: 0 };
    const live = new Set<number>();
    for (let p = 0; p < procs.length; p++) {
      const { pid, startTime } = procs[p]!;
      live.add(pid);
      let cache = this.caches.get(pid);
      if (!cache || cache.startTime !== startTime) {
        cache = { startTime, inodes: new Uint32Array(1024), list: new Int32Array(0), listed: -1, openBefore: 0 };
        this.caches.set(pid, cache);
      }
      const full = (sample + p) % FULL_RESCAN_EVERY === 0;
      const open = this.fds.openCount(pid);
      if (!full && cache.listed >= 0 && open > 0 && open === cache.openBefore && this.countCached(pid, cache, table, out, sample % LINK_RECHECK_EVERY)) continue;
      cache.openBefore = open;
      this.listAndCount(pid, cache, table, out);
    }
    for (const pid of this.caches.keys()) if (!live.has(pid)) this.caches.delete(pid);
    return out;
  }

  /** Counts a process's cached sockets; false (stop, list it) when one has left the table. */
  private countCached(pid: number, cache: FdCache, table: InodeTable, out: OwnershipCounts, slice: number): boolean {
    const { list, listed, inodes } = cache;
    // This sample's slice of cached links, re-read so a stale entry cannot outlive LINK_RECHECK_EVERY samples.
    const recheck: number[] = [];
    for (let k = 0; k < listed; k++) {
      const fd = list[k]!;
      if (fd % LINK_RECHECK_EVERY === slice && inodes[fd] !== 0) recheck.push(fd);
    }
    if (recheck.length > 0) {
      out.readlinks += recheck.length;
      const fresh = this.fds.socketInodes(pid, Int32Array.from(recheck));
      for (let k = 0; k < recheck.length; k++) {
        const inode = fresh[k]!;
        inodes[recheck[k]!] = inode !== 0 && table.get(inode) !== 0 ? inode : 0;
      }
    }
    // One probe per socket: mark() reads the flags and sets FLAG_COUNTED together (on a socket that is not
    // established the mark changes nothing that is counted).
    for (let k = 0; k < listed; k++) {
      const inode = inodes[list[k]!]!;
      if (inode === 0) continue;
      const flags = table.mark(inode, FLAG_COUNTED);
      if (flags === 0) return false;
      if ((flags & FLAG_ESTABLISHED) !== 0 && (flags & FLAG_COUNTED) === 0) out.established++;
    }
    return true;
  }

  private listAndCount(pid: number, cache: FdCache, table: InodeTable, out: OwnershipCounts): void {
    let fds: ArrayLike<number>;
    try {
      fds = this.fds.listFds(pid);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ESRCH') return; // exited meanwhile
      throw new Error(`cannot list /proc/${pid}/fd (${code}): memlog must run as the same user as the process, or as root`);
    }
    out.listed++;
    out.fds += fds.length;
    if (cache.list.length < fds.length) cache.list = new Int32Array(Math.max(fds.length, cache.list.length * 2));
    let max = -1;
    for (let k = 0; k < fds.length; k++) {
      cache.list[k] = fds[k]!;
      if (fds[k]! > max) max = fds[k]!;
    }
    cache.listed = fds.length;
    if (max >= cache.inodes.length) {
      let len = cache.inodes.length;
      while (len <= max) len *= 2;
      const grown = new Uint32Array(len);
      grown.set(cache.inodes);
      cache.inodes = grown;
    }
    // Links worth reading: fds with no cached socket, or whose cached socket is not in the table any more.
    const need: number[] = [];
    for (let k = 0; k < fds.length; k++) {
      const fd = fds[k]!;
      const inode = cache.inodes[fd]!;
      if (inode === 0 || table.get(inode) === 0) need.push(fd);
    }
    if (need.length > 0) {
      out.readlinks += need.length;
      const fresh = this.fds.socketInodes(pid, Int32Array.from(need));
      for (let k = 0; k < need.length; k++) {
        const inode = fresh[k]!;
        cache.inodes[need[k]!] = inode !== 0 && table.get(inode) !== 0 ? inode : 0; // only sockets in the table are worth caching
      }
    }
    for (let k = 0; k < fds.length; k++) {
      const inode = cache.inodes[fds[k]!]!;
      if (inode === 0) continue;
      const flags = table.mark(inode, FLAG_COUNTED);
      if ((flags & FLAG_ESTABLISHED) !== 0 && (flags & FLAG_COUNTED) === 0) out.established++;
    }
  }
}
