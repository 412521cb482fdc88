// The streaming listener's lean transport: libuv TCP handles driven directly, without net.Socket.
//
// Measured on Node 20 (this machine, 10,000 idle connections held by a bare process): net.Socket costs ~2.6 KB of
// RSS per connection (the Socket, its ReadableState and WritableState, their buffers and listeners, the TCP handle),
// a bare TCP handle ~1.2 KB (69.5 MB against 53.5 MB at 10,000). The comet server uses a handful of socket
// operations (read a request, write, half-close, close, see the unsent backlog), so this file gives it exactly those
// on the handle, with the same shape as the subset of net.Socket that stream.ts calls: WrapSocket and WrapServer
// can stand in for net.Socket and net.Server there, and the stream tests run on both.
//
// The price is that `tcp_wrap` and `stream_wrap` are Node's internal bindings, reached through process.binding (a
// deprecated but supported way in, DEP0111; both modules are on its allow-list in Node 20). They may change in a
// later major version, so nothing here is assumed: `wrapAvailable()` checks every function and field this file uses,
// and the server falls back to net.Socket when anything is missing (`--transport auto`, the default).
//
// As in stream.ts, nothing here allocates a closure per connection: the read, write-done, shutdown-done and close
// callbacks are module functions that find their socket through the handle (`this`), and the three event handlers
// stream.ts registers are stored once per server. With the default 'fd' transport a handle lives only until its
// request is read: WrapSocket#detach hands the stream to fdpool.ts, which holds it as a bare fd. Batched writes
// (through the writer addon's pool thread) are in batch.ts, shared with the detached streams.

import { EventEmitter } from 'node:events';
import { isIPv6 } from 'node:net';
import {
  CLOSE_DEFERRED, DESTROYED, DETACHED, END_DEFERRED, ENDING, IN_FLIGHT, PEER_GONE, QUEUED, SHUTDOWN_PENDING,
  BatchSocket, loadWriter, takePending, uvError,
} from './batch.js';
import { FdSocket, adoptFd } from './fdpool.js';

export { loadWriter, writerCounters, WRITER_PATH } from './batch.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
interface StreamReq {
  handle: TcpHandle;
  oncomplete: (this: StreamReq, status: number) => void;
  async?: boolean;
  buffer?: unknown;
}
interface TcpHandle {
  owner?: WrapSocket | WrapServer;
  onread?: (this: TcpHandle, ab: ArrayBuffer | undefined) => void;
  onconnection?: (this: TcpHandle, err: number, client?: TcpHandle) => void;
  readonly writeQueueSize: number;
  readonly fd: number;
  readStart(): number;
  readStop(): number;
  writeBuffer(req: StreamReq, buf: Buffer): number;
  writeUtf8String(req: StreamReq, s: string): number;
  writev(req: StreamReq, chunks: Buffer[], allBuffers: boolean): number;
  shutdown(req: StreamReq): number;
  close(cb: (this: TcpHandle) => void): void;
  setNoDelay(on: boolean): number;
  bind(host: string, port: number): number;
  bind6(host: string, port: number, flags: number): number;
  listen(backlog: number): number;
  getsockname(out: Record<string, unknown>): number;
}
interface Bindings {
  TCP: new (type: number) => TcpHandle;
  SERVER: number;
  WriteWrap: new () => StreamReq;
  ShutdownWrap: new () => StreamReq;
  state: Int32Array;
  kReadBytesOrError: number;
  kArrayBufferOffset: number;
}

/** libuv's end-of-file code (UV_EOF), the negative nread of a read that found the peer's FIN. */
const UV_EOF = -4095;

let bindings: Bindings | null | undefined;

function load(): Bindings | null {
  if (bindings !== undefined) return bindings;
  try {
    const binding = (process as unknown as { binding(name: string): any }).binding;
    const tcp = binding('tcp_wrap');
    const sw = binding('stream_wrap');
    const proto = tcp.TCP?.prototype;
    const ok = typeof tcp.TCP === 'function' && typeof tcp.constants?.SERVER === 'number' &&
      typeof sw.WriteWrap === 'function' && typeof sw.ShutdownWrap === 'function' && sw.streamBaseState instanceof Int32Array &&
      typeof sw.kReadBytesOrError === 'number' && typeof sw.kArrayBufferOffset === 'number' &&
      ['readStart', 'readStop', 'writeBuffer', 'writeUtf8String', 'writev', 'shutdown', 'close', 'setNoDelay', 'bind', 'bind6', 'listen', 'getsockname']
        .every((m) => typeof proto?.[m] === 'function');
    bindings = ok ? {
      TCP: tcp.TCP, SERVER: tcp.constants.SERVER, WriteWrap: sw.WriteWrap, ShutdownWrap: sw.ShutdownWrap,
      state: sw.streamBaseState, kReadBytesOrError: sw.kReadBytesOrError, kArrayBufferOffset: sw.kArrayBufferOffset,
    } : null;
  } catch {
    bindings = null;
  }
  return bindings;
}

