// startFlood against real sockets: the reference comet server for counts, and tiny raw servers that misbehave
// on purpose for errors by code. Each test waits on conditions (with a deadline), never on sleeps.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { startCometServer, type CometServer } from '../server/index.js';
import { nowMicros, formatMessage } from '../lib/marker.js';
import { startFlood, type FloodHandle, type Sample } from './index.js';

const handles: FloodHandle[] = [];
const servers: Array<{ close(): Promise<void> }> = [];
after(async () => {
  await Promise.all(handles.map((h) => h.stop()));
  await Promise.all(servers.map((s) => s.close()));
});

async function flood(opts: Parameters<typeof startFlood>[0]): Promise<FloodHandle> {
  const h = await startFlood({ sampleIntervalMs: 100, ...opts });
  handles.push(h);
  return h;
}

async function comet(opts: Parameters<typeof startCometServer>[0] = {}): Promise<CometServer> {
  const s = await startCometServer({ host: '127.0.0.1', port: 0, controlPort: 0, ...opts });
  servers.push({ close: () => s.stop() });
  return s;
}

// Polls `get` until `ok` holds, or fails after `ms` with the last value seen.
async function waitFor<T>(what: string, get: () => T, ok: (v: T) => boolean, ms = 8000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = get();
    if (ok(v)) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; last: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

// A raw TCP server; `onConn` decides how to misbehave.
async function rawServer(onConn: (s: net.Socket) => void): Promise<{ port: number; sockets: Set<net.Socket> }> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    onConn(s);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  servers.push({
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        srv.close(() => r());
      }),
  });
  return { port: (srv.address() as net.AddressInfo).port, sockets };
}

async function send(controlPort: number, id: number, msg: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${controlPort}/send/${id}`, { method: 'POST', body: msg });
  assert.equal(res.status, 200);
  return ((await res.json()) as { delivered: number }).delivered;
}

function range(n: number, f: (i: number) => string): string[] {
  return Array.from({ length: n }, (_, i) => f(i + 1));
}

test('N connections, M messages via the control API → exactly M × receivers chunks and events, all timed', async () => {
  const srv = await comet();
  // 40 ids on /test/ and 10 on /sse/, each URL opened 4 times (maxConns cycles the list): 200 connections.
  const urls = [...range(40, (i) => `http://127.0.0.1:${srv.port}/test/${i}`), ...range(10, (i) => `http://127.0.0.1:${srv.port}/sse/${i}`)];
  const h = await flood({ urls, maxConns: 200 });
  await waitFor('200 streams', () => srv.stats().connections, (n) => n === 200);
  await waitFor('200 connected', () => h.sample().connected, (n) => n === 200);
  // 3 messages to each of ids 1..12: ids 1..10 have 4 /test/ and 4 /sse/ receivers, ids 11..12 only 4 /test/.
  let delivered = 0;
  for (let m = 0; m < 3; m++) for (let id = 1; id <= 12; id++) delivered += await send(srv.controlPort, id, formatMessage('Fake message', m, nowMicros()));
  assert.equal(delivered, 3 * (10 * 8 + 2 * 4));
  const chunks = 3 * 12 * 4;
  const events = 3 * 10 * 4;
  const s = await waitFor('all messages', () => h.sample(), (x: Sample) => x.chunks >= chunks && x.events >= events);
  assert.equal(s.latency.count, chunks + events);
  const summary = await h.stop();
  assert.equal(summary.chunks, chunks, 'no extra chunks');
  assert.equal(summary.events, events, 'no extra events');
  assert.equal(summary.latency.count, chunks + events);
  assert.ok(summary.latency.max < 10_000_000, 'latency in microseconds, below 10 s on loopback');
  assert.deepEqual(summary.errors, {});
  assert.equal(summary.asked, 200);
  assert.equal(summary.reached, 200);
  assert.equal(summary.short, false);
  assert.equal(summary.open, 200);
  assert.equal(summary.closed, 0);
  assert.ok(summary.rampMs > 0 && summary.connectsPerSec > 0);
  assert.equal(srv.stats().chunksOut, chunks + events);
});

