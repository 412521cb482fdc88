// Charts of a run: memory/connections/KB-per-connection through memlog's plot, plus the charts only bench can
// draw (delivery latency percentiles over time; two runs' memory overlaid), in the same style: vega-lite compiled
// and rendered headless to SVG, and @resvg/resvg-js for the PNG.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import { PLOT_LIMITS, plotLog, svgToPng } from '../memlog/plot.js';
import { parseLog } from '../memlog/row.js';
import type { MemSample, Phases } from './summary.js';

/** Image size and look: memlog's, so a run's charts match its memory chart. */
export const CHART_STYLE = {
  width: PLOT_LIMITS.width - 90,
  height: PLOT_LIMITS.memoryHeight,
  smallHeight: PLOT_LIMITS.smallPanelHeight,
  font: PLOT_LIMITS.font,
} as const;

/** Most points drawn per series; longer series are downsampled by keeping every k-th point and the last. */
export const MAX_POINTS = 1500;

/** Keeps at most `max` points, evenly spaced, always including the last. */
export function downsample<T>(rows: readonly T[], max = MAX_POINTS): T[] {
  if (rows.length <= max) return [...rows];
  const step = Math.ceil(rows.length / max);
  const out = rows.filter((_, i) => i % step === 0);
  if (out[out.length - 1] !== rows[rows.length - 1]) out.push(rows[rows.length - 1]!);
  return out;
}

/**
 * Downsampling for per-interval latency: at most `max` rows, each window of k consecutive samples becoming its last
 * sample with, in `field`, the summed count and the WORST of each percentile, so a one-second spike survives
 * (keeping every k-th sample would drop it). Returns the rows and k (1 = untouched).
 */
export function worstPerWindow(rows: readonly Record<string, unknown>[], field: string, max = MAX_POINTS): { rows: Record<string, unknown>[]; window: number } {
  if (rows.length <= max) return { rows: [...rows], window: 1 };
  const k = Math.ceil(rows.length / max);
  const out: Record<string, unknown>[] = [];
  for (let i = 0; i < rows.length; i += k) {
    const group = rows.slice(i, i + k);
    const merged: Record<string, number> = { count: 0 };
    for (const r of group) {
      const lat = r[field] as Record<string, number> | undefined;
      if (!lat || !(lat.count! > 0)) continue;
      merged.count! += lat.count!;
      for (const key of ['p50', 'p90', 'p99', 'p999', 'max']) if (typeof lat[key] === 'number') merged[key] = Math.max(merged[key] ?? 0, lat[key]!);
    }
    out.push({ ...group[group.length - 1]!, [field]: merged });
  }
  return { rows: out, window: k };
}

