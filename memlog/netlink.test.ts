import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import {
  portRanges, portFilter, loadSockDiag, BpfSource, NetlinkSource, ProcSource, openSocketSource, SocketSourceError, nativeFdReader, kernelLayout,
  AF_INET, AF_INET6, BC_JMP, BC_S_EQ, BC_S_GE, BC_S_LE, TCPF_ESTABLISHED, TCPF_LISTEN, type SocketSource,
} from './netlink.js';
import { InodeTable, SocketOwnership, fsFdReader, FLAG_ESTABLISHED, FLAG_PRESENT, type FdReader } from './tcptable.js';
import { readStat } from './proc.js';
import { readFileSync, statSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * The kernel's two passes over a filter program, transcribed from net/ipv4/inet_diag.c: inet_diag_bc_audit (run
 * once when the request arrives; a program it rejects fails the whole dump with EINVAL) and inet_diag_bc_run (per
 * socket; only the local-port ops are modelled). An independent check of portFilter's jump arithmetic.
 */
function ops(bc: Uint8Array, at: number): { code: number; yes: number; no: number } {
  const v = new DataView(bc.buffer, bc.byteOffset);
  return { code: v.getUint8(at), yes: v.getUint8(at + 1), no: v.getUint16(at + 2, true) };
}
function validCc(bc: Uint8Array, len: number, cc: number): boolean {
  let at = 0;
  while (len >= 0) {
    if (cc > len) return false;
    if (cc === len) return true;
    const { yes } = ops(bc, at);
    if (yes < 4 || yes & 3) return false;
    len -= yes;
    at += yes;
  }
  return false;
}
function audit(bc: Uint8Array): boolean {
  let len = bc.length;
  let at = 0;
  while (len > 0) {
    const op = ops(bc, at);
    let minLen = 4;
    if ([BC_S_EQ, BC_S_GE, BC_S_LE].includes(op.code)) {
      if (len < 8) return false;
      minLen = 8;
    } else if (op.code !== BC_JMP && op.code !== 0) return false;
    if (op.code !== 0) {
      if (op.no < minLen || op.no > len + 4 || op.no & 3) return false;
      if (op.no < len && !validCc(bc, bc.length, len - op.no)) return false;
    }
    if (op.yes < minLen || op.yes > len + 4 || op.yes & 3) return false;
    at += op.yes;
    len -= op.yes;
  }
  return true;
}
function run(bc: Uint8Array, sport: number): boolean {
  let len = bc.length;
  let at = 0;
  while (len > 0) {
    const op = ops(bc, at);
    const arg = at + 4 < bc.length ? ops(bc, at + 4).no : -1;
    const yes = op.code === BC_S_EQ ? sport === arg : op.code === BC_S_GE ? sport >= arg : op.code === BC_S_LE ? sport <= arg : op.code !== BC_JMP;
    const step = yes ? op.yes : op.no;
    len -= step;
    at += step;
  }
  return len === 0;
}

test('portRanges sorts, dedupes, merges neighbours and rejects ports outside 1-65535', () => {
  assert.deepEqual(portRanges([8003, 8000, 8001, 8001, 9000, 8002]), [[8000, 8003], [9000, 9000]]);
  assert.deepEqual(portRanges([1, 65535]), [[1, 1], [65535, 65535]]);
  assert.throws(() => portRanges([0]), /port 0 is not in 1-65535/);
  assert.throws(() => portRanges([65536]), RangeError);
  assert.throws(() => portRanges([80.5]), RangeError);
});

test('portFilter: exact bytes for one port and for a range', () => {
  // S_EQ 8000: yes 8 lands on the JMP; no 16 = 12 (past this range) + 4: reject; JMP's no 4 = to the end: accept.
  assert.deepEqual([...portFilter([8000])], [BC_S_EQ, 8, 16, 0, 0, 0, 0x40, 0x1f, BC_JMP, 4, 4, 0]);
  // S_GE 8000 (no → reject at 20 + 4), S_LE 8003 (no → 12 + 4 from its own offset), JMP to the end.
  assert.deepEqual([...portFilter([8000, 8001, 8002, 8003])], [
    BC_S_GE, 8, 24, 0, 0, 0, 0x40, 0x1f,
    BC_S_LE, 8, 16, 0, 0, 0, 0x43, 0x1f,
    BC_JMP, 4, 4, 0,
  ]);
});

