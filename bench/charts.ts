// Charts of a run: memory/connections/KB-per-connection through memlog's plot, plus the charts only bench can
// draw (delivery latency percentiles over time; two runs' memory overlaid), in the same style: vega-lite compiled
// and rendered headless to SVG, and @resvg/resvg-js for the PNG.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { MemSample, Phases } from './summary.js';

/** Image size and look shared by every bench chart. */
export const CHART_STYLE = {
  width: 720,
  height: 260,
  pngWidth: 1440,
  font: 'DejaVu Sans, Helvetica, Arial, sans-serif',
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

/** SVG text to PNG bytes at CHART_STYLE.pngWidth. */
export function svgToPng(svg: string): Buffer {
  return new Resvg(svg, { fitTo: { mode: 'width', value: CHART_STYLE.pngWidth }, font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' }, background: 'white' })
    .render()
    .asPng();
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
  background: 'white',
  view: { stroke: '#ddd' },
  axis: { gridColor: '#eee', labelFontSize: 11, titleFontSize: 12 },
  title: { fontSize: 14, anchor: 'start' as const },
  legend: { orient: 'top' as const, labelFontSize: 11 },
};

/** One point of the latency chart. */
interface LatPoint {
  minutes: number;
  percentile: string;
  ms: number;
}

/**
 * Delivery latency percentiles (p50/p90/p99/p99.9/max, ms, log scale) against minutes since the first message, from
 * floodtest's samples. floodtest's sample percentiles are cumulative since its start, so the lines show how the
 * run's distribution settles; a spike shows up as a step.
 */
export function latencySpec(floodSamples: readonly Record<string, unknown>[], msgStartMs: number | undefined, title: string): vl.TopLevelSpec | undefined {
  const pts: LatPoint[] = [];
  const keys: [string, string][] = [['p50', 'p50'], ['p90', 'p90'], ['p99', 'p99'], ['p999', 'p99.9'], ['max', 'max']];
  const rows = downsample(floodSamples.filter((s) => s.type === 'sample'));
  for (const s of rows) {
    const lat = s.latency as Record<string, number> | undefined;
    const ts = typeof s.ts === 'number' ? s.ts : undefined;
    if (!lat || !(lat.count! > 0) || ts === undefined) continue;
    const minutes = (ts - (msgStartMs ?? ts)) / 60_000;
    for (const [k, label] of keys) if (typeof lat[k] === 'number') pts.push({ minutes: Math.round(minutes * 1000) / 1000, percentile: label, ms: Math.max(0.001, lat[k]! / 1000) });
  }
  if (pts.length === 0) return undefined;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: title, subtitle: 'delivery latency, msggen scheduled send → floodtest arrival (cumulative percentiles)' },
    width: CHART_STYLE.width,
    height: CHART_STYLE.height,
    config,
    data: { values: pts },
    mark: { type: 'line', strokeWidth: 1.5 },
    encoding: {
      x: { field: 'minutes', type: 'quantitative', title: 'minutes since the first message' },
      y: { field: 'ms', type: 'quantitative', title: 'latency (ms, log scale)', scale: { type: 'log' } },
      color: { field: 'percentile', type: 'nominal', sort: keys.map((k) => k[1]), title: null },
    },
  };
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
    title: { text: title },
    config,
    data: { values: pts },
    vconcat: [
      { ...base, encoding: { x: { field: 'minutes', type: 'quantitative', title: 'minutes elapsed' }, y: { field: 'mb', type: 'quantitative', title: 'server RSS (MB)' }, color: { field: 'run', type: 'nominal', title: null } } },
      { ...base, height: 140, encoding: { x: { field: 'minutes', type: 'quantitative', title: 'minutes elapsed' }, y: { field: 'conns', type: 'quantitative', title: 'connections' }, color: { field: 'run', type: 'nominal', title: null } } },
    ],
  };
}

/** Memory (MB), connections and KB per connection against minutes, for runs whose memlog cannot plot. */
export function memorySpec(mem: readonly MemSample[], title: string): vl.TopLevelSpec | undefined {
  if (mem.length === 0) return undefined;
  const t0 = mem[0]!.unix;
  const pts = downsample(mem).map((m) => {
    const rss = m.treeRssKB ?? m.rssKB;
    return { minutes: Math.round(((m.unix - t0) / 60) * 1000) / 1000, mb: Math.round((rss / 1024) * 10) / 10, conns: m.conns, kbPerConn: m.conns > 0 ? Math.round((rss / m.conns) * 100) / 100 : null };
  });
  const x = { field: 'minutes', type: 'quantitative' as const, title: 'minutes elapsed' };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: title },
    config,
    data: { values: pts },
    vconcat: [
      { width: CHART_STYLE.width, height: CHART_STYLE.height, mark: { type: 'line', strokeWidth: 1.5 }, encoding: { x, y: { field: 'mb', type: 'quantitative', title: 'server RSS (MB)' } } },
      { width: CHART_STYLE.width, height: 120, mark: { type: 'line', strokeWidth: 1.5, color: '#e45756' }, encoding: { x, y: { field: 'conns', type: 'quantitative', title: 'connections' } } },
      { width: CHART_STYLE.width, height: 120, mark: { type: 'line', strokeWidth: 1.5, color: '#54a24b' }, transform: [{ filter: 'datum.kbPerConn != null && datum.conns >= 100' }], encoding: { x, y: { field: 'kbPerConn', type: 'quantitative', title: 'KB per connection' } } },
    ],
  };
}

/** Writes every chart of a run folder; returns the file names written. */
export async function writeRunCharts(dir: string, mem: readonly MemSample[], floodSamples: readonly Record<string, unknown>[], phases: Phases, title: string): Promise<string[]> {
  const files: string[] = [];
  const m = memorySpec(mem, title);
  if (m) files.push(...(await writeChart(dir, 'mem', m)));
  const l = latencySpec(floodSamples, phases.msgStart, title);
  if (l) files.push(...(await writeChart(dir, 'latency', l)));
  return files;
}
