// msggen benchmark (a script that prints a table, not a test). Starts the reference server CLI as a child process,
// runs one msggen CLI process against it per scenario, and reports what the server accepted:
//   batch   max accepted messages/s with --batch (target ≥ 50,000/s)
//   single  max accepted messages/s with one message per request (target ≥ 15,000/s)
//   steady  achieved vs requested rate at 1,000 msg/s (target within 1% over 5 minutes; --steady sets the length)
// Heavy: run it alone, e.g. `flock /tmp/c1m-bench.lock node dist/msggen/bench.js`.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { FlagError, formatDuration, parseDuration, parseIntFlag } from '../lib/flags.js';
import { formatMicros } from '../lib/histogram.js';
import type { Sample, Summary } from './index.js';
import { LIMITS } from './engine.js';

const MSGGEN = fileURLToPath(new URL('./cli.js', import.meta.url));
const SERVER = fileURLToPath(new URL('../server/cli.js', import.meta.url));
// The server's own shebang flags, so the figures match `comet-server` as users run it.
import { SERVER_NODE_FLAGS } from '../server/node-flags.js';
const CLK_TCK = 100;

const HELP = `Usage: node dist/msggen/bench.js [--duration 10s] [--steady 5m] [--only batch,single,steady]
                                 [--procs 100] [--batch 100] [--connections ${LIMITS.connections}] [--threads 1]
Runs the reference server and one msggen process per scenario; prints a table. Wrap in flock /tmp/c1m-bench.lock.`;

interface Args {
  durationMs: number;
  steadyMs: number;
  only: Set<string>;
  procs: number;
  batch: number;
  connections: number;
  threads: number;
}