test('portFilter passes the kernel audit and accepts exactly the listed ports (model of inet_diag)', () => {
  const cases: [string, number[]][] = [
    ['one port', [8000]],
    ['two neighbours become one range', [8000, 8001]],
    ['the ends of the port space', [1, 65535]],
    ['ranges and singles mixed', [5000, 8000, 8001, 8002, 9000, 9002, 9003]],
    ['many singles: jumps past 255 bytes go through the JMP ops', Array.from({ length: 40 }, (_, i) => 10_000 + 2 * i)],
  ];
  for (const [name, ports] of cases) {
    const bc = portFilter(ports);
    assert.ok(audit(bc), `${name}: audit`);
    const want = new Set(ports);
    const probe = new Set([1, 2, 4999, 5000, 5001, 7999, 8000, 8001, 8002, 8003, 8999, 9000, 9001, 9002, 9003, 9004, 65534, 65535, ...ports.map((p) => p + 1)]);
    for (let p = 9_990; p < 10_100; p++) probe.add(p);
    for (const p of probe) if (p <= 65535) assert.equal(run(bc, p), want.has(p), `${name}: port ${p}`);
  }
});

test('portFilter refuses a program too long for the 16-bit jumps', () => {
  const ports = Array.from({ length: 6000 }, (_, i) => 2 * i + 1);
  assert.throws(() => portFilter(ports), /too many port ranges/);
});

// --- The same cases for every socket source, against the real kernel. ---

const servers: net.Server[] = [];
const sockets: net.Socket[] = [];
after(() => {
  for (const s of sockets) s.destroy();
  for (const s of servers) s.close();
});

/** A server holding `n` connections from clients in this process; resolves with its port and accepted sockets. */
async function serve(n: number, host = '127.0.0.1'): Promise<{ port: number; accepted: net.Socket[]; clients: net.Socket[] }> {
  const accepted: net.Socket[] = [];
  const clients: net.Socket[] = [];
  const server = net.createServer();
  servers.push(server);
  server.listen(0, host);
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const all = new Promise<void>((resolve) => server.on('connection', (s) => {
    sockets.push(s);
    if (accepted.push(s) === n) resolve();
  }));
  for (let i = 0; i < n; i++) {
    const c = net.connect(port, host);
    sockets.push(c);
    clients.push(c);
  }
  await all;
  return { port, accepted, clients };
}

const addon = loadSockDiag();
const root = process.getuid?.() === 0;
/** Why the bpf iterator cannot be had here ('' when it loads): root with the addon built must get it. */
const bpfWhy = ((): string => {
  if (!addon.addon) return addon.reason;
  try {
    new BpfSource(addon.addon, [1]).close();
    return '';
  } catch (err) {
    return (err as Error).message;
  }
})();
// Every source made by a test is closed at the end (a bpf source holds a link fd).
const made: SocketSource[] = [];
after(() => made.forEach((s) => s.close()));
const keep = <S extends SocketSource>(s: S): S => (made.push(s), s);
const sources: [string, (ports: number[]) => SocketSource][] = [['proc', (ports) => new ProcSource('self', ports)]];
if (addon.addon) sources.push(['netlink', (ports) => new NetlinkSource(addon.addon!, ports)]);
if (!bpfWhy) {
  sources.push(['bpf (table walk)', (ports) => keep(new BpfSource(addon.addon!, ports, { method: 'walk' }))]);
  sources.push(['bpf (iterator)', (ports) => keep(new BpfSource(addon.addon!, ports, { method: 'iter' }))]);
}

test('the bpf iterator loads here as root; without root (or the addon) the reason is the kernel refusing (or the build)', () => {
  if (!addon.addon) {
    assert.equal(bpfWhy, 'C1M_NO_NATIVE=1');
    return;
  }
  if (root) assert.equal(bpfWhy, '');
  else assert.match(bpfWhy, /BPF_PROG_LOAD \(tracing, iter\/tcp\): Operation not permitted/);
});

test('the netlink addon is built and loads (C1M_NO_NATIVE=1 runs the suite without it)', () => {
  if (process.env.C1M_NO_NATIVE === '1') {
    assert.deepEqual(addon, { addon: null, reason: 'C1M_NO_NATIVE=1' });
    return;
  }
  assert.equal(addon.reason, '');
  assert.equal(typeof addon.addon?.dump, 'function');
});

