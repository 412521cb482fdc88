// Abuse corpus: malformed and hostile requests on both ports, each with its defined answer, run against one real
// server while normal streams keep receiving. The tables are the specification (summarized in README.md):
// input bytes → the status line(s) the client sees, then whether the server closes the connection.
//
// stream.test.ts already covers the basic bad requests (one case each of unknown path, bad id, 414, 431, 505,
// missing Host, garbage); this corpus adds the hostile variants and the control port (node:http).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startCometServer, type CometServer } from './index.js';
import { RawClient, eventually, htmlChunk, openStream } from './testkit.js';

/** What the client must see on the streaming port. */
type StreamExpect =
  | { status: number; reason?: RegExp } // an error answer with a one-line reason, then a close
  | { closed: true } // a close without a byte
  | { stream: number; then?: 'closed' }; // a 200 stream: receives a message for this id (or is closed right after its head)

interface StreamCase {
  name: string;
  input: string | Buffer;
  expect: StreamExpect;
  /** Half-close after sending. */
  fin?: boolean;
  /** Send the input in pieces of this many bytes, one per event-loop turn. */
  pieces?: number;
}

const req = (target: string, extra = ''): string => `GET ${target} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;
const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1');

const STREAM_CASES: StreamCase[] = [
  // Truncated requests.
  { name: 'truncated request line, then FIN', input: 'GET /test/1 HT', fin: true, expect: { closed: true } },
  { name: 'truncated headers, then FIN', input: 'GET /test/1 HTTP/1.1\r\nHost: x\r\n', fin: true, expect: { closed: true } },
  { name: 'truncated request line, then silence (request timeout)', input: 'GET /test/1 HT', expect: { status: 408, reason: /request not completed within 300 ms/ } },
  { name: 'complete request, then FIN: the stream opens and ends', input: req('/test/501'), fin: true, expect: { stream: 501, then: 'closed' } },
  // Methods.
  { name: 'lowercase method', input: 'get /test/1 HTTP/1.1\r\nHost: x\r\n\r\n', expect: { status: 501, reason: /method get is not implemented/ } },
  { name: 'unknown method', input: 'FOO /test/1 HTTP/1.1\r\nHost: x\r\n\r\n', expect: { status: 501, reason: /method FOO/ } },
  { name: 'method with a non-token byte', input: 'G(T /test/1 HTTP/1.1\r\nHost: x\r\n\r\n', expect: { status: 400, reason: /method is not a token/ } },
  { name: 'CONNECT authority-form', input: 'CONNECT evil:443 HTTP/1.1\r\nHost: evil\r\n\r\n', expect: { status: 400, reason: /must start with \// } },
  { name: 'OPTIONS *', input: 'OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n', expect: { status: 501 } },
  { name: 'GET *', input: req('*'), expect: { status: 404 } },
  { name: 'DELETE', input: 'DELETE /test/1 HTTP/1.1\r\nHost: x\r\n\r\n', expect: { status: 501 } },
  { name: 'tab instead of space', input: 'GET\t/test/1 HTTP/1.1\r\nHost: x\r\n\r\n', expect: { status: 400, reason: /control character/ } },
  { name: 'HTTP/0.9 request line', input: 'GET /test/1\r\n\r\n', expect: { status: 400, reason: /single spaces/ } },
  { name: 'HTTP/1.2', input: 'GET /test/1 HTTP/1.2\r\nHost: x\r\n\r\n', expect: { status: 505 } },
  { name: 'lowercase version', input: 'GET /test/1 http/1.1\r\nHost: x\r\n\r\n', expect: { status: 400, reason: /malformed HTTP version/ } },
  { name: 'TLS ClientHello on the plain port', input: Buffer.from('16030100a5010000a10303', 'hex'), expect: { status: 400 } },
  // Huge heads.
  { name: 'request line of 1 MiB with no line end', input: 'GET /test/' + '1'.repeat(1024 * 1024), expect: { status: 414 } },
  { name: 'one 64 KiB header in 1 KiB pieces', input: 'GET /test/1 HTTP/1.1\r\nHost: x\r\nX-Big: ' + 'b'.repeat(64 * 1024), pieces: 1024, expect: { status: 431, reason: /larger than 8192/ } },
  { name: 'header flood: 101 small headers', input: req('/test/1', 'X: y\r\n'.repeat(100)), expect: { status: 431, reason: /more than 100 header lines/ } },
  { name: 'header flood: 5,000 small headers', input: req('/test/1', 'X: y\r\n'.repeat(5000)), expect: { status: 431 } },
  { name: 'header flood: 100 headers is allowed', input: 'GET /test/502 HTTP/1.1\r\n' + 'X: y\r\n'.repeat(99) + 'Host: x\r\n\r\n', expect: { stream: 502 } },
  // Bad ids.
  { name: 'id 1e3', input: req('/test/1e3'), expect: { status: 400, reason: /'1e3' is not a non-negative decimal integer/ } },
  { name: 'id 0x10', input: req('/test/0x10'), expect: { status: 400 } },
  { name: 'id +1', input: req('/test/+1'), expect: { status: 400 } },
  { name: 'id -0', input: req('/sse/-0'), expect: { status: 400 } },
  { name: 'id 00', input: req('/test/00'), expect: { status: 400, reason: /leading zero/ } },
  { name: 'id with 400 digits', input: req('/test/' + '9'.repeat(400)), expect: { status: 400, reason: /larger than 9007199254740991/ } },
  { name: 'id 2^53-1 is allowed', input: req('/test/9007199254740991'), expect: { stream: 9007199254740991 } },
  { name: 'id 0 is allowed', input: req('/sse/0'), expect: { stream: 0 } },
  { name: 'percent-encoded digit (ids are never decoded here)', input: req('/test/%31'), expect: { status: 400 } },
  { name: 'encoded space before the id', input: req('/test/%201'), expect: { status: 400 } },
  { name: 'trailing comma', input: req('/test/1,'), expect: { status: 400, reason: /empty id/ } },
  { name: 'leading comma', input: req('/test/,1'), expect: { status: 400, reason: /empty id/ } },
  { name: '1,000 ids', input: req('/test/' + Array.from({ length: 1000 }, (_, i) => i).join(',')), expect: { status: 400, reason: /too many ids \(1000/ } },
  { name: 'the same id three times logs in once', input: req('/test/503,503,503'), expect: { stream: 503 } },
  // Path tricks: nothing is decoded or normalized, so none of them reaches anything but a 400 or 404.
  { name: '%2e%2e', input: req('/test/%2e%2e/1'), expect: { status: 400 } },
  { name: '.. back to another stream', input: req('/test/../sse/1'), expect: { status: 400 } },
  { name: '../../etc/passwd', input: req('/sse/../../etc/passwd'), expect: { status: 400 } },
  { name: 'encoded slash inside the id', input: req('/test/1%2F2'), expect: { status: 400 } },
  { name: 'encoded slash in the prefix', input: req('/test%2F1'), expect: { status: 404 } },
  { name: 'double slash', input: req('//test/1'), expect: { status: 404 } },
  { name: 'trailing slash', input: req('/test/1/'), expect: { status: 400 } },
  { name: 'fragment', input: req('/test/1#x'), expect: { status: 400 } },
  { name: 'query string is ignored', input: req('/test/504?x=1&y=%00'), expect: { stream: 504 } },
  // Absolute-form targets (RFC 9112 3.2.2: a server must accept them; the authority is ignored).
  { name: 'absolute-form http', input: req('http://evil.example/test/505'), expect: { stream: 505 } },
  { name: 'absolute-form HTTPS with port', input: req('HTTPS://evil.example:99/sse/506'), expect: { stream: 506 } },
  { name: 'absolute-form with userinfo', input: req('http://u:p@evil.example/test/507'), expect: { stream: 507 } },
  { name: 'absolute-form without a path', input: req('http://evil.example'), expect: { status: 404 } },
  { name: 'absolute-form ftp', input: req('ftp://evil.example/test/1'), expect: { status: 400 } },
  // Invalid UTF-8 and NUL bytes.
  { name: 'invalid UTF-8 in the target', input: latin1('GET /test/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n'), expect: { status: 400, reason: /outside visible ASCII/ } },
  { name: 'overlong UTF-8 dot in the target', input: latin1('GET /test/\xc0\xae\xc0\xae HTTP/1.1\r\nHost: x\r\n\r\n'), expect: { status: 400 } },
  { name: 'valid UTF-8 in the target', input: Buffer.from('GET /test/\u00e9 HTTP/1.1\r\nHost: x\r\n\r\n', 'utf8'), expect: { status: 400 } },
  { name: 'NUL in the target', input: 'GET /test/1\x00 HTTP/1.1\r\nHost: x\r\n\r\n', expect: { status: 400, reason: /control character/ } },
  { name: 'NUL before the method', input: '\x00GET /test/1 HTTP/1.1\r\nHost: x\r\n\r\n', expect: { status: 400 } },
  { name: 'NUL in a header name', input: 'GET /test/1 HTTP/1.1\r\nHost: x\r\nX\x00Y: z\r\n\r\n', expect: { status: 400 } },
  { name: 'NUL in a header value', input: 'GET /test/1 HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n', expect: { status: 400 } },
  // Bodies and smuggling on the streaming port: no request bodies at all.
  { name: 'Transfer-Encoding + Content-Length', input: req('/test/1', 'Content-Length: 4\r\nTransfer-Encoding: chunked\r\n') + '0\r\n\r\n', expect: { status: 501 } },
  { name: 'Transfer-Encoding: chunked, identity', input: req('/test/1', 'Transfer-Encoding: chunked, identity\r\n'), expect: { status: 501 } },
  { name: 'duplicate, different Content-Length', input: req('/test/1', 'Content-Length: 1\r\nContent-Length: 2\r\n'), expect: { status: 400 } },
  { name: 'GET with a small body: the body is ignored', input: req('/test/508', 'Content-Length: 4\r\n') + 'abcd', expect: { stream: 508 } },
  // Pipelining.
  { name: 'garbage pipelined after a valid request is ignored', input: req('/test/509') + latin1('GARBAGE\x00\xff\r\n\r\n' + req('/test/1')).toString('latin1'), expect: { stream: 509 } },
  { name: 'more than 8 KiB pipelined after a valid request (same packet): cut', input: req('/test/510') + 'G'.repeat(9000), expect: { stream: 510, then: 'closed' } },
  { name: 'a valid request pipelined after a bad one is not served', input: req('/nope') + req('/test/1'), expect: { status: 404 } },
];

/** What the client must see on the control port: the status lines in order, then a close or an open connection. */
interface ControlCase {
  name: string;
  input: string | Buffer;
  statuses: number[];
  then: 'closed' | 'open';
  reason?: RegExp;
  fin?: boolean;
  /** Messages this request legitimately publishes (to LEGIT). */
  publishes?: number;
}

/** No request of the corpus may ever publish to this id: smuggled and refused requests target it. */
const SENTINEL = 666;
/** The id that legitimate requests of the corpus publish to. */
const LEGIT = 667;

const post = (path: string, headers: string, body = ''): string => `POST ${path} HTTP/1.1\r\nHost: x\r\n${headers}\r\n${body}`;
const smuggled = post(`/send/${SENTINEL}`, 'Content-Length: 8\r\n', 'smuggled');

const CONTROL_CASES: ControlCase[] = [
  // Request smuggling: every ambiguous framing is refused before anything is published.
  { name: 'CL + TE (CL.TE)', input: post(`/send/${SENTINEL}`, 'Content-Length: 4\r\nTransfer-Encoding: chunked\r\n', '0\r\n\r\n' + smuggled), statuses: [400], then: 'closed', reason: /Transfer-Encoding can't be present with Content-Length/ },
  { name: 'TE + CL (TE.CL)', input: post(`/send/${SENTINEL}`, 'Transfer-Encoding: chunked\r\nContent-Length: 40\r\n', '0\r\n\r\n' + smuggled), statuses: [400], then: 'closed' },
  { name: 'duplicate Content-Length, same value', input: post(`/send/${SENTINEL}`, 'Content-Length: 1\r\nContent-Length: 1\r\n', 'z'), statuses: [400], then: 'closed', reason: /Duplicate Content-Length/ },
  { name: 'duplicate Content-Length, different values', input: post(`/send/${SENTINEL}`, 'Content-Length: 1\r\nContent-Length: 9\r\n', 'z' + smuggled), statuses: [400], then: 'closed' },
  { name: 'Content-Length list "1, 1"', input: post(`/send/${SENTINEL}`, 'Content-Length: 1, 1\r\n', 'z'), statuses: [400], then: 'closed' },
  { name: 'Content-Length -1', input: post(`/send/${SENTINEL}`, 'Content-Length: -1\r\n', 'z'), statuses: [400], then: 'closed' },
  { name: 'Content-Length overflow', input: post(`/send/${SENTINEL}`, 'Content-Length: 99999999999999999999\r\n', 'z'), statuses: [400], then: 'closed' },
  { name: 'Transfer-Encoding: chunked, identity', input: post(`/send/${SENTINEL}`, 'Transfer-Encoding: chunked, identity\r\n', '1\r\nz\r\n0\r\n\r\n'), statuses: [400], then: 'closed' },
  { name: 'Transfer-Encoding: identity', input: post(`/send/${SENTINEL}`, 'Transfer-Encoding: identity\r\n', 'z'), statuses: [400], then: 'closed' },
  { name: 'Transfer-Encoding: xchunked', input: post(`/send/${SENTINEL}`, 'Transfer-Encoding: xchunked\r\n', 'z'), statuses: [400], then: 'closed' },
  { name: 'Transfer-Encoding twice', input: post(`/send/${SENTINEL}`, 'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n', '1\r\nz\r\n0\r\n\r\n'), statuses: [400], then: 'closed' },
  { name: '"Transfer-Encoding :" (space before the colon)', input: post(`/send/${SENTINEL}`, 'Transfer-Encoding : chunked\r\nContent-Length: 1\r\n', 'z'), statuses: [400], then: 'closed' },
  { name: 'bad chunk size', input: post(`/send/${SENTINEL}`, 'Transfer-Encoding: chunked\r\n', 'zz\r\nz\r\n0\r\n\r\n'), statuses: [400], then: 'closed' },
  { name: 'body shorter than Content-Length, then FIN', input: post(`/send/${SENTINEL}`, 'Content-Length: 10\r\n', 'abc'), fin: true, statuses: [400], then: 'closed' },
  { name: 'Transfer-Encoding: identity, chunked (RFC: chunked last wins) publishes once', input: post(`/send/${LEGIT}`, 'Transfer-Encoding: identity, chunked\r\n', '2\r\nok\r\n0\r\n\r\n'), statuses: [200], then: 'open', publishes: 1 },
  // Bodies over the limit: 413 and a close, the pipelined rest is never parsed.
  { name: 'declared body over 64 KiB, smuggled requests inside', input: post(`/send/${SENTINEL}`, 'Content-Length: 70000\r\n', smuggled.repeat(20)), statuses: [413], then: 'closed', reason: /larger than the limit of 65536 bytes/ },
  { name: 'chunked body over 64 KiB', input: post(`/send/${SENTINEL}`, 'Transfer-Encoding: chunked\r\n', ('8000\r\n' + 'a'.repeat(0x8000) + '\r\n').repeat(3) + '0\r\n\r\n'), statuses: [413], then: 'closed' },
  { name: 'declared NDJSON batch over 1 MiB', input: post('/send', 'Content-Length: 2000000\r\n', `{"id":${SENTINEL},"msg":"x"}\n`), statuses: [413], then: 'closed' },
  // Pipelining.
  { name: 'garbage pipelined after a valid publish: its 200 first, then 400', input: post(`/send/${LEGIT}`, 'Content-Length: 2\r\n', 'hi') + 'GARBAGE\x00\r\n\r\n', statuses: [200, 400], then: 'closed', publishes: 1 },
  { name: 'two valid requests pipelined', input: post(`/send/${LEGIT}`, 'Content-Length: 2\r\n', 'p2') + 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', statuses: [200, 200], then: 'open', publishes: 1 },
  { name: 'a smuggle attempt pipelined after a valid publish', input: post(`/send/${LEGIT}`, 'Content-Length: 2\r\n', 'p3') + post(`/send/${SENTINEL}`, 'Content-Length: 3\r\nTransfer-Encoding: chunked\r\n', '0\r\n\r\n'), statuses: [200, 400], then: 'closed', publishes: 1 },
  // Methods, heads, bytes.
  { name: 'unknown method', input: 'FOO /stats HTTP/1.1\r\nHost: x\r\n\r\n', statuses: [400], then: 'closed', reason: /Invalid method/ },
  { name: 'lowercase method', input: 'get /stats HTTP/1.1\r\nHost: x\r\n\r\n', statuses: [400], then: 'closed' },
  { name: 'HTTP/2 preface', input: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', statuses: [400], then: 'closed' },
  { name: 'truncated request line, then FIN', input: 'POST /send/66', fin: true, statuses: [400], then: 'closed' },
  { name: 'missing Host', input: 'GET /healthz HTTP/1.1\r\n\r\n', statuses: [400], then: 'closed' },
  { name: 'a 20 KB header', input: 'GET /stats HTTP/1.1\r\nHost: x\r\nX: ' + 'a'.repeat(20_000) + '\r\n\r\n', statuses: [431], then: 'closed' },
  { name: 'header flood: 5,000 small headers', input: 'GET /stats HTTP/1.1\r\nHost: x\r\n' + 'X-A: b\r\n'.repeat(5000) + '\r\n', statuses: [431], then: 'closed' },
  { name: 'NUL in the target', input: 'GET /st\x00ats HTTP/1.1\r\nHost: x\r\n\r\n', statuses: [400], then: 'closed' },
  { name: 'NUL in a header value', input: 'GET /stats HTTP/1.1\r\nHost: x\x00y\r\n\r\n', statuses: [400], then: 'closed' },
  { name: 'invalid UTF-8 bytes in the target', input: latin1(post(`/send/\xff\xfe`, 'Content-Length: 1\r\n', 'z')), statuses: [400], then: 'closed' },
  { name: 'percent-encoded invalid UTF-8 id', input: post('/send/%ff', 'Content-Length: 1\r\n', 'z'), statuses: [400], then: 'open', reason: /malformed percent-encoding/ },
  { name: 'invalid UTF-8 in a message body is delivered as U+FFFD', input: latin1(post(`/send/${LEGIT}`, 'Content-Length: 3\r\n', 'a\xffb')), statuses: [200], then: 'open', publishes: 1 },
  // Bad ids and path tricks on /send/<id>: JSON 400/404, the connection stays usable.
  { name: 'id -1', input: post('/send/-1', 'Content-Length: 1\r\n', 'z'), statuses: [400], then: 'open' },
  { name: 'id with a leading zero', input: post(`/send/0${SENTINEL}`, 'Content-Length: 1\r\n', 'z'), statuses: [400], then: 'open', reason: /leading zero/ },
  { name: 'id 2^53', input: post('/send/9007199254740992', 'Content-Length: 1\r\n', 'z'), statuses: [400], then: 'open' },
  { name: 'empty id', input: post('/send/', 'Content-Length: 1\r\n', 'z'), statuses: [400], then: 'open' },
  { name: 'two ids', input: post(`/send/${SENTINEL},1`, 'Content-Length: 1\r\n', 'z'), statuses: [400], then: 'open' },
  { name: '%2e%2e', input: post('/send/%2e%2e', 'Content-Length: 1\r\n', 'z'), statuses: [400], then: 'open' },
  { name: '/send/../stats', input: post('/send/../stats', 'Content-Length: 1\r\n', 'z'), statuses: [400], then: 'open' },
  { name: '/stats/../send/<id>', input: post(`/stats/../send/${SENTINEL}`, 'Content-Length: 1\r\n', 'z'), statuses: [404], then: 'open' },
  { name: 'encoded slash in the id', input: post(`/send/1%2f${SENTINEL}`, 'Content-Length: 1\r\n', 'z'), statuses: [400], then: 'open' },
  { name: 'double slash', input: post(`//send/${SENTINEL}`, 'Content-Length: 1\r\n', 'z'), statuses: [404], then: 'open' },
  { name: 'trailing slash', input: post(`/send/${SENTINEL}/`, 'Content-Length: 1\r\n', 'z'), statuses: [400], then: 'open' },
  { name: 'absolute-form target', input: post(`http://evil.example/send/${SENTINEL}`, 'Content-Length: 1\r\n', 'z'), statuses: [404], then: 'open' },
  { name: 'percent-encoded digits are decoded on the control port', input: post(`/send/%36%36%37`, 'Content-Length: 3\r\n', 'pct'), statuses: [200], then: 'open', publishes: 1 },
];

