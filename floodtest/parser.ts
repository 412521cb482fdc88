// A strict, incremental HTTP/1.1 response parser for long-lived streaming responses.
//
// It is built for one job: watch a comet stream on a raw socket and count what arrives, for tens of thousands of
// connections in one process. So its state is a handful of numbers on the object itself (the engine's connection
// class extends it: one object per connection), it calls overridable hooks instead of holding closures, and it never
// keeps a reference to the caller's buffer (the engine reads every socket into one shared buffer). Bytes are copied
// only while something is split across reads: the header block, a chunk body (to find its `@t=` marker) or an SSE
// line. At rest, between messages, a connection holds no buffer at all.
//
// What it understands: the status line (HTTP/1.0 or 1.1), header fields (token names, no obs-fold, CRLF only),
// Content-Length, Transfer-Encoding: chunked (extensions skipped, trailers read and ignored), read-until-close
// bodies, 1xx interim responses (skipped), and `text/event-stream` bodies (events = blank-line-terminated blocks
// with at least one `data` field, as the WHATWG spec dispatches them; comments such as `: heartbeat` are not events).
// Anything else is an error with a stable code (ParseErrorCode) and the parser stops.
import { findMarker } from '../lib/marker.js';

/** Every limit the parser enforces, with its default, in one place. */
export const PARSER_LIMITS = {
  /** Status line plus header fields, in bytes (HPE_HEADER_OVERFLOW beyond). */
  maxHeaderBytes: 16 * 1024,
  /** Hex digits in a chunk size (12 = 256 TiB; more is HPE_INVALID_CHUNK_SIZE). */
  maxChunkSizeDigits: 12,
  /** A chunk-size line including extensions, and each trailer line, in bytes. */
  maxChunkLineBytes: 4096,
  /** Bytes of one chunk kept to look for its `@t=` marker when the chunk is split across reads. */
  maxMarkerScanBytes: 64 * 1024,
  /** One `text/event-stream` line (HPE_LINE_TOO_LONG beyond). */
  maxSseLineBytes: 1024 * 1024,
} as const;

/** Stable error codes (named after llhttp's where one exists). */
export const ParseErrorCode = {
  /** The status line does not start with HTTP/1.0 or HTTP/1.1. */
  INVALID_VERSION: 'HPE_INVALID_VERSION',
  /** The status code is not three digits, or the status line is malformed. */
  INVALID_STATUS: 'HPE_INVALID_STATUS',
  /** A header name with a non-token character, a missing colon, or obs-fold. */
  INVALID_HEADER_TOKEN: 'HPE_INVALID_HEADER_TOKEN',
  /** A control character in a header value. */
  INVALID_HEADER_VALUE: 'HPE_INVALID_HEADER_VALUE',
  /** The header block exceeds PARSER_LIMITS.maxHeaderBytes. */
  HEADER_OVERFLOW: 'HPE_HEADER_OVERFLOW',
  /** A bare LF where CRLF is required. */
  CR_EXPECTED: 'HPE_CR_EXPECTED',
  /** A CR not followed by LF. */
  LF_EXPECTED: 'HPE_LF_EXPECTED',
  /** Content-Length that is not a decimal number, or two that differ. */
  INVALID_CONTENT_LENGTH: 'HPE_INVALID_CONTENT_LENGTH',
  /** Both Content-Length and Transfer-Encoding. */
  UNEXPECTED_CONTENT_LENGTH: 'HPE_UNEXPECTED_CONTENT_LENGTH',
  /** A transfer coding other than a final `chunked`. */
  INVALID_TRANSFER_ENCODING: 'HPE_INVALID_TRANSFER_ENCODING',
  /** A chunk-size line that is not hex digits (optionally followed by `;extensions`), or too long. */
  INVALID_CHUNK_SIZE: 'HPE_INVALID_CHUNK_SIZE',
  /** Chunk data not followed by CRLF. */
  INVALID_CHUNK_END: 'HPE_INVALID_CHUNK_END',
  /** A text/event-stream line longer than PARSER_LIMITS.maxSseLineBytes. */
  LINE_TOO_LONG: 'HPE_LINE_TOO_LONG',
  /** Bytes after the response ended (we send one request per connection). */
  DATA_AFTER_END: 'HPE_DATA_AFTER_END',
  /** The connection ended before the response did (before or inside the headers, inside a chunk or a fixed body). */
  INVALID_EOF_STATE: 'HPE_INVALID_EOF_STATE',
} as const;

