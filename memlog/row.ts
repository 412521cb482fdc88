// The memlog row: one sample of a watched process tree. This module is the only place that knows how a row is
// written to or read from a log line, for the seed's 4-column format and for memlog's richer one.
//
// The first four columns are exactly the seed's (`date\tunix\trss_kb\tconns`, date like `Mon Oct 20 16:57:24 BST
// 2008`), so the seed's own awk/gnuplot recipe still works on memlog's logs; the extra columns follow. A value that
// could not be measured is written as `-` and read back as null.

import { stringify } from 'csv-stringify/sync';

/** One sample. Fields after `conns` are null when not measured (or absent, in the seed's 4-column format). */
export interface LogRow {
  /** Human date as written in the log (`Mon Oct 20 16:57:24 BST 2008`). */
  date: string;
  /** Unix time in seconds (fractions allowed when read back; memlog writes whole seconds). */
  unix: number;
  /** Resident set size of the watched process, KB (what `ps -o rss` shows). */
  rssKb: number;
  /** Established TCP connections on the watched port(s) owned by the watched tree. */
  conns: number;
  /** Proportional set size of the watched process, KB (/proc/<pid>/smaps_rollup). */
  pssKb: number | null;
  /** RSS summed over the process and all its descendants, KB (shared pages counted once per process). */
  treeRssKb: number | null;
  /** PSS summed over the tree, KB: shared pages (the Node binary) are split, so the sum counts them once. */
  treePssKb: number | null;
  /** Kernel TCP buffer memory of the whole network namespace, KB (/proc/net/sockstat `mem` pages × page size). */
  tcpMemKb: number | null;
  /** CPU used by the tree since the previous sample, % of one core. */
  cpuPct: number | null;
  /** Tree RSS (or RSS without --tree) divided by connections, KB. */
  kbPerConn: number | null;
}

/** Column names, in file order; the `#` header line lists them. */
export const COLUMNS = [
  'date', 'unix', 'rss_kb', 'conns', 'pss_kb', 'tree_rss_kb', 'tree_pss_kb', 'tcp_mem_kb', 'cpu_pct', 'kb_per_conn',
] as const;
export type ColumnName = (typeof COLUMNS)[number];

const FIELD: Record<ColumnName, keyof LogRow> = {
  date: 'date', unix: 'unix', rss_kb: 'rssKb', conns: 'conns', pss_kb: 'pssKb', tree_rss_kb: 'treeRssKb',
  tree_pss_kb: 'treePssKb', tcp_mem_kb: 'tcpMemKb', cpu_pct: 'cpuPct', kb_per_conn: 'kbPerConn',
};

/** Decimal places written for each numeric column (everything else is whole KB or a count). */
const DECIMALS: Partial<Record<ColumnName, number>> = { cpu_pct: 1, kb_per_conn: 2 };

/** The header line (with trailing newline) that names the columns. */
export function headerLine(): string {
  return '# ' + COLUMNS.join('\t') + '\n';
}

/** A `#` comment line (with trailing newline): ignored by the parser, by gnuplot, and easy to grep. */
export function commentLine(text: string): string {
  return '# ' + text.replace(/[\r\n]+/g, ' ') + '\n';
}

function cell(row: LogRow, col: ColumnName): string {
  const v = row[FIELD[col]];
  if (v === null || v === undefined) return '-';
  if (typeof v === 'string') return v;
  if (!Number.isFinite(v)) return '-';
  if (col === 'unix' && !Number.isInteger(v)) return v.toFixed(3); // sub-second intervals
  const d = DECIMALS[col];
  return d === undefined ? String(Math.round(v)) : v.toFixed(d);
}

/** Encodes rows as tab-separated lines (csv-stringify, tab delimiter), each ending in a newline. */
export function encodeRows(rows: readonly LogRow[]): string {
  return stringify(rows.map((r) => COLUMNS.map((c) => cell(r, c))), { delimiter: '\t', record_delimiter: '\n' });
}