function statusesOf(text: string): number[] {
  return [...text.matchAll(/(?:^|\n)HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
}

async function sendInput(c: RawClient, input: string | Buffer, fin = false, pieces = 0): Promise<void> {
  const buf = typeof input === 'string' ? latin1(input) : input;
  if (pieces > 0) {
    await c.connected();
    for (let i = 0; i < buf.length && !c.closed; i += pieces) {
      c.send(buf.subarray(i, i + pieces));
      await new Promise((r) => setImmediate(r));
    }
  } else {
    c.send(buf);
  }
  if (fin) c.socket.end();
}

describe('abuse corpus against one server, while normal streams keep receiving', () => {
  let s: CometServer;
  let control: string;
  const keepers: Array<{ c: RawClient; id: number; sse: boolean; expected: number }> = [];
  let legit: RawClient;
  let sentinel: RawClient;
  let publishing = true;
  let background: Promise<void>;
  let sent = 0;

  before(async () => {
    s = await startCometServer({ host: '127.0.0.1', port: 0, controlHost: '127.0.0.1', controlPort: 0, requestTimeoutMs: 300 });
    control = `http://127.0.0.1:${s.controlPort}`;
    for (let i = 0; i < 20; i++) {
      const sse = i % 4 === 3;
      const id = 100 + i;
      keepers.push({ c: await openStream(s.port, `/${sse ? 'sse' : 'test'}/${id}`), id, sse, expected: 0 });
    }
    legit = await openStream(s.port, `/test/${LEGIT}`);
    sentinel = await openStream(s.port, `/sse/${SENTINEL}`);
    // Normal traffic for the whole corpus run: one message every 2 ms, round-robin over the keepers.
    background = (async () => {
      while (publishing) {
        const k = keepers[sent % keepers.length]!;
        if ((await s.publish(k.id, `bg ${sent} <&>`)) !== 1) throw new Error(`keeper ${k.id} not reached`);
        k.expected++;
        sent++;
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
  });

  after(async () => {
    publishing = false;
    await background.catch(() => undefined);
    for (const k of keepers) k.c.close();
    legit?.close();
    sentinel?.close();
    await s.stop();
  });

  describe('streaming port', () => {
    let badBefore = 0;
    let badCases = 0;
    before(() => {
      badBefore = s.stats().badRequests;
    });
    for (const t of STREAM_CASES) {
      const e = t.expect;
      const label = 'status' in e ? String(e.status) : 'closed' in e ? 'closed' : e.then === 'closed' ? '200, then closed' : '200 stream';
      it(`${t.name} → ${label}`, async () => {
        const c = new RawClient(s.port);
        try {
          await sendInput(c, t.input, t.fin, t.pieces);
          if ('status' in e) {
            badCases++;
            const text = await c.untilClosed(3000);
            const head = text.slice(0, text.indexOf('\r\n'));
            assert.match(head, new RegExp(`^HTTP/1\\.1 ${e.status} `), JSON.stringify(text.slice(0, 200)));
            assert.match(text, /\r\nConnection: close\r\n/);
            const body = text.slice(text.indexOf('\r\n\r\n') + 4);
            assert.equal(body.split('\n').length, 2, `a one-line reason: ${JSON.stringify(body.slice(0, 200))}`);
            if (e.reason) assert.match(body, e.reason);
          } else if ('closed' in e) {
            assert.equal(await c.untilClosed(3000), '', 'closed without an answer');
          } else {
            await c.until('\r\n\r\n');
            assert.match(c.text, /^HTTP\/1\.1 200 OK\r\n/);
            if (e.then === 'closed') {
              await c.untilClosed(3000);
            } else {
              assert.equal(await s.publish(e.stream, 'for the corpus'), 1, 'exactly one stream logged in');
              await c.until(t.input.toString().includes('/sse/') ? 'id: 1\ndata: for the corpus\n\n' : htmlChunk(1, 'for the corpus'));
            }
          }
        } finally {
          c.close();
        }
      });
    }
    it('every error answer was counted as a bad request', async () => {
      assert.equal(s.stats().badRequests - badBefore, badCases);
      assert.ok(s.stats().inputAbuse >= 1, 'the pipelined 9,000 bytes were counted as input abuse');
    });
  });

  describe('control port (node:http)', () => {
    let inBefore = 0;
    let sentBefore = 0;
    let legitExpected = 0;
    before(() => {
      inBefore = s.stats().messagesIn;
      sentBefore = sent;
    });
    for (const t of CONTROL_CASES) {
      it(`${t.name} → ${t.statuses.join(', ')}, ${t.then}`, async () => {
        const c = new RawClient(s.controlPort);
        try {
          await sendInput(c, t.input, t.fin);
          legitExpected += t.publishes ?? 0;
          if (t.then === 'closed') {
            await c.untilClosed(3000);
          } else {
            // Keep-alive: wait for the last response's whole body (every answer here has a Content-Length).
            await c.until((text) => {
              const st = statusesOf(text);
              if (st.length < t.statuses.length) return false;
              const last = text.lastIndexOf('HTTP/1.1 ');
              const m = /content-length: (\d+)\r\n[\s\S]*?\r\n\r\n/i.exec(text.slice(last));
              const chunkedDone = /transfer-encoding: chunked/i.test(text.slice(last)) && text.endsWith('0\r\n\r\n');
              return chunkedDone || (m !== null && Buffer.byteLength(text.slice(last + m.index + m[0].length), 'latin1') >= Number(m[1]));
            });
            assert.equal(c.closed, false, 'the connection stays open');
          }
          assert.deepEqual(statusesOf(c.text), t.statuses, JSON.stringify(c.text.slice(0, 300)));
          if (t.reason) assert.match(c.text, t.reason);
          // Every error answer is one line of JSON.
          for (const m of c.text.matchAll(/HTTP\/1\.1 [45]\d\d [^\r]*\r\n[\s\S]*?\r\n\r\n([^\n]*\n)?/g)) {
            if (m[1]) assert.doesNotThrow(() => JSON.parse(m[1]!), m[1]);
          }
        } finally {
          c.close();
        }
      });
    }
    it('only the legitimate requests published, each exactly once; nothing reached the sentinel', async () => {
      await eventually(() => (legit.text.match(/Recvd msg #/g) ?? []).length === legitExpected, `${legitExpected} messages to ${LEGIT}`);
      assert.equal(s.stats().messagesIn - inBefore, legitExpected + (sent - sentBefore));
      // U+FFFD as the latin1 view of its UTF-8 bytes (the raw client keeps latin1 text).
      assert.ok(legit.text.includes(`: 'a${Buffer.from('\uFFFD', 'utf8').toString('latin1')}b'<br/>`), 'U+FFFD for the invalid byte');
      assert.match(legit.text, /Recvd msg #\d+: 'hi'<br\/>/);
      assert.match(legit.text, /Recvd msg #\d+: 'pct'<br\/>/);
      assert.equal(sentinel.text.includes('data:'), false, `the sentinel received ${JSON.stringify(sentinel.text.slice(-200))}`);
    });
  });

  it('the normal streams received every message sent during the corpus run, in order', async () => {
    publishing = false;
    await background;
    assert.ok(sent >= 100, `background messages sent: ${sent}`);
    for (const k of keepers) {
      const pattern = k.sse ? /id: (\d+)\ndata: bg \d+ <&>\n\n/g : /Recvd msg #(\d+): 'bg \d+ &lt;&amp;&gt;'<br\/>/g;
      await k.c.until((t) => (t.match(pattern) ?? []).length >= k.expected, 5000);
      const nums = [...k.c.text.matchAll(pattern)].map((m) => Number(m[1]));
      assert.equal(nums.length, k.expected, `keeper ${k.id}`);
      assert.deepEqual(nums, Array.from({ length: k.expected }, (_, i) => i + 1), `keeper ${k.id} numbering`);
      assert.equal(k.c.closed, false);
    }
  });

  it('the server still serves: a new stream and the control API work', async () => {
    const c = await openStream(s.port, '/test/999');
    const r = await fetch(`${control}/send/999`, { method: 'POST', body: 'after the corpus' });
    assert.deepEqual(await r.json(), { delivered: 1 });
    await c.until(htmlChunk(1, 'after the corpus'));
    c.close();
    assert.equal((await fetch(`${control}/healthz`)).status, 200);
    const st = (await (await fetch(`${control}/stats`)).json()) as Record<string, number>;
    assert.equal(st.messagesIn, st.messagesDelivered + st.toNobody);
  });
});
