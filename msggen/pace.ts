// The send schedule: pure functions of (schedule, index, elapsed time), no clocks and no state.
//
// Open model (wrk2, vegeta): every send has a fixed scheduled time decided before the run starts. A slow server
// never moves that time; the generator simply finds more sends due when it wakes up. Publish latency is measured
// from the scheduled time, so a stall shows up as latency (no coordinated omission), and a send issued more than
// `lateMs` after its scheduled time is counted as late.
//
// Worker w (0-based, of `procs`) sends its k-th message (0-based) at
//     (k * procs + w) * 1000 / (procs * rate)  ms after the start,
// i.e. every worker keeps the seed's Interval = 1000/rate ms, and the workers are staggered evenly across one
// interval, so the total is a smooth procs × rate per second instead of `procs` sends bunched on the same
// millisecond. The global index g = k * procs + w orders all sends; one scheduler walks that order for every worker
// it drives, so there is one timer per scheduler, never one per worker.
//
// A scheduler may drive only some workers (a worker thread gets workers t, t+N, t+2N, ...): `slots` lists their
// indices in ascending order, and its i-th send is round floor(i / slots.length), slot slots[i % slots.length].

/** What one scheduler drives: `procs` workers in all, each at `rate` sends per second; this scheduler owns `slots`. */
export interface Schedule {
  /** Total number of workers across every scheduler. */
  readonly procs: number;
  /** Sends per second of each worker (may be fractional). */
  readonly rate: number;
  /** Worker indices (0-based, ascending, each < procs) driven by this scheduler. */
  readonly slots: readonly number[];
  /** Sends per worker before the worker is done (Infinity: no limit). */
  readonly num: number;
}

/** A schedule that drives every worker 0..procs-1. */
export function fullSchedule(procs: number, rate: number, num = Infinity): Schedule {
  return { procs, rate, num, slots: Array.from({ length: procs }, (_, i) => i) };
}

/** The workers of thread `thread` out of `threads`: t, t+N, t+2N, ... (round-robin keeps each thread's sends evenly spread). */
export function threadSchedule(procs: number, rate: number, num: number, thread: number, threads: number): Schedule {
  const slots: number[] = [];
  for (let w = thread; w < procs; w += threads) slots.push(w);
  return { procs, rate, num, slots };
}

/** Number of sends this scheduler makes in all (Infinity when num is unlimited). */
export function totalSends(s: Schedule): number {
  return s.slots.length * s.num;
}

/** Global index (k * procs + w) of this scheduler's i-th send. */
export function globalIndex(s: Schedule, i: number): number {
  const n = s.slots.length;
  const round = Math.floor(i / n);
  return round * s.procs + s.slots[i - round * n]!;
}

/** Worker index and that worker's own 0-based message number for this scheduler's i-th send. */
export function sendOf(s: Schedule, i: number): { worker: number; k: number } {
  const n = s.slots.length;
  const k = Math.floor(i / n);
  return { worker: s.slots[i - k * n]!, k };
}

/** Scheduled time of this scheduler's i-th send, in ms after the start. */
export function scheduledMs(s: Schedule, i: number): number {
  return (globalIndex(s, i) * 1000) / (s.procs * s.rate);
}

/**
 * How many of this scheduler's sends are due at `elapsedMs` (i.e. the index of the first send still in the future),
 * capped at totalSends. Sends exactly on their time are due.
 */
export function dueCount(s: Schedule, elapsedMs: number): number {
  if (elapsedMs < 0) return 0;
  // Global sends 0..gMax are due. The tiny epsilon absorbs float error such as 0.3 * 10 = 2.9999999999999996.
  const gMax = Math.floor((elapsedMs * s.procs * s.rate) / 1000 + 1e-9);
  const round = Math.floor(gMax / s.procs);
  const inRound = gMax - round * s.procs; // highest worker slot due in the current round
  let due = 0;
  // slots are ascending: count those <= inRound (binary search, slots can be long).
  let lo = 0;
  let hi = s.slots.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (s.slots[mid]! <= inRound) lo = mid + 1;
    else hi = mid;
  }
  due = round * s.slots.length + lo;
  return Math.min(due, totalSends(s));
}

/**
 * The vegeta-style pacer: given the elapsed time and how many sends were already issued, how long to wait before
 * the next one. 0 means it is due (or overdue: the caller is behind and should send at once); Infinity means done.
 */
export function pace(s: Schedule, elapsedMs: number, sent: number): number {
  if (sent >= totalSends(s)) return Infinity;
  const wait = scheduledMs(s, sent) - elapsedMs;
  return wait > 0 ? wait : 0;
}

/** Whether a send issued at `issuedMs` for a slot scheduled at `scheduledAtMs` counts as late. */
export function isLate(scheduledAtMs: number, issuedMs: number, lateMs: number): boolean {
  return issuedMs - scheduledAtMs > lateMs;
}
