// A strict, incremental HTTP/1.1 request-head parser for the streaming port.
//
// It reads raw bytes in any split (one byte at a time included), keeps only what the server needs (method,
// target, version and a handful of headers), enforces the size limits as it goes so an oversized line is
// refused as soon as it passes the limit, and reports every problem as a RequestError with a stable code
// and the HTTP status to answer with. It stops at the end of the head: a streaming GET has no body, and
// whatever follows is the server's business (it ignores it).
import { DEFAULT_LIMITS } from './limits.js';

/** Stable codes of request errors; each maps to one HTTP status. */
export type RequestErrorCode =
  | 'C1M_HTTP_BAD_METHOD'
  | 'C1M_HTTP_BAD_TARGET'
  | 'C1M_HTTP_BAD_VERSION'
  | 'C1M_HTTP_UNSUPPORTED_VERSION'
  | 'C1M_HTTP_LINE_TOO_LONG'
  | 'C1M_HTTP_HEADERS_TOO_LARGE'
  | 'C1M_HTTP_TOO_MANY_HEADERS'
  | 'C1M_HTTP_BAD_HEADER'
  | 'C1M_HTTP_BAD_LINE_ENDING'
  | 'C1M_HTTP_MISSING_HOST'
  | 'C1M_HTTP_BAD_CONTENT_LENGTH'
  | 'C1M_HTTP_UNSUPPORTED_BODY';

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

/** A malformed or oversized request; `status` is the HTTP status to answer with, `message` a one-line reason. */
export class RequestError extends Error {
  readonly status: number;
  constructor(readonly code: RequestErrorCode, message: string) {
    super(message);
    this.name = 'RequestError';
    this.status = STATUS[code];
  }
}

/** The parsed request head: only what the streaming server uses. */
export interface RequestHead {
  method: string;
  /** The request target as sent (origin-form `/path?query`, or the path of an absolute-form target). */
  target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: 0 | 1;
  host: string | null;
  origin: string | null;
  lastEventId: string | null;
  contentLength: number;
}

/** Size limits of the parser. */
export interface ParserLimits {
  maxRequestLineBytes: number;
  maxHeaderBytes: number;
  maxHeaderCount: number;
}

// States of the byte machine.
const S_START = 0; // before the request line; empty lines are skipped (RFC 9112 2.2)
const S_LINE = 1; // inside the request line
const S_LINE_CR = 2; // saw CR at the end of the request line
const S_HEADER_START = 3; // at the beginning of a header line (or the final empty line)
const S_HEADER = 4; // inside a header line
const S_HEADER_CR = 5; // saw CR at the end of a header line
const S_END_CR = 6; // saw CR of the final empty line
const S_DONE = 7;

const CR = 13;
const LF = 10;

// tchar of RFC 9110 5.6.2 as a lookup table.
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1;

/**
 * Parses one request head, fed in pieces. `execute` returns the index just past the head in the given chunk once
 * the head is complete, or -1 when it needs more bytes; it throws RequestError on bad input.
 */
export class RequestParser {
  private state = S_START;
  private line = ''; // the current line's bytes (latin1), kept across chunks
  private lineBytes = 0;
  private headerBytes = 0;
  private headerCount = 0;
  private readonly limits: ParserLimits;
  /** The head, valid once `execute` returned an index >= 0. */
  readonly head: RequestHead = { method: '', target: '', minor: 1, host: null, origin: null, lastEventId: null, contentLength: 0 };
  private sawContentLength = false;

  constructor(limits: Partial<ParserLimits> = {}) {
    this.limits = {
      maxRequestLineBytes: limits.maxRequestLineBytes ?? DEFAULT_LIMITS.maxRequestLineBytes,
      maxHeaderBytes: limits.maxHeaderBytes ?? DEFAULT_LIMITS.maxHeaderBytes,
      maxHeaderCount: limits.maxHeaderCount ?? DEFAULT_LIMITS.maxHeaderCount,
    };
  }

