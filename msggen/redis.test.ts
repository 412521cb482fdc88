// msggen --redis: publishes straight to a real redis-server on the servers' channels, and a comet server on the
// Redis router delivers them; failures while Redis is unreachable are counted, not thrown.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startMsggen, MsggenOptionError } from './index.js';
import { startCometServer, type CometServer } from '../server/index.js';
import { redisRouterFactory, type BusStats } from '../server/router-redis.js';
import { startRedis, freePort, type TestRedis } from '../server/redis-testkit.js';
import { eventually, openStream } from '../server/testkit.js';
import type { Conn } from '../server/stream.js';

describe('msggen --redis', () => {
  let redis: TestRedis;
  let server: CometServer;
  before(async () => {
    redis = await startRedis();
    server = await startCometServer({ host: '127.0.0.1', port: 0, controlPort: 0, router: redisRouterFactory<Conn>(redis.url) });
  });
  after(async () => {
    await server?.stop();
    await redis?.stop();
  });

  it('reaches a client connected to a server on the Redis router', async () => {
    const c = await openStream(server.port, '/test/1');
    try {
      await eventually(() => (server.stats() as { bus?: BusStats }).bus?.channels === 1, 'the server subscribed to id 1');
      const summary = await startMsggen({ redis: redis.url, procs: 2, rate: 100, num: 3, max: 1, seed: 1, onSample: () => {} }).done;
      assert.equal(summary.sent, 6);
      assert.equal(summary.acked, 6);
      assert.equal(summary.failed, 0);
      assert.equal(summary.delivered, 6); // one server process subscribed, per message
      assert.equal(summary.target, redis.url);
      await c.until((t) => (t.match(/Recvd msg #\d+: 'Fake message Num = \d+ @t=\d+'/g) ?? []).length === 6);
      assert.equal((server.stats() as { bus?: BusStats }).bus?.received, 6);
    } finally {
      c.close();
    }
  });

  it('an unreachable Redis: every send is counted as failed (REDIS_UNAVAILABLE), nothing throws', async () => {
    const port = await freePort();
    const summary = await startMsggen({ redis: `redis://127.0.0.1:${port}`, procs: 1, rate: 200, num: 4, max: 10, onSample: () => {} }).done;
    assert.equal(summary.sent, 4);
    assert.equal(summary.acked, 0);
    assert.equal(summary.failed, 4);
    assert.equal(summary.errors.REDIS_UNAVAILABLE, 4);
  });

  it('a bad --redis URL is an option error naming it', () => {
    assert.throws(() => startMsggen({ redis: 'http://127.0.0.1:6379' }), (e: unknown) => e instanceof MsggenOptionError && /^redis: 'http/.test(e.message));
  });
});
