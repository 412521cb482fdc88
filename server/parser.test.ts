// The request-head parser, fed whole, one byte at a time, and at every two-piece split.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RequestError, RequestParser, type RequestErrorCode, type RequestHead } from './parser.js';

type Feed = 'whole' | 'bytes' | 'splits';

/** Feeds `raw` in the given way; returns the head and the index past it in the last chunk, or throws. */
function feed(raw: Buffer, how: Feed, split = 0, limits = {}): { head: RequestHead; rest: Buffer } | null {
  const p = new RequestParser(limits);
  const pieces: Buffer[] =
    how === 'whole' ? [raw] : how === 'bytes' ? [...raw].map((b) => Buffer.from([b])) : [raw.subarray(0, split), raw.subarray(split)];
  for (const piece of pieces) {
    const end = p.execute(piece);
    if (end >= 0) {
      const consumed = pieces.slice(0, pieces.indexOf(piece)).reduce((n, b) => n + b.length, 0) + end;
      return { head: p.head, rest: raw.subarray(consumed) };
    }
  }
  return null;
}

/** Runs `check` for the whole input, the byte-by-byte feed and every two-piece split. */
function everyWay(raw: string | Buffer, check: (r: ReturnType<typeof feed> | RequestError, how: string) => void, limits = {}): void {
  const buf = typeof raw === 'string' ? Buffer.from(raw, 'latin1') : raw;
  const run = (how: Feed, split = 0): void => {
    let r: ReturnType<typeof feed> | RequestError;
    try {
      r = feed(buf, how, split, limits);
    } catch (err) {
      if (!(err instanceof RequestError)) throw err;
      r = err;
    }
    check(r, how === 'splits' ? `split at ${split}` : how);
  };
  run('whole');
  run('bytes');
  // Every split for short inputs; a sample for long ones keeps the test fast.
  const step = buf.length > 400 ? Math.ceil(buf.length / 97) : 1;
  for (let s = 1; s < buf.length; s += step) run('splits', s);
}

const valid: Array<[string, string, Partial<RequestHead>]> = [
  ['plain GET', 'GET /test/1 HTTP/1.1\r\nHost: x\r\n\r\n', { method: 'GET', target: '/test/1', minor: 1, host: 'x' }],
  ['HEAD with query', 'HEAD /sse/5?a=b HTTP/1.1\r\nHost: h:8000\r\n\r\n', { method: 'HEAD', target: '/sse/5?a=b', host: 'h:8000' }],
  ['HTTP/1.0 needs no Host', 'GET /test/2 HTTP/1.0\r\n\r\n', { minor: 0, host: null }],
  ['leading empty lines are skipped', '\r\n\r\nGET /test/3 HTTP/1.1\r\nHost: a\r\n\r\n', { target: '/test/3' }],
  ['bare LF line endings', 'GET /test/4 HTTP/1.1\nHost: a\n\n', { target: '/test/4', host: 'a' }],
  ['absolute-form target', 'GET http://example.com:8000/test/5 HTTP/1.1\r\nHost: example.com\r\n\r\n', { target: '/test/5' }],
  [
    'headers: case, OWS, the ones the server keeps',
    'GET /sse/6 HTTP/1.1\r\nhOsT:   spaced \t\r\nOrigin: http://o\r\nLast-Event-ID: 17\r\nContent-Length: 0\r\nX-Other: ignored: yes\r\n\r\n',
    { host: 'spaced', origin: 'http://o', lastEventId: '17', contentLength: 0 },
  ],
  ['empty header value', 'GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n', { target: '/' }],
  ['any token method is parsed (the server answers 501)', 'PATCH /x HTTP/1.1\r\nHost: a\r\n\r\n', { method: 'PATCH' }],
];