for (const [name, make] of sources) {
  test(`${name}: counts established sockets on the watched ports only (IPv4, IPv6, ranges), and sees closes`, async () => {
    const a = await serve(30);
    const b = await serve(7);
    const c = await serve(5); // never watched below, except where said
    const v6 = await serve(4, '::1');
    // Listening sockets and the clients' ends (ephemeral local ports) are not established connections on the port.
    assert.equal(make([a.port, b.port, v6.port]).fill(new InodeTable()), 30 + 7 + 4);
    assert.equal(make([c.port]).fill(new InodeTable()), 5);
    const lo = Math.min(a.port, b.port, c.port, v6.port);
    const hi = Math.max(a.port, b.port, c.port, v6.port);
    const inRange = [a, b, c, v6].filter((s) => s.port >= lo && s.port <= hi);
    const range = Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
    // A whole port range (one S_GE/S_LE pair for netlink); other tests' sockets in the range would only add.
    assert.ok(make(range).fill(new InodeTable()) >= inRange.reduce((n, s) => n + s.accepted.length, 0));

    const table = new InodeTable();
    make([a.port]).fill(table);
    assert.ok(table.size >= 30); // proc also adds the listening socket (FLAG_PRESENT only)

    // Clients close 10 of a's connections: once the server ends have read the FIN they are CLOSE_WAIT, not counted.
    const ended = a.accepted.slice(0, 10).map((s) => once(s, 'end'));
    for (const cl of a.clients.slice(0, 10)) cl.end();
    await Promise.all(ended);
    assert.equal(make([a.port]).fill(new InodeTable()), 20);
  });
}

test('both sources report the same established inodes', { timeout: 10_000 }, async () => {
  if (!addon.addon) {
    assert.equal(process.env.C1M_NO_NATIVE, '1');
    return;
  }
  const s = await serve(25);
  const procTable = new InodeTable();
  new ProcSource('self', [s.port]).fill(procTable);
  const inodes = [...addon.addon.dump(AF_INET, 1 << 1, portFilter([s.port])), ...addon.addon.dump(AF_INET6, 1 << 1, portFilter([s.port]))];
  assert.equal(inodes.length, 25);
  for (const ino of inodes) assert.equal(procTable.get(ino), FLAG_PRESENT | FLAG_ESTABLISHED, `inode ${ino}`);
});

test('a port in the request header selects the same sockets as the filter program, and states still apply', { timeout: 10_000 }, async () => {
  if (!addon.addon) {
    assert.equal(process.env.C1M_NO_NATIVE, '1');
    return;
  }
  const { dump } = addon.addon;
  const s = await serve(12);
  const other = await serve(5); // the same table, another port: must not come back
  const sorted = (a: Uint32Array): number[] => Array.from(a).sort((x, y) => x - y);
  const viaHeader = dump(AF_INET, TCPF_ESTABLISHED, null, s.port);
  assert.equal(viaHeader.length, 12);
  assert.deepEqual(sorted(viaHeader), sorted(dump(AF_INET, TCPF_ESTABLISHED, portFilter([s.port]))));
  assert.equal(dump(AF_INET, TCPF_ESTABLISHED, null, other.port).length, 5);
  // The listener is the only LISTEN socket on the port; the clients' ends (ephemeral ports) never match it.
  assert.equal(dump(AF_INET, TCPF_LISTEN, null, s.port).length, 1);
  // Header and program together: both must hold (here the program wants another port, so nothing).
  assert.equal(dump(AF_INET, TCPF_ESTABLISHED, portFilter([other.port]), s.port).length, 0);
  // Without a port or a program every established socket of the table comes back: ours (both ends) at least.
  assert.ok(dump(AF_INET, TCPF_ESTABLISHED, null, 0).length >= 2 * (12 + 5));
});

