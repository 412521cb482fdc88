// c1m compare: two run folders side by side (ratio b / a) and an overlay of their memory over time.
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { parseLog } from '../memlog/row.js';
import { overlaySpec, writeChart } from './charts.js';
import type { MemSample, Summary } from './summary.js';

/** One compared figure. */
export interface CompareRow {
  section: string;
  metric: string;
  unit: string;
  a: number | null;
  b: number | null;
  /** b / a, null when either is missing or a is 0. */
  ratio: number | null;
}

/** The comparison. */
export interface Comparison {
  a: { dir: string; name: string; verdict: string; startedAt: string | null };
  b: { dir: string; name: string; verdict: string; startedAt: string | null };
  rows: CompareRow[];
  charts: string[];
}

function readJson<T>(path: string): T {
  if (!existsSync(path)) throw new Error(`${path} not found: is this a c1m run folder?`);
  return JSON.parse(readFileSync(path, 'utf8')) as T;
}

function readMem(dir: string): MemSample[] {
  const p = join(dir, 'mem.tsv');
  if (!existsSync(p)) return [];
  return parseLog(readFileSync(p, 'utf8')).map((r) => ({ unix: r.unix, rssKB: r.rssKb, conns: r.conns, pssKB: r.pssKb, treeRssKB: r.treeRssKb, treePssKB: r.treePssKb, cpuPct: r.cpuPct }));
}

/** The figures compared, in table order: [section, label, unit, getter]. */
const FIGURES: [string, string, string, (s: Summary) => number | null | undefined][] = [
  ['connections', 'asked', '', (s) => s.conns.asked],
  ['connections', 'reached', '', (s) => s.conns.reached],
  ['connections', 'ramp', 's', (s) => s.durations.rampSec],
  ['memory', 'idle RSS', 'MB', (s) => mb(s.memory.idleRssKB)],
  ['memory', 'plateau RSS', 'MB', (s) => mb(s.memory.plateauRssKB)],
  ['memory', 'plateau PSS', 'MB', (s) => mb(s.memory.plateauPssKB)],
  ['memory', 'peak RSS (messages)', 'MB', (s) => mb(s.memory.peakRssKB)],
  ['memory', 'KB/conn total RSS', 'KB', (s) => s.memory.kbPerConnRss],
  ['memory', 'KB/conn total PSS', 'KB', (s) => s.memory.kbPerConnPss],
  ['memory', 'KB/conn marginal RSS', 'KB', (s) => s.memory.kbPerConnRssMarginal],
  ['memory', 'KB/conn marginal PSS', 'KB', (s) => s.memory.kbPerConnPssMarginal],
  ['memory', 'KB/conn marginal USS', 'KB', (s) => s.memory.kbPerConnUssMarginal],
  ['memory', 'growth over messages (floor)', '%', (s) => s.memory.growthPct],
  ['messages', 'requested rate', 'msg/s', (s) => s.messages.requestedRate],
  ['messages', 'achieved rate', 'msg/s', (s) => s.messages.achievedRate],
  ['messages', 'sent', '', (s) => s.messages.sent],
  ['messages', 'accepted', '', (s) => s.messages.accepted],
  ['messages', 'chunks delivered', '', (s) => s.messages.chunksOut],
  ['messages', 'chunks received', '', (s) => s.messages.chunksReceived],
  ['latency', 'p50', 'ms', (s) => ms(s.latency?.p50)],
  ['latency', 'p99', 'ms', (s) => ms(s.latency?.p99)],
  ['latency', 'p99.9', 'ms', (s) => ms(s.latency?.p999)],
  ['latency', 'max', 'ms', (s) => ms(s.latency?.max)],
  ['cpu', 'server', '%', (s) => s.cpu.server],
  ['cpu', 'floodtest', '%', (s) => s.cpu.floodtest],
  ['cpu', 'msggen', '%', (s) => s.cpu.msggen],
  ['cpu', 'other load', '%', (s) => s.cpu.other],
];

function mb(kb: number | null | undefined): number | null {
  return kb == null ? null : Math.round((kb / 1024) * 10) / 10;
}
function ms(us: number | undefined): number | null {
  return us === undefined ? null : Math.round(us) / 1000;
}

/** Reads two run folders and compares them; writes the overlay chart (`chartOut` .svg/.png, or next to run b). */
export async function compareRuns(dirA: string, dirB: string, opts: { chartOut?: string } = {}): Promise<Comparison> {
  const a = resolve(dirA);
  const b = resolve(dirB);
  const sa = readJson<Summary>(join(a, 'summary.json'));
  const sb = readJson<Summary>(join(b, 'summary.json'));
  const ma = existsSync(join(a, 'manifest.json')) ? readJson<{ startedAt?: string }>(join(a, 'manifest.json')) : {};
  const mbf = existsSync(join(b, 'manifest.json')) ? readJson<{ startedAt?: string }>(join(b, 'manifest.json')) : {};
  const rows: CompareRow[] = FIGURES.map(([section, metric, unit, get]) => {
    const x = get(sa) ?? null;
    const y = get(sb) ?? null;
    return { section, metric, unit, a: x, b: y, ratio: x !== null && y !== null && x !== 0 ? Math.round((y / x) * 100) / 100 : null };
  });
  const nameA = basename(a);
  const nameB = basename(b) === nameA ? `${basename(dirname(b))}/${basename(b)}` : basename(b);
  const out = opts.chartOut ?? join(dirname(b), `compare-${nameA}-vs-${nameB}.svg`);
  const base = out.replace(/\.(svg|png)$/i, '');
  const spec = overlaySpec([{ name: nameA, mem: readMem(a) }, { name: nameB, mem: readMem(b) }], `c1m compare: ${nameA} vs ${nameB}`);
  const charts = (await writeChart(dirname(resolve(base)), basename(base), spec)).map((f) => join(dirname(resolve(base)), f));
  return {
    a: { dir: a, name: nameA, verdict: sa.verdict.line, startedAt: ma.startedAt ?? null },
    b: { dir: b, name: nameB, verdict: sb.verdict.line, startedAt: mbf.startedAt ?? null },
    rows,
    charts,
  };
}

const cell = (x: number | null): string => (x === null ? '–' : x.toLocaleString('en-US', { maximumFractionDigits: 3 }));

/** The comparison as a plain-text table. */
export function formatCompare(c: Comparison): string {
  const head = ['', 'metric', c.a.name, c.b.name, 'b / a'];
  const body = c.rows.map((r) => [r.section, r.metric + (r.unit ? ` (${r.unit})` : ''), cell(r.a), cell(r.b), r.ratio === null ? '–' : `${r.ratio.toFixed(2)}×`]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const fmt = (row: string[]): string => row.map((x, i) => (i >= 2 ? x.padStart(widths[i]!) : x.padEnd(widths[i]!))).join('  ').trimEnd();
  const lines = [fmt(head), fmt(widths.map((w) => '-'.repeat(w)))];
  let prev = '';
  for (const row of body) {
    lines.push(fmt(row[0] === prev ? ['', ...row.slice(1)] : row));
    prev = row[0]!;
  }
  lines.push('', `a: ${c.a.verdict}`, `b: ${c.b.verdict}`, `overlay chart: ${c.charts.join(', ')}`);
  return lines.join('\n') + '\n';
}
