// Connection flood beyond --max-conns (a benchmark script, not a test). Prints a pass/fail table: the excess is
// refused cleanly (503 and a close) and counted (`rejected`), the existing streams keep receiving every message,
// and the control API stays responsive (its latency is measured before, during and after the flood).
//
//   flock /tmp/c1m-bench.lock node dist/server/bench-flood.js [--max-conns 2000] [--flood 4000] [--rate 500]
//       [--addrs 4] [--flood-procs 2]
//
// The server is the real CLI in a child process with `--max-conns`. The existing streams are floodtest's engine in
// this process (ids 1..max-conns, so the server is full); msggen publishes `--rate` msg/s to them for the whole
// run. The flood is a second floodtest run in `--flood-procs` worker processes that opens `--flood` more
// connections as fast as it can (in-flight cap = all of them), each sending a normal `GET /test/<id>`; floodtest
// counts a 503 as the error HTTP_503. This process also polls `GET /healthz` every 10 ms and `GET /stats` every
// 250 ms on a keep-alive connection and records their latency.
//
// Bounded: the flood lasts at most --flood-time, the whole run --time-limit; it ends only the processes it started.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parseDuration, parseIntFlag } from '../lib/flags.js';
import { createHistogram, recordLatency, summarize, type Histogram } from '../lib/histogram.js';
import { startFlood } from '../floodtest/index.js';
import { startMsggen } from '../msggen/index.js';
import { fmtMB, getStats, printTable, rssOf, startServerCli } from './bench-slow.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Row {
  check: string;
  expected: string;
  measured: string;
  ok: boolean | null;
}

