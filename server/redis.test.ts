// The Redis router against a real redis-server: the shared router suite (a second Redis router as the peer),
// two comet servers on one Redis, a Redis crash and restart in the middle, and batching of subscriptions.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { startCometServer, type CometServer } from './index.js';
import { routerSuite, until, type TestConn } from './router-suite.js';
import { RedisRouter, channelOf, idOfChannel, redisRouterFactory, type BusStats } from './router-redis.js';
import { startRedis, type TestRedis } from './redis-testkit.js';
import type { Conn } from './stream.js';
import { openStream, eventually, htmlChunk, type RawClient } from './testkit.js';

let redis: TestRedis;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis?.stop();
});

routerSuite('redis', (deliver) => RedisRouter.connect<TestConn>(deliver, { url: redis.url }), {
  peer: (_first, deliver) => RedisRouter.connect<TestConn>(deliver, { url: redis.url }),
});

describe('redis router details', () => {
  it('channel names: one function both ways', () => {
    assert.equal(channelOf(123), 'c1m:id:123');
    assert.equal(idOfChannel(channelOf(9007199254740991)), 9007199254740991);
    assert.equal(idOfChannel('other:1'), null);
    assert.equal(idOfChannel('c1m:id:x'), null);
  });

  it('a ramp of 2,000 logins subscribes in a few batched commands and unsubscribes after the last logout', async () => {
    const r = await RedisRouter.connect<TestConn>(() => 0, { url: redis.url });
    try {
      const conns: TestConn[] = [];
      for (let i = 0; i < 2000; i++) {
        const c = { name: String(i), got: [] };
        conns.push(c);
        r.login(i % 1500, c);
      }
      await until(() => r.busStats().channels === 1500, '1500 channels subscribed');
      assert.ok(r.busStats().subscribeCommands <= 3, `subscribe commands: ${r.busStats().subscribeCommands}`);
      for (const c of conns) r.logout(c);
      await until(() => r.busStats().channels === 0, 'every channel unsubscribed');
      assert.ok(r.busStats().unsubscribeCommands <= 3, `unsubscribe commands: ${r.busStats().unsubscribeCommands}`);
    } finally {
      await r.close();
    }
  });

  it('after a Redis restart every held id is re-subscribed in batches; a send during the outage is lost and counted', async () => {
    const got: string[] = [];
    const r = await RedisRouter.connect<TestConn>((msg, conns) => (got.push(msg), conns.size), { url: redis.url });
    try {
      for (let i = 0; i < 1500; i++) r.login(10_000 + i, { name: String(i), got: [] });
      await until(() => r.busStats().channels === 1500, '1500 channels subscribed');
      const commandsBefore = r.busStats().subscribeCommands;
      await redis.kill();
      await until(() => r.busStats().state === 'down', 'the outage seen');
      await assert.rejects(r.send(10_000, 'lost'), (e: unknown) => (e as { code?: string }).code === 'C1M_BUS_DOWN' && (e as { status?: number }).status === 503);
      await redis.restart();
      await until(() => r.busStats().state === 'up', 'back up', 2000);
      const s = r.busStats();
      assert.equal(s.channels, 1500);
      assert.equal(s.resubscribed, 1500);
      assert.equal(s.subscribeCommands - commandsBefore, 2); // 1500 channels in batches of 1000
      assert.equal(s.lostOnBus, 1);
      assert.equal(s.outages, 1);
      assert.equal(await r.send(11_499, 'back'), 1);
      await until(() => got.includes('back'), 'delivery after the restart');
      assert.ok(!got.includes('lost'));
    } finally {
      await r.close();
    }
  });

  it('refuses to start when Redis cannot be reached, naming the URL', async () => {
    await assert.rejects(
      RedisRouter.connect(() => 0, { url: 'redis://127.0.0.1:1', connectTimeoutMs: 1000 }),
      /cannot connect to Redis at redis:\/\/127\.0\.0\.1:1/,
    );
  });
});

