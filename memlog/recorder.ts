// The recorder: every interval, one LogRow for a process tree, appended to a log like `tee -a`.

import { openSync, writeSync, closeSync, fstatSync } from 'node:fs';
import { hostname } from 'node:os';
import type { Writable } from 'node:stream';
import { type LogRow, encodeRow, headerLine, commentLine, formatDate } from './row.js';
import { readStat, readPssKb, processTree, pgrep, ancestors, isGone, kernelPageSize, readTcpMemKb, readCmdline, CLOCK_TICKS_PER_SEC, type ProcStat } from './proc.js';
import { InodeTable, SocketOwnership } from './tcptable.js';
import { openSocketSource, bestFdReader, SocketSourceError, type SocketsMode, type SourceName } from './netlink.js';

/** Limits of the recorder's options, named once (the CLI reports them in its errors). */
export const RECORDER_LIMITS = {
  /** Default sampling interval: the seed sampled about once a minute. */
  defaultIntervalMs: 60_000,
  minIntervalMs: 100,
  maxIntervalMs: 3_600_000,
  defaultPorts: [8000] as readonly number[],
  /** Between samples, check this often whether the process has exited, so a 60 s interval still stops promptly. */
  exitPollMs: 1000,
};

/** What to watch and where to write. */
export interface RecorderOptions {
  /** The process to watch (exactly one of pid and pgrep). */
  pid?: number;
  /** A regular expression matched against command lines, like `pgrep -f`; must name exactly one process tree. */
  pgrep?: string;
  /** Local ports whose established connections count (default [8000]). */
  ports?: readonly number[];
  /** Milliseconds between samples (default 60 s); the first sample is taken at once. */
  intervalMs?: number;
  /** Sum all descendants as well (default true). */
  tree?: boolean;
  /** A file path to append to, '-' for stdout, a writable stream, or null to keep rows in memory only. */
  out?: string | Writable | null;
  /** Also copy everything written (header, comments, rows) to this stream, like `tee` copies to stdout. */
  echo?: Writable;
  /** Called with every row after it is written, and how long its sample took (ms, process to row). */
  onRow?: (row: LogRow, ms: number) => void;
  /** Progress and notices (default: none). */
  log?: (line: string) => void;
  /** IANA zone for the date column (default: the local zone, like date(1)). */
  timeZone?: string;
  /** Where the socket table comes from (default 'auto': the bpf iterator, else the netlink dump, else /proc; see netlink.ts). */
  sockets?: SocketsMode;
}

/** Why the recorder stopped. */
export interface RecorderEnd {
  reason: 'stopped' | 'exited';
  /** Rows written. */
  rows: number;
  /** Unix time (s) of the sample that found the process gone, for reason 'exited'. */
  exitedAt?: number;
}

/** A running recorder. */
export interface RecorderHandle {
  /** The watched (root) pid. */
  readonly pid: number;
  /** The socket source in use: 'bpf', 'netlink' or 'proc'. */
  readonly sockets: SourceName;
  /** Why `auto` passed over the faster sources ('' when it took bpf, or a source was asked for). */
  readonly socketsNote: string;
  /** Every row recorded so far, oldest first. */
  readonly rows: readonly LogRow[];
  /** Takes and writes a sample now (off the schedule); null once the process has gone. */
  sampleNow(): LogRow | null;
  /** Stops sampling and closes the output file; resolves when done. Idempotent. */
  stop(): Promise<void>;
  /** Resolves when the recorder stops, by stop() or because the process exited. */
  readonly done: Promise<RecorderEnd>;
}

/** A recorder that cannot start; `code` is stable. */
export class RecorderError extends Error {
  constructor(readonly code: 'C1M_MEMLOG_NO_PROCESS' | 'C1M_MEMLOG_AMBIGUOUS' | 'C1M_MEMLOG_BAD_OPTION' | 'C1M_MEMLOG_NO_ACCESS' | 'C1M_MEMLOG_UNSUPPORTED', message: string) {
    super(message);
    this.name = 'RecorderError';
  }
}

/** Finds the one process tree whose root's command line matches `pattern`, skipping memlog itself and its ancestors. */
export function resolvePgrep(pattern: string): number {
  let re: RegExp;
  try {
    re = new RegExp(pattern);
  } catch (err) {
    throw new RecorderError('C1M_MEMLOG_BAD_OPTION', `--pgrep: '${pattern}' is not a regular expression (${(err as Error).message})`);
  }
  const matches = pgrep(re, new Set(ancestors(process.pid)));
  if (matches.length === 0) throw new RecorderError('C1M_MEMLOG_NO_PROCESS', `no process matches --pgrep '${pattern}'`);
  // A server with workers matches several times; keep the roots (matches with no matching ancestor).
  const set = new Set(matches);
  const roots = matches.filter((pid) => !ancestors(pid).slice(1).some((a) => set.has(a)));
  if (roots.length > 1) {
    throw new RecorderError('C1M_MEMLOG_AMBIGUOUS', `--pgrep '${pattern}' matches ${roots.length} separate processes (${roots.slice(0, 10).join(', ')}): use --pid`);
  }
  return roots[0]!;
}

