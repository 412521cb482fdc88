import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  TcpTableScanner, InodeTable, SocketOwnership, FLAG_PRESENT, FLAG_ESTABLISHED, FLAG_COUNTED, FULL_RESCAN_EVERY, LINK_RECHECK_EVERY,
  type ScanCounts, type FdReader, type OwnershipCounts,
} from './tcptable.js';

const dir = mkdtempSync(join(tmpdir(), 'memlog-tcptable-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const hex = (n: number, w: number): string => n.toString(16).toUpperCase().padStart(w, '0');
/** A line exactly as the kernel prints it in /proc/net/tcp (150 bytes with the newline). */
const v4 = (sl: number, lport: number, rport: number, state: number, inode: number, uid = 1000): string =>
  `${String(sl).padStart(4)}: 0100007F:${hex(lport, 4)} 0100007F:${hex(rport, 4)} ${hex(state, 2)} 00000000:00000000 00:00000000 00000000 ${String(uid).padStart(5)} ${String(0).padStart(8)} ${inode} 1 0000000000000000 20 4 30 10 -1`.padEnd(149) + '\n';
/** A /proc/net/tcp6 line (not padded). */
const v6 = (sl: number, lport: number, state: number, inode: number): string =>
  `${String(sl).padStart(4)}: 00000000000000000000000001000000:${hex(lport, 4)} 00000000000000000000000001000000:9C40 ${hex(state, 2)} 00000000:00000000 00:00000000 00000000  1000        0 ${inode} 1 0000000000000000 20 4 29 10 -1\n`;
const HEADER4 = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode'.padEnd(149) + '\n';
const HEADER6 = '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
const fresh = (): ScanCounts => ({ lines: 0, onPorts: 0, established: 0 });

test('reads port, state and inode by offset; skips other ports, TIME_WAIT (inode 0) and the header', () => {
  const text = HEADER4 +
    v4(0, 8000, 0, 0x0a, 500) + // listening
    v4(1, 8000, 40000, 0x01, 501) + // established, ours
    v4(2, 40000, 8000, 0x01, 502) + // the client's end: local port is ephemeral
    v4(3, 8000, 40001, 0x06, 0) + // TIME_WAIT: no inode
    v4(4, 8001, 40002, 0x08, 504, 4294967294) + // CLOSE_WAIT on the second port, huge uid widens the field
    v4(5, 9000, 40003, 0x01, 505);
  const path = join(dir, 'tcp');
  writeFileSync(path, text);
  const table = new InodeTable();
  const counts = new TcpTableScanner([8000, 8001]).scanFile(path, table);
  assert.deepEqual(counts, { lines: 6, onPorts: 4, established: 1 });
  assert.equal(table.get(500), FLAG_PRESENT);
  assert.equal(table.get(501), FLAG_PRESENT | FLAG_ESTABLISHED);
  assert.equal(table.get(502), 0);
  assert.equal(table.get(504), FLAG_PRESENT);
  assert.equal(table.get(505), 0);
  assert.equal(table.size, 3);
});

test('IPv6 lines (32-digit addresses) and a missing tcp6 file', () => {
  const path = join(dir, 'tcp6');
  writeFileSync(path, HEADER6 + v6(0, 8000, 0x01, 777) + v6(1, 8000, 0x0a, 778) + v6(2, 8080, 0x01, 779));
  const table = new InodeTable();
  const scanner = new TcpTableScanner([8000]);
  assert.deepEqual(scanner.scanFile(path, table), { lines: 3, onPorts: 2, established: 1 });
  assert.equal(table.get(777), FLAG_PRESENT | FLAG_ESTABLISHED);
  assert.equal(table.get(778), FLAG_PRESENT);
  assert.deepEqual(scanner.scanFile(join(dir, 'no-such-tcp6'), table), fresh());
});

test('lines split across read chunks, sl above 9999 (wider field), no trailing newline', () => {
  let text = HEADER4;
  for (let i = 0; i < 300; i++) text += v4(9900 + i, i % 3 === 0 ? 8000 : 8001, 40000 + i, 0x01, 1000 + i);
  const path = join(dir, 'tcp-big');
  writeFileSync(path, text.slice(0, -1)); // last line without its newline
  for (const chunk of [151, 200, 4096, 1 << 20]) {
    const table = new InodeTable(4); // also forces the table to grow
    const counts = new TcpTableScanner([8000], chunk).scanFile(path, table);
    assert.deepEqual(counts, { lines: 300, onPorts: 100, established: 100 }, `chunk ${chunk}`);
    assert.equal(table.size, 100);
    for (let i = 0; i < 300; i++) assert.equal(table.get(1000 + i) !== 0, i % 3 === 0, `inode ${1000 + i} chunk ${chunk}`);
  }
});

test('InodeTable: flags OR together, clearFlag, clear; inodes up to 2^32-1', () => {
  const t = new InodeTable(2);
  for (let i = 1; i <= 5000; i++) t.add(i * 7919, FLAG_PRESENT);
  t.add(4294967295, FLAG_PRESENT | FLAG_ESTABLISHED);
  t.add(4294967295, FLAG_COUNTED);
  assert.equal(t.size, 5001);
  assert.equal(t.get(4294967295), FLAG_PRESENT | FLAG_ESTABLISHED | FLAG_COUNTED);
  assert.equal(t.get(7919 * 4999), FLAG_PRESENT);
  assert.equal(t.get(7918), 0);
  t.clearFlag(FLAG_COUNTED);
  assert.equal(t.get(4294967295), FLAG_PRESENT | FLAG_ESTABLISHED);
  t.clear();
  assert.equal(t.size, 0);
  assert.equal(t.get(4294967295), 0);
});

/** A process's fd table as SocketOwnership sees it through FdReader, with every call counted. */
class FakeFds implements FdReader {
  fds = new Map<number, number>(); // fd → socket inode (0: a file)
  countKnown = true;
  calls = { list: 0, links: 0 };
  openCount(): number {
    return this.countKnown ? this.fds.size : 0;
  }
  listFds(): number[] {
    this.calls.list++;
    return [...this.fds.keys()];
  }
  socketInodes(_pid: number, fds: Int32Array): Uint32Array {
    this.calls.links += fds.length;
    return Uint32Array.from(fds, (fd) => this.fds.get(fd) ?? 0);
  }
}

test('SocketOwnership: lists a process only when it may have changed, and re-reads stale links within LINK_RECHECK_EVERY samples', () => {
  const fake = new FakeFds();
  const own = new SocketOwnership(fake);
  const procs = [{ pid: 4242, startTime: 1 }];
  const established = new Set<number>();
  const sample = (): OwnershipCounts => {
    const t = new InodeTable();
    for (const ino of established) t.add(ino, FLAG_PRESENT | FLAG_ESTABLISHED);
    return own.count(procs, t);
  };
  fake.fds.set(0, 0).set(1, 0); // two files
  for (let fd = 10; fd < 20; fd++) {
    fake.fds.set(fd, 1000 + fd);
    established.add(1000 + fd);
  }
  // First sample: listed, every link read.
  assert.deepEqual(sample(), { established: 10, fds: 12, readlinks: 12, listed: 1 });
  // Unchanged: counted from the cache, nothing listed (this sample's recheck slice holds no cached fd).
  let s = sample();
  assert.deepEqual([s.established, s.listed], [10, 0]);
  // A socket closes (leaves the table) and a new one takes its fd number: the count is the same, the stale
  // cached inode gives it away, the process is listed again and only that link is re-read.
  established.delete(1012);
  fake.fds.set(12, 5012);
  established.add(5012);
  fake.calls.links = 0;
  s = sample();
  assert.deepEqual([s.established, s.listed], [10, 1]);
  assert.equal(fake.calls.links, 3); // fd 12 and the two files (files are never cached)
  // A new connection: the open-fd count changed.
  fake.fds.set(20, 1020);
  established.add(1020);
  s = sample();
  assert.deepEqual([s.established, s.listed], [11, 1]);
  // Without a known fd count (kernels before 6.2) every sample lists.
  fake.countKnown = false;
  assert.equal(sample().listed, 1);
  fake.countKnown = true;
  sample(); // re-prime openBefore

  // The rare stale entry: fd 13's socket lives on in another process (still established) while fd 13 here now
  // holds a file. Neither the fd count nor the table shows it (the periodic listing does not re-read a link whose
  // socket is still in the table); the rolling link recheck fixes it within LINK_RECHECK_EVERY samples.
  assert.equal(sample().established, 11);
  fake.fds.set(13, 0);
  let fixedAfter = -1;
  for (let i = 1; i <= LINK_RECHECK_EVERY + FULL_RESCAN_EVERY && fixedAfter < 0; i++) {
    if (sample().established === 10) fixedAfter = i;
  }
  assert.ok(fixedAfter > 0 && fixedAfter <= LINK_RECHECK_EVERY, `fixed after ${fixedAfter} samples`);
});
