// The control API on node:http: publish (`POST /send/<id>`, `POST /send` NDJSON), `/stats`, `/metrics`, `/healthz`.
// It is short-lived request/response work, so node:http's per-connection cost does not matter here.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { parseId } from './frame.js';
import type { Limits } from './limits.js';
import { prometheus, type ServerStats } from './stats.js';

/** What the control API needs from the server. */
export interface ControlTarget {
  /** Publishes one message: the number of connections reached, at once or as a promise (a message bus). */
  publish(id: number, msg: string): number | Promise<number>;
  /** The /stats document (a cluster primary gathers it from its workers, hence the promise). */
  stats(): ServerStats | Promise<ServerStats>;
}

/** Options of the control listener. */
export interface ControlOptions {
  host: string;
  port: number;
  token: string | null;
  limits: Limits;
  onUnauthorized: () => void;
}

/** True for addresses that only this machine can reach. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h) || /^::ffff:127\.\d+\.\d+\.\d+$/.test(h);
}

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly extra: Record<string, unknown> = {}) {
    super(message);
  }
}

/** Starts the control API; resolves with the server and its bound port. */
export async function startControl(target: ControlTarget, opts: ControlOptions): Promise<{ server: http.Server; port: number }> {
  // node:crypto is loaded only when there is a token to check: it costs ~1 MB of RSS in every idle server.
  const { createHash, timingSafeEqual } = opts.token === null ? NO_CRYPTO : await import('node:crypto');
  const digest = (text: string): Buffer => createHash('sha256').update(text).digest();
  const tokenDigest = opts.token === null ? null : digest(opts.token);

  const authorized = (req: http.IncomingMessage): boolean => {
    if (tokenDigest === null) return true;
    const auth = req.headers.authorization ?? '';
    const m = /^Bearer[ ]+(.+)$/i.exec(auth);
    // Compare digests so the comparison takes the same time whatever the length or content of the guess.
    return m !== null && timingSafeEqual(digest(m[1]!.trim()), tokenDigest);
  };

  // Node enforces the header and request timeouts from a periodic check (30 s by default, so a silent client was
  // answered 408 only after ~30 s); checking every second makes the 10 s header timeout hold within a second.
  const server = http.createServer({ requestTimeout: 30_000, headersTimeout: 10_000, keepAliveTimeout: 5_000, connectionsCheckingInterval: 1_000 }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      // Errors that carry an HTTP status (a message bus that is down: 503) keep it; anything else is a 500.
      const status = err instanceof HttpError ? err.status : statusOf(err);
      const extra = err instanceof HttpError ? err.extra : {};
      const message = err instanceof Error ? err.message : String(err);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const headers: http.OutgoingHttpHeaders = {};
      if (status === 401) headers['www-authenticate'] = 'Bearer realm="c1m"';
      if (status === 413) headers.connection = 'close';
      // After a 413 the rest of the body is discarded; with Connection: close node closes the socket once the
      // answer is written, so at most what is already in flight gets read.
      sendJson(res, status, { error: message, ...extra }, headers);
      if (status === 413) req.resume();
    });
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => clientError(err, socket, opts.limits.lingerMs));

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const method = req.method ?? 'GET';
    if (path === '/healthz') {
      allow(method, ['GET', 'HEAD']);
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
      res.end(method === 'HEAD' ? undefined : 'ok\n');
      return;
    }
    if (path !== '/stats' && path !== '/metrics' && path !== '/send' && !path.startsWith('/send/')) {
      throw new HttpError(404, `no such path ${path.slice(0, 80)}; use POST /send/<id>, POST /send, GET /stats, /metrics, /healthz`);
    }
    if (!authorized(req)) {
      opts.onUnauthorized();
      throw new HttpError(401, 'missing or wrong token: send Authorization: Bearer <token>');
    }
    if (path === '/stats') {
      allow(method, ['GET', 'HEAD']);
      sendJson(res, 200, await target.stats());
      return;
    }
    if (path === '/metrics') {
      allow(method, ['GET', 'HEAD']);
      const body = prometheus(await target.stats());
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'cache-control': 'no-store' });
      res.end(method === 'HEAD' ? undefined : body);
      return;
    }
    allow(method, ['POST']);
    if (path === '/send') {
      const body = await readBody(req, opts.limits.maxBatchBytes);
      await sendBatch(body.toString('utf8'), res);
      return;
    }
    let rawId: string;
    try {
      rawId = decodeURIComponent(path.slice(6));
    } catch {
      throw new HttpError(400, 'bad id: malformed percent-encoding');
    }
    const id = parseId(rawId);
    if (typeof id === 'string') throw new HttpError(400, `bad id: ${id}`);
    const body = await readBody(req, opts.limits.maxMessageBytes);
    const delivered = await target.publish(id, body.toString('utf8'));
    await deliveriesWritten();
    sendJson(res, 200, { delivered });
  }

  async function sendBatch(text: string, res: http.ServerResponse): Promise<void> {
    // Lines are taken one at a time (no array of every line: at fan-out rates it outlived scavenges) and handed to
    // the router in order without waiting for each answer: a bus (Redis) answers a round trip later, and waiting
    // line by line would make a batch of N lines cost N round trips. The answers are gathered
    // before replying (and before reporting a bad line, so `accepted` covers exactly the lines before it).
    // Each promise gets its handlers at once, so an early failure is never an unhandled rejection. The handlers are
    // two functions per batch, not per line: a batch of 1,000 lines used to hold 1,000 closures, derived promises
    // and result objects (and Promise.all's own per-element ones) until it settled, and at fan-out rates they
    // outlived scavenges and were promoted, feeding mark-compacts. Which lines failed is looked up only on failure.
    const sent: Array<Promise<number>> = [];
    const lineOf: number[] = [];
    let accepted = 0;
    let delivered = 0;
    let failures = 0;
    let pending = 0;
    let wake: (() => void) | null = null;
    const done = (): void => {
      if (--pending === 0 && wake !== null) wake();
    };
    const ok = (reached: number): void => {
      accepted++;
      delivered += reached;
      done();
    };
    const bad = (): void => {
      failures++;
      done();
    };
    const settle = async (): Promise<{ accepted: number; delivered: number; failed: Array<{ n: number; err: unknown }> }> => {
      if (pending > 0) await new Promise<void>((resolve) => (wake = resolve));
      wake = null;
      const failed: Array<{ n: number; err: unknown }> = [];
      if (failures > 0) {
        for (let k = 0; k < sent.length; k++) {
          try {
            await sent[k];
          } catch (err) {
            failed.push({ n: lineOf[k]!, err });
          }
        }
      }
      return { accepted, delivered, failed };
    };
    // A publish the router refused (a message bus that is down: 503): name the first such line and count the rest.
    const refused = (s: Awaited<ReturnType<typeof settle>>, after: string): HttpError => {
      const first = s.failed[0]!;
      const why = first.err instanceof Error ? first.err.message : String(first.err);
      const others = s.failed.length > 1 ? ` and ${s.failed.length - 1} other line(s)` : '';
      return new HttpError(statusOf(first.err), `line ${first.n}: ${why}`, {
        line: first.n,
        accepted: s.accepted,
        delivered: s.delivered,
        failed: s.failed.length,
        applied: `${s.accepted} line(s) were applied; line ${first.n}${others} failed${after}`,
      });
    };
    for (let start = 0, n = 1; start <= text.length; n++) {
      let end = text.indexOf('\n', start);
      if (end < 0) end = text.length;
      const line = text.slice(start, end > start && text.charCodeAt(end - 1) === 13 ? end - 1 : end);
      start = end + 1;
      if (line.trim() === '') continue;
      const rec = parseLine(line, opts.limits.maxMessageBytes);
      if (typeof rec === 'string') {
        const s = await settle();
        if (s.failed.length > 0) throw refused(s, `; line ${n} is bad (${rec}) and it and the lines after it were not applied`);
        throw new HttpError(400, `line ${n}: ${rec}`, {
          line: n,
          accepted: s.accepted,
          delivered: s.delivered,
          applied:
            s.accepted === 0
              ? `no line was applied; line ${n} and the lines after it were not`
              : `the ${s.accepted} good line(s) before line ${n} were applied; line ${n} and the lines after it were not`,
        });
      }
      let p: number | Promise<number>;
      try {
        p = target.publish(rec.id, rec.msg);
      } catch (err) {
        p = Promise.reject(err);
      }
      if (typeof p === 'number') {
        accepted++;
        delivered += p;
        continue;
      }
      pending++;
      p.then(ok, bad);
      sent.push(p);
      lineOf.push(n);
    }
    const s = await settle();
    if (s.failed.length > 0) throw refused(s, '');
    await deliveriesWritten();
    sendJson(res, 200, { accepted: s.accepted, delivered: s.delivered });
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: opts.host, port: opts.port }, () => {
      server.off('error', reject);
      // Accept failures after start (EMFILE) must not take the server down; node keeps listening.
      server.on('error', () => undefined);
      resolve();
    });
  });
  return { server, port: (server.address() as AddressInfo).port };
}

