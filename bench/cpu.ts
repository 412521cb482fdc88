// CPU and RSS of the run's parties (server, floodtest, msggen, memlog), each a process tree, from /proc.
import { readdirSync, readFileSync } from 'node:fs';

/** USER_HZ: utime/stime in /proc/<pid>/stat are in 1/100 s on Linux. */
const TICKS_PER_SEC = 100;
const PAGE_KB = 4;

interface Stat {
  ppid: number;
  ticks: number;
  rssKB: number;
}

function readStat(pid: number): Stat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    // f[n - 3] is field n of proc(5): ppid 4, utime 14, stime 15, rss 24.
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]), rssKB: Number(f[21]) * PAGE_KB };
  } catch {
    return undefined;
  }
}

/** The pid and all its descendants alive now (one scan of /proc). */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [root];
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    const st = readStat(pid);
    if (!st) continue;
    const list = children.get(st.ppid);
    if (list) list.push(pid);
    else children.set(st.ppid, [pid]);
  }
  const out: number[] = [];
  const stack = [root];
  while (stack.length > 0) {
    const p = stack.pop()!;
    out.push(p);
    for (const c of children.get(p) ?? []) stack.push(c);
  }
  return out;
}

/** One reading of a tree. */
export interface TreeReading {
  /** CPU seconds used by the processes alive now (exited children's time is lost; parties are long-lived). */
  cpuSec: number;
  rssKB: number;
  procs: number;
}

/** Reads CPU seconds and RSS summed over a process tree; undefined when the root is gone. */
export function readTree(root: number): TreeReading | undefined {
  if (!readStat(root)) return undefined;
  let ticks = 0;
  let rss = 0;
  let procs = 0;
  for (const pid of processTree(root)) {
    const st = readStat(pid);
    if (!st) continue;
    ticks += st.ticks;
    rss += st.rssKB;
    procs++;
  }
  return { cpuSec: ticks / TICKS_PER_SEC, rssKB: rss, procs };
}

/** Tracks CPU % of one party between readings and over phases. */
export class CpuMeter {
  private last: { t: number; cpu: number } | undefined;
  private marks = new Map<string, { t: number; cpu: number }>();
  /** Latest % of one core over the last interval. */
  pct = 0;
  /** Latest reading. */
  latest: TreeReading | undefined;

  constructor(readonly name: string, readonly pid: number) {}

  /** Takes a reading now; returns it (undefined once the process has gone). */
  sample(nowMs = Date.now()): TreeReading | undefined {
    const r = readTree(this.pid);
    if (!r) return undefined;
    if (this.last && nowMs > this.last.t) this.pct = (100 * (r.cpuSec - this.last.cpu)) / ((nowMs - this.last.t) / 1000);
    this.last = { t: nowMs, cpu: r.cpuSec };
    this.latest = r;
    return r;
  }

  /** Remembers the current cumulative CPU under a name (phase start/end). */
  mark(name: string): void {
    if (this.last) this.marks.set(name, { ...this.last });
  }

  /** Marks a process started now: all of its CPU time so far belongs after this mark. */
  markStart(name: string, nowMs = Date.now()): void {
    this.marks.set(name, { t: nowMs, cpu: 0 });
  }

  /** Average % of one core between two marks, or undefined if either is missing. */
  between(a: string, b: string): number | undefined {
    const x = this.marks.get(a);
    const y = this.marks.get(b);
    if (!x || !y || y.t <= x.t) return undefined;
    return (100 * (y.cpu - x.cpu)) / ((y.t - x.t) / 1000);
  }
}

/** Private (unshared) memory of a process tree in KB: Private_Clean + Private_Dirty from smaps_rollup (USS). */
export function readTreeUssKB(root: number): number | undefined {
  let total = 0;
  let seen = false;
  for (const pid of processTree(root)) {
    try {
      const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'latin1');
      for (const m of text.matchAll(/^Private_(?:Clean|Dirty):\s+(\d+) kB/gm)) total += Number(m[1]);
      seen = true;
    } catch {
      /* gone, or no permission */
    }
  }
  return seen ? total : undefined;
}