async function post(port: number, path: string, body: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', body });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

async function bus(s: CometServer): Promise<BusStats> {
  const res = await fetch(`http://127.0.0.1:${s.controlPort}/stats`);
  const doc = (await res.json()) as { bus?: BusStats };
  assert.ok(doc.bus, '/stats has a bus section');
  return doc.bus;
}

describe('two comet servers on one Redis', () => {
  let a: CometServer;
  let b: CometServer;
  const clients: RawClient[] = [];
  const opts = () => ({ host: '127.0.0.1', port: 0, controlPort: 0, router: redisRouterFactory<Conn>(redis.url) });
  before(async () => {
    a = await startCometServer(opts());
    b = await startCometServer(opts());
  });
  after(async () => {
    for (const c of clients) c.close();
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it('a message published through A reaches a client on B, and both count it honestly', async () => {
    const onB = await openStream(b.port, '/test/501');
    clients.push(onB);
    await eventually(() => b.stats().ids === 1, 'the login on B');
    await until(() => (b.stats() as { bus?: BusStats }).bus?.channels === 1, 'B subscribed');
    const r = await post(a.controlPort, '/send/501', 'from A');
    assert.equal(r.status, 200);
    assert.equal(r.json.delivered, 1); // one other server holds the id: a lower bound of one connection
    await onB.until(htmlChunk(1, 'from A'));
    const r2 = await post(a.controlPort, '/send/502', 'nobody');
    assert.deepEqual(r2.json, { delivered: 0 });
    const sa = a.stats();
    assert.equal(sa.messagesIn, 2);
    assert.equal(sa.messagesDelivered, 1);
    assert.equal(sa.toNobody, 1);
    assert.equal((await bus(a)).published, 2);
    assert.equal((await bus(b)).received, 1);
    const metrics = await (await fetch(`http://127.0.0.1:${a.controlPort}/metrics`)).text();
    assert.match(metrics, /^c1m_bus_up 1$/m);
    assert.match(metrics, /^c1m_bus_published_total 2$/m);
    assert.match(metrics, /^c1m_bus_published_to_nobody_total 1$/m);
  });

  it('an id held on both servers: every stream gets every message once, whoever publishes', async () => {
    const x = await openStream(a.port, '/test/600');
    const y = await openStream(b.port, '/sse/600');
    clients.push(x, y);
    await eventually(() => a.stats().ids >= 1 && b.stats().ids >= 1, 'both logins');
    await until(() => (a.stats() as { bus?: BusStats }).bus!.channels >= 1 && (b.stats() as { bus?: BusStats }).bus!.channels >= 2, 'both subscribed');
    const one = await post(a.controlPort, '/send/600', 'one');
    assert.equal(one.json.delivered, 2); // A's own stream (exact) + B (one at least)
    await post(b.controlPort, '/send/600', 'two');
    await x.until(htmlChunk(2, 'two'));
    await y.until('data: two\n\n');
    assert.ok(x.text.indexOf('one') < x.text.indexOf('two'));
    assert.ok(y.text.indexOf('data: one') < y.text.indexOf('data: two'));
    assert.equal((x.text.match(/Recvd msg/g) ?? []).length, 2);
  });

  it('Redis crashes: servers and streams stay up, publishes are counted as lost, and after a restart it all flows again', async () => {
    const c = await openStream(b.port, '/test/700');
    clients.push(c);
    await eventually(() => b.stats().ids >= 1, 'login');
    await until(() => (b.stats() as { bus?: BusStats }).bus!.channels >= 1 && (b.stats() as { bus?: BusStats }).bus!.state === 'up', 'B subscribed');
    const before700 = await post(a.controlPort, '/send/700', 'before');
    assert.equal(before700.status, 200);
    await c.until(htmlChunk(1, 'before'));

    const inBefore = a.stats().messagesIn;
    await redis.kill();
    await until(() => (a.stats() as { bus?: BusStats }).bus!.state === 'down', 'A sees the outage', 3000);
    const lost = await post(a.controlPort, '/send/700', 'during');
    assert.equal(lost.status, 503);
    assert.match(String(lost.json.error), /bus \(Redis\) is down/);
    const batch = await post(a.controlPort, '/send', '{"id":700,"msg":"batched"}\n{"id":701,"msg":"batched"}\n');
    assert.equal(batch.status, 503);
    assert.equal(batch.json.accepted, 0);
    assert.equal(batch.json.failed, 2);
    assert.equal(batch.json.line, 1);
    const downA = await bus(a);
    assert.equal(downA.state, 'down');
    assert.equal(downA.lostOnBus, 3);
    assert.equal(downA.outages, 1);
    assert.equal(a.stats().messagesIn, inBefore); // lost messages are not "in": they are in bus.lostOnBus
    // Both servers answer, and the stream is still open.
    assert.equal((await fetch(`http://127.0.0.1:${b.controlPort}/healthz`)).status, 200);
    assert.equal(c.closed, false);
    assert.equal(b.stats().connections >= 1, true);

    const restartedAt = Date.now();
    await redis.restart();
    await until(() => (a.stats() as { bus?: BusStats }).bus!.state === 'up' && (b.stats() as { bus?: BusStats }).bus!.state === 'up', 'both back up', 2000);
    const upB = await bus(b);
    assert.ok(upB.resubscribed >= 1, `resubscribed = ${upB.resubscribed}`);
    assert.ok(upB.lastOutageMs > 0);
    assert.ok(Date.now() - restartedAt < 2000, 're-subscribed within 2 s of the restart');
    const after700 = await post(a.controlPort, '/send/700', 'after');
    assert.equal(after700.status, 200);
    assert.equal(after700.json.delivered, 1);
    await c.until(htmlChunk(2, 'after'));
    assert.ok(!c.text.includes('during') && !c.text.includes('batched'));
    assert.equal(c.closed, false);
  });
});

describe('comet-server --router redis://… (separate processes, as on separate hosts)', () => {
  const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));
  const children: ChildProcess[] = [];
  const clients: RawClient[] = [];
  after(() => {
    for (const c of clients) c.close();
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
  const run = (args: string[]): { child: ChildProcess; stderr: () => string; exit: Promise<number | null> } => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, C1M_TOKEN: '' }, stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    return { child, stderr: () => err, exit: new Promise((resolve) => child.on('exit', (code) => resolve(code))) };
  };
  const ready = async (r: ReturnType<typeof run>): Promise<{ port: number; control: number }> => {
    let m: RegExpExecArray | null = null;
    await eventually(() => (m = /listening .*port=(\d+) control=(\d+)/.exec(r.stderr())) !== null || r.child.exitCode !== null, 'the ready line', 10_000);
    assert.ok(m, `no ready line: ${r.stderr()}`);
    return { port: Number(m![1]), control: Number(m![2]) };
  };

  it('two server processes: a publish through one reaches a stream on the other', async () => {
    const args = ['--host', '127.0.0.1', '--port', '0', '--control-port', '0', '--router', redis.url];
    const [a, b] = await Promise.all([ready(run(args)), ready(run(args))]);
    const onB = await openStream(b.port, '/test/801');
    clients.push(onB);
    let doc: { bus?: BusStats } = {};
    // Poll B's /stats until its subscription is confirmed by Redis.
    const deadline = Date.now() + 3000;
    while (doc.bus?.channels !== 1 && Date.now() < deadline) {
      doc = (await (await fetch(`http://127.0.0.1:${b.control}/stats`)).json()) as { bus?: BusStats };
    }
    assert.equal(doc.bus?.channels, 1);
    const r = await post(a.control, '/send/801', 'across processes');
    assert.deepEqual(r.json, { delivered: 1 });
    await onB.until(htmlChunk(1, 'across processes'));
  });

  it('a bad --router exits 2 naming the flag; an unreachable Redis exits 1 naming the URL', async () => {
    const bad = run(['--port', '0', '--control-port', '0', '--router', 'http://127.0.0.1:6379']);
    assert.equal(await bad.exit, 2);
    assert.match(bad.stderr(), /--router: 'http:\/\/127\.0\.0\.1:6379' is neither 'local' nor a redis:\/\/host:port URL/);
    const down = run(['--port', '0', '--control-port', '0', '--router', 'redis://127.0.0.1:1']);
    assert.equal(await down.exit, 1);
    assert.match(down.stderr(), /cannot connect to Redis at redis:\/\/127\.0\.0\.1:1/);
  });
});
