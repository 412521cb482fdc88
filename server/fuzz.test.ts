// Seeded fuzz test of the streaming port's request parser: random bytes and mutations (bit flips, byte changes,
// insertions, deletions, duplications, splices) of valid requests, fed whole and in random splits.
//
// Asserted for every case: nothing but a RequestError escapes; the outcome is one of the defined ones (a head with
// its invariants, "needs more bytes", or a RequestError with a known code, its status and a one-line message); the
// outcome is the same in any split; the parser never buffers more than its limits. And over the whole run the
// heap does not grow.
//
// Reproduce a failure with the seed it prints: C1M_FUZZ_SEED=<seed> node --test dist/server/fuzz.test.js
// (C1M_FUZZ_CASES changes the number of cases, default 100,000).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import { RequestError, RequestParser, type ParserLimits, type RequestErrorCode, type RequestHead } from './parser.js';
import { DEFAULT_LIMITS } from './limits.js';

const SEED = process.env.C1M_FUZZ_SEED ? Number(process.env.C1M_FUZZ_SEED) >>> 0 : 0xc1f022;
const CASES = process.env.C1M_FUZZ_CASES ? Number(process.env.C1M_FUZZ_CASES) : 100_000;

/** Every error code and the status it must carry. */
const STATUS: Record<RequestErrorCode, number> = {
  C1M_HTTP_BAD_METHOD: 400,
  C1M_HTTP_BAD_TARGET: 400,
  C1M_HTTP_BAD_VERSION: 400,
  C1M_HTTP_UNSUPPORTED_VERSION: 505,
  C1M_HTTP_LINE_TOO_LONG: 414,
  C1M_HTTP_HEADERS_TOO_LARGE: 431,
  C1M_HTTP_TOO_MANY_HEADERS: 431,
  C1M_HTTP_BAD_HEADER: 400,
  C1M_HTTP_BAD_LINE_ENDING: 400,
  C1M_HTTP_MISSING_HOST: 400,
  C1M_HTTP_BAD_CONTENT_LENGTH: 400,
  C1M_HTTP_UNSUPPORTED_BODY: 501,
};

/** mulberry32: small, fast, and the same sequence for the same seed on every machine. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CORPUS = [
  'GET /test/1 HTTP/1.1\r\nHost: example\r\n\r\n',
  'GET /sse/42 HTTP/1.1\r\nHost: a:8000\r\nAccept: text/event-stream\r\nLast-Event-ID: 17\r\nOrigin: http://o\r\n\r\n',
  'GET /test/1,2,3 HTTP/1.0\r\n\r\n',
  'HEAD /test/9007199254740991?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n',
  'GET http://example.com:8000/test/5 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: fuzz/1.0\r\nAccept-Encoding: gzip\r\n\r\n',
  '\r\nGET /test/7 HTTP/1.1\nHost: lf\n\n',
  'POST /test/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello',
  'GET /test/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  'OPTIONS * HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n',
  'GET /sse/1 HTTP/1.1\r\nhost: lower\r\nCONTENT-LENGTH: 00\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n',
].map((s) => Buffer.from(s, 'latin1'));

/** Bytes that matter to the parser, drawn more often than the rest. */
const INTERESTING = [13, 10, 32, 9, 58, 47, 0, 0x7f, 0xff, 0x80, 44, 63, 37];

/** What one feed ended with; compared across splits as JSON. */
type Outcome =
  | { kind: 'ok'; end: number; head: RequestHead }
  | { kind: 'incomplete' }
  | { kind: 'error'; code: string; status: number; message: string };

/** Feeds the pieces; returns the outcome, checking the parser's buffered size after every piece. */
function run(pieces: Buffer[], limits: ParserLimits, bound: number): Outcome {
  const p = new RequestParser(limits);
  const internals = p as unknown as { line: string };
  let offset = 0;
  try {
    for (const piece of pieces) {
      const end = p.execute(piece);
      // The only input the parser keeps between calls is the current line (a latin1 string).
      assert.equal(typeof internals.line, 'string', 'the parser keeps its partial line in `line`');
      if (internals.line.length > bound) throw new Error(`parser buffers ${internals.line.length} bytes, over its bound of ${bound}`);
      if (end >= 0) return { kind: 'ok', end: offset + end, head: { ...p.head } };
      offset += piece.length;
    }
    return { kind: 'incomplete' };
  } catch (err) {
    if (!(err instanceof RequestError)) throw err;
    return { kind: 'error', code: err.code, status: err.status, message: err.message };
  }
}

