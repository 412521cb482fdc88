#!/usr/bin/env node
// c1m: the one-command benchmark. Subcommands: preflight, bench, compare.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { FlagError, formatDuration, parseHostList, parseIntFlag, parsePortList } from '../lib/flags.js';
import { onInterrupt } from '../lib/signals.js';
import { killAllChildrenSync } from './children.js';
import { startBench } from './run.js';
import { BENCH_HELP, benchOptions } from './options.js';
import { compareRuns, formatCompare } from './compare.js';
import { checkPreflight, formatReport, type Topology } from './preflight.js';
import { readSnapshot } from './procfs.js';
import { defaultClientProcs } from './topology.js';

const USAGE = `c1m: build, flood and measure a comet server from C10K to 1M connections

Usage:
  c1m preflight [--conns N] [--server-procs S] [--client-procs C] [--dest-hosts 127.0.0.1-127.0.0.8]
                [--dest-ports 8000-8003] [--server-pid PID] [--connect-rate R] [--json] [--strict]
  c1m bench     [--preset c10k|c100k|soak] [--conns 10000] [--connect-rate 1000] [--msg-rate 1000]
                [--procs P --rate R] [--duration 2m] [--out runs/<name>] ...   (c1m bench --help)
  c1m compare   <run-a> <run-b> [--json] [--out overlay.svg]
  c1m chaos     worker-kill|redis-restart|restart-storm|sigterm [--conns N] ...   (c1m chaos --help)
  c1m --help | <subcommand> --help
`;

const PREFLIGHT_HELP = `c1m preflight: can this machine hold N connections in this topology? Changes nothing; prints fixes.

  --conns N            connections to check for (default 10000; 1 to 10000000)
  --server-procs S     server processes sharing the connections (default 1)
  --client-procs C     floodtest processes (default: one per 18,000 connections, as floodtest does)
  --dest-hosts LIST    destination addresses, e.g. 127.0.0.1-127.0.0.8 (default 127.0.0.1)
  --dest-ports LIST    destination ports, e.g. 8000-8003 (default 8000)
  --server-pid PID     also check the open-files limits of this running server
  --connect-rate R     new connections per second during the ramp (default 1000)
  --json               print the report as JSON
  --strict             exit 1 when N cannot be reached
  --proc-root DIR      read /proc from DIR (for tests; default /proc)
`;

class UsageError extends Error {}

async function preflightCmd(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      conns: { type: 'string', default: '10000' },
      'server-procs': { type: 'string', default: '1' },
      'client-procs': { type: 'string' },
      'dest-hosts': { type: 'string', default: '127.0.0.1' },
      'dest-ports': { type: 'string', default: '8000' },
      'server-pid': { type: 'string' },
      'connect-rate': { type: 'string', default: '1000' },
      json: { type: 'boolean', default: false },
      strict: { type: 'boolean', default: false },
      'proc-root': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(PREFLIGHT_HELP);
    return 0;
  }
  const conns = parseIntFlag('--conns', values.conns, 1, 10_000_000);
  const topo: Topology = {
    conns,
    serverProcs: parseIntFlag('--server-procs', values['server-procs'], 1, 1024),
    clientProcs: values['client-procs'] !== undefined ? parseIntFlag('--client-procs', values['client-procs'], 1, 1024) : defaultClientProcs(conns),
    destHosts: parseHostList('--dest-hosts', values['dest-hosts']),
    destPorts: parsePortList('--dest-ports', values['dest-ports']),
    connectRate: parseIntFlag('--connect-rate', values['connect-rate'], 1, 1_000_000),
  };
  const serverPid = values['server-pid'] !== undefined ? parseIntFlag('--server-pid', values['server-pid'], 1, 4_194_304) : undefined;
  const snap = await readSnapshot({ procRoot: values['proc-root'], serverPid });
  const report = checkPreflight(snap, topo);
  process.stdout.write(values.json ? JSON.stringify({ snapshot: snap, ...report }, jsonReplacer, 2) + '\n' : formatReport(report));
  return values.strict && !report.canReach ? 1 : 0;
}

/** JSON cannot carry Infinity: "unlimited" limits are written as the string "unlimited". */
export function jsonReplacer(_k: string, v: unknown): unknown {
  return v === Infinity ? 'unlimited' : v;
}

async function benchCmd(argv: string[]): Promise<number> {
  const log = (l: string): void => void process.stderr.write(l + '\n');
  const o = benchOptions(argv, log);
  if (o === 'help') {
    process.stdout.write(BENCH_HELP);
    return 0;
  }
  log(`c1m bench: ${o.conns} connections, ${o.procs} × ${o.rate} msg/s for ${formatDuration(o.durationMs)} → ${o.out}`);
  const handle = startBench(o);
  const off = onInterrupt(() => void handle.stop('stopped by Ctrl-C'), log);
  try {
    const r = await handle.done;
    process.stdout.write(readFileSync(join(r.out, 'summary.md'), 'utf8'));
    log(`run folder: ${r.out} (${r.files.join(', ')})`);
    return r.summary.verdict.valid ? 0 : 1;
  } finally {
    off();
  }
}

async function compareCmd(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: { json: { type: 'boolean', default: false }, out: { type: 'string' }, help: { type: 'boolean', short: 'h', default: false } },
  });
  if (values.help) {
    process.stdout.write(COMPARE_HELP);
    return 0;
  }
  if (positionals.length !== 2) throw new UsageError(`compare: expected two run folders, got ${positionals.length} (c1m compare runs/a runs/b)`);
  const c = await compareRuns(positionals[0]!, positionals[1]!, { chartOut: values.out });
  process.stdout.write(values.json ? JSON.stringify(c, null, 2) + '\n' : formatCompare(c));
  return 0;
}

const COMPARE_HELP = `c1m compare <run-a> <run-b> [--json] [--out FILE.svg|FILE.png]

Prints the two runs' summaries side by side with the ratio b / a, and writes an overlay chart of both runs'
server memory against minutes (default: compare-<a>-vs-<b>.svg and .png in the current folder's runs/).
`;

async function main(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'preflight':
      return preflightCmd(rest);
    case 'bench':
      return benchCmd(rest);
    case 'compare':
      return compareCmd(rest);
    case 'chaos':
      return (await import('./chaos.js')).chaosCmd(rest);
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(USAGE);
      return sub === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown subcommand '${sub}' (allowed: preflight, bench, compare)`);
  }
}

// Whatever ends this process (a second Ctrl-C, a crash), no child of a bench outlives it.
process.on('exit', () => killAllChildrenSync('SIGKILL'));

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof FlagError || err instanceof UsageError) {
      process.stderr.write(`c1m: ${err.message}\n`);
      process.exit(2);
    }
    // parseArgs errors (unknown option, missing value) carry a code and name the flag.
    if (err instanceof Error && 'code' in err && String((err as { code: unknown }).code).startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`c1m: ${err.message} (see c1m --help)\n`);
      process.exit(2);
    }
    const detail = err instanceof Error ? (process.env.C1M_DEBUG ? err.stack ?? err.message : err.message) : String(err);
    process.stderr.write(`c1m: ${detail}\n`);
    process.exit(1);
  },
);
