// The server's native socket layer (server/native: writer.c and fdpool.c, one addon) and the batched writes that
// both of the lean transports use: wrap.ts's libuv handles and fdpool.ts's detached streams.
//
// Batched writes. With the addon loaded, a batched socket does not write when stream.ts calls write(): the bytes
// join the process's pending batch, and at the end of the tick (process.nextTick, so after stream.ts's flush has
// queued every connection's output) the batch goes to a pool thread as one buffer, while this thread goes on with
// the next publish (server/native/writer.c says why). One batch is in flight at a time; output queued meanwhile
// waits for the next. Order per socket is kept by three rules: a socket with output of its own still waiting (in
// libuv's queue, or in a detached stream's backlog) never goes to the thread, only behind that output by its own
// path; a socket in flight gets nothing else written until its batch is done; and whatever the kernel did not take
// in the thread is handed to the socket's own path before anything newer. Buffers (large shared messages) always go
// the socket's own path, in turn.
import { fileURLToPath } from 'node:url';
import { getSystemErrorName } from 'node:util';
import { loadAddon } from '../lib/native.js';
import { WRITER_MIN_BATCH } from './limits.js';

/** The addon: the batch writer (writer.c) and the detached-stream pool (fdpool.c). Results are bytes or -errno. */
export interface NativeSockets {
  send(data: Uint8Array, fds: Int32Array, lens: Int32Array, out: Int32Array, n: number, done: (ok: boolean) => void): void;
  poolOpen(events: Int32Array, input: Uint8Array, onEvents: (n: number) => void): void;
  adopt(fd: number): number;
  want(fd: number, writable: boolean): number;
  sendStr(fd: number, s: string): number;
  sendv(fd: number, parts: Uint8Array[]): number;
  shutdown(fd: number): number;
  close(fd: number): number;
}

/** Where the addon is built, relative to this file (dist/server/ or server/). */
export const WRITER_PATH = fileURLToPath(new URL('../../server/native/build/Release/writer.node', import.meta.url));

let writerLoad: { writer: NativeSockets | null; reason: string } | undefined;

/** Loads the addon once; `reason` says why it is unavailable (C1M_NO_NATIVE=1, not built, not Linux). */
export function loadWriter(): { writer: NativeSockets | null; reason: string } {
  if (writerLoad) return writerLoad;
  const { addon, reason } = loadAddon<NativeSockets>(WRITER_PATH, 'the native socket layer', (m) => typeof m.send === 'function' && typeof m.adopt === 'function');
  return (writerLoad = { writer: addon, reason });
}