/** The invariants of each kind of outcome. */
function checkOutcome(o: Outcome, input: Buffer, limits: ParserLimits): void {
  if (o.kind === 'incomplete') return;
  if (o.kind === 'error') {
    assert.ok(o.code in STATUS, `unknown error code ${o.code}`);
    assert.equal(o.status, STATUS[o.code as RequestErrorCode], `${o.code} carries status ${STATUS[o.code as RequestErrorCode]}`);
    assert.ok(o.message.length > 0 && !/[\r\n]/.test(o.message), 'a non-empty one-line message');
    return;
  }
  const h = o.head;
  assert.ok(o.end > 0 && o.end <= input.length, 'the head ends inside the input');
  assert.match(h.method, /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'the method is a token');
  assert.ok(h.target.startsWith('/') || h.target === '*', 'origin-form target');
  assert.match(h.target, /^[\x21-\x7e]+$/, 'the target is visible ASCII');
  assert.ok(h.target.length <= limits.maxRequestLineBytes, 'the target fits the request line limit');
  assert.ok(h.minor === 0 || h.minor === 1);
  if (h.minor === 1) assert.notEqual(h.host, null, 'HTTP/1.1 has a Host');
  for (const v of [h.host, h.origin, h.lastEventId]) {
    if (v !== null) assert.ok(v.length <= limits.maxHeaderBytes && !/[\r\n\0]/.test(v), 'header values are bounded and have no CR, LF or NUL');
  }
  assert.ok(Number.isSafeInteger(h.contentLength) && h.contentLength >= 0);
}

function splitRandomly(buf: Buffer, rand: () => number): Buffer[] {
  const k = 2 + Math.floor(rand() * 7);
  const cuts = new Set<number>();
  for (let i = 0; i < k - 1 && buf.length > 1; i++) cuts.add(1 + Math.floor(rand() * (buf.length - 1)));
  const sorted = [...cuts].sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let from = 0;
  for (const c of sorted) {
    pieces.push(buf.subarray(from, c));
    from = c;
  }
  pieces.push(buf.subarray(from));
  return pieces;
}

function randomByte(rand: () => number): number {
  const r = rand();
  if (r < 0.35) return INTERESTING[Math.floor(rand() * INTERESTING.length)]!;
  if (r < 0.8) return 0x20 + Math.floor(rand() * 0x5f); // printable ASCII
  return Math.floor(rand() * 256);
}

/** One fuzz input: random bytes, or a valid request with a few mutations. */
function generate(rand: () => number): Buffer {
  if (rand() < 0.15) {
    const len = Math.floor(rand() * 300);
    const out = Buffer.alloc(len);
    for (let i = 0; i < len; i++) out[i] = randomByte(rand);
    return out;
  }
  let buf = Buffer.from(CORPUS[Math.floor(rand() * CORPUS.length)]!);
  for (let m = 1 + Math.floor(rand() * 4); m > 0; m--) {
    const at = Math.floor(rand() * (buf.length + 1));
    const op = rand();
    if (op < 0.2 && buf.length > 0) {
      buf[Math.min(at, buf.length - 1)]! ^= 1 << Math.floor(rand() * 8); // bit flip
    } else if (op < 0.4 && buf.length > 0) {
      buf[Math.min(at, buf.length - 1)] = randomByte(rand); // byte change
    } else if (op < 0.55) {
      const ins = Buffer.alloc(1 + Math.floor(rand() * 8));
      for (let i = 0; i < ins.length; i++) ins[i] = randomByte(rand);
      buf = Buffer.concat([buf.subarray(0, at), ins, buf.subarray(at)]); // insertion
    } else if (op < 0.7) {
      buf = Buffer.concat([buf.subarray(0, at), buf.subarray(at + 1 + Math.floor(rand() * 8))]); // deletion
    } else if (op < 0.85) {
      const other = CORPUS[Math.floor(rand() * CORPUS.length)]!;
      const from = Math.floor(rand() * other.length);
      buf = Buffer.concat([buf.subarray(0, at), other.subarray(from, from + Math.floor(rand() * 40))]); // splice
    } else if (op < 0.97) {
      const from = Math.floor(rand() * buf.length);
      const seg = buf.subarray(from, from + 1 + Math.floor(rand() * 20));
      const times = 1 + Math.floor(rand() * 12);
      buf = Buffer.concat([buf.subarray(0, at), ...Array<Buffer>(times).fill(seg), buf.subarray(at)]); // duplication (header floods)
    } else {
      // A long run, to cross the default limits now and then.
      buf = Buffer.concat([buf.subarray(0, at), Buffer.alloc(4000 + Math.floor(rand() * 6000), rand() < 0.5 ? 0x61 : 0x2c), buf.subarray(at)]);
    }
  }
  return buf;
}