const kAnswered = Symbol('c1m.clientErrorAnswered');
type ErrSocket = Duplex & { [kAnswered]?: true; _httpMessage?: http.ServerResponse | null };
const CLIENT_ERROR_REASONS: Record<number, string> = { 400: 'Bad Request', 408: 'Request Timeout', 413: 'Payload Too Large', 431: 'Request Header Fields Too Large' };

/**
 * Malformed input on the control port (a smuggling attempt with conflicting Content-Length/Transfer-Encoding,
 * garbage pipelined behind a good request, oversized headers, a header timeout) gets a one-line JSON error and a
 * close, like every other error of this API. Node's default handler writes its 400 at once, even while an earlier
 * request on the same socket is still being answered: the client then reads that 400 as the answer to a request
 * that was in fact applied (a message published but reported as refused). So the error waits for the answers
 * already owed on the socket, in order, and only then goes out.
 */
function clientError(err: NodeJS.ErrnoException, sock: Duplex, lingerMs: number): void {
  const socket = sock as ErrSocket;
  // The dead parser reports every later read again; answer once.
  if (socket[kAnswered]) return;
  socket[kAnswered] = true;
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || !socket.writable) {
    socket.destroy();
    return;
  }
  const status =
    err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : err.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW' ? 413 : 400;
  const reason = (err as { reason?: string }).reason ?? err.message;
  const body = JSON.stringify({ error: `malformed request: ${String(reason).replace(/[\r\n]+/g, ' ')} (${err.code ?? 'unknown'})` }) + '\n';
  const answer = (): void => {
    // Wait only for answers to complete requests; an error inside a request's own body is that request's answer.
    const pending = socket._httpMessage;
    if (pending && !pending.writableFinished && !pending.destroyed && pending.req.complete) {
      let once = false;
      const next = (): void => {
        if (once) return;
        once = true;
        answer();
      };
      pending.once('finish', next);
      pending.once('close', next);
      return;
    }
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    socket.end(
      `HTTP/1.1 ${status} ${CLIENT_ERROR_REASONS[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
    setTimeout(() => socket.destroy(), lingerMs).unref();
  };
  answer();
}

/** One NDJSON line of `POST /send` as `{id, msg}`, or why it is bad. */
function parseLine(line: string, maxMessageBytes: number): { id: number; msg: string } | string {
  let rec: unknown;
  try {
    rec = JSON.parse(line);
  } catch {
    return 'not valid JSON';
  }
  if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) return 'not a JSON object {"id": <id>, "msg": "<text>"}';
  const { id: rawId, msg } = rec as { id?: unknown; msg?: unknown };
  let id: number | string;
  if (typeof rawId === 'number') id = Number.isSafeInteger(rawId) && rawId >= 0 ? rawId : `id ${rawId} is not an integer in 0..2^53-1`;
  else if (typeof rawId === 'string') id = parseId(rawId);
  else id = 'missing "id" (a non-negative integer)';
  if (typeof id === 'string') return `bad id: ${id}`;
  if (typeof msg !== 'string') return 'missing "msg" (a string)';
  // A UTF-16 code unit is at most 3 UTF-8 bytes: short messages need no byte count.
  if (msg.length * 3 > maxMessageBytes && Buffer.byteLength(msg) > maxMessageBytes) return `msg longer than ${maxMessageBytes} bytes`;
  // The parsed record itself, id normalized: one object less per line.
  (rec as { id: number }).id = id;
  return rec as { id: number; msg: string };
}

/** The HTTP status an error from the publish path asks for (`status` 4xx/5xx, e.g. BusDownError's 503), else 500. */
function statusOf(err: unknown): number {
  const status = (err as { status?: unknown } | null)?.status;
  return typeof status === 'number' && status >= 400 && status <= 599 ? status : 500;
}

const NO_CRYPTO = {
  createHash: (): never => {
    throw new Error('no token: node:crypto not loaded');
  },
  timingSafeEqual: (): boolean => false,
};

/**
 * Resolves after the deliveries queued by a publish have been written (the streaming listener flushes them on
 * setImmediate, queued before this one). The answer goes out after them because writing it wakes the publisher,
 * and on a busy machine the scheduler may then run the publisher in place of this process: answered first, the
 * deliveries waited for that (median 50-70 µs, measured with bench-probe at 1000 msg/s).
 */
function deliveriesWritten(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function allow(method: string, methods: string[]): void {
  if (!methods.includes(method)) throw new HttpError(405, `method ${method} not allowed here; use ${methods.join(' or ')}`);
}

function sendJson(res: http.ServerResponse, status: number, doc: unknown, headers: http.OutgoingHttpHeaders = {}): void {
  const body = JSON.stringify(doc) + '\n';
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

/** Reads a request body up to `limit` bytes; more is a 413 (refused early when Content-Length already says so). */
function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    return Promise.reject(new HttpError(413, `body of ${declared} bytes is larger than the limit of ${limit} bytes`));
  }
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (chunk: Buffer) => {
      if (over) return;
      size += chunk.length;
      if (size > limit) {
        over = true;
        parts.length = 0;
        reject(new HttpError(413, `body larger than the limit of ${limit} bytes`));
        return;
      }
      parts.push(chunk);
    });
    req.on('end', () => {
      if (!over) resolve(Buffer.concat(parts, size));
    });
    req.on('error', reject);
  });
}
