import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { WrapServer, WrapSocket, wrapAvailable } from './wrap.js';
import { startCometServer } from './index.js';

const servers: WrapServer[] = [];
const clients: net.Socket[] = [];
after(() => {
  for (const c of clients) c.destroy();
  for (const s of servers) s.close();
});

/** A WrapServer on 127.0.0.1:0 whose sockets and events are recorded. */
async function serve(host = '127.0.0.1'): Promise<{ server: WrapServer; port: number; next: () => Promise<WrapSocket>; events: string[] }> {
  const events: string[] = [];
  const accepted: WrapSocket[] = [];
  const waiting: ((s: WrapSocket) => void)[] = [];
  const server = new WrapServer((sock) => {
    sock.on('data', function (chunk: Buffer) {
      events.push(`data ${chunk.toString('latin1')}`);
    });
    sock.on('error', function (err: Error) {
      events.push(`error ${(err as NodeJS.ErrnoException).code}`);
    });
    sock.on('close', function (this: WrapSocket) {
      events.push(`close ${accepted.indexOf(this)}`);
    });
    accepted.push(sock);
    waiting.shift()?.(sock);
  });
  servers.push(server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: 0 }, resolve);
  });
  const port = server.address()!.port;
  let taken = 0;
  const next = (): Promise<WrapSocket> => {
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

test('this Node has the bindings, and the server uses the wrap transport by default', async () => {
  assert.equal(wrapAvailable(), true);
  const s = await startCometServer({ port: 0, controlPort: 0 });
  try {
    assert.equal(s.transport, 'wrap');
  } finally {
    await s.stop();
  }
  await assert.rejects(startCometServer({ port: 0, controlPort: 0, transport: 'tcp' as 'net' }), { code: 'C1M_SERVER_CONFIG', message: /--transport: 'tcp' is not one of auto, wrap, net/ });
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

test('reads, writes strings (UTF-8) and Buffers in order, corked writes in one writev', async () => {
  const { port, next, events } = await serve();
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

test('end(): FIN after the queued bytes, the socket stays open until the peer closes, then one close', async () => {
  const { port, next, events } = await serve();
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

test('the peer closes first: close at once with nothing queued; destroy() twice closes once', async () => {
  const { port, next, events } = await serve();
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

test('writableLength shows the backlog of a client that does not read; destroy drops it and closes', async () => {
  const { port, next, events } = await serve();
  const c = connect(port);
  c.pause();
  const sock = await next();
  const mb = Buffer.alloc(1 << 20, 0x61);
  for (let i = 0; i < 32 && sock.writableLength === 0; i++) sock.write(mb);
  assert.ok(sock.writableLength > 0, 'the kernel buffers filled and libuv queued the rest');
  sock.destroy();
  assert.equal(sock.writableLength, 0);
  await until(() => events.includes('close 0'), 'close');
  // The client sees the connection end (reset or FIN) without the server crashing.
  c.resume();
  c.on('error', () => {});
  await once(c, 'close');
});

test('a reset from the peer is an error event, then close', async () => {
  const { port, next, events } = await serve();
  const c = connect(port);
  const sock = await next();
  await once(c, 'connect');
  c.resetAndDestroy();
  await until(() => events.includes('close 0'), 'close after the reset');
  assert.deepEqual(events, ['error ECONNRESET', 'close 0']);
  assert.equal(sock.destroyed, true);
});
