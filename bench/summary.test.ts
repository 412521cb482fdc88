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
    ['sent ≠ accepted', { statsAfter: stats({ messagesIn: 9_999, messagesDelivered: 9_999, chunksOut: 10_000 }) }, /sent 10,000, acked 10,000, accepted by the server 9,999/],
    // The server's own accounting must add up: accepted = delivered + to nobody.
    ['server accounting', { statsAfter: stats({ messagesIn: 10_000, messagesDelivered: 9_000, toNobody: 999, chunksOut: 10_000 }) }, /accepted 10,000 = delivered 9,000 \+ to nobody 999/],
    // floodtest counted fewer chunks than the server wrote.
    ['delivered ≠ received', { flood: { ...input().flood!, chunks: 9_990 } }, /chunks delivered by the server 10,000, received by floodtest 9,990/],
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
    assert.match(bad.verdict.line, /deliveries in the acks 10,000, received by floodtest 5/);
  });
});
