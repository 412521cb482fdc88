// A "third-party" server through --server-cmd: here the reference server started by a shell command on fixed free
// ports, measured without its /stats (as nginx+nchan would be): the acks' deliveries must equal floodtest's chunks.
import { strict as assert } from 'node:assert';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
