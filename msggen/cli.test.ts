import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { startCometServer, type CometServer } from '../server/index.js';

const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));
let server: CometServer;
let target: string;
const children = new Set<ChildProcess>();

before(async () => {
  server = await startCometServer({ host: '127.0.0.1', port: 0, controlHost: '127.0.0.1', controlPort: 0 });
  target = `http://127.0.0.1:${server.controlPort}`;
});

after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await server.stop();
});

interface Run {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exit: Promise<number | null>;
}

function run(args: string[]): Run {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  // A test must never hang on a child: 15 s is far beyond any run here.
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  void exit.then(() => clearTimeout(timer));
  return { child, stdout: () => out, stderr: () => err, exit };
}

test('--help prints usage and exits 0', async () => {
  const r = run(['--help']);
  assert.equal(await r.exit, 0);
  assert.match(r.stdout(), /Usage: msggen/);
  assert.match(r.stdout(), /--batch K/);
});

test('bad flags: one line naming the flag and the allowed range, exit 2', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--procs', '0'], /^msggen: --procs: 0 is out of range \(allowed: 1 to 100000\)\n$/],
    [['--rate', 'fast'], /^msggen: --rate: 'fast' is not a number \(allowed: 0\.001 to 1000000\)\n$/],
    [['--dist', 'pareto'], /^msggen: --dist: 'pareto' is not one of uniform, zipf\n$/],
    [['--duration', '10 minutes'], /^msggen: --duration: .*not a duration/],
    [['--procs', '2', '--threads', '3'], /^msggen: --threads: 3 is more than procs \(2\); allowed: 1 to 2\n$/],
    [['--target', 'localhost:8001'], /^msggen: --target: /],
    [['--batch', '0'], /^msggen: --batch: 0 is out of range \(allowed: 1 to 10000\)\n$/],
    [['--publish-template', 'http://127.0.0.1:8080/pub'], /^msggen: --publish-template: 'http:\/\/127\.0\.0\.1:8080\/pub' has no \{id\}/],
    [['--publish-template', 'ftp://h/pub?id={id}'], /^msggen: --publish-template: .*must be an http:\/\/ or https:\/\/ URL/],
    [['--publish-template', 'http://127.0.0.1:8080/pub?id={id}', '--batch', '5'], /^msggen: --publish-template: cannot be combined with --batch 5/],
    [['--publish-template', 'http://127.0.0.1:8080/pub?id={id}', '--redis', 'redis://127.0.0.1:6379'], /^msggen: --publish-template: cannot be combined with --redis/],
    [['--bogus'], /^msggen: Unknown option '--bogus'/],
    [['extra'], /^msggen: .*positional/i],
  ];
  for (const [args, want] of cases) {
    const r = run(args);
    assert.equal(await r.exit, 2, `exit code for ${args.join(' ')}`);
    assert.match(r.stderr(), want, `stderr for ${args.join(' ')}`);
    assert.equal(r.stdout(), '');
  }
});

test('a complete run: NDJSON samples then one summary on stdout, human summary on stderr, exit 0', async () => {
  const before = server.stats().messagesIn;
  const r = run(['--procs', '3', '--rate', '100', '--num', '20', '--target', target, '--seed', '5', '--json']);
  assert.equal(await r.exit, 0, r.stderr());
  const records = r.stdout().trim().split('\n').map((l) => JSON.parse(l) as { type: string; sent: number; acked: number; seed?: number });
  const summary = records.at(-1)!;
  assert.equal(summary.type, 'summary');
  assert.ok(records.slice(0, -1).every((x) => x.type === 'sample'));
  assert.equal(summary.sent, 60);
  assert.equal(summary.acked, 60);
  assert.equal(summary.seed, 5);
  assert.equal(records.slice(0, -1).reduce((a, x) => a + x.acked, 0), 60, 'samples add up to the summary');
  assert.equal(server.stats().messagesIn - before, 60);
  assert.match(r.stderr(), /msggen summary \(all sends made\)/);
  assert.match(r.stderr(), /sent 60 {2}acked 60/);
});

test('Ctrl-C: the first SIGINT stops and prints the summary', async () => {
  const r = run(['--procs', '2', '--rate', '200', '--target', target, '--json']);
  const firstSample = new Promise<void>((resolve) => {
    const check = (): void => {
      if (r.stdout().includes('"type":"sample"')) resolve();
    };
    r.child.stdout!.on('data', check);
  });
  await firstSample;
  r.child.kill('SIGINT');
  assert.equal(await r.exit, 0, r.stderr());
  const lines = r.stdout().trim().split('\n');
  const summary = JSON.parse(lines.at(-1)!) as { type: string; stoppedBy: string; sent: number; acked: number };
  assert.equal(summary.type, 'summary');
  assert.equal(summary.stoppedBy, 'stop');
  assert.ok(summary.sent > 0);
  assert.equal(summary.acked, summary.sent);
  assert.match(r.stderr(), /SIGINT: stopping/);
  assert.match(r.stderr(), /msggen summary \(stopped\)/);
});

test('Ctrl-C twice: the second exits at once with 130 while the first is still draining', async () => {
  // A server that accepts and never answers: the first Ctrl-C's drain would wait for its requests.
  const hole = net.createServer((c) => c.resume());
  hole.listen(0, '127.0.0.1');
  await once(hole, 'listening');
  try {
    const port = (hole.address() as AddressInfo).port;
    const r = run(['--procs', '1', '--rate', '50', '--target', `http://127.0.0.1:${port}`, '--no-warmup']);
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (/inflight [1-9]/.test(r.stderr())) resolve();
      };
      r.child.stderr!.on('data', check);
    });
    r.child.kill('SIGINT');
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (r.stderr().includes('SIGINT: stopping')) resolve();
      };
      check();
      r.child.stderr!.on('data', check);
    });
    r.child.kill('SIGINT');
    assert.equal(await r.exit, 130);
    assert.doesNotMatch(r.stderr(), /msggen summary/);
  } finally {
    hole.close();
  }
});

test('server down: errors counted by code, summary printed, exit 1', async () => {
  const probe = net.createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const r = run(['--procs', '1', '--rate', '100', '--num', '3', '--target', `http://127.0.0.1:${port}`]);
  assert.equal(await r.exit, 1);
  assert.match(r.stderr(), /errors ECONNREFUSED=3/);
});
