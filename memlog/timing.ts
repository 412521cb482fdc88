// Timing helpers of memlog's benchmark scripts (bench.ts, bench-1m.ts).

/** Runs `fn` `runs` times: the durations in ms, sorted ascending, and the last result. */
export function timeIt<T>(runs: number, fn: () => T): { ms: number[]; result: T } {
  const ms: number[] = [];
  let result!: T;
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    result = fn();
    ms.push(performance.now() - t);
  }
  return { ms: ms.sort((a, b) => a - b), result };
}

/** `median X ms (min Y, max Z, n=N)` of durations in ms, in any order. */
export function formatTimes(ms: readonly number[], digits = 1): string {
  const s = [...ms].sort((a, b) => a - b);
  return `median ${s[s.length >> 1]!.toFixed(digits)} ms (min ${s[0]!.toFixed(digits)}, max ${s[s.length - 1]!.toFixed(digits)}, n=${s.length})`;
}
