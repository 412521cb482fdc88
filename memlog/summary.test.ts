import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseLog } from './row.js';
import { summarize, formatSummary } from './summary.js';

const fixture = (name: string): string => readFileSync(new URL(`../../memlog/fixtures/${name}`, import.meta.url), 'utf8');
const close = (a: number | null, b: number, eps = 1e-6): void => assert.ok(a !== null && Math.abs(a - b) < eps, `${a} ≉ ${b}`);

test('seed log: idle, peak, plateau, KB/conn and the creep stands out', () => {
  const s = summarize(parseLog(fixture('seed-mochimem.log')));
  assert.equal(s.format, 'seed');
  assert.equal(s.rows, 15);
  assert.equal(s.peakConns, 10001);
  assert.deepEqual(s.idle, { rows: 1, conns: 1 });
  // Plateau: 17:01:37 (row 5) to the end, 11 samples at 10001 connections.
  assert.equal(s.plateau!.rows, 11);
  close(s.plateau!.fromMin, (1224518497 - 1224518244) / 60);
  assert.equal(s.series.length, 1);
  const rss = s.series[0]!;
  assert.equal(rss.column, 'rss_kb');
  assert.equal(rss.idleKb, 40388);
  assert.equal(rss.peakKb, 125360);
  assert.equal(rss.plateauKb, 91120); // median of the 11 plateau samples
  assert.equal(rss.plateauStartKb, 90748);
  assert.equal(rss.plateauEndKb, 125360);
  close(rss.kbPerConn, 91120 / 10001);
  close(rss.marginalKbPerConn, (91120 - 40388) / 10001);
  // 90.7 → 125.4 MB (KB/1000) in 10.8 minutes: a least-squares slope of ~195 MiB/h.
  assert.ok(rss.growthMbPerHour! > 150 && rss.growthMbPerHour! < 250, String(rss.growthMbPerHour));
  assert.ok(rss.growthShare! > 0.3, String(rss.growthShare));
  assert.equal(s.warnings.length, 1);
  assert.match(s.warnings[0]!, /rss_kb grew 43% over the 10\.8-minute plateau/);
  const text = formatSummary(s);
  assert.match(text, /^WARN rss_kb grew/m);
  assert.match(text, /^rss_kb +39\.4 +122\.4 +89\.0 +9\.11 +5\.07 +195\.2 +\+43%$/m);
});

test('rich log: every memory column, tree figures, CPU and TCP memory, no warning on a flat plateau', () => {
  const s = summarize(parseLog(fixture('rich-mochimem.log')));
  assert.equal(s.format, 'rich');
  assert.equal(s.plateau!.rows, 4);
  assert.equal(s.plateau!.conns, 10000);
  assert.deepEqual(s.series.map((x) => x.column), ['rss_kb', 'pss_kb', 'tree_rss_kb', 'tree_pss_kb']);
  const [rss, pss, treeRss, treePss] = s.series;
  assert.equal(rss!.idleKb, 44000);
  close(rss!.kbPerConn, 5.6);
  close(rss!.marginalKbPerConn, 1.2);
  close(pss!.marginalKbPerConn, 1.2);
  close(treeRss!.kbPerConn, 11.2);
  close(treeRss!.marginalKbPerConn, 2.4);
  close(treePss!.kbPerConn, 6.4);
  close(treeRss!.growthMbPerHour, 0);
  assert.equal(treeRss!.peakKb, 112000);
  close(treeRss!.peakAtMin, 2);
  assert.equal(s.cpuPctMedian, 20);
  assert.equal(s.tcpMemKbPeak, 8000);
  assert.deepEqual(s.warnings, []);
  assert.doesNotMatch(formatSummary(s), /WARN/);
});

test('logs without connections or without an idle start say so', () => {
  const noConns = summarize(parseLog('d\t0\t100\t0\nd\t60\t110\t0\n'));
  assert.equal(noConns.plateau, null);
  assert.equal(noConns.series[0]!.kbPerConn, null);
  assert.ok(noConns.warnings.some((w) => /no connections/.test(w)));
  const busy = summarize(parseLog('d\t0\t100\t50\nd\t60\t110\t50\nd\t120\t110\t50\n'));
  assert.equal(busy.idle, null);
  assert.equal(busy.series[0]!.marginalKbPerConn, null);
  close(busy.series[0]!.kbPerConn, 110 / 50);
  assert.throws(() => summarize([]), /no samples/);
});