/** Starts sampling: validates the options, takes the first sample at once, then one per interval. */
export function startRecorder(options: RecorderOptions): RecorderHandle {
  if (process.platform !== 'linux') throw new RecorderError('C1M_MEMLOG_UNSUPPORTED', 'memlog record reads /proc and runs on Linux only');
  if ((options.pid === undefined) === (options.pgrep === undefined)) {
    throw new RecorderError('C1M_MEMLOG_BAD_OPTION', 'give exactly one of --pid and --pgrep');
  }
  const intervalMs = options.intervalMs ?? RECORDER_LIMITS.defaultIntervalMs;
  if (!(intervalMs >= RECORDER_LIMITS.minIntervalMs && intervalMs <= RECORDER_LIMITS.maxIntervalMs)) {
    throw new RecorderError('C1M_MEMLOG_BAD_OPTION', `--interval: ${intervalMs}ms is out of range (${RECORDER_LIMITS.minIntervalMs}ms to 1h)`);
  }
  const ports = options.ports ?? RECORDER_LIMITS.defaultPorts;
  if (ports.length === 0 || ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
    throw new RecorderError('C1M_MEMLOG_BAD_OPTION', '--port: ports must be whole numbers 1 to 65535');
  }
  const pid = options.pid ?? resolvePgrep(options.pgrep!);
  if (!Number.isInteger(pid) || pid < 1) throw new RecorderError('C1M_MEMLOG_BAD_OPTION', `--pid: ${pid} is not a process id (1 or more)`);
  const rootStat = readStat(pid);
  if (isGone(rootStat)) throw new RecorderError('C1M_MEMLOG_NO_PROCESS', `no process with pid ${pid}`);
  const tree = options.tree ?? true;
  const mode = options.sockets ?? 'auto';
  if (!['auto', 'bpf', 'netlink', 'proc'].includes(mode)) throw new RecorderError('C1M_MEMLOG_BAD_OPTION', `--sockets: '${mode}' is not one of auto, bpf, netlink, proc`);
  let opened: ReturnType<typeof openSocketSource>;
  try {
    opened = openSocketSource(mode, pid, ports);
  } catch (err) {
    if (err instanceof SocketSourceError) throw new RecorderError('C1M_MEMLOG_UNSUPPORTED', err.message);
    throw err;
  }
  const source = opened.source;
  const log = options.log ?? (() => {});
  const described = { bpf: 'the bpf TCP iterator', netlink: 'the netlink sock_diag dump', proc: '/proc/net/tcp, slower at scale' }[source.name];
  // (A bpf source with a note is the iterator: the table walk comes without one.)
  if (opened.note) log(`memlog: counting connections from ${described} (${opened.note})`);
  const pageKb = kernelPageSize() / 1024;

  // Output: append like `tee -a`; the header goes only into a new or empty file.
  let fd = -1;
  let stream: Writable | null = null;
  let needHeader = true;
  if (typeof options.out === 'string' && options.out !== '-') {
    try {
      fd = openSync(options.out, 'a');
    } catch (err) {
      source.close();
      throw new RecorderError('C1M_MEMLOG_BAD_OPTION', `-o: cannot append to '${options.out}' (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    needHeader = fstatSync(fd).size === 0;
  } else if (options.out === '-') {
    stream = process.stdout;
  } else if (options.out) {
    stream = options.out;
  }
  const write = (text: string): void => {
    if (fd >= 0) writeSync(fd, text);
    else stream?.write(text);
    options.echo?.write(text);
  };
  if (needHeader) write(headerLine());
  const cmd = readCmdline(pid).slice(0, 200);
  write(commentLine(`memlog record pid=${pid} (${cmd}) ports=${ports.join(',')} interval=${intervalMs / 1000}s tree=${tree ? 'on' : 'off'} sockets=${source.name}${opened.note ? ` (${opened.note})` : ''} host=${hostname()} started ${new Date().toISOString()}`));

  const table = new InodeTable();
  const ownership = new SocketOwnership(bestFdReader());
  const prevTicks = new Map<string, number>();
  let prevAt = 0;
  const rows: LogRow[] = [];
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let resolveDone!: (end: RecorderEnd) => void;
  const done = new Promise<RecorderEnd>((r) => (resolveDone = r));

  const finish = (end: RecorderEnd): void => {
    if (stopped) return;
    stopped = true;
    if (timer) clearTimeout(timer);
    timer = null;
    if (fd >= 0) closeSync(fd);
    fd = -1;
    source.close();
    resolveDone(end);
  };

  const sample = (): LogRow | null => {
    if (stopped) return null;
    const began = performance.now();
    const now = new Date();
    const root = readStat(pid);
    if (isGone(root) || root!.startTime !== rootStat!.startTime) {
      const unix = Math.floor(now.getTime() / 1000);
      write(commentLine(`${formatDate(now, options.timeZone)}\t${unix}\tpid ${pid} exited; memlog stopped`));
      log(`memlog: pid ${pid} exited at ${now.toISOString()}; ${rows.length} rows recorded`);
      finish({ reason: 'exited', rows: rows.length, exitedAt: unix });
      return null;
    }
    const procs: ProcStat[] = [root!];
    if (tree) {
      for (const child of processTree(pid).slice(1)) {
        const st = readStat(child);
        if (!isGone(st)) procs.push(st!);
      }
    }
    const rssKb = root!.rssPages * pageKb;
    const pssKb = readPssKb(pid);
    let treeRssKb: number | null = null;
    let treePssKb: number | null = null;
    if (tree) {
      treeRssKb = 0;
      treePssKb = pssKb;
      for (const st of procs) {
        treeRssKb += st.rssPages * pageKb;
        if (st !== root && treePssKb !== null) {
          const p = readPssKb(st.pid);
          if (p !== null) treePssKb += p; // a child that just exited contributes nothing
        }
      }
    }

    table.clear();
    source.fill(table);
    const conns = ownership.count(procs, table).established;
    const tcpMemKb = readTcpMemKb(`/proc/${pid}/net/sockstat`);

    // CPU since the last sample, per (pid, start time) so reused pids and exited children don't go negative.
    const at = performance.now();
    let ticks = 0;
    const seen = new Set<string>();
    for (const st of procs) {
      const key = `${st.pid}:${st.startTime}`;
      seen.add(key);
      const before = prevTicks.get(key);
      ticks += before === undefined ? (prevAt === 0 ? 0 : st.cpuTicks) : Math.max(0, st.cpuTicks - before);
      prevTicks.set(key, st.cpuTicks);
    }
    for (const key of prevTicks.keys()) if (!seen.has(key)) prevTicks.delete(key);
    const cpuPct = prevAt === 0 ? null : (ticks / CLOCK_TICKS_PER_SEC / ((at - prevAt) / 1000)) * 100;
    prevAt = at;

    const memForRatio = tree ? treeRssKb! : rssKb;
    const row: LogRow = {
      date: formatDate(now, options.timeZone),
      // Whole seconds as in the seed; milliseconds only when samples come faster than one a second.
      unix: intervalMs < 1000 ? now.getTime() / 1000 : Math.floor(now.getTime() / 1000),
      rssKb,
      conns,
      pssKb,
      treeRssKb,
      treePssKb,
      tcpMemKb,
      cpuPct,
      kbPerConn: conns > 0 ? memForRatio / conns : null,
    };
    write(encodeRow(row));
    rows.push(row);
    options.onRow?.(row, performance.now() - began);
    return row;
  };

  // Samples on a fixed grid from the start (no drift); a slot missed because a sample ran long is skipped.
  const startedAt = performance.now();
  let slot = 0;
  let warnedSlow = false;
  const schedule = (): void => {
    if (stopped) return;
    const elapsed = performance.now() - startedAt;
    slot = Math.max(slot + 1, Math.ceil(elapsed / intervalMs));
    timer = setTimeout(() => {
      timer = null;
      try {
        const t = performance.now();
        sample();
        const took = performance.now() - t;
        if (took > intervalMs && !warnedSlow) {
          warnedSlow = true;
          log(`memlog: one sample took ${Math.round(took)} ms, longer than the ${intervalMs} ms interval: slots are skipped (use a longer --interval)`);
        }
      } catch (err) {
        log(`memlog: sample failed: ${(err as Error).message}`);
      }
      schedule();
    }, Math.max(0, slot * intervalMs - elapsed));
  };

  try {
    sample();
  } catch (err) {
    finish({ reason: 'stopped', rows: 0 });
    throw new RecorderError('C1M_MEMLOG_NO_ACCESS', (err as Error).message);
  }
  schedule();
  // A cheap liveness check between samples: one stat read; the exit is recorded as soon as it is seen.
  const poll = setInterval(() => {
    const st = readStat(pid);
    if (isGone(st) || st!.startTime !== rootStat!.startTime) sample();
  }, Math.min(intervalMs, RECORDER_LIMITS.exitPollMs));
  void done.then(() => clearInterval(poll));

  return {
    pid,
    sockets: source.name,
    socketsNote: opened.note,
    rows,
    sampleNow: sample,
    stop: async () => finish({ reason: 'stopped', rows: rows.length }),
    done,
  };
}
