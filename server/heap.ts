// A garbage budget for the V8 heap: the server asks for a full collection once the heap has gathered a set amount
// of garbage, instead of waiting for V8 to decide.
//
// Why: at 10,000 streams and 1000 msg/s, every control API request leaves a little garbage that outlives the young
// generation (~125 KB/s here, mostly node:http's), and V8 with --optimize-for-size collects the old generation only
// when its memory reducer notices, about every 48 s. The heap grows by ~6 MB in between and RSS saws between ~58 and
// ~65 MB. The live set is only ~8 MB, so a major GC whenever the heap holds `slack` bytes more than after the last
// one keeps RSS within a couple of MB of its floor, for a 6–10 ms mark-compact every ~10 s at that rate (marking
// runs incrementally; server/bench-mem measured the latency tail unchanged: p99.9 2.7 ms).
//
// It needs the `gc` function that --expose-gc gives (the server's flags, server/node-flags.ts, include it); without
// it, this does nothing and V8 manages the heap alone. The check runs from one timer and costs one
// v8.getHeapStatistics() call.

import { getHeapStatistics } from 'node:v8';

type GcFunction = (options: { type: 'major'; execution: 'async' }) => Promise<void> | void;

/** A running heap budget. */
export interface HeapBudget {
  /** False when this process has no `gc` (started without --expose-gc) or the slack is 0: nothing is done. */
  readonly active: boolean;
  /** Stops the check timer. */
  stop(): void;
}

/**
 * Checks the heap every `intervalMs` and asks V8 for an incremental major GC when it holds more than `slackBytes`
 * above its size after the last one; `onGc` runs for each request (the server counts them in /stats).
 */
export function startHeapBudget(slackBytes: number, intervalMs: number, onGc: () => void = () => {}): HeapBudget {
  const gc = (globalThis as { gc?: GcFunction }).gc;
  if (typeof gc !== 'function' || slackBytes <= 0) return { active: false, stop() {} };
  let floor = getHeapStatistics().used_heap_size;
  let pending = false;
  const done = (): void => {
    pending = false;
    floor = getHeapStatistics().used_heap_size;
  };
  const timer = setInterval(() => {
    if (pending) return;
    const used = getHeapStatistics().used_heap_size;
    // V8 collected on its own meanwhile: follow the floor down.
    if (used < floor) floor = used;
    if (used - floor <= slackBytes) return;
    pending = true;
    onGc();
    Promise.resolve(gc({ type: 'major', execution: 'async' })).then(done, done);
  }, intervalMs);
  timer.unref();
  return { active: true, stop: () => clearInterval(timer) };
}
