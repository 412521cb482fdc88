import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { fstatSync } from 'node:fs';
import { WrapServer, WrapSocket, loadWriter, wrapAvailable, writerCounters } from './wrap.js';
import { FdSocket, fdPoolCounters } from './fdpool.js';
import { WRITER_MIN_BATCH } from './limits.js';
import { startCometServer } from './index.js';

/** A socket of either lean kind: a libuv handle (wrap), or the same connection detached to the fd pool (fd). */
type Sock = WrapSocket | FdSocket;
type Kind = 'wrap' | 'fd';

/** True while the socket's fd is open (a detached socket's fd is closed by number, so ask the kernel). */
function fdOpen(sock: Sock): boolean {
  if (sock instanceof WrapSocket) return sock.handle.fd >= 0;
  try {
    fstatSync(sock.fd);
    return true;
  } catch {
    return false;
  }
}

const servers: WrapServer[] = [];
const clients: net.Socket[] = [];
after(() => {
  for (const c of clients) c.destroy();
  for (const s of servers) s.close();
});

/**
 * A WrapServer on 127.0.0.1:0 whose sockets and events are recorded; with kind 'fd' every accepted socket is
 * detached to the fd pool at once, as the comet server does after a request, and the FdSocket is what `next` gives.
 */
async function serve(host = '127.0.0.1', batched = false, kind: Kind = 'wrap'): Promise<{ server: WrapServer; port: number; next: () => Promise<Sock>; events: string[] }> {
  const events: string[] = [];
  const accepted: Sock[] = [];
  const waiting: ((s: Sock) => void)[] = [];
  const server = new WrapServer((accepted0) => {
    let sock: Sock = accepted0;
    if (kind === 'fd') {
      const fd = accepted0.detach();
      assert.ok(fd !== null, 'a fresh socket detaches');
      sock = fd;
    }
    sock.on('data', function (chunk: Buffer) {
      events.push(`data ${chunk.toString('latin1')}`);
    });
    sock.on('error', function (err: Error) {
      events.push(`error ${(err as NodeJS.ErrnoException).code}`);
    });
    sock.on('close', function (this: Sock) {
      events.push(`close ${accepted.indexOf(this)}`);
    });
    accepted.push(sock);
    waiting.shift()?.(sock);
  }, { batched });
  servers.push(server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: 0 }, resolve);
  });
  const port = server.address()!.port;
  let taken = 0;
  const next = (): Promise<Sock> => {
    const i = taken++;
    return accepted[i] ? Promise.resolve(accepted[i]!) : new Promise((resolve) => waiting.push(resolve));
  };
  return { server, port, next, events };
}

function connect(port: number, host = '127.0.0.1', allowHalfOpen = false): net.Socket {
  const c = net.connect({ port, host, allowHalfOpen });
  clients.push(c);
  return c;
}

