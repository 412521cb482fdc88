// GC pauses of one process on the wall clock (benchmarks only): `node --import=./dist/server/bench-gcwatch.js ...`
// with C1M_GC_LOG=<dir> set records every GC pause (PerformanceObserver 'gc') as [start µs since the epoch,
// duration µs, kind] and on exit writes them to <dir>/gc-<pid>.json. bench-mem --gc-attrib loads it into the
// server, the client and itself (the publisher), then lays each slow message's [send stamp, arrival] over the
// three lists, so a latency tail can be pinned on the process that was paused.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PerformanceObserver, performance } from 'node:perf_hooks';

/** One GC pause: start (µs since the epoch), duration (µs), kind (perf_hooks.constants.NODE_PERFORMANCE_GC_*). */
export type GcPause = [number, number, number];

const pauses: GcPause[] = [];
const MAX = 200_000;
let observer: PerformanceObserver | null = null;

/** Starts recording this process's GC pauses (once); with `dir`, writes them to <dir>/gc-<pid>.json on exit. */
export function startGcWatch(dir?: string): void {
  if (observer) return;
  observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (pauses.length >= MAX) return;
      const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0;
      pauses.push([Math.round((performance.timeOrigin + e.startTime) * 1000), Math.round(e.duration * 1000), kind]);
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  if (dir) process.on('exit', () => writeFileSync(join(dir, `gc-${process.pid}.json`), JSON.stringify(pauses)));
}

// Preloaded with --import: start at once when the bench asked for a log.
if (process.env.C1M_GC_LOG) startGcWatch(process.env.C1M_GC_LOG);

/** The pauses recorded so far in this process (for the process that loaded this module itself). */
export function gcPauses(): readonly GcPause[] {
  return pauses;
}

/**
 * Names of the kinds the 'gc' performance entries report (perf_hooks.constants: MINOR 1, MAJOR 4, INCREMENTAL 8,
 * WEAKCB 16; V8's GCType). 'incremental' is one incremental-marking step of a coming mark-compact.
 */
export const GC_KINDS: Record<number, string> = { 1: 'scavenge', 2: 'minor-mc', 4: 'mark-compact', 8: 'incremental', 16: 'weak-cb' };
