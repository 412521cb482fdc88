import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FlagError, formatDuration, parseChoice, parseDuration, parseHostList, parseIntFlag, parsePortList, parseSize } from './flags.js';

test('parseDuration accepts units, compounds and bare seconds', () => {
  const rows: Array<[string, number]> = [
    ['500ms', 500], // milliseconds
    ['25s', 25_000], // seconds
    ['10m', 600_000], // minutes
    ['1h30m', 5_400_000], // compound
    ['2', 2000], // bare number = seconds
    ['1.5s', 1500], // fractions
  ];
  for (const [raw, ms] of rows) assert.equal(parseDuration('--d', raw), ms, raw);
});

test('parseDuration rejects junk and out-of-range values naming the flag', () => {
  assert.throws(() => parseDuration('--heartbeat', '10 parsecs'), (e: unknown) => e instanceof FlagError && /^--heartbeat: /.test(e.message));
  assert.throws(() => parseDuration('--heartbeat', '5s', 10_000, 60_000), /--heartbeat: 5s is out of range \(10s to 1m\)/);
  assert.throws(() => parseDuration('--d', '5s10'), FlagError);
});

test('formatDuration', () => {
  assert.equal(formatDuration(3_600_000), '1h');
  assert.equal(formatDuration(25_000), '25s');
  assert.equal(formatDuration(250), '250ms');
});

test('parseSize understands binary and decimal units', () => {
  assert.equal(parseSize('--max-buffer', '64KiB'), 65536);
  assert.equal(parseSize('--max-buffer', '64k'), 65536);
  assert.equal(parseSize('--max-buffer', '1MB'), 1_000_000);
  assert.equal(parseSize('--max-buffer', '100'), 100);
  assert.throws(() => parseSize('--max-buffer', '12 apples'), /--max-buffer: '12 apples' is not a size/);
  assert.throws(() => parseSize('--max-buffer', '2GiB', 1, 1024 ** 3), /out of range/);
});

test('parseIntFlag checks form and range', () => {
  assert.equal(parseIntFlag('--procs', '100', 1, 10_000), 100);
  assert.equal(parseIntFlag('--count', '1_000_000', 1, 10_000_000), 1_000_000);
  assert.throws(() => parseIntFlag('--procs', '0', 1, 10_000), /--procs: 0 is out of range \(allowed: 1 to 10000\)/);
  assert.throws(() => parseIntFlag('--procs', '1.5', 1, 10), /not a whole number/);
});

test('parseChoice', () => {
  assert.equal(parseChoice('--dist', 'zipf', ['uniform', 'zipf'] as const), 'zipf');
  assert.throws(() => parseChoice('--dist', 'normal', ['uniform', 'zipf'] as const), /--dist: 'normal' is not one of uniform, zipf/);
});

test('parsePortList expands ranges and lists', () => {
  assert.deepEqual(parsePortList('--ports', '8000-8003'), [8000, 8001, 8002, 8003]);
  assert.deepEqual(parsePortList('--ports', '8000,8002'), [8000, 8002]);
  assert.throws(() => parsePortList('--ports', '8003-8000'), /runs backwards/);
  assert.throws(() => parsePortList('--ports', '70000'), /out of range/);
});

test('parseHostList expands IPv4 ranges and keeps names', () => {
  assert.deepEqual(parseHostList('--hosts', '127.0.0.1-127.0.0.3'), ['127.0.0.1', '127.0.0.2', '127.0.0.3']);
  assert.deepEqual(parseHostList('--hosts', '127.0.0.255-127.0.1.0'), ['127.0.0.255', '127.0.1.0']);
  assert.deepEqual(parseHostList('--hosts', 'localhost,127.0.0.9'), ['localhost', '127.0.0.9']);
  assert.throws(() => parseHostList('--hosts', '127.0.0.300-127.0.0.301'), /not an IPv4 address/);
  assert.throws(() => parseHostList('--hosts', ''), /no host given/);
});
