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
import { fileURLToPath } from 'node:url';
import { getSystemErrorName } from 'node:util';
import { loadAddon } from '../lib/native.js';
import { WRITER_MIN_BATCH } from './limits.js';

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

/** The batch writer addon (server/native/writer.c): one tick's socket writes made on a thread of libuv's pool. */
interface Writer {
  send(data: Uint8Array, fds: Int32Array, lens: Int32Array, out: Int32Array, n: number, done: (ok: boolean) => void): void;
}

/** Where the writer addon is built, relative to this file (dist/server/ or server/). */
export const WRITER_PATH = fileURLToPath(new URL('../../server/native/build/Release/writer.node', import.meta.url));

let writerLoad: { writer: Writer | null; reason: string } | undefined;

/** Loads the batch writer once; `reason` says why it is unavailable (C1M_NO_NATIVE=1, not built, not Linux). */
export function loadWriter(): { writer: Writer | null; reason: string } {
  if (writerLoad) return writerLoad;
  const { addon, reason } = loadAddon<Writer>(WRITER_PATH, 'the batch writer', (m) => typeof m.send === 'function');
  return (writerLoad = { writer: addon, reason });
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
/** Has output in the pending batch (see "Batched writes" below). */
const QUEUED = 16;
/** Is in the batch a pool thread is writing: its fd must stay open and nothing else may write to it. */
const IN_FLIGHT = 32;
/** destroy() came while IN_FLIGHT: close the handle when the batch is done. */
const CLOSE_DEFERRED = 64;
/** end() came while QUEUED or IN_FLIGHT: half-close once that output is handed on. */
const END_DEFERRED = 128;

/** One accepted connection: the subset of net.Socket that stream.ts uses. */
export class WrapSocket {
  /** The DESTROYED ... END_DEFERRED bits: one small integer rather than eight fields. */
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
    if (this.server.batched) {
      enqueue(this, data);
      return true;
    }
    return this.writeNow(data);
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

  /** Collects writes until uncork(), which sends them in one writev. */
  cork(): void {
    this.corked ??= [];
  }

  uncork(): void {
    const chunks = this.corked;
    this.corked = null;
    if (chunks === null || chunks.length === 0 || (this.flags & (DESTROYED | ENDING)) !== 0) return;
    if (this.server.batched) {
      for (const c of chunks) enqueue(this, c);
      return;
    }
    this.writeNow(chunks);
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
}

// Batched writes. With the writer addon loaded, a WrapServer's sockets do not write when stream.ts calls write():
// the bytes join the process's pending batch, and at the end of the tick (process.nextTick, so after stream.ts's
// flush has queued every connection's output) the batch goes to a pool thread as one buffer, while this thread
// goes on with the next publish (server/native/writer.c says why). One batch is in flight at a time; output queued
// meanwhile waits for the next. Order per socket is kept by three rules: a socket with bytes in libuv's own queue
// (a slow reader, or the rest of a short write) never goes to the thread, only behind them through libuv; a socket
// in flight gets nothing else written until its batch is done; and whatever the kernel did not take in the thread
// is handed to libuv before anything newer. Buffers (large shared messages) always go through libuv, in turn.

/** Output waiting for the next batch: one entry per socket, a string or the parts in order. */
let pendSocks: WrapSocket[] = [];
let pendData: (string | Buffer | (string | Buffer)[])[] = [];
const pendIndex = new Map<WrapSocket, number>();
let submitScheduled = false;

/** The batch in flight: its sockets and their byte lengths, the buffer and the per-socket results. */
let flySocks: WrapSocket[] = [];
let flyData: Buffer | null = null;
let flyFds: Int32Array = new Int32Array(1024);
let flyLens: Int32Array = new Int32Array(1024);
let flyOut: Int32Array = new Int32Array(1024);
let flyN = 0;
/** Batches handed to the writer, the writes they carried, and those the kernel took only part of; for /stats. */
export const writerCounters = { batches: 0, writes: 0, short: 0 };

function enqueue(sock: WrapSocket, data: string | Buffer): void {
  if ((sock.flags & QUEUED) === 0) {
    sock.flags |= QUEUED;
    pendIndex.set(sock, pendSocks.length);
    pendSocks.push(sock);
    pendData.push(data);
    if (!submitScheduled && flyData === null) {
      submitScheduled = true;
      process.nextTick(submit);
    }
    return;
  }
  const i = pendIndex.get(sock)!;
  const prev = pendData[i]!;
  if (typeof prev === 'string' && typeof data === 'string') pendData[i] = prev + data;
  else if (Array.isArray(prev)) prev.push(data);
  else pendData[i] = [prev, data];
}

/** Writes a socket's pending entry through libuv now, out of the batch. */
function takePending(sock: WrapSocket): void {
  const i = pendIndex.get(sock)!;
  const d = pendData[i]!;
  pendData[i] = '';
  sock.flags &= ~QUEUED;
  handOn(sock, d);
}

/** Everything of one pending entry through libuv, then the deferred half-close. */
function handOn(sock: WrapSocket, data: string | Buffer | (string | Buffer)[]): void {
  if (Array.isArray(data)) sock.writeNow(data.map((d) => (typeof d === 'string' ? Buffer.from(d, 'utf8') : d)));
  else sock.writeNow(data);
  if ((sock.flags & (END_DEFERRED | DESTROYED)) === END_DEFERRED) sock.shutdown();
}

function grow(a: Int32Array, n: number): Int32Array {
  return a.length >= n ? a : new Int32Array(Math.max(n, a.length * 2));
}

/** Sends the pending batch: to the writer those sockets it may write, the rest through libuv. */
function submit(): void {
  submitScheduled = false;
  if (flyData !== null || pendSocks.length === 0) return;
  const socks = pendSocks;
  const data = pendData;
  pendSocks = [];
  pendData = [];
  pendIndex.clear();
  if (socks.length < WRITER_MIN_BATCH) {
    // Too few to be worth a thread handoff (limits.ts): written from here, as without the writer.
    for (let i = 0; i < socks.length; i++) {
      const sock = socks[i]!;
      if ((sock.flags & QUEUED) === 0) continue;
      sock.flags &= ~QUEUED;
      if ((sock.flags & DESTROYED) === 0) handOn(sock, data[i]!);
    }
    return;
  }
  const strings: string[] = [];
  flyFds = grow(flyFds, socks.length);
  flyLens = grow(flyLens, socks.length);
  flyOut = grow(flyOut, socks.length);
  let n = 0;
  let total = 0;
  for (let i = 0; i < socks.length; i++) {
    const sock = socks[i]!;
    if ((sock.flags & QUEUED) === 0) continue; // taken out by destroy()
    sock.flags &= ~QUEUED;
    if ((sock.flags & DESTROYED) !== 0) continue; // dropped, as a write to a destroyed socket is
    const d = data[i]!;
    if (typeof d !== 'string' || (sock.flags & END_DEFERRED) !== 0 || sock.handle.writeQueueSize > 0) {
      handOn(sock, d);
      continue;
    }
    sock.flags |= IN_FLIGHT;
    flySocks.push(sock);
    flyFds[n] = sock.handle.fd;
    total += flyLens[n] = Buffer.byteLength(d, 'utf8');
    strings.push(d);
    n++;
  }
  if (n === 0) return;
  flyN = n;
  flyData = Buffer.from(strings.length === 1 ? strings[0]! : strings.join(''), 'utf8');
  if (flyData.length !== total) {
    // A string ending in half a surrogate pair met the other half at the start of the next: joined, they encode
    // shorter than apart, and the boundaries would shift bytes between sockets. Never from stream.ts (its writes
    // start and end in ASCII); if it happens, each socket writes its own string through libuv.
    const socks2 = flySocks;
    flySocks = [];
    flyData = null;
    flyN = 0;
    for (let i = 0; i < n; i++) {
      socks2[i]!.flags &= ~IN_FLIGHT;
      handOn(socks2[i]!, strings[i]!);
    }
    return;
  }
  writerCounters.batches++;
  writerCounters.writes += n;
  try {
    loadWriter().writer!.send(flyData, flyFds, flyLens, flyOut, n, onBatchDone);
  } catch {
    // Not expected (one batch at a time); if the addon refuses, libuv writes the batch instead.
    flyOut.fill(0, 0, n);
    onBatchDone(true);
  }
}

/** The pool thread made every send of the batch: hand on what the kernel did not take, close what was closed. */
function onBatchDone(ok: boolean): void {
  const socks = flySocks;
  const data = flyData!;
  flySocks = [];
  flyData = null;
  let off = 0;
  for (let i = 0; i < flyN; i++) {
    const sock = socks[i]!;
    const len = flyLens[i]!;
    const wrote = ok ? flyOut[i]! : 0;
    sock.flags &= ~IN_FLIGHT;
    if ((sock.flags & CLOSE_DEFERRED) !== 0) {
      sock.flags &= ~CLOSE_DEFERRED;
      sock.handle.close(onHandleClose);
    } else if (wrote < 0) {
      sock.fail(uvError(wrote, 'write'));
    } else {
      if (wrote < len) {
        writerCounters.short++;
        sock.writeNow(data.subarray(off + wrote, off + len));
      }
      if ((sock.flags & (END_DEFERRED | QUEUED | DESTROYED)) === END_DEFERRED) sock.shutdown();
    }
    off += len;
  }
  flyN = 0;
  if (pendSocks.length > 0) submit();
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
