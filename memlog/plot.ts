// Charts of a memory log: a terminal chart (asciichart) and an image like the seed's gnuplot graph (vega-lite
// compiled to vega, rendered headless to SVG; resvg turns the SVG into PNG). Three panels share the x axis
// (minutes elapsed): memory in MiB, established connections, and KB per connection.

import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import { Resvg } from '@resvg/resvg-js';
import asciichart from 'asciichart';
import type { LogRow } from './row.js';

/** Drawing limits, named once. */
export const PLOT_LIMITS = {
  /** Points per series above which a series is downsampled (min and max per time bucket, so peaks survive). */
  maxPointsPerSeries: 2000,
  /** Image width in CSS pixels of the SVG (the PNG is `scale` times this). */
  width: 820,
  memoryHeight: 300,
  smallPanelHeight: 130,
  /** PNG pixels per SVG pixel. */
  defaultScale: 2,
  font: 'DejaVu Sans',
};

/** Options of plotLog / renderSvg. */
export interface PlotOptions {
  /** PNG path to write (default: none). The SVG, when `svg`, goes next to it with a .svg extension. */
  out?: string;
  /** Also write an SVG (path: `out` with .svg), or, without `out`, just return it. */
  svg?: boolean;
  /** Chart title (default: "Mem usage with <peak> active connections"). */
  title?: string;
  /** Subtitle line (default: the log's start date and length). */
  subtitle?: string;
  /** PNG pixels per SVG pixel (default 2). */
  scale?: number;
}

/** One drawn point, in the long format vega-lite wants. */
interface Point {
  min: number;
  value: number;
  series: string;
}

/** Keeps at most `max` points: per time bucket, the minimum and the maximum (in time order), so spikes survive. */
export function downsample(points: Point[], max: number): Point[] {
  if (points.length <= max) return points;
  const buckets = Math.max(1, Math.floor(max / 2));
  const t0 = points[0]!.min;
  const span = points[points.length - 1]!.min - t0 || 1;
  const out: Point[] = [];
  let lo: Point | null = null;
  let hi: Point | null = null;
  let current = -1;
  const flush = (): void => {
    if (!lo || !hi) return;
    if (lo === hi) out.push(lo);
    else if (lo.min <= hi.min) out.push(lo, hi);
    else out.push(hi, lo);
  };
  for (const p of points) {
    const b = Math.min(buckets - 1, Math.floor(((p.min - t0) / span) * buckets));
    if (b !== current) {
      flush();
      current = b;
      lo = hi = p;
    } else {
      if (p.value < lo!.value) lo = p;
      if (p.value > hi!.value) hi = p;
    }
  }
  flush();
  return out;
}

/** "10k", "1.2M", "512": connection counts as the seed's titles write them. */
export function shortCount(n: number): string {
  if (n >= 1e6) return `${+(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${Math.round(n / 1e3)}k`;
  return String(n);
}

/** Logs longer than this many minutes are drawn against hours elapsed. */
export const HOURS_AFTER_MIN = 360;

/** KB per connection is drawn only for samples with at least this share of the peak connections. */
export const PERCONN_MIN_SHARE = 0.1;

/** Idle memory (tree RSS, else RSS) in KB: the first sample, when it was taken before connections arrived. */
function idleKb(rows: LogRow[]): number | null {
  const peak = Math.max(...rows.map((r) => r.conns));
  const first = rows[0]!;
  return first.conns <= Math.max(1, peak * 0.01) ? first.treeRssKb ?? first.rssKb : null;
}

const MEMORY_SERIES: [keyof LogRow, string][] = [
  ['rssKb', 'RSS'],
  ['pssKb', 'PSS'],
  ['treeRssKb', 'tree RSS'],
  ['treePssKb', 'tree PSS'],
];

function sorted(rows: readonly LogRow[]): LogRow[] {
  if (rows.length === 0) throw new Error('the log has no samples to plot');
  return [...rows].sort((a, b) => a.unix - b.unix);
}