// Every emitted sample's interval counts, summed over the run so far, equal its cumulative count.
function assertIntervalsAddUp(samples: readonly Sample[]): void {
  let sum = 0;
  for (const x of samples) {
    sum += x.intervalLatency.count;
    assert.equal(sum, x.latency.count, `interval counts add up to the total at t=${x.t}`);
    if (x.intervalLatency.count > 0) assert.ok(x.intervalLatency.max <= x.latency.max && x.intervalLatency.p50 > 0);
    else assert.deepEqual(x.intervalLatency, { count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 });
  }
}

test('intervalLatency: per-sample latencies whose counts add up to the total; an interval without messages has count 0', async () => {
  const srv = await comet();
  const urls = range(20, (i) => `http://127.0.0.1:${srv.port}/test/${i}`);
  const emitted: Sample[] = [];
  const h = await flood({ urls, onSample: (x) => emitted.push(x) });
  await waitFor('20 connected', () => h.sample().connected, (n) => n === 20);
  // Two bursts with at least one sample between them, so the messages fall into more than one interval.
  for (let id = 1; id <= 10; id++) await send(srv.controlPort, id, formatMessage('a', id, nowMicros()));
  const first = await waitFor('an emitted sample with the first burst', () => emitted.at(-1), (x) => x !== undefined && x.latency.count === 10);
  const before = emitted.indexOf(first!);
  for (let id = 1; id <= 20; id++) await send(srv.controlPort, id, formatMessage('b', id, nowMicros()));
  const all = await waitFor('an emitted sample with both bursts', () => emitted.at(-1), (x) => x !== undefined && x.latency.count === 30);
  const idx = emitted.indexOf(all!);
  // The next interval has no messages.
  const quiet = await waitFor('an emitted sample after the last message', () => emitted[idx + 1], (x) => x !== undefined);
  assert.equal(quiet!.intervalLatency.count, 0);
  assert.equal(quiet!.latency.count, 30, 'the cumulative field is unchanged');
  assertIntervalsAddUp(emitted);
  assert.ok(emitted.slice(before + 1, idx + 1).some((x) => x.intervalLatency.count > 0), 'the second burst shows in a later interval');
  assert.equal(first!.intervalLatency.count + emitted.slice(0, before).reduce((a, x) => a + x.intervalLatency.count, 0), 10);
  const summary = await h.stop();
  assert.equal(summary.latency.count, 30);
});

test('a server that ends its streams: every stream counted as closed, not as an error', async () => {
  const srv = await startCometServer({ host: '127.0.0.1', port: 0, controlPort: 0 });
  const h = await flood({ urls: range(30, (i) => `http://127.0.0.1:${srv.port}/test/${i}`) });
  await waitFor('30 connected', () => h.sample().connected, (n) => n === 30);
  await srv.stop(); // graceful: a terminating chunk on every stream
  const s = await waitFor('30 closed', () => h.sample(), (x: Sample) => x.closed === 30);
  assert.equal(s.connected, 0);
  assert.deepEqual(s.errors, {});
});

test('--procs 2: a real two-process run; counts and histograms merged into one sample and summary', async () => {
  const srv = await comet();
  const urls = range(100, (i) => `http://127.0.0.1:${srv.port}/test/${i}`);
  const emitted: Sample[] = [];
  const h = await flood({ urls, maxConns: 300, procs: 2, onSample: (x) => emitted.push(x) });
  assert.equal(h.procs, 2);
  await waitFor('300 streams on the server', () => srv.stats().connections, (n) => n === 300);
  await waitFor('300 connected (merged)', () => h.sample().connected, (n) => n === 300);
  // Ids 1..100 each have 3 receivers, split over the two workers (slot i → worker i mod 2).
  for (let m = 0; m < 2; m++) for (let id = 1; id <= 20; id++) assert.equal(await send(srv.controlPort, id, `m${m} @t=${nowMicros()}`), 3);
  const want = 2 * 20 * 3;
  const s = await waitFor('merged chunks', () => h.sample(), (x: Sample) => x.chunks === want && x.latency.count === want);
  assert.equal(s.procs, 2);
  // The workers' interval histograms, merged per parent sample, add up to the merged total.
  const all = await waitFor('an emitted sample with every message', () => emitted.at(-1), (x) => x !== undefined && x.latency.count === want);
  await waitFor('one more emitted sample', () => emitted.length, (n) => n > emitted.indexOf(all!) + 1);
  assertIntervalsAddUp(emitted);
  assert.equal(emitted.at(-1)!.intervalLatency.count, 0, 'a quiet interval, merged from both workers, has count 0');
  const summary = await h.stop();
  assert.equal(summary.procs, 2);
  assert.equal(summary.chunks, want);
  assert.equal(summary.latency.count, want, 'histograms from both workers merged');
  assert.equal(summary.reached, 300);
  assert.equal(summary.open, 300);
  assert.equal(summary.short, false);
  assert.deepEqual(summary.errors, {});
  assert.ok(summary.rssPeak > 0);
});