test('the addon rejects bad arguments with typed errors; the kernel rejects a malformed program', () => {
  if (!addon.addon) {
    assert.equal(process.env.C1M_NO_NATIVE, '1');
    return;
  }
  const dump = addon.addon.dump;
  assert.throws(() => dump(3, 2, null), { code: 'SOCKDIAG_BAD_ARGS', name: 'TypeError' });
  assert.throws(() => dump(AF_INET, 2, new Uint8Array(3)), { code: 'SOCKDIAG_BAD_ARGS' });
  assert.throws(() => (dump as (...a: unknown[]) => unknown)(AF_INET), { code: 'SOCKDIAG_BAD_ARGS' });
  assert.throws(() => dump(AF_INET, 2, null, 65536), { code: 'SOCKDIAG_BAD_ARGS', message: /sport must be a port/ });
  assert.throws(() => dump(AF_INET, 2, null, -1), { code: 'SOCKDIAG_BAD_ARGS' });
  assert.throws(() => (dump as (...a: unknown[]) => unknown)(AF_INET, 2, null, '80'), { code: 'SOCKDIAG_BAD_ARGS' });
  // A port test whose `yes` jumps past the end + 4: the audit refuses it, EINVAL comes back as an error.
  assert.throws(() => dump(AF_INET, 2, new Uint8Array([BC_S_EQ, 64, 8, 0, 0, 0, 0x40, 0x1f])), { code: 'SOCKDIAG_ERRNO_22', message: /Invalid argument/ });
});

test('openSocketSource: proc on request; auto takes bpf, else netlink, else proc, and says why; bpf and netlink refuse clearly', () => {
  const open = (mode: Parameters<typeof openSocketSource>[0], pid = process.pid): { name: string; note: string } => {
    const { source, note } = openSocketSource(mode, pid, [8000]);
    keep(source);
    return { name: source.name, note };
  };
  assert.deepEqual(open('proc'), { name: 'proc', note: '' });
  if (!addon.addon) {
    assert.deepEqual(open('auto'), { name: 'proc', note: `no bpf or netlink: ${addon.reason}` });
    assert.throws(() => open('netlink'), (e: unknown) => e instanceof SocketSourceError && e.code === 'C1M_MEMLOG_NO_NETLINK' && /--sockets netlink: C1M_NO_NATIVE=1/.test(e.message));
    assert.throws(() => open('bpf'), { code: 'C1M_MEMLOG_NO_BPF', message: '--sockets bpf: C1M_NO_NATIVE=1' });
    return;
  }
  assert.deepEqual(open('netlink'), { name: 'netlink', note: '' });
  if (!bpfWhy) {
    assert.deepEqual(open('auto'), { name: 'bpf', note: '' });
    assert.deepEqual(open('bpf'), { name: 'bpf', note: '' });
  } else {
    // Not root: the kernel refuses the program; auto says so and takes netlink, bpf refuses with the whole error.
    const auto = open('auto');
    assert.equal(auto.name, 'netlink');
    assert.match(auto.note, /^no bpf: sockdiag: BPF_PROG_LOAD .*Operation not permitted.*needs root, or CAP_BPF and CAP_PERFMON/);
    assert.throws(() => open('bpf'), { code: 'C1M_MEMLOG_NO_BPF', message: /^--sockets bpf: sockdiag: BPF_PROG_LOAD/ });
  }
  // A pid that does not exist has no readable network namespace: auto falls back to proc, bpf and netlink refuse.
  const gone = 2 ** 22 + 7;
  assert.match(open('auto', gone).note, /^no bpf or netlink: cannot read \/proc\/\d+\/ns\/net/);
  assert.throws(() => open('netlink', gone), { code: 'C1M_MEMLOG_NO_NETLINK' });
  assert.throws(() => open('bpf', gone), { code: 'C1M_MEMLOG_NO_BPF', message: /cannot read \/proc\/\d+\/ns\/net/ });
});

test('as an unprivileged user, auto falls back to netlink and says the kernel refused the program (run as nobody via setpriv)', { timeout: 20_000 }, () => {
  if (!root || !addon.addon) {
    // Not root: this process is the unprivileged case, checked by the test above; nobody to switch to.
    assert.ok(!root ? bpfWhy !== '' : addon.reason !== '');
    return;
  }
  const netlinkJs = fileURLToPath(new URL('./netlink.js', import.meta.url));
  const script = `import(${JSON.stringify(netlinkJs)}).then((m) => {
    const a = m.openSocketSource('auto', process.pid, [8000]);
    let bpf = '';
    try { m.openSocketSource('bpf', process.pid, [8000]); } catch (e) { bpf = e.code + ': ' + e.message; }
    console.log(JSON.stringify({ uid: process.getuid(), name: a.source.name, note: a.note, bpf }));
  });`;
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 15_000 });
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout) as { uid: number; name: string; note: string; bpf: string };
  assert.equal(got.uid, 65534);
  assert.equal(got.name, 'netlink');
  assert.match(got.note, /^no bpf: sockdiag: BPF_PROG_LOAD \(tracing, iter\/tcp\): Operation not permitted.*needs root, or CAP_BPF and CAP_PERFMON/);
  assert.match(got.bpf, /^C1M_MEMLOG_NO_BPF: --sockets bpf: sockdiag: BPF_PROG_LOAD .*Operation not permitted/);
});