/** The vega-lite spec of the three-panel chart (exported for tests and for callers who want to restyle it). */
export function chartSpec(input: readonly LogRow[], opts: PlotOptions = {}): vl.TopLevelSpec {
  const rows = sorted(input);
  const t0 = rows[0]!.unix;
  // Minutes elapsed, as in the seed's graph; hours once a log is longer than HOURS_AFTER_MIN.
  const spanMin = (rows[rows.length - 1]!.unix - t0) / 60;
  const perUnit = spanMin > HOURS_AFTER_MIN ? 3600 : 60;
  const min = (r: LogRow): number => Math.round(((r.unix - t0) / perUnit) * 1000) / 1000;
  const peakConns = Math.max(...rows.map((r) => r.conns));
  const max = PLOT_LIMITS.maxPointsPerSeries;

  const memory: Point[] = [];
  for (const [field, label] of MEMORY_SERIES) {
    const pts = rows.filter((r) => r[field] !== null).map((r) => ({ min: min(r), value: Math.round(((r[field] as number) / 1024) * 100) / 100, series: label }));
    // tree RSS equal to RSS everywhere (no children) would only hide the RSS line under itself.
    if (label.startsWith('tree') && rows.every((r) => r[field] === null || r[field] === r[label === 'tree RSS' ? 'rssKb' : 'pssKb'])) continue;
    if (pts.length) memory.push(...downsample(pts, max));
  }
  const conns = downsample(rows.map((r) => ({ min: min(r), value: r.conns, series: 'connections' })), max);
  // KB per connection only where connections are at least PERCONN_MIN_SHARE of the peak: with a handful of
  // connections the idle process dominates and the ratio (40,000 KB for 1 connection) would flatten the panel.
  const idle = idleKb(rows);
  const perConnRows = rows.filter((r) => r.conns > 0 && r.conns >= peakConns * PERCONN_MIN_SHARE);
  const memOf = (r: LogRow): number => r.treeRssKb ?? r.rssKb;
  const round2 = (v: number): number => Math.round(v * 100) / 100;
  const perConn = [
    ...downsample(perConnRows.map((r) => ({ min: min(r), value: round2(r.kbPerConn ?? memOf(r) / r.conns), series: 'total' })), max),
    ...(idle === null ? [] : downsample(perConnRows.map((r) => ({ min: min(r), value: round2((memOf(r) - idle) / r.conns), series: 'marginal (above idle)' })), max)),
  ];
  const durationMin = spanMin;
  const xEnd = min(rows[rows.length - 1]!);
  const title = opts.title ?? `Mem usage with ${shortCount(peakConns)} active connections`;
  const subtitle = opts.subtitle ?? `${rows[0]!.date || new Date(t0 * 1000).toISOString()}, ${rows.length} samples over ${durationMin.toFixed(1)} minutes`;
  const x = { field: 'min', type: 'quantitative' as const, title: perUnit === 60 ? 'minutes elapsed' : 'hours elapsed', scale: { domain: [0, Math.max(xEnd, 1e-3)], nice: false } };
  const width = PLOT_LIMITS.width - 90;

  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    // Lines split at newlines; anything wider than the chart is cut with an ellipsis rather than widening the image.
    title: { text: title.split('\n'), subtitle: subtitle.split('\n'), anchor: 'start', fontSize: 16, subtitleFontSize: 11, subtitleColor: '#555', limit: PLOT_LIMITS.width - 30 },
    config: {
      font: PLOT_LIMITS.font,
      view: { stroke: '#ccc' },
      axis: { labelFontSize: 11, titleFontSize: 12, gridColor: '#e6e6e6' },
      legend: { labelFontSize: 11, titleFontSize: 11, orient: 'top', direction: 'horizontal', padding: 2, offset: 4, labelLimit: 240, symbolType: 'stroke', symbolStrokeWidth: 2.5 },
    },
    background: 'white',
    padding: 12,
    resolve: { scale: { color: 'independent' }, legend: { color: 'independent' } },
    vconcat: [
      {
        width,
        height: PLOT_LIMITS.memoryHeight,
        data: { values: memory },
        mark: { type: 'line', strokeWidth: 1.6, interpolate: 'linear' },
        encoding: {
          x: { ...x, axis: { title: null, labels: true } },
          y: { field: 'value', type: 'quantitative', title: 'memory (MiB)', scale: { zero: true } },
          color: {
            field: 'series',
            type: 'nominal',
            title: null,
            sort: MEMORY_SERIES.map(([, l]) => l),
            scale: { domain: MEMORY_SERIES.map(([, l]) => l).filter((l) => memory.some((p) => p.series === l)), range: ['#d62728', '#1f77b4', '#ff7f0e', '#2ca02c'] },
          },
        },
      },
      {
        width,
        height: PLOT_LIMITS.smallPanelHeight,
        data: { values: conns },
        mark: { type: 'line', strokeWidth: 1.6, color: '#6a3d9a' },
        encoding: {
          x: { ...x, axis: { title: null } },
          y: { field: 'value', type: 'quantitative', title: 'connections', axis: { format: '~s' } },
        },
      },
      {
        width,
        height: PLOT_LIMITS.smallPanelHeight,
        data: { values: perConn },
        mark: { type: 'line', strokeWidth: 1.6, point: perConnRows.length <= 60 ? { size: 14, filled: true } : false },
        encoding: {
          x,
          y: { field: 'value', type: 'quantitative', title: 'KB per connection', scale: { zero: true } },
          color: { field: 'series', type: 'nominal', title: null, scale: { domain: ['total', 'marginal (above idle)'], range: ['#444444', '#17becf'] } },
        },
      },
    ],
  } as vl.TopLevelSpec;
}

