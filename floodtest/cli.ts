#!/usr/bin/env node
// floodtest CLI: flags → typed options → startFlood; the only place that prints the records and exits.
import { createWriteStream } from 'node:fs';
import { parseArgs } from 'node:util';
import { FlagError, parseDuration, parseHostList, parseIntFlag, parseNumberFlag, parsePortList } from '../lib/flags.js';
import { onInterrupt } from '../lib/signals.js';
import {
  CONNS_PER_PROC,
  FLOOD_DEFAULTS,
  encodeRecord,
  formatErrors,
  formatProgress,
  formatStatsLine,
  formatSummary,
  generateUrls,
  parseTargets,
  readUrlFile,
  startFlood,
  UrlError,
  type FloodOptions,
  type Sample,
  useLeanHeap,
} from './index.js';

useLeanHeap();

const HELP = `floodtest: open many long-lived HTTP connections at a fixed rate and count what arrives.

Usage:
  floodtest <urls-file|-> <interval-ms> [flags]
  floodtest urls --base <url> --count <n> [--start 1] [--hosts <list>] [--ports <list>] [--out -]

  <urls-file>    one URL per line (http:// or https://); blank lines and # comments skipped; - = stdin
  <interval-ms>  one new connection every interval-ms, in file order (fractions allowed, 0 to 3600000);
                 0 = as fast as the in-flight cap allows

Flags:
  --duration <d>         stop by itself after d (e.g. 30s, 10m, 1h); default: run until Ctrl-C
  --max-conns <n>        connections to open (1 to 10000000); default: one per URL, more cycles the URLs
  --inflight <n>         connects in flight at most, all processes together (1 to 100000); default ${FLOOD_DEFAULTS.inflight}
  --connect-timeout <d>  connect + response head deadline (1ms to 1h); default ${FLOOD_DEFAULTS.connectTimeoutMs / 1000}s
  --reconnect            reopen connections that fail or close (exponential backoff with jitter); default off
  --reconnect-max <d>    longest reconnect backoff (1ms to 1h); default ${FLOOD_DEFAULTS.reconnectMaxMs / 1000}s
  --procs <n>            worker processes (1 to 256); default: one per ${CONNS_PER_PROC} connections
  --json                 NDJSON on stdout: one {"type":"sample",...} per second and a final {"type":"summary",...};
                         progress and the human summary go to stderr
  --insecure             https: do not verify the server certificate
  -h, --help             this help

Output: every second \`Stats: {connected,closed,chunks}\` on stdout (the seed's line); new error codes on stderr;
at the end a summary (asked vs reached, ramp, chunks, events, errors by code, latency of @t= messages).
First Ctrl-C stops and prints the summary, a second exits at once.
Exit status: 0 all asked connections were reached; 1 the run was SHORT or failed; 2 bad usage; 130 second Ctrl-C.

URL generator flags (floodtest urls):
  --base <url>     base URL; ids are appended (e.g. http://127.0.0.1:8000/test/)
  --count <n>      how many URLs (1 to 10000000)
  --start <n>      first id (0 to 9007199254740991); default 1
  --hosts <list>   spread ids round-robin over these hosts: 127.0.0.1-127.0.0.8 or a,b,c
  --ports <list>   and over these ports: 8000-8003 or 8000,8002
  --out <file>     write here instead of stdout (- = stdout)
`;

class UsageError extends Error {}

function fail(message: string): never {
  throw new UsageError(message);
}

