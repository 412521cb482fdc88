// URL files, the target table and the URL generator.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { generateUrls, parseTargets, parseUrlText, readUrlFile, UrlError } from './urls.js';

const FIXTURE = fileURLToPath(new URL('../../floodtest/fixtures/urls.txt', import.meta.url));

test('readUrlFile skips blank lines and # comments and keeps file line numbers', async () => {
  const list = await readUrlFile(FIXTURE);
  assert.deepEqual(list.urls, ['http://127.0.0.1:8000/test/1', 'http://127.0.0.2:8001/test/2', 'https://localhost:8443/sse/3?x=1']);
  assert.deepEqual(list.lines, [2, 4, 6]);
});

test('readUrlFile("-") reads stdin; parseUrlText agrees with it', async () => {
  const text = '# c\n\nhttp://a:1/x\r\nhttp://b:2/y\n';
  const list = await readUrlFile('-', Readable.from([text]));
  assert.deepEqual(list, parseUrlText(text));
  assert.deepEqual(list.urls, ['http://a:1/x', 'http://b:2/y']);
});

test('parseTargets dedupes endpoints and keeps path + query per URL', () => {
  const t = parseTargets(['http://127.0.0.1:8000/test/1', 'http://127.0.0.1:8000/test/2?a=b', 'https://example.org/sse/3', 'http://[::1]:9/x']);
  assert.equal(t.endpoints.length, 3);
  assert.deepEqual([...t.endpointOf], [0, 0, 1, 2]);
  assert.deepEqual(t.paths, ['/test/1', '/test/2?a=b', '/sse/3', '/x']);
  assert.deepEqual(
    t.endpoints.map((e) => [e.tls, e.host, e.port, e.hostHeader, e.address]),
    [
      [false, '127.0.0.1', 8000, '127.0.0.1:8000', '127.0.0.1'],
      [true, 'example.org', 443, 'example.org', null],
      [false, '::1', 9, '[::1]:9', '::1'],
    ],
  );
});

test('parseTargets rejects what it cannot open, naming the line', () => {
  assert.throws(() => parseTargets([]), UrlError);
  assert.throws(() => parseTargets(['http://a/1', 'ftp://b/2'], [3, 7]), /line 7: only http:\/\/ and https:\/\//);
  assert.throws(() => parseTargets(['not a url'], [1]), /line 1: not a URL/);
  assert.throws(() => parseTargets(['http://u:p@a/1']), /credentials/);
});

test('generateUrls: ids start..start+count-1 appended to the base, as the seed', () => {
  assert.deepEqual([...generateUrls({ base: 'http://127.0.0.1:8000/test/', count: 3 })], [
    'http://127.0.0.1:8000/test/1',
    'http://127.0.0.1:8000/test/2',
    'http://127.0.0.1:8000/test/3',
  ]);
  assert.deepEqual([...generateUrls({ base: 'http://h/sse/', count: 2, start: 0 })], ['http://h/sse/0', 'http://h/sse/1']);
});

test('generateUrls spreads ids round-robin over hosts × ports, host-major', () => {
  const urls = [...generateUrls({ base: 'http://127.0.0.1:8000/test/', count: 10, start: 5, hosts: ['127.0.0.1', '127.0.0.2'], ports: [8000, 8001, 8002] })];
  assert.deepEqual(urls.slice(0, 7), [
    'http://127.0.0.1:8000/test/5',
    'http://127.0.0.1:8001/test/6',
    'http://127.0.0.1:8002/test/7',
    'http://127.0.0.2:8000/test/8',
    'http://127.0.0.2:8001/test/9',
    'http://127.0.0.2:8002/test/10',
    'http://127.0.0.1:8000/test/11',
  ]);
  // Equal shares: 10 ids over 6 destinations → 2 or 1 each, ids all distinct.
  const perDest = new Map<string, number>();
  for (const u of urls) perDest.set(new URL(u).host, (perDest.get(new URL(u).host) ?? 0) + 1);
  assert.deepEqual([...perDest.values()].sort(), [1, 1, 2, 2, 2, 2]);
  assert.equal(new Set(urls.map((u) => u.split('/').pop())).size, 10);
  // Only ports: the base host is kept; IPv6 hosts get brackets.
  assert.deepEqual([...generateUrls({ base: 'http://localhost:1/t/', count: 2, ports: [7, 8] })], ['http://localhost:7/t/1', 'http://localhost:8/t/2']);
  assert.deepEqual([...generateUrls({ base: 'http://x:1/t/', count: 1, hosts: ['::1'] })], ['http://[::1]:1/t/1']);
});

test('generateUrls rejects a bad base', () => {
  assert.throws(() => [...generateUrls({ base: 'nope', count: 1 })], /--base: not a URL/);
  assert.throws(() => [...generateUrls({ base: 'ws://a/', count: 1 })], /--base: only http/);
});
