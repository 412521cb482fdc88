// Slow consumers at scale (a benchmark script, not a test): 1,000 clients that never read beside 9,000 normal ones,
// under 1,000 msg/s. Prints a pass/fail table: the slow ones are cut at the buffer cap (slowDrops), the server's
// memory stays bounded, and the normal ones receive every message addressed to them.
//
//   flock /tmp/c1m-bench.lock node dist/server/bench-slow.js [--normal 9000] [--slow 1000] [--rate 1000]
//       [--size 16KiB] [--fanout 4] [--max-buffer 64KiB] [--duration 90s] [--addrs 4]
//
// Layout. The server is the real CLI in a child process. The normal clients are floodtest's engine (one stream per
// id 1..N, spread over 127.0.0.1..127.0.0.<addrs>); msggen publishes `--rate` messages/s to uniform ids in 1..N,
// each `--size` bytes. A slow client is a raw socket that sends its request and is paused at once (it never reads
// a byte, not even the response head); slow client j logs in as `fanout × N/slow` consecutive ids from j × N/slow,
// so every id has exactly one normal stream and `fanout` slow ones. Hence each message reaches one normal stream
// (so floodtest's chunk count must equal the messages accepted) and `fanout` slow ones.
//
// Why big messages: a client that never reads does not push back on the server until the kernel stops taking
// data for it, and on loopback the kernel takes a lot. The loopback MSS is ~64 KiB, so Linux grows a socket's send
// buffer to tcp_wmem's maximum (4 MiB here) before it refuses more: measured, a paused client absorbs ~4,005,888
// bytes before Node's own write queue grows at all. 1,000 such clients could pin ~4 GB of kernel memory, above
// tcp_mem (the kernel stops growing send buffers once all TCP memory passes tcp_mem[0], ~1.1 GB here, which is
// what bounds it). With 40-byte messages at 1 msg/s per slow client that would take days; with 16 KiB messages
// and each slow client on 4 ids' worth of traffic it takes tens of seconds. The server's cap (`--max-buffer`)
// bounds what the *server process* holds per slow client; the kernel's share is bounded by the kernel's limits,
// which this script watches (/proc/net/sockstat, /proc/net/protocols).
//
// Measured: the senders' buffers are sized while memory is plentiful, so they do not stop growing at tcp_mem[0];
// 1,000 paused clients reached 1.35 GB of kernel TCP memory with none cut yet (~1.35 MB each). So with the default
// sysctls 1,000 never-reading loopback clients cannot be cut by the server's cap before the kernel enters TCP memory
// pressure (tcp_mem[1], 1.5 GB here). Under pressure a socket may only grow while it holds less than its share
// (tcp_mem[2] / sockets, ~220 KB at 10,000 sockets): the slow ones are refused more, the server's queue for them
// passes the cap, and they are cut; the normal ones hold a few KB and are not affected. `--kernel-guard` stops
// publishing before the kernel's hard limit: `max` (default) at 90% of tcp_mem[2], `pressure` at 90% of tcp_mem[1]
// (then the run does not enter pressure, and with many slow clients it ends before they are cut).
//
// Bounded: every phase has a deadline, the whole run at most `--time-limit`; it ends only the processes it started.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseDuration, parseIntFlag, parseSize } from '../lib/flags.js';
import { startFlood } from '../floodtest/index.js';
import { startMsggen } from '../msggen/index.js';
import { SERVER_NODE_FLAGS } from './node-flags.js';

const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Row {
  check: string;
  expected: string;
  measured: string;
  ok: boolean | null;
}

export function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

/** Kernel TCP memory in use now, bytes (pages from /proc/net/sockstat). */
export function tcpMemBytes(): number {
  const m = /^TCP:.* mem (\d+)/m.exec(readFileSync('/proc/net/sockstat', 'utf8'));
  return m ? Number(m[1]) * 4096 : NaN;
}

/** True while the kernel's TCP memory pressure flag is set (/proc/net/protocols, column "press"). */
export function tcpUnderPressure(): boolean {
  const line = readFileSync('/proc/net/protocols', 'utf8').split('\n').find((l) => l.startsWith('TCP '));
  return line !== undefined && line.trim().split(/\s+/)[4] === 'yes';
}

/** tcp_mem thresholds (min, pressure, max) in bytes. */
export function tcpMemLimits(): [number, number, number] {
  const v = readFileSync('/proc/sys/net/ipv4/tcp_mem', 'utf8').trim().split(/\s+/).map((x) => Number(x) * 4096);
  return [v[0]!, v[1]!, v[2]!];
}