test('--procs 2: a worker that dies mid-run is counted (WORKER_EXIT), its streams as closed; the rest go on', async () => {
  const srv = await comet();
  const h = await flood({ urls: range(40, (i) => `http://127.0.0.1:${srv.port}/test/${i}`), procs: 2 });
  await waitFor('40 connected', () => h.sample().connected, (n) => n === 40);
  assert.equal(h.pids.length, 2);
  process.kill(h.pids[1]!, 'SIGKILL');
  const s = await waitFor('worker exit counted', () => h.sample(), (x: Sample) => x.errors.WORKER_EXIT === 1);
  assert.equal(s.connected, 20);
  assert.equal(s.closed, 20);
  const summary = await h.stop();
  assert.equal(summary.open, 20);
  assert.equal(summary.reached, 40);
});

test('errors by code: closed port → ECONNREFUSED, 404 → HTTP_404, reset → ECONNRESET, silence → ETIMEDOUT', async () => {
  const srv = await comet();
  // A port with nothing listening: bind one, then close it.
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const closedPort = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  // Resets as soon as the request arrives.
  const reset = await rawServer((s) => s.once('data', () => s.resetAndDestroy()));
  // Accepts and never answers.
  const silent = await rawServer(() => {});
  const urls = [
    ...range(5, (i) => `http://127.0.0.1:${closedPort}/test/${i}`),
    ...range(4, (i) => `http://127.0.0.1:${srv.port}/nothing/${i}`),
    ...range(3, (i) => `http://127.0.0.1:${reset.port}/test/${i}`),
    ...range(2, (i) => `http://127.0.0.1:${silent.port}/test/${i}`),
    ...range(6, (i) => `http://127.0.0.1:${srv.port}/test/${i}`),
  ];
  const h = await flood({ urls, connectTimeoutMs: 300 });
  const s = await waitFor('every failure counted', () => h.sample(), (x: Sample) => Object.values(x.errors).reduce((a, b) => a + b, 0) >= 14 && x.inflight === 0);
  assert.deepEqual(s.errors, { ECONNREFUSED: 5, HTTP_404: 4, ECONNRESET: 3, ETIMEDOUT: 2 });
  assert.equal(s.connected, 6);
  const summary = await h.stop();
  assert.equal(summary.reached, 6);
  assert.equal(summary.short, true);
  assert.equal(summary.errorsTotal, 14);
});

