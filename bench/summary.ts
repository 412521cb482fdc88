// The run's summary: a pure function from what the run collected (memory rows, floodtest/msggen samples and
// summaries, server /stats snapshots, phase times, CPU) to the figures of summary.json, and their Markdown table.
//
// Memory figures: "idle" is the server before any connection; "plateau" is the server holding every connection
// before the first message; "peak" is the highest sample of the message phase. KB per connection "total" divides
// the whole process by the connections (what a capacity plan needs); "marginal" divides only the growth from idle
// (what each extra connection costs, without the ~44 MB of an idle Node process).
import type { LatencySummary } from '../lib/histogram.js';
import { fit } from '../memlog/summary.js';

/** One memory sample (from memlog's log). Sizes in KB. */
export interface MemSample {
  unix: number;
  rssKB: number;
  conns: number;
  pssKB: number | null;
  treeRssKB: number | null;
  treePssKB: number | null;
  cpuPct: number | null;
}

/** Percentiles in microseconds: lib's LatencySummary, whose mean not every tool reports. */
export type Latency = Omit<LatencySummary, 'mean'> & { mean?: number };

/** Phase boundaries, ms since the epoch (undefined when the run never got there). */
export interface Phases {
  start: number;
  serverReady?: number;
  rampStart?: number;
  plateau?: number;
  msgStart?: number;
  msgEnd?: number;
  drained?: number;
  end: number;
}

/** What floodtest reported, normalized. */
export interface FloodResult {
  asked: number;
  reached: number;
  /** Most connections open at once. */
  peakConnected: number;
  /** Connected at the end of the message phase. */
  connectedAtEnd: number;
  closed: number;
  chunks: number;
  errors: Record<string, number>;
  latency?: Latency;
  rampSeconds?: number;
  connectsPerSec?: number;
  /** Worst event-loop delay p99 (ms) floodtest saw in its own samples. */
  eventLoopDelayP99Ms?: number;
  rssKB?: number;
}

/** What msggen reported, normalized. */
export interface MsggenResult {
  requestedRate: number;
  sent: number;
  acked: number;
  /** Messages that failed (msggen's `failed`; with --batch one failed request fails several). */
  failed?: number;
  errors: Record<string, number>;
  late?: number;
  /** Server-reported deliveries summed over acks (connections reached). */
  delivered?: number;
  durationSec: number;
  achievedRate: number;
  publishLatency?: Latency;
}

/** Server counters at one moment (fields as in the server's GET /stats). */
export type ServerStats = Record<string, unknown>;

/** Average CPU % of one core over the message phase, per party. */
export interface CpuFigures {
  server?: number;
  floodtest?: number;
  msggen?: number;
  memlog?: number;
  /** The orchestrator itself (stats polling, /proc readings, parsing the tools' output). */
  c1m?: number;
  /** Whole machine, % of one core (2 cores = 200%). */
  machineBusy?: number;
  /** Machine busy minus the run's parties: other load sharing the machine. */
  other?: number;
}

/** Everything the summary is computed from. */
export interface SummaryInput {
  conns: number;
  msgRate: number;
  phases: Phases;
  mem: MemSample[];
  flood?: FloodResult;
  msggen?: MsggenResult;
  /** /stats right before the message phase and after the drain. */
  statsBefore?: ServerStats;
  statsAfter?: ServerStats;
  cpu: CpuFigures;
  /** Third-party server without /stats: server-side counts are unknown. */
  serverHasStats: boolean;
  /**
   * Private memory (USS) of the server tree, KB, read at the end of the idle phase, at the plateau and after the
   * message phase. Unlike PSS it does not move when other Node processes (floodtest, msggen) start sharing the
   * binary's pages, so its growth is the cleanest marginal cost per connection.
   */
  uss?: { idle?: number; plateau?: number; msgEnd?: number };
  /** Limits of the verdict (defaults in VERDICT_LIMITS). */
  limits?: Partial<typeof VERDICT_LIMITS>;
  /** Problems the orchestrator met (timeouts, children that died). */
  incidents: string[];
}

