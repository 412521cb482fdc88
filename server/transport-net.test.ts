// The streaming suites again on the net.Socket transport: the server's default is the fd transport (fdpool.ts) when
// this Node supports it, and both must behave the same on the wire. C1M_TRANSPORT is read by startCometServer.
import { test } from 'node:test';
import assert from 'node:assert/strict';

process.env.C1M_TRANSPORT = 'net';
await import('./stream.test.js');
await import('./abuse.test.js');
const { startCometServer } = await import('./index.js');

test('the suites above ran on the net transport', async () => {
  const s = await startCometServer({ port: 0, controlPort: 0 });
  try {
    assert.equal(s.transport, 'net');
  } finally {
    await s.stop();
  }
});
