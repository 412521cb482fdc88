import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseLog } from './row.js';
import { renderSvg, svgToPng, plotLog, asciiPlot, downsample, chartSpec, shortCount } from './plot.js';

const fixtureUrl = (name: string): URL => new URL(`../../memlog/fixtures/${name}`, import.meta.url);
const seedRows = parseLog(readFileSync(fixtureUrl('seed-mochimem.log'), 'utf8'));
const TITLE = 'Mem usage with 10k active connections, 1000 msg/sec';

/** Width and height from a PNG's IHDR chunk (which must come first, right after the 8-byte signature). */
function pngSize(png: Buffer): { width: number; height: number } {
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature');
  assert.equal(png.toString('latin1', 12, 16), 'IHDR');
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

function svgSize(svg: string): { width: number; height: number } {
  const m = /^<svg [^>]*width="(\d+)" height="(\d+)"/.exec(svg);
  assert.ok(m, 'svg has width and height');
  return { width: Number(m[1]), height: Number(m[2]) };
}

test('the seed chart matches the golden SVG (UPDATE_GOLDEN=1 rewrites it)', async () => {
  const svg = await renderSvg(seedRows, { title: TITLE });
  const golden = fixtureUrl('seed-mochimem.golden.svg');
  if (process.env.UPDATE_GOLDEN === '1' || !existsSync(golden)) {
    assert.equal(process.env.UPDATE_GOLDEN, '1', 'golden file missing: run with UPDATE_GOLDEN=1');
    writeFileSync(golden, svg);
  }
  assert.equal(svg, readFileSync(golden, 'utf8'), 'SVG differs from the golden file; if the change is intended, run with UPDATE_GOLDEN=1');
  // And it says what it is: the title, the axes, the three panels.
  for (const text of [TITLE, 'minutes elapsed', 'memory (MiB)', 'connections', 'KB per connection', 'marginal (above idle)']) {
    assert.ok(svg.includes(text), `svg mentions ${text}`);
  }
  assert.equal(await renderSvg(seedRows, { title: TITLE }), svg, 'deterministic');
});

test('PNG decodes with the SVG size times the scale; plotLog writes PNG and SVG', async () => {
  const svg = await renderSvg(seedRows, { title: TITLE });
  const { width, height } = svgSize(svg);
  assert.deepEqual(pngSize(svgToPng(svg, 1)), { width, height });
  const dir = mkdtempSync(join(tmpdir(), 'memlog-plot-'));
  try {
    const r = await plotLog(seedRows, { out: join(dir, 'sub', 'seed.png'), svg: true, title: TITLE });
    assert.equal(r.pngPath, join(dir, 'sub', 'seed.png'));
    assert.equal(r.svgPath, join(dir, 'sub', 'seed.svg'));
    assert.deepEqual(pngSize(readFileSync(r.pngPath!)), { width: width * 2, height: height * 2 });
    assert.equal(readFileSync(r.svgPath!, 'utf8'), svg);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the rich log draws every memory series and both KB-per-connection lines', () => {
  const rows = parseLog(readFileSync(fixtureUrl('rich-mochimem.log'), 'utf8'));
  const spec = JSON.stringify(chartSpec(rows));
  for (const series of ['"RSS"', '"PSS"', '"tree RSS"', '"tree PSS"', '"total"', '"marginal (above idle)"']) assert.ok(spec.includes(series), series);
  assert.ok(spec.includes('Mem usage with 10k active connections'), 'default title from the peak connections');
});

test('logs longer than 6 hours are drawn against hours', () => {
  const long = parseLog(Array.from({ length: 8 }, (_, h) => `d\t${h * 3600}\t${50_000 + h}\t${h ? 1000 : 0}\n`).join(''));
  assert.ok(JSON.stringify(chartSpec(long)).includes('"hours elapsed"'));
  assert.ok(JSON.stringify(chartSpec(seedRows)).includes('"minutes elapsed"'));
});

test('downsampling keeps the extremes of every bucket', () => {
  const points = Array.from({ length: 100_000 }, (_, i) => ({ min: i / 100, value: i === 54_321 ? 1e6 : i === 77_777 ? -5 : Math.sin(i / 1000), series: 's' }));
  const d = downsample(points, 2000);
  assert.ok(d.length <= 2000, String(d.length));
  assert.ok(d.some((p) => p.value === 1e6), 'spike kept');
  assert.ok(d.some((p) => p.value === -5), 'dip kept');
  for (let i = 1; i < d.length; i++) assert.ok(d[i]!.min >= d[i - 1]!.min, 'time order');
  assert.equal(downsample(points.slice(0, 10), 2000).length, 10);
});

test('terminal chart: memory and connections against minutes', () => {
  const text = asciiPlot(seedRows, 60);
  assert.match(text, /memory \(RSS, MiB\) vs minutes elapsed/);
  assert.match(text, /122\.4/); // the peak is on the axis
  assert.match(text, /10001/);
  assert.match(text, /15\.0 min/);
  assert.deepEqual([shortCount(10001), shortCount(1_000_000), shortCount(512)], ['10k', '1M', '512']);
});
