// c1m chaos at small scale: the sigterm and worker-kill scenarios run for real (server, floodtest and msggen as
// child processes), so CI proves that the faults are survived and judged; and the table on fixed input.
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { formatChaos, runChaos, type ChaosResult } from './chaos.js';

const explain = (r: ChaosResult): string => formatChaos(r);

describe('c1m chaos (small scale)', () => {
  it('sigterm: every client gets the terminating chunk, no half-written chunk', async () => {
    const r = await runChaos('sigterm', { conns: 200, msgRate: 100, flowMs: 1000, timeLimitMs: 60_000 }).done;
    assert.equal(r.pass, true, explain(r));
    assert.deepEqual(r.checks.map((c) => c.ok), [true, true, true, true]);
    assert.match(r.checks[1]!.measured, /^closed 200$/);
    assert.equal(r.checks[2]!.measured, 'none');
  });

  it('worker-kill: replaced, clients back, the surviving worker loses nothing', async () => {
    const r = await runChaos('worker-kill', { conns: 200, msgRate: 100, flowMs: 1000, witnesses: 20, timeLimitMs: 60_000 }).done;
    assert.equal(r.pass, true, explain(r));
    assert.equal(r.checks.length, 3);
    assert.equal(r.figures.workerRestarts, 1);
    // Both workers held witnesses: some were cut by the kill, the others received every message published to them.
    assert.match(r.checks[2]!.measured, /^\d+ stayed open, \d+ cut; (\d[\d,]*) received of \1 published$/);
  });

  it('the table: each check with its bound, incidents fail the run', () => {
    const r: ChaosResult = {
      scenario: 'sigterm', params: { conns: 10 }, figures: { exitMs: 12 }, durationMs: 1500, pass: false,
      checks: [{ name: 'server exited by itself', bound: '≤ 5000 ms, exit 0', measured: '12 ms, exit 0', ok: true }],
      incidents: ['timed out after 5s waiting for 10 streams'],
    };
    assert.equal(formatChaos(r), [
      '# c1m chaos sigterm: conns 10', '',
      '| check | bound | measured | result |', '|---|---|---|---|',
      '| server exited by itself | ≤ 5000 ms, exit 0 | 12 ms, exit 0 | pass |',
      '| incident | | timed out after 5s waiting for 10 streams | **FAIL** |', '',
      'exitMs: 12', '', '**FAIL** (1.5 s)', '',
    ].join('\n'));
  });
});
