import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findMarker, formatMarker, formatMessage, nowMicros, parseMarker } from './marker.js';

test('formatMessage writes the seed text followed by the marker', () => {
  assert.equal(formatMessage('Fake message', 7, 1_700_000_000_123_456), 'Fake message Num = 7 @t=1700000000123456');
  assert.equal(formatMarker(12.6), '@t=13');
});

test('findMarker reads the marker from raw bytes, inside a chunk frame', () => {
  const chunk = Buffer.from("2a\r\nRecvd msg #1: 'Fake message Num = 1 @t=1700000000123456'<br/>\r\n");
  assert.equal(findMarker(chunk), 1_700_000_000_123_456);
});

test('findMarker honours the [start, end) window and returns -1 without a marker', () => {
  const buf = Buffer.from('xx @t=42 yy @t=99');
  assert.equal(findMarker(buf, 0, 8), 42);
  assert.equal(findMarker(buf), 99); // the last marker wins
  assert.equal(findMarker(Buffer.from('no marker here')), -1);
  assert.equal(findMarker(Buffer.from('@t=')), -1); // no digits
  assert.equal(findMarker(Buffer.from('@t=12345678901234567')), -1); // 17 digits: not a time
});

test('parseMarker round-trips with nowMicros', () => {
  const t = nowMicros();
  assert.ok(Math.abs(t - Date.now() * 1000) < 5_000_000);
  assert.equal(parseMarker(formatMessage('hi', 1, t)), t);
});