  /** True once the whole head has been read. */
  get done(): boolean {
    return this.state === S_DONE;
  }

  execute(buf: Buffer, start = 0, end = buf.length): number {
    let i = start;
    let segStart = -1; // start of a run of line bytes in this chunk, appended to `line` in one slice
    while (i < end) {
      const c = buf[i]!;
      switch (this.state) {
        case S_START:
          if (c === CR || c === LF) {
            // Tolerate a few empty lines before the request line, as RFC 9112 asks; count them against the limit.
            if (++this.lineBytes > 4) throw new RequestError('C1M_HTTP_BAD_LINE_ENDING', 'too many empty lines before the request line');
            i++;
            continue;
          }
          this.lineBytes = 0;
          this.state = S_LINE;
          segStart = i;
          continue; // re-read this byte as part of the line
        case S_LINE:
          if (segStart < 0) segStart = i;
          if (c === CR || c === LF) {
            this.line += latin1(buf, segStart, i);
            segStart = -1;
            this.state = c === CR ? S_LINE_CR : S_HEADER_START;
            if (c === LF) this.requestLine();
            i++;
            continue;
          }
          if (++this.lineBytes > this.limits.maxRequestLineBytes) {
            throw new RequestError('C1M_HTTP_LINE_TOO_LONG', `request line longer than ${this.limits.maxRequestLineBytes} bytes`);
          }
          if (c < 0x20 || c === 0x7f) throw new RequestError('C1M_HTTP_BAD_TARGET', 'control character in the request line');
          i++;
          continue;
        case S_LINE_CR:
          if (c !== LF) throw new RequestError('C1M_HTTP_BAD_LINE_ENDING', 'CR not followed by LF in the request line');
          this.requestLine();
          this.state = S_HEADER_START;
          i++;
          continue;
        case S_HEADER_START:
          if (c === CR) {
            this.state = S_END_CR;
            i++;
            continue;
          }
          if (c === LF) {
            this.finish();
            return i + 1;
          }
          if (c === 0x20 || c === 0x09) throw new RequestError('C1M_HTTP_BAD_HEADER', 'obsolete line folding (a header line starting with whitespace) is not allowed');
          if (++this.headerCount > this.limits.maxHeaderCount) {
            throw new RequestError('C1M_HTTP_TOO_MANY_HEADERS', `more than ${this.limits.maxHeaderCount} header lines`);
          }
          this.state = S_HEADER;
          segStart = i;
          continue;
        case S_HEADER:
          if (segStart < 0) segStart = i;
          if (c === CR || c === LF) {
            this.line += latin1(buf, segStart, i);
            segStart = -1;
            if (c === LF) {
              this.headerLine();
              this.state = S_HEADER_START;
            } else {
              this.state = S_HEADER_CR;
            }
            i++;
            continue;
          }
          if (++this.headerBytes > this.limits.maxHeaderBytes) {
            throw new RequestError('C1M_HTTP_HEADERS_TOO_LARGE', `request headers larger than ${this.limits.maxHeaderBytes} bytes`);
          }
          if ((c < 0x20 && c !== 0x09) || c === 0x7f) throw new RequestError('C1M_HTTP_BAD_HEADER', 'control character in a header line');
          i++;
          continue;
        case S_HEADER_CR:
          if (c !== LF) throw new RequestError('C1M_HTTP_BAD_LINE_ENDING', 'CR not followed by LF in a header line');
          this.headerLine();
          this.state = S_HEADER_START;
          i++;
          continue;
        case S_END_CR:
          if (c !== LF) throw new RequestError('C1M_HTTP_BAD_LINE_ENDING', 'CR not followed by LF at the end of the headers');
          this.finish();
          return i + 1;
        default:
          return i; // S_DONE: the caller should not feed more
      }
    }
    if (segStart >= 0) this.line += latin1(buf, segStart, end);
    return -1;
  }