/** Starts the server CLI in a child process and resolves once it printed its ready line. */
export async function startServerCli(args: string[]): Promise<{ child: ChildProcess; port: number; control: number; stderr: () => string }> {
  const child = spawn(process.execPath, [...SERVER_NODE_FLAGS, CLI, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, C1M_TOKEN: '' },
  });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const deadline = Date.now() + 15_000;
  for (;;) {
    const m = /listening .*port=(\d+) control=(\d+)/.exec(err);
    if (m) return { child, port: Number(m[1]), control: Number(m[2]), stderr: () => err };
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`server did not start: ${err}`);
    }
    await sleep(20);
  }
}

export async function getStats(control: number): Promise<Record<string, number>> {
  const r = await fetch(`http://127.0.0.1:${control}/stats`);
  return (await r.json()) as Record<string, number>;
}

export function printTable(title: string, rows: Row[]): boolean {
  const w = [5, 0, 0, 0];
  const cells = rows.map((r) => [r.ok === null ? 'info' : r.ok ? 'PASS' : 'FAIL', r.check, r.expected, r.measured]);
  for (const c of cells) for (let i = 0; i < 4; i++) w[i] = Math.max(w[i]!, c[i]!.length);
  const line = (c: string[]): string => '| ' + c.map((x, i) => x.padEnd(w[i]!)).join(' | ') + ' |';
  process.stdout.write(`\n${title}\n\n${line(['', 'check', 'expected', 'measured'])}\n|${w.map((n) => '-'.repeat(n + 2)).join('|')}|\n`);
  for (const c of cells) process.stdout.write(line(c) + '\n');
  const pass = rows.every((r) => r.ok !== false);
  process.stdout.write(`\nresult: ${pass ? 'PASS' : 'FAIL'}\n`);
  return pass;
}

