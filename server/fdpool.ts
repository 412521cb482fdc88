// Detached streams: comet connections held as bare file descriptors in the native epoll set (server/native/fdpool.c)
// once their request is read, instead of one libuv TCP handle each (~0.82 KB of RSS per connection for the handle,
// its C++ wrapper and JS object, against ~0.14 KB for an fd in the set; fdpool.c has the figures).
//
// The transport ('fd', server/index.ts) accepts and reads requests with wrap.ts's handles, and stream.ts moves each
// connection that becomes a stream here (WrapSocket#detach). An FdSocket has the same net.Socket subset as
// WrapSocket, with the same handlers, so stream.ts and the batch writer (batch.ts) treat both alike. What differs is
// its own write path: a synchronous send(2) from this thread, and what the kernel does not take is kept in a
// backlog, flushed when the pool reports the fd writable. A stream at rest holds no backlog and no closure; the
// pool's one dispatcher finds the socket of each event by fd, in a plain array indexed by fd (8 bytes a slot).
import {
  CLOSE_DEFERRED, DESTROYED, END_DEFERRED, ENDING, IN_FLIGHT, PEER_GONE, QUEUED, SHUTDOWN_PENDING,
  BatchSocket, loadWriter, takePending, uvError, type NativeSockets, type SocketOwner,
} from './batch.js';

/** Event kinds from fdpool.c. */
const EV_DATA = 1;
const EV_EOF = 2;
const EV_ERROR = 3;
const EV_WRITABLE = 4;
/** Events per dispatch (4 ints each), and the bytes read for them in one dispatch. */
const MAX_EVENTS = 1024;
const INPUT_BYTES = 65536;
/** sendStr encodes up to 64 KiB of UTF-8 itself; at 3 bytes per UTF-16 unit at most, this many units always fit. */
const STR_UNITS = 21845;
/** Parts in one sendmsg (Linux's IOV_MAX). */
const IOV_MAX = 1024;

let addon: NativeSockets | null = null;
let events: Int32Array;
let input: Buffer;
/** The open FdSocket of each fd. */
const byFd: (FdSocket | undefined)[] = [];
/** Sockets closed since the last close dispatch: 'close' follows on a later tick, as for libuv handles. */
let closed: FdSocket[] = [];
let closeScheduled = false;

/** Open streams held by the pool, for /stats. */
export const fdPoolCounters = { adopted: 0, open: 0 };

/** Starts the pool on first use; false when the addon is not there. */
function open(): boolean {
  if (addon !== null) return true;
  const { writer } = loadWriter();
  if (writer === null) return false;
  events = new Int32Array(4 * MAX_EVENTS);
  input = Buffer.alloc(INPUT_BYTES);
  writer.poolOpen(events, input, dispatch);
  addon = writer;
  return true;
}

/** True when the pool can take streams (the addon is built and loads). */
export function fdPoolAvailable(): boolean {
  return loadWriter().writer !== null;
}

/** Registers a duplicate of `fd` with the pool; its number, or a negative errno (EMFILE at the open-files limit). */
export function adoptFd(fd: number): number {
  if (!open()) return -38; // ENOSYS
  return addon!.adopt(fd);
}

/** A detached stream: the subset of net.Socket that stream.ts uses, on a bare fd. */
export class FdSocket extends BatchSocket {
  /** Output the kernel has not taken yet, in order (null when there is none: the stream at rest). */
  private backlog: Buffer[] | null = null;
  private backlogBytes = 0;
  constructor(readonly fd: number, readonly server: SocketOwner) {
    super();
    byFd[fd] = this;
    fdPoolCounters.adopted++;
    fdPoolCounters.open++;
  }

  /** Bytes written and not yet taken by the kernel. */
  get writableLength(): number {
    return (this.flags & DESTROYED) !== 0 ? 0 : this.backlogBytes;
  }

  /** Registers stream.ts's shared handler; the server's set is shared with its WrapSockets. */
  on(event: 'data' | 'error' | 'close', fn: (...args: never[]) => void): this {
    (this.server.handlers as Record<string, unknown>)[event] = fn;
    return this;
  }

  threadFd(): number {
    return this.backlog === null ? this.fd : -1;
  }

  /** Sends now what the kernel takes; the rest (and everything while a backlog waits) joins the backlog. */
  writeNow(data: string | Buffer | Buffer[]): boolean {
    if ((this.flags & DESTROYED) !== 0) return false;
    if (this.backlog !== null) {
      this.keep(data, 0);
      return true;
    }
    let w: number;
    if (typeof data === 'string' && data.length <= STR_UNITS) {
      w = addon!.sendStr(this.fd, data);
      if (w >= 0 && w < Buffer.byteLength(data, 'utf8')) this.keep(data, w);
    } else {
      const parts = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : Array.isArray(data) ? (data.length > IOV_MAX ? [Buffer.concat(data)] : data) : [data];
      w = addon!.sendv(this.fd, parts);
      if (w >= 0) this.keep(parts, w);
    }
    if (w < 0) {
      this.fail(uvError(w, 'write'));
      return false;
    }
    return true;
  }

