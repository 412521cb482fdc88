import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, writeFileSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRecorder, resolvePgrep, RecorderError, type RecorderHandle } from './recorder.js';
import { parseLog } from './row.js';
import { readStat, kernelPageSize } from './proc.js';
import { loadSockDiag, openSocketSource, type SourceName } from './netlink.js';

const dir = mkdtempSync(join(tmpdir(), 'memlog-recorder-'));
const tag = `memlog-test-${process.pid}-${Date.now()}`;

// The watched server: a raw net server on port 0 that reports each accept and close as a JSON line on stdout.
// Started as "parent", it also spawns a "leaf" copy of itself (its own child process) and relays its lines.
const SERVER = join(dir, 'server.cjs');
writeFileSync(SERVER, `
const net = require('net');
const { spawn } = require('child_process');
const role = process.argv[2];
let open = 0, closed = 0;
const say = (o) => process.stdout.write(JSON.stringify({ role, ...o }) + '\\n');
const server = net.createServer((c) => {
  open++; say({ open, closed });
  c.on('error', () => {});
  c.on('close', () => { closed++; say({ open, closed }); });
});
server.listen(0, '127.0.0.1', () => {
  say({ port: server.address().port, pid: process.pid });
  if (role === 'parent') {
    const leaf = spawn(process.execPath, [__filename, 'leaf', process.argv[3]], { stdio: ['ignore', 'pipe', 'inherit'] });
    leaf.stdout.pipe(process.stdout);
  }
});
process.on('SIGTERM', () => process.exit(0));
`);

const children: ChildProcess[] = [];
const extraPids: number[] = [];
const sockets: net.Socket[] = [];
const recorders: RecorderHandle[] = [];
const servers: net.Server[] = [];
after(async () => {
  for (const r of recorders) await r.stop();
  for (const s of sockets) s.destroy();
  for (const s of servers) s.close();
  for (const pid of extraPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

interface Msg { role: string; port?: number; pid?: number; open?: number; closed?: number }

/** Spawns the server script and returns a function that waits (with a timeout) for a line matching `pred`. */
function startServer(role: 'leaf' | 'parent', name = tag): { child: ChildProcess; waitFor: (pred: (m: Msg) => boolean, what: string) => Promise<Msg> } {
  const child = spawn(process.execPath, [SERVER, role, name], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  const seen: Msg[] = [];
  const waiters: { pred: (m: Msg) => boolean; resolve: (m: Msg) => void }[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const m = JSON.parse(line) as Msg;
    seen.push(m);
    for (const w of [...waiters]) if (w.pred(m)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(m);
    }
  });
  const waitFor = (pred: (m: Msg) => boolean, what: string): Promise<Msg> => {
    const hit = seen.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 5000);
      waiters.push({ pred, resolve: (m) => { clearTimeout(t); resolve(m); } });
    });
  };
  return { child, waitFor };
}

async function connect(port: number, n: number): Promise<net.Socket[]> {
  const out = await Promise.all(Array.from({ length: n }, () => new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1' }, () => resolve(s));
    s.once('error', reject);
  })));
  sockets.push(...out);
  return out;
}

// Every socket source runs the same cases: netlink when the addon is built, bpf when it also loads (root);
// netlink.test.ts checks that both are there in CI (a root VM) and what the fallback says elsewhere.
const SOURCES: SourceName[] = ['proc'];
if (loadSockDiag().addon) {
  SOURCES.push('netlink');
  try {
    openSocketSource('bpf', process.pid, [8000]).source.close();
    SOURCES.push('bpf');
  } catch (err) {
    assert.notEqual(process.getuid?.(), 0, `root must get the bpf source: ${(err as Error).message}`);
  }
}

