#!/usr/bin/env node
// memlog: record a server's memory and connections over time, summarize the log, plot it.

import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { FlagError, parseDuration, parseIntFlag, parsePortList } from '../lib/flags.js';
import { onInterrupt } from '../lib/signals.js';
import { startRecorder, RecorderError, RECORDER_LIMITS } from './recorder.js';
import { parseLog, LogParseError, type LogRow } from './row.js';
import { summarize, formatSummary } from './summary.js';

const HELP = `memlog: sample a server's memory and connections over time, summarize and plot the log

usage:
  memlog record (--pid PID | --pgrep PATTERN) [--port 8000] [--interval 60s] [--tree | --no-tree]
                [--sockets auto|bpf|netlink|proc] [-o FILE|-] [--duration D] [--quiet]
  memlog summary LOG|- [--json]
  memlog plot LOG|- [--out plots/<log name>.png] [--svg] [--title TEXT] [--subtitle TEXT]
                [--width 72] [--no-ascii]
  memlog --help | memlog <command> --help

record   every interval, one tab-separated line: date, unix time, RSS KB, established connections (the seed's
         four columns), then PSS KB, tree RSS KB, tree PSS KB, kernel TCP memory KB, CPU % since the last sample
         and KB per connection. A '#' header names the columns.
  --pid PID          process to watch (1 or more)
  --pgrep PATTERN    regular expression matched against command lines (like pgrep -f); must match one process tree
  --port LIST        local ports whose established connections count: 8000, 8000,8001 or 8000-8003 (default 8000)
  --interval D       time between samples, ${RECORDER_LIMITS.minIntervalMs}ms to 1h (default 60s); e.g. 1s, 500ms, 5m
  --tree / --no-tree sum all descendants (server workers) into the tree columns (default --tree)
  --sockets MODE     where the socket table comes from: bpf (an eBPF TCP socket iterator that returns only the
                     matching sockets' inodes; root, kernel BTF, the addon built by npm run build), netlink (the
                     kernel's sock_diag dump, filtered in the kernel; the addon), proc (/proc/net/tcp text, slow at
                     100k+ connections), auto = the first of bpf, netlink, proc that works, with a notice saying
                     why the faster ones were not (default auto)
  -o, --output FILE  append to FILE like 'tee -a' (header only if new or empty) and copy to stdout; '-' = stdout
                     only (default -)
  --duration D       stop after D (default: until the process exits or Ctrl-C)
  -q, --quiet        with -o FILE, do not copy the lines to stdout
  Stops by itself, exit 0, when the process exits (the log gets a '# ... exited' line).

summary  idle, peak and plateau memory, KB per connection at the plateau (total and marginal = (plateau − idle)
         / connections), growth per hour over the plateau; a WARN line when memory creeps.
  --json             print the figures as JSON

plot     a terminal chart (memory and connections vs minutes elapsed) on stdout, and a PNG (plus SVG with --svg)
         with three panels: memory MiB, connections, KB per connection.
  --out FILE         PNG path (default plots/<log file name>.png; plots/mochimem.png for stdin)
  --svg              also write the SVG next to the PNG
  --title TEXT       chart title (default "Mem usage with <peak> active connections"); a newline starts a new line
  --subtitle TEXT    smaller line(s) under it (default: start date, samples, duration)
  --width N          terminal chart width in columns, 20 to 400 (default 72)
  --no-ascii         skip the terminal chart

Logs: the seed's 4-column format and memlog's own are both read; '-' reads stdin.
`;

/** A usage error: one line on stderr, exit 2. */
class UsageError extends Error {}

function fail(message: string, code: number): never {
  process.stderr.write(`memlog: ${message}\n`);
  process.exit(code);
}

