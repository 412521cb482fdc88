// End to end: a small real bench (reference server, memlog, floodtest and msggen as child processes) must produce
// every file of the run folder with counts that agree. Also the pure parts it relies on (URLs, flag → options).
import { strict as assert } from 'node:assert';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { parseLog } from '../memlog/row.js';
import { benchOptions, PRESETS } from './options.js';
import { buildUrls, serverProcsOf, startBench, type BenchHandle } from './run.js';
import type { Summary } from './summary.js';
import { SERVER_NODE_FLAGS } from '../server/node-flags.js';

describe('buildUrls', () => {
  it('spreads ids 1..n round-robin over hosts, then ports', () => {
    assert.equal(buildUrls('http://{host}:{port}/test/{id}', 5, ['127.0.0.1', '127.0.0.2'], [8000, 8001]),
      'http://127.0.0.1:8000/test/1\nhttp://127.0.0.2:8000/test/2\nhttp://127.0.0.1:8001/test/3\nhttp://127.0.0.2:8001/test/4\nhttp://127.0.0.1:8000/test/5\n');
    assert.equal(buildUrls('http://127.0.0.1:8080/sub/{id}', 2, ['x'], [1]), 'http://127.0.0.1:8080/sub/1\nhttp://127.0.0.1:8080/sub/2\n');
  });
});

describe('serverProcsOf', () => {
  it('reads --workers from the server flags', () => {
    assert.equal(serverProcsOf([], 10_000), 1);
    assert.equal(serverProcsOf(['--workers', '4'], 10_000), 4);
    assert.equal(serverProcsOf(['--workers=3'], 10_000), 3);
    assert.equal(serverProcsOf(['--workers', 'auto'], 100_000), 6); // 100,000 / 18,000 rounded up, ≥ the cores
  });
});

describe('bench flags', () => {
  const quiet = (): void => {};
  it('defaults are the seed\'s C10K work, short: 10,000 connections, 100 × 10 msg/s, 2 minutes', () => {
    const o = benchOptions([], quiet);
    assert.ok(o !== 'help');
    assert.equal(o.conns, 10_000);
    assert.equal(o.procs * o.rate, 1000);
    assert.equal(o.durationMs, 120_000);
    assert.deepEqual(o.destHosts, ['127.0.0.1']);
    assert.match(o.out, /^runs\/bench-\d{8}-\d{6}$/);
  });
  it('presets, and explicit flags over them', () => {
    const c10k = benchOptions(['--preset', 'c10k'], quiet);
    assert.ok(c10k !== 'help');
    assert.equal(c10k.durationMs, PRESETS.c10k.durationMs);
    assert.equal(c10k.procs, 100);
    assert.equal(c10k.rate, 10);
    const soak = benchOptions(['--preset', 'soak', '--duration', '30m', '--conns', '2000'], quiet);
    assert.ok(soak !== 'help');
    assert.equal(soak.durationMs, 1_800_000);
    assert.equal(soak.conns, 2000);
    const big = benchOptions(['--preset', 'c100k'], quiet);
    assert.ok(big !== 'help');
    assert.equal(big.destHosts.length, 8);
  });
  it('--msg-rate splits into workers; --procs with --msg-rate sets the per-worker rate', () => {
    const a = benchOptions(['--msg-rate', '50'], quiet);
    assert.ok(a !== 'help');
    assert.deepEqual([a.procs, a.rate], [50, 1]);
    const b = benchOptions(['--msg-rate', '2000', '--procs', '40'], quiet);
    assert.ok(b !== 'help');
    assert.deepEqual([b.procs, b.rate], [40, 50]);
  });
  it('bad flags name the flag and what is allowed', () => {
    assert.throws(() => benchOptions(['--conns', '0'], quiet), /--conns: 0 is out of range \(allowed: 1 to 1000000\)/);
    assert.throws(() => benchOptions(['--preset', 'c1m'], quiet), /--preset: 'c1m' is not one of c10k, c100k, soak/);
    assert.throws(() => benchOptions(['--msg-rate', '100', '--procs', '10', '--rate', '5'], quiet), /--msg-rate: 100 disagrees/);
    assert.throws(() => benchOptions(['--server-cmd', 'nginx'], quiet), /--url-template: is required/);
    assert.throws(() => benchOptions(['--publish-template', 'http://h:1/pub'], quiet), /--publish-template: 'http:\/\/h:1\/pub' must be an http\(s\) URL with \{id\}/);
    assert.throws(() => benchOptions(['--publish-template', 'ftp://h:1/pub?id={id}'], quiet), /--publish-template: .* must be an http\(s\) URL/);
    assert.throws(() => benchOptions(['--publish-template', 'http://h:1/pub?id={id}', '--publish-target', 'http://h:2'], quiet), /--publish-template: give either/);
    assert.throws(() => benchOptions(['--server-cmd', 'nginx', '--url-template', 'http://h:1/sub/{id}'], quiet), /--publish-template: is required/);
  });
  it('--publish-template: /send/{id} publishes to that origin; any other template goes to msggen as is', () => {
    const a = benchOptions(['--publish-template', 'http://127.0.0.1:9001/send/{id}'], quiet);
    assert.ok(a !== 'help');
    assert.deepEqual([a.publishTarget, a.publishTemplate], ['http://127.0.0.1:9001', undefined]);
    const b = benchOptions(['--server-cmd', 'nginx', '--url-template', 'http://127.0.0.1:8080/sub/{id}', '--publish-template', 'http://127.0.0.1:8080/pub?id={id}'], quiet);
    assert.ok(b !== 'help');
    assert.deepEqual([b.publishTarget, b.publishTemplate], [undefined, 'http://127.0.0.1:8080/pub?id={id}']);
  });
});

