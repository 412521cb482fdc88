// The pure schedule functions of the engine, table-tested (one comment per row).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffMs, pace } from './engine.js';

test('pace(elapsed, started, interval) → ms to wait before the next connect', () => {
  const rows: Array<[number, number, number, number, string]> = [
    [0, 0, 0, 0, 'interval 0: never wait'],
    [0, 1_000_000, 0, 0, 'interval 0: never wait, however many started'],
    [0, 0, 10, 0, 'the first connect is due at once'],
    [0, 1, 10, 10, 'the second is due at 10 ms'],
    [9.5, 1, 10, 0.5, 'half a ms early: wait the rest'],
    [10, 1, 10, 0, 'exactly due'],
    [55, 3, 10, 0, 'behind schedule (3 started, 6 due): start now, catching up'],
    [55, 6, 10, 5, 'caught up: the 7th is due at 60 ms'],
    [1, 4, 0.25, 0, 'fractional interval: 4 per ms'],
    [1, 5, 0.25, 0.25, 'fractional interval: the 6th waits a quarter ms'],
  ];
  for (const [elapsed, started, interval, want, why] of rows) {
    assert.equal(pace(elapsed, started, interval), want, why);
  }
});

test('backoffMs(failures, base, max, random) → reconnect delay with equal jitter', () => {
  const rows: Array<[number, number, number, number, number, string]> = [
    [1, 100, 30_000, 0, 50, 'first failure, no jitter: half the base'],
    [1, 100, 30_000, 0.999999, 99.99995, 'first failure, most jitter: just under the base'],
    [2, 100, 30_000, 0.5, 150, 'doubles: 200 → 100 + 50'],
    [5, 100, 30_000, 0, 800, '100 × 2^4 = 1600, half fixed'],
    [20, 100, 30_000, 0, 15_000, 'capped at max'],
    [1000, 100, 30_000, 1, 30_000, 'huge failure counts stay capped (no overflow)'],
    [0, 100, 30_000, 0, 50, 'zero failures behaves as the first'],
  ];
  for (const [failures, base, max, random, want, why] of rows) {
    assert.ok(Math.abs(backoffMs(failures, base, max, random) - want) < 1e-6, `${why}: got ${backoffMs(failures, base, max, random)}`);
  }
});
