// The streaming suites again on the default transport with every write made by the main thread: the server's
// default hands each tick's writes to the writer addon's pool thread (batch.ts, server/native/writer.c), and a
// server that writes from its main thread (--writer main) must behave the same on the wire.
// C1M_WRITER is read by startCometServer.
import { test } from 'node:test';
import assert from 'node:assert/strict';

process.env.C1M_WRITER = 'main';
await import('./stream.test.js');
await import('./abuse.test.js');
const { startCometServer } = await import('./index.js');

test('the suites above ran on the fd transport with main-thread writes', async () => {
  const s = await startCometServer({ port: 0, controlPort: 0 });
  try {
    assert.equal(s.transport, 'fd');
    assert.equal(s.writer, 'main');
    assert.equal(s.stats().writerBatches, 0);
  } finally {
    await s.stop();
  }
});