function ms(us: number): string {
  return (us / 1000).toFixed(2);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'max-conns': { type: 'string', default: '2000' },
      flood: { type: 'string', default: '4000' },
      rate: { type: 'string', default: '500' },
      addrs: { type: 'string', default: '4' },
      'flood-procs': { type: 'string', default: '2' },
      'flood-time': { type: 'string', default: '10s' },
      'time-limit': { type: 'string', default: '3m' },
    },
    strict: true,
  });
  const maxConns = parseIntFlag('--max-conns', values['max-conns']!, 1, 15_000);
  const floodN = parseIntFlag('--flood', values.flood!, 1, 30_000);
  const rate = parseIntFlag('--rate', values.rate!, 10, 50_000);
  const addrs = parseIntFlag('--addrs', values.addrs!, 1, 16);
  const floodProcs = parseIntFlag('--flood-procs', values['flood-procs']!, 1, 8);
  const floodTimeMs = parseDuration('--flood-time', values['flood-time']!, 1000, 120_000);
  const timeLimitMs = parseDuration('--time-limit', values['time-limit']!, 10_000, 900_000);

  const load0 = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const srv = await startServerCli(['--host', '0.0.0.0', '--port', '0', '--control-port', '0', '--max-conns', String(maxConns)]);
  const hardStop = setTimeout(() => {
    process.stderr.write(`time limit ${timeLimitMs} ms reached; stopping\n`);
    if (srv.child.exitCode === null) srv.child.kill('SIGKILL');
    process.exit(3);
  }, timeLimitMs);
  hardStop.unref();
  const pid = srv.child.pid!;
  const rows: Row[] = [];
  let normal: Awaited<ReturnType<typeof startFlood>> | null = null;
  let flood: Awaited<ReturnType<typeof startFlood>> | null = null;
  const base = `http://127.0.0.1:${srv.control}`;
  try {
    const urls = Array.from({ length: maxConns }, (_, i) => `http://127.0.0.${1 + (i % addrs)}:${srv.port}/test/${i + 1}`);
    normal = await startFlood({ urls, maxConns, inflight: 256, procs: 1 });
    const t0 = Date.now();
    while (normal.sample().connected < maxConns) {
      if (Date.now() - t0 > 60_000) throw new Error(`only ${normal.sample().connected} of ${maxConns} streams connected`);
      await sleep(100);
    }
    process.stderr.write(`${maxConns} streams open (the server is full); load average ${load0}\n`);

    // The control API probe: /healthz every 10 ms, /stats every 250 ms, latency per phase.
    let phase: 'before' | 'during' | 'after' = 'before';
    const hist: Record<string, Histogram> = { before: createHistogram(), during: createHistogram(), after: createHistogram() };
    const statsHist: Record<string, Histogram> = { before: createHistogram(), during: createHistogram(), after: createHistogram() };
    let probeErrors = 0;
    let probing = true;
    const probe = (async () => {
      let n = 0;
      while (probing) {
        const isStats = n++ % 25 === 0;
        const t = performance.now();
        try {
          const r = await fetch(`${base}/${isStats ? 'stats' : 'healthz'}`);
          await r.arrayBuffer();
          if (r.status !== 200) probeErrors++;
          recordLatency((isStats ? statsHist : hist)[phase]!, Math.round((performance.now() - t) * 1000));
        } catch {
          probeErrors++;
        }
        await sleep(10);
      }
    })();
    const before = await getStats(srv.control);
    const rssBefore = rssOf(pid);
    const run = startMsggen({ target: base, procs: 10, rate: rate / 10, max: maxConns, seed: 2, connections: 4 });
    await run.started;
    await sleep(2000);

    phase = 'during';
    process.stderr.write(`flooding: ${floodN} more connections from ${floodProcs} processes\n`);
    const tf = Date.now();
    const floodUrls = Array.from({ length: floodN }, (_, i) => `http://127.0.0.${1 + (i % addrs)}:${srv.port}/test/${maxConns + i + 1}`);
    flood = await startFlood({ urls: floodUrls, maxConns: floodN, inflight: floodN, procs: floodProcs, connectTimeoutMs: 8000, durationMs: floodTimeMs });
    let rssPeak = rssBefore;
    // The flood is over when every flood connection has an outcome (an error such as HTTP_503, or a stream).
    for (;;) {
      await sleep(100);
      rssPeak = Math.max(rssPeak, rssOf(pid));
      const f = flood.sample();
      const outcomes = Object.values(f.errors).reduce((a, b) => a + b, 0) + f.established;
      if (outcomes >= floodN || Date.now() - tf > floodTimeMs) break;
    }
    const floodMs = Date.now() - tf;
    const floodSummary = await flood.stop();
    flood = null;
    phase = 'after';
    await sleep(2000);
    const summary = await run.stop();
    probing = false;
    await probe;
    // Let the last deliveries arrive.
    const td = Date.now();
    let after = await getStats(srv.control);
    while (Date.now() - td < 10_000 && normal.sample().chunks < summary.acked) await sleep(100);
    await sleep(300);
    after = await getStats(srv.control);
    const ns = normal.sample();
    const rssAfter = rssOf(pid);
    const msgs = after.messagesIn - before.messagesIn;
    const rejected = after.rejected - before.rejected;
    const got503 = floodSummary.errors.HTTP_503 ?? 0;
    const other = Object.entries(floodSummary.errors).filter(([k]) => k !== 'HTTP_503');
    const during = summarize(hist.during!);
    const beforeLat = summarize(hist.before!);
    const afterLat = summarize(hist.after!);
    const statsDuring = summarize(statsHist.during!);

    rows.push({ check: 'setup', expected: `${maxConns} streams = --max-conns ${maxConns}`, measured: `${before.connections} streams, ${before.sockets} sockets`, ok: before.connections === maxConns });
    rows.push({ check: 'flood connections answered', expected: `${floodN} in ≤ ${floodTimeMs / 1000} s`, measured: `${Object.values(floodSummary.errors).reduce((a, b) => a + b, 0) + floodSummary.established} in ${(floodMs / 1000).toFixed(2)} s`, ok: floodMs < floodTimeMs });
    rows.push({ check: 'flood: refused with 503 (floodtest HTTP_503)', expected: String(floodN), measured: `${got503}${other.length ? `; other: ${JSON.stringify(Object.fromEntries(other))}` : ''}`, ok: got503 === floodN });
    rows.push({ check: 'flood: streams that got in', expected: '0', measured: String(floodSummary.established), ok: floodSummary.established === 0 });
    rows.push({ check: 'server counted them (rejected)', expected: String(got503), measured: String(rejected), ok: rejected === got503 });
    rows.push({ check: 'server acceptErrors, socketErrors', expected: 'info', measured: `${after.acceptErrors - before.acceptErrors}, ${after.socketErrors - before.socketErrors}`, ok: null });
    rows.push({ check: 'existing streams: connected, closed, errors', expected: `${maxConns}, 0, none`, measured: `${ns.connected}, ${ns.closed}, ${JSON.stringify(ns.errors)}`, ok: ns.connected === maxConns && ns.closed === 0 && Object.keys(ns.errors).length === 0 });
    rows.push({ check: 'msggen sent = acked = server messagesIn', expected: 'equal, 0 failed', measured: `sent ${summary.sent}, acked ${summary.acked}, failed ${summary.failed}, messagesIn ${msgs}`, ok: summary.sent === summary.acked && summary.acked === msgs && summary.failed === 0 });
    rows.push({ check: 'existing streams received every message', expected: String(msgs), measured: `${ns.chunks} chunks`, ok: ns.chunks === msgs });
    rows.push({ check: 'delivery latency (floodtest) p50 / p99 / max', expected: 'info', measured: `${ms(ns.latency.p50)} / ${ms(ns.latency.p99)} / ${ms(ns.latency.max)} ms`, ok: null });
    rows.push({ check: 'control /healthz before: n, p50 / p99 / max', expected: 'info', measured: `${beforeLat.count}, ${ms(beforeLat.p50)} / ${ms(beforeLat.p99)} / ${ms(beforeLat.max)} ms`, ok: null });
    rows.push({ check: 'control /healthz during the flood', expected: 'every probe answered, max < 1 s', measured: `${during.count}, ${ms(during.p50)} / ${ms(during.p99)} / ${ms(during.max)} ms`, ok: during.count > 0 && during.max < 1_000_000 });
    rows.push({ check: 'control /stats during the flood', expected: 'answers', measured: `${statsDuring.count}, ${ms(statsDuring.p50)} / ${ms(statsDuring.p99)} / ${ms(statsDuring.max)} ms`, ok: statsDuring.count > 0 });
    rows.push({ check: 'control /healthz after', expected: 'info', measured: `${afterLat.count}, ${ms(afterLat.p50)} / ${ms(afterLat.p99)} / ${ms(afterLat.max)} ms`, ok: null });
    rows.push({ check: 'control probe failures', expected: '0', measured: String(probeErrors), ok: probeErrors === 0 });
    rows.push({ check: 'server sockets after the flood', expected: `${maxConns} (refused ones closed)`, measured: String(after.sockets), ok: after.sockets === maxConns });
    rows.push({ check: 'server RSS before / peak / after', expected: 'info', measured: `${fmtMB(rssBefore)} / ${fmtMB(rssPeak)} / ${fmtMB(rssAfter)}`, ok: null });
    const load1 = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
    rows.push({ check: 'machine', expected: 'info', measured: `2 cores, node ${process.version}, msggen ${rate} msg/s, load before ${load0}, after ${load1}`, ok: null });
  } finally {
    if (flood) await flood.stop();
    if (normal) await normal.stop();
    srv.child.kill('SIGTERM');
    await new Promise((r) => (srv.child.exitCode !== null ? r(null) : srv.child.once('exit', r)));
  }
  const pass = printTable(`bench-flood: ${floodN} connections beyond --max-conns ${maxConns}`, rows);
  process.exitCode = pass ? 0 : 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench-flood: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
