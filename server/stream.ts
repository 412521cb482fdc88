// The public streaming listener on raw node:net: `GET /test/<ids>` (chunked HTML) and `GET /sse/<ids>` (SSE).
//
// Why there is no per-connection closure, timer or buffer (the Node analogue of the seed's `hibernate`):
// an idle comet connection does nothing for minutes, so everything it owns is pure overhead multiplied by
// the number of users. A closure per socket (`socket.on('data', (b) => ... conn ...)`) costs a Context plus
// a JSFunction (~100-200 bytes) per listener; a `setTimeout` per socket costs a Timeout object and a linked
// list entry and keeps its closure alive; a per-socket parser or read buffer costs kilobytes. Instead:
// - one set of handler functions per server, created once, attached to every socket; each finds its state
//   through one property on the socket (`socket[kConn]`), a small fixed-shape Conn object;
// - the request parser exists only until the request head is complete, then it is dropped;
// - timeouts and heartbeats come from two shared interval timers walking Sets whose insertion order is
//   deadline order (every connection gets the same timeout), so a sweep stops at the first live entry;
// - a message is framed once per format, shared by all receivers; each receiver adds only its sequence prefix,
//   and everything queued for one connection in one tick is written in one write. Small batches go out as one
//   string (prefixes + shared framed text): node encodes a small string straight into the socket from a stack
//   buffer, which costs less CPU per write than allocating and filling a Buffer (measured) and leaves no
//   per-receiver Buffer behind. Large ones go out as the shared framed Buffer itself (corked writev), so a
//   big broadcast is never copied per receiver.
// Reads are not paused after the request: a paused socket would never notice the client's FIN, so a closed
// browser tab would stay logged in until the next write failed. Input after the request is read and dropped
// (libuv allocates a read buffer only when bytes arrive, so an idle stream holds none), and a client that keeps
// sending is cut. Nagle is off (noDelay): each tick's batch is one write and should leave at once.
import net from 'node:net';
import { WrapServer } from './wrap.js';
import { performance } from 'node:perf_hooks';
import { RequestParser, RequestError, type RequestHead } from './parser.js';
import type { Limits } from './limits.js';
import type { Router } from './router.js';
import type { Counters } from './stats.js';
import {
  HEAD_HTML_CHUNKED,
  HEAD_HTML_PLAIN,
  HEAD_SSE,
  LAST_CHUNK,
  SSE_HEARTBEAT,
  errorResponse,
  frameHtmlText,
  frameSseText,
  htmlPrefix,
  parseIdList,
  ssePrefix,
} from './frame.js';

// What a connection is doing.
const K_REQUEST = 0; // waiting for its request head
const K_HTML = 1; // chunked HTML stream (HTTP/1.1)
const K_HTML_PLAIN = 2; // unchunked HTML stream (HTTP/1.0 client)
const K_SSE = 3; // server-sent events
const K_CLOSING = 4; // answered (error, HEAD, 503, stop); waiting for the client to close, or the linger deadline

/**
 * The socket operations this file uses. net.Socket has them, and so does wrap.ts's WrapSocket, the lean transport
 * on bare libuv handles (~1.2 KB less per connection; see wrap.ts); StreamOptions.transport picks one.
 */
export interface Socket {
  readonly destroyed: boolean;
  /** Bytes queued and not yet handed to the kernel. */
  readonly writableLength: number;
  write(data: string | Buffer): boolean;
  end(): void;
  destroy(): void;
  cork(): void;
  uncork(): void;
  /** The 'fd' transport: the same connection on a lighter socket (wrap.ts → fdpool.ts), or null to stay as is. */
  detach?(): Socket | null;
  on(event: 'data', fn: (this: TaggedSocket, chunk: Buffer) => void): unknown;
  on(event: 'error', fn: (this: TaggedSocket, err: Error) => void): unknown;
  on(event: 'close', fn: (this: TaggedSocket) => void): unknown;
}

