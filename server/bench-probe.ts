// Latency attribution inside the server process (benchmarks only, never loaded by the server itself):
//   node --import=./dist/server/bench-probe.js dist/server/cli.js ...      (bench-mem --probe does this)
// For every message carrying an `@t=` send stamp it records, in microseconds since the stamp:
// - `router`: when the router's send() is called (publisher write + kernel + node:http parse + control handler);
// - `write`: when the framed bytes are handed to the stream socket's write() (adds the queue until the flush);
// and it records every GC pause (PerformanceObserver 'gc') that fell between the first and the last stamped
// message. On exit it prints one `probe:` line per figure on stderr. The client's read time completes the
// chain (write → read = kernel + the client's own scheduling and GC). With C1M_GC_LOG=<dir> (bench-mem
// --gc-attrib) it also writes <dir>/probe-<pid>.json: [stamp, router.send time, first write time] per message
// (µs since the epoch), so the bench can tell in which hop each slow message lost its time.
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { createHistogram, formatMicros, recordLatency, summarize } from '../lib/histogram.js';
import { findMarker, nowMicros } from '../lib/marker.js';
import { LocalRouter } from './router.js';
import { WrapSocket } from './wrap.js';
import { FdSocket } from './fdpool.js';

const hRouter = createHistogram();
const hWrite = createHistogram();
const hGap = createHistogram();
/** router.send time by stamp, for the exact send → write gap of each message (bounded: stamps are unique per message). */
const sentAt = new Map<number, number>();
/** Per-message hop times for --gc-attrib: stamp → [router.send, first write]. */
const traceDir = process.env.C1M_GC_LOG;
const trace = new Map<number, [number, number]>();
let first = -1;
let last = -1;

function stampOf(text: string): number {
  const i = text.lastIndexOf('@t=');
  if (i < 0) return -1;
  const t = Number.parseInt(text.slice(i + 3, i + 19), 10);
  return Number.isFinite(t) ? t : -1;
}

function mark(): void {
  const t = performance.now();
  if (first < 0) first = t;
  last = t;
}

const send = LocalRouter.prototype.send;
LocalRouter.prototype.send = function (this: LocalRouter<object>, id: number, msg: string): number {
  const t = stampOf(msg);
  if (t >= 0) {
    const now = nowMicros();
    recordLatency(hRouter, now - t);
    if (sentAt.size < 100_000) sentAt.set(t, now);
    if (traceDir && trace.size < 200_000 && !trace.has(t)) trace.set(t, [now, 0]);
    mark();
  }
  return send.call(this, id, msg);
};

type Write = (this: unknown, chunk: unknown, ...rest: unknown[]) => boolean;

/** Wraps a socket class's write() to record when each stamped message is handed to it. */
function probeWrite(proto: { write: unknown }): void {
  const write = proto.write as Write;
  proto.write = function (this: unknown, chunk: unknown, ...rest: unknown[]) {
    const t = typeof chunk === 'string' ? stampOf(chunk) : chunk instanceof Uint8Array ? findMarker(chunk) : -1;
    if (t >= 0) {
      const now = nowMicros();
      recordLatency(hWrite, now - t);
      const tr = traceDir ? trace.get(t) : undefined;
      if (tr && tr[1] === 0) tr[1] = now;
      const sent = sentAt.get(t);
      if (sent !== undefined) {
        recordLatency(hGap, now - sent);
        sentAt.delete(t);
      }
      mark();
    }
    return write.call(this, chunk, ...rest);
  } as Write;
}
// Every transport's socket: net.Socket (net), WrapSocket (wrap, and fd until a request is read), FdSocket (fd).
probeWrite(net.Socket.prototype as unknown as { write: unknown });
probeWrite(WrapSocket.prototype as unknown as { write: unknown });
probeWrite(FdSocket.prototype as unknown as { write: unknown });

const gcs: Array<{ start: number; ms: number; kind: number }> = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    if (gcs.length < 100_000) gcs.push({ start: e.startTime, ms: e.duration, kind: ((e as unknown as { detail?: { kind?: number } }).detail?.kind) ?? 0 });
  }
}).observe({ entryTypes: ['gc'] });

// perf_hooks.constants.NODE_PERFORMANCE_GC_*: MINOR 1, MAJOR 4, INCREMENTAL 8, WEAKCB 16 (V8's GCType).
const KINDS: Record<number, string> = { 1: 'scavenge', 2: 'minor-mc', 4: 'mark-compact', 8: 'incremental', 16: 'weak-cb' };

process.on('exit', () => {
  const line = (name: string, h: ReturnType<typeof createHistogram>): string => {
    const q = summarize(h);
    return `probe: stamp → ${name}: ${q.count} msgs, p50 ${formatMicros(q.p50)}, p90 ${formatMicros(q.p90)}, p99 ${formatMicros(q.p99)}, p99.9 ${formatMicros(q.p999)}, max ${formatMicros(q.max)}\n`;
  };
  let out = line('router.send', hRouter) + line('socket.write', hWrite);
  const g = summarize(hGap);
  out += `probe: router.send → socket.write of the same message: p50 ${formatMicros(g.p50)}, p90 ${formatMicros(g.p90)}, p99 ${formatMicros(g.p99)}, p99.9 ${formatMicros(g.p999)}, max ${formatMicros(g.max)}\n`;
  const inWindow = gcs.filter((g) => g.start >= first && g.start <= last);
  const byKind = new Map<string, number[]>();
  for (const g of inWindow) {
    const k = KINDS[g.kind] ?? String(g.kind);
    byKind.set(k, [...(byKind.get(k) ?? []), g.ms]);
  }
  const parts = [...byKind].map(([k, ms]) => {
    ms.sort((a, b) => a - b);
    const total = ms.reduce((a, b) => a + b, 0);
    return `${k} ×${ms.length} (total ${total.toFixed(1)} ms, median ${ms[ms.length >> 1]!.toFixed(2)} ms, max ${ms[ms.length - 1]!.toFixed(2)} ms)`;
  });
  out += `probe: GC in the ${((last - first) / 1000).toFixed(1)} s stamped window: ${parts.length ? parts.join('; ') : 'none'}\n`;
  process.stderr.write(out);
  if (traceDir) writeFileSync(join(traceDir, `probe-${process.pid}.json`), JSON.stringify([...trace].map(([t, [r, w]]) => [t, r, w])));
});