/** Inodes of the sockets /proc/net/tcp{,6} lists with local port `port` in state `st` (hex: '01' ESTABLISHED, '06' TIME_WAIT, '0A' LISTEN). */
function procSockets(port: number, st: string): number[] {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const out: number[] = [];
  for (const f of ['/proc/self/net/tcp', '/proc/self/net/tcp6']) {
    for (const line of readFileSync(f, 'latin1').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9 && cols[1]!.endsWith(`:${hexPort}`) && cols[3] === st) out.push(Number(cols[9]));
    }
  }
  return out;
}

const sorted = (a: Iterable<number>): number[] => Array.from(a).sort((x, y) => x - y);

/** The bpf source's ways to the inodes: its table walk, and the iterator with each way to the inode. */
type Way = 'walk' | 'sk_ino' | 'socket';
const WAYS: Way[] = ['walk', 'sk_ino', 'socket'];

test('bpf (table walk, and the iterator both ways) and netlink report the same inodes: IPv4 and IPv6, several ports and ranges, after closes', { timeout: 20_000 }, async () => {
  if (bpfWhy) {
    assert.ok(!root || !addon.addon, bpfWhy);
    return;
  }
  const nl = addon.addon!;
  const netlinkInodes = (ports: number[]): number[] => sorted([AF_INET, AF_INET6].flatMap((f) => Array.from(nl.dump(f, TCPF_ESTABLISHED, portFilter(ports)))));
  const bpfInodes = (ports: number[], via: Way): number[] =>
    sorted(keep(via === 'walk' ? new BpfSource(nl, ports, { method: 'walk' }) : new BpfSource(nl, ports, { method: 'iter', iterLayout: kernelLayout(via) })).read());
  const a = await serve(20);
  const b = await serve(6, '::1');
  const c = await serve(9);
  const lo = Math.min(a.port, b.port, c.port);
  const hi = Math.max(a.port, b.port, c.port);
  const sets: [string, number[]][] = [
    ['one IPv4 port', [a.port]],
    ['one IPv6 port', [b.port]],
    ['three ports', [a.port, b.port, c.port]],
    ['a range covering them', Array.from({ length: hi - lo + 1 }, (_, i) => lo + i)],
  ];
  for (const via of WAYS) {
    for (const [name, ports] of sets) {
      const want = netlinkInodes(ports);
      assert.ok(want.length >= (ports.length === 1 ? (ports[0] === b.port ? 6 : 20) : 35), `${name}: netlink found ${want.length}`);
      assert.deepEqual(bpfInodes(ports, via), want, `${via}: ${name}`);
    }
  }
  // And they are the inodes the server's own fds hold (the ground truth for ownership).
  const table = new InodeTable();
  keep(new BpfSource(nl, [a.port, b.port, c.port])).fill(table);
  const own = new SocketOwnership(nativeFdReader(nl));
  assert.equal(own.count([{ pid: process.pid, startTime: readStat(process.pid)!.startTime }], table).established, 35);

  // Close some from each side; wait until both ends are gone from ESTABLISHED, then compare again.
  const closing = [...a.accepted.slice(0, 5), ...b.accepted.slice(0, 2)].map((s) => once(s, 'close'));
  for (const cl of [...a.clients.slice(0, 3), ...b.clients.slice(0, 2)]) cl.destroy();
  for (const s of a.accepted.slice(3, 5)) s.destroy();
  await Promise.all(closing);
  for (const via of WAYS) {
    const ports = [a.port, b.port, c.port];
    const want = netlinkInodes(ports);
    assert.equal(want.length, 35 - 7);
    assert.deepEqual(bpfInodes(ports, via), want, `${via}: after closes`);
  }
});

