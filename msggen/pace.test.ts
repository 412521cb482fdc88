import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dueCount, fullSchedule, isLate, pace, scheduledMs, sendOf, threadSchedule, totalSends } from './pace.js';

const one = fullSchedule(1, 10, 5); // one worker, 10/s (the seed's Interval 100 ms), 5 sends
const four = fullSchedule(4, 10, 3); // four workers, 10/s each = 40/s total, staggered 25 ms apart
const t1of2 = threadSchedule(4, 10, 3, 1, 2); // thread 1 of 2 drives workers 1 and 3
const slow = fullSchedule(1, 0.5); // one send every 2 s, no limit
const odd = fullSchedule(3, 1000 / 3); // 1000/s total: float-heavy arithmetic

test('pace: wait before the next send (vegeta style)', () => {
  const rows: Array<[string, Parameters<typeof pace>[0], number, number, number]> = [
    // [why, schedule, elapsedMs, sent, expected wait ms]
    ['the first send is due at once at the start', one, 0, 0, 0],
    ['after the first send, wait one interval', one, 0, 1, 100],
    ['part of the interval passed: wait the rest', one, 40, 1, 60],
    ['exactly on time: due now', one, 100, 1, 0],
    ['behind schedule (server was slow): 0, send at once, the schedule does not move', one, 350, 1, 0],
    ['far behind: still 0, never negative', one, 10_000, 2, 0],
    ['ahead of schedule: wait until the slot, even if we woke early', one, 150, 3, 150],
    ['all 5 sends issued: done', one, 120, 5, Infinity],
    ['4 workers: the 2nd send (worker 1) is 25 ms after the 1st', four, 0, 1, 25],
    ['4 workers: the 5th send (worker 0, round 2) is one full interval later', four, 0, 4, 100],
    ['4 workers × 3 = 12 sends: the 12th is worker 3, round 3', four, 0, 11, 275],
    ['4 workers: done after 12', four, 500, 12, Infinity],
    ['thread 1 of 2 drives workers 1 and 3: its first send is worker 1 at 25 ms', t1of2, 0, 0, 25],
    ['thread 1 of 2: its second send is worker 3 at 75 ms', t1of2, 0, 1, 75],
    ['thread 1 of 2: its third send is worker 1 again at 125 ms', t1of2, 0, 2, 125],
    ['fractional rate 0.5/s: 2 s between sends', slow, 500, 1, 1500],
    ['no --num: never done, the millionth send is due at 2e9 ms', slow, 2e9, 1e6, 0],
    ['1000/3 per worker × 3 workers: send 1000 is exactly at 1 s', odd, 999, 1000, 1],
  ];
  for (const [why, s, elapsed, sent, want] of rows) {
    const got = pace(s, elapsed, sent);
    assert.ok(Math.abs(got - want) < 1e-9 || got === want, `${why}: pace(${elapsed}, ${sent}) = ${got}, want ${want}`);
  }
});

test('dueCount: how many sends are due at a time', () => {
  const rows: Array<[string, Parameters<typeof dueCount>[0], number, number]> = [
    // [why, schedule, elapsedMs, expected due count]
    ['before the start nothing is due', one, -1, 0],
    ['at the start the first send is due', one, 0, 1],
    ['just before the second slot', one, 99.999, 1],
    ['on the second slot', one, 100, 2],
    ['long after the end: capped at num', one, 10_000, 5],
    ['4 workers at 60 ms: slots 0, 25, 50 ms are due', four, 60, 3],
    ['4 workers at 100 ms: the 4 first-round sends and worker 0 of round 2', four, 100, 5],
    ['thread 1 of 2 at 60 ms: only worker 1 (25 ms) is due', t1of2, 60, 1],
    ['thread 1 of 2 at 75 ms: workers 1 and 3', t1of2, 75, 2],
    ['thread 1 of 2 at 124 ms: still 2 (worker 0 and 2 slots belong to the other thread)', t1of2, 124, 2],
    ['1000/s over float rates: at 3 ms exactly 4 sends (0,1,2,3 ms) in spite of rounding', odd, 3, 4],
    ['1000/s at 1 s: 1001 sends (0 ms through 1000 ms inclusive)', odd, 1000, 1001],
  ];
  for (const [why, s, elapsed, want] of rows) {
    assert.equal(dueCount(s, elapsed), want, why);
  }
});

test('dueCount agrees with scheduledMs for every send', () => {
  for (const s of [one, four, t1of2, threadSchedule(7, 3, 11, 2, 3), odd]) {
    const n = Math.min(totalSends(s), 500);
    for (let i = 0; i < n; i++) {
      const t = scheduledMs(s, i);
      assert.equal(dueCount(s, t), i + 1, `send ${i} is due at its own time ${t}`);
      if (t > 0) assert.ok(dueCount(s, t - 1e-6) <= i, `send ${i} is not due just before ${t}`);
    }
  }
});

test('two threads together make exactly the full schedule', () => {
  const full = fullSchedule(5, 7, 4);
  const parts = [0, 1].map((t) => threadSchedule(5, 7, 4, t, 2));
  const merged = parts.flatMap((p) => Array.from({ length: totalSends(p) }, (_, i) => scheduledMs(p, i))).sort((a, b) => a - b);
  const whole = Array.from({ length: totalSends(full) }, (_, i) => scheduledMs(full, i));
  assert.deepEqual(merged, whole);
});

test('sendOf: worker and its own message number', () => {
  assert.deepEqual(sendOf(four, 0), { worker: 0, k: 0 });
  assert.deepEqual(sendOf(four, 6), { worker: 2, k: 1 });
  assert.deepEqual(sendOf(t1of2, 3), { worker: 3, k: 1 });
});

test('isLate: only beyond the tolerance', () => {
  const rows: Array<[string, number, number, number, boolean]> = [
    // [why, scheduledAt, issuedAt, lateMs, expected]
    ['issued on time', 100, 100, 10, false],
    ['issued early (cannot happen, but is not late)', 100, 99, 10, false],
    ['within the timer-jitter tolerance', 100, 110, 10, false],
    ['beyond the tolerance', 100, 110.5, 10, true],
    ['zero tolerance: any delay is late', 100, 100.001, 0, true],
  ];
  for (const [why, at, issued, lateMs, want] of rows) assert.equal(isLate(at, issued, lateMs), want, why);
});
