import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { computeSummary, floorGrowth, formatSummaryMd, memoryFigures, slope, type MemSample, type SummaryInput } from './summary.js';

const T0 = 1_700_000_000; // unix seconds
const row = (sec: number, rssMB: number, conns: number, pssMB = rssMB / 2): MemSample => ({
  unix: T0 + sec, rssKB: rssMB * 1024, conns, pssKB: pssMB * 1024, treeRssKB: null, treePssKB: null, cpuPct: null,
});
// Idle 48 MB for 3 s, ramp to 10,000 connections at +2 MB per 1,000, plateau 68 MB, messages 10 s growing to 70 MB.
const MEM: MemSample[] = [
  row(0, 48, 0), row(1, 48, 0), row(2, 48, 0),
  row(3, 52, 2000), row(4, 56, 4000), row(5, 60, 6000), row(6, 64, 8000), row(7, 68, 10000),
  row(8, 68, 10000), row(9, 68, 10000),
  row(10, 68, 10000), row(15, 69, 10000), row(20, 70, 10000),
];
const ms = (sec: number): number => (T0 + sec) * 1000;
const stats = (o: Record<string, number>): Record<string, number> => ({ messagesIn: 0, messagesDelivered: 0, toNobody: 0, slowDrops: 0, chunksOut: 0, chunksDropped: 0, ...o });

function input(over: Partial<SummaryInput> = {}): SummaryInput {
  return {
    conns: 10_000,
    msgRate: 1000,
    phases: { start: ms(0), rampStart: ms(2.5), plateau: ms(7.5), msgStart: ms(9.5), msgEnd: ms(20), drained: ms(21), end: ms(22) },
    mem: MEM,
    flood: { asked: 10_000, reached: 10_000, peakConnected: 10_000, connectedAtEnd: 10_000, closed: 0, chunks: 10_000, errors: {}, eventLoopDelayP99Ms: 3 },
    msggen: { requestedRate: 1000, sent: 10_000, acked: 10_000, errors: {}, delivered: 10_000, durationSec: 10, achievedRate: 1000 },
    statsBefore: stats({}),
    statsAfter: stats({ messagesIn: 10_000, messagesDelivered: 10_000, chunksOut: 10_000 }),
    cpu: { server: 20, floodtest: 10, msggen: 15 },
    serverHasStats: true,
    incidents: [],
    ...over,
  };
}

describe('memoryFigures', () => {
  it('idle before the ramp, plateau before the messages, growth over the messages', () => {
    const m = memoryFigures(MEM, input().phases, { idle: 10_000, plateau: 30_000 });
    assert.equal(m.idleRssKB, 48 * 1024);
    assert.equal(m.plateauRssKB, 68 * 1024);
    assert.equal(m.peakRssKB, 70 * 1024);
    assert.equal(m.kbPerConnRss, 6.96); // 68 MB / 10,000
    assert.equal(m.kbPerConnRssMarginal, 2.05); // 20 MB / 10,000
    assert.equal(m.kbPerConnPssMarginal, 1.02);
    assert.equal(m.kbPerConnUssMarginal, 2);
    assert.equal(m.kbPerConnRssRampSlope, 2.05); // 4 MB per 2,000 connections
    assert.equal(m.growthEndToEndPct, 2.9); // 68 → 70 MB
    assert.equal(m.growthPct, null); // 3 samples: too few for floors
    assert.equal(m.growthMBPerHour, 720); // 2 MB in 10 s
  });
  it('growth floor to floor ignores the GC sawtooth and shows creep', () => {
    assert.equal(floorGrowth([70, 75, 79, 71, 76, 79, 70.5, 77, 79]), 0.7); // teeth, flat floor (70 → 70.5)
    assert.equal(floorGrowth([90, 120, 150, 180, 210, 250]), 133.3); // steady creep like the seed's 90 → 250 MB: floors 90 → 210
    assert.equal(floorGrowth([1, 2, 3, 4, 5]), null);
  });
  it('slope needs three points with spread', () => {
    assert.equal(slope([1, 2], [1, 2]), null);
    assert.equal(slope([1, 1, 1], [1, 2, 3]), null);
    assert.equal(slope([0, 1, 2], [1, 3, 5]), 2);
  });
});

