// A real headless Chromium opens /test/123 (an iframe and a streamed fetch) and an EventSource on /sse/123;
// a message sent through the control API shows up in the page. The page comes from another origin (its own
// port), so this also proves the CORS header the streams send (Access-Control-Allow-Origin: *).
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { startCometServer, type CometServer } from './index.js';
import { eventually } from './testkit.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

function page(streamPort: number): string {
  const origin = `http://127.0.0.1:${streamPort}`;
  return `<!doctype html><meta charset="utf-8"><title>c1m</title>
<iframe id="frame" src="${origin}/test/123"></iframe>
<pre id="html"></pre><pre id="sse"></pre>
<script>
  const es = new EventSource('${origin}/sse/123');
  es.onopen = () => { window.sseOpen = true; };
  es.onmessage = (e) => { document.getElementById('sse').textContent += 'id=' + e.lastEventId + ' data=' + e.data + '\\n'; };
  fetch('${origin}/test/123').then(async (res) => {
    window.fetchOpen = true;
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      document.getElementById('html').textContent += dec.decode(value, { stream: true });
    }
  });
</script>`;
}

describe('headless Chromium', () => {
  let s: CometServer;
  let web: http.Server;
  let browser: Browser;
  before(async () => {
    s = await startCometServer({ host: '127.0.0.1', port: 0, controlHost: '127.0.0.1', controlPort: 0 });
    web = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(page(s.port));
    });
    await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });
  after(async () => {
    await browser?.close();
    await new Promise((r) => web?.close(r));
    await s?.stop();
  });

  it('a message sent through the control API appears in the page (chunked HTML and EventSource)', async () => {
    const p = await browser.newPage();
    // The iframe's document never finishes loading (it is a stream), so the page never fires 'load'.
    await p.goto(`http://127.0.0.1:${(web.address() as AddressInfo).port}/`, { waitUntil: 'domcontentloaded' });
    await p.waitForFunction('window.sseOpen === true && window.fetchOpen === true', undefined, { timeout: 10_000 });
    // The iframe, the fetch and the EventSource: three streams logged in as 123.
    await eventually(() => s.stats().connections === 3, 'three streams from the page', 10_000);
    const res = await fetch(`http://127.0.0.1:${s.controlPort}/send/123`, { method: 'POST', body: 'Hello <b>browser</b> & "friends"\nsecond line' });
    assert.deepEqual(await res.json(), { delivered: 3 });
    await p.waitForFunction("document.getElementById('sse').textContent.includes('second line')", undefined, { timeout: 10_000 });
    assert.equal(await p.textContent('#sse'), 'id=1 data=Hello <b>browser</b> & "friends"\nsecond line\n');
    await p.waitForFunction("document.getElementById('html').textContent.includes('<br/>')", undefined, { timeout: 10_000 });
    assert.equal(await p.textContent('#html'), "Recvd msg #1: 'Hello &lt;b&gt;browser&lt;/b&gt; &amp; &quot;friends&quot;\nsecond line'<br/>");
    // The iframe renders the chunked HTML as it arrives: the escaped markup shows as text, not as a <b> element.
    const frame = p.frames().find((f) => f.url().endsWith('/test/123'));
    assert.ok(frame, 'the iframe loaded /test/123');
    await frame.waitForFunction("document.body !== null && document.body.textContent.includes('friends')", undefined, { timeout: 10_000 });
    assert.equal((await frame.textContent('body'))?.trim(), `Recvd msg #1: 'Hello <b>browser</b> & "friends"\nsecond line'`);
    assert.equal(await frame.locator('b').count(), 0);
    await p.close();
    await eventually(() => s.stats().connections === 0, 'the page streams to close when the page closes', 10_000);
  });
});