for (const source of SOURCES) {
test(`${source}: counts the real connections of a child server, sees closes, ignores other processes, stops when it exits`, async () => {
  const { child, waitFor } = startServer('leaf');
  const { port } = await waitFor((m) => m.port !== undefined, 'listening');
  // A second listener in this test process: its accepted sockets are established on a watched local port too,
  // but they are not the child's, so they must not count.
  const mine = net.createServer((c) => c.on('error', () => {}));
  servers.push(mine);
  await new Promise<void>((r) => mine.listen(0, '127.0.0.1', r));
  const minePort = (mine.address() as net.AddressInfo).port;
  await connect(minePort, 5);

  const clients = await connect(port!, 40);
  await waitFor((m) => m.open === 40, '40 accepted');
  const out = join(dir, `leaf-${source}.log`);
  const rec = startRecorder({ pid: child.pid!, ports: [port!, minePort], intervalMs: 60_000, out, sockets: source });
  recorders.push(rec);
  assert.equal(rec.sockets, source);
  assert.equal(rec.rows.length, 1);
  assert.equal(rec.rows[0]!.conns, 40);

  for (const c of clients.slice(0, 15)) c.destroy();
  await waitFor((m) => m.closed === 15, '15 closed');
  assert.equal(rec.sampleNow()!.conns, 25);
  const row = rec.rows[1]!;
  assert.ok(row.rssKb > 10_000, `rss ${row.rssKb}`);
  // RSS is what ps shows: VmRSS of /proc/<pid>/status (read a moment later, so allow a little drift).
  const vmRss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))![1]);
  assert.ok(Math.abs(row.rssKb - vmRss) < vmRss * 0.1, `rss ${row.rssKb} VmRSS ${vmRss}`);
  assert.ok(row.pssKb! > 0 && row.pssKb! < row.rssKb, `pss ${row.pssKb} rss ${row.rssKb}`);
  assert.equal(row.treeRssKb, row.rssKb); // no children
  assert.ok(row.tcpMemKb !== null && row.tcpMemKb >= 0);
  assert.ok(row.cpuPct !== null && row.cpuPct >= 0);
  assert.equal(row.kbPerConn, row.treeRssKb! / 25);

  // New connections reuse the closed fds' numbers: the fd → inode cache must notice.
  await connect(port!, 10);
  await waitFor((m) => m.open === 50, '10 more accepted');
  assert.equal(rec.sampleNow()!.conns, 35);

  child.kill('SIGTERM');
  const end = await rec.done;
  assert.equal(end.reason, 'exited');
  assert.equal(end.rows, 3);
  assert.equal(rec.sampleNow(), null);

  const text = readFileSync(out, 'utf8');
  assert.match(text, new RegExp(`^# memlog record pid=${child.pid} .* sockets=${source} host=`, 'm'));
  assert.equal(text.match(/^# date\tunix\trss_kb\tconns/gm)?.length, 1);
  assert.match(text, new RegExp(`^# .*\\tpid ${child.pid} exited; memlog stopped$`, 'm'));
  assert.deepEqual(parseLog(text).map((r) => r.conns), [40, 25, 35]);
});