/** Resolves when `pred` holds, checking after every event-loop turn; rejects after `ms`. */
async function until(pred: () => boolean, what: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('this Node has the bindings, and the server uses the fd transport and the pool writer by default', async () => {
  assert.equal(wrapAvailable(), true);
  const s = await startCometServer({ port: 0, controlPort: 0 });
  const open0 = fdPoolCounters.open;
  try {
    assert.equal(s.transport, 'fd');
    assert.equal(s.writer, 'pool');
    // Each stream moves to the pool once its request is read; a socket that never sends one stays a handle.
    const idle = connect(s.port);
    const streams = [1, 2, 3].map((id) => {
      const c = connect(s.port);
      c.write(`GET /test/${id} HTTP/1.1\r\nHost: x\r\n\r\n`);
      let got = '';
      c.on('data', (b: Buffer) => (got += b.toString('latin1')));
      return { c, got: () => got };
    });
    await until(() => streams.every((t) => t.got().includes('\r\n\r\n')), 'the three stream heads');
    assert.equal(fdPoolCounters.open - open0, 3);
    assert.equal(s.stats().connections, 3);
    assert.equal(await s.publish(2, 'to the pool'), 1);
    await until(() => streams[1]!.got().includes("Recvd msg #1: 'to the pool'<br/>"), 'the message');
    streams[0]!.c.end();
    await until(() => s.stats().connections === 2, 'the closed stream logged out');
    assert.equal(fdPoolCounters.open - open0, 2);
    idle.destroy();
  } finally {
    await s.stop();
  }
  assert.equal(fdPoolCounters.open, open0, 'stop() closed every detached stream');
  const w = await startCometServer({ port: 0, controlPort: 0, transport: 'wrap' });
  try {
    assert.equal(w.writer, 'pool');
  } finally {
    await w.stop();
  }
  await assert.rejects(startCometServer({ port: 0, controlPort: 0, transport: 'net', writer: 'pool' }), {
    code: 'C1M_SERVER_CONFIG',
    message: /--writer pool works with the fd and wrap transports only/,
  });
  await assert.rejects(startCometServer({ port: 0, controlPort: 0, writer: 'thread' as 'pool' }), { code: 'C1M_SERVER_CONFIG', message: /--writer: 'thread' is not one of auto, pool, main/ });
  const n = await startCometServer({ port: 0, controlPort: 0, transport: 'net' });
  try {
    assert.equal(n.writer, 'main', 'auto on net: the main thread writes');
  } finally {
    await n.stop();
  }
  await assert.rejects(startCometServer({ port: 0, controlPort: 0, transport: 'tcp' as 'net' }), { code: 'C1M_SERVER_CONFIG', message: /--transport: 'tcp' is not one of auto, fd, wrap, net/ });
});

test('detach: a socket with output of its own stays a handle; a fresh one moves, and its handle closes without a close event', async () => {
  const { port, next, events } = await serve();
  const [a, b, c] = [connect(port), connect(port), connect(port)];
  const [sa, sb, sc] = [(await next()) as WrapSocket, (await next()) as WrapSocket, (await next()) as WrapSocket];
  sa.end();
  assert.equal(sa.detach(), null, 'ending');
  sb.cork();
  assert.equal(sb.detach(), null, 'corked');
  sb.uncork();
  const open0 = fdPoolCounters.open;
  const fd = sc.detach();
  assert.ok(fd instanceof FdSocket);
  assert.equal(sc.destroyed, true, 'the handle is done with');
  assert.equal(sc.detach(), null, 'and cannot move twice');
  assert.equal(fdPoolCounters.open, open0 + 1);
  assert.ok(fdOpen(fd));
  let got = '';
  c.on('data', (d: Buffer) => (got += d.toString()));
  fd.write('still here');
  await until(() => got === 'still here', 'bytes through the detached fd');
  // The handle's close was silent: only the ending socket (index 0) closes, when its client does.
  a.end();
  await until(() => events.includes('close 0'), 'the ending socket\'s close');
  b.destroy();
  c.end();
  await until(() => fdPoolCounters.open === open0, 'the detached stream closed after its client');
  assert.ok(!fdOpen(fd));
  // Three closes: the two handles (0, 1) and the detached stream (not in serve()'s list: -1); none for handle 2.
  assert.deepEqual(events.filter((e) => e.startsWith('close')).sort(), ['close -1', 'close 0', 'close 1']);
});

test('the fd pool checks its arguments: typed errors with stable codes', () => {
  const w = loadWriter().writer!;
  const calls: Array<[string, unknown[]]> = [
    ['adopt', []],
    ['adopt', [-1]],
    ['adopt', ['3']],
    ['want', [3]],
    ['want', [3, 'yes']],
    ['sendStr', [3, Buffer.from('x')]],
    ['sendStr', [3, 'x'.repeat(65536)]],
    ['sendv', [3, []]],
    ['sendv', [3, ['not bytes']]],
    ['sendv', [3, Buffer.from('x')]],
    ['shutdown', [-2]],
    ['close', []],
    ['poolOpen', [new Int32Array(4), new Uint8Array(8)]],
  ];
  for (const [name, args] of calls) {
    assert.throws(() => (w as unknown as Record<string, (...a: unknown[]) => unknown>)[name]!(...args), { code: /^FDPOOL_(BAD_ARGS|OPEN)$/ }, `${name}(${JSON.stringify(args)})`);
  }
  // The pool is open (the comet server started one above): a second open is refused.
  assert.throws(() => w.poolOpen(new Int32Array(4), new Uint8Array(8), () => {}), { code: 'FDPOOL_OPEN' });
  // Sends on an fd that is not a socket are errors as results, not exceptions.
  assert.ok(w.sendStr(1_000_000, 'x') < 0);
});

test('a host name (not an address) makes auto pick net, and explicit wrap refuse it', async () => {
  const s = await startCometServer({ host: 'localhost', port: 0, controlPort: 0 });
  try {
    assert.equal(s.transport, 'net');
  } finally {
    await s.stop();
  }
  await assert.rejects(startCometServer({ host: 'localhost', port: 0, controlPort: 0, transport: 'wrap' }), {
    code: 'C1M_SERVER_CONFIG',
    message: /--transport wrap listens on IP addresses only, not 'localhost'/,
  });
  await assert.rejects(startCometServer({ listen: [{ host: '127.0.0.1', port: 0 }, { host: 'localhost', port: 0 }], controlPort: 0, transport: 'wrap' }), { code: 'C1M_SERVER_CONFIG' });
});

test('listen: the bound port, EADDRINUSE as an error event, IPv6, close', async () => {
  const a = await serve();
  assert.ok(a.port > 0);
  assert.equal(a.server.address()!.address, '127.0.0.1');
  const b = new WrapServer(() => {});
  b.listen({ host: '127.0.0.1', port: a.port }, () => assert.fail('listened on a taken port'));
  const [err] = (await once(b, 'error')) as [NodeJS.ErrnoException];
  assert.equal(err.code, 'EADDRINUSE');
  const v6 = await serve('::1');
  const c = connect(v6.port, '::1');
  const sock = await v6.next();
  sock.write('six');
  const [got] = (await once(c, 'data')) as [Buffer];
  assert.equal(got.toString(), 'six');
  await new Promise<void>((resolve) => v6.server.close(resolve));
  assert.equal(v6.server.address(), null);
});

// The socket operations behave the same whether each write goes to the kernel at once (main) or with the tick's
// batch through the writer addon on a pool thread (batched, the comet server's default), and on both kinds of
// socket: a libuv handle (wrap), or the connection detached to the fd pool (fd, the comet server's streams).
for (const [mode, batched, kind] of [['main', false, 'wrap'], ['batched', true, 'wrap'], ['fd main', false, 'fd'], ['fd batched', true, 'fd']] as const) {
  test(`${mode}: reads, writes strings (UTF-8) and Buffers in order, corked writes in one writev`, async () => {
    const { port, next, events } = await serve('127.0.0.1', batched, kind);
    const c = connect(port);
    const chunks: Buffer[] = [];
    c.on('data', (b: Buffer) => chunks.push(b));
    const sock = await next();
    c.write('GET / HTTP/1.1\r\n');
    await until(() => events.includes('data GET / HTTP/1.1\r\n'), 'the request bytes');
    assert.equal(sock.write('héllo '), true);
    assert.equal(sock.write(Buffer.from('wörld ')), true);
    sock.cork();
    sock.write('a');
    sock.write(Buffer.from('b'));
    sock.write('c');
    sock.uncork();
    const want = Buffer.from('héllo wörld abc');
    await until(() => Buffer.concat(chunks).length >= want.length, 'all bytes');
    assert.deepEqual(Buffer.concat(chunks), want);
  });

  test(`${mode}: end(): FIN after the queued bytes, the socket stays open until the peer closes, then one close`, async () => {
    const { port, next, events } = await serve('127.0.0.1', batched, kind);
    const c = connect(port, '127.0.0.1', true); // keeps its side open after our FIN
    const sock = await next();
    let received = '';
    c.on('data', (b: Buffer) => (received += b.toString()));
    sock.write('bye');
    sock.end();
    assert.equal(sock.write('late'), false); // after end(): refused, like write-after-end
    await once(c, 'end');
    assert.equal(received, 'bye');
    // Still reading (and discarding) while the client is open: data arrives, no close yet.
    c.write('more');
    await until(() => events.includes('data more'), 'input after end()');
    assert.equal(events.filter((e) => e.startsWith('close')).length, 0);
    c.end();
    await until(() => events.includes('close 0'), 'close');
    assert.equal(sock.destroyed, true);
  });

  test(`${mode}: the peer closes first: close at once with nothing queued; destroy() twice closes once`, async () => {
    const { port, next, events } = await serve('127.0.0.1', batched, kind);
    const c = connect(port);
    const sock = await next();
    c.end();
    await until(() => events.includes('close 0'), 'close after the peer FIN');
    assert.equal(sock.destroyed, true);
    sock.destroy();
    assert.equal(sock.write('x'), false);
    await new Promise((r) => setImmediate(r));
    assert.equal(events.filter((e) => e === 'close 0').length, 1);
  });

  test(`${mode}: writableLength shows the backlog of a client that does not read; destroy drops it and closes`, async () => {
    const { port, next, events } = await serve('127.0.0.1', batched, kind);
    const c = connect(port);
    c.pause();
    const sock = await next();
    const mb = Buffer.alloc(1 << 20, 0x61);
    // One write a turn: a batched socket hands its output on at the end of the turn.
    for (let i = 0; i < 32 && sock.writableLength === 0; i++) {
      sock.write(mb);
      await new Promise((r) => setImmediate(r));
    }
    assert.ok(sock.writableLength > 0, 'the kernel buffers filled and libuv queued the rest');
    sock.destroy();
    assert.equal(sock.writableLength, 0);
    await until(() => events.includes('close 0'), 'close');
    // The client sees the connection end (reset or FIN) without the server crashing.
    c.resume();
    c.on('error', () => {});
    await once(c, 'close');
  });
}

/** A batched server with `n` extra connected sockets whose small writes fill a turn up to WRITER_MIN_BATCH writes. */
async function batchedServe(kind: Kind = 'wrap'): Promise<Awaited<ReturnType<typeof serve>> & { pad: () => void; padded: () => Promise<void> }> {
  const srv = await serve('127.0.0.1', true, kind);
  const n = WRITER_MIN_BATCH;
  const cs = Array.from({ length: n }, () => connect(srv.port));
  const socks: Sock[] = [];
  for (let i = 0; i < n; i++) socks.push(await srv.next());
  let sent = 0;
  let got = 0;
  cs.forEach((c) => c.on('data', (b: Buffer) => (got += b.length)));
  return {
    ...srv,
    pad: () => {
      for (const s of socks) s.write('.');
      sent += socks.length;
    },
    padded: () => until(() => got === sent, 'the padding bytes'),
  };
}

test('batched: a turn of WRITER_MIN_BATCH writes or more goes to the pool thread as one batch; fewer are written inline', async () => {
  assert.equal(loadWriter().reason, '');
  const { port, next } = await serve('127.0.0.1', true);
  const cs = Array.from({ length: WRITER_MIN_BATCH + 2 }, () => connect(port));
  const socks: Sock[] = [];
  for (let i = 0; i < cs.length; i++) socks.push(await next());
  const got = cs.map(() => '');
  cs.forEach((c, i) => c.on('data', (b: Buffer) => (got[i] += b.toString())));
  let before = { ...writerCounters };
  socks.forEach((sock, i) => sock.write(`to ${i} ✓`));
  await until(() => got.every((g, i) => g === `to ${i} ✓`), 'every socket\'s bytes');
  assert.equal(writerCounters.batches - before.batches, 1);
  assert.equal(writerCounters.writes - before.writes, socks.length);
  before = { ...writerCounters };
  socks.slice(0, WRITER_MIN_BATCH - 1).forEach((sock) => sock.write('!'));
  await until(() => got.slice(0, WRITER_MIN_BATCH - 1).every((g) => g.endsWith('!')), 'the small turn');
  assert.deepEqual(writerCounters, before, 'a small turn never reaches the pool');
});

test('batched: halves of a surrogate pair at the ends of two sockets\' strings never move bytes between them', async () => {
  const { port, next, pad, padded } = await batchedServe();
  const cs = [connect(port), connect(port)];
  const socks = [await next(), await next()];
  const got = [Buffer.alloc(0), Buffer.alloc(0)];
  cs.forEach((c, i) => c.on('data', (b: Buffer) => (got[i] = Buffer.concat([got[i]!, b]))));
  // Joined, '\uD83D' + '\uDE00' is one 4-byte character; apart, each is a lone surrogate (U+FFFD, 3 bytes).
  socks[0]!.write('a\uD83D');
  socks[1]!.write('\uDE00b');
  pad();
  await until(() => got[0]!.length >= 4 && got[1]!.length >= 4, 'both sockets\' bytes');
  assert.deepEqual(got[0], Buffer.from('a\uFFFD'));
  assert.deepEqual(got[1], Buffer.from('\uFFFDb'));
  await padded();
});

test('the writer addon checks its arguments: typed errors with stable codes, nothing sent', () => {
  const w = loadWriter().writer!;
  const i32 = (n: number): Int32Array => new Int32Array(n);
  const done = (): void => assert.fail('no batch may start');
  for (const args of [
    [],
    ['not bytes', i32(1), i32(1), i32(1), 1, done],
    [Buffer.from('ab'), new Uint32Array(1), i32(1), i32(1), 1, done],
    [Buffer.from('ab'), i32(1), i32(1), i32(1), 2, done], // n beyond the arrays
    [Buffer.from('ab'), i32(1), Int32Array.of(3), i32(1), 1, done], // lengths beyond the data
    [Buffer.from('ab'), Int32Array.of(-1), Int32Array.of(1), i32(1), 1, done],
    [Buffer.from('ab'), i32(1), i32(1), i32(1), 1, 'not a function'],
  ]) {
    assert.throws(() => (w.send as (...a: unknown[]) => void)(...args), { name: 'TypeError', code: 'WRITER_BAD_ARGS' }, JSON.stringify(args));
  }
});

for (const kind of ['wrap', 'fd'] as const) {
  test(`${kind} batched: what the kernel did not take goes on by the socket's own path (libuv's queue, the fd's backlog) before anything newer, byte for byte`, async () => {
    const { port, next, pad, padded } = await batchedServe(kind);
    const c = connect(port);
    c.pause();
    const sock = await next();
    // Strings go to the pool thread; 3 MiB each outgrows the socket buffers of a client that does not read, so the
    // thread's send is short and the rest, then every later write, must queue in libuv behind it.
    const parts = ['a', 'b', 'c', 'd'].map((ch, i) => `<${i}>` + ch.repeat(3 << 20));
    const before = { ...writerCounters };
    for (const part of parts) {
      sock.write(part);
      pad();
      await new Promise((r) => setImmediate(r));
    }
    sock.write('end');
    pad();
    const want = parts.join('') + 'end';
    let got = 0;
    const chunks: Buffer[] = [];
    c.on('data', (b: Buffer) => {
      chunks.push(b);
      got += b.length;
    });
    c.resume();
    await until(() => got >= want.length, 'all bytes', 10_000);
    assert.equal(Buffer.concat(chunks).toString('latin1'), want);
    assert.ok(writerCounters.batches > before.batches, 'the pool thread wrote');
    assert.ok(writerCounters.short > before.short, 'a short write happened');
    await padded();
  });

  test(`${kind} batched: destroy() while the batch is in flight closes after it; a new connection gets only its own bytes`, async () => {
    const { port, next, events, pad, padded } = await batchedServe(kind);
    const c = connect(port);
    c.pause();
    c.on('error', () => {});
    const sock = await next();
    const index = WRITER_MIN_BATCH; // the padding sockets came first
    const before = writerCounters.batches;
    sock.write('x'.repeat(4 << 20));
    pad();
    await new Promise<void>((r) => process.nextTick(r)); // the batch was submitted at the end of this turn's ticks
    assert.equal(writerCounters.batches, before + 1, 'in flight');
    sock.destroy();
    assert.equal(sock.destroyed, true);
    assert.ok(fdOpen(sock), 'the fd stays open while the pool thread may write to it');
    await until(() => events.includes(`close ${index}`), 'close after the batch');
    assert.ok(!fdOpen(sock), 'closed once the batch was done');
    const d = connect(port);
    let got = '';
    d.on('data', (b: Buffer) => (got += b.toString()));
    const other = await next();
    other.write('mine');
    await until(() => got === 'mine', 'the new connection\'s bytes');
    assert.equal(events.filter((e) => e === `close ${index}`).length, 1);
    await padded();
  });

  test(`${kind} batched: a write the kernel refuses (the peer reset) is an error event, then close`, async () => {
    const { port, next, events, pad } = await batchedServe(kind);
    const c = connect(port);
    const sock = await next();
    const index = WRITER_MIN_BATCH;
    await once(c, 'connect');
    const before = writerCounters.batches;
    c.resetAndDestroy();
    sock.write('after the reset');
    pad();
    await until(() => events.includes(`close ${index}`), 'close after the reset');
    assert.equal(writerCounters.batches, before + 1, 'the refused write was the pool thread\'s');
    // The error comes from the refused send or from the read that saw the reset, whichever is reported first.
    assert.match(events[0]!, /^error (ECONNRESET|EPIPE)$/);
    assert.deepEqual(events.slice(1), [`close ${index}`]);
  });

  test(`${kind}: a reset from the peer is an error event, then close`, async () => {
    const { port, next, events } = await serve('127.0.0.1', false, kind);
    const c = connect(port);
    const sock = await next();
    await once(c, 'connect');
    c.resetAndDestroy();
    await until(() => events.includes('close 0'), 'close after the reset');
    assert.deepEqual(events, ['error ECONNRESET', 'close 0']);
    assert.equal(sock.destroyed, true);
  });
}
