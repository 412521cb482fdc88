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
// stream.ts registers are stored once per server.

import { EventEmitter } from 'node:events';
import { isIPv6 } from 'node:net';
import { getSystemErrorName } from 'node:util';

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

function uvError(err: number, syscall: string): NodeJS.ErrnoException {
  let code: string;
  try {
    code = getSystemErrorName(err);
  } catch {
    code = `UV_${-err}`;
  }
  const e = new Error(`${syscall} ${code}`) as NodeJS.ErrnoException;
  e.code = code;
  e.errno = err;
  e.syscall = syscall;
  return e;
}

type DataHandler = (this: WrapSocket, chunk: Buffer) => void;
type ErrorHandler = (this: WrapSocket, err: Error) => void;
type CloseHandler = (this: WrapSocket) => void;

const DESTROYED = 1;
const ENDING = 2;
const SHUTDOWN_PENDING = 4;
const PEER_GONE = 8;

/** One accepted connection: the subset of net.Socket that stream.ts uses. */
export class WrapSocket {
  /** DESTROYED | ENDING | SHUTDOWN_PENDING | PEER_GONE: one small integer rather than four fields. */
  flags = 0;
  /** Writes collected between cork() and uncork(). */
  corked: Buffer[] | null = null;

  constructor(readonly handle: TcpHandle, readonly server: WrapServer) {
    handle.owner = this;
  }

  /** True once destroy() ran: no more reads or writes, the handle is closing. */
  get destroyed(): boolean {
    return (this.flags & DESTROYED) !== 0;
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

  /** Queues bytes; a string is written as UTF-8. False when the socket is ending or destroyed, or the write failed. */
  write(data: string | Buffer): boolean {
    if ((this.flags & (DESTROYED | ENDING)) !== 0) return false;
    if (this.corked !== null) {
      this.corked.push(typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
      return true;
    }
    const req = new bindings!.WriteWrap();
    req.handle = this.handle;
    req.oncomplete = onWriteDone;
    req.async = false;
    let err: number;
    if (typeof data === 'string') {
      err = this.handle.writeUtf8String(req, data);
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

  /** Collects writes until uncork(), which sends them in one writev. */
  cork(): void {
    this.corked ??= [];
  }

  uncork(): void {
    const chunks = this.corked;
    this.corked = null;
    if (chunks === null || chunks.length === 0 || (this.flags & (DESTROYED | ENDING)) !== 0) return;
    const req = new bindings!.WriteWrap();
    req.handle = this.handle;
    req.oncomplete = onWriteDone;
    req.async = false;
    req.buffer = chunks;
    const err = this.handle.writev(req, chunks, true);
    if (err !== 0) this.fail(uvError(err, 'writev'));
  }

  /**
   * Half-closes after the queued output (FIN), like net.Socket#end on a server socket: reading goes on, and the
   * socket closes when the peer closes too (or when stream.ts's linger deadline destroys it).
   */
  end(): void {
    if ((this.flags & (DESTROYED | ENDING)) !== 0) return;
    this.uncork();
    this.flags |= ENDING;
    const req = new bindings!.ShutdownWrap();
    req.handle = this.handle;
    req.oncomplete = onShutdownDone;
    if (this.handle.shutdown(req) !== 0) this.destroy();
    else this.flags |= SHUTDOWN_PENDING;
  }

  /** Closes now; queued output is dropped. 'close' follows once libuv has closed the handle. */
  destroy(): void {
    if ((this.flags & DESTROYED) !== 0) return;
    this.flags |= DESTROYED;
    this.corked = null;
    this.handle.readStop();
    this.handle.close(onHandleClose);
  }

  /** Reports an error to the shared handler and closes. */
  fail(err: Error): void {
    if ((this.flags & DESTROYED) !== 0) return;
    this.server.handlers.error?.call(this, err);
    this.destroy();
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
  if (sock.writableLength > 0 && (sock.flags & ENDING) === 0) sock.end();
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
  /** stream.ts's shared socket handlers. */
  readonly handlers: { data?: DataHandler; error?: ErrorHandler; close?: CloseHandler } = {};
  private handle: TcpHandle | null = null;

  constructor(readonly onSocket: (sock: WrapSocket) => void) {
    super();
    if (!load()) throw new Error('the wrap transport is not available in this Node (process.binding tcp_wrap/stream_wrap)');
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
