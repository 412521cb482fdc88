// Memory sanity check of the comet server (a script, not a test): RSS and PSS of the server process with 0,
// `--mid` (default half) and all of N idle `/test/<id>` streams open, then after one message to every id.
//
//   flock /tmp/c1m-bench.lock node dist/server/bench-mem.js [--conns 10000] [--mid N/2] [--addrs 4] [--settle 3s]
//       [--latency 10s] [--rate 1000] [--fanout 5s] [--batch 1000] [--inflight 2] [--node-arg=--cpu-prof ...]
//       [--flags='<the server's flags, server/node-flags.ts>'] [--env MALLOC_ARENA_MAX=1 ...] [--probe] [--gc-attrib]
//       [--client-flags='--no-memory-reducer --max-semi-space-size=32 --expose-gc']
//   (--latency 0 / --fanout 0 skip those phases; --flags replaces the server's node flags, '' for none;
//   --client-flags replaces the measuring client's node flags (see CLIENT_FLAGS; '' for node's defaults);
//   the server's environment gets MALLOC_ARENA_MAX=1 as the CLI's shebang sets it; --env replaces that list,
//   and --env NAME= removes NAME;
//   --probe preloads bench-probe.js into the server to split the latency into publish → router → write;
//   --gc-attrib records every GC pause of the server, the client and the publisher on the wall clock
//   (bench-gcwatch.js) and tells, for each message slower than 1 ms, which process was paused in its flight)
//
// The server runs as the real CLI (with its shebang's node flags) in a child process; the client runs in
// another child process (raw node:net, spread over destination addresses 127.0.0.1..127.0.0.<addrs>), so neither
// side's memory pollutes the other. Everything is bounded (count and a 180 s deadline) and stops by itself.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseDuration, parseIntFlag } from '../lib/flags.js';
import { createHistogram, encodeHistogram, formatMicros, mergeEncoded, recordLatency, summarize } from '../lib/histogram.js';
import { findMarker, formatMessage, nowMicros } from '../lib/marker.js';
import { GC_KINDS, gcPauses, startGcWatch, type GcPause } from './bench-gcwatch.js';
import { SERVER_NODE_FLAGS } from './node-flags.js';

const SELF = fileURLToPath(import.meta.url);
const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));
const PROBE = fileURLToPath(new URL('./bench-probe.js', import.meta.url));
const GCWATCH = fileURLToPath(new URL('./bench-gcwatch.js', import.meta.url));
/** Messages slower than this (µs, send stamp → client read) are logged one by one for --gc-attrib. */
const SLOW_US = 1000;
const DEFAULT_FLAGS = SERVER_NODE_FLAGS.join(' ');
/**
 * Node flags of the measuring client. It holds 10,000 sockets (a 17-30 MB old generation), and with node's defaults
 * its own GC landed in the latency figures: after the connection ramp the memory reducer ran mark-compacts of
 * 8-38 ms during the latency phase (seen with --gc-attrib: the slowest messages of those runs were all in flight
 * across a client pause). The client is the instrument, not the subject, so it trades memory for quiet: no memory
 * reducer, a young generation large enough that 10 s at 1,000 msg/s needs no scavenge, and a full GC just before
 * the latency phase (--expose-gc) so no marking started by the ramp finishes inside it.
 */
const CLIENT_FLAGS = '--no-memory-reducer --max-semi-space-size=32 --expose-gc';
const DEADLINE_MS = 180_000;

interface Mem {
  rssKB: number;
  pssKB: number;
  /** Anonymous (heap, stacks, malloc) part of RSS; the rest is file-backed (mostly the node binary). */
  anonKB: number;
}

function smaps(pid: number): Mem {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rssKB: kb('Rss'), pssKB: kb('Pss'), anonKB: kb('Anonymous') };
}

/** [ns on CPU, ns runnable but waiting on a run queue, times run] of a process's main thread. */
function schedstat(pid: number): number[] {
  return readFileSync(`/proc/${pid}/schedstat`, 'utf8').trim().split(' ').map(Number);
}

/** Busy CPU ticks of the whole machine (all cores; /proc/stat: everything but idle and iowait). */
function machineTicks(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return f.reduce((a, b) => a + b, 0) - f[3]! - f[4]!;
}

/**
 * What the machine did besides these three processes during a phase, in % of one core: other engineers' builds and
 * benchmarks show up here (kernel softirq work for our own sockets is counted here too, so it is never quite 0).
 */