/** When a run is invalid: every threshold named once. */
export const VERDICT_LIMITS = {
  /** msggen must achieve this share of the requested message rate. */
  minAchievedRateShare: 0.99,
  /** floodtest's event-loop delay p99 above this means the client, not the server, set the pace (ms). */
  maxClientEventLoopDelayMs: 100,
  /** Other work on the machine (% of one core) above which the summary warns that latency and CPU figures are inflated. */
  maxOtherLoadPct: 50,
  /** CPU % of one core above which a single-threaded load generator counts as saturated. */
  maxGeneratorCpuPct: 90,
};

/**
 * Memory figures in KB (per connection in KB too). Idle is the median sample between the server's start and the
 * ramp; plateau the median sample between the plateau and the first message; peak the highest of the message phase.
 */
export interface MemFigures {
  idleRssKB: number | null;
  idlePssKB: number | null;
  plateauRssKB: number | null;
  plateauPssKB: number | null;
  peakRssKB: number | null;
  peakPssKB: number | null;
  msgStartRssKB: number | null;
  msgEndRssKB: number | null;
  connsAtPlateau: number | null;
  kbPerConnRss: number | null;
  kbPerConnPss: number | null;
  kbPerConnRssMarginal: number | null;
  kbPerConnPssMarginal: number | null;
  kbPerConnRssPeak: number | null;
  /** Private memory (USS) of the server tree, KB, at idle, at the plateau and after the messages. */
  ussIdleKB: number | null;
  ussPlateauKB: number | null;
  ussMsgEndKB: number | null;
  /** (USS plateau − USS idle) / connections. */
  kbPerConnUssMarginal: number | null;
  /** Least-squares slope of RSS against connections during the ramp (KB per connection). */
  kbPerConnRssRampSlope: number | null;
  /**
   * RSS growth over the message phase, %, floor to floor: the lowest sample of its last third against the lowest of
   * its first third. V8's heap makes RSS a sawtooth (grow, major GC, drop), so first-to-last sample depends on where
   * the run ends on a tooth; the floors show real creep (the seed's 90 → 250 MB) and ignore the teeth.
   */
  growthPct: number | null;
  /** RSS from the first to the last sample of the message phase, %. */
  growthEndToEndPct: number | null;
  /** Least-squares RSS trend over the message phase, MB per hour. */
  growthMBPerHour: number | null;
}

/** Message accounting. */
export interface MessageFigures {
  requestedRate: number;
  achievedRate: number | null;
  sent: number | null;
  acked: number | null;
  publishErrors: number;
  accepted: number | null;
  delivered: number | null;
  toNobody: number | null;
  slowDrops: number | null;
  chunksOut: number | null;
  /** Per-connection deliveries queued by the server (one per receiving connection per message). */
  chunksQueued: number | null;
  /** Publishes the server could not hand to its Redis bus (answered 503; /stats bus.lostOnBus), null without a bus. */
  lostOnBus: number | null;
  /** Per-connection deliveries the server dropped (their connection closed or was cut as a slow consumer first). */
  chunksDropped: number | null;
  chunksReceived: number | null;
  /** Server deliveries msggen saw in the acks (sum of `delivered`). */
  deliveredAcked: number | null;
}

/** One delivery equation: left terms summed = right terms summed. */
export interface AccountingLine {
  name: string;
  left: [string, number | null][];
  right: [string, number | null][];
  ok: boolean;
  /** True when a term could not be measured and the equation is not checked (shown as "not measured", not a failure). */
  notMeasured?: boolean;
}

/** summary.json. */
export interface Summary {
  conns: { asked: number; reached: number | null; atEnd: number | null; closed: number | null; connectErrors: Record<string, number>; rampSeconds: number | null; connectsPerSec: number | null };
  durations: { totalSec: number; rampSec: number | null; messageSec: number | null };
  memory: MemFigures;
  messages: MessageFigures;
  latency: Latency | null;
  publishLatency: Latency | null;
  cpu: CpuFigures;
  clientEventLoopDelayP99Ms: number | null;
  checks: { name: string; ok: boolean; detail: string }[];
  /** The delivery equations, every term with its value (null: not measured); a false `ok` is a failed check. */
  accounting: AccountingLine[];
  verdict: { valid: boolean; reasons: string[]; warnings: string[]; line: string };
  incidents: string[];
}

const last = <T>(a: readonly T[]): T | undefined => a[a.length - 1];
const r1 = (x: number): number => Math.round(x * 10) / 10;
const r2 = (x: number): number => Math.round(x * 100) / 100;