  /** Appends what is left of `data` after its first `skip` bytes to the backlog, and asks to hear when to flush. */
  private keep(data: string | Buffer | Buffer[], skip: number): void {
    const parts = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : Array.isArray(data) ? data : [data];
    const first = this.backlog === null;
    for (const p of parts) {
      if (skip >= p.length) {
        skip -= p.length;
        continue;
      }
      // A copy: a subarray would keep a whole batch (or a large shared message) alive for one slow reader.
      const rest = Buffer.from(skip > 0 ? p.subarray(skip) : p);
      skip = 0;
      (this.backlog ??= []).push(rest);
      this.backlogBytes += rest.length;
    }
    if (first && this.backlog !== null) {
      const err = addon!.want(this.fd, true);
      if (err < 0) this.fail(uvError(err, 'epoll_ctl'));
    }
  }

  /** The kernel takes output again: send the backlog, then what waited on it (a half-close, a close). */
  flushBacklog(): void {
    const parts = this.backlog;
    if (parts === null || (this.flags & DESTROYED) !== 0) return;
    const w = addon!.sendv(this.fd, parts.length > IOV_MAX ? [Buffer.concat(parts)] : parts);
    if (w < 0) {
      this.fail(uvError(w, 'write'));
      return;
    }
    let left = w;
    while (left > 0 && parts.length > 0) {
      const p = parts[0]!;
      if (left >= p.length) {
        left -= p.length;
        parts.shift();
      } else {
        parts[0] = p.subarray(left);
        left = 0;
      }
    }
    this.backlogBytes -= w;
    if (parts.length > 0) return;
    this.backlog = null;
    addon!.want(this.fd, false);
    if ((this.flags & (END_DEFERRED | QUEUED | IN_FLIGHT)) === END_DEFERRED) this.shutdown();
  }

  /** Half-closes after the output written so far; reading goes on until the peer closes (or the linger deadline). */
  end(): void {
    if ((this.flags & (DESTROYED | ENDING)) !== 0) return;
    this.uncork();
    this.flags |= ENDING;
    if ((this.flags & (QUEUED | IN_FLIGHT)) !== 0 || this.backlog !== null) this.flags |= END_DEFERRED;
    else this.shutdown();
  }

  shutdown(): void {
    if (this.backlog !== null) {
      // The rest of a short write is still here: the FIN follows it (flushBacklog).
      this.flags |= END_DEFERRED;
      return;
    }
    this.flags &= ~END_DEFERRED;
    if (addon!.shutdown(this.fd) < 0 || (this.flags & PEER_GONE) !== 0) {
      this.destroy();
      return;
    }
    this.flags |= SHUTDOWN_PENDING;
  }

  /** Closes now; unsent output is dropped. 'close' follows on a later tick. */
  destroy(): void {
    if ((this.flags & DESTROYED) !== 0) return;
    // What was written before destroy() goes to the kernel if it takes it now, as with the other transports.
    if ((this.flags & (QUEUED | IN_FLIGHT)) === QUEUED) {
      takePending(this);
      if ((this.flags & DESTROYED) !== 0) return;
    }
    this.flags |= DESTROYED;
    this.corked = null;
    this.backlog = null;
    this.backlogBytes = 0;
    // A pool thread may be writing to this fd: closing it now could hand the number to the next accepted
    // connection, and the thread's bytes to the wrong client. The batch's completion closes it.
    if ((this.flags & IN_FLIGHT) !== 0) this.flags |= CLOSE_DEFERRED;
    else this.closeNow();
  }

  fail(err: Error): void {
    if ((this.flags & DESTROYED) !== 0) return;
    this.server.handlers.error?.call(this as never, err);
    this.destroy();
  }

  closeNow(): void {
    byFd[this.fd] = undefined;
    addon!.close(this.fd);
    fdPoolCounters.open--;
    closed.push(this);
    if (!closeScheduled) {
      closeScheduled = true;
      setImmediate(emitClosed);
    }
  }

  /** The peer's FIN: output still owed goes out before ours; with nothing owed (or ours sent), close. */
  peerGone(): void {
    this.flags |= PEER_GONE;
    if ((this.flags & SHUTDOWN_PENDING) !== 0) this.destroy();
    else if ((this.backlog !== null || (this.flags & (QUEUED | IN_FLIGHT)) !== 0) && (this.flags & ENDING) === 0) this.end();
    else this.destroy();
  }
}

function emitClosed(): void {
  closeScheduled = false;
  const list = closed;
  closed = [];
  for (const sock of list) sock.server.handlers.close?.call(sock as never);
}

/** The pool's one dispatcher: `n` events of [fd, kind, a, b] in `events`, read by fdpool.c before this runs. */
function dispatch(n: number): void {
  for (let i = 0; i < n; i++) {
    const e = 4 * i;
    const sock = byFd[events[e]!];
    // Closed by an earlier event of this dispatch (its fd is out of the set now, and nothing reuses it before
    // this returns).
    if (sock === undefined || (sock.flags & DESTROYED) !== 0) continue;
    switch (events[e + 1]) {
      case EV_DATA:
        sock.server.handlers.data?.call(sock as never, input.subarray(events[e + 2]!, events[e + 2]! + events[e + 3]!));
        break;
      case EV_EOF:
        sock.peerGone();
        break;
      case EV_ERROR:
        sock.fail(uvError(events[e + 2]!, 'read'));
        break;
      case EV_WRITABLE:
        sock.flushBacklog();
        break;
    }
  }
}
