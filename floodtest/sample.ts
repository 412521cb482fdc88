// The one record floodtest emits, in two kinds: a per-second `sample` and a final `summary`.
// Every encoding of them (the seed's Stats line, NDJSON, the human summary) lives here and nowhere else.
import type { LatencySummary } from '../lib/histogram.js';
import { formatMicros } from '../lib/histogram.js';

/** Failure counts by code: err.code (ECONNREFUSED, ETIMEDOUT, ...), `HTTP_<status>`, or a parser code (HPE_*). */
export type ErrorCounts = Record<string, number>;

/** Event-loop delay of the generator itself over the last sample interval, in milliseconds. */
export interface LoopDelay {
  p50: number;
  p99: number;
  max: number;
  mean: number;
}

/** One per-second sample: totals since the start, plus gauges (connected, inflight, rss, loop delay). */
export interface Sample {
  type: 'sample';
  /** Seconds since the flood started. */
  t: number;
  /** Wall-clock time, ms since the Unix epoch. */
  ts: number;
  /** Connections asked for. */
  asked: number;
  /** Streams open now (a 200 response head received, not yet closed). */
  connected: number;
  /** Streams that were open and then closed (by the server or the network), in total. */
  closed: number;
  /** Non-empty chunks received, in total (each message of the seed's server is one chunk). */
  chunks: number;
  /** text/event-stream events received, in total. */
  events: number;
  /** Streams established (200 received), in total, reconnects included. */
  established: number;
  /** Failures by code, in total. */
  errors: ErrorCounts;
  /** Connects in flight (started, no response head yet). */
  inflight: number;
  /** End-to-end latency of messages carrying `@t=`, since the start, in microseconds. */
  latency: LatencySummary;
  /**
   * Latency of the marked messages received during this sample's interval only (since the previous sample), in
   * microseconds: per-second percentiles. `count` is 0 for an interval without messages; the counts of all samples
   * add up to `latency.count`.
   */
  intervalLatency: LatencySummary;
  /** Resident set size of floodtest (all its processes), bytes. */
  rss: number;
  /** floodtest's own event-loop delay (the worst process), so a reader sees when the generator is the bottleneck. */
  eventLoopDelayMs: LoopDelay;
  /** floodtest processes doing the work. */
  procs: number;
}

/** The end-of-run record. */
export interface Summary {
  type: 'summary';
  /** How the run ended: `duration` elapsed, or `stop` (Ctrl-C or handle.stop()). */
  reason: 'duration' | 'stop';
  /** Connections asked for. */
  asked: number;
  /** Most streams open at once. */
  reached: number;
  /** True when fewer were reached than asked: the run is SHORT. */
  short: boolean;
  /** Streams open when the run stopped. */
  open: number;
  established: number;
  closed: number;
  chunks: number;
  events: number;
  errors: ErrorCounts;
  /** Sum of `errors`. */
  errorsTotal: number;
  /** From the first connect to the moment `reached` was reached, ms. */
  rampMs: number;
  /** reached / ramp seconds. */
  connectsPerSec: number;
  /** Whole run, ms. */
  durationMs: number;
  /** End-to-end latency of marked messages, microseconds. */
  latency: LatencySummary;
  /** Highest RSS seen in a sample (all processes), bytes. */
  rssPeak: number;
  procs: number;
}

/** The seed's line: `Stats: {connected,closed,chunks}`. */
export function formatStatsLine(s: Pick<Sample, 'connected' | 'closed' | 'chunks'>): string {
  return `Stats: {${s.connected},${s.closed},${s.chunks}}`;
}

/** One NDJSON line (no trailing newline) for a sample or a summary. */
export function encodeRecord(r: Sample | Summary): string {
  return JSON.stringify(r);
}

/** Parses a line written by `encodeRecord` (for tools that read floodtest --json output). */
export function decodeRecord(line: string): Sample | Summary {
  const r = JSON.parse(line) as Sample | Summary;
  if (r === null || typeof r !== 'object' || (r.type !== 'sample' && r.type !== 'summary')) {
    throw new Error(`not a floodtest record: ${line.slice(0, 80)}`);
  }
  return r;
}

/** `ECONNREFUSED=3 HTTP_404=1`, largest first; `none` when empty. */
export function formatErrors(errors: ErrorCounts): string {
  const entries = Object.entries(errors).filter(([, n]) => n > 0);
  if (entries.length === 0) return 'none';
  entries.sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  return entries.map(([code, n]) => `${code}=${n}`).join(' ');
}

/** Progress line for stderr in --json mode: the Stats line plus the other gauges. */
export function formatProgress(s: Sample): string {
  return (
    `${formatStatsLine(s)} events=${s.events} inflight=${s.inflight} errors=${formatErrors(s.errors)}` +
    ` p99=${s.latency.count > 0 ? formatMicros(s.latency.p99) : '-'} rss=${(s.rss / 1048576).toFixed(0)}MiB loop-p99=${s.eventLoopDelayMs.p99}ms`
  );
}

/** The human summary, several lines. */
export function formatSummary(s: Summary): string {
  const lat = s.latency;
  const lines = [
    `floodtest summary${s.short ? ' — SHORT: fewer connections reached than asked' : ''}`,
    `  connections  asked ${s.asked}, reached ${s.reached}${s.short ? ` (SHORT by ${s.asked - s.reached})` : ''}, open at stop ${s.open}, established ${s.established}, closed ${s.closed}`,
    `  ramp         ${(s.rampMs / 1000).toFixed(2)} s, ${Math.round(s.connectsPerSec)} connects/s`,
    `  received     ${s.chunks} chunks, ${s.events} events`,
    `  errors       ${formatErrors(s.errors)}`,
    lat.count > 0
      ? `  latency      n=${lat.count} p50 ${formatMicros(lat.p50)}  p90 ${formatMicros(lat.p90)}  p99 ${formatMicros(lat.p99)}  p99.9 ${formatMicros(lat.p999)}  max ${formatMicros(lat.max)}`
      : '  latency      no marked (@t=) messages received',
    `  run          ${(s.durationMs / 1000).toFixed(1)} s (${s.reason}), ${s.procs} process${s.procs === 1 ? '' : 'es'}, peak RSS ${(s.rssPeak / 1048576).toFixed(1)} MiB`,
  ];
  return lines.join('\n');
}

/** Adds error counts into `into`. */
export function addErrors(into: ErrorCounts, from: ErrorCounts): void {
  for (const [code, n] of Object.entries(from)) into[code] = (into[code] ?? 0) + n;
}
