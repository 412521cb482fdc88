// The floodtest CLI as a user runs it: a child process, its stdout/stderr, signals and exit codes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { startCometServer, type CometServer } from '../server/index.js';
import { decodeRecord, type Sample, type Summary } from './sample.js';

const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'floodtest-cli-'));
const servers: CometServer[] = [];
const children: ChildProcess[] = [];
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.all(servers.map((s) => s.stop()));
  rmSync(dir, { recursive: true, force: true });
});

interface Run {
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
  exit: Promise<number | null>;
  /** Resolves with the first stdout line matching `re` (rejects after `ms`). */
  line(re: RegExp, ms?: number): Promise<string>;
  /** The same for stderr. */
  errLine(re: RegExp, ms?: number): Promise<string>;
}

// Collects a stream's lines and lets a test wait for one that matches.
function lines(stream: NodeJS.ReadableStream, name: string): { all: string[]; wait(re: RegExp, ms?: number): Promise<string> } {
  const all: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  let rest = '';
  stream.on('data', (buf: Buffer) => {
    const parts = (rest + buf.toString('utf8')).split('\n');
    rest = parts.pop()!;
    for (const l of parts) {
      all.push(l);
      for (const w of waiters.splice(0)) {
        if (w.re.test(l)) w.resolve(l);
        else waiters.push(w);
      }
    }
  });
  const wait = (re: RegExp, ms = 10_000): Promise<string> => {
    const hit = all.find((l) => re.test(l));
    if (hit !== undefined) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${name} line matching ${re} in ${ms} ms; last: ${all.slice(-5).join(' | ')}`)), ms);
      waiters.push({
        re,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
    });
  };
  return { all, wait };
}

// `openFiles` runs the CLI under a lower open-files soft limit (ulimit -n in a shell; no kernel setting changes).
function cli(args: string[], input?: string, openFiles?: number): Run {
  const child =
    openFiles === undefined
      ? spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
      : spawn('bash', ['-c', `ulimit -n ${openFiles} && exec "$0" "$@"`, process.execPath, CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  const out = lines(child.stdout!, 'stdout');
  const err = lines(child.stderr!, 'stderr');
  if (input !== undefined) child.stdin!.end(input);
  else child.stdin!.end();
  const exit = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  return { child, stdout: out.all, stderr: err.all, exit, line: out.wait, errLine: err.wait };
}

async function comet(): Promise<CometServer> {
  const s = await startCometServer({ host: '127.0.0.1', port: 0, controlPort: 0 });
  servers.push(s);
  return s;
}

test('--help prints usage and exits 0', async () => {
  const r = cli(['--help']);
  assert.equal(await r.exit, 0);
  assert.match(r.stdout.join('\n'), /floodtest <urls-file\|-> <interval-ms> \[flags\]/);
  assert.match(r.stdout.join('\n'), /--inflight <n>.*default 256/);
});

test('bad usage: one line on stderr naming the flag and the allowed range, exit 2', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['u.txt', '0', '--procs', '0'], /^floodtest: --procs: 0 is out of range \(allowed: 1 to 256\)/],
    [['u.txt', '0', '--inflight', 'many'], /^floodtest: --inflight: 'many' is not a whole number \(allowed: 1 to 100000\)/],
    [['u.txt', 'soon'], /^floodtest: <interval-ms>: 'soon' is not a number \(allowed: 0 to 3600000\)/],
    [['u.txt', '0', '--duration', '5q'], /^floodtest: --duration: '5q' is not a duration/],
    [['u.txt', '0', '--bogus'], /^floodtest: --bogus: unknown flag/],
    [['u.txt'], /^floodtest: <urls-file\|-> and <interval-ms> are required/],
    [['urls', '--count', '3'], /^floodtest: --base: required/],
    [['urls', '--base', 'http://a/', '--count', '0'], /^floodtest: --count: 0 is out of range \(allowed: 1 to 10000000\)/],
    [['urls', '--base', 'http://a/', '--count', '1', '--hosts', '10.0.0.9-10.0.0.1'], /^floodtest: --hosts: range 10\.0\.0\.9-10\.0\.0\.1 runs backwards/],
  ];
  for (const [args, re] of cases) {
    const r = cli(args);
    assert.equal(await r.exit, 2, args.join(' '));
    assert.equal(r.stderr.filter((l) => l !== '').length, 1, `${args.join(' ')}: ${r.stderr.join(' | ')}`);
    assert.match(r.stderr[0]!, re);
  }
  // A bad line in the URL file is named by its line number.
  writeFileSync(join(dir, 'bad.txt'), '# ok\nhttp://127.0.0.1:1/a\nftp://x/y\n');
  const r = cli([join(dir, 'bad.txt'), '0']);
  assert.equal(await r.exit, 2);
  assert.match(r.stderr[0]!, /line 3: only http:\/\/ and https:\/\//);
});

test('floodtest urls writes the seed URL file to stdout or --out', async () => {
  const r = cli(['urls', '--base', 'http://127.0.0.1:8000/test/', '--count', '6', '--hosts', '127.0.0.1-127.0.0.2', '--ports', '8000,8002']);
  assert.equal(await r.exit, 0);
  assert.deepEqual(r.stdout.filter((l) => l !== ''), [
    'http://127.0.0.1:8000/test/1',
    'http://127.0.0.1:8002/test/2',
    'http://127.0.0.2:8000/test/3',
    'http://127.0.0.2:8002/test/4',
    'http://127.0.0.1:8000/test/5',
    'http://127.0.0.1:8002/test/6',
  ]);
  const out = join(dir, 'gen.txt');
  const r2 = cli(['urls', '--base', 'http://h:1/sse/', '--count', '3', '--start', '10', '--out', out]);
  assert.equal(await r2.exit, 0);
  assert.equal(readFileSync(out, 'utf8'), 'http://h:1/sse/10\nhttp://h:1/sse/11\nhttp://h:1/sse/12\n');
});

test('floodtest urls into a reader that goes away (| head) ends quietly with 0', async () => {
  const r = cli(['urls', '--base', 'http://127.0.0.1:8000/test/', '--count', '5000000']);
  await r.line(/^http:\/\/127\.0\.0\.1:8000\/test\/1$/);
  r.child.stdout!.destroy();
  assert.equal(await r.exit, 0);
  assert.deepEqual(r.stderr.filter((l) => l !== ''), []);
});

test('Ctrl-C: the first SIGINT stops and prints the summary; exit 0 when all were reached', async () => {
  const srv = await comet();
  const file = join(dir, 'urls.txt');
  writeFileSync(file, Array.from({ length: 50 }, (_, i) => `http://127.0.0.1:${srv.port}/test/${i + 1}`).join('\n') + '\n');
  const r = cli([file, '0']);
  await r.line(/^Stats: \{50,0,0\}$/);
  const res = await fetch(`http://127.0.0.1:${srv.controlPort}/send/7`, { method: 'POST', body: 'hello @t=1' });
  assert.deepEqual(await res.json(), { delivered: 1 });
  await r.line(/^Stats: \{50,0,1\}$/);
  r.child.kill('SIGINT');
  assert.equal(await r.exit, 0);
  const out = r.stdout.join('\n');
  assert.match(out, /floodtest summary\n/);
  assert.doesNotMatch(out, /SHORT/);
  assert.match(out, /asked 50, reached 50, open at stop 50/);
  assert.match(out, /received +1 chunks, 0 events/);
  assert.match(out, /latency +n=1 /);
  assert.match(r.stderr.join('\n'), /SIGINT: stopping/);
  await waitForZero(srv);
});