test('bpf: sockets of another network namespace that shares this hash table are not counted', { timeout: 20_000 }, async () => {
  if (bpfWhy) {
    assert.ok(!root || !addon.addon, bpfWhy);
    return;
  }
  // A child namespace made here shares the host's established table unless tcp_child_ehash_entries is set; the
  // child says which (a negative tcp_ehash_entries: shared) so the case is known to be the shared one.
  const script = `const net = require('net'); const fs = require('fs');
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = s.address().port; let n = 0;
      for (let i = 0; i < 12; i++) net.connect(port, '127.0.0.1').on('connect', () => { if (++n === 12) console.log(JSON.stringify({ port, ehash: Number(fs.readFileSync('/proc/sys/net/ipv4/tcp_ehash_entries', 'utf8')) })); });
    });
    setTimeout(() => process.exit(0), 15000);`;
  const child = spawn('unshare', ['--net', '--', 'sh', '-c', `ip link set lo up && exec "$0" -e "$1"`, process.execPath, script], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const line = await new Promise<string>((resolve, reject) => {
      child.stdout!.once('data', (d: Buffer) => resolve(d.toString()));
      child.once('exit', (code) => reject(new Error(`the namespace child exited (${code})`)));
    });
    const { port, ehash } = JSON.parse(line) as { port: number; ehash: number };
    assert.ok(ehash < 0, `the child has its own table (tcp_ehash_entries ${ehash}); this test needs tcp_child_ehash_entries = 0 on the host`);
    // 12 established connections on `port` (both ends: 24 sockets) are in the same table, in another namespace.
    for (const method of ['walk', 'iter'] as const) assert.equal(keep(new BpfSource(addon.addon!, [port], { method })).read().length, 0, method);
    assert.equal(addon.addon!.dump(AF_INET, TCPF_ESTABLISHED, portFilter([port])).length, 0);
  } finally {
    child.kill('SIGKILL');
  }
});

for (const [name, make] of sources) {
  test(`${name}: listening, time-wait and half-closed sockets on the port are not counted as established`, { timeout: 20_000 }, async () => {
    const s = await serve(8);
    // Server-side active close of 3: their server ends pass FIN_WAIT to TIME_WAIT once the clients close too.
    const tw = s.accepted.slice(0, 3);
    const clientEnded = s.clients.slice(0, 3).map((c) => once(c, 'end'));
    for (const x of tw) x.end();
    await Promise.all(clientEnded); // node ends the client's side in turn (allowHalfOpen off)
    await Promise.all(tw.map((x) => once(x, 'close')));
    // The kernel lists them as TIME_WAIT on the server's port: the case is real, not assumed.
    let timeWait = procSockets(s.port, '06').length;
    for (let i = 0; i < 50 && timeWait < 3; i++) {
      await new Promise((r) => setTimeout(r, 20));
      timeWait = procSockets(s.port, '06').length;
    }
    assert.equal(timeWait, 3);
    const listener = procSockets(s.port, '0A');
    assert.equal(listener.length, 1);
    const established = procSockets(s.port, '01');
    assert.equal(established.length, 5);
    const table = new InodeTable();
    assert.equal(make([s.port]).fill(table), 5);
    for (const ino of established) assert.equal(table.get(ino), FLAG_PRESENT | FLAG_ESTABLISHED, `inode ${ino}`);
    // bpf and netlink add only established sockets; proc also adds the listener, present but not established
    // (and the time-wait ones have no inode: inode 0 is never added).
    assert.equal(table.get(listener[0]!), name === 'proc' ? FLAG_PRESENT : 0);
    assert.equal(table.size, name === 'proc' ? 5 + 1 : 5);
  });
}

// --- SocketOwnership with each fd reader: same cases. ---

const readers: [string, FdReader][] = [['node:fs', fsFdReader]];
if (addon.addon) readers.push(['addon', nativeFdReader(addon.addon)]);