/** What the streaming listener needs of a listening socket: net.Server, or wrap.ts's WrapServer. */
interface Listener {
  listen(opts: { host: string; port: number; backlog: number }, cb: () => void): unknown;
  once(event: 'error', fn: (err: Error) => void): unknown;
  on(event: 'error', fn: (err: Error) => void): unknown;
  off(event: 'error', fn: (err: Error) => void): unknown;
  address(): unknown;
  close(cb: () => void): unknown;
}

/**
 * How the streaming port holds its connections: 'fd' (streams as bare fds in the native epoll set, fdpool.ts, after
 * their request is read on a libuv handle), 'wrap' (bare libuv handles) or 'net' (net.Socket).
 */
export type Transport = 'fd' | 'wrap' | 'net';

const kConn = Symbol('c1m.conn');
type TaggedSocket = Socket & { [kConn]?: Conn };

/**
 * The whole per-connection state: a small fixed-shape object of five fields (64 bytes on the V8 heap). Two fields
 * are shared between phases, because a connection is never in both: `n` is the deadline while waiting for the
 * request or lingering, and the count of ignored input bytes while streaming; `slot` holds the parser while the
 * request head is incomplete, and the bodies queued in this tick while streaming. Numbers stay small integers
 * (Smis) so they need no heap allocation of their own.
 */
export class Conn {
  kind = K_REQUEST;
  /** Message number of the last message queued (HTML `Recvd msg #N`, SSE `id: N`). */
  seq = 0;
  /** Deadline (whole ms, monotonic clock) while K_REQUEST or K_CLOSING; ignored input bytes while streaming. */
  n: number;
  /** RequestParser while K_REQUEST (null until the first bytes); messages queued this tick (Framed or Framed[]) while streaming. */
  slot: RequestParser | Framed | Framed[] | null = null;
  /** The connection's socket; the 'fd' transport replaces it once the request is read. */
  constructor(public socket: Socket, deadline: number) {
    this.n = deadline;
  }
}

/** Options of the streaming listener. */
export interface StreamOptions {
  host: string;
  port: number;
  limits: Limits;
  counters: Counters;
  /** Default 'net'; startCometServer picks 'wrap' when this Node supports it (see wrap.ts). */
  transport?: Transport;
  /** With 'wrap': each tick's writes go to the writer addon's pool thread as one batch (wrap.ts). Default false. */
  batched?: boolean;
}

/**
 * A message framed at most once per format, shared by all of its receivers: the framed text (HTML chunk tail or
 * SSE data lines) and its UTF-8 size, and a Buffer of it only when it is large enough to be written as is.
 */
class Framed {
  /** Framed HTML chunk tail `: '<escaped>'<br/>\r\n` (null until an HTML receiver needs it). */
  html: string | null = null;
  htmlBytes = 0;
  /** Framed SSE data lines (null until an SSE receiver needs it). */
  sse: string | null = null;
  sseBytes = 0;
  private htmlBuf: Buffer | null = null;
  private sseBuf: Buffer | null = null;
  constructor(private readonly msg: string) {}
  /** Frames for `kind` (once per format) and returns the framed size in bytes. */
  prepare(kind: number): number {
    if (kind === K_SSE) {
      if (this.sse === null) {
        this.sse = frameSseText(this.msg);
        this.sseBytes = Buffer.byteLength(this.sse);
      }
      return this.sseBytes;
    }
    if (this.html === null) {
      this.html = frameHtmlText(this.msg);
      this.htmlBytes = Buffer.byteLength(this.html);
    }
    return this.htmlBytes;
  }
  /** The framed text for `kind` (after prepare). */
  text(kind: number): string {
    return (kind === K_SSE ? this.sse : this.html)!;
  }
  /** The framed bytes for `kind` as one Buffer shared by every receiver (after prepare). */
  buffer(kind: number): Buffer {
    if (kind === K_SSE) return (this.sseBuf ??= Buffer.from(this.sse!, 'utf8'));
    return (this.htmlBuf ??= Buffer.from(this.html!, 'utf8'));
  }
}