/** Encodes one row as a line. */
export function encodeRow(row: LogRow): string {
  return encodeRows([row]);
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/**
 * The local time-zone abbreviation at `d` (BST, CEST, EDT, UTC). Intl knows the common abbreviations only under
 * some locales (en-US knows EDT, en-GB knows BST), so both are tried; failing that, a numeric `+0530` like date(1).
 */
export function zoneAbbreviation(d: Date, timeZone?: string): string {
  for (const locale of ['en-US', 'en-GB']) {
    const part = new Intl.DateTimeFormat(locale, { timeZone, timeZoneName: 'short' }).formatToParts(d).find((p) => p.type === 'timeZoneName');
    if (part && !/^GMT[+-−]/.test(part.value)) return part.value;
  }
  const off = -offsetMinutes(d, timeZone);
  const sign = off < 0 ? '-' : '+';
  const a = Math.abs(off);
  const hh = String(Math.floor(a / 60)).padStart(2, '0');
  return a % 60 === 0 ? `${sign}${hh}` : `${sign}${hh}${String(a % 60).padStart(2, '0')}`;
}

function offsetMinutes(d: Date, timeZone?: string): number {
  if (timeZone === undefined) return d.getTimezoneOffset();
  const p = new Intl.DateTimeFormat('en-US', { timeZone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' }).formatToParts(d);
  const get = (t: string): number => Number(p.find((x) => x.type === t)?.value ?? 0);
  const asUtc = Date.UTC(get('year'), get('month') - 1, get('day'), get('hour'), get('minute'), get('second'));
  return Math.round((Math.floor(d.getTime() / 1000) * 1000 - asUtc) / 60_000);
}

/**
 * Formats a date like date(1) in the C locale: `Mon Oct 20 16:57:24 BST 2008` (`%a %b %e %H:%M:%S %Z %Y`, the day
 * space-padded). Uses the process's local zone unless `timeZone` (an IANA name) is given.
 */
export function formatDate(d: Date, timeZone?: string): string {
  const local = new Date(d.getTime() - offsetMinutes(d, timeZone) * 60_000);
  const pad = (n: number): string => String(n).padStart(2, '0');
  return `${DAYS[local.getUTCDay()]} ${MONTHS[local.getUTCMonth()]} ${String(local.getUTCDate()).padStart(2, ' ')} ` +
    `${pad(local.getUTCHours())}:${pad(local.getUTCMinutes())}:${pad(local.getUTCSeconds())} ${zoneAbbreviation(d, timeZone)} ${local.getUTCFullYear()}`;
}

/** A malformed log line; `line` is 1-based. */
export class LogParseError extends Error {
  readonly code = 'C1M_MEMLOG_PARSE';
  constructor(readonly line: number, reason: string) {
    super(`line ${line}: ${reason}`);
    this.name = 'LogParseError';
  }
}

function num(text: string | undefined, lineNo: number, col: string, required: boolean): number | null {
  if (text === undefined || text === '' || text === '-') {
    if (required) throw new LogParseError(lineNo, `missing ${col}`);
    return null;
  }
  const n = Number(text);
  if (!Number.isFinite(n)) throw new LogParseError(lineNo, `${col} '${text}' is not a number`);
  return n;
}

/**
 * Parses a memlog log: the seed's `date\tunix\trss_kb\tconns` lines and memlog's richer ones. `#` lines are
 * comments, except a header naming the columns, which maps later lines by name (so column order can evolve).
 * Lines without tabs are split on whitespace, the last three fields being unix, rss and conns (the seed's log
 * pasted through a terminal). A truncated last line (no newline: a log still being written) is ignored; any other
 * malformed line throws LogParseError naming its line number.
 */
export function parseLog(text: string): LogRow[] {
  const lines = text.split('\n');
  const endsWithNewline = text.endsWith('\n');
  let columns: string[] = [...COLUMNS];
  const rows: LogRow[] = [];
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.replace(/\r$/, '');
    if (raw.trim() === '') continue;
    if (raw.startsWith('#')) {
      const names = raw.slice(1).trim().split('\t');
      if (names[0] === 'date' && names[1] === 'unix') columns = names;
      continue;
    }
    const truncated = i === lines.length - 1 && !endsWithNewline;
    try {
      rows.push(parseLine(raw, i + 1, columns));
    } catch (err) {
      if (truncated) continue;
      throw err;
    }
  }
  return rows;
}

function parseLine(raw: string, lineNo: number, columns: readonly string[]): LogRow {
  let fields = raw.split('\t');
  if (fields.length === 1) {
    const ws = raw.trim().split(/\s+/);
    if (ws.length < 4) throw new LogParseError(lineNo, `expected date, unix time, RSS KB and connections, got '${raw.slice(0, 60)}'`);
    fields = [ws.slice(0, -3).join(' '), ...ws.slice(-3)];
  }
  if (fields.length < 4) throw new LogParseError(lineNo, `expected at least 4 tab-separated columns, got ${fields.length}`);
  const byName = new Map<string, string>();
  columns.forEach((c, k) => { if (fields[k] !== undefined) byName.set(c, fields[k]!); });
  const get = (c: ColumnName, required = false): number | null => num(byName.get(c), lineNo, c, required);
  return {
    date: byName.get('date') ?? '',
    unix: get('unix', true)!,
    rssKb: get('rss_kb', true)!,
    conns: get('conns', true)!,
    pssKb: get('pss_kb'),
    treeRssKb: get('tree_rss_kb'),
    treePssKb: get('tree_pss_kb'),
    tcpMemKb: get('tcp_mem_kb'),
    cpuPct: get('cpu_pct'),
    kbPerConn: get('kb_per_conn'),
  };
}

/** True when any row carries memlog's extra columns (PSS, tree sums, ...). */
export function isRich(rows: readonly LogRow[]): boolean {
  return rows.some((r) => r.pssKb !== null || r.treeRssKb !== null || r.treePssKb !== null || r.tcpMemKb !== null || r.cpuPct !== null || r.kbPerConn !== null);
}
