// The streaming suites again on the wrap transport: the server's default (fd) moves each stream to the native fd
// pool once its request is read (fdpool.ts); with --transport wrap every connection stays a libuv handle, and both
// must behave the same on the wire. C1M_TRANSPORT is read by startCometServer.
import { test } from 'node:test';
import assert from 'node:assert/strict';

process.env.C1M_TRANSPORT = 'wrap';
await import('./stream.test.js');
await import('./abuse.test.js');
const { startCometServer } = await import('./index.js');

test('the suites above ran on the wrap transport with the pool writer', async () => {
  const s = await startCometServer({ port: 0, controlPort: 0 });
  try {
    assert.equal(s.transport, 'wrap');
    assert.equal(s.writer, 'pool');
  } finally {
    await s.stop();
  }
});
