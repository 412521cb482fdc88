#!/usr/bin/env node
// floodtest benchmark (a script that prints tables, not a test). Run it under the shared lock, alone:
//
//   flock /tmp/c1m-bench.lock node dist/floodtest/bench.js [--conns 18000] [--hosts 127.0.0.1-127.0.0.4]
//         [--big 100000] [--servers 6] [--hold 20s] [--time-limit 5m] [--node-flags "--max-semi-space-size=1"]
//
// (a) One floodtest process opens --conns connections (default 18,000) to one reference server (CLI, child
//     process, listening on 0.0.0.0) spread over --hosts; we read the floodtest process's RSS and PSS from /proc
//     before (idle: modules loaded, URLs parsed) and after (all open, after a GC), and its connects/s.
// (b) With --big N: --servers comet-server processes on N/servers connections each and floodtest --procs
//     ceil(N/18000); all reached, none closed during --hold, one message per id on a sample of ids delivered exactly.
//
// Everything it starts, it stops by PID (servers with SIGTERM, then SIGKILL), also on timeout or Ctrl-C.
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseDuration, parseHostList, parseIntFlag } from '../lib/flags.js';
import { nowMicros } from '../lib/marker.js';
import { generateUrls, startFlood, useLeanHeap, type Sample, type Summary } from './index.js';

const SERVER_CLI = fileURLToPath(new URL('../server/cli.js', import.meta.url));
import { SERVER_NODE_FLAGS as SERVER_FLAGS } from '../server/node-flags.js';

// ---- child mode: one floodtest process that reports its own memory at rest and at N connections ----

interface ChildStart {
  urls: string[];
  inflight: number;
  /** Apply useLeanHeap() as the CLI does (default), or measure plain node. */
  lean: boolean;
}
type ChildReport =
  | { type: 'idle' }
  | { type: 'ramped'; sample: Sample; ok: boolean }
  | { type: 'done'; summary: Summary };

async function childMain(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  const msg = await new Promise<ChildStart>((r) => process.once('message', (m) => r(m as ChildStart)));
  if (msg.lean) useLeanHeap();
  gc?.();
  process.send!({ type: 'idle' } satisfies ChildReport);
  await new Promise<void>((r) => process.once('message', () => r()));
  const h = await startFlood({ urls: msg.urls, procs: 1, inflight: msg.inflight, connectTimeoutMs: 30_000, sampleIntervalMs: 100 });
  const deadline = Date.now() + 120_000;
  let s = h.sample();
  while (s.connected + Object.values(s.errors).reduce((a, b) => a + b, 0) < msg.urls.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    s = h.sample();
  }
  // Settle, then collect garbage, so the reading is the connections at rest, not the ramp's garbage.
  await new Promise((r) => setTimeout(r, 1000));
  gc?.();
  await new Promise((r) => setTimeout(r, 200));
  // Ramp figures (connects/s) come from the summary after stop: they do not depend on when it stops.
  process.send!({ type: 'ramped', sample: h.sample(), ok: s.connected === msg.urls.length } satisfies ChildReport);
  await new Promise<void>((r) => process.once('message', () => r()));
  const summary = await h.stop();
  process.send!({ type: 'done', summary } satisfies ChildReport);
  process.disconnect();
}

// ---- parent mode ----

interface Proc {
  child: ChildProcess;
  port?: number;
  control?: number;
}
const started: ChildProcess[] = [];

function readProcKb(pid: number): { rssKb: number; pssKb: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  let pssKb = 0;
  try {
    pssKb = Number(/Pss:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
  } catch {
    pssKb = 0;
  }
  return { rssKb, pssKb };
}

function startServer(host: string): Promise<Proc> {
  const child = spawn(process.execPath, [...SERVER_FLAGS, SERVER_CLI, '--port', '0', '--host', host, '--control-port', '0'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  started.push(child);
  return new Promise((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => reject(new Error(`comet-server did not start in 10 s: ${err}`)), 10_000);
    child.stderr!.on('data', (b: Buffer) => {
      err += b.toString();
      const m = / port=(\d+)/.exec(err);
      const c = /control=(\d+)/.exec(err);
      if (m && c) {
        clearTimeout(timer);
        resolve({ child, port: Number(m[1]), control: Number(c[1]) });
      }
    });
    child.once('exit', (code) => reject(new Error(`comet-server exited ${code}: ${err}`)));
  });
}

async function serverStats(control: number): Promise<Record<string, number>> {
  const r = await fetch(`http://127.0.0.1:${control}/stats`);
  return (await r.json()) as Record<string, number>;
}

async function stopAll(): Promise<void> {
  await Promise.all(
    started.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          const kill = setTimeout(() => c.kill('SIGKILL'), 7000);
          c.once('exit', () => {
            clearTimeout(kill);
            resolve();
          });
          c.kill('SIGTERM');
        }),
    ),
  );
}

