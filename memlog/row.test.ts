import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseLog, encodeRow, encodeRows, headerLine, formatDate, isRich, LogParseError, COLUMNS, type LogRow } from './row.js';

const fixture = (name: string): string => readFileSync(new URL(`../../memlog/fixtures/${name}`, import.meta.url), 'utf8');

test('parses the seed log (4 tab-separated columns, date with spaces)', () => {
  const rows = parseLog(fixture('seed-mochimem.log'));
  assert.equal(rows.length, 15);
  assert.deepEqual(rows[0], {
    date: 'Mon Oct 20 16:57:24 BST 2008', unix: 1224518244, rssKb: 40388, conns: 1,
    pssKb: null, treeRssKb: null, treePssKb: null, tcpMemKb: null, cpuPct: null, kbPerConn: null,
  });
  assert.equal(rows[14]!.rssKb, 125360);
  assert.equal(rows[14]!.conns, 10001);
  assert.equal(isRich(rows), false);
});

test('parses the rich format: header, comments, - as null, the exit comment', () => {
  const rows = parseLog(fixture('rich-mochimem.log'));
  assert.equal(rows.length, 7);
  assert.deepEqual(rows[1], {
    date: 'Mon Jan  5 10:01:00 UTC 2026', unix: 1767607260, rssKb: 50000, conns: 5000,
    pssKb: 26000, treeRssKb: 100000, treePssKb: 52000, tcpMemKb: 4000, cpuPct: 35, kbPerConn: 20,
  });
  assert.equal(rows[0]!.cpuPct, null);
  assert.equal(rows[0]!.kbPerConn, null);
  assert.equal(isRich(rows), true);
});

test('encode → parse round-trips, the first four columns are exactly the seed layout', () => {
  const row: LogRow = {
    date: 'Mon Oct 20 16:57:24 BST 2008', unix: 1224518244, rssKb: 40388, conns: 1,
    pssKb: 20111, treeRssKb: 80000, treePssKb: 40222, tcpMemKb: 884, cpuPct: 12.345, kbPerConn: 80000,
  };
  const line = encodeRow(row);
  assert.ok(line.startsWith('Mon Oct 20 16:57:24 BST 2008\t1224518244\t40388\t1\t'), line);
  assert.equal(line, 'Mon Oct 20 16:57:24 BST 2008\t1224518244\t40388\t1\t20111\t80000\t40222\t884\t12.3\t80000.00\n');
  const back = parseLog(headerLine() + line)[0]!;
  assert.deepEqual(back, { ...row, cpuPct: 12.3 });
  const empty = encodeRow({ ...row, pssKb: null, cpuPct: null, kbPerConn: null });
  assert.equal(empty.split('\t')[4], '-');
  assert.equal(parseLog(empty)[0]!.pssKb, null);
});

test('the header names every column; columns are mapped by the header', () => {
  assert.equal(headerLine(), '# ' + COLUMNS.join('\t') + '\n');
  // A header with a different order still maps by name.
  const rows = parseLog('# date\tunix\tconns\trss_kb\nMon Oct 20 16:57:24 BST 2008\t1224518244\t7\t40388\n');
  assert.equal(rows[0]!.conns, 7);
  assert.equal(rows[0]!.rssKb, 40388);
});

test('sub-second unix times are written with milliseconds', () => {
  const line = encodeRows([{ date: 'd', unix: 1.5, rssKb: 1, conns: 0, pssKb: null, treeRssKb: null, treePssKb: null, tcpMemKb: null, cpuPct: null, kbPerConn: null }]);
  assert.equal(line.split('\t')[1], '1.500');
});

test('lines without tabs split on whitespace (the seed log pasted through a terminal)', () => {
  const rows = parseLog('Mon Oct 20 16:57:24 BST 2008   1224518244   40388   1\n');
  assert.equal(rows[0]!.date, 'Mon Oct 20 16:57:24 BST 2008');
  assert.equal(rows[0]!.unix, 1224518244);
  assert.equal(rows[0]!.conns, 1);
});

test('a truncated last line (log still being written) is ignored; a bad line elsewhere names its line', () => {
  const seed = fixture('seed-mochimem.log');
  assert.equal(parseLog(seed + 'Mon Oct 20 17:13:30 BST 2008\t12245').length, 15);
  const lines = seed.split('\n');
  lines.splice(3, 0, 'Mon Oct 20\tnot-a-time\t1\t1');
  assert.throws(() => parseLog(lines.join('\n')), (err: unknown) => err instanceof LogParseError && err.line === 4 && /unix 'not-a-time'/.test(err.message));
  assert.throws(() => parseLog('a\tb\n'), /line 1: expected at least 4/);
  assert.deepEqual(parseLog(''), []);
  assert.deepEqual(parseLog('\r\n# only a comment\r\n'), []);
});

test('dates are formatted like date(1): zone abbreviation, space-padded day', () => {
  assert.equal(formatDate(new Date(1224518244_000), 'Europe/London'), 'Mon Oct 20 16:57:24 BST 2008');
  assert.equal(formatDate(new Date(Date.UTC(2008, 9, 5, 12)), 'America/New_York'), 'Sun Oct  5 08:00:00 EDT 2008');
  assert.equal(formatDate(new Date(Date.UTC(2026, 0, 5, 10)), 'UTC'), 'Mon Jan  5 10:00:00 UTC 2026');
  assert.equal(formatDate(new Date(Date.UTC(2026, 0, 5, 10)), 'Asia/Kolkata'), 'Mon Jan  5 15:30:00 +0530 2026');
  assert.match(formatDate(new Date()), /^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ \d{4}$/);
});
