// Benchmark of memlog's connection count: how long one sample's socket work takes.
//
//   node dist/memlog/bench.js [--lines 1000000] [--runs 5] [--real 0]
//
// Part 1 writes a synthetic /proc/net/tcp-format file (the kernel's exact line format, 150 bytes a line) and times
// TcpTableScanner over it, against a naive split-and-regex scan for comparison. Part 2 (with --real N) opens N real
// loopback connections to a child server and times the whole pipeline on the real /proc: the kernel generating the
// table, the scan, and the fd → inode ownership pass cold (every readlink) and warm (cached). Prints tables.
// Run part 2 under `flock /tmp/c1m-bench.lock` when N is in the thousands.

import { parseArgs } from 'node:util';
import { openSync, writeSync, closeSync, readFileSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { spawn, spawnSync } from 'node:child_process';
import { InodeTable, TcpTableScanner, SocketOwnership, FLAG_COUNTED, type ScanCounts } from './tcptable.js';
import { parseIntFlag } from '../lib/flags.js';
import { startRecorder } from './recorder.js';
import { timeIt, formatTimes } from './timing.js';

const hex = (n: number, w: number): string => n.toString(16).toUpperCase().padStart(w, '0');

/** One line as net/ipv4/tcp_ipv4.c get_tcp4_sock prints it, padded to 149 characters plus the newline. */
function tcp4Line(sl: number, local: [number, number], remote: [number, number], state: number, inode: number): string {
  const s = `${String(sl).padStart(4)}: ${hex(local[0], 8)}:${hex(local[1], 4)} ${hex(remote[0], 8)}:${hex(remote[1], 4)} ${hex(state, 2)} ` +
    `00000000:00000000 00:00000000 00000000 ${String(1000).padStart(5)} ${String(0).padStart(8)} ${inode} 1 0000000000000000 20 4 30 10 -1`;
  return s.padEnd(149) + '\n';
}

function writeSynthetic(path: string, lines: number, serverShare: number): void {
  const fd = openSync(path, 'w');
  const header = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode'.padEnd(149) + '\n';
  writeSync(fd, header);
  const loop = 0x0100007f; // 127.0.0.1 as the kernel prints it (little-endian)
  let batch = '';
  for (let i = 0; i < lines; i++) {
    const inode = 100_000 + i;
    // A share of lines are the server's side (local port 8000); the rest are clients (remote port 8000), plus a few
    // listening and TIME_WAIT sockets, as on a host running both ends of the benchmark.
    const server = (i % 1000) < serverShare * 1000;
    const port = 32768 + (i % 28000);
    batch += i === 0 ? tcp4Line(i, [0, 8000], [0, 0], 0x0a, inode)
      : i % 997 === 0 ? tcp4Line(i, [loop, 8000], [loop, port], 0x06, 0)
      : server ? tcp4Line(i, [loop, 8000], [loop, port], 0x01, inode)
      : tcp4Line(i, [loop, port], [loop, 8000], 0x01, inode);
    if (batch.length > 1 << 20) {
      writeSync(fd, batch);
      batch = '';
    }
  }
  writeSync(fd, batch);
  closeSync(fd);
}

/** The slow way, for comparison: read as a string, split lines, regex each. */
function naiveScan(path: string, port: number): number {
  let n = 0;
  const re = /^\s*\d+: [0-9A-F]+:([0-9A-F]{4}) [0-9A-F]+:[0-9A-F]{4} ([0-9A-F]{2}) \S+ \S+ \S+ +\d+ +-?\d+ (\d+)/;
  for (const line of readFileSync(path, 'latin1').split('\n')) {
    const m = re.exec(line);
    if (m && parseInt(m[1]!, 16) === port && m[2] === '01' && m[3] !== '0') n++;
  }
  return n;
}

const fmt = (ms: number[]): string => formatTimes(ms, 1);

function synthetic(lines: number, runs: number): void {
  const path = join(tmpdir(), `memlog-bench-tcp-${process.pid}`);
  console.log(`# synthetic /proc/net/tcp, ${lines} lines (150 B each), ${runs} runs each, port 8000`);
  console.log('case\tlines\ton_port\testablished\ttime');
  try {
    for (const share of [0.5, 1.0]) {
      writeSynthetic(path, lines, share);
      readFileSync(path); // into the page cache
      const scanner = new TcpTableScanner([8000]);
      const table = new InodeTable();
      const { ms, result } = timeIt(runs, () => {
        table.clear();
        return scanner.scanFile(path, table);
      });
      const r = result as ScanCounts;
      console.log(`scanner, ${share * 100}% server side\t${r.lines}\t${r.onPorts}\t${r.established}\t${fmt(ms)}`);
      if (share === 0.5) {
        const naive = timeIt(Math.min(runs, 3), () => naiveScan(path, 8000));
        console.log(`naive split+regex, ${share * 100}% server side\t${r.lines}\t-\t${naive.result}\t${fmt(naive.ms)}`);
      }
    }
  } finally {
    unlinkSync(path);
  }
}

async function real(n: number, runs: number): Promise<void> {
  const server = spawn(process.execPath, ['-e', `
    const socks = [];
    const s = require('net').createServer((c) => { socks.push(c); c.on('error', () => {}); });
    s.listen(0, '127.0.0.1', () => process.stdout.write(s.address().port + '\\n'));`], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      server.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
      server.once('exit', () => reject(new Error('server child exited')));
    });
    const base = timeIt(runs, () => readFileSync(`/proc/${server.pid}/net/tcp`).length + readFileSync(`/proc/${server.pid}/net/tcp6`).length);
    const clients: net.Socket[] = [];
    const t0 = performance.now();
    for (let i = 0; i < n; i += 200) {
      await Promise.all(Array.from({ length: Math.min(200, n - i) }, () => new Promise<void>((resolve, reject) => {
        const c = net.connect({ port, host: '127.0.0.1' }, () => resolve());
        c.once('error', reject);
        clients.push(c);
      })));
    }
    console.log(`\n# real sockets: ${n} loopback connections to a child server (pid ${server.pid}), opened in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const scanner = new TcpTableScanner([port]);
    const table = new InodeTable();
    const procs = [{ pid: server.pid!, startTime: 0 }];
    // Wait until the server has accepted them all (the table is the ground truth here).
    for (let tries = 0; tries < 100; tries++) {
      table.clear();
      scanner.scanFile(`/proc/${server.pid}/net/tcp`, table);
      const own = new SocketOwnership().count(procs, table);
      if (own.established >= n) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    console.log('step\tlines\tcount\ttime');
    console.log(`kernel only, before connecting (hash-bucket walk baseline)\t${base.result} B\t-\t${fmt(base.ms)}`);
    const scan = timeIt(runs, () => {
      table.clear();
      const c = scanner.scanFile(`/proc/${server.pid}/net/tcp`, table);
      scanner.scanFile(`/proc/${server.pid}/net/tcp6`, table, c);
      return c;
    });
    console.log(`read+scan /proc/<pid>/net/tcp{,6} (kernel generation included)\t${scan.result.lines}\t${scan.result.established}\t${fmt(scan.ms)}`);
    const kernel = timeIt(runs, () => readFileSync(`/proc/${server.pid}/net/tcp`).length + readFileSync(`/proc/${server.pid}/net/tcp6`).length);
    console.log(`kernel only: readFileSync /proc/<pid>/net/tcp{,6}, no parsing\t${kernel.result} B\t-\t${fmt(kernel.ms)}`);
    const cold = timeIt(runs, () => new SocketOwnership().count(procs, clearCounted(table)));
    console.log(`ownership cold (readdir + readlink every fd)\t${cold.result.fds} fds\t${cold.result.established}\t${fmt(cold.ms)}`);
    const own = new SocketOwnership();
    own.count(procs, clearCounted(table));
    const warm = timeIt(runs, () => own.count(procs, clearCounted(table)));
    console.log(`ownership warm (readdir, cached links)\t${warm.result.fds} fds\t${warm.result.established}\t${fmt(warm.ms)}`);
    const whole = timeIt(runs, () => {
      table.clear();
      scanner.scanFile(`/proc/${server.pid}/net/tcp`, table);
      scanner.scanFile(`/proc/${server.pid}/net/tcp6`, table);
      return own.count(procs, table);
    });
    console.log(`whole warm sample (scan + ownership)\t-\t${whole.result.established}\t${fmt(whole.ms)}`);
    // For comparison: iproute2's ss asks the kernel over netlink (sock_diag) with the port filter applied in the kernel.
    const ss = timeIt(runs, () => {
      const r = spawnSync('ss', ['-tnHe', 'state', 'established', `( sport = :${port} )`], { encoding: 'latin1', maxBuffer: 1 << 30 });
      return r.status === 0 ? r.stdout.split('\n').filter(Boolean).length : -1;
    });
    if (ss.result >= 0) console.log(`for comparison: ss -tnHe state established '( sport = :port )' (netlink, spawned)\t-\t${ss.result}\t${fmt(ss.ms)}`);
    const rec = startRecorder({ pid: server.pid!, ports: [port], intervalMs: 3_600_000, out: null });
    const full = timeIt(runs, () => rec.sampleNow()!.conns);
    await rec.stop();
    console.log(`whole recorder sample (sampleNow: stat, PSS, tree, sockstat, connections)\t-\t${full.result}\t${fmt(full.ms)}`);
    // The kernel's cost per table line, all in (the table holds every socket of the namespace, other users' too).
    const perLine = kernel.ms[kernel.ms.length >> 1]! / scan.result.lines;
    const perFdCold = cold.ms[cold.ms.length >> 1]! / cold.result.fds;
    const perFdWarm = warm.ms[warm.ms.length >> 1]! / warm.result.fds;
    console.log(`kernel per table line ${(perLine * 1000).toFixed(2)} µs; per fd cold ${(perFdCold * 1000).toFixed(2)} µs, warm ${(perFdWarm * 1000).toFixed(2)} µs`);
    console.log(`linear extrapolation to 1M server connections: table ${(perLine * 1e6).toFixed(0)} ms (clients elsewhere) or ` +
      `${(perLine * 2e6).toFixed(0)} ms (1M client ends on the same host too) + warm ownership ${(perFdWarm * 1e6).toFixed(0)} ms (cold ${(perFdCold * 1e6).toFixed(0)} ms)`);
    for (const c of clients) c.destroy();
  } finally {
    server.kill();
  }
}

/** Clears FLAG_COUNTED from the previous pass so the same scan can be counted again. */
function clearCounted(table: InodeTable): InodeTable {
  table.clearFlag(FLAG_COUNTED);
  return table;
}

const { values } = parseArgs({ options: { lines: { type: 'string', default: '1000000' }, runs: { type: 'string', default: '5' }, real: { type: 'string', default: '0' } }, strict: true });
const lines = parseIntFlag('--lines', values.lines!, 1, 5_000_000);
const runs = parseIntFlag('--runs', values.runs!, 1, 100);
const n = parseIntFlag('--real', values.real!, 0, 19_000);
if (lines > 0) synthetic(lines, runs);
if (n > 0) await real(n, runs);