/** Least-squares slope of y against x; null with fewer than 3 points or no spread in x. */
export function slope(xs: readonly number[], ys: readonly number[]): number | null {
  return xs.length < 3 ? null : (fit(xs, ys)?.slope ?? null);
}

/** The server's RSS/PSS of a sample: the whole tree (workers included) when memlog measured it. */
const rssOf = (m: MemSample): number => m.treeRssKB ?? m.rssKB;
const pssOf = (m: MemSample): number | null => m.treePssKB ?? m.pssKB;

/** The /stats `bus` object (Redis router), if any. */
function busOf(s: ServerStats | undefined): ServerStats | undefined {
  const b = s?.bus;
  return b && typeof b === 'object' && !Array.isArray(b) ? (b as ServerStats) : undefined;
}

function num(s: ServerStats | undefined, key: string): number | null {
  const v = s?.[key];
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}
function delta(a: ServerStats | undefined, b: ServerStats | undefined, key: string): number | null {
  const x = num(a, key);
  const y = num(b, key);
  return x === null || y === null ? null : y - x;
}

/** Growth of the floor of a series, %: min of the last third vs min of the first third (null under 6 samples). */
export function floorGrowth(values: readonly number[]): number | null {
  if (values.length < 6) return null;
  const k = Math.floor(values.length / 3);
  const a = Math.min(...values.slice(0, k));
  const b = Math.min(...values.slice(values.length - k));
  return a > 0 ? r1((100 * (b - a)) / a) : null;
}

/** Memory figures from the samples and phase times. */
export function memoryFigures(mem: readonly MemSample[], p: Phases, uss: SummaryInput['uss'] = {}): MemFigures {
  const at = (ms: number | undefined): MemSample | undefined => {
    if (ms === undefined) return undefined;
    let best: MemSample | undefined;
    for (const m of mem) if (m.unix * 1000 <= ms) best = m;
    return best;
  };
  const between = (a: number | undefined, b: number | undefined): MemSample[] =>
    a === undefined || b === undefined ? [] : mem.filter((m) => m.unix * 1000 >= a && m.unix * 1000 <= b);
  // Idle and plateau are the median sample (by RSS) of their window, so one GC tooth does not set the figure.
  const medianRow = (rows: MemSample[]): MemSample | undefined => (rows.length === 0 ? undefined : [...rows].sort((a, b) => rssOf(a) - rssOf(b))[Math.floor((rows.length - 1) / 2)]);
  const idle = medianRow(between(p.serverReady ?? p.start, p.rampStart)) ?? at(p.rampStart) ?? mem[0];
  const plateau = medianRow(between(p.plateau, p.msgStart)) ?? at(p.msgStart) ?? (p.msgStart === undefined ? last(mem) : undefined);
  const msgRows = between(p.msgStart, p.msgEnd);
  const msgEnd = last(msgRows) ?? at(p.msgEnd);
  const peak = msgRows.length > 0 ? msgRows.reduce((a, b) => (rssOf(b) > rssOf(a) ? b : a)) : plateau;
  const peakPss = msgRows.length > 0 ? msgRows.map(pssOf).filter((x): x is number => x !== null) : [];
  const conns = plateau?.conns ?? null;
  const per = (kb: number | null | undefined): number | null => (kb == null || !conns ? null : r2(kb / conns));
  const ramp = between(p.rampStart, p.msgStart ?? p.plateau);
  const rampSlope = slope(ramp.map((m) => m.conns), ramp.map(rssOf));
  const first = msgRows[0];
  const trend = slope(msgRows.map((m) => m.unix / 3600), msgRows.map((m) => rssOf(m) / 1024));
  const idleRss = idle ? rssOf(idle) : null;
  const idlePss = idle ? pssOf(idle) : null;
  const plRss = plateau ? rssOf(plateau) : null;
  const plPss = plateau ? pssOf(plateau) : null;
  return {
    idleRssKB: idleRss,
    idlePssKB: idlePss,
    plateauRssKB: plRss,
    plateauPssKB: plPss,
    peakRssKB: peak ? rssOf(peak) : null,
    peakPssKB: peakPss.length > 0 ? Math.max(...peakPss) : plPss,
    msgStartRssKB: first ? rssOf(first) : null,
    msgEndRssKB: msgEnd ? rssOf(msgEnd) : null,
    connsAtPlateau: conns,
    kbPerConnRss: per(plRss),
    kbPerConnPss: per(plPss),
    kbPerConnRssMarginal: plRss !== null && idleRss !== null ? per(plRss - idleRss) : null,
    kbPerConnPssMarginal: plPss !== null && idlePss !== null ? per(plPss - idlePss) : null,
    kbPerConnRssPeak: per(peak ? rssOf(peak) : null),
    ussIdleKB: uss.idle ?? null,
    ussPlateauKB: uss.plateau ?? null,
    ussMsgEndKB: uss.msgEnd ?? null,
    kbPerConnUssMarginal: uss.idle !== undefined && uss.plateau !== undefined ? per(uss.plateau - uss.idle) : null,
    kbPerConnRssRampSlope: rampSlope === null ? null : r2(rampSlope),
    growthPct: floorGrowth(msgRows.map(rssOf)),
    growthEndToEndPct: first && msgEnd && rssOf(first) > 0 ? r1((100 * (rssOf(msgEnd) - rssOf(first))) / rssOf(first)) : null,
    growthMBPerHour: trend === null ? null : r1(trend),
  };
}

