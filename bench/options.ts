// c1m bench's flags and presets → BenchOptions (separate from cli.ts so tests can call it without running the CLI).
import { parseArgs } from 'node:util';
import { FlagError, parseChoice, parseDuration, parseHostList, parseIntFlag, parseNumberFlag } from '../lib/flags.js';
import type { BenchOptions } from './run.js';

export const BENCH_HELP = `c1m bench: one reproducible run: server + memlog + floodtest ramp + msggen, then a run folder with
manifest.json, mem.tsv, flood.ndjson, msggen.ndjson, stats.ndjson, summary.json, summary.md and charts.

  --preset NAME        c10k (10k conns, 100 × 10 msg/s, 5m), c100k (100k conns over 127.0.0.1-127.0.0.8, 6 server
                       workers, 10m), soak (10k conns, 1000 msg/s, 30m unless --duration). Default (no preset):
                       10,000 connections, 1000 msg/s, 2m message phase.
  --conns N            connections to open (default 10000; 1 to 1000000)
  --connect-rate R     new connections per second during the ramp (default 1000; 1 to 100000)
  --msg-rate R         total messages per second (default 1000 = 100 workers × 10/s; 1 to 1000000)
  --procs P            msggen workers (default 100; 1 to 100000)
  --rate R             messages per second per worker (default msg-rate / procs)
  --duration D         message phase (default 2m; 1s to 30d)
  --ramp-timeout D     longest ramp before going on short of N (default 3 × conns / connect-rate + 30s)
  --settle D           time at the plateau before messages (default 5s)
  --idle D             time before the ramp, for idle memory (default 3s)
  --drain-timeout D    longest wait for deliveries after the last message (default 10s)
  --mem-interval D     memlog sample interval (default 1s)
  --dest-hosts LIST    spread connections over these addresses (default 127.0.0.1; e.g. 127.0.0.1-127.0.0.8)
  --out DIR            run folder (default runs/<preset|bench>-<date>)
  --server-flags="F"   extra flags for the reference comet-server, e.g. --server-flags="--workers 4"
  --server-cmd CMD     start a third-party server with this shell command instead (stopped with SIGTERM)
  --server-pid PID     measure an already running server (never stopped)
  --url-template T     stream URL, {id} {host} {port} replaced (default http://{host}:{port}/test/{id})
  --publish-target URL control API origin msggen publishes to (POST /send/<id>; default the reference server's)
  --publish-template T URL msggen POSTs each message to, {id} replaced (e.g. http://127.0.0.1:8080/pub?id={id})
  --token T            bearer token for the control API
  --force              run even when preflight says N cannot be reached
  --floodtest-flags="F", --msggen-flags="F"   extra flags passed through (write them with =)

Progress is one line per second on stderr; the summary table is printed on stdout at the end.
Exit: 0 valid run, 1 invalid run or failure, 2 bad flags, 130 second Ctrl-C.
`;

interface Preset {
  conns: number;
  connectRate: number;
  procs: number;
  rate: number;
  durationMs: number;
  destHosts?: string;
  serverFlags?: string[];
  note?: string;
}

/** The presets; flags given explicitly override them. */
export const PRESETS: Record<'default' | 'c10k' | 'c100k' | 'soak', Preset> = {
  default: { conns: 10_000, connectRate: 1000, procs: 100, rate: 10, durationMs: 120_000 },
  c10k: { conns: 10_000, connectRate: 1000, procs: 100, rate: 10, durationMs: 300_000 },
  c100k: { conns: 100_000, connectRate: 5000, procs: 100, rate: 10, durationMs: 600_000, destHosts: '127.0.0.1-127.0.0.8', serverFlags: ['--workers', '6'], note: '6 server workers (~16,700 connections each, under the 20,000 open-files limit), listening on 0.0.0.0 so every 127.0.0.x reaches them' },
  soak: { conns: 10_000, connectRate: 1000, procs: 100, rate: 10, durationMs: 1_800_000 },
};

const splitFlags = (s: string | undefined): string[] => (s ? s.trim().split(/\s+/).filter(Boolean) : []);

