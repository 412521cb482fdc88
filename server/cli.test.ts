// The comet-server CLI in a child process: the ready line, bad flags, and a graceful SIGTERM.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { RawClient, htmlChunk, openStream, withTimeout } from './testkit.js';
import { SERVER_NODE_FLAGS, SERVER_SHEBANG } from './node-flags.js';

const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));

interface Run {
  child: ChildProcess;
  stderr: () => string;
  stdout: () => string;
  exit: Promise<number | null>;
}

function run(args: string[], env: NodeJS.ProcessEnv = {}): Run {
  const child = spawn(process.execPath, [...SERVER_NODE_FLAGS, CLI, ...args], {
    env: { ...process.env, C1M_TOKEN: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  let out = '';
  child.stderr!.on('data', (d) => (err += d));
  child.stdout!.on('data', (d) => (out += d));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, stderr: () => err, stdout: () => out, exit };
}

async function ready(r: Run): Promise<{ port: number; control: number }> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const m = /listening .*port=(\d+) control=(\d+)/.exec(r.stderr());
    if (m) return { port: Number(m[1]), control: Number(m[2]) };
    if (Date.now() > deadline || r.child.exitCode !== null) assert.fail(`no ready line; stderr: ${r.stderr()}`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

describe('comet-server CLI', () => {
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  });

  it('bad flags name the flag and the allowed range, and exit 2', async () => {
    for (const [args, why] of [
      [['--port', '70000'], /--port: 70000 is out of range \(allowed: 0 to 65535\)/],
      [['--heartbeat', 'soon'], /--heartbeat: 'soon' is not a duration/],
      [['--max-buffer', '10'], /--max-buffer: 10 is out of range \(1024 to 1073741824 bytes\)/],
      [['--max-conns=-1'], /--max-conns: -1 is out of range \(allowed: 0 to 10000000\)/],
      [['--max-conns', '-1'], /Option '--max-conns' argument is ambiguous/],
      [['--frobnicate'], /Unknown option '--frobnicate'/],
      [['--writer', 'thread'], /--writer: 'thread' is not one of auto, pool, main/],
      [['--transport', 'epoll'], /--transport: 'epoll' is not one of auto, fd, wrap, net/],
      [['--transport', 'fd', '--host', 'localhost', '--port', '0', '--control-port', '0'], /--transport fd listens on IP addresses only, not 'localhost'/],
      [['--writer', 'pool', '--transport', 'net', '--port', '0', '--control-port', '0'], /--writer pool works with the fd and wrap transports only/],
      [['--control-host', '0.0.0.0', '--port', '0', '--control-port', '0'], /refusing to expose the control API on 0\.0\.0\.0 without a token/],
    ] as const) {
      const r = run([...args]);
      children.push(r.child);
      assert.equal(await withTimeout(r.exit, 10_000, 'exit'), 2, args.join(' '));
      assert.match(r.stderr(), why);
      assert.equal(r.stderr().trim().split('\n').length, 1, 'one line');
    }
  });

  it('starts with the shebang that server/node-flags.ts describes (the flags every script uses)', () => {
    const first = readFileSync(fileURLToPath(new URL('../../server/cli.ts', import.meta.url)), 'utf8').split('\n')[0];
    assert.equal(first, SERVER_SHEBANG);
  });

  it('--help and --version print on stdout and exit 0', async () => {
    const h = run(['--help']);
    assert.equal(await h.exit, 0);
    assert.match(h.stdout(), /Usage: comet-server/);
    assert.match(h.stdout(), /--max-conns N/);
    const v = run(['--version']);
    assert.equal(await v.exit, 0);
    assert.match(v.stdout(), /^\d+\.\d+\.\d+\n$/);
  });

  it('serves, then on SIGTERM ends every stream with the terminating chunk and exits 0 within 5 s', async () => {
    const r = run(['--host', '127.0.0.1', '--port', '0', '--control-port', '0', '--token', 'tok']);
    children.push(r.child);
    const { port, control } = await ready(r);
    const html = await openStream(port, '/test/42');
    const sse = await openStream(port, '/sse/42');
    const res = await fetch(`http://127.0.0.1:${control}/send/42`, { method: 'POST', body: 'bye', headers: { authorization: 'Bearer tok' } });
    assert.deepEqual(await res.json(), { delivered: 2 });
    await html.until(htmlChunk(1, 'bye'));
    // A client that stops reading never answers the server's FIN; the grace period must still end it in time.
    const stubborn = await openStream(port, '/test/43');
    stubborn.socket.pause();
    const t0 = Date.now();
    r.child.kill('SIGTERM');
    assert.equal(await html.untilClosed(5000), html.text);
    assert.ok(html.text.endsWith(htmlChunk(1, 'bye') + '0\r\n\r\n'), JSON.stringify(html.text.slice(-60)));
    assert.ok((await sse.untilClosed(5000)).endsWith('id: 1\ndata: bye\n\n'));
    assert.equal(await withTimeout(r.exit, 6000, 'exit after SIGTERM'), 0);
    assert.ok(Date.now() - t0 < 5000, `exited within 5 s (${Date.now() - t0} ms)`);
    stubborn.socket.resume();
    await stubborn.untilClosed();
    assert.match(r.stderr(), /SIGTERM: stopping/);
    // The port is closed: a new connection is refused.
    const late = new RawClient(port);
    await late.untilClosed();
  });

  it('reads the token from C1M_TOKEN', async () => {
    const r = run(['--host', '127.0.0.1', '--port', '0', '--control-port', '0'], { C1M_TOKEN: 'envtok' });
    children.push(r.child);
    const { control } = await ready(r);
    assert.equal((await fetch(`http://127.0.0.1:${control}/stats`)).status, 401);
    assert.equal((await fetch(`http://127.0.0.1:${control}/stats`, { headers: { authorization: 'Bearer envtok' } })).status, 200);
    r.child.kill('SIGINT');
    assert.equal(await withTimeout(r.exit, 6000, 'exit after SIGINT'), 0);
  });
});