  private requestLine(): void {
    const line = this.line;
    this.line = '';
    const sp1 = line.indexOf(' ');
    const sp2 = sp1 < 0 ? -1 : line.indexOf(' ', sp1 + 1);
    if (sp1 <= 0 || sp2 < 0 || line.indexOf(' ', sp2 + 1) >= 0) {
      throw new RequestError('C1M_HTTP_BAD_TARGET', 'request line is not "METHOD target HTTP/1.1" with single spaces');
    }
    const method = line.slice(0, sp1);
    for (let k = 0; k < method.length; k++) {
      if (!TCHAR[method.charCodeAt(k)]) throw new RequestError('C1M_HTTP_BAD_METHOD', 'method is not a token');
    }
    let target = line.slice(sp1 + 1, sp2);
    if (target.length === 0) throw new RequestError('C1M_HTTP_BAD_TARGET', 'empty request target');
    for (let k = 0; k < target.length; k++) {
      const c = target.charCodeAt(k);
      if (c <= 0x20 || c >= 0x7f) throw new RequestError('C1M_HTTP_BAD_TARGET', 'request target has a byte outside visible ASCII');
    }
    const abs = /^https?:\/\/[^/?#]*/i.exec(target);
    if (abs) target = target.slice(abs[0].length) || '/';
    if (target[0] !== '/' && target !== '*') throw new RequestError('C1M_HTTP_BAD_TARGET', 'request target must start with /');
    const version = line.slice(sp2 + 1);
    if (!/^HTTP\/\d\.\d$/.test(version)) throw new RequestError('C1M_HTTP_BAD_VERSION', 'malformed HTTP version');
    if (version === 'HTTP/1.1') this.head.minor = 1;
    else if (version === 'HTTP/1.0') this.head.minor = 0;
    else throw new RequestError('C1M_HTTP_UNSUPPORTED_VERSION', `${version} is not supported (HTTP/1.0 and HTTP/1.1 are)`);
    this.head.method = method;
    this.head.target = target;
  }

  private headerLine(): void {
    const line = this.line;
    this.line = '';
    const colon = line.indexOf(':');
    if (colon <= 0) throw new RequestError('C1M_HTTP_BAD_HEADER', 'header line without a field name and colon');
    for (let k = 0; k < colon; k++) {
      // Also refuses whitespace before the colon, as RFC 9112 5.1 requires.
      if (!TCHAR[line.charCodeAt(k)]) throw new RequestError('C1M_HTTP_BAD_HEADER', 'header field name is not a token');
    }
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    switch (name) {
      case 'host':
        if (this.head.host !== null) throw new RequestError('C1M_HTTP_BAD_HEADER', 'more than one Host header');
        this.head.host = value;
        break;
      case 'origin':
        this.head.origin = value;
        break;
      case 'last-event-id':
        this.head.lastEventId = value;
        break;
      case 'content-length':
        if (!/^\d{1,15}$/.test(value) || (this.sawContentLength && Number(value) !== this.head.contentLength)) {
          throw new RequestError('C1M_HTTP_BAD_CONTENT_LENGTH', 'invalid Content-Length');
        }
        this.sawContentLength = true;
        this.head.contentLength = Number(value);
        break;
      case 'transfer-encoding':
        throw new RequestError('C1M_HTTP_UNSUPPORTED_BODY', 'request bodies (Transfer-Encoding) are not accepted on the streaming port');
      default:
        break;
    }
  }

  private finish(): void {
    this.state = S_DONE;
    if (this.head.minor === 1 && this.head.host === null) throw new RequestError('C1M_HTTP_MISSING_HOST', 'HTTP/1.1 request without a Host header');
  }
}

function latin1(buf: Buffer, a: number, b: number): string {
  return b <= a ? '' : buf.toString('latin1', a, b);
}

/** Parses a whole head in one call (for tests and tools); throws RequestError, or returns null when incomplete. */
export function parseRequestHead(bytes: Buffer, limits?: Partial<ParserLimits>): { head: RequestHead; end: number } | null {
  const p = new RequestParser(limits);
  const end = p.execute(bytes);
  return end < 0 ? null : { head: p.head, end };
}
