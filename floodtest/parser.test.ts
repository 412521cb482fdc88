// Response parser: every input is fed whole, one byte at a time, and split at every single position; the
// outcome (hooks called, result, error code) must be identical.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ResponseParser, ExecResult, ParseErrorCode, PARSER_LIMITS } from './parser.js';

class Recorder extends ResponseParser {
  log: string[] = [];
  wantBody = true;
  protected override onHeaders(): boolean {
    this.log.push(`headers ${this.statusCode}${this.sse ? ' sse' : ''}`);
    return this.wantBody;
  }
  protected override onChunk(marker: number): void {
    this.log.push(`chunk ${marker}`);
  }
  protected override onEvent(marker: number): void {
    this.log.push(`event ${marker}`);
  }
  protected override onEnd(): void {
    this.log.push('end');
  }
}

interface Outcome {
  log: string[];
  result: ExecResult;
  code: string | null;
  buffering: boolean;
}

// Feeds `pieces` in order; stops at the first non-OK result; calls finish() at EOF when asked.
function run(pieces: Buffer[], eof: boolean, wantBody = true): Outcome {
  const p = new Recorder();
  p.wantBody = wantBody;
  let result: ExecResult = ExecResult.OK;
  for (const piece of pieces) {
    // A fresh copy that is then scribbled over: the parser must not keep references to the caller's buffer.
    const copy = Buffer.from(piece);
    result = p.execute(copy, 0, copy.length);
    copy.fill(0x58);
    // After DONE the caller may still (wrongly) feed bytes: that must be DATA_AFTER_END whatever the split.
    if (result === ExecResult.HALTED || result === ExecResult.ERROR) break;
  }
  if (eof && result === ExecResult.OK) result = p.finish();
  return { log: p.log, result, code: p.error?.code ?? null, buffering: p.buffering };
}

function bytewise(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i++) out.push(buf.subarray(i, i + 1));
  return out;
}

// Checks the same outcome for the whole input, byte by byte, and every two-piece split.
function same(input: string | Buffer, eof = false, wantBody = true): Outcome {
  const buf = typeof input === 'string' ? Buffer.from(input, 'latin1') : input;
  const whole = run([buf], eof, wantBody);
  assert.deepEqual(run(bytewise(buf), eof, wantBody), whole, 'byte-at-a-time differs from whole');
  for (let k = 1; k < buf.length; k++) {
    assert.deepEqual(run([buf.subarray(0, k), buf.subarray(k)], eof, wantBody), whole, `split at ${k} differs from whole`);
  }
  return whole;
}

const chunk = (s: string): string => `${Buffer.byteLength(s, 'latin1').toString(16)}\r\n${s}\r\n`;

test('chunked text/html stream: one chunk per message, markers found, trailers and end', () => {
  const input =
    'HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n' +
    chunk("Recvd msg #1: 'hello @t=1700000000000001'<br/>") +
    chunk("Recvd msg #2: 'no marker'<br/>") +
    chunk("Recvd msg #3: '@t=42 x'<br/>").replace('\r\n', ';ext=1;other \r\n') +
    chunk("Recvd msg #4: 'a @t=1 then @t=1700000000000004'<br/>") +
    '0\r\nX-Trailer: yes\r\n\r\n';
  const out = same(input);
  assert.deepEqual(out.log, [
    'headers 200',
    'chunk 1700000000000001',
    'chunk -1',
    'chunk 42',
    'chunk 1700000000000004',
    'end',
  ]);
  assert.equal(out.result, ExecResult.DONE);
  assert.equal(out.buffering, false);
});

test('open stream at rest holds no buffer; a split chunk is buffered only until it completes', () => {
  const p = new Recorder();
  const head = Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
  assert.equal(p.execute(head), ExecResult.OK);
  assert.equal(p.buffering, false);
  const body = Buffer.from(chunk('msg @t=123456'));
  assert.equal(p.execute(body.subarray(0, 8)), ExecResult.OK);
  assert.equal(p.buffering, true);
  assert.equal(p.execute(body.subarray(8)), ExecResult.OK);
  assert.equal(p.buffering, false);
  assert.deepEqual(p.log, ['headers 200', 'chunk 123456']);
});