describe('computeSummary verdict', () => {
  it('valid when everything was reached, kept up and counts match', () => {
    const s = computeSummary(input());
    assert.equal(s.verdict.valid, true, s.verdict.line);
    assert.equal(s.verdict.line, 'VERDICT: valid — 10,000 connections held, 10,000 messages sent, counts match');
    assert.ok(s.checks.every((c) => c.ok));
    assert.match(formatSummaryMd(s, 't', []), /\*\*VERDICT: valid/);
  });

  const cases: [string, Partial<SummaryInput>, RegExp][] = [
    // Connections fell short of N.
    ['short of N', { flood: { ...input().flood!, reached: 9000, connectedAtEnd: 9000 } }, /connections reached 9,000 of 10,000 asked/],
    // The client was the bottleneck: its event loop lagged.
    ['floodtest saturated', { flood: { ...input().flood!, eventLoopDelayP99Ms: 250 } }, /floodtest event-loop delay p99 250 ms \(limit 100 ms\)/],
    // The publisher fell behind its schedule (98.5% < 99%).
    ['msggen behind', { msggen: { ...input().msggen!, achievedRate: 985 } }, /msggen achieved 985 msg\/s of 1000 requested \(98\.5%, need ≥ 99%\)/],
    // The server accepted fewer than msggen sent.
    ['sent ≠ accepted', { statsAfter: stats({ messagesIn: 9_999, messagesDelivered: 9_999, chunksOut: 10_000 }) }, /generated \(msggen sent\) 10,000 ≠ accepted \(server messagesIn\) 9,999 \(difference 1\)/],
    // The server's own accounting must add up: accepted = delivered + to nobody.
    ['server accounting', { statsAfter: stats({ messagesIn: 10_000, messagesDelivered: 9_000, toNobody: 999, chunksOut: 10_000 }) }, /accepted 10,000 ≠ delivered \(reached ≥ 1 connection\) 9,000 \+ to nobody 999 \(difference 1\)/],
    // floodtest counted fewer chunks than the server wrote.
    ['delivered ≠ received', { flood: { ...input().flood!, chunks: 9_990 } }, /chunks written by the server \(chunksOut\) 10,000 ≠ chunks received by floodtest 9,990 \(difference 10\)/],
    // Connections dropped mid-run.
    ['closed', { flood: { ...input().flood!, closed: 3, connectedAtEnd: 9_997 } }, /connections closed during the run: 3/],
    // Publish errors are counted data, and invalidate the run.
    ['publish errors', { msggen: { ...input().msggen!, errors: { ECONNRESET: 2 } } }, /publish errors: 2 \{"ECONNRESET":2\}/],
    // An incident from the orchestrator (a timeout, Ctrl-C).
    ['incident', { incidents: ['stopped by Ctrl-C during the messages phase'] }, /stopped by Ctrl-C during the messages phase/],
  ];
  for (const [name, over, re] of cases) {
    it(`invalid: ${name}`, () => {
      const s = computeSummary(input(over));
      assert.equal(s.verdict.valid, false);
      assert.match(s.verdict.line, /^VERDICT: INVALID — /);
      assert.match(s.verdict.line, re);
    });
  }

  it('delivery accounting: every term shown, each equation a check', () => {
    // 10,000 generated: 9,990 accepted + 10 lost on the Redis bus (503s); 9,900 reached a stream, 90 nobody;
    // 12,000 per-connection deliveries queued: 11,950 written + 50 dropped (2 slow streams cut); all written received.
    const over: Partial<SummaryInput> = {
      msggen: { ...input().msggen!, acked: 9_990, failed: 10, errors: { HTTP_503: 10 }, delivered: 11_000 },
      statsBefore: { ...stats({}), chunksQueued: 0, bus: { lostOnBus: 3 } },
      statsAfter: { ...stats({ messagesIn: 9_990, messagesDelivered: 9_900, toNobody: 90, chunksOut: 11_950, chunksDropped: 50, slowDrops: 2 }), chunksQueued: 12_000, bus: { lostOnBus: 13 } },
      flood: { ...input().flood!, chunks: 11_950 },
    };
    const s = computeSummary(input(over));
    assert.deepEqual(s.accounting.map((a) => [a.name, a.ok]), [
      ['generated = acked + publish errors', true],
      ['generated = accepted', true],
      ['acked = accepted', true],
      ['accepted = delivered + to nobody', true],
      ['queued = written + dropped', true],
      ['written = received', true],
    ]);
    assert.deepEqual(s.accounting[1]!.right, [['accepted (server messagesIn)', 9_990], ['lost on bus (bus.lostOnBus)', 10]]);
    assert.equal(s.messages.lostOnBus, 10);
    // The 503s are publish errors: the run is invalid for them, and only for them.
    assert.deepEqual(s.verdict.reasons, ['publish errors: 10 {"HTTP_503":10}']);
    const md = formatSummaryMd(s, 't', []);
    assert.match(md, /## Delivery accounting/);
    assert.match(md, /\| generated = accepted \| generated \(msggen sent\) 10,000 \| accepted \(server messagesIn\) 9,990 \+ lost on bus \(bus\.lostOnBus\) 10 \| ok \|/);
    assert.match(md, /\| queued = written \+ dropped \| per-connection deliveries queued 12,000 \| written \(chunksOut\) 11,950 \+ dropped \(closed, or cut as slow: 2 streams\) 50 \| ok \|/);
  });

  it('delivery accounting: a mismatch is a FAILED check that invalidates the run, not a footnote', () => {
    // One message lost silently between the server's queue and its socket: queued 10,000, written 9,998, dropped 1.
    const s = computeSummary(input({
      statsBefore: { ...stats({}), chunksQueued: 0 },
      statsAfter: { ...stats({ messagesIn: 10_000, messagesDelivered: 10_000, chunksOut: 9_998, chunksDropped: 1 }), chunksQueued: 10_000 },
      flood: { ...input().flood!, chunks: 9_998 },
    }));
    assert.equal(s.verdict.valid, false);
    const bad = s.accounting.filter((a) => !a.ok).map((a) => a.name);
    assert.deepEqual(bad, ['queued = written + dropped']);
    assert.match(s.verdict.line, /per-connection deliveries queued 10,000 ≠ written \(chunksOut\) 9,998 \+ dropped \(closed, or cut as slow: 0 streams\) 1 \(difference 1\)/);
    assert.match(formatSummaryMd(s, 't', []), /\| queued = written \+ dropped \| .* \| \*\*FAIL\*\* \|/);
    // An unmeasured required term fails too: a server without chunksOut cannot prove what it wrote.
    const { chunksOut: _drop, ...noOut } = stats({ messagesIn: 10_000, messagesDelivered: 10_000 });
    const u = computeSummary(input({ statsAfter: noOut }));
    assert.equal(u.verdict.valid, false);
    assert.match(u.verdict.line, /chunks written by the server \(chunksOut\) \? = chunks received by floodtest 10,000 \(a term was not measured\)|≠ chunks received by floodtest 10,000 \(a term was not measured\)/);
  });

  it('other work on the machine: still valid, with a warning', () => {
    const s = computeSummary(input({ cpu: { server: 20, other: 118 } }));
    assert.equal(s.verdict.valid, true);
    assert.match(s.verdict.line, /^VERDICT: valid — .* \(warning: other work used 118% of one core during the messages \(limit 50%\): latency and CPU figures are inflated\)$/);
    assert.match(formatSummaryMd(s, 't', []), /- \*\*warning\*\*: other work used 118%/);
  });

  it('third-party server without /stats: acks against floodtest', () => {
    const s = computeSummary(input({ serverHasStats: false, statsBefore: undefined, statsAfter: undefined }));
    assert.equal(s.verdict.valid, true, s.verdict.line);
    const bad = computeSummary(input({ serverHasStats: false, statsBefore: undefined, statsAfter: undefined, flood: { ...input().flood!, chunks: 5 } }));
    assert.match(bad.verdict.line, /deliveries in the acks 10,000 ≠ received by floodtest 5/);
  });

  it('third-party publisher without a delivered count: that equation is not measured, not failed', () => {
    const msggen = { ...input().msggen!, delivered: undefined };
    const s = computeSummary(input({ serverHasStats: false, statsBefore: undefined, statsAfter: undefined, msggen }));
    assert.equal(s.verdict.valid, true, s.verdict.line);
    assert.equal(s.messages.deliveredAcked, null);
    const line = s.accounting.find((a) => a.name === 'delivered = received');
    assert.equal(line?.notMeasured, true);
    assert.ok(!s.checks.some((c) => c.name === 'delivered = received'));
    assert.match(formatSummaryMd(s, 't', []), /\| delivered = received \| .*not reported by the publisher.* \| not measured \|/);
    // sent = acked + failed still holds it to account.
    const bad = computeSummary(input({ serverHasStats: false, statsBefore: undefined, statsAfter: undefined, msggen: { ...msggen, acked: 9_000, failed: 0 } }));
    assert.match(bad.verdict.line, /generated \(msggen sent\) 10,000 ≠ acked 9,000/);
  });
});
