// Security promises of the server: the control API is loopback-only unless a token is set (library and CLI),
// message text cannot inject markup into the HTML stream (checked byte for byte and in a real Chromium), cannot
// break the chunked framing, and cannot inject SSE fields or end an event early (CR, LF, CRLF, lone CR).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { startCometServer, type CometServer } from './index.js';
import { eventually, openStream, withTimeout } from './testkit.js';

const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Resolves with 'connected' or the connect error's code. */
function tryConnect(port: number, host: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });
}

function runCli(args: string[], env: NodeJS.ProcessEnv = {}): { child: ChildProcess; stderr: () => string; exit: Promise<number | null> } {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, C1M_TOKEN: '', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, stderr: () => err, exit };
}

/** Decodes a chunked body; throws if a chunk's size line does not match its data. */
function decodeChunks(body: Buffer): { chunks: string[]; rest: number } {
  const chunks: string[] = [];
  let i = 0;
  for (;;) {
    const eol = body.indexOf('\r\n', i);
    if (eol < 0) return { chunks, rest: body.length - i };
    const size = parseInt(body.toString('latin1', i, eol), 16);
    assert.ok(Number.isInteger(size) && /^[0-9a-f]+$/.test(body.toString('latin1', i, eol)), `chunk size line at ${i}`);
    if (body.length < eol + 2 + size + 2) return { chunks, rest: body.length - i };
    assert.equal(body.toString('latin1', eol + 2 + size, eol + 4 + size), '\r\n', 'chunk data ends with CRLF exactly at its size');
    chunks.push(body.toString('utf8', eol + 2, eol + 2 + size));
    i = eol + 4 + size;
  }
}

/** The WHATWG event-stream interpretation: the events an EventSource would dispatch (id, type, data). */
function parseEventStream(text: string): Array<{ id: string; type: string; data: string }> {
  const events: Array<{ id: string; type: string; data: string }> = [];
  let data = '';
  let type = '';
  let lastId = '';
  for (const line of text.split(/\r\n|\r|\n/).slice(0, -1)) {
    if (line === '') {
      if (data !== '') events.push({ id: lastId, type: type || 'message', data: data.endsWith('\n') ? data.slice(0, -1) : data });
      data = '';
      type = '';
      continue;
    }
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') data += value + '\n';
    else if (field === 'event') type = value;
    else if (field === 'id' && !value.includes('\0')) lastId = value;
  }
  return events;
}

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const UNESCAPE: Record<string, string> = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#39;': "'" };

describe('control API exposure', () => {
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  });

  it('the library binds the control API to loopback by default: 127.0.0.2 cannot reach it', async () => {
    const s = await startCometServer({ host: '127.0.0.1', port: 0, controlPort: 0 });
    try {
      assert.equal(s.controlHost, '127.0.0.1');
      assert.equal(await tryConnect(s.controlPort, '127.0.0.1'), 'connected');
      // A wildcard bind would accept on every address; 127.0.0.1 only refuses 127.0.0.2.
      assert.equal(await tryConnect(s.controlPort, '127.0.0.2'), 'ECONNREFUSED');
    } finally {
      await s.stop();
    }
  });

  it('the CLI binds the control API to loopback by default', async () => {
    const r = runCli(['--host', '127.0.0.1', '--port', '0', '--control-port', '0']);
    children.push(r.child);
    const deadline = Date.now() + 10_000;
    let m: RegExpExecArray | null = null;
    while (!(m = /listening .*control=(\d+) .*control-host=(\S+) token=no/.exec(r.stderr()))) {
      if (Date.now() > deadline || r.child.exitCode !== null) assert.fail(`no ready line: ${r.stderr()}`);
      await new Promise((res) => setTimeout(res, 20));
    }
    assert.equal(m[2], '127.0.0.1');
    const control = Number(m[1]);
    assert.equal(await tryConnect(control, '127.0.0.1'), 'connected');
    assert.equal(await tryConnect(control, '127.0.0.2'), 'ECONNREFUSED');
    r.child.kill('SIGTERM');
    assert.equal(await withTimeout(r.exit, 6000, 'exit'), 0);
  });

  it('the CLI refuses a non-loopback control host without a token, whatever the address form, and says why', async () => {
    for (const [args, env] of [
      [['--control-host', '::'], {}],
      [['--control-host', '10.1.2.3'], {}],
      [['--control-host', '0.0.0.0', '--token', ''], {}],
      [['--control-host', '0.0.0.0'], { C1M_TOKEN: '' }],
      [['--control-host', '127.1'], {}], // not a canonical loopback form: refused rather than guessed
    ] as Array<[string[], NodeJS.ProcessEnv]>) {
      const r = runCli(['--host', '127.0.0.1', '--port', '0', '--control-port', '0', ...args], env);
      children.push(r.child);
      assert.equal(await withTimeout(r.exit, 10_000, 'exit'), 2, args.join(' '));
      assert.match(r.stderr(), /^comet-server: refusing to expose the control API on \S+ without a token: .*set --token \(or C1M_TOKEN\)/);
      assert.equal(r.stderr().trim().split('\n').length, 1, 'one line');
    }
  });

  it('with a token, a non-loopback control host starts and refuses requests without the token', async () => {
    const s = await startCometServer({ host: '127.0.0.1', port: 0, controlHost: '0.0.0.0', controlPort: 0, token: 'k' });
    try {
      assert.equal((await fetch(`http://127.0.0.2:${s.controlPort}/send/1`, { method: 'POST', body: 'x' })).status, 401);
      assert.equal((await fetch(`http://127.0.0.2:${s.controlPort}/stats`)).status, 401);
      assert.equal(s.stats().messagesIn, 0);
    } finally {
      await s.stop();
    }
  });
});