/** Computes summary.json from the run's data; pure. */
export function computeSummary(inp: SummaryInput): Summary {
  const L = { ...VERDICT_LIMITS, ...inp.limits };
  const p = inp.phases;
  const f = inp.flood;
  const g = inp.msggen;
  const memory = memoryFigures(inp.mem, p, inp.uss);
  const sb = inp.statsBefore;
  const sa = inp.statsAfter;
  const messages: MessageFigures = {
    requestedRate: inp.msgRate,
    achievedRate: g ? r1(g.achievedRate) : null,
    sent: g?.sent ?? null,
    acked: g?.acked ?? null,
    publishErrors: g ? Object.values(g.errors).reduce((a, b) => a + b, 0) : 0,
    accepted: delta(sb, sa, 'messagesIn'),
    delivered: delta(sb, sa, 'messagesDelivered'),
    toNobody: delta(sb, sa, 'toNobody'),
    slowDrops: delta(sb, sa, 'slowDrops'),
    chunksOut: delta(sb, sa, 'chunksOut'),
    chunksQueued: delta(sb, sa, 'chunksQueued'),
    lostOnBus: delta(busOf(sb), busOf(sa), 'lostOnBus'),
    chunksDropped: delta(sb, sa, 'chunksDropped'),
    chunksReceived: f ? f.chunks : null,
    deliveredAcked: g?.delivered ?? null,
  };

  const checks: Summary['checks'] = [];
  const reasons: string[] = [];
  const check = (name: string, ok: boolean, detail: string): void => {
    checks.push({ name, ok, detail });
    if (!ok) reasons.push(detail);
  };
  const fmtN = (n: number | null): string => (n === null ? '?' : n.toLocaleString('en-US'));
  const accounting: AccountingLine[] = [];
  /** One delivery equation as a check: unequal, or a required term unmeasured, fails the run. */
  const equation = (name: string, left: [string, number | null][], right: [string, number | null][], required: boolean): void => {
    const terms = [...left, ...right];
    const known = terms.every(([, x]) => x !== null);
    if (!known && !required) return;
    const sum = (t: [string, number | null][]): number => t.reduce((a, [, x]) => a + (x ?? 0), 0);
    const ok = known && sum(left) === sum(right);
    accounting.push({ name, left, right, ok });
    const side = (t: [string, number | null][]): string => t.map(([k, x]) => `${k} ${fmtN(x)}`).join(' + ');
    const diff = known && !ok ? ` (difference ${(sum(left) - sum(right)).toLocaleString('en-US')})` : '';
    check(name, ok, `${side(left)} ${ok ? '=' : '≠'} ${side(right)}${diff}${known ? '' : ' (a term was not measured)'}`);
  };

  if (!f) check('connections', false, 'floodtest reported nothing');
  else {
    check('connections', f.reached >= inp.conns, `connections reached ${fmtN(f.reached)} of ${fmtN(inp.conns)} asked`);
    check('connections held', f.connectedAtEnd >= f.reached && f.closed === 0, `connections closed during the run: ${fmtN(f.closed)} (open at end ${fmtN(f.connectedAtEnd)})`);
    if (f.eventLoopDelayP99Ms !== undefined) {
      check('client not saturated', f.eventLoopDelayP99Ms <= L.maxClientEventLoopDelayMs, `floodtest event-loop delay p99 ${r1(f.eventLoopDelayP99Ms)} ms (limit ${L.maxClientEventLoopDelayMs} ms)`);
    }
  }
  if (inp.cpu.floodtest !== undefined && f && f.eventLoopDelayP99Ms === undefined) {
    check('client not saturated', inp.cpu.floodtest <= L.maxGeneratorCpuPct, `floodtest CPU ${r1(inp.cpu.floodtest)}% (limit ${L.maxGeneratorCpuPct}%)`);
  }
  if (p.msgStart !== undefined) {
    if (!g) check('publisher', false, 'msggen reported nothing');
    else {
      const share = inp.msgRate > 0 ? g.achievedRate / inp.msgRate : 1;
      check('publisher kept the rate', share >= L.minAchievedRateShare, `msggen achieved ${r1(g.achievedRate)} msg/s of ${inp.msgRate} requested (${r1(share * 100)}%, need ≥ ${L.minAchievedRateShare * 100}%)`);
      check('publish errors', messages.publishErrors === 0, `publish errors: ${messages.publishErrors}${messages.publishErrors ? ' ' + JSON.stringify(g.errors) : ''}`);
    }
    if (inp.serverHasStats) {
      const m = messages;
      const bus = m.lostOnBus !== null;
      // Message level: every message msggen generated was accepted by the server or lost on its bus (answered 503),
      // and every accepted one reached a connection or nobody. Connection level: every per-connection delivery was
      // written or dropped (its stream closed or was cut as a slow consumer), and every written one was received.
      equation('generated = acked + publish errors', [['generated (msggen sent)', m.sent]], [['acked', m.acked], ['failed (publish errors)', g ? g.failed ?? m.publishErrors : null]], true);
      equation('generated = accepted', [['generated (msggen sent)', m.sent]], [['accepted (server messagesIn)', m.accepted], ...(bus ? [['lost on bus (bus.lostOnBus)', m.lostOnBus] as [string, number | null]] : [])], true);
      equation('acked = accepted', [['acked', m.acked]], [['accepted (server messagesIn)', m.accepted]], true);
      equation('accepted = delivered + to nobody', [['accepted', m.accepted]], [['delivered (reached ≥ 1 connection)', m.delivered], ['to nobody', m.toNobody]], false);
      equation('queued = written + dropped', [['per-connection deliveries queued', m.chunksQueued]], [['written (chunksOut)', m.chunksOut], [`dropped (closed, or cut as slow: ${fmtN(m.slowDrops)} streams)`, m.chunksDropped]], false);
      equation('written = received', [['chunks written by the server (chunksOut)', m.chunksOut]], [['chunks received by floodtest', m.chunksReceived]], true);
      // msggen's acks count the connections each message reached (queued deliveries). Through Redis, `delivered`
      // counts other servers once each (a lower bound), so the comparison only holds without a bus.
      if (!bus && m.deliveredAcked !== null) {
        equation('acks = queued', [['deliveries in the acks', m.deliveredAcked]], [[m.chunksQueued !== null ? 'queued' : 'chunks written', m.chunksQueued ?? m.chunksOut]], true);
      }
    } else {
      // A third-party server: no /stats, so msggen's acks and floodtest carry the accounting.
      equation('generated = acked + publish errors', [['generated (msggen sent)', messages.sent]], [['acked', messages.acked], ['failed (publish errors)', g ? g.failed ?? messages.publishErrors : null]], true);
      if (messages.deliveredAcked !== null) {
        equation('delivered = received', [['deliveries in the acks', messages.deliveredAcked]], [['received by floodtest', messages.chunksReceived]], true);
      } else {
        // Its publisher does not say how many connections a message reached (nchan answers text): not measured, not failed.
        accounting.push({ name: 'delivered = received', left: [['deliveries in the acks (not reported by the publisher)', null]], right: [['received by floodtest', messages.chunksReceived]], ok: false, notMeasured: true });
      }
    }
  }
  for (const i of inp.incidents) reasons.push(i);
  // Other work sharing the machine does not make the counts wrong, but it inflates latency and CPU: say so.
  const warnings: string[] = [];
  if (inp.cpu.other !== undefined && inp.cpu.other > L.maxOtherLoadPct) {
    warnings.push(`other work used ${r1(inp.cpu.other)}% of one core during the messages (limit ${L.maxOtherLoadPct}%): latency and CPU figures are inflated`);
  }
  const valid = reasons.length === 0;
  const line = (valid
    ? `VERDICT: valid — ${fmtN(f?.reached ?? null)} connections held, ${fmtN(messages.sent)} messages sent, counts match`
    : `VERDICT: INVALID — ${reasons.join('; ')}`) + (warnings.length ? ` (warning: ${warnings.join('; ')})` : '');

  return {
    conns: {
      asked: inp.conns,
      reached: f?.reached ?? null,
      atEnd: f?.connectedAtEnd ?? null,
      closed: f?.closed ?? null,
      connectErrors: f?.errors ?? {},
      rampSeconds: f?.rampSeconds ?? (p.rampStart !== undefined && p.plateau !== undefined ? r1((p.plateau - p.rampStart) / 1000) : null),
      connectsPerSec: f?.connectsPerSec ?? null,
    },
    durations: {
      totalSec: r1((p.end - p.start) / 1000),
      rampSec: p.rampStart !== undefined && p.plateau !== undefined ? r1((p.plateau - p.rampStart) / 1000) : null,
      messageSec: p.msgStart !== undefined && p.msgEnd !== undefined ? r1((p.msgEnd - p.msgStart) / 1000) : null,
    },
    memory,
    messages,
    latency: f?.latency ?? null,
    publishLatency: g?.publishLatency ?? null,
    cpu: inp.cpu,
    clientEventLoopDelayP99Ms: f?.eventLoopDelayP99Ms ?? null,
    checks,
    accounting,
    verdict: { valid, reasons, warnings, line },
    incidents: inp.incidents,
  };
}