async function waitForZero(srv: CometServer): Promise<void> {
  const deadline = Date.now() + 5000;
  while (srv.stats().connections !== 0) {
    if (Date.now() > deadline) assert.fail(`server still has ${srv.stats().connections} connections after floodtest exited`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('--json from stdin: NDJSON samples then a summary on stdout, progress and human summary on stderr', async () => {
  const srv = await comet();
  const urls = Array.from({ length: 20 }, (_, i) => `http://127.0.0.1:${srv.port}/sse/${i + 1}`).join('\n');
  const r = cli(['-', '0', '--json', '--duration', '1500ms'], `# from stdin\n${urls}\n`);
  assert.equal(await r.exit, 0);
  const records = r.stdout.filter((l) => l !== '').map(decodeRecord);
  assert.ok(records.length >= 2);
  const samples = records.slice(0, -1) as Sample[];
  const summary = records[records.length - 1] as Summary;
  for (const s of samples) {
    assert.equal(s.type, 'sample');
    assert.equal(s.asked, 20);
    assert.equal(typeof s.rss, 'number');
    assert.equal(typeof s.eventLoopDelayMs.p99, 'number');
    assert.deepEqual(Object.keys(s.latency).sort(), ['count', 'max', 'mean', 'p50', 'p90', 'p99', 'p999']);
  }
  assert.equal(samples[0]!.connected, 20);
  assert.equal(summary.type, 'summary');
  assert.equal(summary.reason, 'duration');
  assert.equal(summary.reached, 20);
  assert.equal(summary.short, false);
  const err = r.stderr.join('\n');
  assert.match(err, /^Stats: \{20,0,0\} events=0 inflight=0/m);
  assert.match(err, /floodtest summary/);
});

test('a SHORT run (nothing listening) says so, shows the error code, and exits 1', async () => {
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const r = cli(['-', '0', '--duration', '1200ms'], `http://127.0.0.1:${port}/test/1\nhttp://127.0.0.1:${port}/test/2\n`);
  assert.equal(await r.exit, 1);
  const out = r.stdout.join('\n');
  assert.match(out, /SHORT/);
  assert.match(out, /asked 2, reached 0 \(SHORT by 2\)/);
  assert.match(out, /errors +ECONNREFUSED=2/);
  assert.match(r.stderr.join('\n'), /errors: ECONNREFUSED=2/);
});

test('out of file descriptors: EMFILE is counted per connection, never a crash', async () => {
  const srv = await comet();
  const urls = Array.from({ length: 200 }, (_, i) => `http://127.0.0.1:${srv.port}/test/${i + 1}`).join('\n');
  const r = cli(['-', '0', '--duration', '1200ms'], urls + '\n', 100);
  assert.equal(await r.exit, 1, r.stderr.join(' | '));
  const out = r.stdout.join('\n');
  const m = /asked 200, reached (\d+) \(SHORT by (\d+)\)/.exec(out);
  assert.ok(m, out);
  assert.ok(Number(m[1]) > 0 && Number(m[1]) < 100, `reached ${m[1]} with 100 descriptors`);
  assert.match(out, new RegExp(`errors +EMFILE=${m[2]}\\b`));
  assert.match(out, /peak RSS [1-9]/);
});

test('a second Ctrl-C exits at once with 130, even while the first is still stopping', async () => {
  const srv = await comet();
  const file = join(dir, 'urls2.txt');
  writeFileSync(file, Array.from({ length: 20 }, (_, i) => `http://127.0.0.1:${srv.port}/test/${i + 1}`).join('\n') + '\n');
  const r = cli([file, '0', '--procs', '2']);
  await r.line(/^Stats: \{20,0,0\}$/);
  const pid = r.child.pid!;
  const workers = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
  assert.equal(workers.length, 2);
  // Freeze the workers: the first stop waits for their final reports and cannot finish. They hold the CLI's stderr
  // pipe, so wait for the CLI's 'exit' (not 'close'), and thaw them whatever happens, at the latest after 5 s.
  const exited = new Promise<number | null>((res) => r.child.once('exit', (code) => res(code)));
  const thaw = (): void => {
    for (const w of workers) {
      try {
        process.kill(w, 'SIGCONT');
      } catch {
        // already gone
      }
    }
  };
  const safety = setTimeout(thaw, 5000);
  for (const w of workers) process.kill(w, 'SIGSTOP');
  try {
    r.child.kill('SIGINT');
    await r.errLine(/SIGINT: stopping/);
    r.child.kill('SIGINT');
    assert.equal(await exited, 130);
  } finally {
    clearTimeout(safety);
    thaw();
  }
  await r.exit;
  assert.doesNotMatch(r.stdout.join('\n'), /floodtest summary/);
  // Thawed, the orphaned workers see the IPC channel gone, close their connections and exit by themselves.
  const alive = (p: number): boolean => {
    try {
      process.kill(p, 0);
      return true;
    } catch {
      return false;
    }
  };
  const deadline = Date.now() + 10_000;
  while (workers.some(alive)) {
    if (Date.now() > deadline) {
      for (const w of workers) if (alive(w)) process.kill(w, 'SIGKILL');
      assert.fail('orphaned workers did not exit by themselves');
    }
    await new Promise((res) => setTimeout(res, 20));
  }
  await waitForZero(srv);
});