function readLog(path: string): LogRow[] {
  let text: string;
  try {
    text = readFileSync(path === '-' ? 0 : path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read log '${path}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    const rows = parseLog(text);
    if (rows.length === 0) throw new UsageError(`log '${path}' has no samples`);
    return rows;
  } catch (err) {
    if (err instanceof LogParseError) throw new UsageError(`log '${path}': ${err.message}`);
    throw err;
  }
}

function oneLog(positionals: string[], command: string): string {
  if (positionals.length !== 1) throw new UsageError(`${command} takes one log file (or - for stdin), got ${positionals.length}`);
  return positionals[0]!;
}

async function record(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: {
      pid: { type: 'string' },
      pgrep: { type: 'string' },
      port: { type: 'string', default: '8000' },
      interval: { type: 'string', default: '60s' },
      tree: { type: 'boolean' },
      'no-tree': { type: 'boolean' },
      sockets: { type: 'string', default: 'auto' },
      output: { type: 'string', short: 'o', default: '-' },
      duration: { type: 'string' },
      quiet: { type: 'boolean', short: 'q' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (positionals.length) throw new UsageError(`record takes no positional arguments, got '${positionals[0]}'`);
  if ((values.pid === undefined) === (values.pgrep === undefined)) throw new UsageError('record: give exactly one of --pid PID and --pgrep PATTERN');
  if (values.tree && values['no-tree']) throw new UsageError('--tree and --no-tree: choose one');
  if (values.pgrep !== undefined && values.pgrep.trim() === '') throw new UsageError('--pgrep: empty pattern');
  const pid = values.pid === undefined ? undefined : parseIntFlag('--pid', values.pid, 1, 4_194_304);
  const ports = parsePortList('--port', values.port!);
  const intervalMs = parseDuration('--interval', values.interval!, RECORDER_LIMITS.minIntervalMs, RECORDER_LIMITS.maxIntervalMs);
  const durationMs = values.duration === undefined ? undefined : parseDuration('--duration', values.duration, 1, 30 * 24 * 3_600_000);
  const sockets = values.sockets!;
  if (sockets !== 'auto' && sockets !== 'bpf' && sockets !== 'netlink' && sockets !== 'proc') throw new UsageError(`--sockets: '${sockets}' is not one of auto, bpf, netlink, proc`);
  const out = values.output!;
  const recorder = startRecorder({
    ...(pid !== undefined ? { pid } : { pgrep: values.pgrep! }),
    ports,
    intervalMs,
    tree: !values['no-tree'],
    sockets,
    out,
    ...(out !== '-' && !values.quiet ? { echo: process.stdout } : {}),
    log: (line) => process.stderr.write(line + '\n'),
  });
  process.stderr.write(`memlog: recording pid ${recorder.pid} ports ${values.port} every ${values.interval} (sockets: ${recorder.sockets})${out === '-' ? '' : ` → ${out}`}` +
    `${durationMs ? ` for ${values.duration}` : ''} (Ctrl-C stops)\n`);
  const timer = durationMs ? setTimeout(() => void recorder.stop(), durationMs) : null;
  const off = onInterrupt(() => recorder.stop());
  const end = await recorder.done;
  if (timer) clearTimeout(timer);
  off();
  if (end.reason === 'stopped') process.stderr.write(`memlog: stopped after ${end.rows} rows\n`);
}

function summary(args: string[]): void {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const s = summarize(readLog(oneLog(positionals, 'summary')));
  process.stdout.write(values.json ? JSON.stringify(s, null, 2) + '\n' : formatSummary(s));
}

async function plot(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: {
      out: { type: 'string' },
      svg: { type: 'boolean' },
      title: { type: 'string' },
      subtitle: { type: 'string' },
      width: { type: 'string', default: '72' },
      'no-ascii': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const path = oneLog(positionals, 'plot');
  const width = parseIntFlag('--width', values.width!, 20, 400);
  if (values.out !== undefined && !/\.png$/i.test(values.out)) throw new UsageError(`--out: '${values.out}' must be a .png path (the SVG goes next to it)`);
  const rows = readLog(path);
  const { plotLog, asciiPlot } = await import('./plot.js'); // vega is heavy: load it only for plot
  const out = values.out ?? `plots/${path === '-' ? 'mochimem' : basename(path).replace(/\.[^.]*$/, '')}.png`;
  if (!values['no-ascii']) process.stdout.write(asciiPlot(rows, width, values.title));
  const r = await plotLog(rows, {
    out,
    svg: values.svg ?? false,
    ...(values.title !== undefined ? { title: values.title } : {}),
    ...(values.subtitle !== undefined ? { subtitle: values.subtitle } : {}),
  });
  process.stderr.write(`memlog: wrote ${r.pngPath}${r.svgPath ? ` and ${r.svgPath}` : ''}\n`);
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'record':
      return record(rest);
    case 'summary':
      return summary(rest);
    case 'plot':
      return plot(rest);
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(HELP);
      if (command === undefined) process.exitCode = 2;
      return;
    default:
      throw new UsageError(`unknown command '${command}' (allowed: record, summary, plot; see memlog --help)`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof FlagError || err instanceof UsageError) fail(err.message, 2);
  if (err instanceof RecorderError) fail(err.message, 2);
  const code = (err as { code?: string }).code;
  if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) fail(`${(err as Error).message.replace(/\. To specify a positional.*$/s, '')} (see memlog --help)`, 2);
  fail(err instanceof Error ? err.message : String(err), 1);
});