/** Renders a vega-lite spec to SVG text. */
export async function toSvg(spec: vl.TopLevelSpec): Promise<string> {
  const compiled = vl.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Writes `<base>.svg` and `<base>.png` into `dir`; returns the two file names. */
export async function writeChart(dir: string, base: string, spec: vl.TopLevelSpec): Promise<string[]> {
  const svg = await toSvg(spec);
  writeFileSync(join(dir, `${base}.svg`), svg);
  writeFileSync(join(dir, `${base}.png`), svgToPng(svg));
  return [`${base}.svg`, `${base}.png`];
}

const config = {
  font: CHART_STYLE.font,
  view: { stroke: '#ccc' },
  axis: { labelFontSize: 11, titleFontSize: 12, gridColor: '#e6e6e6' },
  legend: { labelFontSize: 11, titleFontSize: 11, orient: 'top' as const, direction: 'horizontal' as const, padding: 2, offset: 4, symbolType: 'stroke', symbolStrokeWidth: 2.5 },
};
const titleStyle = { anchor: 'start' as const, fontSize: 16, subtitleFontSize: 11, subtitleColor: '#555' };

/** One point of the latency chart. */
interface LatPoint {
  minutes: number;
  percentile: string;
  ms: number;
}

/** Delivery panel titles: per interval (floodtest's `intervalLatency`) or, for runs recorded before it, cumulative. */
export const DELIVERY_TITLES = {
  interval: 'delivery: msggen scheduled send → floodtest arrival (percentiles per second)',
  cumulative: 'delivery: msggen scheduled send → floodtest arrival (cumulative percentiles since the start; run recorded without per-second latency)',
} as const;

/**
 * Latency percentiles (ms, log scale) against minutes since the first message, in two panels:
 * - delivery (msggen's scheduled send → floodtest's arrival), from floodtest's samples: per sample interval
 *   (`intervalLatency`) so a spike shows where it happened; runs recorded before floodtest wrote it only have the
 *   cumulative `latency` since its start, plotted instead, with the panel title saying so (there a burst is a step);
 * - publish (scheduled send → the server's ack), from msggen's samples, per second.
 * Intervals without messages have no point.
 */
export function latencySpec(
  floodSamples: readonly Record<string, unknown>[],
  msggenSamples: readonly Record<string, unknown>[],
  msgStartMs: number | undefined,
  title: string,
): vl.TopLevelSpec | undefined {
  const keys: [string, string][] = [['p50', 'p50'], ['p90', 'p90'], ['p99', 'p99'], ['p999', 'p99.9'], ['max', 'max']];
  let window = 1;
  const points = (rows: readonly Record<string, unknown>[], minutesOf: (r: Record<string, unknown>) => number | undefined, field = 'latency'): LatPoint[] => {
    const pts: LatPoint[] = [];
    const samples = rows.filter((r) => r.type === 'sample');
    let kept: Record<string, unknown>[];
    if (field === 'intervalLatency') ({ rows: kept, window } = worstPerWindow(samples, field));
    else kept = downsample(samples);
    for (const s of kept) {
      const lat = s[field] as Record<string, number> | undefined;
      const minutes = minutesOf(s);
      if (!lat || !(lat.count! > 0) || minutes === undefined) continue;
      for (const [k, label] of keys) if (typeof lat[k] === 'number') pts.push({ minutes: Math.round(minutes * 1000) / 1000, percentile: label, ms: Math.max(0.001, lat[k]! / 1000) });
    }
    return pts;
  };
  // floodtest samples carry wall-clock `ts` (ms); msggen samples carry `t`, seconds since msggen (= the messages) started.
  // Per interval when the run's floodtest wrote `intervalLatency` (every sample has it then), else cumulative.
  const perInterval = floodSamples.some((s) => s.type === 'sample' && typeof s.intervalLatency === 'object' && s.intervalLatency !== null);
  const delivery = points(floodSamples, (s) => (typeof s.ts === 'number' ? (s.ts - (msgStartMs ?? s.ts)) / 60_000 : undefined), perInterval ? 'intervalLatency' : 'latency');
  const publish = points(msggenSamples, (s) => (typeof s.t === 'number' ? s.t / 60 : undefined));
  if (delivery.length === 0 && publish.length === 0) return undefined;
  const panel = (pts: LatPoint[], what: string, xTitle: boolean) => ({
    width: CHART_STYLE.width,
    height: pts === delivery ? CHART_STYLE.height : CHART_STYLE.smallHeight + 60,
    title: { text: what, fontSize: 12, anchor: 'start' as const, fontWeight: 'normal' as const },
    data: { values: pts },
    mark: { type: 'line' as const, strokeWidth: 1.5 },
    encoding: {
      x: { field: 'minutes', type: 'quantitative' as const, title: xTitle ? 'minutes since the first message' : null },
      y: { field: 'ms', type: 'quantitative' as const, title: 'latency (ms, log scale)', scale: { type: 'log' as const } },
      color: { field: 'percentile', type: 'nominal' as const, sort: keys.map((k) => k[1]), title: null },
    },
  });
  const panels = [];
  const deliveryTitle = !perInterval ? DELIVERY_TITLES.cumulative : window > 1 ? `${DELIVERY_TITLES.interval}, worst of each ${window} samples` : DELIVERY_TITLES.interval;
  if (delivery.length) panels.push(panel(delivery, deliveryTitle, publish.length === 0));
  if (publish.length) panels.push(panel(publish, 'publish: msggen scheduled send → server ack (percentiles per second)', true));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: title, subtitle: 'latency percentiles over the message phase', ...titleStyle },
    background: 'white',
    padding: 12,
    config,
    vconcat: panels,
  } as vl.TopLevelSpec;
}

/** Memory of several runs against minutes since each run's first sample (compare's overlay). */
export function overlaySpec(runs: readonly { name: string; mem: readonly MemSample[] }[], title: string): vl.TopLevelSpec {
  const pts: { run: string; minutes: number; mb: number; conns: number }[] = [];
  for (const r of runs) {
    const t0 = r.mem[0]?.unix ?? 0;
    for (const m of downsample(r.mem)) pts.push({ run: r.name, minutes: Math.round(((m.unix - t0) / 60) * 1000) / 1000, mb: Math.round(((m.treeRssKB ?? m.rssKB) / 1024) * 10) / 10, conns: m.conns });
  }
  const base = {
    width: CHART_STYLE.width,
    height: CHART_STYLE.height,
    mark: { type: 'line' as const, strokeWidth: 1.5 },
  };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: title, ...titleStyle },
    background: 'white',
    padding: 12,
    config,
    data: { values: pts },
    vconcat: [
      { ...base, encoding: { x: { field: 'minutes', type: 'quantitative', title: 'minutes elapsed' }, y: { field: 'mb', type: 'quantitative', title: 'server RSS (MB)' }, color: { field: 'run', type: 'nominal', title: null } } },
      { ...base, height: CHART_STYLE.smallHeight, encoding: { x: { field: 'minutes', type: 'quantitative', title: 'minutes elapsed' }, y: { field: 'conns', type: 'quantitative', title: 'connections' }, color: { field: 'run', type: 'nominal', title: null } } },
    ],
  };
}

/** Writes every chart of a run folder; returns the file names written. */
export async function writeRunCharts(
  dir: string,
  floodSamples: readonly Record<string, unknown>[],
  msggenSamples: readonly Record<string, unknown>[],
  phases: Phases,
  title: string,
): Promise<string[]> {
  const files: string[] = [];
  const memPath = join(dir, 'mem.tsv');
  const rows = existsSync(memPath) ? parseLog(readFileSync(memPath, 'utf8')) : [];
  if (rows.length > 0) {
    // memlog's own chart: memory (RSS, PSS, tree sums), connections, KB per connection (total and marginal).
    await plotLog(rows, { out: join(dir, 'mem.png'), svg: true, subtitle: title });
    files.push('mem.svg', 'mem.png');
  }
  const l = latencySpec(floodSamples, msggenSamples, phases.msgStart, title);
  if (l) files.push(...(await writeChart(dir, 'latency', l)));
  return files;
}
