import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { checkPreflight, formatReport, type Check, type PreflightReport, type Topology } from './preflight.js';
import { parseNofile, readSnapshot } from './procfs.js';

const fixture = (name: string): string => fileURLToPath(new URL(`../../bench/fixtures/${name}`, import.meta.url));
const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));

const topo = (over: Partial<Topology> = {}): Topology => ({
  conns: 10_000,
  serverProcs: 1,
  clientProcs: 1,
  destHosts: ['127.0.0.1'],
  destPorts: [8000],
  connectRate: 1000,
  ...over,
});
const check = (r: PreflightReport, id: string): Check => {
  const c = r.checks.find((x) => x.id === id);
  assert.ok(c, `check ${id} present`);
  return c;
};

describe('procfs reader', () => {
  it('reads every value from a /proc fixture tree', async () => {
    const s = await readSnapshot({ procRoot: fixture('proc-ok') });
    assert.deepEqual(s.selfNofile, { soft: 20000, hard: 20000 });
    assert.equal(s.nrOpen, 1048576);
    assert.equal(s.fileMax, 2466183);
    assert.equal(s.fileAllocated, 513);
    assert.deepEqual(s.portRange, [32768, 60999]);
    assert.equal(s.somaxconn, 4096);
    assert.equal(s.tcpMaxSynBacklog, 2048);
    assert.deepEqual(s.tcpMem, [287901, 383869, 575802]);
    assert.deepEqual(s.tcpRmem, [4096, 131072, 33554432]);
    assert.deepEqual(s.tcpWmem, [4096, 16384, 4194304]);
    assert.deepEqual(s.conntrack, { max: 262144, count: 0 });
    assert.equal(s.memTotalKB, 24684096);
    assert.equal(s.memAvailableKB, 24326516);
    assert.equal(s.server, undefined);
  });

  it('reads a server pid\'s limits and leaves missing files undefined', async () => {
    const s = await readSnapshot({ procRoot: fixture('proc-short'), serverPid: 4242 });
    assert.deepEqual(s.server, { pid: 4242, nofile: { soft: 8192, hard: 8192 } });
    const m = await readSnapshot({ procRoot: fixture('proc-minimal'), serverPid: 1 });
    assert.deepEqual(m.selfNofile, { soft: Infinity, hard: Infinity });
    assert.equal(m.server?.nofile, undefined);
    assert.equal(m.portRange, undefined);
    assert.equal(m.conntrack, undefined, 'no nf_conntrack_max file means conntrack is not loaded');
  });

  it('parses the open-files line of a limits file', () => {
    assert.deepEqual(parseNofile('Max open files            1024                 4096                 files     \n'), { soft: 1024, hard: 4096 });
    assert.equal(parseNofile('Max processes 1 2 processes\n'), undefined);
    assert.equal(parseNofile(undefined), undefined);
  });
});

