// Readers for the /proc files memlog samples: a process's stat line, its PSS, its descendants, the kernel's TCP
// memory, the page size. Linux only; every reader returns null (never throws) when the process has gone.

import { readFileSync, readdirSync, openSync, readSync, closeSync } from 'node:fs';

/** Clock ticks per second for utime/stime in /proc/<pid>/stat: USER_HZ, fixed at 100 in Linux's user ABI. */
export const CLOCK_TICKS_PER_SEC = 100;

/** The fields memlog uses from /proc/<pid>/stat. */
export interface ProcStat {
  pid: number;
  /** Executable name (the `comm` field, without parentheses). */
  comm: string;
  /** One-letter state: R, S, D, Z (zombie), X (dead), ... */
  state: string;
  ppid: number;
  /** utime + stime, in clock ticks. */
  cpuTicks: number;
  /** Start time after boot, in clock ticks: (pid, startTime) names a process even when pids are reused. */
  startTime: number;
  /** Resident set in pages (the number `ps -o rss` shows, ×page size). */
  rssPages: number;
}

function readSmall(path: string): string | null {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return null;
  }
}

/** Parses the text of /proc/<pid>/stat (the comm field may itself contain spaces and parentheses). */
export function parseStat(text: string): ProcStat | null {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return null;
  const f = text.slice(close + 2).trim().split(' ');
  // f[0] is field 3 (state) of proc(5); field n is f[n - 3].
  if (f.length < 22) return null;
  return {
    pid: Number(text.slice(0, open).trim()),
    comm: text.slice(open + 1, close),
    state: f[0]!,
    ppid: Number(f[1]),
    cpuTicks: Number(f[11]) + Number(f[12]),
    startTime: Number(f[19]),
    rssPages: Number(f[21]),
  };
}

/** Reads /proc/<pid>/stat, or null if the process is gone. */
export function readStat(pid: number): ProcStat | null {
  const text = readSmall(`/proc/${pid}/stat`);
  return text === null ? null : parseStat(text);
}

/** True when the stat says the process has exited (zombie or dead). */
export function isGone(st: ProcStat | null): boolean {
  return st === null || st.state === 'Z' || st.state === 'X';
}

/** Pss in KB from /proc/<pid>/smaps_rollup, or null if unreadable (gone, or not ours). */
export function readPssKb(pid: number): number | null {
  const text = readSmall(`/proc/${pid}/smaps_rollup`);
  if (text === null) return null;
  const m = /^Pss:\s+(\d+) kB/m.exec(text);
  return m ? Number(m[1]) : null;
}

/** The process's command line, arguments joined by spaces ('' for kernel threads or when gone). */
export function readCmdline(pid: number): string {
  const text = readSmall(`/proc/${pid}/cmdline`);
  return text === null ? '' : text.replace(/\0+$/, '').replace(/\0/g, ' ');
}

/** Direct children of `pid`, from /proc/<pid>/task/<tid>/children (every thread can fork), or null if unsupported. */
function childrenFromTaskFiles(pid: number): number[] | null {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const tid of tids) {
    const text = readSmall(`/proc/${pid}/task/${tid}/children`);
    if (text === null) {
      if (tid === String(pid)) return null; // kernel without CONFIG_PROC_CHILDREN
      continue;
    }
    for (const s of text.split(' ')) if (s !== '' && s !== '\n') out.push(Number(s));
  }
  return out;
}

/** Every live pid with its parent, from a full /proc scan (fallback when task/children files are missing). */
function allParents(): Map<number, number[]> {
  const byParent = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(Number(name));
    if (!st) continue;
    const list = byParent.get(st.ppid);
    if (list) list.push(st.pid);
    else byParent.set(st.ppid, [st.pid]);
  }
  return byParent;
}

/** `pid` followed by all its descendants (breadth first). */
export function processTree(pid: number): number[] {
  const out = [pid];
  let byParent: Map<number, number[]> | null = null;
  for (let i = 0; i < out.length; i++) {
    let kids = byParent ? byParent.get(out[i]!) ?? [] : childrenFromTaskFiles(out[i]!);
    if (kids === null) {
      byParent = allParents();
      kids = byParent.get(out[i]!) ?? [];
    }
    for (const k of kids) if (!out.includes(k)) out.push(k);
  }
  return out;
}

/** All live pids whose command line matches `pattern` (like `pgrep -f`), except `exclude`. */
export function pgrep(pattern: RegExp, exclude: ReadonlySet<number>): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (exclude.has(pid)) continue;
    const cmd = readCmdline(pid);
    if (cmd !== '' && pattern.test(cmd)) out.push(pid);
  }
  return out.sort((a, b) => a - b);
}

/** `pid` and its ancestors up to init (so pgrep can skip the shell that launched memlog with the pattern in it). */
export function ancestors(pid: number): number[] {
  const out: number[] = [];
  for (let p = pid; p > 0 && out.length < 1000; ) {
    out.push(p);
    const st = readStat(p);
    if (!st) break;
    p = st.ppid;
  }
  return out;
}

let pageSize = 0;

/** The kernel page size in bytes, from KernelPageSize in /proc/self/smaps (read once). */
export function kernelPageSize(): number {
  if (pageSize) return pageSize;
  pageSize = 4096;
  try {
    const fd = openSync('/proc/self/smaps', 'r');
    try {
      const buf = Buffer.alloc(8192);
      const n = readSync(fd, buf, 0, buf.length, null);
      const m = /KernelPageSize:\s+(\d+) kB/.exec(buf.toString('latin1', 0, n));
      if (m) pageSize = Number(m[1]) * 1024;
    } finally {
      closeSync(fd);
    }
  } catch {
    // keep 4096
  }
  return pageSize;
}

/**
 * Kernel TCP buffer memory in KB from a sockstat file (`TCP: inuse 5 orphan 0 tw 0 alloc 7 mem 1`, mem in pages).
 * It covers every TCP socket of the network namespace, not just the watched process.
 */
export function readTcpMemKb(path = '/proc/net/sockstat'): number | null {
  const text = readSmall(path);
  if (text === null) return null;
  const m = /^TCP:.*\bmem (\d+)/m.exec(text);
  return m ? (Number(m[1]) * kernelPageSize()) / 1024 : null;
}