/** The streaming listener; deliveries come from the router through `deliver`. */
export class StreamServer {
  readonly server: Listener;
  /** Listeners added by listenMore(), closed with the main one. */
  private readonly more: Listener[] = [];
  router!: Router<Conn>;
  private readonly limits: Limits;
  private readonly c: Counters;
  /** Every open socket on the public port. */
  private readonly live = new Set<Conn>();
  /** Sockets still waiting for their request head, in accept order (= deadline order). */
  private readonly waiting = new Set<Conn>();
  /** Sockets answered and ending, in answer order (= deadline order). */
  private readonly closing = new Set<Conn>();
  private streams = 0;
  /** Connections with queued output this tick. */
  private dirty: Conn[] = [];
  private flushScheduled = false;
  private sweepTimer: NodeJS.Timeout | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private stopping = false;
  private allClosed: (() => void) | null = null;

  // The shared handlers. They are created once per server and receive the socket as `this`.
  private readonly onData: (this: TaggedSocket, chunk: Buffer) => void;
  private readonly onError: (this: TaggedSocket, err: Error) => void;
  private readonly onClose: (this: TaggedSocket) => void;
  private readonly flushBound: () => void;

  constructor(private readonly opts: StreamOptions) {
    this.limits = opts.limits;
    this.c = opts.counters;
    const self = this;
    this.onData = function (chunk) {
      const conn = this[kConn];
      if (conn) self.data(conn, chunk);
    };
    this.onError = function () {
      self.c.socketErrors++;
    };
    this.onClose = function () {
      const conn = this[kConn];
      if (conn) self.closed(conn);
    };
    this.flushBound = () => this.flush();
    this.server = this.createListener();
  }

  /** A listening socket of this server's transport, handing its connections to accept(). */
  private createListener(): Listener {
    if (this.opts.transport !== 'net') return new WrapServer((socket) => this.accept(socket), { batched: this.opts.batched ?? false });
    return net.createServer({ noDelay: true }, (socket) => this.accept(socket as unknown as Socket));
  }

  /** Starts listening; resolves with the bound port. */
  listen(): Promise<number> {
    return this.bind(this.server, this.opts.host, this.opts.port).then((port) => {
      this.sweepTimer = setInterval(() => this.sweep(), this.limits.sweepIntervalMs).unref();
      this.heartbeatTimer = setInterval(() => this.heartbeat(), this.limits.heartbeatMs).unref();
      return port;
    });
  }

  /** Listens on one more address (`--listen`), feeding the same streams and limits; resolves with the bound port. */
  listenMore(host: string, port: number): Promise<number> {
    const l = this.createListener();
    this.more.push(l);
    return this.bind(l, host, port);
  }

