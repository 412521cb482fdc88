// How bench talks to each tool: the command line that starts it, and the shape of what it writes.
// This is the only module that knows the tools' flags and record fields, so a change in a tool is a change here.
import { fileURLToPath } from 'node:url';
import type { Latency } from './summary.js';

/** The compiled tree (dist/) this module runs from; the tools' CLIs are its siblings. */
export const DIST_DIR = fileURLToPath(new URL('../', import.meta.url));
/** The repository root (parent of dist/). */
export const REPO_DIR = fileURLToPath(new URL('../../', import.meta.url));

import { SERVER_ENV, SERVER_NODE_FLAGS } from '../server/node-flags.js';

export { SERVER_NODE_FLAGS };

/** Environment of the reference server child: what its shebang sets (bench starts it as `node <flags> cli.js`). */
export function serverEnv(): NodeJS.ProcessEnv {
  return { ...process.env, ...SERVER_ENV };
}

const cli = (tool: string): string => fileURLToPath(new URL(`../${tool}/cli.js`, import.meta.url));

/** Arguments (after `node`) that start the reference server on free ports. */
export function serverArgs(host: string, extra: string[] = []): string[] {
  return [...SERVER_NODE_FLAGS, cli('server'), '--port', '0', '--control-port', '0', '--host', host, ...extra];
}

/** Parses the server's ready line: `listening port=<p> control=<c> ...`. */
export function parseReadyLine(line: string): { port: number; controlPort: number; transport?: string; writer?: string } | undefined {
  const p = line.match(/\bport=(\d+)/);
  const c = line.match(/\bcontrol=(\d+)/);
  const t = line.match(/\btransport=(\w+)/);
  const w = line.match(/\bwriter=(\w+)/);
  if (!p || !c) return undefined;
  return { port: Number(p[1]), controlPort: Number(c[1]), ...(t ? { transport: t[1]! } : {}), ...(w ? { writer: w[1]! } : {}) };
}

/** memlog recorder on a pid, 1 s samples, into `out`. */
export function memlogArgs(pid: number, ports: number[], out: string, intervalMs: number): string[] {
  return [cli('memlog'), 'record', '--pid', String(pid), '--port', ports.join(','), '--interval', `${intervalMs}ms`, '-o', out, '--quiet'];
}

/** floodtest on a URL file, NDJSON samples on stdout. */
export function floodtestArgs(urlsFile: string, intervalMs: number, extra: string[] = []): string[] {
  return [cli('floodtest'), urlsFile, String(intervalMs), '--json', ...extra];
}

/** msggen against a control API, NDJSON samples and summary on stdout. */
export function msggenArgs(o: { target: string; publishTemplate?: string; procs: number; rate: number; max: number; durationMs: number; token?: string; extra?: string[] }): string[] {
  const a = [cli('msggen'), '--target', o.target, '--procs', String(o.procs), '--rate', String(o.rate), '--max', String(o.max), '--duration', `${Math.round(o.durationMs)}ms`, '--json'];
  if (o.publishTemplate !== undefined) a.push('--publish-template', o.publishTemplate);
  if (o.token) a.push('--token', o.token);
  return [...a, ...(o.extra ?? [])];
}

/** Path of a tool's CLI, to check that it has been built. */
export function toolCli(tool: 'server' | 'floodtest' | 'msggen' | 'memlog'): string {
  return cli(tool);
}

// ---- Records the tools write, normalized to what bench needs. ----

const n = (x: unknown): number | undefined => (typeof x === 'number' && Number.isFinite(x) ? x : undefined);
const obj = (x: unknown): Record<string, unknown> | undefined => (x && typeof x === 'object' && !Array.isArray(x) ? (x as Record<string, unknown>) : undefined);

/** A latency object from any tool (µs fields p50/p90/p99/p999/max/count). */
export function toLatency(x: unknown): Latency | undefined {
  const o = obj(x);
  if (!o) return undefined;
  const count = n(o.count) ?? 0;
  const p50 = n(o.p50);
  const p99 = n(o.p99);
  if (p50 === undefined || p99 === undefined) return undefined;
  return { count, p50, p90: n(o.p90) ?? p99, p99, p999: n(o.p999) ?? n(o['p99.9']) ?? p99, max: n(o.max) ?? p99, mean: n(o.mean) };
}

/** One floodtest NDJSON record, normalized. */
export interface FloodRecord {
  type: 'sample' | 'summary' | 'other';
  connected: number;
  closed: number;
  chunks: number;
  errors: Record<string, number>;
  inFlight: number;
  /** Cumulative delivery latency since floodtest started. */
  latency?: Latency;
  /** Delivery latency of this sample's interval only (floodtest's `intervalLatency`; absent from older runs and summaries). */
  intervalLatency?: Latency;
  eventLoopDelayP99Ms?: number;
  rssKB?: number;
  raw: Record<string, unknown>;
}

function errorsOf(x: unknown): Record<string, number> {
  const o = obj(x);
  const out: Record<string, number> = {};
  if (!o) return out;
  for (const [k, v] of Object.entries(o)) if (typeof v === 'number') out[k] = v;
  return out;
}

/** One NDJSON line as an object; undefined for anything else (bad JSON, an array, a number). */
function parseObject(line: string): Record<string, unknown> | undefined {
  try {
    return obj(JSON.parse(line));
  } catch {
    return undefined;
  }
}

/** Parses a floodtest `--json` line (a sample or the final summary). */
export function parseFloodLine(line: string): FloodRecord | undefined {
  const raw = parseObject(line);
  if (!raw) return undefined;
  const type = raw.type === 'summary' ? 'summary' : raw.type === 'sample' || raw.type === undefined ? 'sample' : 'other';
  const eld = obj(raw.eventLoopDelayMs) ?? obj(raw.eventLoopDelay);
  const eldP99 = n(raw.eventLoopDelayP99Ms) ?? (eld ? n(eld.p99) : undefined);
  // floodtest writes bytes: `rss` in samples, `rssPeak` in the summary.
  const rssBytes = n(raw.rss) ?? n(raw.rssPeak);
  const rss = rssBytes !== undefined ? rssBytes / 1024 : undefined;
  return {
    type,
    connected: n(raw.connected) ?? n(raw.open) ?? 0,
    closed: n(raw.closed) ?? 0,
    chunks: n(raw.chunks) ?? 0,
    errors: errorsOf(raw.errors),
    inFlight: n(raw.inflight) ?? n(raw.inFlight) ?? 0,
    latency: toLatency(raw.latency),
    intervalLatency: toLatency(raw.intervalLatency),
    eventLoopDelayP99Ms: eldP99,
    rssKB: rss,
    raw,
  };
}

/** One msggen NDJSON record. */
export interface MsggenRecord {
  type: 'sample' | 'summary' | 'other';
  raw: Record<string, unknown>;
  sent: number;
  acked: number;
  delivered: number;
  errors: Record<string, number>;
  rate: number;
  latency?: Latency;
}

/** Parses a msggen `--json` line. Samples are per interval; the summary has the totals. */
export function parseMsggenLine(line: string): MsggenRecord | undefined {
  const raw = parseObject(line);
  if (!raw) return undefined;
  return {
    type: raw.type === 'summary' ? 'summary' : raw.type === 'sample' ? 'sample' : 'other',
    raw,
    sent: n(raw.sent) ?? 0,
    acked: n(raw.acked) ?? 0,
    delivered: n(raw.delivered) ?? 0,
    errors: errorsOf(raw.errors),
    rate: n(raw.rate) ?? n(raw.achievedRate) ?? 0,
    latency: toLatency(raw.latency),
  };
}
