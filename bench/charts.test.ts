// The delivery-latency panel: per-second percentiles from floodtest's `intervalLatency`, cumulative for older runs.
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { DELIVERY_TITLES, latencySpec, toSvg, worstPerWindow } from './charts.js';
import { parseFloodLine } from './tools.js';

const lat = (count: number, p: number) => ({ count, p50: p, p90: p * 2, p99: p * 3, p999: p * 4, max: p * 5, mean: p });
const t0 = 1_800_000_000_000;

// Samples as floodtest writes them: cumulative `latency`, and (when `interval`) the per-interval field.
function floodSamples(perInterval: readonly [number, number][], interval: boolean): Record<string, unknown>[] {
  let total = 0;
  return perInterval.map(([count, p], i) => {
    total += count;
    const s: Record<string, unknown> = { type: 'sample', ts: t0 + (i + 1) * 1000, latency: lat(total, 1000) };
    if (interval) s.intervalLatency = count > 0 ? lat(count, p) : lat(0, 0);
    return s;
  });
}

interface Panel {
  title: { text: string };
  data: { values: { minutes: number; percentile: string; ms: number }[] };
}
const panels = (spec: unknown): Panel[] => (spec as { vconcat: Panel[] }).vconcat;

describe('delivery latency chart', () => {
  it('parseFloodLine reads intervalLatency when present, and not from older records', () => {
    const r = parseFloodLine(JSON.stringify({ type: 'sample', connected: 1, latency: lat(5, 100), intervalLatency: lat(2, 300) }));
    assert.deepEqual(r?.intervalLatency, lat(2, 300));
    assert.deepEqual(r?.latency, lat(5, 100));
    assert.equal(parseFloodLine(JSON.stringify({ type: 'sample', latency: lat(5, 100) }))?.intervalLatency, undefined);
  });

  it('plots per-second percentiles when the samples carry them; a quiet second has no point', async () => {
    const samples = floodSamples([[10, 1000], [0, 0], [10, 50_000], [10, 1000]], true);
    const spec = latencySpec(samples, [], t0, 'run');
    assert.ok(spec);
    const [delivery] = panels(spec);
    assert.equal(delivery!.title.text, DELIVERY_TITLES.interval);
    const p50 = delivery!.data.values.filter((v) => v.percentile === 'p50');
    // The spike in the third second shows there, and only there (cumulative would smear it over the rest).
    assert.deepEqual(p50.map((v) => v.ms), [1, 50, 1]);
    assert.deepEqual(p50.map((v) => Math.round(v.minutes * 60)), [1, 3, 4]);
    assert.match(await toSvg(spec), /percentiles per second/);
  });

  it('falls back to the cumulative percentiles for runs without intervalLatency, and says so', () => {
    const spec = latencySpec(floodSamples([[10, 1000], [10, 50_000]], false), [], t0, 'old run');
    const [delivery] = panels(spec);
    assert.equal(delivery!.title.text, DELIVERY_TITLES.cumulative);
    assert.match(delivery!.title.text, /cumulative/);
    assert.deepEqual(delivery!.data.values.filter((v) => v.percentile === 'p50').map((v) => v.ms), [1, 1]);
  });

  it('long runs keep the worst of each window, so a one-second spike survives downsampling', () => {
    const rows = floodSamples(Array.from({ length: 3001 }, (_, i): [number, number] => (i === 1001 ? [1, 900_000] : [2, 1000])), true);
    const { rows: kept, window } = worstPerWindow(rows, 'intervalLatency', 1500);
    assert.equal(window, 3);
    assert.equal(kept.length, 1001);
    const sum = kept.reduce((a, r) => a + (r.intervalLatency as { count: number }).count, 0);
    assert.equal(sum, 2 * 3000 + 1, 'counts are summed, none lost');
    assert.equal(Math.max(...kept.map((r) => (r.intervalLatency as { max: number }).max)), 900_000 * 5);
    const spec = latencySpec(rows, [], t0, 'long');
    assert.match(panels(spec)[0]!.title.text, /worst of each 3 samples/);
  });
});