  private bind(l: Listener, host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const onErr = (err: Error): void => reject(err);
      l.once('error', onErr);
      l.listen({ host, port, backlog: 4096 }, () => {
        l.off('error', onErr);
        // Accept failures (EMFILE at the open-files limit, ECONNABORTED) must not take the server down.
        l.on('error', () => this.c.acceptErrors++);
        resolve((l.address() as net.AddressInfo).port);
      });
    });
  }

  /** Open streams (connections logged in as at least one id). */
  get connections(): number {
    return this.streams;
  }

  /** Open sockets on the public port. */
  get sockets(): number {
    return this.live.size;
  }

  private accept(socket: Socket): void {
    const c = this.c;
    c.accepted++;
    const conn = new Conn(socket, now() + this.limits.requestTimeoutMs);
    this.attach(conn, socket);
    this.live.add(conn);
    if (this.stopping) {
      socket.destroy();
      return;
    }
    if (this.limits.maxConns > 0 && this.live.size > this.limits.maxConns) {
      c.rejected++;
      this.answer(conn, errorResponse(503, `server full (max ${this.limits.maxConns} connections)`));
      return;
    }
    this.waiting.add(conn);
  }

  /** Makes `socket` the connection's: its tag and the server's shared handlers. */
  private attach(conn: Conn, socket: Socket): void {
    (socket as TaggedSocket)[kConn] = conn;
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
  }

  private data(conn: Conn, chunk: Buffer): void {
    if (conn.kind !== K_REQUEST) {
      // Input after the request is ignored; a client that keeps sending is misbehaving, and reading it costs CPU.
      if (conn.kind !== K_CLOSING && (conn.n += chunk.length) > this.limits.maxIgnoredInputBytes) {
        this.c.inputAbuse++;
        conn.socket.destroy();
      }
      return;
    }
    const parser = (conn.slot as RequestParser | null) ?? (conn.slot = new RequestParser(this.limits));
    let end: number;
    try {
      end = parser.execute(chunk);
    } catch (err) {
      conn.slot = null;
      if (err instanceof RequestError) this.fail(conn, err.status, err.message);
      else this.fail(conn, 400, 'unparsable request');
      return;
    }
    if (end < 0) return;
    conn.slot = null;
    this.waiting.delete(conn);
    conn.n = chunk.length - end;
    this.route(conn, parser.head);
    // Input pipelined behind the request in the same read counts against the same limit as later input.
    if ((conn.kind as number) !== K_CLOSING && conn.n > this.limits.maxIgnoredInputBytes) {
      this.c.inputAbuse++;
      conn.socket.destroy();
    }
  }

  private route(conn: Conn, head: RequestHead): void {
    const isHead = head.method === 'HEAD';
    if (head.method !== 'GET' && !isHead) {
      const hint = head.method === 'POST' ? ' (publish through the control API)' : '';
      this.fail(conn, 501, `method ${head.method} is not implemented here; use GET or HEAD${hint}`, isHead);
      return;
    }
    const q = head.target.indexOf('?');
    const path = q < 0 ? head.target : head.target.slice(0, q);
    let kind: number;
    let rest: string;
    if (path.startsWith('/test/')) {
      kind = head.minor === 1 ? K_HTML : K_HTML_PLAIN;
      rest = path.slice(6);
    } else if (path.startsWith('/sse/')) {
      kind = K_SSE;
      rest = path.slice(5);
    } else {
      this.fail(conn, 404, `no such path ${path.length > 60 ? path.slice(0, 60) + '...' : path}; use /test/<id> or /sse/<id>`, isHead);
      return;
    }
    const ids = parseIdList(rest, this.limits.maxIdsPerConn);
    if (typeof ids === 'string') {
      this.fail(conn, 400, `bad id: ${ids}`, isHead);
      return;
    }
    const headBytes = kind === K_SSE ? HEAD_SSE : kind === K_HTML ? HEAD_HTML_CHUNKED : HEAD_HTML_PLAIN;
    if (isHead) {
      this.answer(conn, headBytes);
      return;
    }
    conn.kind = kind;
    if (this.opts.transport === 'fd') {
      // From here on the stream only gets writes and waits for its client to go: a bare fd is enough (fdpool.ts).
      // The old handle closes without a 'close' event; when the pool cannot take the fd (EMFILE), it stays.
      const lighter = conn.socket.detach?.() ?? null;
      if (lighter !== null) {
        (conn.socket as TaggedSocket)[kConn] = undefined;
        conn.socket = lighter;
        this.attach(conn, lighter);
      }
    }
    this.write(conn.socket, headBytes);
    this.streams++;
    this.c.connectionsTotal++;
    for (const id of ids) this.router.login(id, conn);
  }

  /** Answers an error and ends the connection. */
  private fail(conn: Conn, status: number, reason: string, headOnly = false): void {
    this.c.badRequests++;
    this.answer(conn, errorResponse(status, reason, headOnly));
  }

  /**
   * Writes a final response and half-closes. The socket keeps reading (and discarding) until the client closes,
   * so the kernel does not turn unread input into a reset that could destroy the answer; the linger deadline
   * bounds how long that may take.
   */
  private answer(conn: Conn, bytes: Buffer): void {
    this.waiting.delete(conn);
    conn.kind = K_CLOSING;
    conn.n = now() + this.limits.lingerMs;
    this.closing.add(conn);
    this.write(conn.socket, bytes);
    conn.socket.end();
  }

  private write(socket: Socket, bytes: Buffer): void {
    this.c.writes++;
    this.c.bytesOut += bytes.length;
    socket.write(bytes);
  }

  private closed(conn: Conn): void {
    this.live.delete(conn);
    this.waiting.delete(conn);
    this.closing.delete(conn);
    if (conn.kind === K_HTML || conn.kind === K_HTML_PLAIN || conn.kind === K_SSE) {
      this.streams--;
      this.c.closed++;
      this.router.logout(conn);
      if (conn.slot !== null) this.c.chunksDropped += Array.isArray(conn.slot) ? conn.slot.length : 1;
    }
    conn.slot = null;
    conn.kind = K_CLOSING;
    if (this.allClosed && this.live.size === 0) this.allClosed();
  }

  /** Router delivery: queues `msg` for each receiver (framed once per format); returns how many were reached. */
  readonly deliver = (msg: string, conns: ReadonlySet<Conn>): number => {
    const framed = new Framed(msg);
    let n = 0;
    for (const conn of conns) {
      const kind = conn.kind;
      if (kind !== K_HTML && kind !== K_HTML_PLAIN && kind !== K_SSE) continue;
      framed.prepare(kind);
      conn.seq++;
      const p = conn.slot as Framed | Framed[] | null;
      if (p === null) {
        conn.slot = framed;
        this.dirty.push(conn);
      } else if (Array.isArray(p)) {
        p.push(framed);
      } else {
        conn.slot = [p, framed];
      }
      n++;
    }
    this.c.chunksQueued += n;
    if (n > 0 && !this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushBound);
    }
    return n;
  };

  /** Writes everything queued this tick: one write per connection. */
  private flush(): void {
    this.flushScheduled = false;
    const dirty = this.dirty;
    this.dirty = [];
    const cap = this.limits.maxBufferBytes;
    for (const conn of dirty) {
      const p = conn.slot as Framed | Framed[] | null;
      conn.slot = null;
      if (p === null) continue; // closed in between; already counted as dropped
      const batch = Array.isArray(p) ? p : null;
      const count = batch ? batch.length : 1;
      const socket = conn.socket;
      if (socket.destroyed || conn.kind === K_CLOSING) {
        this.c.chunksDropped += count;
        continue;
      }
      if (socket.writableLength > cap) {
        // A slow consumer: output it has not taken yet passed the cap. Cut it, so memory per connection stays
        // bounded by the cap plus one tick's batch. (The check is on the backlog, not backlog + batch, so that a
        // single message as large as the cap still reaches a consumer that keeps up.)
        this.c.slowDrops++;
        this.c.chunksDropped += count;
        socket.destroy();
        continue;
      }
      const kind = conn.kind;
      const seq = conn.seq - count + 1;
      const plain = kind === K_HTML_PLAIN;
      this.c.chunksOut += count;
      if (batch === null) {
        // The common case, one small message this tick: one string, no Buffer of its own.
        const framed = p as Framed;
        const bytes = kind === K_SSE ? framed.sseBytes : framed.htmlBytes;
        if (bytes >= SHARE_MIN_BYTES) {
          this.writeShared(socket, kind, seq, [framed]);
          continue;
        }
        const text = framed.text(kind);
        const prefix = prefixOf(kind, seq, bytes);
        this.c.writes++;
        this.c.bytesOut += prefix.length + (plain ? bytes - 2 : bytes);
        socket.write(prefix + (plain ? text.slice(0, -2) : text));
        continue;
      }
      let bytes = 0;
      for (const framed of batch) bytes += kind === K_SSE ? framed.sseBytes : framed.htmlBytes;
      if (bytes >= SHARE_MIN_BYTES) {
        this.writeShared(socket, kind, seq, batch);
        continue;
      }
      let out = '';
      for (let k = 0; k < count; k++) {
        const framed = batch[k]!;
        const size = kind === K_SSE ? framed.sseBytes : framed.htmlBytes;
        const text = framed.text(kind);
        const prefix = prefixOf(kind, seq + k, size);
        out += prefix + (plain ? text.slice(0, -2) : text);
        bytes += prefix.length - (plain ? 2 : 0); // prefixes are ASCII: one byte per character
      }
      this.c.writes++;
      this.c.bytesOut += bytes;
      socket.write(out);
    }
  }

  /**
   * Large messages: the shared framed bodies themselves go into the socket (prefixes are tiny separate Buffers),
   * corked so the batch still leaves in one writev. Nothing is copied per receiver, and the output queued for
   * many receivers of one big message references one copy of it.
   */
  private writeShared(socket: Socket, kind: number, seq: number, batch: Framed[]): void {
    let total = 0;
    socket.cork();
    for (let k = 0; k < batch.length; k++) {
      const body = batch[k]!.buffer(kind);
      const prefix = Buffer.from(prefixOf(kind, seq + k, body.length), 'latin1');
      const shared = kind === K_HTML_PLAIN ? body.subarray(0, body.length - 2) : body;
      socket.write(prefix);
      socket.write(shared);
      total += prefix.length + shared.length;
    }
    socket.uncork();
    this.c.writes++;
    this.c.bytesOut += total;
  }

  /** The shared sweep: request timeouts, then lingering answered sockets. */
  private sweep(): void {
    const t = now();
    for (const conn of this.waiting) {
      if (conn.n > t) break;
      this.c.timeouts++;
      conn.slot = null;
      this.fail(conn, 408, `request not completed within ${this.limits.requestTimeoutMs} ms`);
    }
    for (const conn of this.closing) {
      if (conn.n > t) break;
      this.closing.delete(conn);
      conn.socket.destroy();
    }
  }

  /** The shared heartbeat: one comment to every SSE stream (the same Buffer for all). */
  private heartbeat(): void {
    const cap = this.limits.maxBufferBytes;
    for (const conn of this.live) {
      if (conn.kind !== K_SSE) continue;
      const socket = conn.socket;
      if (socket.destroyed) continue;
      if (socket.writableLength > cap) {
        this.c.slowDrops++;
        socket.destroy();
        continue;
      }
      this.c.heartbeats++;
      this.write(socket, SSE_HEARTBEAT);
    }
  }

  /**
   * Graceful stop: stop accepting, flush queued output, end every stream (the terminating chunk for chunked
   * HTML, a plain end for SSE and unchunked HTML), and destroy whatever is still open after the grace period.
   */
  async stop(graceMs = this.limits.shutdownGraceMs): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const closedServer = Promise.all([this.server, ...this.more].map((l) => new Promise<void>((resolve) => l.close(() => resolve()))));
    if (this.flushScheduled) this.flush();
    for (const conn of this.live) {
      const socket = conn.socket;
      if (conn.kind === K_REQUEST) {
        this.waiting.delete(conn);
        socket.destroy();
      } else if (conn.kind !== K_CLOSING) {
        if (conn.kind === K_HTML) this.write(socket, LAST_CHUNK);
        socket.end();
      }
    }
    if (this.live.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          for (const conn of this.live) conn.socket.destroy();
          resolve();
        }, graceMs);
        this.allClosed = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    // Destroyed sockets emit 'close' on a later tick; wait for the set to empty so stop() leaves nothing behind.
    while (this.live.size > 0) await new Promise((r) => setImmediate(r));
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    await closedServer;
  }
}

/**
 * From this many bytes of message bodies in one tick, a connection is sent the shared bodies themselves (writev)
 * instead of one fresh copy with the prefixes; below it, copying a few hundred bytes is cheaper than writev.
 */
const SHARE_MIN_BYTES = 2048;

/** The per-connection start of message `n` in the connection's format. */
function prefixOf(kind: number, n: number, bodyLength: number): string {
  return kind === K_SSE ? ssePrefix(n) : htmlPrefix(n, bodyLength, kind === K_HTML);
}

/** Whole milliseconds on the monotonic clock (a Smi, unlike performance.now()'s fraction). */
function now(): number {
  return Math.floor(performance.now());
}