function otherLoad(m0: number, m1: number, ours: number, sec: number): string {
  return `${(((m1 - m0 - ours) / 100 / sec) * 100).toFixed(0)}%`;
}

/** User + system CPU ticks (1/100 s) of a process, all threads. */
function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ');
  return Number(f[13]) + Number(f[14]);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Client mode: opens `conns` streams, reports progress on IPC, holds them until told to stop. */
async function client(port: number, addrs: number, logSlow: boolean): Promise<void> {
  const sockets: net.Socket[] = [];
  let ok = 0;
  let failed = 0;
  let bytes = 0;
  let chunks = 0;
  const BR = Buffer.from('<br/>');
  const hist = createHistogram();
  /** [stamp, arrival] pairs (µs since the epoch) of messages slower than SLOW_US, with --gc-attrib. */
  let slow: number[] = [];
  const send = (m: object): void => void process.send!(m);
  const openOne = (i: number): Promise<void> =>
    new Promise((resolve) => {
      const s = net.connect({ port, host: `127.0.0.${1 + (i % addrs)}` });
      sockets.push(s);
      let head = false;
      s.on('connect', () => s.write(`GET /test/${i + 1} HTTP/1.1\r\nHost: bench\r\n\r\n`));
      s.on('data', (d: Buffer) => {
        bytes += d.length;
        let from = 0;
        for (let k = d.indexOf(BR); k >= 0; k = d.indexOf(BR, k + 5)) {
          chunks++;
          const t = findMarker(d, from, k);
          if (t >= 0) {
            const now = nowMicros();
            recordLatency(hist, now - t);
            if (logSlow && now - t > SLOW_US && slow.length < 100_000) slow.push(t, now);
          }
          from = k + 5;
        }
        if (!head) {
          head = true;
          ok++;
          resolve();
        }
      });
      s.on('error', () => {
        if (!head) {
          failed++;
          resolve();
        }
      });
    });
  process.on('message', async (m: { cmd: string; upto?: number }) => {
    if (m.cmd === 'open') {
      // Open in bounded parallel batches so the accept queue never overflows.
      for (let i = sockets.length; i < m.upto!; i += 200) {
        const batch: Promise<void>[] = [];
        for (let j = i; j < Math.min(i + 200, m.upto!); j++) batch.push(openOne(j));
        await Promise.all(batch);
      }
      send({ ev: 'opened', ok, failed });
    } else if (m.cmd === 'count') {
      send({ ev: 'count', bytes, chunks });
    } else if (m.cmd === 'quiesce') {
      (globalThis as { gc?: () => void }).gc?.();
      send({ ev: 'quiesced' });
    } else if (m.cmd === 'latency') {
      send({ ev: 'latency', hist: encodeHistogram(hist), slow });
      hist.reset();
      slow = [];
    } else if (m.cmd === 'stop') {
      for (const s of sockets) s.destroy();
      process.exit(0);
    }
  });
  send({ ev: 'ready' });
  setTimeout(() => process.exit(3), DEADLINE_MS).unref();
}