function machineState(): string {
  const [l1, l5] = os.loadavg();
  return `node ${process.version}, ${os.cpus().length} cores, load ${l1!.toFixed(2)}/${l5!.toFixed(2)}, free ${(os.freemem() / 2 ** 30).toFixed(1)} GiB of ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`;
}

function table(rows: Array<[string, string]>): string {
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`).join('\n');
}

async function benchA(conns: number, hosts: string[], nodeFlags: string[], inflight: number, lean: boolean): Promise<void> {
  const srv = await startServer('0.0.0.0');
  const urls = [...generateUrls({ base: `http://127.0.0.1:${srv.port}/test/`, count: conns, hosts })];
  const child = fork(fileURLToPath(import.meta.url), ['--child'], { execArgv: ['--expose-gc', ...nodeFlags], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  started.push(child);
  const next = (): Promise<ChildReport> => new Promise((r) => child.once('message', (m) => r(m as ChildReport)));
  let report = next();
  child.send({ urls, inflight, lean } satisfies ChildStart);
  await report;
  await new Promise((r) => setTimeout(r, 300));
  const idle = readProcKb(child.pid!);
  const before = machineState();
  report = next();
  child.send('go');
  const ramped = (await report) as Extract<ChildReport, { type: 'ramped' }>;
  const full = readProcKb(child.pid!);
  const sstats = await serverStats(srv.control!);
  const serverMem = readProcKb(srv.child.pid!);
  report = next();
  child.send('stop');
  const done = ((await report) as Extract<ChildReport, { type: 'done' }>).summary;
  const open = ramped.sample.connected;
  process.stdout.write(
    `\n(a) one floodtest process, ${conns} connections to one comet-server over ${hosts.join(',')} (${lean ? 'lean heap as the CLI' : 'plain node, no lean heap'}; node flags: ${nodeFlags.join(' ') || 'none'}; inflight ${inflight})\n` +
      table([
        ['machine before', before],
        ['reached / asked', `${open} / ${conns}${ramped.ok ? '' : '  SHORT'}; errors ${JSON.stringify(ramped.sample.errors)}`],
        ['server sees', `${sstats.connections} streams, RSS ${(serverMem.rssKb / 1024).toFixed(1)} MiB`],
        ['ramp', `${(done.rampMs / 1000).toFixed(2)} s → ${done.connectsPerSec} connects/s (target ≥ 8000)`],
        ['floodtest RSS idle', `${(idle.rssKb / 1024).toFixed(1)} MiB (PSS ${(idle.pssKb / 1024).toFixed(1)} MiB)`],
        [`floodtest RSS at ${open}`, `${(full.rssKb / 1024).toFixed(1)} MiB (PSS ${(full.pssKb / 1024).toFixed(1)} MiB)`],
        ['marginal per connection', `${open > 0 ? ((full.rssKb - idle.rssKb) / open).toFixed(2) : '-'} KB RSS, ${open > 0 ? ((full.pssKb - idle.pssKb) / open).toFixed(2) : '-'} KB PSS (target ≤ 2.5 KB)`],
        ['total / connection', `${open > 0 ? (full.rssKb / open).toFixed(2) : '-'} KB RSS`],
        ['floodtest loop delay', `p99 ${ramped.sample.eventLoopDelayMs.p99} ms, max ${ramped.sample.eventLoopDelayMs.max} ms (last second, at rest)`],
        ['machine after', machineState()],
      ]) +
      '\n',
  );
  srv.child.kill('SIGTERM');
}

async function benchB(total: number, servers: number, hosts: string[], holdMs: number): Promise<void> {
  const procs: Proc[] = [];
  for (let i = 0; i < servers; i++) procs.push(await startServer('0.0.0.0'));
  const ports = procs.map((p) => p.port!);
  // id k (from 1) goes to combination (k-1) mod (hosts × ports), host-major, so its server is ports[(k-1) mod servers].
  const urls = [...generateUrls({ base: `http://127.0.0.1:${ports[0]}/test/`, count: total, hosts, ports })];
  const flProcs = Math.ceil(total / 18_000);
  const before = machineState();
  let violations = 0;
  let reachedAt = -1;
  let lastLine = '';
  const t0 = Date.now();
  const h = await startFlood({
    urls,
    procs: flProcs,
    connectTimeoutMs: 30_000,
    onSample: (s) => {
      lastLine = `Stats: {${s.connected},${s.closed},${s.chunks}}`;
      process.stderr.write(`  ${lastLine} inflight=${s.inflight} errors=${JSON.stringify(s.errors)} rss=${(s.rss / 2 ** 20).toFixed(0)}MiB\n`);
      if (reachedAt >= 0 && (s.connected !== total || s.closed !== 0)) violations++;
      if (reachedAt < 0 && s.connected === total) reachedAt = Date.now() - t0;
    },
  });
  const deadline = Date.now() + 180_000;
  while (reachedAt < 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  const serverConns = (await Promise.all(procs.map((p) => serverStats(p.control!)))).map((s) => s.connections);
  // One message to each of the first 1200 ids: exactly 1200 chunks must arrive (each id has one receiver).
  const sampleIds = Math.min(1200, total);
  let delivered = 0;
  for (let id = 1; id <= sampleIds; id++) {
    const p = procs[(id - 1) % servers]!;
    const r = await fetch(`http://127.0.0.1:${p.control}/send/${id}`, { method: 'POST', body: `bench @t=${nowMicros()}` });
    delivered += ((await r.json()) as { delivered: number }).delivered;
  }
  await new Promise((r) => setTimeout(r, holdMs));
  const last = h.sample();
  const serverMem = procs.map((p) => readProcKb(p.child.pid!).rssKb);
  const summary = await h.stop();
  process.stdout.write(
    `\n(b) ${total} connections: ${servers} comet-server processes (ports ${ports.join(',')}), floodtest --procs ${flProcs}, over ${hosts.join(',')}\n` +
      table([
        ['machine before', before],
        ['reached / asked', `${summary.reached} / ${total}${summary.short ? '  SHORT' : ''} (all open after ${(reachedAt / 1000).toFixed(1)} s)`],
        ['ramp', `${(summary.rampMs / 1000).toFixed(2)} s → ${summary.connectsPerSec} connects/s (${flProcs} processes)`],
        ['server streams', `${serverConns.join(' + ')} = ${serverConns.reduce((a, b) => a + b, 0)}`],
        ['closed during run', `${summary.closed}; samples off total after reaching it: ${violations}`],
        ['messages', `${sampleIds} sent, ${delivered} delivered, ${last.chunks} chunks counted, latency p50 ${summary.latency.p50} us p99 ${summary.latency.p99} us`],
        ['errors', JSON.stringify(summary.errors)],
        ['floodtest RSS (all procs)', `${(last.rss / 2 ** 20).toFixed(0)} MiB → ${((last.rss / 1024) / Math.max(1, last.connected)).toFixed(2)} KB/conn total`],
        ['server RSS', `${serverMem.map((k) => (k / 1024).toFixed(0)).join(' + ')} MiB`],
        ['last Stats line', lastLine],
        ['machine after', machineState()],
      ]) +
      '\n',
  );
}

async function main(): Promise<void> {
  if (process.argv.includes('--child')) return childMain();
  const { values } = parseArgs({
    strict: true,
    options: {
      conns: { type: 'string' },
      hosts: { type: 'string' },
      inflight: { type: 'string' },
      big: { type: 'string' },
      servers: { type: 'string' },
      hold: { type: 'string' },
      'time-limit': { type: 'string' },
      'node-flags': { type: 'string' },
      'skip-a': { type: 'boolean' },
      'no-lean': { type: 'boolean' },
      both: { type: 'boolean' },
    },
  });
  const conns = parseIntFlag('--conns', values.conns ?? '18000', 1, 19_000);
  const hosts = parseHostList('--hosts', values.hosts ?? '127.0.0.1-127.0.0.4');
  const inflight = parseIntFlag('--inflight', values.inflight ?? '256', 1, 100_000);
  const big = values.big === undefined ? 0 : parseIntFlag('--big', values.big, 1, 200_000);
  const servers = parseIntFlag('--servers', values.servers ?? String(Math.max(1, Math.ceil(big / 18_000))), 1, 32);
  const holdMs = parseDuration('--hold', values.hold ?? '20s', 0, 600_000);
  const limitMs = parseDuration('--time-limit', values['time-limit'] ?? '5m', 1000, 3_600_000);
  const nodeFlags = (values['node-flags'] ?? '').split(/\s+/).filter(Boolean);
  const limit = setTimeout(() => {
    process.stderr.write(`bench: time limit ${limitMs / 1000}s reached; stopping everything it started\n`);
    void stopAll().then(() => process.exit(1));
  }, limitMs);
  const onSig = (): void => void stopAll().then(() => process.exit(130));
  process.on('SIGINT', onSig);
  process.on('SIGTERM', onSig);
  try {
    if (!values['skip-a']) {
      if (values.both) await benchA(conns, hosts, nodeFlags, inflight, false);
      await benchA(conns, hosts, nodeFlags, inflight, values['no-lean'] !== true);
    }
    if (big > 0) await benchB(big, servers, hosts, holdMs);
  } finally {
    clearTimeout(limit);
    await stopAll();
  }
}

await main();