test('text/event-stream over chunked: events, comments, id lines, CRLF/LF/CR endings, events across chunks', () => {
  const input =
    'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n' +
    chunk('id: 1\ndata: first @t=111\n\n') +
    chunk(': heartbeat\n\n') +
    chunk('id: 2\r\ndata: second\r\n\r\n') +
    chunk('data: third @t=333\r\rdata: four') + // CR line endings; the 4th event spans two chunks
    chunk('th @t=444\ndata: more\n') +
    chunk('\n') +
    chunk('event: x\nid: 9\n\n') + // no data field: not an event
    chunk('data\n\n') + // a bare `data` field counts (empty data line)
    '0\r\n\r\n';
  const out = same(input);
  assert.deepEqual(out.log, [
    'headers 200 sse',
    'event 111', 'chunk -1', // an event is dispatched at its blank line, before its chunk's closing CRLF
    'chunk -1',
    'event -1', 'chunk -1',
    'event 333', 'chunk -1',
    'chunk -1',
    'event 444', 'chunk -1',
    'chunk -1',
    'event -1', 'chunk -1',
    'end',
  ]);
});

test('text/event-stream with Content-Length and read-until-close bodies', () => {
  const body = 'data: a @t=5\n\ndata: b\n\n';
  const withLength = same(`HTTP/1.1 200 OK\r\ncontent-type: Text/Event-Stream; charset=utf-8\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  assert.deepEqual(withLength.log, ['headers 200 sse', 'event 5', 'event -1', 'end']);
  assert.equal(withLength.result, ExecResult.DONE);
  const untilClose = same(`HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n${body}data: cut`, true);
  assert.deepEqual(untilClose.log, ['headers 200 sse', 'event 5', 'event -1', 'end']);
  assert.equal(untilClose.result, ExecResult.DONE);
});

test('interim 1xx responses are skipped; 204 ends with its headers; reason phrase optional', () => {
  const out = same('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204\r\n\r\n');
  assert.deepEqual(out.log, ['headers 204', 'end']);
  assert.equal(out.result, ExecResult.DONE);
});

test('onHeaders returning false halts: a 404 body is not parsed', () => {
  const out = same('HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found', false, false);
  assert.deepEqual(out.log, ['headers 404']);
  assert.equal(out.result, ExecResult.HALTED);
  assert.equal(out.code, null);
});

test('a marker in a chunk larger than the scan limit is still found', () => {
  const big = 'x'.repeat(PARSER_LIMITS.maxMarkerScanBytes + 10) + ' @t=777';
  const input = Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n' + chunk(big) + '0\r\n\r\n', 'latin1');
  const whole = run([input], false);
  assert.deepEqual(whole.log, ['headers 200', 'chunk 777', 'end']);
  const pieces: Buffer[] = [];
  for (let i = 0; i < input.length; i += 1000) pieces.push(input.subarray(i, i + 1000));
  assert.deepEqual(run(pieces, false).log, whole.log);
});

// Malformed input: each case names the error code it must produce, whichever way the bytes are split.
const BAD: Array<[string, string, boolean?]> = [
  ['HTTP/2 200 OK\r\n\r\n', ParseErrorCode.INVALID_VERSION],
  ['ICY 200 OK\r\n\r\n', ParseErrorCode.INVALID_VERSION],
  ['HTTP/1.1 20 OK\r\n\r\n', ParseErrorCode.INVALID_STATUS],
  ['HTTP/1.1 2000 OK\r\n\r\n', ParseErrorCode.INVALID_STATUS],
  ['HTTP/1.1 099 Low\r\n\r\n', ParseErrorCode.INVALID_STATUS],
  ['HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n', ParseErrorCode.CR_EXPECTED],
  ['HTTP/1.1 200 OK\rX: y\r\n\r\n', ParseErrorCode.LF_EXPECTED],
  ['HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n', ParseErrorCode.INVALID_HEADER_TOKEN],
  ['HTTP/1.1 200 OK\r\nNoColon\r\n\r\n', ParseErrorCode.INVALID_HEADER_TOKEN],
  ['HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n', ParseErrorCode.INVALID_HEADER_TOKEN],
  ['HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n', ParseErrorCode.INVALID_HEADER_VALUE],
  ['HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n', ParseErrorCode.INVALID_CONTENT_LENGTH],
  ['HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n', ParseErrorCode.INVALID_CONTENT_LENGTH],
  ['HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n', ParseErrorCode.UNEXPECTED_CONTENT_LENGTH],
  ['HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n', ParseErrorCode.INVALID_TRANSFER_ENCODING],
  ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n', ParseErrorCode.INVALID_TRANSFER_ENCODING],
  ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', ParseErrorCode.INVALID_CHUNK_SIZE],
  ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1234567890abc\r\n', ParseErrorCode.INVALID_CHUNK_SIZE],
  ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 5\r\n', ParseErrorCode.INVALID_CHUNK_SIZE],
  ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\n', ParseErrorCode.CR_EXPECTED],
  ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\rx', ParseErrorCode.LF_EXPECTED],
  ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n', ParseErrorCode.INVALID_CHUNK_END],
  ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\r', ParseErrorCode.LF_EXPECTED],
  ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nextra', ParseErrorCode.DATA_AFTER_END],
  ['HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabc', ParseErrorCode.DATA_AFTER_END],
  ['HTTP/1.1 204 No Content\r\n\r\nx', ParseErrorCode.DATA_AFTER_END],
  ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab', ParseErrorCode.INVALID_EOF_STATE, true],
  ['HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab', ParseErrorCode.INVALID_EOF_STATE, true],
  ['HTTP/1.1 200 OK\r\nX: y', ParseErrorCode.INVALID_EOF_STATE, true],
  ['', ParseErrorCode.INVALID_EOF_STATE, true],
];

for (const [input, code, eof] of BAD) {
  test(`malformed → ${code}: ${JSON.stringify(input.slice(0, 60))}`, () => {
    const out = same(input, eof ?? false);
    assert.equal(out.result, ExecResult.ERROR);
    assert.equal(out.code, code);
    assert.equal(out.buffering, false);
  });
}

test('header block over the limit → HPE_HEADER_OVERFLOW (fed whole and in 100-byte pieces)', () => {
  const input = Buffer.from('HTTP/1.1 200 OK\r\n' + `X-Big: ${'a'.repeat(PARSER_LIMITS.maxHeaderBytes)}\r\n\r\n`);
  assert.equal(run([input], false).code, ParseErrorCode.HEADER_OVERFLOW);
  const pieces: Buffer[] = [];
  for (let i = 0; i < input.length; i += 100) pieces.push(input.subarray(i, i + 100));
  assert.equal(run(pieces, false).code, ParseErrorCode.HEADER_OVERFLOW);
});

test('event-stream line over the limit → HPE_LINE_TOO_LONG', () => {
  const head = Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: ');
  const p = new Recorder();
  assert.equal(p.execute(head), ExecResult.OK);
  const block = Buffer.alloc(64 * 1024, 0x61);
  let result: ExecResult = ExecResult.OK;
  for (let sent = 0; sent <= PARSER_LIMITS.maxSseLineBytes && result === ExecResult.OK; sent += block.length) result = p.execute(block);
  assert.equal(result, ExecResult.ERROR);
  assert.equal(p.error?.code, ParseErrorCode.LINE_TOO_LONG);
});

test('reset() makes the parser reusable for the next response', () => {
  const p = new Recorder();
  assert.equal(p.execute(Buffer.from('HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n')), ExecResult.DONE);
  p.reset();
  assert.equal(p.execute(Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n' + chunk('@t=9'))), ExecResult.OK);
  assert.deepEqual(p.log, ['headers 500', 'end', 'headers 200', 'chunk 9']);
});