describe('checkPreflight', () => {
  it('this machine holds C10K on one address:port; the ephemeral range bounds it at 14,116', async () => {
    const r = checkPreflight(await readSnapshot({ procRoot: fixture('proc-ok') }), topo());
    assert.equal(r.canReach, true);
    assert.equal(r.allOk, true);
    assert.equal(r.reachable, 14_116); // (60999 - 32768 + 1) / 2
    assert.ok(r.checks.every((c) => c.status === 'ok'), formatReport(r));
    assert.match(formatReport(r), /reaches 14,116 connections as configured \(asked 10,000\): OK/);
  });

  it('100k on one server process and one destination: names the flags that fix it', async () => {
    const r = checkPreflight(await readSnapshot({ procRoot: fixture('proc-ok') }), topo({ conns: 100_000, clientProcs: 6 }));
    assert.equal(r.canReach, false);
    assert.equal(r.reachable, 14_116);
    const server = check(r, 'nofile-server');
    assert.equal(server.status, 'short');
    assert.equal(server.fixes[0], '--server-procs 6'); // 100,000 / (20,000 - 100)
    const ports = check(r, 'ephemeral-ports');
    assert.equal(ports.status, 'short');
    assert.deepEqual(ports.fixes.slice(0, 2), ['--dest-hosts 127.0.0.1-127.0.0.8', '--dest-ports 8000-8007']);
    assert.equal(check(r, 'nofile-client').status, 'ok');
    const text = formatReport(r);
    assert.match(text, /SHORT/);
    assert.match(text, /ephemeral ports: --dest-hosts 127\.0\.0\.1-127\.0\.0\.8 {3}or {3}--dest-ports 8000-8007/);
  });

  it('100k spread over 8 addresses and 6 server processes is reachable here', async () => {
    const hosts = Array.from({ length: 8 }, (_, i) => `127.0.0.${i + 1}`);
    const r = checkPreflight(await readSnapshot({ procRoot: fixture('proc-ok') }), topo({ conns: 100_000, serverProcs: 6, clientProcs: 6, destHosts: hosts }));
    assert.equal(r.canReach, true, formatReport(r));
    assert.equal(check(r, 'ephemeral-ports').maxConns, 14_116 * 8);
    assert.equal(r.reachable, 112_928); // ports bound it before open files (6 × 19,900 = 119,400)
  });

  it('a tight machine: every shortfall with its exact fix', async () => {
    const r = checkPreflight(await readSnapshot({ procRoot: fixture('proc-short'), serverPid: 4242 }), topo());
    assert.equal(r.canReach, false);
    assert.equal(r.reachable, 3_996);
    // Client: soft 1024, hard 4096; Node raises soft to hard, so 3,996 per process.
    assert.deepEqual(check(r, 'nofile-client').fixes, [
      '--client-procs 3',
      "ulimit -Hn 10100 && ulimit -n 10100   # as root, or raise 'nofile' in /etc/security/limits.conf",
    ]);
    // Server given by pid: its current soft limit 8192 counts.
    const srv = check(r, 'nofile-server');
    assert.equal(srv.maxConns, 8_092);
    assert.equal(srv.fixes[0], '--server-procs 2');
    assert.deepEqual(check(r, 'ephemeral-ports').fixes, [
      '--dest-hosts 127.0.0.1-127.0.0.2',
      '--dest-ports 8000-8001',
      'sysctl -w net.ipv4.ip_local_port_range="1024 65535"',
    ]);
    // 10,000 × 2 ends × 8 KiB = 40,000 pages > high 16,384.
    assert.deepEqual(check(r, 'tcp-mem').fixes, ['sysctl -w net.ipv4.tcp_mem="40000 50000 60000"']);
    assert.equal(check(r, 'tcp-mem').maxConns, 4_096);
    assert.equal(check(r, 'conntrack').status, 'ok');
    assert.equal(check(r, 'memory').status, 'ok');
    assert.equal(check(r, 'somaxconn').status, 'ok');
  });

  it('backlog shortfalls at a high connect rate are warnings that do not lower N', async () => {
    const r = checkPreflight(await readSnapshot({ procRoot: fixture('proc-short') }), topo({ conns: 500, connectRate: 5000 }));
    assert.equal(r.canReach, true);
    assert.equal(r.allOk, false);
    assert.deepEqual(check(r, 'somaxconn').fixes, ['sysctl -w net.core.somaxconn=512', '--connect-rate 1280']);
    assert.deepEqual(check(r, 'syn-backlog').fixes, ['sysctl -w net.ipv4.tcp_max_syn_backlog=512', '--connect-rate 1280']);
    assert.match(formatReport(r), /OK, with warnings below/);
  });

  it('conntrack, file-max and memory shortfalls', async () => {
    const s = await readSnapshot({ procRoot: fixture('proc-short') });
    const r = checkPreflight(s, topo({ conns: 70_000, clientProcs: 20, serverProcs: 20, destHosts: ['127.0.0.1', '127.0.0.2'], destPorts: [8000, 8001, 8002, 8003, 8004, 8005, 8006] }));
    const ct = check(r, 'conntrack');
    assert.equal(ct.status, 'short');
    assert.equal(ct.maxConns, 64_536);
    assert.deepEqual(ct.fixes, ['sysctl -w net.netfilter.nf_conntrack_max=89000']); // 1,000 + 70,000 + 17,500 rounded up to a thousand
    const fm = check(r, 'file-max');
    assert.equal(fm.status, 'short');
    assert.deepEqual(fm.fixes, ['sysctl -w fs.file-max=150000']); // 2,000 used + 140,000 + 43 × 100 = 146,300, rounded up
    const mem = check(r, 'memory');
    assert.equal(mem.status, 'short');
    assert.match(mem.fixes[0]!, /^--conns \d+$/);
    assert.ok(mem.maxConns! < 70_000);
  });

  it('unreadable values are unknown, never a claimed shortfall', async () => {
    const r = checkPreflight(await readSnapshot({ procRoot: fixture('proc-minimal') }), topo({ conns: 1000 }));
    assert.equal(r.canReach, true);
    assert.equal(r.reachable, 1000);
    assert.equal(check(r, 'ephemeral-ports').status, 'unknown');
    assert.equal(check(r, 'memory').status, 'unknown');
    assert.equal(r.checks.find((c) => c.id === 'conntrack'), undefined);
  });
});

describe('c1m preflight CLI', () => {
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, 'preflight', ...args], { encoding: 'utf8', timeout: 10_000 });

  it('--strict exits 1 when N cannot be reached, 0 when it can', () => {
    const short = run('--proc-root', fixture('proc-short'), '--strict');
    assert.equal(short.status, 1, short.stderr);
    assert.match(short.stdout, /sysctl -w net\.ipv4\.tcp_mem="40000 50000 60000"/);
    const ok = run('--proc-root', fixture('proc-ok'), '--strict', '--conns', '5000');
    assert.equal(ok.status, 0, ok.stderr);
    const lax = run('--proc-root', fixture('proc-short'));
    assert.equal(lax.status, 0);
  });

  it('--json carries the snapshot and the checks', () => {
    const out = run('--proc-root', fixture('proc-short'), '--json', '--conns', '2000');
    assert.equal(out.status, 0, out.stderr);
    const j = JSON.parse(out.stdout) as { snapshot: { portRange: number[] }; reachable: number; canReach: boolean; checks: Check[] };
    assert.deepEqual(j.snapshot.portRange, [50000, 60999]);
    assert.equal(j.canReach, true);
    assert.ok(j.checks.length >= 9);
  });

  it('a bad flag names the flag and the allowed range, exit 2', () => {
    const bad = run('--conns', '0');
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--conns: 0 is out of range \(allowed: 1 to 10000000\)/);
    const unknown = run('--nope');
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /--nope/);
  });
});
