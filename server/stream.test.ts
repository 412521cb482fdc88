// The streaming port on real sockets: exact bytes of both stream formats, every bad input, limits and shutdown.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startCometServer, type CometServer, type CometServerOptions } from './index.js';
import { HEAD_HTML_CHUNKED, HEAD_HTML_PLAIN, HEAD_SSE } from './frame.js';
import { RawClient, eventually, htmlChunk, openStream } from './testkit.js';

const H_HTML = HEAD_HTML_CHUNKED.toString('latin1');
const H_PLAIN = HEAD_HTML_PLAIN.toString('latin1');
const H_SSE = HEAD_SSE.toString('latin1');

async function start(opts: CometServerOptions = {}): Promise<CometServer> {
  return startCometServer({ host: '127.0.0.1', port: 0, controlHost: '127.0.0.1', controlPort: 0, ...opts });
}

describe('streams: exact bytes', () => {
  let s: CometServer;
  const clients: RawClient[] = [];
  const open = async (path: string): Promise<RawClient> => {
    const c = await openStream(s.port, path);
    clients.push(c);
    return c;
  };
  before(async () => {
    s = await start();
  });
  after(async () => {
    for (const c of clients) c.close();
    await s.stop();
  });

  it('GET /test/<id> streams one chunk per message, numbered from 1, HTML-escaped', async () => {
    const c = await open('/test/123');
    assert.equal(await s.publish(123, 'hello'), 1);
    await c.until(htmlChunk(1, 'hello'));
    assert.equal(await s.publish(123, `<script>alert("x")</script> & 'q'`), 1);
    assert.equal(await s.publish(123, 'multi\nline ünï'), 1);
    const expected =
      H_HTML +
      htmlChunk(1, 'hello') +
      htmlChunk(2, '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39;') +
      htmlChunk(3, 'multi\nline ünï');
    await c.until((t) => t.length >= expected.length);
    assert.equal(c.text, expected);
    assert.ok(c.text.startsWith('HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\n'));
  });

  it('GET /sse/<id> streams events with a per-connection id and one data line per message line', async () => {
    const c = await open('/sse/77');
    await s.publish(77, 'one');
    await s.publish(77, 'a\nb\r\nc\rd');
    // A message cannot inject fields or end its event early: CR and LF always start a new data: line.
    await s.publish(77, 'x\r\n\r\nid: 99\nevent: evil\nretry: 1');
    await s.publish(77, '');
    const expected =
      H_SSE +
      'id: 1\ndata: one\n\n' +
      'id: 2\ndata: a\ndata: b\ndata: c\ndata: d\n\n' +
      'id: 3\ndata: x\ndata: \ndata: id: 99\ndata: event: evil\ndata: retry: 1\n\n' +
      'id: 4\ndata: \n\n';
    await c.until((t) => t.length >= expected.length);
    assert.equal(c.text, expected);
    assert.match(H_SSE, /^HTTP\/1\.1 200 OK\r\nContent-Type: text\/event-stream; charset=utf-8\r\n/);
    assert.match(H_SSE, /Access-Control-Allow-Origin: \*\r\n/);
  });

  it('/test/1,2,3 logs in as several ids; numbering is per connection; two windows on one id both receive', async () => {
    const multi = await open('/test/1001,1002,1003');
    const other = await open('/test/1002');
    assert.equal(await s.publish(1003, 'for 3'), 1);
    assert.equal(await s.publish(1002, 'for 2'), 2);
    assert.equal(await s.publish(1004, 'nobody'), 0);
    await multi.until(htmlChunk(2, 'for 2'));
    await other.until(htmlChunk(1, 'for 2'));
    assert.equal(multi.text, H_HTML + htmlChunk(1, 'for 3') + htmlChunk(2, 'for 2'));
    assert.equal(other.text, H_HTML + htmlChunk(1, 'for 2'));
  });

  it('many messages to one connection in one tick go out in one write', async () => {
    const c = await open('/test/555');
    const before = s.stats();
    await Promise.all([s.publish(555, 'a'), s.publish(555, 'b'), s.publish(555, 'c')]);
    await c.until(htmlChunk(3, 'c'));
    const st = s.stats();
    assert.equal(st.writes - before.writes, 1);
    assert.equal(st.chunksOut - before.chunksOut, 3);
    assert.equal(c.text, H_HTML + htmlChunk(1, 'a') + htmlChunk(2, 'b') + htmlChunk(3, 'c'));
  });

  it('large messages (sent as the shared buffer itself) have the same exact bytes, alone and in a batch', async () => {
    const html = await open('/test/3001');
    const sse = await open('/sse/3001');
    const big = 'big<' + 'x'.repeat(5000) + '>\nend';
    const bigEsc = 'big&lt;' + 'x'.repeat(5000) + '&gt;\nend';
    assert.equal(await s.publish(3001, big), 2);
    await html.until(htmlChunk(1, bigEsc));
    await Promise.all([s.publish(3001, 'small'), s.publish(3001, big), s.publish(3001, 'tail')]);
    const expectHtml = H_HTML + htmlChunk(1, bigEsc) + htmlChunk(2, 'small') + htmlChunk(3, bigEsc) + htmlChunk(4, 'tail');
    const bigSse = 'data: big<' + 'x'.repeat(5000) + '>\ndata: end\n\n';
    const expectSse = H_SSE + 'id: 1\n' + bigSse + 'id: 2\ndata: small\n\n' + 'id: 3\n' + bigSse + 'id: 4\ndata: tail\n\n';
    await html.until((t) => t.length >= expectHtml.length);
    await sse.until((t) => t.length >= expectSse.length);
    assert.equal(html.text, expectHtml);
    assert.equal(sse.text, expectSse);
  });

  it('an HTTP/1.0 client gets an unchunked stream that ends when the connection closes', async () => {
    const c = new RawClient(s.port);
    clients.push(c);
    c.send('GET /test/600 HTTP/1.0\r\n\r\n');
    await c.until('\r\n\r\n');
    await s.publish(600, 'old');
    await c.until("Recvd msg #1: 'old'<br/>");
    assert.equal(c.text, H_PLAIN + "Recvd msg #1: 'old'<br/>");
    const big = 'y'.repeat(3000);
    await s.publish(600, big);
    await c.until(`Recvd msg #2: '${big}'<br/>`);
    assert.equal(c.text, H_PLAIN + "Recvd msg #1: 'old'<br/>" + `Recvd msg #2: '${big}'<br/>`);
  });

  it('the request may arrive one byte at a time', async () => {
    const c = new RawClient(s.port);
    clients.push(c);
    await c.connected();
    for (const ch of 'GET /sse/808 HTTP/1.1\r\nHost: slow\r\n\r\n') {
      c.send(ch);
      await new Promise((r) => setImmediate(r));
    }
    await c.until('\r\n\r\n');
    await s.publish(808, 'ok');
    await c.until('id: 1\ndata: ok\n\n');
    assert.equal(c.text, H_SSE + 'id: 1\ndata: ok\n\n');
  });

  it('HEAD gets the headers only, then the connection closes', async () => {
    const c = new RawClient(s.port);
    c.send('HEAD /test/1 HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(await c.untilClosed(), H_HTML);
    const d = new RawClient(s.port);
    d.send('HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n');
    const text = await d.untilClosed();
    assert.match(text, /^HTTP\/1\.1 404 Not Found\r\n/);
    assert.ok(text.endsWith('\r\n\r\n'), 'no body after a HEAD');
  });

  it('a closed stream is logged out of every id; 500 streams open and close leave nothing behind', async () => {
    const base = s.stats();
    const many: RawClient[] = [];
    for (let i = 0; i < 500; i++) many.push(new RawClient(s.port).send(`GET /test/${20_000 + (i % 250)},${30_000 + i} HTTP/1.1\r\nHost: x\r\n\r\n`));
    await Promise.all(many.map((c) => c.until('\r\n\r\n')));
    assert.equal(s.stats().connections, base.connections + 500);
    assert.equal(s.stats().ids, base.ids + 750);
    assert.equal(await s.publish(20_000, 'two'), 2);
    for (const c of many) c.close();
    await eventually(() => s.stats().connections === base.connections, 'every stream to close');
    const st = s.stats();
    assert.equal(st.ids, base.ids);
    // Sockets of earlier tests (answered HEADs) may still be closing, so the count may only have gone down.
    assert.ok(st.sockets <= base.sockets, `sockets ${st.sockets} <= ${base.sockets}`);
    assert.equal(st.closed - base.closed, 500);
    assert.equal(await s.publish(20_000, 'gone'), 0);
  });
});

describe('streams: bad input gets a clear answer and a close', () => {
  let s: CometServer;
  let keeper: RawClient;
  before(async () => {
    s = await start({ maxIdsPerConn: 64 });
    keeper = await openStream(s.port, '/test/4242');
  });
  after(async () => {
    keeper.close();
    await s.stop();
  });

  const cases: Array<[string, string, RegExp, RegExp]> = [
    ['unknown path', 'GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 404 /, /no such path \/nothing/],
    ['/test without id', 'GET /test HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 404 /, /no such path/],
    ['POST (publishing on the public port)', 'POST /test/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi', /^HTTP\/1\.1 501 /, /method POST is not implemented.*control API/],
    ['PUT', 'PUT /sse/1 HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 501 /, /method PUT/],
    ['empty id', 'GET /test/ HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /, /bad id: empty id/],
    ['non-numeric id', 'GET /test/abc HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /, /'abc' is not a non-negative decimal integer/],
    ['negative id', 'GET /sse/-1 HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /, /'-1' is not a non-negative/],
    ['fractional id', 'GET /test/1.5 HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /, /'1.5'/],
    ['leading zero', 'GET /test/007 HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /, /leading zero/],
    ['id above 2^53-1', 'GET /test/9007199254740992 HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /, /larger than 9007199254740991/],
    ['empty element in a list', 'GET /test/1,,2 HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /, /empty id/],
    ['65 ids', `GET /test/${Array.from({ length: 65 }, (_, i) => i).join(',')} HTTP/1.1\r\nHost: x\r\n\r\n`, /^HTTP\/1\.1 400 /, /too many ids \(65; at most 64/],
    ['missing Host', 'GET /test/1 HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 400 /, /without a Host header/],
    ['garbage', 'HELLO THERE\r\n\r\n', /^HTTP\/1\.1 400 /, /request line/],
    ['HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', /^HTTP\/1\.1 505 /, /HTTP\/2\.0 is not supported/],
    ['request line over 8 KiB', `GET /test/${'1'.repeat(9000)} HTTP/1.1\r\nHost: x\r\n\r\n`, /^HTTP\/1\.1 414 /, /longer than 8192 bytes/],
    ['headers over 8 KiB', `GET /test/1 HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(9000)}\r\n\r\n`, /^HTTP\/1\.1 431 /, /larger than 8192 bytes/],
  ];

  for (const [name, request, status, reason] of cases) {
    it(`${name} → ${status.source.slice(12, 15)}`, async () => {
      const before = s.stats().badRequests;
      const c = new RawClient(s.port);
      c.send(request);
      const text = await c.untilClosed();
      assert.match(text, status);
      const body = text.slice(text.indexOf('\r\n\r\n') + 4);
      assert.match(body, reason);
      assert.equal(body.split('\n').length, 2, 'a one-line reason');
      assert.match(text, /\r\nConnection: close\r\n/);
      assert.equal(s.stats().badRequests, before + 1);
    });
  }

  it('random garbage from 100 connections: each gets an error answer and a close, and the server stays up', async () => {
    let seed = 42;
    const rand = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296);
    const garbage: RawClient[] = [];
    for (let i = 0; i < 100; i++) {
      const bytes = Buffer.alloc(1 + Math.floor(rand() * 300));
      for (let k = 0; k < bytes.length; k++) bytes[k] = rand() < 0.3 ? 0x0a : Math.floor(rand() * 256);
      // The blank line at the end completes any head, so every connection must be answered and closed.
      garbage.push(new RawClient(s.port).send(Buffer.concat([bytes, Buffer.from('\r\n\r\n')])));
    }
    for (const g of garbage) {
      await g.untilClosed();
      assert.match(g.text, /^HTTP\/1\.1 (400|404|414|431|501|505) [^\r]+\r\n[\s\S]*\r\n\r\n[^\n]+\n$/);
    }
  });

  it('nobody else was harmed: the keeper stream still receives', async () => {
    assert.equal(await s.publish(4242, 'still here'), 1);
    await keeper.until(htmlChunk(1, 'still here'));
  });

  it('64 ids is allowed', async () => {
    const c = await openStream(s.port, `/test/${Array.from({ length: 64 }, (_, i) => 9000 + i).join(',')}`);
    assert.ok(c.text.startsWith('HTTP/1.1 200 OK'));
    assert.equal(await s.publish(9063, 'last'), 1);
    await c.until(htmlChunk(1, 'last'));
    c.close();
  });
});

describe('streams: limits', () => {
  it('a request not complete within the timeout (slowloris) gets 408 and a close; others keep streaming', async () => {
    const s = await start({ requestTimeoutMs: 300 });
    try {
      const keeper = await openStream(s.port, '/sse/1');
      const slow = new RawClient(s.port);
      slow.send('GET /test/1 HTTP/1.1\r\nHo');
      const silent = new RawClient(s.port); // connects and sends nothing
      await silent.connected();
      const text = await slow.untilClosed(3000);
      assert.match(text, /^HTTP\/1\.1 408 Request Timeout\r\n[\s\S]*request not completed within 300 ms\n$/);
      await silent.untilClosed(3000);
      assert.equal(s.stats().timeouts, 2);
      await s.publish(1, 'fine');
      await keeper.until('data: fine\n\n');
      keeper.close();
    } finally {
      await s.stop();
    }
  });

  it('--max-conns: the connection over the limit gets 503 and a close, and is counted', async () => {
    const s = await start({ maxConns: 2 });
    try {
      const a = await openStream(s.port, '/test/1');
      const b = await openStream(s.port, '/sse/2');
      const c = new RawClient(s.port);
      c.send('GET /test/3 HTTP/1.1\r\nHost: x\r\n\r\n');
      const text = await c.untilClosed();
      assert.match(text, /^HTTP\/1\.1 503 Service Unavailable\r\n[\s\S]*server full \(max 2 connections\)\n$/);
      assert.equal(s.stats().rejected, 1);
      a.close();
      await eventually(() => s.stats().sockets === 1, 'the first stream to close');
      const d = await openStream(s.port, '/test/4');
      assert.ok(d.text.startsWith('HTTP/1.1 200 OK'));
      d.close();
      b.close();
    } finally {
      await s.stop();
    }
  });

  it('a slow consumer is closed when its unsent output passes the cap, while a fast one keeps receiving', async () => {
    const s = await start({ maxBufferBytes: 256 * 1024 });
    try {
      const fast = await openStream(s.port, '/test/7');
      const slow = await openStream(s.port, '/test/7');
      slow.socket.pause(); // stops reading: the kernel buffers fill, then the server's output queue grows
      const msg = 'x'.repeat(32 * 1024);
      let sent = 0;
      while (s.stats().slowDrops === 0 && sent < 4000) {
        await s.publish(7, msg);
        sent++;
        await new Promise((r) => setImmediate(r));
      }
      assert.equal(s.stats().slowDrops, 1, `a slow consumer cut after ${sent} messages`);
      await s.publish(7, 'after');
      await fast.until(htmlChunk(sent + 1, 'after'), 10_000);
      slow.socket.resume();
      await slow.untilClosed();
      assert.equal(s.stats().connections, 1);
      fast.close();
    } finally {
      await s.stop();
    }
  });

  it('SSE heartbeats come from the shared timer; HTML streams get none', async () => {
    const s = await start({ heartbeatMs: 100 });
    try {
      const sse = await openStream(s.port, '/sse/1');
      const sse2 = await openStream(s.port, '/sse/2');
      const html = await openStream(s.port, '/test/3');
      await sse.until(': heartbeat\n\n: heartbeat\n\n');
      await sse2.until(': heartbeat\n\n');
      assert.equal(html.text, H_HTML);
      assert.ok(s.stats().heartbeats >= 3);
      for (const c of [sse, sse2, html]) c.close();
    } finally {
      await s.stop();
    }
  });

  it('a client that keeps sending after its request is closed', async () => {
    const s = await start();
    try {
      const c = await openStream(s.port, '/test/1');
      c.send(Buffer.alloc(20_000, 65));
      await c.untilClosed();
      assert.equal(s.stats().inputAbuse, 1);
    } finally {
      await s.stop();
    }
  });
});

describe('streams: graceful stop', () => {
  it('stop() ends chunked streams with the terminating chunk and SSE streams with a close, then resolves', async () => {
    const s = await start();
    const html = await openStream(s.port, '/test/1');
    const sse = await openStream(s.port, '/sse/1');
    const pending = new RawClient(s.port).send('GET /test/1 HTTP/1.1\r\n');
    await pending.connected();
    await s.publish(1, 'last words');
    const t0 = Date.now();
    await s.stop();
    assert.ok(Date.now() - t0 < 5000);
    assert.equal(await html.untilClosed(), H_HTML + htmlChunk(1, 'last words') + '0\r\n\r\n');
    assert.equal(await sse.untilClosed(), H_SSE + 'id: 1\ndata: last words\n\n');
    await pending.untilClosed();
  });
});

// Regression tests for one-tick batches written as one string (prefixes + shared framed text) and, from
// SHARE_MIN_BYTES (2048 framed bytes in stream.ts) on, as the shared Buffers: the chunk sizes, message numbers and
// bytesOut must all count UTF-8 bytes, never UTF-16 code units. Expected bytes are built here from the messages,
// not from frame.ts, and the chunked bodies are also decoded independently to check every size line.
describe('streams: one-tick batches of multi-byte UTF-8, exact bytes and bytesOut', () => {
  let s: CometServer;
  let base: string;
  const clients: RawClient[] = [];
  before(async () => {
    // No heartbeats during the test: every byte written to a stream here is a message or a response head.
    s = await start({ heartbeatMs: 3_600_000 });
    base = `http://127.0.0.1:${s.controlPort}`;
  });
  after(async () => {
    for (const c of clients) c.close();
    await s.stop();
  });

  const utf8 = (text: string): Buffer => Buffer.from(text, 'utf8');
  const received = (c: RawClient): Buffer => Buffer.from(c.text, 'latin1');
  const untilBytes = (c: RawClient, n: number): Promise<string> => c.until((t) => t.length >= n);
  const statsDoc = async (): Promise<{ bytesOut: number; writes: number; chunksOut: number }> => {
    const r = await fetch(`${base}/stats`);
    assert.equal(r.status, 200);
    return (await r.json()) as { bytesOut: number; writes: number; chunksOut: number };
  };
  const openHtml = async (id: number): Promise<RawClient> => {
    const c = await openStream(s.port, `/test/${id}`);
    clients.push(c);
    assert.equal(c.text, H_HTML);
    return c;
  };
  const openPlain = async (id: number): Promise<RawClient> => {
    const c = new RawClient(s.port);
    clients.push(c);
    c.send(`GET /test/${id} HTTP/1.0\r\n\r\n`);
    await c.until('\r\n\r\n');
    assert.equal(c.text, H_PLAIN);
    return c;
  };
  const openSse = async (id: number): Promise<RawClient> => {
    const c = await openStream(s.port, `/sse/${id}`);
    clients.push(c);
    assert.equal(c.text, H_SSE);
    return c;
  };
  /** Publishes every message to `id` synchronously (one tick) and checks each reached `receivers`. */
  const publishAll = async (id: number, msgs: string[], receivers: number): Promise<void> => {
    const reached = msgs.map((m) => s.publish(id, m));
    assert.deepEqual(await Promise.all(reached), msgs.map(() => receivers));
  };
  // Expected wire bytes, from the message and its expected escaping.
  const chunkedData = (n: number, escaped: string): Buffer => utf8(`Recvd msg #${n}: '${escaped}'<br/>`);
  const chunked = (n: number, escaped: string): Buffer => {
    const data = chunkedData(n, escaped);
    return Buffer.concat([Buffer.from(data.length.toString(16) + '\r\n', 'latin1'), data, Buffer.from('\r\n', 'latin1')]);
  };
  const plain = (n: number, escaped: string): Buffer => chunkedData(n, escaped);
  const sseEvent = (n: number, lines: string[]): Buffer => utf8(`id: ${n}\n` + lines.map((l) => `data: ${l}\n`).join('') + '\n');
  /** Waits for and checks the exact bytes of the same messages on a chunked HTML, an HTTP/1.0 and an SSE stream. */
  const expectAllFormats = async (html: RawClient, old: RawClient, sse: RawClient, esc: string[], sseLines: string[][]): Promise<{ expHtml: Buffer; expPlain: Buffer; expSse: Buffer }> => {
    const expHtml = Buffer.concat(esc.map((e, i) => chunked(i + 1, e)));
    const expPlain = Buffer.concat(esc.map((e, i) => plain(i + 1, e)));
    const expSse = Buffer.concat(sseLines.map((l, i) => sseEvent(i + 1, l)));
    await untilBytes(html, H_HTML.length + expHtml.length);
    await untilBytes(old, H_PLAIN.length + expPlain.length);
    await untilBytes(sse, H_SSE.length + expSse.length);
    assert.deepEqual(received(html), Buffer.concat([Buffer.from(H_HTML, 'latin1'), expHtml]));
    assert.deepEqual(received(old), Buffer.concat([Buffer.from(H_PLAIN, 'latin1'), expPlain]));
    assert.deepEqual(received(sse), Buffer.concat([Buffer.from(H_SSE, 'latin1'), expSse]));
    return { expHtml, expPlain, expSse };
  };
  /** Decodes a chunked body independently of the server's framing: every size line must be the data's byte count. */
  const decodeChunked = (body: Buffer): string[] => {
    const out: string[] = [];
    let at = 0;
    while (at < body.length) {
      const eol = body.indexOf('\r\n', at, 'latin1');
      assert.ok(eol > at, `a chunk-size line at byte ${at}`);
      const sizeText = body.toString('latin1', at, eol);
      assert.match(sizeText, /^[0-9a-f]+$/, 'chunk size in lower-case hex');
      const size = parseInt(sizeText, 16);
      const start = eol + 2;
      assert.ok(start + size + 2 <= body.length, `chunk of ${size} bytes at byte ${start} is complete`);
      assert.equal(body.toString('latin1', start + size, start + size + 2), '\r\n', `chunk of ${size} bytes ends with CRLF right after its data`);
      out.push(body.toString('utf8', start, start + size));
      at = start + size + 2;
    }
    return out;
  };

  // Two-, three- and four-byte UTF-8 (é, €, 😀, CJK, Hangul), a lone surrogate (written as U+FFFD, 3 bytes) and
  // every character the HTML stream escapes.
  const MSGS = [
    'café é',
    'price: 5€ <b>&</b>',
    `smile 😀 "quoted" 'single'`,
    '中文字符 日本語 한국어',
    `é€😀中 <>&"'`,
    'lone \ud800 surrogate',
  ];
  const ESCAPED = [
    'café é',
    'price: 5€ &lt;b&gt;&amp;&lt;/b&gt;',
    'smile 😀 &quot;quoted&quot; &#39;single&#39;',
    '中文字符 日本語 한국어',
    'é€😀中 &lt;&gt;&amp;&quot;&#39;',
    'lone \ufffd surrogate',
  ];

  it('HTTP/1.1 /test/<id>: a batch of multi-byte messages in one write, chunk sizes in bytes, numbered 1..N', async () => {
    const c = await openHtml(5001);
    const before = await statsDoc();
    await publishAll(5001, MSGS, 1);
    const expectedBody = Buffer.concat(ESCAPED.map((e, i) => chunked(i + 1, e)));
    await untilBytes(c, H_HTML.length + expectedBody.length);
    assert.deepEqual(received(c), Buffer.concat([Buffer.from(H_HTML, 'latin1'), expectedBody]));
    // Independently: each size line is the UTF-8 byte count of its data (not the UTF-16 length).
    const chunks = decodeChunked(received(c).subarray(H_HTML.length));
    assert.deepEqual(chunks, ESCAPED.map((e, i) => `Recvd msg #${i + 1}: '${e}'<br/>`));
    // Hand-checked: "Recvd msg #5: 'é€😀中 &lt;&gt;&amp;&quot;&#39;'<br/>" is 15 + (2+3+4+3+1+24) + 6 = 58 bytes (0x3a),
    // but 51 UTF-16 units (0x33): a size taken from the string length would be wrong.
    const fifth = `Recvd msg #5: '${ESCAPED[4]}'<br/>`;
    assert.equal(fifth.length, 51);
    assert.ok(received(c).includes(Buffer.from('3a\r\n' + Buffer.from(fifth, 'utf8').toString('latin1') + '\r\n', 'latin1')));
    const st = await statsDoc();
    assert.equal(st.writes - before.writes, 1, 'one write for the whole batch');
    assert.equal(st.chunksOut - before.chunksOut, MSGS.length);
    assert.equal(st.bytesOut - before.bytesOut, expectedBody.length, 'bytesOut grew by the body bytes received');
  });

  it('HTTP/1.0 /test/<id>: the same batch unchunked, exact bytes', async () => {
    const c = await openPlain(5002);
    const before = await statsDoc();
    await publishAll(5002, MSGS, 1);
    const expectedBody = Buffer.concat(ESCAPED.map((e, i) => plain(i + 1, e)));
    await untilBytes(c, H_PLAIN.length + expectedBody.length);
    assert.deepEqual(received(c), Buffer.concat([Buffer.from(H_PLAIN, 'latin1'), expectedBody]));
    assert.equal(received(c).toString('utf8', H_PLAIN.length), ESCAPED.map((e, i) => `Recvd msg #${i + 1}: '${e}'<br/>`).join(''));
    const st = await statsDoc();
    assert.equal(st.writes - before.writes, 1);
    assert.equal(st.bytesOut - before.bytesOut, expectedBody.length);
  });

  it('/sse/<id>: the same batch (plus multi-line multi-byte messages) as exact id:/data: lines', async () => {
    const c = await openSse(5003);
    const msgs = [...MSGS, 'ligne é\r\n€ second\n😀 third\r中 fourth', '<>&"\' unescaped in SSE'];
    const lines = [
      ...MSGS.map((m) => [m.replace('\ud800', '\ufffd')]),
      ['ligne é', '€ second', '😀 third', '中 fourth'],
      [`<>&"' unescaped in SSE`],
    ];
    const before = await statsDoc();
    await publishAll(5003, msgs, 1);
    const expectedBody = Buffer.concat(lines.map((l, i) => sseEvent(i + 1, l)));
    await untilBytes(c, H_SSE.length + expectedBody.length);
    assert.deepEqual(received(c), Buffer.concat([Buffer.from(H_SSE, 'latin1'), expectedBody]));
    const st = await statsDoc();
    assert.equal(st.writes - before.writes, 1);
    assert.equal(st.chunksOut - before.chunksOut, msgs.length);
    assert.equal(st.bytesOut - before.bytesOut, expectedBody.length);
  });

  it('bytesOut counts the response head plus the body bytes, from before the connection', async () => {
    const before = await statsDoc();
    const c = await openHtml(5004);
    await publishAll(5004, MSGS.slice(0, 3), 1);
    const expectedBody = Buffer.concat(ESCAPED.slice(0, 3).map((e, i) => chunked(i + 1, e)));
    await untilBytes(c, H_HTML.length + expectedBody.length);
    assert.equal(received(c).length, HEAD_HTML_CHUNKED.length + expectedBody.length);
    const st = await statsDoc();
    assert.equal(st.bytesOut - before.bytesOut, HEAD_HTML_CHUNKED.length + expectedBody.length);
    assert.equal(st.writes - before.writes, 2, 'the head, then one write for the batch');
  });

  it('one POST /send NDJSON batch reaches chunked, unchunked and SSE streams on one id: exact bytes, bytesOut = bytes received', async () => {
    const html = await openHtml(5005);
    const old = await openPlain(5005);
    const sse = await openSse(5005);
    const before = await statsDoc();
    // JSON escapes and raw UTF-8 both; the control API decodes the body as UTF-8.
    const body =
      MSGS.map((m) => JSON.stringify({ id: 5005, msg: m })).join('\n') +
      '\n{"id":5005,"msg":"\\u00e9\\u20ac\\ud83d\\ude00\\u4e2d <&>"}\n';
    const r = await fetch(`${base}/send`, { method: 'POST', body, headers: { 'content-type': 'application/x-ndjson' } });
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { accepted: MSGS.length + 1, delivered: 3 * (MSGS.length + 1) });
    const esc = [...ESCAPED, 'é€😀中 &lt;&amp;&gt;'];
    const sseLines = [...MSGS.map((m) => [m.replace('\ud800', '\ufffd')]), ['é€😀中 <&>']];
    const { expHtml, expPlain, expSse } = await expectAllFormats(html, old, sse, esc, sseLines);
    const st = await statsDoc();
    assert.equal(st.writes - before.writes, 3, 'one write per connection');
    assert.equal(st.bytesOut - before.bytesOut, expHtml.length + expPlain.length + expSse.length);
  });

  it('a batch mixing small and large (over 2048 bytes, under 2048 UTF-16 units) multi-byte messages: exact bytes on all three formats', async () => {
    const html = await openHtml(5006);
    const old = await openPlain(5006);
    const sse = await openSse(5006);
    // '€' is 3 bytes and 1 UTF-16 unit; '😀' is 4 bytes and 2 units: 900 of either is 1800 units but 2700/3600 bytes.
    const big1 = '€'.repeat(900) + '<&>';
    const big2 = `😀'`.repeat(900) + '\nsecond line 中';
    const msgs = ['small é', big1, '中 <small>', big2, '😀'];
    const esc = ['small é', '€'.repeat(900) + '&lt;&amp;&gt;', '中 &lt;small&gt;', '😀&#39;'.repeat(900) + '\nsecond line 中', '😀'];
    const sseLines = [['small é'], [big1], ['中 <small>'], [`😀'`.repeat(900), 'second line 中'], ['😀']];
    const before = await statsDoc();
    await publishAll(5006, msgs, 3);
    const { expHtml, expPlain, expSse } = await expectAllFormats(html, old, sse, esc, sseLines);
    assert.deepEqual(decodeChunked(received(html).subarray(H_HTML.length)), esc.map((e, i) => `Recvd msg #${i + 1}: '${e}'<br/>`));
    const st = await statsDoc();
    assert.equal(st.writes - before.writes, 3, 'one (corked) write per connection');
    assert.equal(st.chunksOut - before.chunksOut, 3 * msgs.length);
    assert.equal(st.bytesOut - before.bytesOut, expHtml.length + expPlain.length + expSse.length);
  });

  it('batches of exactly 2047 and 2048 framed bytes (either side of the shared-Buffer threshold) have the same exact bytes', async () => {
    // Framed sizes (stream.ts): HTML `: '<escaped>'<br/>\r\n` = bytes + 11; SSE `data: <msg>\n\n` = bytes + 8.
    const first = 'é😀中'; // 9 bytes, 4 UTF-16 units
    const fill = (framedTotal: number, overhead: number): string => {
      const need = framedTotal - 2 * overhead - Buffer.byteLength(first);
      return '€'.repeat(Math.floor(need / 3)) + 'a'.repeat(need % 3);
    };
    let id = 5100;
    for (const total of [2047, 2048]) {
      const hMsgs = [first, fill(total, 11)];
      const sMsgs = [first, fill(total, 8)];
      assert.equal(hMsgs.reduce((n, m) => n + Buffer.byteLength(m) + 11, 0), total);
      assert.equal(sMsgs.reduce((n, m) => n + Buffer.byteLength(m) + 8, 0), total);
      const html = await openHtml(++id);
      const old = await openPlain(id);
      const sseId = ++id;
      const sse = await openSse(sseId);
      const before = await statsDoc();
      await publishAll(id - 1, hMsgs, 2);
      await publishAll(sseId, sMsgs, 1);
      const expHtml = Buffer.concat(hMsgs.map((m, i) => chunked(i + 1, m)));
      const expPlain = Buffer.concat(hMsgs.map((m, i) => plain(i + 1, m)));
      const expSse = Buffer.concat(sMsgs.map((m, i) => sseEvent(i + 1, [m])));
      await untilBytes(html, H_HTML.length + expHtml.length);
      await untilBytes(old, H_PLAIN.length + expPlain.length);
      await untilBytes(sse, H_SSE.length + expSse.length);
      assert.deepEqual(received(html), Buffer.concat([Buffer.from(H_HTML, 'latin1'), expHtml]), `chunked, ${total} bytes`);
      assert.deepEqual(received(old), Buffer.concat([Buffer.from(H_PLAIN, 'latin1'), expPlain]), `unchunked, ${total} bytes`);
      assert.deepEqual(received(sse), Buffer.concat([Buffer.from(H_SSE, 'latin1'), expSse]), `SSE, ${total} bytes`);
      const st = await statsDoc();
      assert.equal(st.writes - before.writes, 3);
      assert.equal(st.bytesOut - before.bytesOut, expHtml.length + expPlain.length + expSse.length, `bytesOut, ${total} bytes`);
    }
  });

  it('over the whole test, bytesOut equals every byte the streams received (heads included)', async () => {
    const st = await statsDoc();
    let total = 0;
    for (const c of clients) total += received(c).length;
    assert.equal(st.bytesOut, total);
  });
});