const invalid: Array<[string, string | Buffer, RequestErrorCode, number, object?]> = [
  ['lowercase-looking garbage method', 'G(T / HTTP/1.1\r\nHost: a\r\n\r\n', 'C1M_HTTP_BAD_METHOD', 400],
  ['no version', 'GET /test/1\r\nHost: a\r\n\r\n', 'C1M_HTTP_BAD_TARGET', 400],
  ['two spaces', 'GET  /test/1 HTTP/1.1\r\nHost: a\r\n\r\n', 'C1M_HTTP_BAD_TARGET', 400],
  ['trailing space', 'GET /test/1 HTTP/1.1 \r\nHost: a\r\n\r\n', 'C1M_HTTP_BAD_TARGET', 400],
  ['target without slash', 'GET test/1 HTTP/1.1\r\nHost: a\r\n\r\n', 'C1M_HTTP_BAD_TARGET', 400],
  ['non-ASCII in target', Buffer.from('GET /t\xe9st HTTP/1.1\r\nHost: a\r\n\r\n', 'latin1'), 'C1M_HTTP_BAD_TARGET', 400],
  ['control character in request line', 'GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n', 'C1M_HTTP_BAD_TARGET', 400],
  ['malformed version', 'GET / HTTP/one\r\nHost: a\r\n\r\n', 'C1M_HTTP_BAD_VERSION', 400],
  ['HTTP/2.0', 'GET / HTTP/2.0\r\nHost: a\r\n\r\n', 'C1M_HTTP_UNSUPPORTED_VERSION', 505],
  ['CR without LF in request line', 'GET / HTTP/1.1\rHost: a\r\n\r\n', 'C1M_HTTP_BAD_LINE_ENDING', 400],
  ['CR without LF in header', 'GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n', 'C1M_HTTP_BAD_LINE_ENDING', 400],
  ['CR without LF at end', 'GET / HTTP/1.1\r\nHost: a\r\n\rX', 'C1M_HTTP_BAD_LINE_ENDING', 400],
  ['obsolete line folding', 'GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n  folded\r\n\r\n', 'C1M_HTTP_BAD_HEADER', 400],
  ['space before colon', 'GET / HTTP/1.1\r\nHost : a\r\n\r\n', 'C1M_HTTP_BAD_HEADER', 400],
  ['header without colon', 'GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n', 'C1M_HTTP_BAD_HEADER', 400],
  ['empty header name', 'GET / HTTP/1.1\r\n: a\r\n\r\n', 'C1M_HTTP_BAD_HEADER', 400],
  ['NUL in header value', 'GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n', 'C1M_HTTP_BAD_HEADER', 400],
  ['missing Host on HTTP/1.1', 'GET / HTTP/1.1\r\nX: y\r\n\r\n', 'C1M_HTTP_MISSING_HOST', 400],
  ['two Host headers', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 'C1M_HTTP_BAD_HEADER', 400],
  ['bad Content-Length', 'GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n', 'C1M_HTTP_BAD_CONTENT_LENGTH', 400],
  ['conflicting Content-Length', 'GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', 'C1M_HTTP_BAD_CONTENT_LENGTH', 400],
  ['Transfer-Encoding', 'GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n', 'C1M_HTTP_UNSUPPORTED_BODY', 501],
  ['too many empty lines first', '\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n', 'C1M_HTTP_BAD_LINE_ENDING', 400],
  ['request line over the limit', `GET /${'a'.repeat(200)} HTTP/1.1\r\nHost: a\r\n\r\n`, 'C1M_HTTP_LINE_TOO_LONG', 414, { maxRequestLineBytes: 100 }],
  ['headers over the limit', `GET / HTTP/1.1\r\nHost: a\r\nX: ${'b'.repeat(300)}\r\n\r\n`, 'C1M_HTTP_HEADERS_TOO_LARGE', 431, { maxHeaderBytes: 200 }],
  ['too many headers', `GET / HTTP/1.1\r\nHost: a\r\n${'X: y\r\n'.repeat(6)}\r\n`, 'C1M_HTTP_TOO_MANY_HEADERS', 431, { maxHeaderCount: 5 }],
];