/** True when this Node exposes everything the wrap transport needs. */
export function wrapAvailable(): boolean {
  return load() !== null;
}

type DataHandler = (this: WrapSocket, chunk: Buffer) => void;
type ErrorHandler = (this: WrapSocket, err: Error) => void;
type CloseHandler = (this: WrapSocket) => void;

/** One accepted connection: the subset of net.Socket that stream.ts uses. */
export class WrapSocket extends BatchSocket {
  constructor(readonly handle: TcpHandle, readonly server: WrapServer) {
    super();
    handle.owner = this;
  }

  /** Registers stream.ts's shared handler for 'data', 'error' or 'close' (one per server, not per socket). */
  on(event: 'data' | 'error' | 'close', fn: DataHandler | ErrorHandler | CloseHandler): this {
    this.server.handlers[event] = fn as never;
    return this;
  }

  /** Bytes accepted but not yet handed to the kernel (libuv's write queue). */
  get writableLength(): number {
    return (this.flags & DESTROYED) !== 0 ? 0 : this.handle.writeQueueSize;
  }

  /** Hands bytes to libuv: written now if the kernel takes them, else queued in libuv's write queue. */
  writeNow(data: string | Buffer | Buffer[]): boolean {
    const req = new bindings!.WriteWrap();
    req.handle = this.handle;
    req.oncomplete = onWriteDone;
    req.async = false;
    let err: number;
    if (typeof data === 'string') {
      err = this.handle.writeUtf8String(req, data);
    } else if (Array.isArray(data)) {
      req.buffer = data;
      err = this.handle.writev(req, data, true);
    } else {
      req.buffer = data; // libuv may still point into it after the call returns
      err = this.handle.writeBuffer(req, data);
    }
    if (err !== 0) {
      this.fail(uvError(err, 'write'));
      return false;
    }
    return true;
  }

  /**
   * Half-closes after the queued output (FIN), like net.Socket#end on a server socket: reading goes on, and the
   * socket closes when the peer closes too (or when stream.ts's linger deadline destroys it).
   */
  end(): void {
    if ((this.flags & (DESTROYED | ENDING)) !== 0) return;
    this.uncork();
    this.flags |= ENDING;
    // Output still in a batch goes first; the batch code half-closes after handing it on.
    if ((this.flags & (QUEUED | IN_FLIGHT)) !== 0) this.flags |= END_DEFERRED;
    else this.shutdown();
  }

  /** Sends our FIN after libuv's queued output. */
  shutdown(): void {
    this.flags &= ~END_DEFERRED;
    const req = new bindings!.ShutdownWrap();
    req.handle = this.handle;
    req.oncomplete = onShutdownDone;
    if (this.handle.shutdown(req) !== 0) this.destroy();
    else this.flags |= SHUTDOWN_PENDING;
  }

  /** Closes now; queued output is dropped. 'close' follows once libuv has closed the handle. */
  destroy(): void {
    if ((this.flags & DESTROYED) !== 0) return;
    // What was written before destroy() goes to the kernel if it takes it now, as with net.Socket, whose write()
    // reaches the kernel at once: an error answer followed by a cut must still be seen.
    if ((this.flags & (QUEUED | IN_FLIGHT)) === QUEUED) {
      takePending(this);
      if ((this.flags & DESTROYED) !== 0) return; // that write failed, and fail() closed
    }
    this.flags |= DESTROYED;
    this.corked = null;
    this.handle.readStop();
    // A pool thread may be writing to this fd: closing it now could hand the number to the next accepted
    // connection, and the thread's bytes to the wrong client. The batch's completion closes it.
    if ((this.flags & IN_FLIGHT) !== 0) this.flags |= CLOSE_DEFERRED;
    else this.handle.close(onHandleClose);
  }

  /** Reports an error to the shared handler and closes. */
  fail(err: Error): void {
    if ((this.flags & DESTROYED) !== 0) return;
    this.server.handlers.error?.call(this, err);
    this.destroy();
  }

  threadFd(): number {
    return this.handle.writeQueueSize > 0 ? -1 : this.handle.fd;
  }

  closeNow(): void {
    this.handle.close(onHandleClose);
  }

  /**
   * Hands the connection to fdpool.ts (a bare fd in the native epoll set, ~0.7 KB less than this handle) and closes
   * this handle without a 'close' event: the connection lives on as the returned FdSocket, with the same handlers.
   * Only a socket with nothing written, queued or ending can move; otherwise, or when the pool refuses the fd,
   * this returns null and the socket stays as it is.
   */
  detach(): FdSocket | null {
    if ((this.flags & (DESTROYED | ENDING | QUEUED | IN_FLIGHT)) !== 0 || this.corked !== null || this.handle.writeQueueSize > 0) return null;
    const fd = adoptFd(this.handle.fd);
    if (fd < 0) return null;
    this.flags |= DESTROYED | DETACHED;
    this.handle.readStop();
    this.handle.close(onDetachedClose);
    return new FdSocket(fd, this.server);
  }
}

// Module-level callbacks: libuv calls them with the handle (or request) as `this`.