/** Flags → BenchOptions (throws FlagError). Exported for tests. */
export function benchOptions(argv: string[], log: (l: string) => void): BenchOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      preset: { type: 'string' },
      conns: { type: 'string' },
      'connect-rate': { type: 'string' },
      'msg-rate': { type: 'string' },
      procs: { type: 'string' },
      rate: { type: 'string' },
      duration: { type: 'string' },
      'ramp-timeout': { type: 'string' },
      settle: { type: 'string', default: '5s' },
      idle: { type: 'string', default: '3s' },
      'drain-timeout': { type: 'string', default: '10s' },
      'mem-interval': { type: 'string', default: '1s' },
      'dest-hosts': { type: 'string' },
      out: { type: 'string' },
      'server-flags': { type: 'string' },
      'server-cmd': { type: 'string' },
      'server-pid': { type: 'string' },
      'url-template': { type: 'string' },
      'publish-target': { type: 'string' },
      'publish-template': { type: 'string' },
      token: { type: 'string' },
      force: { type: 'boolean', default: false },
      'floodtest-flags': { type: 'string' },
      'msggen-flags': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return 'help';
  const presetName = values.preset !== undefined ? parseChoice('--preset', values.preset, ['c10k', 'c100k', 'soak'] as const) : 'default';
  const p = PRESETS[presetName];
  const conns = values.conns !== undefined ? parseIntFlag('--conns', values.conns, 1, 1_000_000) : p.conns;
  const connectRate = values['connect-rate'] !== undefined ? parseIntFlag('--connect-rate', values['connect-rate'], 1, 100_000) : p.connectRate;
  let procs = values.procs !== undefined ? parseIntFlag('--procs', values.procs, 1, 100_000) : undefined;
  let rate = values.rate !== undefined ? parseNumberFlag('--rate', values.rate, 0.001, 1_000_000) : undefined;
  if (values['msg-rate'] !== undefined) {
    const total = parseNumberFlag('--msg-rate', values['msg-rate'], 1, 1_000_000);
    if (procs !== undefined && rate !== undefined && Math.abs(procs * rate - total) > 1e-9) {
      throw new FlagError('--msg-rate', `${total} disagrees with --procs ${procs} × --rate ${rate} = ${procs * rate} (give two of the three)`);
    }
    if (procs === undefined && rate !== undefined) {
      procs = Math.round(total / rate);
      if (procs < 1 || Math.abs(procs * rate - total) > 1e-9) throw new FlagError('--rate', `${rate} does not divide --msg-rate ${total} into a whole number of workers`);
    } else {
      procs ??= Math.min(p.procs, Math.max(1, Math.floor(total)));
      rate = total / procs;
    }
  }
  procs ??= p.procs;
  rate ??= p.rate;
  const durationMs = values.duration !== undefined ? parseDuration('--duration', values.duration, 1000, 30 * 24 * 3_600_000) : p.durationMs;
  const destHosts = parseHostList('--dest-hosts', values['dest-hosts'] ?? p.destHosts ?? '127.0.0.1');
  let publishTarget = values['publish-target'];
  let publishTemplate: string | undefined;
  if (values['publish-template'] !== undefined) {
    const t = values['publish-template'];
    // <origin>/send/{id} is the control API itself: publish there as usual. Anything else goes to msggen's
    // --publish-template (one POST per message, the message as the body), e.g. nginx+nchan's /pub?id={id}.
    const m = t.match(/^(https?:\/\/[^/?#]+)\/send\/\{id\}$/);
    if (m) publishTarget = m[1];
    else if (/^https?:\/\/[^/?#{}]+[^#]*\{id\}[^#]*$/.test(t) && URL.canParse(t.replaceAll('{id}', '1'))) publishTemplate = t;
    else throw new FlagError('--publish-template', `'${t}' must be an http(s) URL with {id} in its path or query (e.g. http://127.0.0.1:8080/pub?id={id})`);
    if (values['publish-target'] !== undefined) throw new FlagError('--publish-template', 'give either --publish-template or --publish-target, not both');
  }
  if (publishTarget !== undefined) {
    try {
      const u = new URL(publishTarget);
      if (u.pathname !== '/' || !/^https?:$/.test(u.protocol)) throw new Error('path');
    } catch {
      throw new FlagError('--publish-target', `'${publishTarget}' must be an http(s) origin such as http://127.0.0.1:8001`);
    }
  }
  const serverPid = values['server-pid'] !== undefined ? parseIntFlag('--server-pid', values['server-pid'], 1, 4_194_304) : undefined;
  const external = values['server-cmd'] !== undefined || serverPid !== undefined;
  if (values['server-cmd'] !== undefined && serverPid !== undefined) throw new FlagError('--server-pid', 'give either --server-cmd or --server-pid, not both');
  if (external && values['url-template'] === undefined) throw new FlagError('--url-template', 'is required with --server-cmd/--server-pid (e.g. http://127.0.0.1:8080/sub/{id})');
  if (external && publishTarget === undefined && publishTemplate === undefined) {
    throw new FlagError('--publish-template', 'is required with --server-cmd/--server-pid (the URL msggen POSTs each message to, e.g. http://127.0.0.1:8080/pub?id={id}; or --publish-target <origin> for POST /send/<id>)');
  }
  if (values['url-template'] !== undefined && !values['url-template'].includes('{id}')) throw new FlagError('--url-template', `'${values['url-template']}' has no {id}`);
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  if (presetName === 'c100k') log(`preset c100k: ${p.note}; passing ${p.serverFlags!.join(' ')} to comet-server`);
  return {
    conns,
    connectRate,
    procs,
    rate,
    durationMs,
    out: values.out ?? `runs/${presetName === 'default' ? 'bench' : presetName}-${stamp}`,
    preset: presetName === 'default' ? undefined : presetName,
    destHosts,
    rampTimeoutMs: values['ramp-timeout'] !== undefined ? parseDuration('--ramp-timeout', values['ramp-timeout'], 1000, 24 * 3_600_000) : undefined,
    settleMs: parseDuration('--settle', values.settle, 0, 3_600_000),
    idleMs: parseDuration('--idle', values.idle, 0, 3_600_000),
    drainTimeoutMs: parseDuration('--drain-timeout', values['drain-timeout'], 0, 3_600_000),
    memIntervalMs: parseDuration('--mem-interval', values['mem-interval'], 100, 3_600_000),
    serverCmd: values['server-cmd'],
    serverPid,
    urlTemplate: values['url-template'],
    publishTarget,
    publishTemplate,
    token: values.token ?? process.env.C1M_TOKEN,
    serverFlags: values['server-flags'] !== undefined ? splitFlags(values['server-flags']) : (p.serverFlags ?? []),
    floodtestFlags: splitFlags(values['floodtest-flags']),
    msggenFlags: splitFlags(values['msggen-flags']),
    preflightStops: !values.force,
    argv: process.argv.slice(1),
    log,
  };
}

