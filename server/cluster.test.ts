// `--workers`: a real primary (this test process) and real worker processes on real sockets.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { autoWorkers, parseListen, startCluster, type CometCluster } from './cluster.js';
import { eventually, htmlChunk, openStream, withTimeout, type RawClient } from './testkit.js';
import type { ServerStats } from './stats.js';
import { FlagError } from '../lib/flags.js';

const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));

async function post(port: number, path: string, body: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', body });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

async function getStats(port: number): Promise<ServerStats> {
  const res = await fetch(`http://127.0.0.1:${port}/stats`);
  return (await res.json()) as ServerStats;
}

/** Polls /stats until `pred` holds. */
async function statsUntil(port: number, pred: (s: ServerStats) => boolean, what: string, timeoutMs = 5000): Promise<ServerStats> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await getStats(port);
    if (pred(s)) return s;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; last /stats: ${JSON.stringify({ ...s, workers: s.workers })}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('comet-server --workers (2 real workers)', () => {
  let srv: CometCluster;
  const clients: RawClient[] = [];
  before(async () => {
    srv = await startCluster({ workers: 2, host: '127.0.0.1', port: 0, controlPort: 0 });
  });
  after(async () => {
    for (const c of clients) c.close();
    await srv.stop();
  });

  /** Opens streams for `id` until both workers hold at least one (round-robin alternates them). */
  async function spreadOverWorkers(id: number): Promise<RawClient[]> {
    const mine: RawClient[] = [];
    for (let i = 0; i < 8; i++) {
      const c = await openStream(srv.port, `/test/${id}`);
      mine.push(c);
      clients.push(c);
    }
    // Round-robin alternates the workers; open more only in the unlikely case that all landed on one.
    for (let i = 0; i < 8; i++) {
      const done = await eventually(() => srv.hub.slotsOf(id).length === 2, `id ${id} on both workers`, 1000).then(() => true, () => false);
      if (done) break;
      const c = await openStream(srv.port, `/test/${id}`);
      mine.push(c);
      clients.push(c);
    }
    await statsUntil(srv.controlPort, (s) => srv.hub.slotsOf(id).length === 2 && s.connections >= mine.length, 'streams on both workers');
    return mine;
  }

  it('a message through the primary reaches the connections of an id on each worker; /stats sums the workers', async () => {
    const mine = await spreadOverWorkers(41);
    const r = await post(srv.controlPort, '/send/41', 'to everyone');
    assert.deepEqual(r, { status: 200, json: { delivered: mine.length } });
    for (const c of mine) await c.until(htmlChunk(1, 'to everyone'));
    const s = await statsUntil(srv.controlPort, (x) => x.chunksOut >= mine.length, 'chunks out');
    const ws = s.workers!;
    assert.equal(ws.length, 2);
    assert.ok(ws.every((w) => w.connections > 0 && w.fresh && w.pid > 0));
    assert.equal(s.connections, ws[0]!.connections + ws[1]!.connections);
    assert.equal(s.chunksOut, ws[0]!.chunksOut + ws[1]!.chunksOut);
    assert.equal(s.messagesIn, 1);
    assert.equal(s.ids, 1, 'ids counts distinct ids across workers');
    const metrics = await (await fetch(`http://127.0.0.1:${srv.controlPort}/metrics`)).text();
    assert.match(metrics, new RegExp(`c1m_worker_connections\\{slot="0",pid="${ws[0]!.pid}"\\} ${ws[0]!.connections}`));
    assert.match(metrics, /^c1m_connections \d+$/m);
  });

  it('per-message cost: only the worker holding the id gets the IPC, and an id with no holder costs none', async () => {
    const c = await openStream(srv.port, '/test/52');
    clients.push(c);
    await statsUntil(srv.controlPort, () => srv.hub.idCount >= 2, 'id 52 registered');
    const before = [0, 1].map((slot) => srv.hub.counters(slot)!.delivers);
    const sends = [];
    for (let i = 0; i < 30; i++) sends.push(post(srv.controlPort, '/send/52', `m${i}`));
    for (let i = 0; i < 30; i++) sends.push(post(srv.controlPort, '/send/999999', 'nobody'));
    const res = await Promise.all(sends);
    assert.equal(res.filter((r) => r.json.delivered === 1).length, 30);
    assert.equal(res.filter((r) => r.json.delivered === 0).length, 30);
    await c.until((t) => t.includes("Recvd msg #30: '"));
    const d = [0, 1].map((slot) => srv.hub.counters(slot)!.delivers - before[slot]!);
    // 30 DELIVER ops in all, every one to a single worker: the holder.
    assert.equal(d[0]! + d[1]!, 30, `delivers per worker ${JSON.stringify(d)}`);
    assert.ok(d[0] === 30 || d[1] === 30, `delivers per worker ${JSON.stringify(d)}`);
  });

  it('a SIGKILLed worker is replaced, its streams count as closed, and the other worker keeps receiving', async () => {
    const mine = await spreadOverWorkers(63);
    const s0 = await getStats(srv.controlPort);
    const victimSlot = 0;
    const victim = s0.workers![victimSlot]!;
    const lost = victim.connections;
    assert.ok(lost > 0);
    const pidsBefore = srv.workerPids();
    process.kill(victim.pid, 'SIGKILL');
    const s1 = await statsUntil(
      srv.controlPort,
      (s) => s.workerRestarts === 1 && s.workers![victimSlot]!.fresh && s.workers![victimSlot]!.pid !== victim.pid,
      'the replacement worker',
    );
    assert.equal(s1.closed, s0.closed + lost, 'the dead worker\'s streams are counted as closed');
    assert.equal(s1.connections, s0.connections - lost);
    assert.equal(s1.workers![1]!.pid, pidsBefore[1], 'the other worker was not touched');
    // Every client of this suite so far: exactly the dead worker's see the close.
    await eventually(() => clients.filter((c) => c.closed).length === lost, 'the dead worker\'s clients to see the close');
    const alive = mine.filter((c) => !c.closed);
    assert.ok(alive.length > 0 && alive.length < mine.length);
    const r = await post(srv.controlPort, '/send/63', 'after the crash');
    assert.equal(r.json.delivered, alive.length);
    for (const c of alive) await c.until("'after the crash'");
    // The replacement takes new connections.
    const fresh: RawClient[] = [];
    for (let i = 0; i < 4; i++) fresh.push(await openStream(srv.port, '/test/64'));
    clients.push(...fresh);
    await statsUntil(srv.controlPort, (s) => s.workers![victimSlot]!.connections > 0 && srv.hub.idCount >= 1, 'streams on the replacement');
    const r2 = await post(srv.controlPort, '/send/64', 'new worker');
    assert.equal(r2.json.delivered, 4);
  });
});

describe('comet-server --workers with --listen (several addresses and ports)', () => {
  it('every listener of every worker serves streams, and a message reaches all of them', async () => {
    const listen = [...parseListen('--listen', '127.0.0.1-127.0.0.2:0'), { host: '127.0.0.3', port: 0 }];
    const srv = await startCluster({ workers: 2, listen, controlPort: 0 });
    const cs: RawClient[] = [];
    try {
      assert.equal(srv.listening.length, 3);
      assert.deepEqual(srv.listening.map((l) => l.host), ['127.0.0.1', '127.0.0.2', '127.0.0.3']);
      for (const l of srv.listening) for (let i = 0; i < 2; i++) cs.push(await openStream(l.port, '/sse/77', l.host));
      await statsUntil(srv.controlPort, (s) => s.connections === 6 && srv.hub.idCount === 1, 'six streams');
      const r = await post(srv.controlPort, '/send/77', 'everywhere');
      assert.equal(r.json.delivered, 6);
      for (const c of cs) await c.until('data: everywhere\n');
    } finally {
      for (const c of cs) c.close();
      await srv.stop();
    }
  });
});

describe('--listen and --workers flags', () => {
  it('parseListen expands hosts × ports and names the flag on bad input', () => {
    assert.deepEqual(parseListen('--listen', '127.0.0.1:8000-8002').map((l) => l.port), [8000, 8001, 8002]);
    assert.deepEqual(
      parseListen('--listen', '127.0.0.1-127.0.0.2:9000,9002').map((l) => `${l.host}:${l.port}`),
      ['127.0.0.1:9000', '127.0.0.1:9002', '127.0.0.2:9000', '127.0.0.2:9002'],
    );
    assert.deepEqual(parseListen('--listen', '[::1]:8000'), [{ host: '::1', port: 8000 }]);
    assert.throws(() => parseListen('--listen', '127.0.0.1'), FlagError);
    assert.throws(() => parseListen('--listen', '127.0.0.9-127.0.0.1:80'), /--listen/);
  });

  it('auto: the cores, or enough workers for --max-conns at 18,000 each', () => {
    assert.equal(autoWorkers(0, 2), 2);
    assert.equal(autoWorkers(100_000, 2), 6);
    assert.equal(autoWorkers(10_000, 8), 8);
  });

  it('the CLI refuses a bad --workers with one line naming the flag, exit 2', async () => {
    const child = spawn(process.execPath, [CLI, '--workers', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await withTimeout(new Promise<number | null>((r) => child.on('exit', r)), 5000, 'the CLI to exit');
    assert.equal(code, 2);
    assert.match(err, /--workers/);
    assert.equal(err.trim().split('\n').length, 1);
  });

  it('the CLI with --workers 2 prints one ready line, serves, and stops on SIGTERM within 5 s', async () => {
    const child = spawn(process.execPath, [CLI, '--workers', '2', '--listen', '127.0.0.1:0', '--control-port', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    const exited = new Promise<number | null>((r) => child.on('exit', r));
    try {
      await withTimeout(
        new Promise<void>((resolve) =>
          child.stderr.on('data', (d: Buffer) => {
            err += d.toString();
            if (err.includes('\n')) resolve();
          }),
        ),
        10_000,
        'the ready line',
      );
      const m = /port=(\d+) control=(\d+).*workers=2/.exec(err);
      assert.ok(m, err);
      const c = await openStream(Number(m[1]), '/test/5');
      await statsUntil(Number(m[2]), (s) => s.connections === 1 && s.ids === 1, 'the stream');
      assert.equal((await post(Number(m[2]), '/send/5', 'via cli')).json.delivered, 1);
      await c.until("'via cli'");
      const t0 = Date.now();
      child.kill('SIGTERM');
      await c.until('0\r\n\r\n'); // the terminating chunk from the worker's graceful stop
      assert.equal(await withTimeout(exited, 6000, 'the CLI to exit'), 0);
      assert.ok(Date.now() - t0 < 5000);
      c.close();
    } finally {
      child.kill('SIGKILL');
    }
  });
});
