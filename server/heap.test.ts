import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startHeapBudget } from './heap.js';

const HEAP = fileURLToPath(new URL('./heap.js', import.meta.url));

test('without --expose-gc, or with slack 0, the budget does nothing', () => {
  assert.equal(typeof (globalThis as { gc?: unknown }).gc, 'undefined');
  const b = startHeapBudget(1024, 10);
  assert.equal(b.active, false);
  b.stop();
});

test('with --expose-gc: garbage past the slack gets a full GC, and the heap goes back near its floor', { timeout: 20_000 }, async () => {
  // A child process with gc exposed keeps garbage alive long enough to reach the old generation, then drops it.
  const script = `
    import { startHeapBudget } from ${JSON.stringify(HEAP)};
    import { getHeapStatistics } from 'node:v8';
    let gcs = 0;
    const off = startHeapBudget(0, 10);
    if (off.active) throw new Error('slack 0 must be inactive');
    const b = startHeapBudget(512 * 1024, 20, () => gcs++);
    const used = () => getHeapStatistics().used_heap_size;
    const start = used();
    let keep = [];
    let peak = 0;
    const deadline = Date.now() + 10_000;
    while (gcs < 3 && Date.now() < deadline) {
      for (let i = 0; i < 2000; i++) keep.push({ i, s: 'x'.repeat(32) + i });
      if (keep.length > 20_000) keep = [];
      peak = Math.max(peak, used());
      await new Promise((r) => setTimeout(r, 5));
    }
    keep = null;
    b.stop();
    await new Promise((r) => setTimeout(r, 50));
    process.stdout.write(JSON.stringify({ active: b.active, gcs, start, peak, end: used() }));
  `;
  const child = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  assert.equal(code, 0);
  const r = JSON.parse(out) as { active: boolean; gcs: number; start: number; peak: number; end: number };
  assert.equal(r.active, true);
  assert.ok(r.gcs >= 3, `full GCs requested: ${r.gcs}`);
  assert.ok(r.end < r.peak, `heap after ${r.end} below its peak ${r.peak}`);
});
