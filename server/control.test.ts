// The control API on real sockets: publishing, NDJSON batches, limits, token auth, stats and metrics.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ServerConfigError, startCometServer, type CometServer } from './index.js';
import { isLoopback, startControl } from './control.js';
import { DEFAULT_LIMITS } from './limits.js';
import { htmlChunk, openStream, type RawClient } from './testkit.js';

const STATS_FIELDS = [
  'connections', 'ids', 'connectionsTotal', 'closed', 'messagesIn', 'messagesDelivered', 'toNobody', 'chunksOut',
  'bytesOut', 'writes', 'slowDrops', 'badRequests', 'rejected', 'rss', 'heapUsed', 'uptimeSec',
];

describe('control API without a token', () => {
  let s: CometServer;
  let base: string;
  let stream: RawClient;
  before(async () => {
    s = await startCometServer({ host: '127.0.0.1', port: 0, controlHost: '127.0.0.1', controlPort: 0 });
    base = `http://127.0.0.1:${s.controlPort}`;
    stream = await openStream(s.port, '/test/123,124');
  });
  after(async () => {
    stream.close();
    await s.stop();
  });

  it('POST /send/<id> delivers the body and answers {"delivered": n}', async () => {
    const r = await fetch(`${base}/send/123`, { method: 'POST', body: 'hello <world>' });
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { delivered: 1 });
    await stream.until(htmlChunk(1, 'hello &lt;world&gt;'));
    const nobody = await fetch(`${base}/send/999`, { method: 'POST', body: 'x' });
    assert.deepEqual(await nobody.json(), { delivered: 0 });
  });

  it('POST /send with NDJSON applies every line and answers {"accepted", "delivered"}', async () => {
    const body = '{"id":123,"msg":"a"}\n{"id":"124","msg":"b"}\r\n\n{"id":5,"msg":"c"}\n';
    const r = await fetch(`${base}/send`, { method: 'POST', body });
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { accepted: 3, delivered: 2 });
    await stream.until(htmlChunk(3, 'b'));
  });

  it('a bad NDJSON line gets 400 naming the line and saying which lines were applied', async () => {
    const before = s.stats().messagesIn;
    const body = '{"id":123,"msg":"ok1"}\n{"id":123,"msg":"ok2"}\n{"id":-4,"msg":"bad"}\n{"id":123,"msg":"never"}\n';
    const r = await fetch(`${base}/send`, { method: 'POST', body });
    assert.equal(r.status, 400);
    const doc = (await r.json()) as Record<string, unknown>;
    assert.match(String(doc.error), /^line 3: bad id/);
    assert.equal(doc.line, 3);
    assert.equal(doc.accepted, 2);
    assert.match(String(doc.applied), /2 good line\(s\) before line 3 were applied; line 3 and the lines after it were not/);
    assert.equal(s.stats().messagesIn, before + 2);
    await stream.until(htmlChunk(5, 'ok2'));
    for (const [bad, why] of [
      ['not json', /line 1: not valid JSON/],
      ['[1,2]', /line 1: not a JSON object/],
      ['{"msg":"x"}', /line 1: bad id: missing "id"/],
      ['{"id":1}', /line 1: missing "msg"/],
      ['{"id":1.5,"msg":"x"}', /line 1: bad id/],
    ] as const) {
      const res = await fetch(`${base}/send`, { method: 'POST', body: bad });
      assert.equal(res.status, 400);
      const d = (await res.json()) as Record<string, unknown>;
      assert.match(String(d.error), why);
      assert.match(String(d.applied), /no line was applied/);
    }
  });

  it('a message over 64 KiB gets 413, whether announced by Content-Length or streamed', async () => {
    const big = 'x'.repeat(64 * 1024 + 1);
    const r = await fetch(`${base}/send/123`, { method: 'POST', body: big });
    assert.equal(r.status, 413);
    assert.match(((await r.json()) as { error: string }).error, /larger than the limit of 65536 bytes/);
    const streamed = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 3; i++) controller.enqueue(new Uint8Array(30_000).fill(65));
        controller.close();
      },
    });
    const r2 = await fetch(`${base}/send/123`, { method: 'POST', body: streamed, duplex: 'half' } as RequestInit);
    assert.equal(r2.status, 413);
    const exact = await fetch(`${base}/send/124`, { method: 'POST', body: 'y'.repeat(64 * 1024) });
    assert.deepEqual(await exact.json(), { delivered: 1 });
  });

  it('bad ids, unknown paths and wrong methods get one-line JSON errors', async () => {
    for (const [path, method, status, why] of [
      ['/send/abc', 'POST', 400, /bad id: id 'abc' is not a non-negative decimal integer/],
      ['/send/9007199254740992', 'POST', 400, /larger than/],
      ['/send/', 'POST', 400, /empty id/],
      ['/nope', 'GET', 404, /no such path/],
      ['/send/1', 'GET', 405, /use POST/],
      ['/stats', 'POST', 405, /use GET/],
    ] as const) {
      const r = await fetch(base + path, { method, body: method === 'POST' ? 'x' : undefined });
      assert.equal(r.status, status, path);
      assert.match(((await r.json()) as { error: string }).error, why);
    }
  });

  it('GET /stats has the contract fields, and counts what happened', async () => {
    const r = await fetch(`${base}/stats`);
    assert.equal(r.status, 200);
    const st = (await r.json()) as Record<string, number>;
    for (const f of STATS_FIELDS) assert.equal(typeof st[f], 'number', f);
    assert.equal(st.connections, 1);
    assert.equal(st.ids, 2);
    assert.equal(st.messagesIn, st.messagesDelivered + st.toNobody);
    assert.ok(st.toNobody >= 2);
    assert.ok(st.rss > 1e6 && st.heapUsed > 1e5);
  });

  it('GET /metrics is Prometheus text with the same figures; GET /healthz says ok', async () => {
    const r = await fetch(`${base}/metrics`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await r.text();
    assert.match(text, /^# HELP c1m_connections Open streaming connections\.\n# TYPE c1m_connections gauge\nc1m_connections 1\n/);
    assert.match(text, /\nc1m_messages_in_total \d+\n/);
    assert.match(text, /\nc1m_process_rss_bytes \d+\n/);
    for (const line of text.trim().split('\n')) assert.match(line, /^(# (HELP|TYPE) \w+ .+|\w+ \d+(\.\d+)?)$/);
    const h = await fetch(`${base}/healthz`);
    assert.equal(h.status, 200);
    assert.equal(await h.text(), 'ok\n');
  });

  it('the public port never accepts a publish', async () => {
    const before = s.stats().messagesIn;
    const c = net.connect(s.port, '127.0.0.1');
    c.write('POST /send/123 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello');
    const text = await new Promise<string>((resolve) => {
      let t = '';
      c.on('data', (d) => (t += d));
      c.on('close', () => resolve(t));
    });
    assert.match(text, /^HTTP\/1\.1 501 /);
    assert.equal(s.stats().messagesIn, before);
  });
});

describe('control API with a token', () => {
  let s: CometServer;
  let base: string;
  before(async () => {
    s = await startCometServer({ host: '127.0.0.1', port: 0, controlHost: '127.0.0.1', controlPort: 0, token: 's3cret' });
    base = `http://127.0.0.1:${s.controlPort}`;
  });
  after(() => s.stop());

  it('refuses requests without the right bearer token with 401, and accepts the right one', async () => {
    for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: 's3cret' }, { authorization: 'Basic czNjcmV0' }] as Array<Record<string, string>>) {
      const r = await fetch(`${base}/send/1`, { method: 'POST', body: 'x', headers });
      assert.equal(r.status, 401);
      assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="c1m"');
      assert.match(((await r.json()) as { error: string }).error, /Authorization: Bearer/);
    }
    assert.equal((await fetch(`${base}/stats`)).status, 401);
    assert.equal((await fetch(`${base}/metrics`)).status, 401);
    assert.equal(s.stats().messagesIn, 0);
    const ok = await fetch(`${base}/send/1`, { method: 'POST', body: 'x', headers: { authorization: 'Bearer s3cret' } });
    assert.equal(ok.status, 200);
    assert.equal(s.stats().messagesIn, 1);
    assert.equal(s.stats().unauthorized, 6);
    assert.equal((await fetch(`${base}/stats`, { headers: { authorization: 'bearer s3cret' } })).status, 200);
    assert.equal((await fetch(`${base}/healthz`)).status, 200, '/healthz needs no token');
  });
});