test(`${source}: sums a tree (a server with its own child), --no-tree watches one process, appends without a second header`, async () => {
  const name = `${tag}-${source}`; // each source's tree has its own pgrep pattern
  const { child, waitFor } = startServer('parent', name);
  const top = await waitFor((m) => m.role === 'parent' && m.port !== undefined, 'parent listening');
  const leaf = await waitFor((m) => m.role === 'leaf' && m.port !== undefined, 'leaf listening');
  extraPids.push(leaf.pid!);
  await connect(top.port!, 10);
  await connect(leaf.port!, 20);
  await waitFor((m) => m.role === 'parent' && m.open === 10, 'parent accepted 10');
  await waitFor((m) => m.role === 'leaf' && m.open === 20, 'leaf accepted 20');

  // pgrep: both processes carry the tag in their command line; the root of the matching tree is chosen.
  assert.equal(resolvePgrep(name), child.pid);

  const out = join(dir, `tree-${source}.log`);
  writeFileSync(out, '# date\tunix\trss_kb\tconns\tpss_kb\ttree_rss_kb\ttree_pss_kb\ttcp_mem_kb\tcpu_pct\tkb_per_conn\n');
  const tree = startRecorder({ pgrep: name, ports: [top.port!, leaf.port!], intervalMs: 60_000, out, sockets: source });
  const single = startRecorder({ pid: child.pid!, ports: [top.port!, leaf.port!], intervalMs: 60_000, tree: false, out, sockets: source });
  recorders.push(tree, single);
  const t = tree.rows[0]!;
  const s = single.rows[0]!;
  assert.equal(t.conns, 30);
  assert.equal(s.conns, 10);
  const page = kernelPageSize() / 1024;
  const both = (readStat(child.pid!)!.rssPages + readStat(leaf.pid!)!.rssPages) * page;
  assert.ok(Math.abs(t.treeRssKb! - both) < both * 0.1, `tree rss ${t.treeRssKb} vs ${both}`);
  assert.ok(t.treeRssKb! > t.rssKb * 1.5, `tree ${t.treeRssKb} rss ${t.rssKb}`);
  // PSS splits the shared Node binary between the two processes, so the tree's PSS is well below its RSS.
  assert.ok(t.treePssKb! > t.pssKb! && t.treePssKb! < t.treeRssKb!, `tree pss ${t.treePssKb} pss ${t.pssKb} tree rss ${t.treeRssKb}`);
  assert.equal(s.treeRssKb, null);
  assert.equal(s.treePssKb, null);
  assert.equal(s.kbPerConn, s.rssKb / 10);
  await tree.stop();
  await single.stop();
  assert.equal((await tree.done).reason, 'stopped');
  const text = readFileSync(out, 'utf8');
  assert.equal(text.match(/^# date/gm)?.length, 1);
  assert.equal(text.match(/^# memlog record/gm)?.length, 2);
  assert.deepEqual(parseLog(text).map((r) => r.conns).sort((a, b) => a - b), [10, 30]);
});
}

test('auto: the fastest source that works, and the notice and the header say why the faster ones were not taken', { timeout: 20_000 }, async () => {
  const notices: string[] = [];
  const headerOf = (file: string): string => readFileSync(file, 'utf8').split('\n').find((l) => l.startsWith('# memlog record'))!;
  const { waitFor, child } = startServer('leaf', `${tag}-auto`);
  await waitFor((m) => m.port !== undefined, 'listening');
  const file = join(dir, 'auto.log');
  const took: number[] = [];
  const t0 = performance.now();
  const rec = startRecorder({ pid: child.pid!, intervalMs: 60_000, out: file, log: (l) => notices.push(l), onRow: (_row, ms) => took.push(ms) });
  recorders.push(rec);
  // onRow gets each sample's duration: the first sample is taken inside startRecorder.
  assert.equal(took.length, 1);
  assert.ok(took[0]! > 0 && took[0]! <= performance.now() - t0, `${took[0]} ms`);
  const best = SOURCES[SOURCES.length - 1]!;
  assert.equal(rec.sockets, best);
  if (best === 'bpf') {
    assert.deepEqual([rec.socketsNote, notices], ['', []]);
    assert.match(headerOf(file), / sockets=bpf host=/);
  } else {
    assert.match(rec.socketsNote, best === 'netlink' ? /^no bpf: / : /^no bpf or netlink: /);
    assert.deepEqual(notices, [`memlog: counting connections from ${best === 'netlink' ? 'the netlink sock_diag dump' : '/proc/net/tcp, slower at scale'} (${rec.socketsNote})`]);
    assert.ok(headerOf(file).includes(` sockets=${best} (${rec.socketsNote}) host=`));
  }
  await rec.stop();
  if (process.getuid?.() !== 0) return;
  // As root: a process in another network namespace (unshare --net) is out of both kernel interfaces' reach.
  const other = spawn('unshare', ['--net', '--', process.execPath, '-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
  children.push(other);
  await new Promise((r) => other.once('spawn', r));
  let ns = '';
  for (let i = 0; i < 100 && (ns === '' || ns === readlinkSync('/proc/self/ns/net')); i++) {
    await new Promise((r) => setTimeout(r, 20));
    try {
      ns = readlinkSync(`/proc/${other.pid}/ns/net`);
    } catch {
      ns = '';
    }
  }
  notices.length = 0;
  const file2 = join(dir, 'auto-netns.log');
  const far = startRecorder({ pid: other.pid!, intervalMs: 60_000, out: file2, log: (l) => notices.push(l) });
  recorders.push(far);
  assert.equal(far.sockets, 'proc');
  const { reason } = loadSockDiag();
  // Without the addon that is the reason given; with it, the namespace.
  if (reason) assert.equal(far.socketsNote, `no bpf or netlink: ${reason}`);
  else assert.match(far.socketsNote, new RegExp(`^no bpf or netlink: pid ${other.pid} is in another network namespace \\(net:\\[\\d+\\], memlog is in net:\\[\\d+\\]\\)$`));
  assert.deepEqual(notices, [`memlog: counting connections from /proc/net/tcp, slower at scale (${far.socketsNote})`]);
  assert.ok(headerOf(file2).includes(` sockets=proc (${far.socketsNote}) host=`));
  assert.throws(() => startRecorder({ pid: other.pid!, out: null, sockets: 'bpf' }), { code: 'C1M_MEMLOG_UNSUPPORTED', message: reason ? `--sockets bpf: ${reason}` : /^--sockets bpf: pid \d+ is in another network namespace/ });
  await far.stop();
});

test('clear errors for a missing process, an ambiguous or bad pattern, bad options', async () => {
  const twin = `${tag}-twin`;
  for (const { waitFor } of [startServer('leaf', twin), startServer('leaf', twin)]) await waitFor((m) => m.port !== undefined, 'twin listening');
  const code = (fn: () => unknown): string => {
    try {
      fn();
    } catch (err) {
      assert.ok(err instanceof RecorderError, String(err));
      return `${err.code}: ${err.message}`;
    }
    return 'no error';
  };
  assert.match(code(() => startRecorder({ pid: 2 ** 22 + 1, out: null })), /NO_PROCESS: no process with pid/);
  assert.match(code(() => startRecorder({ pgrep: `${tag}-nothing-matches`, out: null })), /NO_PROCESS: no process matches --pgrep/);
  assert.match(code(() => startRecorder({ pgrep: twin, out: null })), /AMBIGUOUS: --pgrep '.*-twin' matches 2 separate processes \(\d+, \d+\): use --pid/);
  assert.match(code(() => startRecorder({ pgrep: '([', out: null })), /BAD_OPTION: --pgrep: '\(\[' is not a regular expression/);
  assert.match(code(() => startRecorder({ out: null })), /exactly one of --pid and --pgrep/);
  assert.match(code(() => startRecorder({ pid: process.pid, intervalMs: 10, out: null })), /--interval: 10ms is out of range/);
  assert.match(code(() => startRecorder({ pid: process.pid, ports: [0], out: null })), /--port/);
  assert.match(code(() => startRecorder({ pid: process.pid, out: null, sockets: 'ss' as 'proc' })), /BAD_OPTION: --sockets: 'ss' is not one of auto, bpf, netlink, proc/);
  assert.match(code(() => startRecorder({ pid: process.pid, out: join(dir, 'no', 'such', 'dir.log') })), /BAD_OPTION: -o: cannot append to '.*dir\.log' \(ENOENT\)/);
});