export function fmtMB(b: number): string {
  return `${(b / 1048576).toFixed(1)} MiB`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      normal: { type: 'string', default: '9000' },
      slow: { type: 'string', default: '1000' },
      rate: { type: 'string', default: '1000' },
      size: { type: 'string', default: '16KiB' },
      fanout: { type: 'string', default: '4' },
      'max-buffer': { type: 'string', default: '64KiB' },
      duration: { type: 'string', default: '90s' },
      addrs: { type: 'string', default: '4' },
      'time-limit': { type: 'string', default: '4m' },
      'kernel-guard': { type: 'string', default: 'max' },
    },
    strict: true,
  });
  const normal = parseIntFlag('--normal', values.normal!, 1, 17_000);
  const slow = parseIntFlag('--slow', values.slow!, 1, normal);
  const rate = parseIntFlag('--rate', values.rate!, 1, 100_000);
  const size = parseSize('--size', values.size!, 1, 60 * 1024);
  const fanout = parseIntFlag('--fanout', values.fanout!, 1, 7);
  const maxBuffer = parseSize('--max-buffer', values['max-buffer']!, 1024, 1024 ** 3);
  const durationMs = parseDuration('--duration', values.duration!, 1000, 600_000);
  const addrs = parseIntFlag('--addrs', values.addrs!, 1, 16);
  const timeLimitMs = parseDuration('--time-limit', values['time-limit']!, 10_000, 900_000);
  if (normal % slow !== 0) throw new Error(`--normal (${normal}) must be a multiple of --slow (${slow})`);
  const per = normal / slow;
  if (per * fanout > 64) throw new Error(`--fanout × normal/slow = ${per * fanout} ids per slow client; the server allows 64`);

  const started: ChildProcess[] = [];
  const hardStop = setTimeout(() => {
    process.stderr.write(`time limit ${timeLimitMs} ms reached; stopping\n`);
    for (const c of started) if (c.exitCode === null) c.kill('SIGKILL');
    process.exit(3);
  }, timeLimitMs);
  hardStop.unref();

  const load0 = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const [tcpMin, tcpPressure, tcpMax] = tcpMemLimits();
  if (values['kernel-guard'] !== 'max' && values['kernel-guard'] !== 'pressure') throw new Error('--kernel-guard: max or pressure');
  const guard = values['kernel-guard'] === 'max' ? 0.9 * tcpMax : 0.9 * tcpPressure;
  let sawPressure = false;
  process.stderr.write(`load average before: ${load0}; tcp_mem ${fmtMB(tcpMin)} / ${fmtMB(tcpPressure)} / ${fmtMB(tcpMax)}; TCP mem now ${fmtMB(tcpMemBytes())}\n`);
  const srv = await startServerCli(['--host', '0.0.0.0', '--port', '0', '--control-port', '0', '--max-buffer', String(maxBuffer), '--max-conns', '0']);
  started.push(srv.child);
  const pid = srv.child.pid!;
  const rows: Row[] = [];
  const slowSockets: net.Socket[] = [];
  let flood: Awaited<ReturnType<typeof startFlood>> | null = null;
  try {
    const rssIdle = rssOf(pid);
    const urls = Array.from({ length: normal }, (_, i) => `http://127.0.0.${1 + (i % addrs)}:${srv.port}/test/${i + 1}`);
    flood = await startFlood({ urls, maxConns: normal, inflight: 256, procs: 1 });
    const t0 = Date.now();
    while (flood.sample().connected < normal) {
      if (Date.now() - t0 > 60_000) throw new Error(`only ${flood.sample().connected} of ${normal} normal streams connected`);
      await sleep(100);
    }
    process.stderr.write(`${normal} normal streams open in ${Date.now() - t0} ms\n`);
    for (let j = 0; j < slow; j++) {
      const ids: number[] = [];
      for (let k = 0; k < per * fanout; k++) ids.push(((j * per + k) % normal) + 1);
      const s = net.connect({ port: srv.port, host: `127.0.0.${1 + (j % addrs)}` });
      s.pause(); // never reads, not even the response head
      s.on('error', () => undefined);
      s.write(`GET /test/${ids.join(',')} HTTP/1.1\r\nHost: slow\r\n\r\n`);
      slowSockets.push(s);
      if (j % 200 === 199) await sleep(20);
    }
    const t1 = Date.now();
    while ((await getStats(srv.control)).connections < normal + slow) {
      if (Date.now() - t1 > 30_000) throw new Error('slow clients did not all log in');
      await sleep(100);
    }
    await sleep(2000);
    const before = await getStats(srv.control);
    const rssBefore = rssOf(pid);
    const tcpBefore = tcpMemBytes();
    process.stderr.write(`all ${normal + slow} streams open; server RSS ${fmtMB(rssBefore)}; publishing ${rate} msg/s of ${size} bytes\n`);

    // Publish until every slow client was cut (or the duration ends, or kernel TCP memory reaches the pressure mark).
    const run = startMsggen({
      target: `http://127.0.0.1:${srv.control}`,
      procs: 10,
      rate: rate / 10,
      max: normal,
      seed: 1,
      text: 'x'.repeat(Math.max(1, size - 40)),
      durationMs,
      connections: 8,
    });
    await run.started;
    let rssPeak = rssBefore;
    let tcpPeak = tcpBefore;
    let stopReason = 'duration';
    let cutAtSec = NaN;
    const tp = Date.now();
    let last = 0;
    for (;;) {
      await sleep(500);
      rssPeak = Math.max(rssPeak, rssOf(pid));
      const tcp = tcpMemBytes();
      tcpPeak = Math.max(tcpPeak, tcp);
      const st = await getStats(srv.control);
      if (Date.now() - last > 5000) {
        last = Date.now();
        process.stderr.write(
          `[${((Date.now() - tp) / 1000).toFixed(0)}s] slowDrops ${st.slowDrops} connections ${st.connections} messagesIn ${st.messagesIn} ` +
            `server RSS ${fmtMB(rssOf(pid))} kernel TCP ${fmtMB(tcp)}${tcpUnderPressure() ? ' (pressure)' : ''} floodtest chunks ${flood.sample().chunks}\n`,
        );
      }
      if (st.slowDrops - before.slowDrops >= slow) {
        cutAtSec = (Date.now() - tp) / 1000;
        stopReason = 'all slow clients cut';
        break;
      }
      if (tcpUnderPressure()) sawPressure = true;
      if (tcp >= guard) {
        stopReason = `kernel TCP memory reached the --kernel-guard ${values['kernel-guard']} mark (${fmtMB(guard)})`;
        break;
      }
      if (Date.now() - tp > durationMs) break;
    }
    // A few more seconds of traffic with every slow client gone: the normal ones must keep up.
    if (Number.isFinite(cutAtSec)) await sleep(3000);
    const summary = await run.stop();
    // Drain: wait until floodtest has every chunk the server wrote to it (or 20 s).
    const td = Date.now();
    let after = await getStats(srv.control);
    while (Date.now() - td < 20_000) {
      after = await getStats(srv.control);
      if (after.chunksQueued === after.chunksOut + after.chunksDropped && flood.sample().chunks >= summary.acked) break;
      await sleep(200);
    }
    await sleep(500);
    after = await getStats(srv.control);
    const fs = flood.sample();
    const rssAfter = rssOf(pid);
    const msgs = after.messagesIn - before.messagesIn;
    const chunksOut = after.chunksOut - before.chunksOut;
    const dropped = after.chunksDropped - before.chunksDropped;
    const queued = after.chunksQueued - before.chunksQueued;
    const slowDrops = after.slowDrops - before.slowDrops;
    const toSlowWritten = chunksOut - fs.chunks;
    const memBound = slow * (maxBuffer + 4 * size) + 64 * 1048576;

    rows.push({ check: 'setup', expected: `${normal} normal + ${slow} never-reading`, measured: `${before.connections} streams open, ${rate} msg/s × ${size} B, fan-out 1 normal + ${fanout} slow`, ok: before.connections === normal + slow });
    rows.push({ check: 'publishing stopped by', expected: 'all slow clients cut', measured: `${stopReason}${Number.isFinite(cutAtSec) ? ` after ${cutAtSec.toFixed(1)} s` : ''}`, ok: Number.isFinite(cutAtSec) });
    rows.push({ check: 'slow clients cut (slowDrops)', expected: String(slow), measured: String(slowDrops), ok: slowDrops === slow });
    rows.push({ check: 'streams open at the end', expected: `${normal} (the normal ones)`, measured: String(after.connections), ok: after.connections === normal });
    rows.push({ check: 'msggen sent = acked = server messagesIn', expected: 'equal, 0 failed', measured: `sent ${summary.sent}, acked ${summary.acked}, failed ${summary.failed}, messagesIn ${msgs}`, ok: summary.sent === summary.acked && summary.acked === msgs && summary.failed === 0 });
    rows.push({ check: 'normal: floodtest chunks = messages', expected: String(msgs), measured: String(fs.chunks), ok: fs.chunks === msgs });
    rows.push({ check: 'normal: connected, closed, errors', expected: `${normal}, 0, none`, measured: `${fs.connected}, ${fs.closed}, ${JSON.stringify(fs.errors)}`, ok: fs.connected === normal && fs.closed === 0 && Object.keys(fs.errors).length === 0 });
    rows.push({ check: 'server: chunksQueued = chunksOut + chunksDropped', expected: String(queued), measured: `${chunksOut} + ${dropped} = ${chunksOut + dropped}`, ok: queued === chunksOut + dropped });
    rows.push({ check: 'msggen delivered = chunksQueued', expected: String(queued), measured: String(summary.delivered), ok: summary.delivered === queued });
    rows.push({ check: 'to slow clients: written / dropped', expected: 'info', measured: `${toSlowWritten} written (into kernel buffers), ${dropped} dropped at the cut`, ok: null });
    rows.push({ check: 'server RSS idle / all open / peak / end', expected: `peak − all open ≤ ${fmtMB(memBound)}`, measured: `${fmtMB(rssIdle)} / ${fmtMB(rssBefore)} / ${fmtMB(rssPeak)} / ${fmtMB(rssAfter)}`, ok: rssPeak - rssBefore <= memBound });
    rows.push({ check: 'kernel TCP memory (all sockets) before / peak', expected: `< guard ${fmtMB(guard)} (tcp_mem ${fmtMB(tcpMin)} / ${fmtMB(tcpPressure)} / ${fmtMB(tcpMax)})`, measured: `${fmtMB(tcpBefore)} / ${fmtMB(tcpPeak)}; memory pressure ${sawPressure ? 'entered' : 'not entered'}`, ok: tcpPeak < guard });
    rows.push({ check: 'publish latency (msggen) p50 / p99 / max', expected: 'info', measured: `${(summary.latency.p50 / 1000).toFixed(2)} / ${(summary.latency.p99 / 1000).toFixed(2)} / ${(summary.latency.max / 1000).toFixed(2)} ms`, ok: null });
    rows.push({ check: 'delivery latency (floodtest) p50 / p99 / max', expected: 'info', measured: `${(fs.latency.p50 / 1000).toFixed(2)} / ${(fs.latency.p99 / 1000).toFixed(2)} / ${(fs.latency.max / 1000).toFixed(2)} ms`, ok: null });
    const load1 = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
    rows.push({ check: 'machine', expected: 'info', measured: `2 cores, node ${process.version}, server --max-buffer ${maxBuffer}, load before ${load0}, after ${load1}`, ok: null });
  } finally {
    for (const s of slowSockets) s.destroy();
    if (flood) await flood.stop();
    srv.child.kill('SIGTERM');
    await new Promise((r) => (srv.child.exitCode !== null ? r(null) : srv.child.once('exit', r)));
  }
  const pass = printTable(`bench-slow: ${slow} never-reading clients beside ${normal} normal ones`, rows);
  process.exitCode = pass ? 0 : 1;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`bench-slow: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  });
}
