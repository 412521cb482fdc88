// Wire formats of the streaming port: response heads, message framing (HTML chunks and SSE events), id lists.
// A message is framed once per format into a shared Buffer; each receiver adds only its tiny sequence prefix.
import { MAX_ID } from './limits.js';

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** HTML-escapes `& < > " '` so a message can never break out of the `'...'` in the HTML stream. */
export function escapeHtml(text: string): string {
  return /[&<>"']/.test(text) ? text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!) : text;
}

/** The literal text each HTML chunk starts with, before the per-connection message number. */
export const HTML_PREFIX = 'Recvd msg #';
/** The chunk-size line's end and HTML_PREFIX as one literal: one string concatenation less per delivery. */
const CRLF_HTML_PREFIX = '\r\n' + HTML_PREFIX;

/**
 * The shared tail of an HTML chunk: `: '<escaped>'<br/>` plus the CRLF that ends a chunk.
 * A receiver writes `<hex size>\r\nRecvd msg #<N>` before it (see htmlPrefix).
 */
export function frameHtmlBody(msg: string): Buffer {
  return Buffer.from(frameHtmlText(msg), 'utf8');
}

/** frameHtmlBody as text (the streaming listener writes small batches as one string). */
export function frameHtmlText(msg: string): string {
  return `: '${escapeHtml(msg)}'<br/>\r\n`;
}

/** The per-connection start of an HTML chunk carrying message number `n` whose shared tail is `bodyLength` bytes. */
export function htmlPrefix(n: number, bodyLength: number, chunked: boolean): string {
  const num = String(n);
  if (!chunked) return HTML_PREFIX + num;
  // The chunk data is prefix text + body without its trailing CRLF.
  const dataLength = HTML_PREFIX.length + num.length + bodyLength - 2;
  return dataLength.toString(16) + CRLF_HTML_PREFIX + num;
}

/**
 * The shared part of an SSE event: one `data:` line per line of the message, then the blank line that ends the event.
 * CR, LF and CRLF all end a line in SSE, so each of them starts a new `data:` line: a message can never inject
 * an `id:`, `event:` or `retry:` field, nor end its event early.
 */
export function frameSseBody(msg: string): Buffer {
  return Buffer.from(frameSseText(msg), 'utf8');
}

/** frameSseBody as text. */
export function frameSseText(msg: string): string {
  return 'data: ' + msg.split(/\r\n|\r|\n/).join('\ndata: ') + '\n\n';
}

/** The per-connection start of an SSE event: its `id:` line. */
export function ssePrefix(n: number): string {
  return 'id: ' + n + '\n';
}

/** The SSE heartbeat: a comment line, ignored by EventSource, that keeps proxies and NATs from timing out. */
export const SSE_HEARTBEAT = Buffer.from(': heartbeat\n\n', 'latin1');

/** The last chunk of a chunked body, written to every HTML stream on a graceful stop. */
export const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');

// CORS: the streams carry only what the server was told to publish to that id, and they need no cookies, so any
// page may read them; that is what lets an EventSource on another origin (a dashboard, the browser test) work.
const COMMON = 'Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nAccess-Control-Allow-Origin: *\r\n';

/** Response head of an HTML stream for HTTP/1.1 (chunked). */
export const HEAD_HTML_CHUNKED = Buffer.from(
  'HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\n' + COMMON + '\r\n',
  'latin1',
);
/** Response head of an HTML stream for HTTP/1.0 (no chunking: the body ends when the connection closes). */
export const HEAD_HTML_PLAIN = Buffer.from(
  'HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nConnection: close\r\n' + COMMON + '\r\n',
  'latin1',
);
/** Response head of an SSE stream (the body ends when the connection closes). */
export const HEAD_SSE = Buffer.from(
  'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nConnection: close\r\nX-Accel-Buffering: no\r\n' + COMMON + '\r\n',
  'latin1',
);

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  404: 'Not Found',
  408: 'Request Timeout',
  413: 'Content Too Large',
  414: 'URI Too Long',
  431: 'Request Header Fields Too Large',
  501: 'Not Implemented',
  503: 'Service Unavailable',
  505: 'HTTP Version Not Supported',
};

/** A complete short error response with a one-line plain-text reason; the connection closes after it. */
export function errorResponse(status: number, reason: string, headOnly = false): Buffer {
  const body = reason.replace(/[\r\n]+/g, ' ') + '\n';
  const head =
    `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\n\r\n`;
  return Buffer.from(headOnly ? head : head + body, 'utf8');
}

/**
 * Parses one id: a canonical non-negative decimal integer (no sign, no leading zeros) ≤ 2^53−1.
 * Returns the number, or a one-line reason string.
 */
export function parseId(text: string): number | string {
  if (text.length === 0) return 'empty id';
  if (!/^\d+$/.test(text)) return `id '${clip(text)}' is not a non-negative decimal integer`;
  if (text.length > 1 && text[0] === '0') return `id '${clip(text)}' has a leading zero`;
  const n = Number(text);
  if (text.length > 16 || n > MAX_ID) return `id '${clip(text)}' is larger than ${MAX_ID} (2^53-1)`;
  return n;
}

/** Parses `1` or `1,2,3` (at most `max` ids; duplicates collapse). Returns the ids, or a one-line reason string. */
export function parseIdList(text: string, max: number): number[] | string {
  const parts = text.split(',');
  if (parts.length > max) return `too many ids (${parts.length}; at most ${max} per connection)`;
  const ids: number[] = [];
  for (const part of parts) {
    const id = parseId(part);
    if (typeof id === 'string') return id;
    if (!ids.includes(id)) ids.push(id);
  }
  return ids;
}

function clip(text: string): string {
  return text.length > 40 ? text.slice(0, 40) + '...' : text;
}