describe('request parser', () => {
  for (const [name, raw, expect] of valid) {
    it(`parses: ${name}`, () => {
      everyWay(raw + 'TRAILING', (r, how) => {
        assert.ok(r && !(r instanceof RequestError), `${how}: ${r instanceof RequestError ? r.message : 'incomplete'}`);
        for (const [k, v] of Object.entries(expect)) assert.deepEqual(r.head[k as keyof RequestHead], v, `${how}: ${k}`);
        assert.equal(r.rest.toString('latin1'), 'TRAILING', `${how}: stops exactly at the end of the head`);
      });
    });
  }

  for (const [name, raw, code, status, limits] of invalid) {
    it(`refuses: ${name} → ${status} ${code}`, () => {
      everyWay(
        raw,
        (r, how) => {
          assert.ok(r instanceof RequestError, `${how}: expected ${code}`);
          assert.equal(r.code, code, `${how}: ${r.message}`);
          assert.equal(r.status, status);
          assert.ok(r.message.length > 0 && !r.message.includes('\n'));
        },
        limits,
      );
    });
  }

  it('random mutations of a valid head either parse or fail with a RequestError, the same way in any split', () => {
    // A fixed-seed generator (mulberry32) keeps the cases reproducible.
    let seed = 0x5eed;
    const rand = (): number => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const base = Buffer.from('GET /test/1,2 HTTP/1.1\r\nHost: example\r\nOrigin: http://o\r\n\r\n', 'latin1');
    for (let n = 0; n < 500; n++) {
      const buf = Buffer.from(base);
      for (let m = 1 + Math.floor(rand() * 3); m > 0; m--) buf[Math.floor(rand() * buf.length)] = Math.floor(rand() * 256);
      const outcome = (pieces: Buffer[]): string => {
        const p = new RequestParser();
        try {
          for (const piece of pieces) if (p.execute(piece) >= 0) return `ok ${p.head.method} ${p.head.target}`;
          return 'incomplete';
        } catch (err) {
          assert.ok(err instanceof RequestError, `case ${n}: ${String(err)}`);
          return err.code;
        }
      };
      const whole = outcome([buf]);
      const split = Math.floor(rand() * buf.length);
      assert.equal(outcome([...buf].map((b) => Buffer.from([b]))), whole, `case ${n} byte by byte`);
      assert.equal(outcome([buf.subarray(0, split), buf.subarray(split)]), whole, `case ${n} split at ${split}`);
    }
  });

  it('an incomplete head asks for more without error', () => {
    const p = new RequestParser();
    assert.equal(p.execute(Buffer.from('GET /test/1 HTTP/1.1\r\nHost: a\r\n')), -1);
    assert.equal(p.done, false);
    assert.equal(p.execute(Buffer.from('\r\n')), 2);
    assert.equal(p.done, true);
  });

  it('refuses an oversized request line as soon as it passes the limit, before any line end arrives', () => {
    const p = new RequestParser({ maxRequestLineBytes: 8192 });
    assert.equal(p.execute(Buffer.from('GET /' + 'a'.repeat(8000))), -1);
    assert.throws(() => p.execute(Buffer.from('a'.repeat(500))), (e: unknown) => e instanceof RequestError && e.code === 'C1M_HTTP_LINE_TOO_LONG');
  });

  it('refuses oversized headers as soon as they pass the limit', () => {
    const p = new RequestParser({ maxHeaderBytes: 8192 });
    assert.equal(p.execute(Buffer.from('GET / HTTP/1.1\r\nX: ' + 'a'.repeat(8000))), -1);
    assert.throws(() => p.execute(Buffer.from('a'.repeat(500))), (e: unknown) => e instanceof RequestError && e.code === 'C1M_HTTP_HEADERS_TOO_LARGE');
  });
});