/** Renders the chart to an SVG string (deterministic for the same rows and options). */
export async function renderSvg(rows: readonly LogRow[], opts: PlotOptions = {}): Promise<string> {
  const spec = vl.compile(chartSpec(rows, opts)).spec;
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

// DejaVu Sans ships with the dejavu-fonts-ttf package, so a PNG looks the same on every machine, whatever fonts
// the system has (a fresh server image may have none, and resvg then draws no text at all).
const FONT_DIR = join(dirname(createRequire(import.meta.url).resolve('dejavu-fonts-ttf/package.json')), 'ttf');
const FONT_FILES = ['DejaVuSans.ttf', 'DejaVuSans-Bold.ttf'].map((f) => join(FONT_DIR, f));

/** Rasterizes an SVG to PNG with resvg, using the bundled DejaVu Sans (no system fonts needed). */
export function svgToPng(svg: string, scale = PLOT_LIMITS.defaultScale): Buffer {
  const resvg = new Resvg(svg, {
    fitTo: { mode: 'zoom', value: scale },
    font: { fontFiles: FONT_FILES, loadSystemFonts: false, defaultFontFamily: PLOT_LIMITS.font, sansSerifFamily: PLOT_LIMITS.font },
    background: 'white',
  });
  return resvg.render().asPng();
}

/** What plotLog wrote (or produced). */
export interface PlotResult {
  svg: string;
  png: Buffer;
  pngPath?: string;
  svgPath?: string;
}

/** Renders the chart; writes the PNG to `out` (and the SVG next to it with `svg`). */
export async function plotLog(rows: readonly LogRow[], opts: PlotOptions = {}): Promise<PlotResult> {
  const svg = await renderSvg(rows, opts);
  const png = svgToPng(svg, opts.scale);
  const result: PlotResult = { svg, png };
  if (opts.out) {
    mkdirSync(dirname(opts.out), { recursive: true });
    writeFileSync(opts.out, png);
    result.pngPath = opts.out;
    if (opts.svg) {
      result.svgPath = opts.out.replace(/\.png$/i, '') + '.svg';
      writeFileSync(result.svgPath, svg);
    }
  }
  return result;
}

/** Resamples onto `width` evenly spaced columns: each column's maximum sample, or a straight line between samples. */
function columns(rows: LogRow[], value: (r: LogRow) => number | null, width: number): number[] {
  const t0 = rows[0]!.unix;
  const span = rows[rows.length - 1]!.unix - t0;
  const n = Math.max(2, width);
  const out: (number | undefined)[] = new Array(n).fill(undefined);
  for (const r of rows) {
    const v = value(r);
    if (v === null || !Number.isFinite(v)) continue;
    const c = span === 0 ? 0 : Math.min(n - 1, Math.round(((r.unix - t0) / span) * (n - 1)));
    out[c] = out[c] === undefined ? v : Math.max(out[c]!, v);
  }
  let prev = -1;
  for (let c = 0; c < n; c++) {
    if (out[c] === undefined) continue;
    if (prev < 0) for (let k = 0; k < c; k++) out[k] = out[c];
    else for (let k = prev + 1; k < c; k++) out[k] = out[prev]! + ((out[c]! - out[prev]!) * (k - prev)) / (c - prev);
    prev = c;
  }
  for (let k = prev + 1; k < n; k++) out[k] = prev < 0 ? 0 : out[prev];
  return out as number[];
}

/** A terminal chart: memory (MiB) and connections against minutes elapsed, `width` columns wide. */
export function asciiPlot(input: readonly LogRow[], width = 72, title?: string): string {
  const rows = sorted(input);
  const durationMin = (rows[rows.length - 1]!.unix - rows[0]!.unix) / 60;
  const mem = columns(rows, (r) => (r.treeRssKb ?? r.rssKb) / 1024, width);
  const conns = columns(rows, (r) => r.conns, width);
  const memLabel = rows.some((r) => r.treeRssKb !== null) ? 'tree RSS' : 'RSS';
  const end = `${durationMin.toFixed(1)} min`;
  const axis = `${' '.repeat(12)}0${' '.repeat(Math.max(1, mem.length - 1 - end.length))}${end}`;
  const lines: string[] = [];
  if (title) lines.push(title);
  lines.push(`memory (${memLabel}, MiB) vs minutes elapsed`);
  lines.push(asciichart.plot(mem, { height: 12, format: (v: number) => v.toFixed(1).padStart(9) + ' ' }));
  lines.push(axis, '', 'established connections vs minutes elapsed');
  lines.push(asciichart.plot(conns, { height: 6, format: (v: number) => Math.round(v).toString().padStart(9) + ' ' }));
  lines.push(axis);
  return lines.join('\n') + '\n';
}
