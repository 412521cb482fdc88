// Latency histograms: one shape for every tool, so samples from processes and threads merge exactly.
import * as hdr from 'hdr-histogram-js';

/** Highest latency tracked, in microseconds (one hour); larger values are clamped and still counted. */
export const HIGHEST_TRACKABLE_US = 3_600_000_000;

/** Percentile summary in microseconds, as written into samples and summaries. */
export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** A new microsecond latency histogram with 3 significant digits. */
export function createHistogram(): hdr.Histogram {
  return hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: HIGHEST_TRACKABLE_US,
    numberOfSignificantValueDigits: 3,
    autoResize: false,
  });
}

/** Records one latency in microseconds; negative values (clock skew) count as 0, huge ones are clamped. */
export function recordLatency(h: hdr.Histogram, micros: number): void {
  const v = micros < 0 ? 0 : micros > HIGHEST_TRACKABLE_US ? HIGHEST_TRACKABLE_US : Math.round(micros);
  h.recordValue(v);
}

/** Serialized form for crossing process or thread boundaries. */
export function encodeHistogram(h: hdr.Histogram): string {
  return hdr.encodeIntoCompressedBase64(h);
}

/** Adds a serialized histogram into `into`. */
export function mergeEncoded(into: hdr.Histogram, encoded: string): void {
  const other = hdr.decodeFromCompressedBase64(encoded);
  into.add(other);
  other.destroy();
}

/** p50/p90/p99/p99.9/max/mean of a histogram, in microseconds (zeros when empty). */
export function summarize(h: hdr.Histogram): LatencySummary {
  const count = h.totalCount;
  if (count === 0) return { count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 };
  return {
    count,
    p50: h.getValueAtPercentile(50),
    p90: h.getValueAtPercentile(90),
    p99: h.getValueAtPercentile(99),
    p999: h.getValueAtPercentile(99.9),
    // The bucket's top, not the raw max: a histogram decoded from its serialized form only knows buckets,
    // so this keeps a merged summary equal to the summary of one histogram holding the same values.
    max: h.getValueAtPercentile(100),
    mean: Math.round(h.mean),
  };
}

/** Formats microseconds for people: `850us`, `1.25ms`, `2.5s`. */
export function formatMicros(us: number): string {
  if (us < 1000) return `${Math.round(us)}us`;
  if (us < 1_000_000) return `${(us / 1000).toFixed(2)}ms`;
  return `${(us / 1_000_000).toFixed(2)}s`;
}

export type { Histogram } from 'hdr-histogram-js';