test('a stream reset mid-way counts as closed plus ECONNRESET; a malformed response counts its parser code', async () => {
  const head = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n';
  const midway = await rawServer((s) =>
    s.once('data', () => {
      s.write(head + '5\r\nhello\r\n');
      setTimeout(() => s.resetAndDestroy(), 50);
    }),
  );
  const garbage = await rawServer((s) => s.once('data', () => s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n')));
  const h = await flood({ urls: [`http://127.0.0.1:${midway.port}/a`, `http://127.0.0.1:${midway.port}/b`, `http://127.0.0.1:${garbage.port}/c`] });
  const s = await waitFor('both outcomes', () => h.sample(), (x: Sample) => x.closed === 3 && (x.errors.ECONNRESET ?? 0) === 2);
  assert.deepEqual(s.errors, { ECONNRESET: 2, HPE_INVALID_CHUNK_SIZE: 1 });
  assert.equal(s.chunks, 2);
  assert.equal(s.established, 3);
});

test('the in-flight cap holds: never more connects pending than --inflight', async () => {
  const silent = await rawServer(() => {});
  const h = await flood({ urls: range(40, (i) => `http://127.0.0.1:${silent.port}/test/${i}`), inflight: 7, connectTimeoutMs: 60_000 });
  await waitFor('7 sockets on the server', () => silent.sockets.size, (n) => n === 7);
  assert.equal(h.sample().inflight, 7);
  // Let the loop turn a few times: still 7, nothing else was started.
  await new Promise((r) => setImmediate(r));
  await waitFor('inflight gauge', () => h.sample().inflight, (n) => n === 7, 100);
  assert.equal(silent.sockets.size, 7);
});

test('the connect pace: interval-ms spaces connects out (the ramp cannot be faster than the schedule)', async () => {
  const srv = await comet();
  const h = await flood({ urls: range(10, (i) => `http://127.0.0.1:${srv.port}/test/${i}`), intervalMs: 20 });
  await waitFor('10 connected', () => h.sample().connected, (n) => n === 10);
  const summary = await h.stop();
  // The 10th connect is due at 9 × 20 ms after the first.
  assert.ok(summary.rampMs >= 175, `ramp ${summary.rampMs} ms`);
});

test('--reconnect reopens streams the server ends, with backoff; without it, a closed slot stays closed', async () => {
  // Answers 200 and ends the stream at once, so every connection closes right after opening.
  const flappy = await rawServer((s) => s.once('data', () => s.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')));
  const urls = range(5, (i) => `http://127.0.0.1:${flappy.port}/test/${i}`);
  const h = await flood({ urls, reconnect: true, reconnectBaseMs: 5, reconnectMaxMs: 20 });
  const s = await waitFor('reconnects', () => h.sample(), (x: Sample) => x.established >= 20);
  assert.ok(s.closed >= 15);
  await h.stop();
  const once = await flood({ urls });
  const s1 = await waitFor('5 closed', () => once.sample(), (x: Sample) => x.closed === 5);
  assert.equal(s1.established, 5);
  const final = await once.stop();
  assert.equal(final.established, 5, 'no reconnect without --reconnect');
});

test('invalid options are rejected before anything opens', async () => {
  await assert.rejects(startFlood({ urls: [] }), /urls: at least one URL/);
  await assert.rejects(startFlood({ urls: ['http://a/1'], inflight: 0 }), /inflight: 0 is out of range/);
  await assert.rejects(startFlood({ urls: ['http://a/1'], intervalMs: -1 }), /intervalMs/);
  await assert.rejects(startFlood({ urls: ['gopher://a/1'] }), /only http/);
});

test('https: TLS streams are counted; an unverifiable certificate is an error by its code unless insecure', async () => {
  const fixture = (name: string): Buffer => readFileSync(new URL(`../../floodtest/fixtures/${name}`, import.meta.url));
  const sockets = new Set<tls.TLSSocket>();
  const srv = tls.createServer({ key: fixture('tls-key.pem'), cert: fixture('tls-cert.pem') }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.once('data', () => {
      s.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n');
      const event = 'data: a @t=1000\n\n';
      s.write(`${event.length.toString(16)}\r\n${event}\r\n`); // one chunk, one event
    });
  });
  srv.on('tlsClientError', () => {});
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  servers.push({
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        srv.close(() => r());
      }),
  });
  const port = (srv.address() as net.AddressInfo).port;
  const urls = range(3, (i) => `https://127.0.0.1:${port}/sse/${i}`);
  const ok = await flood({ urls, insecure: true });
  const s = await waitFor('3 TLS streams with one event each', () => ok.sample(), (x: Sample) => x.events === 3);
  assert.equal(s.connected, 3);
  assert.equal(s.chunks, 3);
  assert.equal(s.latency.count, 3);
  await ok.stop();
  const strict = await flood({ urls });
  const e = await waitFor('certificate errors', () => strict.sample(), (x: Sample) => x.inflight === 0 && Object.keys(x.errors).length > 0);
  assert.deepEqual(e.errors, { DEPTH_ZERO_SELF_SIGNED_CERT: 3 });
  assert.equal(e.connected, 0);
});
