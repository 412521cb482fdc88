import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { compareRuns, formatCompare, type CompareRow } from './compare.js';

// Two real small runs of this machine (1,000 and 2,000 connections, 200 msg/s for 10 s), committed as fixtures.
const run = (name: string): string => fileURLToPath(new URL(`../../bench/fixtures/runs/${name}`, import.meta.url));
const A = run('conns1000');
const B = run('conns2000');
const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));

describe('c1m compare', () => {
  const dir = mkdtempSync(join(tmpdir(), 'c1m-compare-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const row = (rows: CompareRow[], metric: string): CompareRow => {
    const r = rows.find((x) => x.metric === metric);
    assert.ok(r, metric);
    return r;
  };

  it('puts the two summaries side by side with b / a ratios', async () => {
    const c = await compareRuns(A, B, { chartOut: join(dir, 'overlay.svg') });
    assert.equal(c.a.name, 'conns1000');
    assert.equal(c.b.name, 'conns2000');
    assert.deepEqual(row(c.rows, 'reached'), { section: 'connections', metric: 'reached', unit: '', a: 1000, b: 2000, ratio: 2 });
    assert.deepEqual(row(c.rows, 'KB/conn total RSS'), { section: 'memory', metric: 'KB/conn total RSS', unit: 'KB', a: 59.49, b: 29.4, ratio: 0.49 });
    assert.deepEqual(row(c.rows, 'KB/conn marginal USS'), { section: 'memory', metric: 'KB/conn marginal USS', unit: 'KB', a: 5.42, b: 2.37, ratio: 0.44 });
    const p99 = row(c.rows, 'p99');
    assert.deepEqual([p99.a, p99.b, p99.ratio], [7.267, 4.995, 0.69]);
    assert.equal(row(c.rows, 'sent').ratio, 1);
    assert.match(c.a.verdict, /^VERDICT: valid/);
    const text = formatCompare(c);
    assert.match(text, /^ +metric +conns1000 +conns2000 +b \/ a$/m);
    assert.match(text, /^connections +asked +1,000 +2,000 +2\.00×$/m);
    assert.match(text, /^ +KB\/conn total RSS \(KB\) +59\.49 +29\.4 +0\.49×$/m);
  });

  it('writes the overlay chart as SVG and PNG', async () => {
    const c = await compareRuns(A, B, { chartOut: join(dir, 'o2.png') });
    assert.deepEqual(c.charts, [join(dir, 'o2.svg'), join(dir, 'o2.png')]);
    const svg = readFileSync(join(dir, 'o2.svg'), 'utf8');
    assert.match(svg, /^<svg/);
    assert.match(svg, /conns1000/);
    assert.match(svg, /conns2000/);
    const png = readFileSync(join(dir, 'o2.png'));
    assert.equal(png.subarray(1, 4).toString(), 'PNG');
  });

  it('CLI: --json, and a folder that is not a run', () => {
    const ok = spawnSync(process.execPath, [CLI, 'compare', A, B, '--json', '--out', join(dir, 'o3.svg')], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(ok.status, 0, ok.stderr);
    const j = JSON.parse(ok.stdout) as { rows: CompareRow[] };
    assert.equal(row(j.rows, 'asked').ratio, 2);
    assert.ok(existsSync(join(dir, 'o3.png')));
    const bad = spawnSync(process.execPath, [CLI, 'compare', A, dir], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /summary\.json not found: is this a c1m run folder\?/);
    const one = spawnSync(process.execPath, [CLI, 'compare', A], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(one.status, 2);
    assert.match(one.stderr, /expected two run folders/);
  });
});