/** One of the stable parse error codes. */
export type ParseErrorCode = (typeof ParseErrorCode)[keyof typeof ParseErrorCode];

/** A parse failure: `code` is stable, `message` says what and where. */
export class ResponseParseError extends Error {
  constructor(readonly code: ParseErrorCode, message: string) {
    super(`${code}: ${message}`);
    this.name = 'ResponseParseError';
  }
}

/** What `execute` tells the caller. */
export const ExecResult = {
  /** All bytes consumed; feed more when they arrive. */
  OK: 0,
  /** onHeaders returned false: the caller did not want the body (e.g. a non-200 status); parsing stopped. */
  HALTED: 1,
  /** Malformed input: see `parser.error`; parsing stopped. */
  ERROR: 2,
  /** The response ended (last chunk, or Content-Length reached); onEnd was called. */
  DONE: 3,
} as const;
export type ExecResult = (typeof ExecResult)[keyof typeof ExecResult];

/** How the body is delimited. */
export const BodyMode = { NONE: 0, CHUNKED: 1, LENGTH: 2, EOF: 3 } as const;
export type BodyMode = (typeof BodyMode)[keyof typeof BodyMode];

// Parser states. Numbers, not strings, so the hot loop compares small integers.
const S_HEAD = 0; // inside the status line or header fields
const S_CHUNK_SIZE = 1; // reading hex digits of a chunk size
const S_CHUNK_EXT = 2; // after the digits: optional whitespace and `;extensions` up to CR
const S_CHUNK_SIZE_LF = 3; // CR seen at the end of a chunk-size line
const S_CHUNK_DATA = 4; // inside chunk data
const S_CHUNK_DATA_CR = 5; // chunk data done, expecting CR
const S_CHUNK_DATA_LF = 6; // expecting LF
const S_TRAILER_START = 7; // at the start of a trailer line (CR here ends the message)
const S_TRAILER_LINE = 8; // inside a trailer line
const S_TRAILER_LF = 9; // CR seen at the end of a trailer line
const S_END_LF = 10; // CR seen on the empty line that ends the trailers
const S_LENGTH = 11; // inside a Content-Length body
const S_EOF_BODY = 12; // body runs to the end of the connection
const S_DONE = 13;
const S_DEAD = 14; // halted or failed

const CR = 0x0d;
const LF = 0x0a;