async function runUrls(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      base: { type: 'string' },
      count: { type: 'string' },
      start: { type: 'string' },
      hosts: { type: 'string' },
      ports: { type: 'string' },
      out: { type: 'string', short: 'o' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (values.base === undefined) fail('--base: required (e.g. --base http://127.0.0.1:8000/test/)');
  if (values.count === undefined) fail('--count: required (1 to 10000000)');
  const count = parseIntFlag('--count', values.count, 1, 10_000_000);
  const start = values.start === undefined ? 1 : parseIntFlag('--start', values.start, 0, Number.MAX_SAFE_INTEGER - count);
  const hosts = values.hosts === undefined ? undefined : parseHostList('--hosts', values.hosts);
  const ports = values.ports === undefined ? undefined : parsePortList('--ports', values.ports);
  let gen: Generator<string>;
  try {
    gen = generateUrls({ base: values.base, count, start, hosts, ports });
    gen = prime(gen);
  } catch (err) {
    if (err instanceof UrlError) fail(err.message);
    throw err;
  }
  const toStdout = values.out === undefined || values.out === '-';
  const out: NodeJS.WritableStream = toStdout ? process.stdout : createWriteStream(values.out!);
  // A reader that goes away (`| head`) ends the output quietly, as `seq` does; other write errors are failures.
  let writeError: NodeJS.ErrnoException | null = null;
  out.on('error', (err: NodeJS.ErrnoException) => {
    writeError = err;
    out.emit('drain');
  });
  let block = '';
  for (const url of gen) {
    block += url + '\n';
    if (block.length >= 65536) {
      if (!out.write(block)) await new Promise((r) => out.once('drain', r));
      block = '';
      if (writeError !== null) break;
    }
  }
  if (writeError === null) {
    await new Promise<void>((resolve) => {
      const done = (): void => resolve();
      out.once('error', done);
      if (toStdout) out.write(block, done);
      else out.end(block, done);
    });
  }
  const err = writeError as NodeJS.ErrnoException | null;
  if (err !== null && err.code !== 'EPIPE') {
    process.stderr.write(`floodtest urls: cannot write ${values.out ?? 'stdout'}: ${err.message}\n`);
    return 1;
  }
  return 0;
}

// Runs a generator up to its first value so argument errors surface before anything is written.
function prime(gen: Generator<string>): Generator<string> {
  const first = gen.next();
  return (function* () {
    if (!first.done) yield first.value;
    yield* gen;
  })();
}

async function runFlood(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      duration: { type: 'string' },
      'max-conns': { type: 'string' },
      inflight: { type: 'string' },
      'connect-timeout': { type: 'string' },
      reconnect: { type: 'boolean' },
      'reconnect-max': { type: 'string' },
      procs: { type: 'string' },
      json: { type: 'boolean' },
      insecure: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (positionals.length < 2) fail('<urls-file|-> and <interval-ms> are required');
  if (positionals.length > 2) fail(`unexpected argument '${positionals[2]}' (usage: floodtest <urls-file|-> <interval-ms> [flags])`);
  const [file, intervalRaw] = positionals as [string, string];
  const intervalMs = parseNumberFlag('<interval-ms>', intervalRaw, 0, 3_600_000);
  const opts: Omit<FloodOptions, 'urls'> = {
    intervalMs,
    durationMs: values.duration === undefined ? 0 : parseDuration('--duration', values.duration, 1, 365 * 86_400_000),
    maxConns: values['max-conns'] === undefined ? undefined : parseIntFlag('--max-conns', values['max-conns'], 1, 10_000_000),
    inflight: values.inflight === undefined ? undefined : parseIntFlag('--inflight', values.inflight, 1, 100_000),
    connectTimeoutMs: values['connect-timeout'] === undefined ? undefined : parseDuration('--connect-timeout', values['connect-timeout'], 1, 3_600_000),
    reconnect: values.reconnect === true,
    reconnectMaxMs: values['reconnect-max'] === undefined ? undefined : parseDuration('--reconnect-max', values['reconnect-max'], 1, 3_600_000),
    procs: values.procs === undefined ? undefined : parseIntFlag('--procs', values.procs, 1, 256),
    insecure: values.insecure === true,
  };
  if (opts.reconnectMaxMs !== undefined && opts.reconnectMaxMs < FLOOD_DEFAULTS.reconnectBaseMs) {
    fail(`--reconnect-max: must be at least ${FLOOD_DEFAULTS.reconnectBaseMs}ms`);
  }
  const json = values.json === true;

  let list;
  try {
    list = await readUrlFile(file);
  } catch (err) {
    process.stderr.write(`floodtest: cannot read ${file}: ${(err as Error).message}\n`);
    return 1;
  }
  if (list.urls.length === 0) fail(`<urls-file>: ${file} holds no URLs`);

  const data = (line: string): void => {
    process.stdout.write(line + '\n');
  };
  const progress = (line: string): void => {
    process.stderr.write(line + '\n');
  };
  let lastErrors = '';
  const onSample = (s: Sample): void => {
    if (json) {
      data(encodeRecord(s));
      progress(formatProgress(s));
    } else {
      data(formatStatsLine(s));
      const errs = formatErrors(s.errors);
      if (errs !== 'none' && errs !== lastErrors) progress(`errors: ${errs}`);
      lastErrors = errs;
    }
  };

  try {
    parseTargets(list.urls, list.lines); // every URL checked first, errors named by file line
  } catch (err) {
    if (err instanceof UrlError) fail(`<urls-file> ${file}: ${err.message}`);
    throw err;
  }
  const handle = await startFlood({ ...opts, urls: list.urls, onSample });
  progress(
    `floodtest: ${handle.asked} connections over ${list.urls.length} URLs, ${intervalMs === 0 ? 'as fast as possible' : `one every ${intervalMs} ms`}, ` +
      `${handle.procs} process${handle.procs === 1 ? '' : 'es'}${opts.durationMs ? `, for ${opts.durationMs / 1000}s` : ''}; Ctrl-C stops`,
  );
  const h = handle;
  const removeSignals = onInterrupt(() => {
    void h.stop();
  });
  process.stdout.on('error', () => void h.stop()); // a closed pipe (e.g. `| head`) ends the run
  const summary = await h.done;
  removeSignals();
  if (json) {
    data(encodeRecord(summary));
    progress(formatSummary(summary));
  } else {
    data(formatSummary(summary));
  }
  return summary.short ? 1 : 0;
}

async function main(argv: string[]): Promise<number> {
  try {
    if (argv[0] === 'urls') return await runUrls(argv.slice(1));
    return await runFlood(argv);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (err instanceof UsageError || err instanceof FlagError || code?.startsWith('ERR_PARSE_ARGS')) {
      let message = (err as Error).message.split('\n')[0]!;
      // node's parseArgs messages are long; keep the one fact: which flag.
      const flag = /^Unknown option '([^']+)'/.exec(message) ?? /^Option '([^']+?)(?: <value>)?' argument missing/.exec(message);
      if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && flag) message = `${flag[1]}: unknown flag`;
      else if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && flag) message = `${flag[1]}: needs a value`;
      process.stderr.write(`floodtest: ${message} (see floodtest --help)\n`);
      return 2;
    }
    if (err instanceof UrlError) {
      process.stderr.write(`floodtest: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`floodtest: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
// Exit once stdout has flushed (a pipe may still hold the summary).
process.stdout.write('', () => process.exit(code));