function parse(): Args {
  const { values } = parseArgs({
    strict: true,
    options: {
      duration: { type: 'string' },
      steady: { type: 'string' },
      only: { type: 'string' },
      procs: { type: 'string' },
      batch: { type: 'string' },
      connections: { type: 'string' },
      threads: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    process.exit(0);
  }
  const only = new Set((values.only ?? 'batch,single,steady').split(','));
  for (const o of only) if (!['batch', 'single', 'steady'].includes(o)) throw new FlagError('--only', `'${o}' is not one of batch, single, steady`);
  return {
    durationMs: parseDuration('--duration', values.duration ?? '10s', 1000, 600_000),
    steadyMs: parseDuration('--steady', values.steady ?? '5m', 1000, 3_600_000),
    only,
    procs: parseIntFlag('--procs', values.procs ?? '100', 1, 10_000),
    batch: parseIntFlag('--batch', values.batch ?? '100', 2, 10_000),
    connections: parseIntFlag('--connections', values.connections ?? String(LIMITS.connections), 1, 1024),
    threads: parseIntFlag('--threads', values.threads ?? '1', 1, 64),
  };
}

/** utime + stime of a process in seconds, or NaN once it is gone. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** Busy and total CPU seconds of the whole machine, from /proc/stat. */
function machineCpu(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = line.reduce((a, b) => a + b, 0) / CLK_TCK;
  const idle = (line[3]! + line[4]!) / CLK_TCK;
  return { busy: total - idle, total };
}

function killAfter(child: ChildProcess, ms: number, what: string): NodeJS.Timeout {
  return setTimeout(() => {
    process.stderr.write(`bench: ${what} overran ${ms} ms, killing pid ${child.pid}\n`);
    child.kill('SIGKILL');
  }, ms);
}

interface ServerChild {
  child: ChildProcess;
  control: string;
  stop(): Promise<void>;
}

async function startServer(): Promise<ServerChild> {
  const child = spawn(process.execPath, [...SERVER_NODE_FLAGS, SERVER, '--host', '127.0.0.1', '--port', '0', '--control-host', '127.0.0.1', '--control-port', '0'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const timer = killAfter(child, 10_000, 'server start');
  const control = await new Promise<number>((resolve, reject) => {
    let err = '';
    child.stderr!.setEncoding('utf8');
    const onData = (d: string): void => {
      err += d;
      const m = /control=(\d+)/.exec(err);
      if (m) {
        child.stderr!.off('data', onData);
        child.stderr!.resume();
        resolve(Number(m[1]));
      }
    };
    child.stderr!.on('data', onData);
    child.on('exit', (code) => reject(new Error(`server exited with ${code}: ${err.trim()}`)));
  });
  clearTimeout(timer);
  return {
    child,
    control: `http://127.0.0.1:${control}`,
    stop: async () => {
      if (child.exitCode !== null) return;
      const t = killAfter(child, 10_000, 'server stop');
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGINT');
      await exited;
      clearTimeout(t);
    },
  };
}

async function messagesIn(control: string): Promise<number> {
  const res = await fetch(`${control}/stats`);
  const stats = (await res.json()) as { messagesIn: number };
  return stats.messagesIn;
}

async function runMsggen(args: string[], timeoutMs: number): Promise<{ summary: Summary; samples: Sample[] }> {
  const child = spawn(process.execPath, [MSGGEN, ...args, '--json', '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const timer = killAfter(child, timeoutMs, 'msggen');
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const code = await new Promise<number | null>((r) => child.on('close', r));
  clearTimeout(timer);
  const records: Array<Sample | Summary> = [];
  for (const line of out.trim().split('\n')) {
    try {
      records.push(JSON.parse(line) as Sample | Summary);
    } catch {
      // not a record
    }
  }
  const summary = records.at(-1);
  if (!summary || summary.type !== 'summary') throw new Error(`msggen exited with ${code} and no summary: ${err.trim().slice(-500)}`);
  return { summary, samples: records.filter((r): r is Sample => r.type === 'sample') };
}

interface Row {
  scenario: string;
  requested: number;
  duration: number;
  sentPerSec: number;
  acceptedPerSec: number;
  serverCounted: number;
  achievedVsRequested: string;
  perSecond: string;
  late: number;
  unsent: number;
  errors: string;
  p50: string;
  p99: string;
  reqP50: string;
  msggenCpu: string;
  serverCpu: string;
  otherCpu: string;
  load: string;
  target: string;
}

/** Runs one scenario; a failure becomes a row that says what went wrong, and the other scenarios still run. */
async function scenario(name: string, args: string[], requested: number, durationMs: number, target: string): Promise<Row> {
  try {
    return await measure(name, args, requested, durationMs, target);
  } catch (err) {
    const msg = err instanceof Error ? err.message.split('\n')[0]! : String(err);
    process.stderr.write(`bench: ${name} failed: ${err instanceof Error ? err.message : String(err)}\n`);
    const dash = '-';
    return {
      scenario: name, requested, duration: 0, sentPerSec: 0, acceptedPerSec: 0, serverCounted: 0, achievedVsRequested: dash, perSecond: dash, late: 0, unsent: 0,
      errors: `FAILED: ${msg.slice(0, 80)}`, p50: dash, p99: dash, reqP50: dash, msggenCpu: dash, serverCpu: dash, otherCpu: dash, load: dash, target,
    };
  }
}

async function measure(name: string, args: string[], requested: number, durationMs: number, target: string): Promise<Row> {
  const server = await startServer();
  try {
    const serverPid = server.child.pid!;
    const load = os.loadavg().map((x) => x.toFixed(2)).join(' ');
    const in0 = await messagesIn(server.control);
    const s0 = cpuSeconds(serverPid);
    const m0 = machineCpu();
    const { summary: s, samples } = await runMsggen([...args, '--target', server.control, '--duration', formatDuration(durationMs)], durationMs + 60_000);
    const s1 = cpuSeconds(serverPid);
    const m1 = machineCpu();
    const in1 = await messagesIn(server.control);
    const wall = s.elapsed;
    const serverCpu = s1 - s0;
    const msggenCpu = s.cpu.user + s.cpu.system;
    // Everything else the machine did meanwhile (other engineers' jobs), in cores.
    const other = (m1.busy - m0.busy - serverCpu - msggenCpu) / wall;
    const counted = in1 - in0;
    // Per-second send rates over the full one-second samples (the last one is usually partial).
    const full = samples.filter((x) => x.interval > 0.95 && x.interval < 1.05).map((x) => x.sent / x.interval);
    const perSecond = full.length === 0 ? '-' : `${Math.round(Math.min(...full))}..${Math.round(Math.max(...full))}`;
    return {
      scenario: name,
      requested,
      duration: s.sendWindow,
      sentPerSec: Math.round(s.achievedRate),
      acceptedPerSec: Math.round(counted / s.sendWindow),
      serverCounted: counted,
      perSecond,
      achievedVsRequested: `${(((s.achievedRate - requested) / requested) * 100).toFixed(3)}%`,
      late: s.late,
      unsent: s.unsent,
      errors: Object.entries(s.errors).map(([k, v]) => `${k}=${v}`).join(' ') || 'none',
      p50: formatMicros(s.latency.p50),
      p99: formatMicros(s.latency.p99),
      reqP50: formatMicros(s.requestLatency.p50),
      msggenCpu: `${((msggenCpu / wall) * 100).toFixed(0)}%`,
      serverCpu: `${((serverCpu / wall) * 100).toFixed(0)}%`,
      otherCpu: `${(other * 100).toFixed(0)}%`,
      load,
      target,
    };
  } finally {
    await server.stop();
  }
}

function table(rows: Row[]): string {
  const cols: Array<[keyof Row, string]> = [
    ['scenario', 'scenario'],
    ['requested', 'requested/s'],
    ['duration', 'secs'],
    ['sentPerSec', 'sent/s'],
    ['acceptedPerSec', 'accepted/s (server)'],
    ['serverCounted', 'server count'],
    ['achievedVsRequested', 'sent vs requested'],
    ['perSecond', 'sent/s each second'],
    ['late', 'late'],
    ['unsent', 'unsent'],
    ['errors', 'errors'],
    ['p50', 'p50'],
    ['p99', 'p99'],
    ['reqP50', 'req p50'],
    ['msggenCpu', 'msggen cpu'],
    ['serverCpu', 'server cpu'],
    ['otherCpu', 'other cpu'],
    ['load', 'load before'],
    ['target', 'target'],
  ];
  const cells = [cols.map(([, h]) => h), ...rows.map((r) => cols.map(([k]) => String(r[k])))];
  const widths = cols.map((_, i) => Math.max(...cells.map((c) => c[i]!.length)));
  return cells.map((c) => c.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

async function main(): Promise<void> {
  let a: Args;
  try {
    a = parse();
  } catch (err) {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  }
  const common = ['--procs', String(a.procs), '--connections', String(a.connections), '--threads', String(a.threads), '--seed', '1'];
  const rows: Row[] = [];
  const say = (l: string): boolean => process.stderr.write(l + '\n');
  const add = (r: Row): void => {
    rows.push(r);
    say(`  -> sent ${r.sentPerSec}/s, server accepted ${r.acceptedPerSec}/s, ${r.errors === 'none' ? 'no errors' : r.errors}`);
  };
  say(`machine: ${os.cpus().length} cpus (${os.cpus()[0]?.model ?? '?'}), ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, node ${process.version}, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  say(`server: node ${SERVER_NODE_FLAGS.join(' ')} dist/server/cli.js; msggen: node dist/msggen/cli.js ${common.join(' ')}`);
  if (a.only.has('batch')) {
    // Ask for more than can be done; what the server accepts is the ceiling.
    const rate = 1_000_000;
    say(`batch: requesting ${rate}/s with --batch ${a.batch} for ${formatDuration(a.durationMs)}`);
    add(await scenario(`batch ${a.batch}`, [...common, '--rate', String(rate / a.procs), '--batch', String(a.batch)], rate, a.durationMs, '>= 50000/s'));
  }
  if (a.only.has('single')) {
    const rate = 40_000;
    say(`single: requesting ${rate}/s, one message per request, for ${formatDuration(a.durationMs)}`);
    add(await scenario('single', [...common, '--rate', String(rate / a.procs)], rate, a.durationMs, '>= 15000/s'));
  }
  if (a.only.has('steady')) {
    const rate = 1000;
    say(`steady: ${rate}/s for ${formatDuration(a.steadyMs)}`);
    add(await scenario('steady 1000/s', ['--procs', '10', '--rate', '100', '--connections', String(a.connections), '--seed', '1'], rate, a.steadyMs, 'within 1%'));
  }
  process.stdout.write(table(rows) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
