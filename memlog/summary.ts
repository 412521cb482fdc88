// Figures from a memory log: idle, peak and plateau memory, KB per connection, and growth over the plateau.
//
// The plateau is the longest run of consecutive samples holding at least PLATEAU_SHARE of the peak connection
// count: the time the load was fully on. Its memory is the median over those samples (robust to a GC sawtooth);
// its growth is the least-squares slope of memory against time, so a leak (the seed's 90 → 125 MB in ten minutes
// at a constant 10,001 connections) shows as MB per hour and as a warning when the fitted rise over the plateau
// reaches GROWTH_WARN_SHARE of where it started.

import type { LogRow } from './row.js';
import { isRich } from './row.js';

/** Samples count as the plateau when they hold at least this share of the peak connection count. */
export const PLATEAU_SHARE = 0.99;
/** Leading samples count as idle while connections stay at or below this share of the peak (or 1 connection). */
export const IDLE_SHARE = 0.01;
/** Warn when memory rises by this share of its plateau-start value over the plateau (fitted). */
export const GROWTH_WARN_SHARE = 0.1;

/** Memory columns summarized, in report order. */
export type MemoryColumn = 'rss_kb' | 'pss_kb' | 'tree_rss_kb' | 'tree_pss_kb';
const FIELDS: Record<MemoryColumn, 'rssKb' | 'pssKb' | 'treeRssKb' | 'treePssKb'> = {
  rss_kb: 'rssKb', pss_kb: 'pssKb', tree_rss_kb: 'treeRssKb', tree_pss_kb: 'treePssKb',
};

/** Figures for one memory column. KB values; null where the log has no data for them. */
export interface SeriesSummary {
  column: MemoryColumn;
  idleKb: number | null;
  peakKb: number;
  /** Minutes after the first sample when the peak was seen. */
  peakAtMin: number;
  /** Median over the plateau. */
  plateauKb: number | null;
  plateauStartKb: number | null;
  plateauEndKb: number | null;
  /** plateauKb / plateau connections. */
  kbPerConn: number | null;
  /** (plateauKb − idleKb) / plateau connections: what one more connection costs. */
  marginalKbPerConn: number | null;
  /** Least-squares slope over the plateau, MiB (1024 KB) per hour. */
  growthMbPerHour: number | null;
  /** Fitted rise over the whole plateau as a share of the fitted start (0.38 = +38%). */
  growthShare: number | null;
}

/** The whole summary; `warnings` are one-line, human-readable. */
export interface Summary {
  format: 'seed' | 'rich';
  rows: number;
  durationMin: number;
  peakConns: number;
  idle: { rows: number; conns: number } | null;
  plateau: { fromMin: number; toMin: number; rows: number; conns: number } | null;
  series: SeriesSummary[];
  cpuPctMedian: number | null;
  tcpMemKbPeak: number | null;
  warnings: string[];
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Least-squares line through (x, y): slope and intercept; null when the xs have no spread (bench uses it too). */
export function fit(xs: readonly number[], ys: readonly number[]): { slope: number; intercept: number } | null {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i]! - mx) * (ys[i]! - my);
    sxx += (xs[i]! - mx) ** 2;
  }
  if (sxx === 0) return null;
  const slope = sxy / sxx;
  return { slope, intercept: my - slope * mx };
}

