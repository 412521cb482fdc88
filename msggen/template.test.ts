// --publish-template: single messages POSTed to a third-party publisher URL with {id} replaced (nginx+nchan style).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { parseMarker } from '../lib/marker.js';
import { parsePublishTemplate, resolveOptions, startMsggen, MsggenOptionError } from './index.js';
import { formatSummary } from './report.js';

/** A tiny nchan-like publisher: `POST /pub?id=N` answers `answer(n)` with `status`; records ids, bodies and content types. */
async function publisher(status: number, answer: string): Promise<{ origin: string; ids: number[]; bodies: string[]; types: string[]; others: string[]; close(): Promise<void> }> {
  const ids: number[] = [];
  const bodies: string[] = [];
  const types: string[] = [];
  const others: string[] = [];
  const srv = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (d: string) => (body += d));
    req.on('end', () => {
      const u = new URL(req.url ?? '/', 'http://x');
      if (req.method === 'POST' && u.pathname === '/pub' && /^\d+$/.test(u.searchParams.get('id') ?? '')) {
        ids.push(Number(u.searchParams.get('id')));
        bodies.push(body);
        types.push(String(req.headers['content-type']));
        res.writeHead(status, { 'content-type': 'text/plain' }).end(answer);
      } else {
        others.push(`${req.method} ${req.url}`);
        res.writeHead(404).end();
      }
    });
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const origin = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  return {
    origin,
    ids,
    bodies,
    types,
    others,
    close: () => new Promise<void>((r) => srv.close(() => r())).then(() => srv.closeAllConnections()),
  };
}

test('each message is POSTed to the template with {id} replaced; 2xx acks, delivered not reported', async (t) => {
  const p = await publisher(202, 'queued messages: 1\n');
  t.after(() => p.close());
  const s = await startMsggen({ publishTemplate: `${p.origin}/pub?id={id}`, procs: 4, rate: 200, num: 5, max: 50, seed: 7, threads: 2, connections: 2 }).done;
  assert.equal(s.sent, 20);
  assert.equal(s.acked, 20);
  assert.equal(s.failed, 0);
  assert.deepEqual(s.errors, {});
  assert.equal(s.delivered, 0);
  assert.equal(s.deliveredUnreported, 20, 'nchan answers text: no delivered count, and none is invented');
  assert.equal(p.ids.length, 20, 'exactly one POST per message');
  assert.ok(p.ids.every((id) => id >= 1 && id <= 50), `ids in 1..50: ${p.ids.join(',')}`);
  assert.ok(p.bodies.every((b) => /^Fake message Num = \d+ @t=/.test(b) && parseMarker(b) !== null), 'raw message body with the marker');
  assert.ok(p.types.every((c) => c.startsWith('text/plain')));
  assert.ok(p.others.every((o) => o.startsWith('GET /healthz')), `only warm-up probes besides: ${p.others.join(', ')}`);
  assert.equal(s.target, `${p.origin}/pub?id={id}`);
  assert.match(formatSummary(s), /delivered +not reported by the server/);
});

test('the same ids go out as with the control API, and a JSON delivered is counted', async (t) => {
  const p = await publisher(200, '{"delivered":2}');
  t.after(() => p.close());
  const s = await startMsggen({ publishTemplate: `${p.origin}/pub?id={id}&x={id}`, procs: 2, rate: 500, num: 3, max: 9, seed: 3 }).done;
  assert.equal(s.acked, 6);
  assert.equal(s.delivered, 12);
  assert.equal(s.deliveredUnreported, 0);
  assert.equal(p.ids.length, 6);
  assert.match(formatSummary(s), /delivered +12 \(connections reached/);
});

test('a non-2xx answer is a failure counted by code', async (t) => {
  const p = await publisher(403, 'forbidden');
  t.after(() => p.close());
  const s = await startMsggen({ publishTemplate: `${p.origin}/pub?id={id}`, procs: 1, rate: 500, num: 3, max: 5 }).done;
  assert.equal(s.acked, 0);
  assert.equal(s.failed, 3);
  assert.deepEqual(s.errors, { HTTP_403: 3 });
});

test('bad templates are refused at construction, naming publishTemplate', () => {
  const bad: Array<[Parameters<typeof resolveOptions>[0], RegExp]> = [
    [{ publishTemplate: 'http://127.0.0.1:8080/pub' }, /has no \{id\}/],
    [{ publishTemplate: 'ftp://127.0.0.1/pub?id={id}' }, /http:\/\/ or https:\/\//],
    [{ publishTemplate: '127.0.0.1:8080/pub?id={id}' }, /http:\/\/ or https:\/\//],
    [{ publishTemplate: 'http://{id}.example/pub' }, /not its host/],
    [{ publishTemplate: 'http://127.0.0.1:8080/pub?id={id}', batch: 10 }, /cannot be combined with --batch 10/],
    [{ publishTemplate: 'http://127.0.0.1:8080/pub?id={id}', redis: 'redis://127.0.0.1:6379' }, /cannot be combined with --redis/],
  ];
  for (const [o, want] of bad) {
    assert.throws(
      () => resolveOptions(o),
      (e: unknown) => e instanceof MsggenOptionError && e.option === 'publishTemplate' && want.test(e.message),
      JSON.stringify(o),
    );
  }
  // batch 1 is fine; the path keeps its braces (the URL parser would encode them in a path).
  assert.deepEqual(parsePublishTemplate('https://h.example:8443/pub/{id}/x'), { origin: 'https://h.example:8443', path: '/pub/{id}/x' });
  assert.deepEqual(parsePublishTemplate('http://127.0.0.1:8080?id={id}'), { origin: 'http://127.0.0.1:8080', path: '/?id={id}' });
  const r = resolveOptions({ publishTemplate: 'http://127.0.0.1:8080/pub?id={id}', batch: 1 });
  assert.equal(r.target, 'http://127.0.0.1:8080');
  assert.equal(r.publishPath, '/pub?id={id}');
});