const kb = (x: number | null): string => (x === null ? '–' : `${(x / 1024).toFixed(1)} MB`);
const v = (x: number | null | undefined, unit = ''): string => (x === null || x === undefined ? '–' : `${x.toLocaleString('en-US')}${unit}`);
const us = (x: number | undefined): string => (x === undefined ? '–' : x < 1000 ? `${Math.round(x)} µs` : `${(x / 1000).toFixed(2)} ms`);
const pct = (x: number | undefined): string => (x === undefined ? '–' : `${x.toFixed(1)}%`);

/** summary.md: the figures as Markdown tables, ending with the verdict line. */
export function formatSummaryMd(s: Summary, title: string, context: string[]): string {
  const m = s.memory;
  const g = s.messages;
  const out: string[] = [];
  out.push(`# ${title}`, '');
  for (const c of context) out.push(`- ${c}`);
  out.push('', '## Connections', '', '| | |', '|---|---|');
  out.push(`| asked / reached | ${v(s.conns.asked)} / ${v(s.conns.reached)} |`);
  out.push(`| open at end / closed | ${v(s.conns.atEnd)} / ${v(s.conns.closed)} |`);
  out.push(`| ramp | ${v(s.durations.rampSec, ' s')}${s.conns.connectsPerSec ? ` (${v(Math.round(s.conns.connectsPerSec))} connects/s)` : ''} |`);
  const errs = Object.entries(s.conns.connectErrors);
  if (errs.length) out.push(`| connect errors | ${errs.map(([k, n]) => `${k} ${n}`).join(', ')} |`);
  out.push('', '## Server memory', '', '| | RSS | PSS |', '|---|---|---|');
  out.push(`| idle (no connections) | ${kb(m.idleRssKB)} | ${kb(m.idlePssKB)} |`);
  out.push(`| plateau (${v(m.connsAtPlateau)} connections, before messages) | ${kb(m.plateauRssKB)} | ${kb(m.plateauPssKB)} |`);
  out.push(`| peak during messages | ${kb(m.peakRssKB)} | ${kb(m.peakPssKB)} |`);
  out.push(`| **KB per connection, total** | **${v(m.kbPerConnRss)}** | **${v(m.kbPerConnPss)}** |`);
  out.push(`| **KB per connection, marginal** (plateau − idle) | **${v(m.kbPerConnRssMarginal)}** | **${v(m.kbPerConnPssMarginal)}** |`);
  out.push(`| KB per connection at the message-phase peak | ${v(m.kbPerConnRssPeak)} | |`);
  if (m.kbPerConnUssMarginal !== null) {
    out.push(`| KB per connection, marginal private memory (USS ${kb(m.ussIdleKB)} → ${kb(m.ussPlateauKB)}) | ${v(m.kbPerConnUssMarginal)} | |`);
  }
  out.push(`| KB per connection, ramp slope | ${v(m.kbPerConnRssRampSlope)} | |`);
  out.push(`| growth over the message phase, floor to floor (lowest of the last third vs the first) | ${m.growthPct === null ? '–' : `${m.growthPct}%`} | |`);
  out.push(`| first → last sample of the message phase; least-squares trend | ${kb(m.msgStartRssKB)} → ${kb(m.msgEndRssKB)} (${m.growthEndToEndPct === null ? '–' : `${m.growthEndToEndPct}%`}); ${v(m.growthMBPerHour, ' MB/h')} | |`);
  out.push('', 'PSS splits shared pages (the ~37 MB Node binary) among every process mapping them, and floodtest, msggen and memlog are Node too: the server\'s PSS drops as they start, so marginal PSS reads low. USS (private memory) does not move with them.');
  out.push('', '## Messages', '', '| | |', '|---|---|');
  out.push(`| requested / achieved rate | ${v(g.requestedRate, ' msg/s')} / ${v(g.achievedRate, ' msg/s')} |`);
  out.push(`| sent / acked / publish errors | ${v(g.sent)} / ${v(g.acked)} / ${v(g.publishErrors)} |`);
  out.push(`| accepted by the server | ${v(g.accepted)} |`);
  out.push(`| delivered (reached ≥ 1 connection) / to nobody | ${v(g.delivered)} / ${v(g.toNobody)} |`);
  out.push(`| slow-consumer drops (connections cut) / chunks dropped | ${v(g.slowDrops)} / ${v(g.chunksDropped)} |`);
  out.push(`| chunks delivered by the server / received by floodtest | ${v(g.chunksOut)} / ${v(g.chunksReceived)} |`);
  if (s.accounting?.length) {
    // Every term of every delivery equation, so a difference is visible where it arises.
    out.push('', '## Delivery accounting', '', '| equation | left | right | |', '|---|---|---|---|');
    const side = (t: [string, number | null][]): string => t.map(([k, x]) => `${k} ${v(x)}`).join(' + ');
    for (const a of s.accounting) out.push(`| ${a.name} | ${side(a.left)} | ${side(a.right)} | ${a.notMeasured ? 'not measured' : a.ok ? 'ok' : '**FAIL**'} |`);
  }
  const l = s.latency;
  out.push('', '## Delivery latency (msggen scheduled send → floodtest arrival)', '', '| count | p50 | p90 | p99 | p99.9 | max |', '|---|---|---|---|---|---|');
  out.push(l ? `| ${v(l.count)} | ${us(l.p50)} | ${us(l.p90)} | ${us(l.p99)} | ${us(l.p999)} | ${us(l.max)} |` : '| – | – | – | – | – | – |');
  if (s.publishLatency) {
    const q = s.publishLatency;
    out.push('', `Publish latency (msggen, scheduled send → ack): p50 ${us(q.p50)}, p99 ${us(q.p99)}, p99.9 ${us(q.p999)}, max ${us(q.max)}.`);
  }
  const c = s.cpu;
  out.push('', '## CPU during the message phase (% of one core)', '', '| server | floodtest | msggen | memlog | c1m | machine busy | other (kernel, other work) |', '|---|---|---|---|---|---|---|');
  out.push(`| ${pct(c.server)} | ${pct(c.floodtest)} | ${pct(c.msggen)} | ${pct(c.memlog)} | ${pct(c.c1m)} | ${pct(c.machineBusy)} | ${pct(c.other)} |`);
  if (s.clientEventLoopDelayP99Ms !== null) out.push('', `floodtest event-loop delay p99: ${s.clientEventLoopDelayP99Ms.toFixed(1)} ms.`);
  out.push('', '## Checks', '');
  for (const ch of s.checks) out.push(`- ${ch.ok ? 'ok' : '**FAIL**'}: ${ch.detail}`);
  for (const i of s.incidents) out.push(`- **incident**: ${i}`);
  for (const w of s.verdict.warnings ?? []) out.push(`- **warning**: ${w}`);
  out.push('', `**${s.verdict.line}**`, '');
  return out.join('\n');
}