for (const [name, reader] of readers) {
  test(`ownership (${name} fd reader): counts this process's sockets, lists a process again only when it changed`, async () => {
    const s = await serve(20);
    const me = [{ pid: process.pid, startTime: readStat(process.pid)!.startTime }];
    const table = (): InodeTable => {
      const t = new InodeTable();
      new ProcSource('self', [s.port]).fill(t);
      return t;
    };
    const own = new SocketOwnership(reader);
    const first = own.count(me, table());
    assert.equal(first.established, 20);
    assert.equal(first.listed, 1);
    assert.ok(first.readlinks >= 20 && first.fds >= 40, JSON.stringify(first));

    // Nothing changed: counted from the cache without listing the fd directory (Linux 6.2+ reports the count).
    const fdCountKnown = statSync(`/proc/${process.pid}/fd`).size > 0;
    const second = own.count(me, table());
    assert.equal(second.established, 20);
    // Links read: only this sample's rolling recheck slice (fd % LINK_RECHECK_EVERY), a handful at most.
    if (fdCountKnown) assert.ok(second.listed === 0 && second.fds === 0 && second.readlinks <= 2, JSON.stringify(second));
    else assert.equal(second.listed, 1);

    // Two more connections: the open-fd count changed, so the process is listed and only the new links are read.
    const extra = [net.connect(s.port, '127.0.0.1'), net.connect(s.port, '127.0.0.1')];
    sockets.push(...extra);
    await Promise.all(extra.map((c) => once(c, 'connect')));
    let third = own.count(me, table());
    for (let tries = 0; third.established !== 22 && tries < 50; tries++) {
      await new Promise((r) => setImmediate(r)); // the accept may not have run yet
      third = own.count(me, table());
    }
    assert.equal(third.established, 22);
    assert.equal(third.listed, 1);
    assert.ok(third.readlinks < first.readlinks, JSON.stringify(third));

    // A closed connection leaves the table: noticed even though the fd count may be back where it was.
    const closed = once(s.accepted[0]!, 'close');
    s.accepted[0]!.destroy();
    await closed;
    assert.equal(own.count(me, table()).established, 21);
  });
}

test('the addon fd reader agrees with node:fs and names errno codes', { timeout: 10_000 }, () => {
  if (!addon.addon) {
    assert.equal(process.env.C1M_NO_NATIVE, '1');
    return;
  }
  const native = nativeFdReader(addon.addon);
  const a = Array.from(native.listFds(process.pid)).sort((x, y) => x - y);
  const b = Array.from(fsFdReader.listFds(process.pid)).sort((x, y) => x - y);
  // The fs listing opens one fd of its own (the directory), and so does the addon's: compare without it.
  const common = a.filter((fd) => b.includes(fd));
  assert.ok(common.length >= Math.min(a.length, b.length) - 1, `${a} vs ${b}`);
  const fds = Int32Array.from(common);
  assert.deepEqual(Array.from(native.socketInodes(process.pid, fds)), Array.from(fsFdReader.socketInodes(process.pid, fds)));
  assert.throws(() => native.listFds(2 ** 22 + 7), { code: 'ENOENT' });
  assert.deepEqual(Array.from(native.socketInodes(2 ** 22 + 7, Int32Array.from([0, 1]))), [0, 0]);
  assert.throws(() => addon.addon!.socketInodes(process.pid, new Uint32Array(2) as unknown as Int32Array), { code: 'SOCKDIAG_BAD_ARGS' });
  assert.throws(() => addon.addon!.listFds(0), { code: 'SOCKDIAG_BAD_ARGS' });
});

test('netlink: a family without a listener on the ports is not walked, except on the periodic full sample', async () => {
  if (!addon.addon) {
    assert.equal(process.env.C1M_NO_NATIVE, '1');
    return;
  }
  const real = addon.addon;
  const calls: string[] = [];
  const spy = { ...real, dump: (family: number, states: number, bc: Uint8Array | null, sport?: number) => {
    calls.push(`${family === AF_INET ? 'v4' : 'v6'}:${states === 1 << 1 ? 'est' : 'listen'}`);
    return real.dump(family, states, bc, sport);
  } };
  const s = await serve(6); // IPv4 only
  const source = new NetlinkSource(spy, [s.port]);
  assert.equal(source.fill(new InodeTable()), 6);
  assert.deepEqual(calls.splice(0), ['v4:est', 'v6:est']); // first sample: both families
  assert.equal(source.fill(new InodeTable()), 6);
  assert.deepEqual(calls.splice(0), ['v4:est', 'v6:listen']); // v4 had connections; v6 has no listener: not walked
  const v6 = await serve(3, '::1');
  const both = new NetlinkSource(spy, [s.port, v6.port]);
  both.fill(new InodeTable());
  calls.length = 0;
  assert.equal(both.fill(new InodeTable()), 9);
  assert.deepEqual(calls, ['v4:est', 'v6:est']);
});