// Token characters of RFC 9110 field names, as a lookup table.
const TOKEN = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TOKEN[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TOKEN[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TOKEN[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TOKEN[c] = 1;

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

/** Copies buf[start, end) onto the end of `into` (first `used` bytes live), growing it by doubling. */
function append(into: Buffer | null, used: number, buf: Uint8Array, start: number, end: number): Buffer {
  const need = used + (end - start);
  let out = into;
  if (out === null || out.length < need) {
    out = Buffer.allocUnsafe(Math.max(need, out === null ? 256 : out.length * 2));
    if (into !== null && used > 0) into.copy(out, 0, 0, used);
  }
  out.set(buf.subarray(start, end), used);
  return out;
}

/**
 * Incremental parser of one HTTP/1.1 response. Subclass it and override the hooks; feed bytes with `execute`
 * as they arrive (any split works) and call `finish` when the connection ends.
 */
export class ResponseParser {
  /** Status code of the final (non-1xx) response, 0 until the headers are parsed. */
  statusCode = 0;
  /** True when Content-Type is text/event-stream: the body is parsed into events. */
  sse = false;
  /** How the body is delimited (valid after onHeaders). */
  bodyMode: BodyMode = BodyMode.NONE;
  /** Set when `execute` or `finish` returns ERROR. */
  error: ResponseParseError | null = null;

  private state = S_HEAD;
  // Bytes carried across reads: the header block, a split chunk body, or a partial SSE line (never at once).
  private pend: Buffer | null = null;
  private pendLen = 0;
  // Header-end detector: 0 none, 1 CR, 2 CRLF, 3 CRLFCR.
  private eoh = 0;
  // Chunk size being read, or bytes left in the current chunk / fixed-length body.
  private remaining = 0;
  private chunkSize = 0;
  private lineBytes = 0;
  // Marker of the current chunk when its body was split and is too long to keep.
  private chunkMark = -1;
  private chunkOverflow = false;
  // text/event-stream state: a data field was seen in this event; its last marker; skip an LF after a CR.
  private sseHasData = false;
  private sseMark = -1;
  private sseSkipLF = false;

  /** Called once the final response's headers are parsed; return false to stop parsing (no body wanted). */
  protected onHeaders(): boolean {
    return true;
  }

  /** Called for each complete non-empty chunk with the last `@t=` marker in its data (-1 if none; not for SSE). */
  protected onChunk(_marker: number): void {}

  /** Called for each dispatched text/event-stream event with the last marker in its data lines (-1 if none). */
  protected onEvent(_marker: number): void {}

  /** Called when the response ends (last chunk, Content-Length reached, or EOF for a read-until-close body). */
  protected onEnd(): void {}

  /** Called for each header field of the final response (latin1 strings; the name lower-cased). */
  protected onHeader(_name: string, _value: string): void {}

  /** Resets to parse a new response (for reuse of the object across reconnects). */
  reset(): void {
    this.statusCode = 0;
    this.sse = false;
    this.bodyMode = BodyMode.NONE;
    this.error = null;
    this.state = S_HEAD;
    this.pend = null;
    this.pendLen = 0;
    this.eoh = 0;
    this.remaining = 0;
    this.chunkSize = 0;
    this.lineBytes = 0;
    this.chunkMark = -1;
    this.chunkOverflow = false;
    this.sseHasData = false;
    this.sseMark = -1;
    this.sseSkipLF = false;
  }

  /** True while a buffer is held between reads (a split header block, chunk or line). */
  get buffering(): boolean {
    return this.pend !== null;
  }

  /** Parses buf[start, end). Never keeps a reference to `buf`. */
  execute(buf: Uint8Array, start = 0, end = buf.length): ExecResult {
    let i = start;
    while (i < end) {
      switch (this.state) {
        case S_HEAD: {
          const r = this.scanHead(buf, i, end);
          if (r < 0) return this.error === null ? ExecResult.HALTED : ExecResult.ERROR;
          i = r;
          if ((this.state as number) === S_DONE) {
            // A body-less response (204, 304, Content-Length: 0) ended with its headers.
            if (i < end) return this.fail(ParseErrorCode.DATA_AFTER_END, `${end - i} bytes after the end of the response`);
            return ExecResult.DONE;
          }
          break;
        }
        case S_CHUNK_SIZE: {
          const c = buf[i]!;
          const h = hexValue(c);
          if (h >= 0) {
            if (++this.lineBytes > PARSER_LIMITS.maxChunkSizeDigits) return this.fail(ParseErrorCode.INVALID_CHUNK_SIZE, 'chunk size has too many digits');
            this.chunkSize = this.chunkSize * 16 + h;
            i++;
          } else if (this.lineBytes === 0) {
            return this.fail(ParseErrorCode.INVALID_CHUNK_SIZE, `chunk size expected, got byte 0x${c.toString(16)}`);
          } else {
            this.state = S_CHUNK_EXT;
          }
          break;
        }
        case S_CHUNK_EXT: {
          const c = buf[i++]!;
          if (c === CR) {
            this.state = S_CHUNK_SIZE_LF;
          } else if (c === LF) {
            return this.fail(ParseErrorCode.CR_EXPECTED, 'bare LF after chunk size');
          } else {
            // Whitespace then `;name=value` extensions are skipped; anything else right after the digits is wrong.
            if (this.lineBytes >= 0 && c !== 0x3b && c !== 0x20 && c !== 0x09) {
              return this.fail(ParseErrorCode.INVALID_CHUNK_SIZE, `unexpected byte 0x${c.toString(16)} after chunk size`);
            }
            if (c === 0x3b) this.lineBytes = -1; // inside extensions: any visible byte goes until CR
            if (c < 0x20 && c !== 0x09) return this.fail(ParseErrorCode.INVALID_CHUNK_SIZE, 'control byte in chunk extension');
            if (++this.remaining > PARSER_LIMITS.maxChunkLineBytes) return this.fail(ParseErrorCode.INVALID_CHUNK_SIZE, 'chunk-size line too long');
          }
          break;
        }
        case S_CHUNK_SIZE_LF: {
          if (buf[i++] !== LF) return this.fail(ParseErrorCode.LF_EXPECTED, 'CR without LF after chunk size');
          this.lineBytes = 0;
          if (this.chunkSize === 0) {
            this.state = S_TRAILER_START;
          } else {
            this.remaining = this.chunkSize;
            this.chunkMark = -1;
            this.chunkOverflow = false;
            this.state = S_CHUNK_DATA;
          }
          break;
        }
        case S_CHUNK_DATA: {
          const n = Math.min(end - i, this.remaining);
          // The whole chunk is in this read: scan it in place and copy nothing (the usual case).
          const whole = n === this.chunkSize;
          if (this.sse) {
            const r = this.sseData(buf, i, i + n);
            if (r !== ExecResult.OK) return r;
          } else if (whole) {
            this.chunkMark = findMarker(buf, i, i + n);
          } else {
            this.chunkPiece(buf, i, i + n);
          }
          this.remaining -= n;
          i += n;
          if (this.remaining === 0) this.state = S_CHUNK_DATA_CR;
          break;
        }
        case S_CHUNK_DATA_CR: {
          if (buf[i++] !== CR) return this.fail(ParseErrorCode.INVALID_CHUNK_END, 'chunk data not followed by CRLF');
          this.state = S_CHUNK_DATA_LF;
          break;
        }
        case S_CHUNK_DATA_LF: {
          if (buf[i++] !== LF) return this.fail(ParseErrorCode.LF_EXPECTED, 'CR without LF after chunk data');
          let mark = -1;
          if (!this.sse) {
            if (this.pend !== null) {
              const m = findMarker(this.pend, 0, this.pendLen);
              mark = m >= 0 ? m : this.chunkMark;
              this.pend = null;
              this.pendLen = 0;
            } else {
              mark = this.chunkMark;
            }
          }
          this.chunkSize = 0;
          this.state = S_CHUNK_SIZE;
          this.onChunk(mark);
          if (this.state === S_DEAD) return ExecResult.HALTED;
          break;
        }
        case S_TRAILER_START: {
          const c = buf[i++]!;
          if (c === CR) this.state = S_END_LF;
          else if (c === LF) return this.fail(ParseErrorCode.CR_EXPECTED, 'bare LF in trailers');
          else {
            this.lineBytes = 1;
            this.state = S_TRAILER_LINE;
          }
          break;
        }
        case S_TRAILER_LINE: {
          const c = buf[i++]!;
          if (c === CR) this.state = S_TRAILER_LF;
          else if (c === LF) return this.fail(ParseErrorCode.CR_EXPECTED, 'bare LF in trailers');
          else if (++this.lineBytes > PARSER_LIMITS.maxChunkLineBytes) return this.fail(ParseErrorCode.HEADER_OVERFLOW, 'trailer line too long');
          break;
        }
        case S_TRAILER_LF: {
          if (buf[i++] !== LF) return this.fail(ParseErrorCode.LF_EXPECTED, 'CR without LF in trailers');
          this.state = S_TRAILER_START;
          break;
        }
        case S_END_LF: {
          if (buf[i++] !== LF) return this.fail(ParseErrorCode.LF_EXPECTED, 'CR without LF at the end of the trailers');
          return this.complete(i, end);
        }
        case S_LENGTH: {
          const n = Math.min(end - i, this.remaining);
          if (this.sse) {
            const r = this.sseData(buf, i, i + n);
            if (r !== ExecResult.OK) return r;
          }
          this.remaining -= n;
          i += n;
          if (this.remaining === 0) return this.complete(i, end);
          break;
        }
        case S_EOF_BODY: {
          if (this.sse) {
            const r = this.sseData(buf, i, end);
            if (r !== ExecResult.OK) return r;
          }
          i = end;
          break;
        }
        case S_DONE:
          return this.fail(ParseErrorCode.DATA_AFTER_END, `${end - i} bytes after the end of the response`);
        default:
          return this.error !== null ? ExecResult.ERROR : ExecResult.HALTED;
      }
    }
    return ExecResult.OK;
  }

  /**
   * Tells the parser the connection ended (EOF). Returns DONE when that ends the response cleanly (a
   * read-until-close body), ERROR with INVALID_EOF_STATE when the response was cut short, HALTED if already stopped.
   */
  finish(): ExecResult {
    if (this.state === S_EOF_BODY) {
      if (this.sse && this.pend !== null) {
        // A last line without its terminator is discarded, as the event-stream spec does at EOF.
        this.pend = null;
        this.pendLen = 0;
      }
      this.state = S_DONE;
      this.onEnd();
      return ExecResult.DONE;
    }
    if (this.state === S_DONE) return ExecResult.DONE;
    if (this.state === S_DEAD) return this.error !== null ? ExecResult.ERROR : ExecResult.HALTED;
    const where = this.state === S_HEAD ? (this.pendLen > 0 ? 'inside the headers' : 'before the response') : 'inside the body';
    return this.fail(ParseErrorCode.INVALID_EOF_STATE, `connection ended ${where}`);
  }

  /** Stops parsing without an error (e.g. from a hook); later `execute` calls return HALTED. */
  halt(): void {
    this.state = S_DEAD;
    this.pend = null;
    this.pendLen = 0;
  }

  private fail(code: ParseErrorCode, message: string): ExecResult {
    this.error = new ResponseParseError(code, message);
    this.halt();
    return ExecResult.ERROR;
  }

  private complete(i: number, end: number): ExecResult {
    this.state = S_DONE;
    this.pend = null;
    this.pendLen = 0;
    this.onEnd();
    if (i < end && (this.state as number) === S_DONE) return this.fail(ParseErrorCode.DATA_AFTER_END, `${end - i} bytes after the end of the response`);
    return this.state === S_DEAD ? ExecResult.HALTED : ExecResult.DONE;
  }

  // Looks for the end of the header block (CRLF CRLF) in buf[i, end), rejecting bare LF and lone CR.
  // Returns the index after the consumed bytes, or -1 when parsing stopped (error or halt).
  private scanHead(buf: Uint8Array, start: number, end: number): number {
    let eoh = this.eoh;
    let i = start;
    let found = -1;
    for (; i < end; i++) {
      const c = buf[i]!;
      if (c === CR) {
        if (eoh === 0 || eoh === 2) eoh++;
        else return this.failHead(ParseErrorCode.LF_EXPECTED, 'CR not followed by LF in the headers');
      } else if (c === LF) {
        if (eoh === 1) eoh = 2;
        else if (eoh === 3) {
          found = i + 1;
          break;
        } else return this.failHead(ParseErrorCode.CR_EXPECTED, 'bare LF in the headers');
      } else {
        if (eoh === 1 || eoh === 3) return this.failHead(ParseErrorCode.LF_EXPECTED, 'CR not followed by LF in the headers');
        eoh = 0;
      }
    }
    const stop = found < 0 ? end : found;
    if (this.pendLen + (stop - start) > PARSER_LIMITS.maxHeaderBytes) {
      return this.failHead(ParseErrorCode.HEADER_OVERFLOW, `header block larger than ${PARSER_LIMITS.maxHeaderBytes} bytes`);
    }
    if (found < 0) {
      this.eoh = eoh;
      this.pend = append(this.pend, this.pendLen, buf, start, end);
      this.pendLen += end - start;
      return end;
    }
    this.eoh = 0;
    let text: string;
    if (this.pend === null) {
      text = Buffer.from(buf.buffer, buf.byteOffset + start, found - start).toString('latin1');
    } else {
      this.pend = append(this.pend, this.pendLen, buf, start, found);
      text = this.pend.toString('latin1', 0, this.pendLen + (found - start));
      this.pend = null;
      this.pendLen = 0;
    }
    const err = this.parseHead(text);
    if (err !== null) return -1;
    return found;
  }

  private failHead(code: ParseErrorCode, message: string): number {
    this.fail(code, message);
    return -1;
  }

  // Parses a complete header block (ends with CRLF CRLF). Returns null to continue, or 'stop'.
  private parseHead(text: string): 'stop' | null {
    const lines = text.split('\r\n');
    lines.length -= 2; // the block ends with an empty line and the split adds one more
    const status = lines[0]!;
    const m = /^HTTP\/1\.([01]) (\d{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?$/.exec(status);
    if (m === null) {
      if (!/^HTTP\/1\.[01] /.test(status)) {
        this.fail(ParseErrorCode.INVALID_VERSION, `status line does not start with HTTP/1.0 or HTTP/1.1: ${JSON.stringify(status.slice(0, 40))}`);
      } else {
        this.fail(ParseErrorCode.INVALID_STATUS, `bad status line: ${JSON.stringify(status.slice(0, 40))}`);
      }
      return 'stop';
    }
    const code = Number(m[2]);
    if (code < 100) {
      this.fail(ParseErrorCode.INVALID_STATUS, `status code ${m[2]} below 100`);
      return 'stop';
    }
    let contentLength = -1;
    let chunked = false;
    let hasTE = false;
    let sse = false;
    const final = code >= 200 || code === 101;
    for (let k = 1; k < lines.length; k++) {
      const line = lines[k]!;
      const colon = line.indexOf(':');
      if (colon <= 0) {
        this.fail(ParseErrorCode.INVALID_HEADER_TOKEN, `header line without a name and colon: ${JSON.stringify(line.slice(0, 40))}`);
        return 'stop';
      }
      for (let j = 0; j < colon; j++) {
        if (TOKEN[line.charCodeAt(j)] !== 1) {
          this.fail(ParseErrorCode.INVALID_HEADER_TOKEN, `invalid character in header name ${JSON.stringify(line.slice(0, colon))}`);
          return 'stop';
        }
      }
      const rawValue = line.slice(colon + 1);
      for (let j = 0; j < rawValue.length; j++) {
        const c = rawValue.charCodeAt(j);
        if ((c < 0x20 && c !== 0x09) || c === 0x7f) {
          this.fail(ParseErrorCode.INVALID_HEADER_VALUE, `control character in header ${JSON.stringify(line.slice(0, colon))}`);
          return 'stop';
        }
      }
      if (!final) continue;
      const name = line.slice(0, colon).toLowerCase();
      const value = rawValue.trim();
      if (name === 'content-length') {
        if (!/^\d{1,15}$/.test(value)) {
          this.fail(ParseErrorCode.INVALID_CONTENT_LENGTH, `Content-Length ${JSON.stringify(value.slice(0, 20))} is not a number`);
          return 'stop';
        }
        const n = Number(value);
        if (contentLength >= 0 && contentLength !== n) {
          this.fail(ParseErrorCode.INVALID_CONTENT_LENGTH, 'two different Content-Length values');
          return 'stop';
        }
        contentLength = n;
      } else if (name === 'transfer-encoding') {
        hasTE = true;
        const codings = value.toLowerCase().split(',').map((s) => s.trim());
        chunked = codings[codings.length - 1] === 'chunked';
        if (!chunked || codings.slice(0, -1).some((c) => c === 'chunked')) {
          this.fail(ParseErrorCode.INVALID_TRANSFER_ENCODING, `unsupported Transfer-Encoding ${JSON.stringify(value.slice(0, 40))}`);
          return 'stop';
        }
      } else if (name === 'content-type') {
        sse = /^text\/event-stream\s*(;|$)/i.test(value);
      }
      this.onHeader(name, value);
    }
    if (!final) {
      // An interim 1xx response: forget it and parse the next status line.
      return null;
    }
    if (hasTE && contentLength >= 0) {
      this.fail(ParseErrorCode.UNEXPECTED_CONTENT_LENGTH, 'both Transfer-Encoding and Content-Length');
      return 'stop';
    }
    this.statusCode = code;
    this.sse = sse;
    if (code === 204 || code === 304) this.bodyMode = BodyMode.NONE;
    else if (chunked) this.bodyMode = BodyMode.CHUNKED;
    else if (contentLength >= 0) this.bodyMode = contentLength === 0 ? BodyMode.NONE : BodyMode.LENGTH;
    else this.bodyMode = BodyMode.EOF;
    this.state =
      this.bodyMode === BodyMode.CHUNKED ? S_CHUNK_SIZE : this.bodyMode === BodyMode.LENGTH ? S_LENGTH : this.bodyMode === BodyMode.EOF ? S_EOF_BODY : S_DONE;
    this.remaining = contentLength > 0 ? contentLength : 0;
    this.chunkSize = 0;
    this.lineBytes = 0;
    if (!this.onHeaders()) {
      this.halt();
      return 'stop';
    }
    if (this.state === S_DEAD) return 'stop';
    if (this.state === S_DONE) {
      this.onEnd();
      // Anything after a body-less response is reported by the main loop as DATA_AFTER_END.
    }
    return null;
  }

  // A piece of a chunk that is split across reads: keep it (bounded) to find the marker when the chunk ends.
  private chunkPiece(buf: Uint8Array, start: number, end: number): void {
    if (!this.chunkOverflow && this.pendLen + (end - start) <= PARSER_LIMITS.maxMarkerScanBytes) {
      this.pend = append(this.pend, this.pendLen, buf, start, end);
      this.pendLen += end - start;
      return;
    }
    // Too long to keep: scan what we have and each later piece on its own (a marker straddling two pieces of
    // such a huge chunk is missed; msggen's messages are far below the limit).
    if (this.pend !== null) {
      const m = findMarker(this.pend, 0, this.pendLen);
      if (m >= 0) this.chunkMark = m;
      this.pend = null;
      this.pendLen = 0;
    }
    this.chunkOverflow = true;
    const m = findMarker(buf, start, end);
    if (m >= 0) this.chunkMark = m;
  }

  // text/event-stream body bytes: split into lines (CRLF, LF or CR), dispatching events on blank lines.
  private sseData(buf: Uint8Array, start: number, end: number): ExecResult {
    let i = start;
    if (this.sseSkipLF && i < end) {
      this.sseSkipLF = false;
      if (buf[i] === LF) i++;
    }
    let lineStart = i;
    while (i < end) {
      const c = buf[i]!;
      if (c !== LF && c !== CR) {
        i++;
        continue;
      }
      if (this.pend !== null) {
        this.pend = append(this.pend, this.pendLen, buf, lineStart, i);
        const len = this.pendLen + (i - lineStart);
        const line = this.pend;
        this.pend = null;
        this.pendLen = 0;
        if (len > PARSER_LIMITS.maxSseLineBytes) return this.fail(ParseErrorCode.LINE_TOO_LONG, 'event-stream line too long');
        this.sseLine(line, 0, len);
      } else {
        this.sseLine(buf, lineStart, i);
      }
      if (this.state === S_DEAD) return ExecResult.HALTED;
      i++;
      if (c === CR) {
        if (i < end) {
          if (buf[i] === LF) i++;
        } else {
          this.sseSkipLF = true;
        }
      }
      lineStart = i;
    }
    if (lineStart < end) {
      if (this.pendLen + (end - lineStart) > PARSER_LIMITS.maxSseLineBytes) return this.fail(ParseErrorCode.LINE_TOO_LONG, 'event-stream line too long');
      this.pend = append(this.pend, this.pendLen, buf, lineStart, end);
      this.pendLen += end - lineStart;
    }
    return ExecResult.OK;
  }

  private sseLine(buf: Uint8Array, start: number, end: number): void {
    if (start === end) {
      if (this.sseHasData) {
        const mark = this.sseMark;
        this.sseHasData = false;
        this.sseMark = -1;
        this.onEvent(mark);
      }
      return;
    }
    // `data` or `data:...`; other fields (id, event, retry) and comments (`:`) do not make an event.
    if (
      end - start >= 4 &&
      buf[start] === 0x64 &&
      buf[start + 1] === 0x61 &&
      buf[start + 2] === 0x74 &&
      buf[start + 3] === 0x61 &&
      (end - start === 4 || buf[start + 4] === 0x3a)
    ) {
      this.sseHasData = true;
      const m = findMarker(buf, start + 4, end);
      if (m >= 0) this.sseMark = m;
    }
  }
}
