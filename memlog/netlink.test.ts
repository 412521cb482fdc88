import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import {
  portRanges, portFilter, loadSockDiag, NetlinkSource, ProcSource, openSocketSource, SocketSourceError, nativeFdReader,
  AF_INET, AF_INET6, BC_JMP, BC_S_EQ, BC_S_GE, BC_S_LE, TCPF_ESTABLISHED, TCPF_LISTEN, type SocketSource,
} from './netlink.js';
import { InodeTable, SocketOwnership, fsFdReader, FLAG_ESTABLISHED, FLAG_PRESENT, type FdReader } from './tcptable.js';
import { readStat } from './proc.js';
import { statSync } from 'node:fs';

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
const sources: [string, (ports: number[]) => SocketSource][] = [['proc', (ports) => new ProcSource('self', ports)]];
if (addon.addon) sources.push(['netlink', (ports) => new NetlinkSource(addon.addon!, ports)]);

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

test('openSocketSource: proc on request, netlink in auto mode when built, and a clear error when netlink cannot be had', () => {
  assert.equal(openSocketSource('proc', process.pid, [8000]).source.name, 'proc');
  const auto = openSocketSource('auto', process.pid, [8000]);
  if (addon.addon) {
    assert.deepEqual([auto.source.name, auto.note], ['netlink', '']);
    assert.equal(openSocketSource('netlink', process.pid, [8000]).source.name, 'netlink');
  } else {
    assert.deepEqual([auto.source.name, auto.note], ['proc', addon.reason]);
    assert.throws(() => openSocketSource('netlink', process.pid, [8000]), (e: unknown) => e instanceof SocketSourceError && /--sockets netlink: C1M_NO_NATIVE=1/.test(e.message));
  }
  // A pid that does not exist has no readable network namespace: auto falls back, netlink refuses.
  const gone = 2 ** 22 + 7;
  if (addon.addon) {
    assert.match(openSocketSource('auto', gone, [8000]).note, /cannot read \/proc\/\d+\/ns\/net/);
    assert.throws(() => openSocketSource('netlink', gone, [8000]), { code: 'C1M_MEMLOG_NO_NETLINK' });
  }
});

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