describe('control API configuration', () => {
  it('refuses a non-loopback control host without a token, saying why, and leaves no listener behind', async () => {
    await assert.rejects(
      startCometServer({ host: '127.0.0.1', port: 0, controlHost: '0.0.0.0', controlPort: 0 }),
      (err: unknown) => err instanceof ServerConfigError && /without a token/.test(err.message) && /--token/.test(err.message),
    );
    const s = await startCometServer({ host: '127.0.0.1', port: 0, controlHost: '0.0.0.0', controlPort: 0, token: 't' });
    await s.stop();
  });

  it('knows loopback addresses', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]', '::ffff:127.0.0.1']) assert.ok(isLoopback(h), h);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.1', 'example.com']) assert.ok(!isLoopback(h), h);
  });

  it('refuses out-of-range limits with the name and range', async () => {
    await assert.rejects(startCometServer({ port: 0, controlPort: 0, host: '127.0.0.1', heartbeatMs: 5 }), /heartbeatMs = 5 is out of range \(100 to 3600000\)/);
  });
});

describe('control API NDJSON answers from a publisher that answers late or refuses', () => {
  // A bus-like target: answers arrive out of order, and ids >= 900 are refused with a 503 (as a bus that is down).
  const published: number[] = [];
  const target = {
    publish(id: number, msg: string): Promise<number> {
      return new Promise((resolve, reject) => {
        setTimeout(() => {
          if (id >= 900) reject(Object.assign(new Error(`bus down for ${id}`), { status: 503 }));
          else {
            published.push(id);
            resolve(msg.length);
          }
        }, (id * 7) % 5);
      });
    },
    stats: () => ({}) as never,
  };
  let server: http.Server;
  let base: string;
  before(async () => {
    const started = await startControl(target, { host: '127.0.0.1', port: 0, token: null, limits: DEFAULT_LIMITS, onUnauthorized: () => undefined });
    server = started.server;
    base = `http://127.0.0.1:${started.port}`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('sums every answer whatever order they come in', async () => {
    const lines = Array.from({ length: 200 }, (_, i) => JSON.stringify({ id: i, msg: 'x'.repeat(i % 3) }));
    const r = await fetch(`${base}/send`, { method: 'POST', body: lines.join('\n') });
    assert.equal(r.status, 200);
    const expected = Array.from({ length: 200 }, (_, i) => i % 3).reduce((a, b) => a + b, 0);
    assert.deepEqual(await r.json(), { accepted: 200, delivered: expected });
    assert.equal(published.length, 200);
  });

  it('names the first refused line, counts the others, and says what was applied', async () => {
    const body = ['{"id":1,"msg":"ab"}', '{"id":901,"msg":"x"}', '{"id":2,"msg":"c"}', '{"id":902,"msg":"y"}', ''].join('\n');
    const r = await fetch(`${base}/send`, { method: 'POST', body });
    assert.equal(r.status, 503);
    const doc = (await r.json()) as Record<string, unknown>;
    assert.equal(doc.error, 'line 2: bus down for 901');
    assert.equal(doc.line, 2);
    assert.equal(doc.accepted, 2);
    assert.equal(doc.delivered, 3);
    assert.equal(doc.failed, 2);
    assert.equal(doc.applied, '2 line(s) were applied; line 2 and 1 other line(s) failed');
  });

  it('a bad line after a refused one: the refusal is named, and the bad line and those after it are not applied', async () => {
    const before = published.length;
    const body = ['{"id":903,"msg":"x"}', '{"id":3,"msg":"c"}', 'not json', '{"id":4,"msg":"never"}'].join('\n');
    const r = await fetch(`${base}/send`, { method: 'POST', body });
    assert.equal(r.status, 503);
    const doc = (await r.json()) as Record<string, unknown>;
    assert.equal(doc.line, 1);
    assert.equal(doc.accepted, 1);
    assert.match(String(doc.applied), /^1 line\(s\) were applied; line 1 failed; line 3 is bad \(not valid JSON\) and it and the lines after it were not applied$/);
    assert.deepEqual(published.slice(before), [3]);
  });
});
