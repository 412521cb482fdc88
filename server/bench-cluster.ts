// The worker bus's cost: CPU of the primary and of the workers per message, and IPC batches, at a fixed rate and at
// the highest rate, for several worker counts. Publishes in-process through the primary (no HTTP), to ids spread
// over the workers, each held by one stream of this process. Prints a table; not a test.
//   flock /tmp/c1m-bench.lock node dist/server/bench-cluster.js [--conns 2000] [--workers 2,4,6] [--seconds 5]
import { readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { startCluster } from './cluster.js';

const { values } = parseArgs({ options: { conns: { type: 'string', default: '2000' }, workers: { type: 'string', default: '2,4,6' }, seconds: { type: 'string', default: '5' } } });
const CONNS = Number(values.conns);
const WORKERS = values.workers!.split(',').map(Number);
const SECONDS = Number(values.seconds);
const TICK = 100 / 1; // clock ticks per second on Linux

const CLIENTS = `
const net = require('node:net');
const [port, n] = process.argv.slice(1).map(Number);
(async () => {
  for (let id = 1; id <= n; id++) {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.on('data', () => {});
    s.on('error', () => {});
    s.write('GET /test/' + id + ' HTTP/1.1\\r\\nHost: b\\r\\n\\r\\n');
    if (id % 200 === 0) await new Promise((r) => setTimeout(r, 20));
  }
})();
setTimeout(() => process.exit(0), 600000);
`;

function cpuSec(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / TICK;
}

async function phase(srv: Awaited<ReturnType<typeof startCluster>>, rate: number | 'max' | 'idle', seconds: number) {
  const pids = [process.pid, ...srv.workerPids()];
  const cpu0 = pids.map(cpuSec);
  const b0 = srv.workerPids().map((_, s) => srv.hub.counters(s)!.batchesOut);
  const t0 = performance.now();
  let sent = 0;
  let reached = 0;
  const end = t0 + seconds * 1000;
  if (rate === 'idle') {
    // No messages: the workers' and primary's baseline (timers, the 1 s stats poll, GC).
    await new Promise((r) => setTimeout(r, seconds * 1000));
  } else if (rate === 'max') {
    // A window of 2,000 publishes in flight: the primary is never idle.
    const inflight = new Set<Promise<void>>();
    while (performance.now() < end) {
      while (inflight.size < 2000) {
        const id = 1 + (sent++ % CONNS);
        const p: Promise<void> = srv.publish(id, `m${sent}`).then((n) => {
          reached += n;
          inflight.delete(p);
        });
        inflight.add(p);
      }
      await Promise.race(inflight);
    }
    await Promise.all(inflight);
  } else {
    // Fixed rate, paced per millisecond.
    while (performance.now() < end) {
      const due = Math.floor(((performance.now() - t0) / 1000) * rate);
      const ps: Promise<number>[] = [];
      while (sent < due) ps.push(srv.publish(1 + (sent++ % CONNS), `m${sent}`));
      for (const n of await Promise.all(ps)) reached += n;
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  const sec = (performance.now() - t0) / 1000;
  const cpu = pids.map((p, i) => cpuSec(p) - cpu0[i]!);
  const batches = srv.workerPids().reduce((a, _, s) => a + srv.hub.counters(s)!.batchesOut - b0[s]!, 0);
  return { sent, reached, sec, primaryPct: (100 * cpu[0]!) / sec, workersPct: (100 * cpu.slice(1).reduce((a, b) => a + b, 0)) / sec, batches };
}

async function main(): Promise<void> {
  console.log(`# worker bus cost: ${CONNS} streams (one id each), in-process publish through the primary, ${SECONDS} s per phase`);
  console.log('workers\trate\tmsgs/s\treached\tprimary CPU %\tworkers CPU %\tprimary µs/msg\tworkers µs/msg\tIPC batches/s\tmsgs per batch');
  for (const w of WORKERS) {
    const srv = await startCluster({ workers: w, host: '127.0.0.1', port: 0, controlPort: 0 });
    // The streams live in a child process, so that this process (the primary) measures only the primary's work.
    const clients = spawn(process.execPath, ['-e', CLIENTS, String(srv.port), String(CONNS)], { stdio: 'ignore' });
    while (srv.hub.idCount < CONNS) await new Promise((r) => setTimeout(r, 50));
    for (const rate of ['idle', 1000, 'max'] as const) {
      const r = await phase(srv, rate, SECONDS);
      const mps = Math.max(r.sent, 1) / r.sec;
      console.log(
        [w, rate, Math.round(mps), `${r.reached}/${r.sent}`, r.primaryPct.toFixed(1), r.workersPct.toFixed(1),
          ((r.primaryPct * 1e4) / mps).toFixed(1), ((r.workersPct * 1e4) / mps).toFixed(1), Math.round(r.batches / r.sec), (r.sent / Math.max(1, r.batches)).toFixed(1)].join('\t'),
      );
    }
    clients.kill('SIGKILL');
    await srv.stop();
  }
}

void main();
