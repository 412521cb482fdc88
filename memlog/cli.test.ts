import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { readFileSync, mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseLog } from './row.js';

const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));
const SEED = fileURLToPath(new URL('../../memlog/fixtures/seed-mochimem.log', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'memlog-cli-'));
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

const run = (args: string[], input?: string): { status: number | null; stdout: string; stderr: string } => {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', input, timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
};

test('--help lists the commands', () => {
  const r = run(['--help']);
  assert.equal(r.status, 0);
  for (const word of ['memlog record', 'memlog summary', 'memlog plot', '--interval', '--pgrep', '--no-tree', '--sockets']) assert.ok(r.stdout.includes(word), word);
});

test('bad flags: one line naming the flag and the allowed range, exit 2', () => {
  const cases: [string[], RegExp][] = [
    [['record', '--pid', '1', '--interval', '5ms'], /^memlog: --interval: 5ms is out of range \(100ms to 1h\)\n$/],
    [['record', '--pid', 'abc'], /^memlog: --pid: 'abc' is not a whole number \(allowed: 1 to 4194304\)\n$/],
    [['record', '--pid', '1', '--port', '8000-70000'], /^memlog: --port: 70000 is out of range \(allowed: 1 to 65535\)\n$/],
    [['record', '--pid', '1', '--pgrep', 'x'], /exactly one of --pid PID and --pgrep PATTERN/],
    [['record', '--pid', '1', '--tree', '--no-tree'], /--tree and --no-tree: choose one/],
    [['record', '--pid', '1', '--sockets', 'ss'], /^memlog: --sockets: 'ss' is not one of auto, bpf, netlink, proc\n$/],
    [['record', '--pid', '1', '--frobnicate'], /^memlog: Unknown option '--frobnicate' \(see memlog --help\)\n$/],
    [['plot', SEED, '--width', '5'], /^memlog: --width: 5 is out of range \(allowed: 20 to 400\)\n$/],
    [['plot', SEED, '--out', 'x.jpg'], /--out: 'x\.jpg' must be a \.png path/],
    [['summary'], /summary takes one log file/],
    [['summary', join(dir, 'missing.log')], /cannot read log .*missing\.log': ENOENT/],
    [['launch'], /unknown command 'launch' \(allowed: record, summary, plot/],
  ];
  for (const [args, re] of cases) {
    const r = run(args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
  }
});

test('summary reads stdin and warns about the seed creep; --json parses', () => {
  const text = run(['summary', '-'], readFileSync(SEED, 'utf8'));
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /^WARN rss_kb grew 43%/m);
  const json = run(['summary', SEED, '--json']);
  assert.equal(json.status, 0);
  assert.equal(JSON.parse(json.stdout).series[0].plateauKb, 91120);
  const bad = run(['summary', '-'], 'Mon\tx\t1\t1\nMon\t1\t1\t1\n');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /log '-': line 1: unix 'x' is not a number/);
});

test('plot writes PNG and SVG and draws the terminal chart', () => {
  const out = join(dir, 'seed.png');
  const r = run(['plot', SEED, '--out', out, '--svg', '--title', 'seed', '--width', '40']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /memory \(RSS, MiB\) vs minutes elapsed/);
  assert.match(r.stderr, /wrote .*seed\.png and .*seed\.svg/);
  assert.ok(existsSync(out) && existsSync(join(dir, 'seed.svg')));
});

test('record appends to a file, copies it to stdout like tee, exits 0 when the watched process exits', async () => {
  const target = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000); process.stdout.write("up\\n")'], { stdio: ['ignore', 'pipe', 'ignore'] });
  children.push(target);
  await new Promise((r) => target.stdout!.once('data', r));
  const log = join(dir, 'rec.log');
  const rec = spawn(process.execPath, [CLI, 'record', '--pid', String(target.pid), '--interval', '100ms', '-o', log], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(rec);
  let stdout = '';
  let stderr = '';
  rec.stderr!.on('data', (d: Buffer) => (stderr += d));
  rec.stdout!.on('data', (d: Buffer) => {
    stdout += d;
    // Two samples seen: end the watched process.
    if (parseLog(stdout).length >= 2 && target.exitCode === null && target.signalCode === null) target.kill();
  });
  const status = await new Promise<number | null>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`memlog did not exit; stderr: ${stderr}`)), 10_000);
    rec.once('close', (code) => {
      clearTimeout(t);
      resolve(code);
    });
  });
  assert.equal(status, 0, stderr);
  assert.match(stderr, new RegExp(`pid ${target.pid} exited`));
  const text = readFileSync(log, 'utf8');
  assert.equal(stdout, text);
  assert.ok(parseLog(text).length >= 2);
  assert.match(text, /^# date\tunix\trss_kb\tconns/);
  assert.match(text, /exited; memlog stopped\n$/);
});