function gc(): void {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

describe('request parser fuzz', () => {
  it(`${CASES} seeded cases (seed ${SEED}): only RequestError escapes, defined outcomes, same in any split, bounded buffering`, (t) => {
    const rand = prng(SEED);
    const counts = new Map<string, number>();
    const small = (): ParserLimits => ({
      maxRequestLineBytes: 16 + Math.floor(rand() * 112),
      maxHeaderBytes: 16 + Math.floor(rand() * 240),
      maxHeaderCount: 1 + Math.floor(rand() * 6),
    });
    const defaults: ParserLimits = {
      maxRequestLineBytes: DEFAULT_LIMITS.maxRequestLineBytes,
      maxHeaderBytes: DEFAULT_LIMITS.maxHeaderBytes,
      maxHeaderCount: DEFAULT_LIMITS.maxHeaderCount,
    };
    gc();
    const heap0 = process.memoryUsage().heapUsed;
    const t0 = performance.now();
    let n = 0;
    let input: Buffer = Buffer.alloc(0);
    try {
      for (n = 0; n < CASES; n++) {
        input = generate(rand);
        const limits = rand() < 0.3 ? small() : defaults;
        const bound = Math.max(limits.maxRequestLineBytes, limits.maxHeaderBytes);
        const outcome = run([input], limits, bound);
        checkOutcome(outcome, input, limits);
        const whole = JSON.stringify(outcome);
        const split = JSON.stringify(run(splitRandomly(input, rand), limits, bound));
        assert.equal(split, whole, 'a random split gives the same outcome');
        if (n % 16 === 0 && input.length <= 400) {
          const bytes = JSON.stringify(run([...input].map((b) => Buffer.from([b])), limits, bound));
          assert.equal(bytes, whole, 'one byte at a time gives the same outcome');
        }
        const kind = outcome.kind === 'error' ? outcome.code : outcome.kind;
        counts.set(kind, (counts.get(kind) ?? 0) + 1);
      }
    } catch (err) {
      const hex = input.subarray(0, 512).toString('hex');
      assert.fail(
        `fuzz case ${n} failed; reproduce with C1M_FUZZ_SEED=${SEED} (input ${input.length} bytes, hex ${hex}${input.length > 512 ? '...' : ''}): ` +
          (err instanceof Error ? err.stack ?? err.message : String(err)),
      );
    }
    const ms = performance.now() - t0;
    gc();
    const growth = process.memoryUsage().heapUsed - heap0;
    t.diagnostic(`seed ${SEED}: ${CASES} cases in ${ms.toFixed(0)} ms; heap growth ${(growth / 1024).toFixed(0)} KiB; outcomes ${JSON.stringify(Object.fromEntries([...counts].sort()))}`);
    assert.ok(growth < 8 * 1024 * 1024, `heap grew by ${growth} bytes over the run`);
    // The generator must reach every part of the parser, or the run proves little.
    assert.ok((counts.get('ok') ?? 0) > CASES / 50, 'enough inputs parse');
    assert.ok((counts.get('incomplete') ?? 0) > CASES / 100, 'enough inputs are incomplete');
    const codes = [...counts.keys()].filter((k) => k.startsWith('C1M_'));
    if (CASES >= 100_000) assert.deepEqual(codes.sort(), Object.keys(STATUS).sort(), 'every error code was produced');
  });
});