describe('message text cannot break out of its place in the streams', () => {
  let s: CometServer;
  before(async () => {
    s = await startCometServer({ host: '127.0.0.1', port: 0, controlHost: '127.0.0.1', controlPort: 0 });
  });
  after(() => s.stop());

  const HOSTILE = [
    '<script>alert(1)</script>',
    `'><img src=x onerror=alert(1)>`,
    `"><svg onload=alert(1)>`,
    '&lt;script&gt; already escaped &amp; &#39; &#x3c;',
    '</br><br/><!-- --> ]]> <![CDATA[x]]>',
    '\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n',
    'e\u0301 \u2028 \u2029 \ud83d\ude00 \u0000',
  ];

  it('HTML: every message is escaped, framed by its byte length, and unescapes to the original (hostile and random text)', async () => {
    const c = await openStream(s.port, '/test/4001');
    const rand = prng(8);
    const alphabet = ['<', '>', '&', '"', "'", '&amp;', '&lt;', 'a', ' ', '\n', '\r', '\r\n', '\0', 'é', '😀', '/', ';', '#', '=', '<script>', '</script>'];
    const msgs = [...HOSTILE];
    for (let i = 0; i < 300; i++) {
      let m = '';
      for (let k = Math.floor(rand() * 30); k > 0; k--) m += alphabet[Math.floor(rand() * alphabet.length)];
      msgs.push(m);
    }
    for (const m of msgs) assert.equal(await s.publish(4001, m), 1);
    const headEnd = () => c.text.indexOf('\r\n\r\n') + 4;
    await c.until(() => decodeChunks(Buffer.from(c.text.slice(headEnd()), 'latin1')).chunks.length >= msgs.length, 5000);
    const { chunks, rest } = decodeChunks(Buffer.from(c.text.slice(headEnd()), 'latin1'));
    assert.equal(rest, 0, 'nothing but whole chunks');
    assert.equal(chunks.length, msgs.length, 'one chunk per message: no message ended the body or added a chunk');
    chunks.forEach((chunk, i) => {
      const m = /^Recvd msg #(\d+): '([\s\S]*)'<br\/>$/.exec(chunk);
      assert.ok(m, `chunk ${i + 1} has the frame`);
      assert.equal(Number(m[1]), i + 1);
      assert.match(m[2]!, /^(?:[^<>"'&]|&(?:amp|lt|gt|quot|#39);)*$/, `chunk ${i + 1}: no raw < > " ' and every & is an escape`);
      assert.equal(m[2]!.replace(/&(?:amp|lt|gt|quot|#39);/g, (e) => UNESCAPE[e]!), msgs[i], `chunk ${i + 1} unescapes to the message`);
    });
    c.close();
  });

  it('SSE: CR, LF, CRLF and lone CR never inject a field or end an event early (the WHATWG parser sees one event per message)', async () => {
    const c = await openStream(s.port, '/sse/4002');
    const rand = prng(9);
    const alphabet = ['a', 'b', ' ', ':', '\r', '\n', '\r\n', '\n\r', '\r\r', 'id: 99', 'event: evil', 'retry: 1', 'data: x', ': c', '\0', 'é'];
    const msgs = ['line1\rid: 7\revent: evil', 'x\r\n\r\ndata: y', '\r', '\n', 'tail\r', ...HOSTILE];
    for (let i = 0; i < 300; i++) {
      let m = 'm';
      for (let k = Math.floor(rand() * 20); k > 0; k--) m += alphabet[Math.floor(rand() * alphabet.length)];
      msgs.push(m);
    }
    for (const m of msgs) assert.equal(await s.publish(4002, m), 1);
    const body = (): string => c.text.slice(c.text.indexOf('\r\n\r\n') + 4);
    await c.until(() => parseEventStream(Buffer.from(body(), 'latin1').toString('utf8')).length >= msgs.length, 5000);
    const raw = Buffer.from(body(), 'latin1').toString('utf8');
    assert.ok(!raw.includes('\r'), 'the event stream body never carries a CR');
    for (const line of raw.split('\n').slice(0, -1)) assert.match(line, /^(?:id: \d+|data: [^\r\n]*|)$/, `only id/data lines: ${JSON.stringify(line)}`);
    const events = parseEventStream(raw);
    assert.equal(events.length, msgs.length, 'one event per message');
    events.forEach((e, i) => {
      assert.equal(e.id, String(i + 1), `event ${i + 1} keeps the server's id`);
      assert.equal(e.type, 'message', `event ${i + 1} keeps the default type`);
      assert.equal(e.data, msgs[i]!.replace(/\r\n|\r/g, '\n'), `event ${i + 1} data is the message, line breaks as LF`);
    });
    c.close();
  });
});

describe('script injection in a real browser', () => {
  let s: CometServer;
  let browser: Browser;
  before(async () => {
    s = await startCometServer({ host: '127.0.0.1', port: 0, controlHost: '127.0.0.1', controlPort: 0 });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });
  after(async () => {
    await browser?.close();
    await s?.stop();
  });

  it('the HTML stream rendered as a page runs none of the published markup and shows it as text', async () => {
    const p = await browser.newPage();
    const dialogs: string[] = [];
    p.on('dialog', (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
    // The stream is the document itself; it never finishes loading.
    await p.goto(`http://127.0.0.1:${s.port}/test/4003`, { waitUntil: 'commit' });
    await eventually(() => s.stats().connections === 1, 'the page stream', 10_000);
    const payloads = [
      '<script>window.__pwned=1;alert(1)</script>',
      '<img src=x onerror="window.__pwned=2">',
      `'><svg onload="window.__pwned=3">`,
      `"><iframe src="javascript:parent.__pwned=4"></iframe>`,
      '<scr<script>ipt>window.__pwned=5</script>',
      '&lt;script&gt;window.__pwned=6&lt;/script&gt;',
      '<style>body{display:none}</style><b>bold</b>',
      'END',
    ];
    for (const m of payloads) {
      const r = await fetch(`http://127.0.0.1:${s.controlPort}/send/4003`, { method: 'POST', body: m });
      assert.deepEqual(await r.json(), { delivered: 1 });
    }
    await p.waitForFunction("document.body !== null && document.body.textContent.includes(\"'END'\")", undefined, { timeout: 10_000 });
    assert.equal(await p.evaluate('window.__pwned'), undefined, 'no payload ran');
    assert.deepEqual(dialogs, []);
    for (const tag of ['script', 'img', 'svg', 'iframe', 'style', 'b']) assert.equal(await p.locator(tag).count(), 0, `no <${tag}> element`);
    assert.equal(await p.locator('br').count(), payloads.length, 'only the frame’s own <br/>s are elements');
    const text = (await p.evaluate('document.body.textContent')) as string;
    assert.equal(text, payloads.map((m, i) => `Recvd msg #${i + 1}: '${m}'`).join(''), 'every payload shows as its literal text');
    await p.close();
  });
});