function waitMessage(child: ChildProcess, ev: string): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: Record<string, unknown>): void => {
      if (m.ev === ev) {
        child.off('message', onMsg);
        resolve(m as Record<string, number>);
      }
    };
    child.on('message', onMsg);
    child.once('exit', (code) => reject(new Error(`client exited (${code}) while waiting for ${ev}`)));
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      conns: { type: 'string', default: '10000' },
      mid: { type: 'string' },
      addrs: { type: 'string', default: '4' },
      settle: { type: 'string', default: '3s' },
      fanout: { type: 'string', default: '5s' },
      latency: { type: 'string', default: '10s' },
      rate: { type: 'string', default: '1000' },
      batch: { type: 'string', default: '1000' },
      inflight: { type: 'string', default: '2' },
      'node-arg': { type: 'string', multiple: true, default: [] },
      'client-flags': { type: 'string', default: CLIENT_FLAGS },
      flags: { type: 'string', default: DEFAULT_FLAGS },
      env: { type: 'string', multiple: true, default: ['MALLOC_ARENA_MAX=1'] },
      probe: { type: 'boolean', default: false },
      'gc-attrib': { type: 'boolean', default: false },
      client: { type: 'string' },
    },
    strict: true,
  });
  const conns = parseIntFlag('--conns', values.conns!, 1, 18_000);
  const addrs = parseIntFlag('--addrs', values.addrs!, 1, 254);
  const attrib = values['gc-attrib']!;
  if (values.client !== undefined) return client(Number(values.client), addrs, attrib);
  const settleMs = parseDuration('--settle', values.settle!, 0, 60_000);
  const fanoutMs = parseDuration('--fanout', values.fanout!, 0, 60_000);
  const batch = parseIntFlag('--batch', values.batch!, 1, 10_000);
  const inflight = parseIntFlag('--inflight', values.inflight!, 1, 16);
  const latencyMs = parseDuration('--latency', values.latency!, 0, 120_000);
  const rate = parseIntFlag('--rate', values.rate!, 1, 20_000);

  const hardStop = setTimeout(() => {
    process.stderr.write('bench-mem: deadline reached, stopping\n');
    cleanup();
    process.exit(1);
  }, DEADLINE_MS);
  const children: ChildProcess[] = [];
  const cleanup = (): void => {
    for (const c of children) if (c.exitCode === null && c.pid) process.kill(c.pid, 'SIGKILL');
  };

  // The bench listens on every local address so the client can spread over 127.0.0.1..127.0.0.N; only loopback is targeted.
  const flags = [...values.flags!.split(' ').filter((f) => f !== ''), ...values['node-arg']!];
  if (values.probe) flags.push(`--import=${PROBE}`);
  const gcDir = attrib ? mkdtempSync(join(tmpdir(), 'c1m-gc-')) : '';
  let publisherPauses: () => readonly GcPause[] = () => [];
  if (attrib) {
    flags.push(`--import=${GCWATCH}`);
    process.env.C1M_GC_LOG = gcDir; // the server and the client inherit it; this process (the publisher) keeps its own
    startGcWatch();
    publisherPauses = gcPauses;
  }
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const kv of values.env!) {
    const eq = kv.indexOf('=');
    if (eq < 1) throw new Error(`--env ${kv}: expected NAME=value`);
    if (eq === kv.length - 1) delete env[kv.slice(0, eq)];
    else env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const loadStart = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const server = spawn(process.execPath, [...flags, CLI, '--host', '0.0.0.0', '--port', '0', '--control-port', '0'], {
    stdio: ['ignore', 'inherit', 'pipe'],
    env,
  });
  children.push(server);
  let err = '';
  server.stderr!.on('data', (d) => (err += d));
  let port = 0;
  let control = 0;
  for (let i = 0; i < 500 && !port; i++) {
    const m = /port=(\d+) control=(\d+)/.exec(err);
    if (m) [port, control] = [Number(m[1]), Number(m[2])];
    else await sleep(20);
  }
  if (!port) throw new Error(`server did not start: ${err}`);
  const pid = server.pid!;
  const stats = async (): Promise<Record<string, number>> => (await fetch(`http://127.0.0.1:${control}/stats`)).json() as Promise<Record<string, number>>;

  const rows: Array<{ label: string; conns: number; mem: Mem; heapMB: number }> = [];
  const sample = async (label: string): Promise<void> => {
    await sleep(settleMs);
    const st = await stats();
    rows.push({ label, conns: st.connections!, mem: smaps(pid), heapMB: st.heapUsed! / 1048576 });
    process.stderr.write(`${label}: ${st.connections} streams, RSS ${smaps(pid).rssKB} kB\n`);
  };
  await sample('idle');

  const clientFlags = values['client-flags']!.split(' ').filter((f) => f !== '');
  const clientArgs = [...clientFlags, ...(attrib ? [`--import=${GCWATCH}`, SELF, '--gc-attrib'] : [SELF])];
  const cl = spawn(process.execPath, [...clientArgs, '--client', String(port), '--conns', String(conns), '--addrs', String(addrs)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.push(cl);
  await waitMessage(cl, 'ready');
  const half = values.mid === undefined ? Math.floor(conns / 2) : parseIntFlag('--mid', values.mid, 1, conns);
  cl.send({ cmd: 'open', upto: half });
  let r = await waitMessage(cl, 'opened');
  await sample(`${r.ok} open`);
  cl.send({ cmd: 'open', upto: conns });
  r = await waitMessage(cl, 'opened');
  await sample(`${r.ok} open`);
  if (r.failed) process.stderr.write(`bench-mem: ${r.failed} connections failed\n`);

  // One message to every id, in NDJSON batches, then measure again (output buffers must be gone at rest).
  for (let i = 0; i < conns; i += 1000) {
    let body = '';
    for (let j = i; j < Math.min(i + 1000, conns); j++) body += JSON.stringify({ id: j + 1, msg: `Fake message Num = ${j}` }) + '\n';
    await fetch(`http://127.0.0.1:${control}/send`, { method: 'POST', body });
  }
  await sample(`${r.ok} open, after 1 msg each`);

  // Fan-out: publish NDJSON batches to random ids back to back for a while, then wait until the client has
  // received every chunk the server wrote; the rate is chunks received per second of the whole phase.
  // Latency: one POST /send/<id> per message at a fixed rate, each message stamped with its send time (@t=);
  // the client records arrival − stamp. Sends are paced against the schedule, so a slow answer is not hidden.
  let lat = '';
  let latWindow: [number, number] = [0, 0];
  let slowPairs: number[] = [];
  if (latencyMs > 0) {
    cl.send({ cmd: 'quiesce' });
    await waitMessage(cl, 'quiesced');
    cl.send({ cmd: 'latency' });
    await waitMessage(cl, 'latency'); // resets the client's histogram
    const t0 = performance.now();
    latWindow[0] = nowMicros();
    const lcpu0 = readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ');
    const lm0 = [machineTicks(), cpuTicks(pid), cpuTicks(cl.pid!), cpuTicks(process.pid)];
    const sched0 = [schedstat(pid), schedstat(cl.pid!), schedstat(process.pid)];
    const total = Math.floor((latencyMs / 1000) * rate);
    // The lightest publisher: one keep-alive socket with pipelined raw POSTs, so the figure is the server's
    // and the client's, not an HTTP client library's queueing. Answers are read and counted.
    const pub = net.connect({ port: control, host: '127.0.0.1' });
    pub.setNoDelay(true);
    await new Promise((res) => pub.once('connect', res));
    let answered = 0;
    pub.on('data', (d: Buffer) => {
      for (let k = d.indexOf('HTTP/1.1 200'); k >= 0; k = d.indexOf('HTTP/1.1 200', k + 1)) answered++;
    });
    for (let i = 0; i < total; i++) {
      const due = t0 + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 1) await sleep(wait);
      const id = 1 + Math.floor(Math.random() * conns);
      const body = formatMessage('Fake message', i, nowMicros());
      pub.write(`POST /send/${id} HTTP/1.1\r\nHost: bench\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    }
    for (let i = 0; i < 100 && answered < total; i++) await sleep(20);
    pub.destroy();
    const lcpu1 = readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ');
    const lm1 = [machineTicks(), cpuTicks(pid), cpuTicks(cl.pid!), cpuTicks(process.pid)];
    const sched1 = [schedstat(pid), schedstat(cl.pid!), schedstat(process.pid)];
    const lticks = Number(lcpu1[13]) + Number(lcpu1[14]) - Number(lcpu0[13]) - Number(lcpu0[14]);
    const lsec = (performance.now() - t0) / 1000;
    await sleep(500);
    latWindow[1] = nowMicros();
    cl.send({ cmd: 'latency' });
    const h = createHistogram();
    const reply = (await waitMessage(cl, 'latency')) as unknown as { hist: string; slow: number[] };
    mergeEncoded(h, reply.hist);
    slowPairs = reply.slow;
    const q = summarize(h);
    lat =
      `latency at ${rate} msg/s for ${latencyMs / 1000} s (one raw POST /send/<id> each, ${answered} answered 200; send stamp → client read): ` +
      `${q.count} of ${total} received, p50 ${formatMicros(q.p50)}, p90 ${formatMicros(q.p90)}, p99 ${formatMicros(q.p99)}, ` +
      `p99.9 ${formatMicros(q.p999)}, max ${formatMicros(q.max)}; server CPU ${((lticks / 100 / lsec) * 100).toFixed(0)}%, ` +
      `client ${((((lm1[2]! - lm0[2]!) / 100) / lsec) * 100).toFixed(0)}%, publisher ${((((lm1[3]! - lm0[3]!) / 100) / lsec) * 100).toFixed(0)}%, ` +
      `rest of the machine ${otherLoad(lm0[0]!, lm1[0]!, lm1[1]! - lm0[1]! + lm1[2]! - lm0[2]! + lm1[3]! - lm0[3]!, lsec)}\n` +
      `run-queue wait of the main threads in that phase (runnable but not running: other processes on the 2 cores; pids server ${pid}, client ${cl.pid}, publisher ${process.pid}): ` +
      ['server', 'client', 'publisher']
        .map((name, k) => {
          const waitUs = (sched1[k]![1] - sched0[k]![1]) / 1000;
          const slices = sched1[k]![2] - sched0[k]![2];
          const cpuMs = (sched1[k]![0] - sched0[k]![0]) / 1e6;
          return `${name} ${(waitUs / 1000).toFixed(1)} ms over ${slices} runs (${(waitUs / Math.max(1, slices)).toFixed(0)} µs each; on CPU ${cpuMs.toFixed(0)} ms)`;
        })
        .join(', ') +
      '\n';
  }

  let fan = '';
  if (fanoutMs > 0) {
    const s0 = await stats();
    cl.send({ cmd: 'count' });
    const c0 = await waitMessage(cl, 'count');
    const t0 = performance.now();
    const cpu0 = readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ');
    const others0 = [cpuTicks(cl.pid!), cpuTicks(process.pid), machineTicks(), cpuTicks(pid)];
    let sent = 0;
    // `inflight` publishers back to back, each on its own keep-alive connection: with one, the server sat idle while
    // its answer travelled and the next batch was built (61-79% of a core busy at 42k msgs/s, client 28%,
    // publisher 8%), so the figure was the round trip's, not the server's.
    const publishLoop = async (): Promise<void> => {
      while (performance.now() - t0 < fanoutMs) {
        let body = '';
        const first = sent;
        sent += batch;
        for (let j = 0; j < batch; j++) body += `{"id":${1 + Math.floor(Math.random() * conns)},"msg":"Fake message Num = ${first + j}"}\n`;
        const res = await fetch(`http://127.0.0.1:${control}/send`, { method: 'POST', body });
        await res.arrayBuffer();
      }
    };
    await Promise.all(Array.from({ length: inflight }, publishLoop));
    const tPub = performance.now() - t0;
    let c1 = c0;
    for (let i = 0; i < 200; i++) {
      cl.send({ cmd: 'count' });
      c1 = await waitMessage(cl, 'count');
      const st1 = await stats();
      if (c1.chunks! - c0.chunks! >= st1.chunksOut! - s0.chunksOut!) break;
      await sleep(50);
    }
    const tAll = performance.now() - t0;
    const cpu1 = readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ');
    const others1 = [cpuTicks(cl.pid!), cpuTicks(process.pid), machineTicks(), cpuTicks(pid)];
    const uticks = Number(cpu1[13]) - Number(cpu0[13]);
    const sticks = Number(cpu1[14]) - Number(cpu0[14]);
    const ticks = uticks + sticks;
    const got = c1.chunks! - c0.chunks!;
    fan =
      `fan-out: ${sent} messages in NDJSON batches of ${batch} (${inflight} in flight) over ${(tPub / 1000).toFixed(1)} s to random ids of ${conns}; ` +
      `client received ${got} chunks by ${(tAll / 1000).toFixed(1)} s = ${Math.round(got / (tAll / 1000))} msgs/s delivered; ` +
      `server CPU ${((ticks / 100 / (tAll / 1000)) * 100).toFixed(0)}% (user ${((uticks / 100 / (tAll / 1000)) * 100).toFixed(0)}%, system ${((sticks / 100 / (tAll / 1000)) * 100).toFixed(0)}%) = ` +
      `${((ticks * 10_000) / got).toFixed(2)} µs of server CPU per delivered message (user ${((uticks * 10_000) / got).toFixed(2)}, system ${((sticks * 10_000) / got).toFixed(2)}); ` +
      `client CPU ${(((others1[0]! - others0[0]!) / 100 / (tAll / 1000)) * 100).toFixed(0)}%, publisher CPU ${(((others1[1]! - others0[1]!) / 100 / (tAll / 1000)) * 100).toFixed(0)}%, ` +
      `rest of the machine ${otherLoad(others0[2]!, others1[2]!, others1[0]! - others0[0]! + others1[1]! - others0[1]! + others1[3]! - others0[3]!, tAll / 1000)}\n`;
  }
  const st = await stats();

  cl.send({ cmd: 'stop' });
  await new Promise((res) => cl.once('exit', res));
  // Every stream closed: the router maps must be empty and memory should fall back towards idle.
  for (let i = 0; i < 100 && (await stats()).connections! > 0; i++) await sleep(50);
  await sample('all closed');
  const end = await stats();
  if (end.connections !== 0 || end.ids !== 0) process.stderr.write(`bench-mem: LEAK? ${end.connections} streams, ${end.ids} ids left\n`);
  process.kill(pid, 'SIGTERM');
  await new Promise((res) => server.once('exit', res));
  const probeLines = err.split('\n').filter((l) => l.startsWith('probe:'));
  let attribText = '';
  if (attrib) {
    const read = (p: number): GcPause[] => {
      try {
        return JSON.parse(readFileSync(join(gcDir, `gc-${p}.json`), 'utf8')) as GcPause[];
      } catch {
        return [];
      }
    };
    let hops: Map<number, [number, number]> | null = null;
    try {
      const rows = JSON.parse(readFileSync(join(gcDir, `probe-${pid}.json`), 'utf8')) as Array<[number, number, number]>;
      hops = new Map(rows.map(([t, r, w]) => [t, [r, w]]));
    } catch {
      // no --probe: no per-hop split
    }
    attribText = gcAttribution(
      [
        ['server', read(pid)],
        ['client', read(cl.pid!)],
        ['publisher', [...publisherPauses()]],
      ],
      latWindow,
      slowPairs,
      hops,
    );
    // C1M_ATTRIB_DUMP=<file>: the raw data too (µs since the epoch; monoMinusEpochUs maps them to CLOCK_MONOTONIC,
    // the clock of `perf sched record -k CLOCK_MONOTONIC`), for a look at the timeline by hand.
    if (process.env.C1M_ATTRIB_DUMP) {
      const monoMinusEpochUs = Number(process.hrtime.bigint() / 1000n) - nowMicros();
      const dump = { latWindow, slowPairs, monoMinusEpochUs, server: read(pid), client: read(cl.pid!), publisher: publisherPauses(), hops: hops ? [...hops] : null };
      writeFileSync(process.env.C1M_ATTRIB_DUMP, JSON.stringify(dump));
    }
    rmSync(gcDir, { recursive: true, force: true });
  }
  clearTimeout(hardStop);

  const idle = rows[0]!;
  const mid = rows[1]!;
  const full = rows[2]!;
  const fmt = (n: number, d = 1): string => n.toFixed(d).padStart(9);
  process.stdout.write(
    `\nnode ${process.version}, server flags '${flags.join(' ')}', client flags '${clientFlags.join(' ')}'${values.env!.length ? ', env ' + values.env!.join(' ') : ''}; ` +
      `load avg at start ${loadStart}, at end ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}\n`,
  );
  process.stdout.write(`${'state'.padEnd(34)} ${'streams'.padStart(8)} ${'RSS MB'.padStart(9)} ${'PSS MB'.padStart(9)} ${'anon MB'.padStart(9)} ${'heap MB'.padStart(9)} ${'RSS KB/c'.padStart(9)} ${'PSS KB/c'.padStart(9)}\n`);
  for (const row of rows) {
    const per = (kb: number): string => (row.conns ? fmt(kb / row.conns, 2) : fmt(0, 2).replace(/0\.00/, '   -'));
    process.stdout.write(
      `${row.label.padEnd(34)} ${String(row.conns).padStart(8)} ${fmt(row.mem.rssKB / 1024)} ${fmt(row.mem.pssKB / 1024)} ${fmt(row.mem.anonKB / 1024)} ${fmt(row.heapMB)} ${per(row.mem.rssKB)} ${per(row.mem.pssKB)}\n`,
    );
  }
  const dc = full.conns - mid.conns;
  process.stdout.write(
    `marginal ${mid.conns}→${full.conns}: RSS ${((full.mem.rssKB - mid.mem.rssKB) / dc).toFixed(2)} KB/conn, PSS ${((full.mem.pssKB - mid.mem.pssKB) / dc).toFixed(2)} KB/conn; ` +
      `over idle 0→${full.conns}: RSS ${((full.mem.rssKB - idle.mem.rssKB) / full.conns).toFixed(2)} KB/conn, anon ${((full.mem.anonKB - idle.mem.anonKB) / full.conns).toFixed(2)} KB/conn; ` +
      `after all closed: ${end.connections} streams, ${end.ids} ids in the router\n`,
  );
  process.stdout.write(lat);
  process.stdout.write(attribText);
  for (const l of probeLines) process.stdout.write(l + '\n');
  process.stdout.write(fan);
  process.stdout.write(`messages in ${st.messagesIn}, chunks out ${st.chunksOut}, chunks dropped ${st.chunksDropped}, writes ${st.writes}, slow drops ${st.slowDrops}\n`);
}

/**
 * The GC pauses of each process in the latency phase, and for the messages slower than SLOW_US: how many had a
 * pause of each process inside their flight [send stamp, client read], and the pause time that overlapped.
 */
function gcAttribution(
  procs: Array<[string, GcPause[]]>,
  [from, to]: [number, number],
  slow: number[],
  hops: Map<number, [number, number]> | null,
): string {
  let out = `GC pauses in the latency phase (${((to - from) / 1e6).toFixed(1)} s, every process, wall clock):\n`;
  for (const [name, all] of procs) {
    const inWin = all.filter(([s]) => s >= from && s <= to);
    const byKind = new Map<string, number[]>();
    for (const [, d, k] of inWin) {
      const key = GC_KINDS[k] ?? String(k);
      byKind.set(key, [...(byKind.get(key) ?? []), d]);
    }
    const parts = [...byKind].map(([k, ds]) => {
      ds.sort((a, b) => a - b);
      const total = ds.reduce((a, b) => a + b, 0);
      return `${k} ×${ds.length} (total ${(total / 1000).toFixed(1)} ms, median ${formatMicros(ds[ds.length >> 1]!)}, max ${formatMicros(ds[ds.length - 1]!)})`;
    });
    out += `  ${name.padEnd(9)} ${parts.length ? parts.join('; ') : 'none'}\n`;
  }
  const n = slow.length / 2;
  const hit = new Map<string, { msgs: number; us: number }>(procs.map(([name]) => [name, { msgs: 0, us: 0 }]));
  let none = 0;
  const worst: Array<{ lat: number; why: string }> = [];
  // With --probe: which hop was the longest: publisher → router.send, router.send → write, write → client read.
  const HOPS = ['publish→router', 'router→write', 'write→read'];
  const longest = [0, 0, 0];
  const longestNoGc = [0, 0, 0];
  const hopSums = [0, 0, 0];
  for (let i = 0; i < slow.length; i += 2) {
    const s = slow[i]!;
    const e = slow[i + 1]!;
    const why: string[] = [];
    for (const [name, all] of procs) {
      let us = 0;
      for (const [ps, d, k] of all) {
        const overlap = Math.min(e, ps + d) - Math.max(s, ps);
        if (overlap > 0) {
          us += overlap;
          why.push(`${name} ${GC_KINDS[k] ?? k} ${formatMicros(d)}`);
        }
      }
      if (us > 0) {
        const h = hit.get(name)!;
        h.msgs++;
        h.us += us;
      }
    }
    if (why.length === 0) none++;
    const hop = hops?.get(s);
    let split = '';
    if (hop && hop[1] > 0) {
      const parts = [hop[0] - s, hop[1] - hop[0], e - hop[1]];
      const k = parts.indexOf(Math.max(...parts));
      longest[k]!++;
      if (why.length === 0) longestNoGc[k]!++;
      for (let j = 0; j < 3; j++) hopSums[j]! += parts[j]!;
      split = ` ${parts.map(formatMicros).join('/')}`;
    }
    worst.push({ lat: e - s, why: (why.join(', ') || 'no GC') + split });
  }
  worst.sort((a, b) => b.lat - a.lat);
  out +=
    `  ${n} messages slower than ${formatMicros(SLOW_US)}: a GC pause inside their flight in ` +
    [...hit].map(([name, h]) => `${name} ${h.msgs} (${h.msgs ? formatMicros(h.us / h.msgs) : '0us'} of pause each)`).join(', ') +
    `; none in ${none}\n`;
  if (hops) {
    out +=
      `  longest hop of those (publish→router / router→write / write→read): ${longest.join(' / ')}; of the ${none} without GC: ${longestNoGc.join(' / ')}; ` +
      `mean per hop ${hopSums.map((x) => formatMicros(x / Math.max(1, n))).join(' / ')} (${HOPS.join(', ')})\n`;
  }
  out += `  slowest: ${worst.slice(0, 8).map((w) => `${formatMicros(w.lat)} [${w.why}]`).join('; ')}\n`;
  return out;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench-mem: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