/** A libuv-style error (negative errno on Linux) as node's errors look: code, errno, syscall. */
export function uvError(err: number, syscall: string): NodeJS.ErrnoException {
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

// A lean socket's state bits: one small integer rather than eight fields.
export const DESTROYED = 1;
export const ENDING = 2;
/** Our FIN is on its way (wrap: shutdown request pending) or out (fdpool). */
export const SHUTDOWN_PENDING = 4;
export const PEER_GONE = 8;
/** Has output in the pending batch. */
export const QUEUED = 16;
/** Is in the batch a pool thread is writing: its fd must stay open and nothing else may write to it. */
export const IN_FLIGHT = 32;
/** destroy() came while IN_FLIGHT: close the fd when the batch is done. */
export const CLOSE_DEFERRED = 64;
/** end() came while QUEUED or IN_FLIGHT: half-close once that output is handed on. */
export const END_DEFERRED = 128;
/** wrap.ts: the handle was handed to fdpool.ts; its closing is not the connection's. */
export const DETACHED = 256;

/** A listening server's side of its sockets: stream.ts's shared handlers (called with the socket as `this`). */
export interface SocketOwner {
  readonly handlers: {
    data?: (this: never, chunk: Buffer) => void;
    error?: (this: never, err: Error) => void;
    close?: (this: never) => void;
  };
  /** Its sockets' writes go through the batch (the writer's pool thread). */
  readonly batched: boolean;
}

/**
 * The half of a lean socket (wrap.ts's WrapSocket, fdpool.ts's FdSocket) that does not depend on what holds the
 * connection: its state bits, its slot in the pending batch, and write/cork/uncork, which go to the batch or to the
 * subclass's own write path.
 */
export abstract class BatchSocket {
  /** The DESTROYED ... DETACHED bits above. */
  flags = 0;
  /** While QUEUED: the socket's entry in the pending batch (a field, not a Map entry per write). */
  slot = 0;
  /** Writes collected between cork() and uncork(). */
  corked: Buffer[] | null = null;
  abstract readonly server: { readonly batched: boolean };

  /** True once destroy() ran: no more reads or writes. */
  get destroyed(): boolean {
    return (this.flags & DESTROYED) !== 0;
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

  /** The fd a pool thread may write to now, or -1 when the socket's own path still holds output of it. */
  abstract threadFd(): number;
  /** Writes by the socket's own path, after whatever it still holds. */
  abstract writeNow(data: string | Buffer | Buffer[]): boolean;
  /** Sends our FIN after the output written so far. */
  abstract shutdown(): void;
  /** Reports an error and closes. */
  abstract fail(err: Error): void;
  /** Closes the fd now (destroy() came while IN_FLIGHT). */
  abstract closeNow(): void;
}

/** Output waiting for the next batch: one entry per socket, a string or the parts in order. */
let pendSocks: BatchSocket[] = [];
let pendData: (string | Buffer | (string | Buffer)[])[] = [];
let submitScheduled = false;

/** The batch in flight: its sockets and their byte lengths, the buffer and the per-socket results. */
let flySocks: BatchSocket[] = [];
let flyData: Buffer | null = null;
let flyFds: Int32Array = new Int32Array(1024);
let flyLens: Int32Array = new Int32Array(1024);
let flyOut: Int32Array = new Int32Array(1024);
let flyN = 0;
/** Batches handed to the writer, the writes they carried, and those the kernel took only part of; for /stats. */
export const writerCounters = { batches: 0, writes: 0, short: 0 };

/** Adds `data` to the socket's entry of the pending batch. */
export function enqueue(sock: BatchSocket, data: string | Buffer): void {
  if ((sock.flags & QUEUED) === 0) {
    sock.flags |= QUEUED;
    sock.slot = pendSocks.length;
    pendSocks.push(sock);
    pendData.push(data);
    if (!submitScheduled && flyData === null) {
      submitScheduled = true;
      process.nextTick(submit);
    }
    return;
  }
  const i = sock.slot;
  const prev = pendData[i]!;
  if (typeof prev === 'string' && typeof data === 'string') pendData[i] = prev + data;
  else if (Array.isArray(prev)) prev.push(data);
  else pendData[i] = [prev, data];
}

/** Writes a socket's pending entry by its own path now, out of the batch. */
export function takePending(sock: BatchSocket): void {
  const i = sock.slot;
  const d = pendData[i]!;
  pendData[i] = '';
  sock.flags &= ~QUEUED;
  handOn(sock, d);
}

/** Everything of one pending entry by the socket's own path, then the deferred half-close. */
function handOn(sock: BatchSocket, data: string | Buffer | (string | Buffer)[]): void {
  if (Array.isArray(data)) sock.writeNow(data.map((d) => (typeof d === 'string' ? Buffer.from(d, 'utf8') : d)));
  else sock.writeNow(data);
  if ((sock.flags & (END_DEFERRED | DESTROYED)) === END_DEFERRED) sock.shutdown();
}

function grow(a: Int32Array, n: number): Int32Array {
  return a.length >= n ? a : new Int32Array(Math.max(n, a.length * 2));
}

/** Sends the pending batch: to the writer those sockets it may write, the rest by their own paths. */
function submit(): void {
  submitScheduled = false;
  if (flyData !== null || pendSocks.length === 0) return;
  const socks = pendSocks;
  const data = pendData;
  pendSocks = [];
  pendData = [];
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
    const fd = typeof d !== 'string' || (sock.flags & END_DEFERRED) !== 0 ? -1 : sock.threadFd();
    if (fd < 0) {
      handOn(sock, d);
      continue;
    }
    sock.flags |= IN_FLIGHT;
    flySocks.push(sock);
    flyFds[n] = fd;
    total += flyLens[n] = Buffer.byteLength(d as string, 'utf8');
    strings.push(d as string);
    n++;
  }
  if (n === 0) return;
  flyN = n;
  flyData = Buffer.from(strings.length === 1 ? strings[0]! : strings.join(''), 'utf8');
  if (flyData.length !== total) {
    // A string ending in half a surrogate pair met the other half at the start of the next: joined, they encode
    // shorter than apart, and the boundaries would shift bytes between sockets. Never from stream.ts (its writes
    // start and end in ASCII); if it happens, each socket writes its own string by its own path.
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
    // Not expected (one batch at a time); if the addon refuses, each socket's own path writes the batch instead.
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
      sock.closeNow();
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
