import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHistogram, encodeHistogram, formatMicros, HIGHEST_TRACKABLE_US, mergeEncoded, recordLatency, summarize } from './histogram.js';

test('summarize is all zeros for an empty histogram', () => {
  assert.deepEqual(summarize(createHistogram()), { count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 });
});

test('percentiles of 1..1000 us', () => {
  const h = createHistogram();
  for (let v = 1; v <= 1000; v++) recordLatency(h, v);
  const s = summarize(h);
  assert.equal(s.count, 1000);
  assert.equal(s.p50, 500);
  assert.equal(s.p99, 990);
  assert.equal(s.max, 1000);
});

test('negative and huge values are clamped, not thrown', () => {
  const h = createHistogram();
  recordLatency(h, -5);
  recordLatency(h, HIGHEST_TRACKABLE_US * 10);
  const s = summarize(h);
  assert.equal(s.count, 2);
  assert.ok(s.max >= HIGHEST_TRACKABLE_US * 0.999);
});

test('serialized histograms merge to the same counts as one histogram', () => {
  const a = createHistogram();
  const b = createHistogram();
  const all = createHistogram();
  for (let v = 1; v <= 500; v++) { recordLatency(a, v); recordLatency(all, v); }
  for (let v = 501; v <= 1000; v++) { recordLatency(b, v * 10); recordLatency(all, v * 10); }
  const merged = createHistogram();
  mergeEncoded(merged, encodeHistogram(a));
  mergeEncoded(merged, encodeHistogram(b));
  assert.deepEqual(summarize(merged), summarize(all));
});

test('formatMicros picks a readable unit', () => {
  assert.equal(formatMicros(850), '850us');
  assert.equal(formatMicros(1250), '1.25ms');
  assert.equal(formatMicros(2_500_000), '2.50s');
});
