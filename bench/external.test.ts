// A "third-party" server through --server-cmd: here the reference server started by a shell command on fixed free
// ports, measured without its /stats (as nginx+nchan would be): the acks' deliveries must equal floodtest's chunks.
import { strict as assert } from 'node:assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { startBench, type BenchHandle } from './run.js';
import type { Summary } from './summary.js';

/** A port that was free a moment ago (the server binds it right after). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

describe('c1m bench against a server given by --server-cmd', () => {
  const dir = mkdtempSync(join(tmpdir(), 'c1m-ext-'));
  let handle: BenchHandle | undefined;
  after(async () => {
    await handle?.stop('test cleanup').catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  it('ramps, publishes and counts without /stats; the server is stopped at the end', { timeout: 60_000 }, async () => {
    const port = await freePort();
    const control = await freePort();
    const serverCli = fileURLToPath(new URL('../server/cli.js', import.meta.url));
    const lines: string[] = [];
    handle = startBench({
      conns: 100, connectRate: 1000, procs: 10, rate: 10, durationMs: 1500, out: dir, destHosts: ['127.0.0.1'],
      settleMs: 200, idleMs: 0, drainTimeoutMs: 2000, memIntervalMs: 250, serverFlags: [], floodtestFlags: [], msggenFlags: [],
      serverCmd: `'${process.execPath}' '${serverCli}' --host 127.0.0.1 --port ${port} --control-port ${control}`,
      urlTemplate: `http://127.0.0.1:${port}/test/{id}`,
      publishTarget: `http://127.0.0.1:${control}`,
      preflightStops: true, argv: ['test'], log: (l) => lines.push(l),
    });
    const r = await handle.done;
    const s: Summary = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8'));
    assert.deepEqual(s.incidents, [], lines.join('\n'));
    assert.equal(s.conns.reached, 100);
    // No /stats: server-side counts are unknown, the acks and floodtest carry the check.
    assert.equal(s.messages.accepted, null);
    assert.ok(s.messages.sent! > 0);
    assert.equal(s.messages.acked, s.messages.sent);
    assert.equal(s.messages.deliveredAcked, s.messages.chunksReceived);
    assert.ok(s.checks.some((c) => c.name === 'delivered = received' && c.ok));
    // memlog watched the command's process (sh exec'd it) and counted its connections.
    assert.ok(existsSync(join(dir, 'mem.tsv')) && r.files.includes('mem.png'));
    assert.ok(s.memory.connsAtPlateau === 100, `memlog saw ${s.memory.connsAtPlateau} connections`);
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { derived: { pids: { server: number } } };
    assert.throws(() => process.kill(manifest.derived.pids.server, 0), { code: 'ESRCH' });
  });
});

/**
 * An nginx+nchan-like server in a few lines: `GET /sub/<id>` streams, every message one chunk; `POST /pub?id=<id>`
 * writes the body to that id's streams and answers 202 in text (no delivered count, as nchan does).
 */
const NCHAN_LIKE = `
import http from 'node:http';
const subs = new Map();
const srv = http.createServer((req, res) => {
  const u = new URL(req.url, 'http://x');
  const sub = /^\\/sub\\/(\\d+)$/.exec(u.pathname);
  if (req.method === 'GET' && sub) {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.flushHeaders();
    const id = sub[1];
    if (!subs.has(id)) subs.set(id, new Set());
    subs.get(id).add(res);
    res.on('close', () => subs.get(id).delete(res));
    return;
  }
  if (req.method === 'POST' && u.pathname === '/pub' && u.searchParams.has('id')) {
    let body = '';
    req.setEncoding('utf8').on('data', (d) => (body += d));
    req.on('end', () => {
      const set = subs.get(u.searchParams.get('id')) ?? new Set();
      for (const r of set) r.write(body);
      res.writeHead(202, { 'content-type': 'text/plain' }).end('queued messages: 1\\nsubscribers: ' + set.size + '\\n');
    });
    return;
  }
  res.writeHead(404).end();
});
srv.listen(Number(process.argv[2]), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
`;

describe('c1m bench against a third-party server publishing on /pub?id={id} (--publish-template)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'c1m-ext-pub-'));
  let handle: BenchHandle | undefined;
  after(async () => {
    await handle?.stop('test cleanup').catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  it('publishes through the template; sent = acked = chunks received; deliveries are not measured, not failed', { timeout: 60_000 }, async () => {
    const port = await freePort();
    const script = join(dir, 'nchan-like.mjs');
    writeFileSync(script, NCHAN_LIKE);
    const out = join(dir, 'run');
    const lines: string[] = [];
    handle = startBench({
      conns: 50, connectRate: 1000, procs: 5, rate: 10, durationMs: 1500, out, destHosts: ['127.0.0.1'],
      settleMs: 200, idleMs: 0, drainTimeoutMs: 2000, memIntervalMs: 250, serverFlags: [], floodtestFlags: [], msggenFlags: [],
      serverCmd: `'${process.execPath}' '${script}' ${port}`,
      urlTemplate: `http://127.0.0.1:${port}/sub/{id}`,
      publishTemplate: `http://127.0.0.1:${port}/pub?id={id}`,
      preflightStops: true, argv: ['test'], log: (l) => lines.push(l),
    });
    await handle.done;
    const s: Summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'));
    assert.deepEqual(s.incidents, [], lines.join('\n'));
    assert.equal(s.conns.reached, 50);
    // 5 workers × 10/s × 1.5 s; every id 1..50 has one stream open, so each acked message is one chunk received.
    assert.ok(s.messages.sent! >= 70 && s.messages.sent! <= 75, `sent ${s.messages.sent}`);
    assert.equal(s.messages.acked, s.messages.sent);
    assert.equal(s.messages.chunksReceived, s.messages.acked);
    assert.equal(s.messages.deliveredAcked, null, 'the publisher reports no delivered count, and none is made up');
    const line = s.accounting.find((a) => a.name === 'delivered = received');
    assert.equal(line?.notMeasured, true);
    assert.ok(s.checks.some((c) => c.name === 'generated = acked + publish errors' && c.ok));
    assert.equal(s.verdict.valid, true, s.verdict.line);
    assert.match(readFileSync(join(out, 'msggen.log'), 'utf8'), /delivered +not reported by the server/);
  });
});