describe('c1m CLI', () => {
  const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 10_000 });
  it('--help for each subcommand; bad flags and subcommands exit 2 naming them', () => {
    for (const sub of [[], ['bench'], ['preflight'], ['compare']]) {
      const r = run(...sub, '--help');
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /c1m/);
    }
    const bad = run('bench', '--duration', '0s');
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /^c1m: --duration: 0s is out of range \(1s to 720h\)/);
    const unknown = run('bench', '--conn', '5');
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /--conn/);
    const sub = run('benchmark');
    assert.equal(sub.status, 2);
    assert.match(sub.stderr, /unknown subcommand 'benchmark' \(allowed: preflight, bench, compare\)/);
  });
});

describe('c1m bench end to end', () => {
  const dir = mkdtempSync(join(tmpdir(), 'c1m-bench-'));
  let handle: BenchHandle | undefined;
  after(async () => {
    await handle?.stop('test cleanup').catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  it('300 connections, 100 msg/s for 2 s: every file, and the counts agree', { timeout: 60_000 }, async () => {
    const lines: string[] = [];
    handle = startBench({
      conns: 300,
      connectRate: 1000,
      procs: 10,
      rate: 10,
      durationMs: 2000,
      out: dir,
      destHosts: ['127.0.0.1'],
      settleMs: 500,
      idleMs: 300,
      drainTimeoutMs: 5000,
      memIntervalMs: 250,
      serverFlags: [],
      floodtestFlags: [],
      msggenFlags: [],
      preflightStops: true,
      argv: ['test'],
      log: (l) => lines.push(l),
    });
    const r = await handle.done;
    const s: Summary = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8'));
    for (const f of ['manifest.json', 'summary.json', 'summary.md', 'mem.tsv', 'flood.ndjson', 'msggen.ndjson', 'stats.ndjson', 'mem.svg', 'mem.png', 'latency.svg', 'latency.png']) {
      assert.ok(existsSync(join(dir, f)), `${f} written`);
      assert.ok(r.files.includes(f), `${f} listed`);
    }
    assert.deepEqual(s.incidents, [], lines.join('\n'));
    // Connections: all asked were reached and held.
    assert.equal(s.conns.reached, 300);
    assert.equal(s.conns.closed, 0);
    // sent = acked = accepted by the server; every accepted message reached its (connected) id.
    const m = s.messages;
    assert.ok(m.sent !== null && m.sent >= 150, `sent ${m.sent}`);
    assert.equal(m.acked, m.sent);
    assert.equal(m.accepted, m.sent);
    assert.equal(m.delivered, m.sent);
    assert.equal(m.toNobody, 0);
    // Chunks written by the server = chunks counted by floodtest = deliveries reported in the acks.
    assert.equal(m.chunksOut, m.chunksReceived);
    assert.equal(m.deliveredAcked, m.chunksOut);
    assert.ok(s.latency && s.latency.count === m.chunksReceived, 'every chunk carried a latency marker');
    // The latency chart's delivery panel is per second: floodtest's samples carry intervalLatency.
    assert.match(readFileSync(join(dir, 'latency.svg'), 'utf8'), /floodtest arrival \(percentiles per second\)/);
    // Memory figures come from memlog's samples of the server.
    const mem = parseLog(readFileSync(join(dir, 'mem.tsv'), 'utf8'));
    assert.ok(mem.length >= 4, `${mem.length} memlog rows`);
    assert.ok(mem.some((row) => row.conns === 300), 'memlog saw the 300 connections');
    assert.ok(s.memory.plateauRssKB! > s.memory.idleRssKB! * 0.9);
    assert.equal(s.memory.connsAtPlateau, 300);
    assert.ok(s.memory.ussIdleKB! > 0 && s.memory.ussPlateauKB! > 0 && s.memory.kbPerConnUssMarginal !== null);
    assert.ok(s.cpu.server !== undefined && s.cpu.floodtest !== undefined && s.cpu.msggen !== undefined);
    // The NDJSON logs are the tools' records; stats.ndjson has a snapshot per second with the phase.
    const flood = readFileSync(join(dir, 'flood.ndjson'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; chunks: number });
    assert.equal(flood[flood.length - 1]!.type, 'summary');
    assert.equal(flood[flood.length - 1]!.chunks, m.chunksReceived);
    const gen = readFileSync(join(dir, 'msggen.ndjson'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; sent: number });
    assert.equal(gen[gen.length - 1]!.type, 'summary');
    assert.equal(gen[gen.length - 1]!.sent, m.sent);
    const stats = readFileSync(join(dir, 'stats.ndjson'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { phase: string; connections: number });
    assert.ok(stats.some((x) => x.phase === 'messages' && x.connections === 300));
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { machine: { node: string; cpus: number }; preflight: { snapshot: { portRange: number[] } }; phases: Record<string, string | null> };
    assert.equal(manifest.machine.node, process.version);
    assert.ok(manifest.preflight.snapshot.portRange.length === 2);
    assert.ok(manifest.phases.msgStart && manifest.phases.end);
    assert.match(readFileSync(join(dir, 'summary.md'), 'utf8'), /\*\*VERDICT: /);
    // The server's flags and transport as it ran (its ready line), in the summary and the manifest.
    const derived = (manifest as unknown as { derived: { serverNodeFlags: string[]; serverTransport: string; serverWriter: string } }).derived;
    assert.deepEqual(derived.serverNodeFlags, [...SERVER_NODE_FLAGS]);
    assert.equal(derived.serverTransport, 'fd');
    assert.equal(derived.serverWriter, 'pool');
    assert.match(readFileSync(join(dir, 'summary.md'), 'utf8'), new RegExp(`server: reference comet-server, node ${SERVER_NODE_FLAGS.join(' ')}, transport fd`));
    // One progress line per second, each naming its phase.
    assert.ok(lines.some((l) => /^\[messages\] t=\d+s conns 300\/300/.test(l)), lines.join('\n'));
  });

  it('stopped mid-ramp (Ctrl-C): every child is stopped by PID, the folder is still written, the run is invalid', { timeout: 60_000 }, async () => {
    const dir2 = mkdtempSync(join(tmpdir(), 'c1m-bench-stop-'));
    const lines: string[] = [];
    let sawRamp!: () => void;
    const ramping = new Promise<void>((r) => (sawRamp = r));
    const h = startBench({
      conns: 300, connectRate: 30, procs: 10, rate: 10, durationMs: 2000, out: dir2, destHosts: ['127.0.0.1'],
      settleMs: 500, idleMs: 300, drainTimeoutMs: 2000, memIntervalMs: 250, serverFlags: [], floodtestFlags: [], msggenFlags: [],
      preflightStops: true, argv: ['test'],
      log: (l) => {
        lines.push(l);
        if (l.startsWith('[ramp]')) sawRamp();
      },
    });
    try {
      await Promise.race([ramping, new Promise((_, rej) => setTimeout(() => rej(new Error(`no ramp line: ${lines.join(' | ')}`)), 30_000).unref())]);
      const r = await h.stop('stopped by the test');
      assert.equal(r.summary.verdict.valid, false);
      assert.match(r.summary.verdict.line, /stopped by the test during the ramp phase/);
      assert.ok(r.summary.conns.reached! < 300);
      for (const f of ['manifest.json', 'summary.json', 'summary.md', 'mem.tsv', 'flood.ndjson', 'stats.ndjson']) assert.ok(existsSync(join(dir2, f)), f);
      const manifest = JSON.parse(readFileSync(join(dir2, 'manifest.json'), 'utf8')) as { derived: { pids: Record<string, number | null> } };
      const pids = Object.entries(manifest.derived.pids);
      assert.deepEqual(pids.map(([k, v]) => [k, v === null]), [['server', false], ['memlog', false], ['floodtest', false], ['msggen', true]]);
      for (const [name, pid] of pids) {
        if (pid === null) continue;
        assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `${name} (pid ${pid}) still running`);
      }
    } finally {
      await h.stop('test cleanup').catch(() => undefined);
      rmSync(dir2, { recursive: true, force: true });
    }
  });
});
