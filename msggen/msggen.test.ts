import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { startCometServer, type CometServer } from '../server/index.js';
import { parseMarker } from '../lib/marker.js';
import { resolveOptions, startMsggen, MsggenOptionError, type Sample } from './index.js';

let server: CometServer;
let target: string;

before(async () => {
  server = await startCometServer({ host: '127.0.0.1', port: 0, controlHost: '127.0.0.1', controlPort: 0 });
  target = `http://127.0.0.1:${server.controlPort}`;
});

after(async () => {
  await server.stop();
});

/** Resolves when `check()` is true, polling on a short interval; rejects after `ms`. */
async function waitFor(what: string, check: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * A throwaway control-API stand-in that records POST paths and bodies, answering after `delayMs`; it also notes how
 * many connections were open when the first POST arrived, and answers warm-up GETs at once.
 */
async function recordingServer(delayMs = 0): Promise<{ url: string; paths: string[]; bodies: string[]; connsAtFirstPost: () => number; close(): Promise<void> }> {
  const paths: string[] = [];
  const bodies: string[] = [];
  let conns = 0;
  let connsAtFirstPost = -1;
  const srv = http.createServer((req, res) => {
    if (req.method === 'GET') {
      res.end('ok\n');
      return;
    }
    if (connsAtFirstPost < 0) connsAtFirstPost = conns;
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      paths.push(req.url ?? '');
      bodies.push(body);
      const answer = (): void => {
        res.end(req.url === '/send' ? JSON.stringify({ accepted: body.split('\n').filter(Boolean).length, delivered: 0 }) : '{"delivered":0}');
      };
      if (delayMs > 0) setTimeout(answer, delayMs);
      else answer();
    });
  });
  srv.on('connection', () => conns++);
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  return {
    url,
    paths,
    bodies,
    connsAtFirstPost: () => connsAtFirstPost,
    close: () => {
      srv.closeAllConnections();
      return new Promise((r) => srv.close(() => r()));
    },
  };
}

test('N messages sent: the server counts exactly N more messages in, one per request', async () => {
  const before = server.stats().messagesIn;
  const h = startMsggen({ target, procs: 5, rate: 400, num: 40, max: 1000, seed: 1 });
  const s = await h.done;
  assert.equal(s.sent, 200);
  assert.equal(s.acked, 200);
  assert.equal(s.requests, 200);
  assert.deepEqual(s.errors, {});
  assert.equal(s.failed, 0);
  assert.equal(s.unsent, 0);
  assert.equal(s.stoppedBy, 'num');
  assert.equal(server.stats().messagesIn - before, 200);
  assert.equal(s.latency.count, 200, 'one publish latency per acked message');
});

test('N messages with --batch: exactly N more messages in, in ceil-ish fewer requests', async () => {
  const before = server.stats().messagesIn;
  const s = await startMsggen({ target, procs: 4, rate: 500, num: 50, batch: 10, seed: 2, connections: 1 }).done;
  assert.equal(s.sent, 200);
  assert.equal(s.acked, 200);
  assert.deepEqual(s.errors, {});
  assert.ok(s.requests <= 200 && s.requests >= 20, `requests ${s.requests}`);
  assert.equal(server.stats().messagesIn - before, 200);
});

test('N messages from worker threads: exactly N more messages in, histograms merged', async () => {
  const before = server.stats().messagesIn;
  const s = await startMsggen({ target, procs: 6, rate: 200, num: 20, threads: 3, batch: 5, seed: 3 }).done;
  assert.equal(s.sent, 120);
  assert.equal(s.acked, 120);
  assert.deepEqual(s.errors, {});
  assert.equal(s.latency.count, 120);
  assert.equal(server.stats().messagesIn - before, 120);
});

