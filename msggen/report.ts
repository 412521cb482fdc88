// Human-readable lines for msggen's progress (one per sample) and its summary; JSON records are the Sample and
// Summary objects themselves (index.ts).
import { formatMicros } from '../lib/histogram.js';
import type { Sample, Summary } from './index.js';

function formatErrors(errors: Record<string, number>): string {
  const entries = Object.entries(errors).sort((a, b) => b[1] - a[1]);
  return entries.length === 0 ? 'none' : entries.map(([code, n]) => `${code}=${n}`).join(' ');
}

function pad(n: number | string, width: number): string {
  return String(n).padStart(width);
}

/** One progress line: `[   3.0s] sent 1000/s acked 1000/s late 0 behind 0 inflight 2 p50 450us p99 1.20ms errors none`. */
export function formatSample(s: Sample): string {
  const iv = s.interval > 0 ? s.interval : 1;
  return (
    `[${pad(s.t.toFixed(1), 6)}s] sent ${pad(Math.round(s.sent / iv), 6)}/s acked ${pad(Math.round(s.acked / iv), 6)}/s` +
    ` late ${s.late} behind ${s.behind} inflight ${s.inFlight}` +
    ` p50 ${formatMicros(s.latency.p50)} p99 ${formatMicros(s.latency.p99)} errors ${formatErrors(s.errors)}`
  );
}

/** The delivered line: the server's count, or that it was not reported (a publisher that does not answer with one). */
function formatDelivered(s: Summary): string {
  if (s.deliveredUnreported > 0 && s.deliveredUnreported >= s.acked) return `not reported by the server (${s.acked} acks without a delivered count)`;
  if (s.deliveredUnreported > 0) return `${s.delivered} (connections reached, as reported by the server; not reported for ${s.deliveredUnreported} acked messages)`;
  return `${s.delivered} (connections reached, as reported by the server)`;
}

/** The end-of-run summary for people (several lines). */
export function formatSummary(s: Summary): string {
  const l = s.latency;
  const r = s.requestLatency;
  return [
    `msggen summary (${s.stoppedBy === 'num' ? 'all sends made' : s.stoppedBy === 'duration' ? 'duration reached' : 'stopped'})`,
    `  target      ${s.target}  procs ${s.procs} × ${s.rate}/s = ${s.requestedRate}/s  batch ${s.batch}  threads ${s.threads}  connections ${s.connections}`,
    `  ids         ${s.dist} over 1..${s.max}  seed ${s.seed}`,
    `  messages    scheduled ${s.scheduled}  sent ${s.sent}  acked ${s.acked}  failed ${s.failed}  unsent ${s.unsent}  late ${s.late}`,
    `  delivered   ${formatDelivered(s)}`,
    `  rate        achieved ${s.achievedRate}/s  acked ${s.ackedRate}/s  over ${s.sendWindow}s (elapsed ${s.elapsed}s)`,
    `  requests    ${s.requests}  errors ${formatErrors(s.errors)}`,
    `  latency     from scheduled time: p50 ${formatMicros(l.p50)} p90 ${formatMicros(l.p90)} p99 ${formatMicros(l.p99)} p99.9 ${formatMicros(l.p999)} max ${formatMicros(l.max)}`,
    `  request     from issue: p50 ${formatMicros(r.p50)} p99 ${formatMicros(r.p99)} max ${formatMicros(r.max)}`,
    `  cpu         msggen used ${s.cpu.user}s user + ${s.cpu.system}s system`,
  ].join('\n');
}