/** Summarizes rows (any order; sorted by time here). Throws on an empty log. */
export function summarize(input: readonly LogRow[]): Summary {
  if (input.length === 0) throw new Error('the log has no samples');
  const rows = [...input].sort((a, b) => a.unix - b.unix);
  const t0 = rows[0]!.unix;
  const minutes = (r: LogRow): number => (r.unix - t0) / 60;
  const peakConns = Math.max(...rows.map((r) => r.conns));
  const warnings: string[] = [];

  // Idle: the leading samples before connections arrive.
  let idleEnd = 0;
  const idleMax = Math.max(1, peakConns * IDLE_SHARE);
  while (idleEnd < rows.length && rows[idleEnd]!.conns <= idleMax) idleEnd++;
  const idleRows = rows.slice(0, idleEnd);
  if (idleRows.length === 0) warnings.push('no idle sample before connections arrived: idle and marginal KB/conn unknown');

  // Plateau: the longest run of samples at ≥ PLATEAU_SHARE of the peak connections.
  let best: [number, number] | null = null;
  if (peakConns > 0) {
    let start = -1;
    for (let i = 0; i <= rows.length; i++) {
      const on = i < rows.length && rows[i]!.conns >= peakConns * PLATEAU_SHARE;
      if (on && start < 0) start = i;
      if (!on && start >= 0) {
        if (!best || i - start > best[1] - best[0]) best = [start, i];
        start = -1;
      }
    }
  } else {
    warnings.push('no connections in the log: no plateau, no KB/conn');
  }
  const plateauRows = best ? rows.slice(best[0], best[1]) : [];
  const plateauConns = plateauRows.length ? median(plateauRows.map((r) => r.conns)) : 0;
  const plateauSpanMin = plateauRows.length ? minutes(plateauRows[plateauRows.length - 1]!) - minutes(plateauRows[0]!) : 0;

  const series: SeriesSummary[] = [];
  for (const column of Object.keys(FIELDS) as MemoryColumn[]) {
    const field = FIELDS[column];
    const have = rows.filter((r) => r[field] !== null);
    if (have.length === 0) continue;
    const value = (r: LogRow): number => r[field] as number;
    let peak = have[0]!;
    for (const r of have) if (value(r) > value(peak)) peak = r;
    const idleVals = idleRows.filter((r) => r[field] !== null).map(value);
    const idleKb = idleVals.length ? median(idleVals) : null;
    const pl = plateauRows.filter((r) => r[field] !== null);
    let plateauKb: number | null = null;
    let growthMbPerHour: number | null = null;
    let growthShare: number | null = null;
    let plateauStartKb: number | null = null;
    let plateauEndKb: number | null = null;
    if (pl.length > 0) {
      plateauKb = median(pl.map(value));
      plateauStartKb = value(pl[0]!);
      plateauEndKb = value(pl[pl.length - 1]!);
      if (pl.length >= 3 && plateauSpanMin > 0) {
        const xs = pl.map(minutes);
        const line = fit(xs, pl.map(value)); // KB per minute
        if (line !== null) {
          const { slope, intercept } = line;
          growthMbPerHour = (slope * 60) / 1024;
          const fittedStart = intercept + slope * xs[0]!;
          growthShare = fittedStart > 0 ? (slope * (xs[xs.length - 1]! - xs[0]!)) / fittedStart : null;
        }
      }
    }
    const s: SeriesSummary = {
      column,
      idleKb,
      peakKb: value(peak),
      peakAtMin: minutes(peak),
      plateauKb,
      plateauStartKb,
      plateauEndKb,
      kbPerConn: plateauKb !== null && plateauConns > 0 ? plateauKb / plateauConns : null,
      marginalKbPerConn: plateauKb !== null && idleKb !== null && plateauConns > 0 ? (plateauKb - idleKb) / plateauConns : null,
      growthMbPerHour,
      growthShare,
    };
    series.push(s);
    if (growthShare !== null && growthShare >= GROWTH_WARN_SHARE) {
      warnings.push(`${column} grew ${(growthShare * 100).toFixed(0)}% over the ${plateauSpanMin.toFixed(1)}-minute plateau ` +
        `(${mb(s.plateauStartKb!)} → ${mb(s.plateauEndKb!)} MiB, ${s.growthMbPerHour!.toFixed(1)} MiB/h at a steady ${Math.round(plateauConns)} connections): memory creep`);
    }
  }
  if (plateauRows.length > 0 && plateauRows.length < 3) warnings.push(`plateau has only ${plateauRows.length} sample(s): growth not estimated`);

  const cpu = rows.map((r) => r.cpuPct).filter((v): v is number => v !== null);
  const tcp = rows.map((r) => r.tcpMemKb).filter((v): v is number => v !== null);
  return {
    format: isRich(rows) ? 'rich' : 'seed',
    rows: rows.length,
    durationMin: minutes(rows[rows.length - 1]!),
    peakConns,
    idle: idleRows.length ? { rows: idleRows.length, conns: Math.max(...idleRows.map((r) => r.conns)) } : null,
    plateau: plateauRows.length
      ? { fromMin: minutes(plateauRows[0]!), toMin: minutes(plateauRows[plateauRows.length - 1]!), rows: plateauRows.length, conns: plateauConns }
      : null,
    series,
    cpuPctMedian: cpu.length ? median(cpu) : null,
    tcpMemKbPeak: tcp.length ? Math.max(...tcp) : null,
    warnings,
  };
}

function mb(kb: number): string {
  return (kb / 1024).toFixed(1);
}

/** The summary as aligned text lines for a terminal (WARN lines last). */
export function formatSummary(s: Summary): string {
  const out: string[] = [];
  const f1 = (v: number | null, unit = ''): string => (v === null ? '-' : v.toFixed(1) + unit);
  out.push(`samples ${s.rows} over ${s.durationMin.toFixed(1)} min (${s.format} format), peak ${s.peakConns} connections`);
  out.push(s.idle ? `idle: first ${s.idle.rows} sample(s), ≤ ${s.idle.conns} connections` : 'idle: none');
  out.push(s.plateau
    ? `plateau: ${s.plateau.rows} samples from ${s.plateau.fromMin.toFixed(1)} to ${s.plateau.toMin.toFixed(1)} min at ${Math.round(s.plateau.conns)} connections`
    : 'plateau: none');
  const head = ['column', 'idle MiB', 'peak MiB', 'plateau MiB', 'KB/conn', 'marginal KB/conn', 'growth MiB/h', 'growth'];
  const table = [head, ...s.series.map((x) => [
    x.column,
    x.idleKb === null ? '-' : mb(x.idleKb),
    mb(x.peakKb),
    x.plateauKb === null ? '-' : mb(x.plateauKb),
    x.kbPerConn === null ? '-' : x.kbPerConn.toFixed(2),
    x.marginalKbPerConn === null ? '-' : x.marginalKbPerConn.toFixed(2),
    f1(x.growthMbPerHour),
    x.growthShare === null ? '-' : `${x.growthShare >= 0 ? '+' : ''}${(x.growthShare * 100).toFixed(0)}%`,
  ])];
  const widths = head.map((_, c) => Math.max(...table.map((r) => r[c]!.length)));
  for (const r of table) out.push(r.map((v, c) => (c === 0 ? v.padEnd(widths[c]!) : v.padStart(widths[c]!))).join('  '));
  if (s.cpuPctMedian !== null) out.push(`cpu: median ${s.cpuPctMedian.toFixed(1)}% of one core`);
  if (s.tcpMemKbPeak !== null) out.push(`kernel TCP memory (whole host): peak ${mb(s.tcpMemKbPeak)} MiB`);
  for (const w of s.warnings) out.push(`WARN ${w}`);
  return out.join('\n') + '\n';
}