test('delivered sums the server answers, and the text carries Num and the @t= marker', async () => {
  // One streaming listener logged in as id 1; every message goes to id 1 (max 1).
  const sock = net.connect(server.port, '127.0.0.1');
  let received = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => (received += d));
  await once(sock, 'connect');
  sock.write('GET /test/1 HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitFor('the stream to open', () => server.stats().connections >= 1);
  try {
    const s = await startMsggen({ target, procs: 2, rate: 200, num: 5, max: 1, seed: 4, text: 'Hello' }).done;
    assert.equal(s.acked, 10);
    assert.equal(s.delivered, 10, 'each message reached the one open connection');
    await waitFor('10 chunks', () => (received.match(/Recvd msg #/g) ?? []).length === 10);
    const texts = [...received.matchAll(/Recvd msg #\d+: '([^']*)'/g)].map((m) => m[1]!);
    // Each worker numbers its own messages 1..num.
    assert.deepEqual(texts.map((t) => Number(/Num = (\d+)/.exec(t)![1])).sort(), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    for (const t of texts) {
      assert.match(t, /^Hello Num = \d+ @t=\d{16}$/);
      const us = parseMarker(t);
      assert.ok(Math.abs(us / 1000 - Date.now()) < 60_000, 'the marker is a microsecond epoch time');
    }
  } finally {
    sock.destroy();
  }
});

test('same seed → same ids, whatever the thread count; another seed → other ids', async () => {
  const rec = await recordingServer();
  try {
    const run = async (seed: number, threads: number): Promise<number[]> => {
      rec.paths.length = 0;
      await startMsggen({ target: rec.url, procs: 4, rate: 500, num: 10, max: 1_000_000, seed, threads }).done;
      return rec.paths.map((p) => Number(p.slice('/send/'.length))).sort((a, b) => a - b);
    };
    const a = await run(9, 1);
    const b = await run(9, 2);
    const c = await run(10, 1);
    assert.equal(a.length, 40);
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
  } finally {
    await rec.close();
  }
});

test('warm-up opens every connection before the first send, and is not counted', async () => {
  const rec = await recordingServer();
  try {
    const s = await startMsggen({ target: rec.url, procs: 1, rate: 100, num: 3, connections: 4, seed: 12 }).done;
    assert.equal(rec.connsAtFirstPost(), 4);
    assert.equal(s.requests, 3);
    assert.equal(s.sent, 3);
    assert.deepEqual(s.errors, {});
  } finally {
    await rec.close();
  }
});

test('server down: every request counted as ECONNREFUSED, no crash', async () => {
  const probe = net.createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const s = await startMsggen({ target: `http://127.0.0.1:${port}`, procs: 1, rate: 200, num: 5, seed: 5 }).done;
  assert.equal(s.sent, 5);
  assert.equal(s.acked, 0);
  assert.equal(s.failed, 5);
  assert.deepEqual(s.errors, { ECONNREFUSED: 5 });
});

test('401 without the token, accepted with it', async () => {
  const secured = await startCometServer({ host: '127.0.0.1', port: 0, controlHost: '127.0.0.1', controlPort: 0, token: 's3cret' });
  try {
    const url = `http://127.0.0.1:${secured.controlPort}`;
    const bad = await startMsggen({ target: url, procs: 2, rate: 200, num: 3, seed: 6 }).done;
    assert.deepEqual(bad.errors, { HTTP_401: 6 });
    assert.equal(bad.acked, 0);
    const batchBad = await startMsggen({ target: url, procs: 2, rate: 200, num: 3, seed: 6, batch: 3, token: 'wrong' }).done;
    assert.equal(batchBad.acked, 0);
    assert.ok((batchBad.errors.HTTP_401 ?? 0) >= 2, JSON.stringify(batchBad.errors));
    const good = await startMsggen({ target: url, procs: 2, rate: 200, num: 3, seed: 6, token: 's3cret' }).done;
    assert.equal(good.acked, 6);
    assert.deepEqual(good.errors, {});
    assert.equal(secured.stats().messagesIn, 6);
  } finally {
    await secured.stop();
  }
});

test('413 for a message text over the server limit', async () => {
  const before = server.stats().messagesIn;
  const s = await startMsggen({ target, procs: 1, rate: 100, num: 3, seed: 7, text: 'x'.repeat(70 * 1024) }).done;
  assert.equal(s.sent, 3);
  assert.equal(s.acked, 0);
  assert.deepEqual(s.errors, { HTTP_413: 3 });
  assert.equal(server.stats().messagesIn, before);
});

test('a batch rejected part-way (400): the lines the server applied count as acked, the rest as failed', async () => {
  const before = server.stats().messagesIn;
  // Text sized so messages Num = 1..9 are exactly 64 KiB (the server's limit) and Num = 10.. one byte over:
  // `<text> Num = <n> @t=<16 digits>` is text + 27 + digits(n) bytes.
  const text = 'x'.repeat(65536 - 28);
  // 1e6/s: all 12 sends are due by the first pump, so they usually travel in one batch of 12 (lines 1-9 applied).
  const s = await startMsggen({ target, procs: 1, rate: 1_000_000, num: 12, batch: 12, seed: 11, text }).done;
  assert.equal(s.sent, 12);
  assert.equal(s.acked, 9);
  assert.equal(s.failed, 3);
  assert.ok((s.errors.HTTP_400 ?? 0) >= 1, JSON.stringify(s.errors));
  assert.equal(server.stats().messagesIn - before, 9);
});

test('--duration: exactly the sends scheduled before the end, then stop', async () => {
  const s = await startMsggen({ target, procs: 2, rate: 50, durationMs: 300, seed: 8 }).done;
  // 100/s in all for 300 ms: sends at 0, 10, ..., 290 ms.
  assert.equal(s.stoppedBy, 'duration');
  assert.equal(s.scheduled, 30);
  assert.equal(s.sent, 30);
  assert.equal(s.acked, 30);
  assert.equal(s.unsent, 0);
  assert.equal(s.achievedRate, 100);
});

test('a slow server does not slow the schedule: held-back sends are late, latency counts from the schedule', async () => {
  const slow = await recordingServer(60);
  try {
    // 200/s but one connection answering after 60 ms: at most ~17 requests/s get through.
    const s = await startMsggen({ target: slow.url, procs: 2, rate: 100, durationMs: 400, connections: 1, seed: 9, drainMs: 1000 }).done;
    assert.equal(s.scheduled, 80, 'the schedule kept its 200/s');
    assert.ok(s.sent < 20, `sent ${s.sent}`);
    assert.equal(s.unsent, s.scheduled - s.sent);
    assert.ok(s.late >= s.sent - 2, `late ${s.late} of ${s.sent}`);
    assert.equal(s.acked, s.sent);
    // The last acked send waited ~(sent × 60 ms) behind its scheduled time.
    assert.ok(s.latency.max > 200_000, `max latency ${s.latency.max} µs`);
    assert.ok(s.requestLatency.p50 < 200_000, `request latency p50 ${s.requestLatency.p50} µs stays ~60 ms`);
  } finally {
    await slow.close();
  }
});

test('stop(): ends an unbounded run, the samples add up to the summary', async () => {
  const samples: Sample[] = [];
  const h = startMsggen({ target, procs: 4, rate: 100, seed: 10, sampleMs: 100, onSample: (x) => samples.push(x) });
  await waitFor('two samples', () => samples.length >= 2);
  const s = await h.stop();
  assert.equal(s.stoppedBy, 'stop');
  assert.ok(s.sent > 0);
  assert.equal(s.acked, s.sent);
  assert.equal(samples.reduce((a, x) => a + x.sent, 0), s.sent);
  assert.equal(samples.reduce((a, x) => a + x.acked, 0), s.acked);
  assert.equal(samples[0]!.type, 'sample');
  assert.ok(samples.every((x) => x.latency.count === x.acked));
  assert.deepEqual(await h.done, s);
});

test('bad options are refused at construction, naming the option and the range', () => {
  assert.throws(() => resolveOptions({ procs: 0 }), (e: unknown) => e instanceof MsggenOptionError && /procs: 0 is out of range \(allowed: whole number 1 to 100000\)/.test(e.message));
  assert.throws(() => resolveOptions({ procs: 2, threads: 3 }), /threads: 3 is more than procs/);
  assert.throws(() => resolveOptions({ target: 'ftp://x' }), /target/);
  assert.throws(() => resolveOptions({ target: 'http://127.0.0.1:8001/send' }), /without a path/);
  assert.throws(() => resolveOptions({ dist: 'pareto' as never }), /dist: 'pareto' is not one of uniform, zipf/);
  assert.throws(() => resolveOptions({ rate: 0 }), /rate/);
});