function onRead(this: TcpHandle, ab: ArrayBuffer | undefined): void {
  const sock = this.owner as WrapSocket;
  const b = bindings!;
  const n = b.state[b.kReadBytesOrError]!;
  if ((sock.flags & DESTROYED) !== 0) return;
  if (n > 0) {
    sock.server.handlers.data?.call(sock, Buffer.from(ab!, b.state[b.kArrayBufferOffset]!, n));
    return;
  }
  if (n === 0) return;
  if (n !== UV_EOF) {
    sock.fail(uvError(n, 'read'));
    return;
  }
  // The peer closed its side. Output still queued (an answer being written) goes out before our FIN, as with
  // net.Socket when allowHalfOpen is off; the shutdown's completion then closes. With nothing queued, close now.
  sock.flags |= PEER_GONE;
  sock.handle.readStop();
  if ((sock.flags & SHUTDOWN_PENDING) !== 0) return;
  if ((sock.writableLength > 0 || (sock.flags & (QUEUED | IN_FLIGHT)) !== 0) && (sock.flags & ENDING) === 0) sock.end();
  else sock.destroy();
}

function onWriteDone(this: StreamReq, status: number): void {
  const sock = this.handle.owner as WrapSocket | undefined;
  if (status < 0 && sock) sock.fail(uvError(status, 'write'));
}

function onShutdownDone(this: StreamReq, status: number): void {
  const sock = this.handle.owner as WrapSocket | undefined;
  if (!sock) return;
  sock.flags &= ~SHUTDOWN_PENDING;
  // Our FIN is out. If the peer's came already, nothing is left to wait for; else keep reading until it does.
  if (status < 0 || (sock.flags & PEER_GONE) !== 0) sock.destroy();
}

function onDetachedClose(this: TcpHandle): void {
  this.owner = undefined;
}

function onHandleClose(this: TcpHandle): void {
  const sock = this.owner as WrapSocket;
  this.owner = undefined;
  sock.server.handlers.close?.call(sock);
}

function onConnection(this: TcpHandle, err: number, client?: TcpHandle): void {
  const server = this.owner as WrapServer;
  if (err !== 0 || client === undefined) {
    server.emit('error', uvError(err, 'accept'));
    return;
  }
  client.setNoDelay(true);
  const sock = new WrapSocket(client, server);
  client.onread = onRead;
  const e = client.readStart();
  if (e !== 0) {
    sock.destroy();
    return;
  }
  server.onSocket(sock);
}

/** A listening socket handing WrapSockets to `onSocket`: the subset of net.Server that stream.ts uses. */
export class WrapServer extends EventEmitter {
  /** stream.ts's shared socket handlers (its detached FdSockets use them too). */
  readonly handlers: { data?: DataHandler; error?: ErrorHandler; close?: CloseHandler } = {};
  /** True when this server's sockets write through the batch writer (see "Batched writes"). */
  readonly batched: boolean;
  private handle: TcpHandle | null = null;

  /** `batched`: use the writer addon (default: when it loads). */
  constructor(readonly onSocket: (sock: WrapSocket) => void, opts: { batched?: boolean } = {}) {
    super();
    if (!load()) throw new Error('the wrap transport is not available in this Node (process.binding tcp_wrap/stream_wrap)');
    this.batched = opts.batched ?? loadWriter().writer !== null;
    if (this.batched && loadWriter().writer === null) throw new Error(`the batch writer is not available: ${loadWriter().reason}`);
  }

  /** Binds and listens; `cb` runs once listening, errors go to 'error' (EADDRINUSE, EACCES, EADDRNOTAVAIL, ...). */
  listen(opts: { host?: string; port?: number; backlog?: number }, cb: () => void): this {
    const b = bindings!;
    const host = opts.host ?? '0.0.0.0';
    const handle = new b.TCP(b.SERVER);
    handle.owner = this;
    handle.onconnection = onConnection;
    // Like net: '::' listens on IPv4 too (flags 0, not UV_TCP_IPV6ONLY).
    let err = isIPv6(host) ? handle.bind6(host, opts.port ?? 0, 0) : handle.bind(host, opts.port ?? 0);
    if (err === 0) err = handle.listen(opts.backlog ?? 511);
    if (err !== 0) {
      handle.close(() => {});
      const e = uvError(err, 'listen');
      process.nextTick(() => this.emit('error', e));
      return this;
    }
    this.handle = handle;
    process.nextTick(cb);
    return this;
  }

  /** The bound address, as net.Server#address() gives it. */
  address(): { address: string; family: string; port: number } | null {
    if (this.handle === null) return null;
    const out: Record<string, unknown> = {};
    this.handle.getsockname(out);
    return out as { address: string; family: string; port: number };
  }

  /** Stops accepting; `cb` runs when the listening handle is closed. Open sockets are left to their owner. */
  close(cb?: () => void): this {
    const handle = this.handle;
    this.handle = null;
    if (handle === null) {
      if (cb) process.nextTick(cb);
    } else {
      handle.close(() => cb?.());
    }
    return this;
  }
}
