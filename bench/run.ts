// The bench orchestrator: one reproducible run of server + memlog + floodtest + msggen, and its run folder.
//
// Order of a run (each step bounded in time):
//   preflight → server (child, wait for its ready line) → /stats poller + memlog on the server pid → idle samples →
//   floodtest ramps to N → plateau (all connected, or stable short of N) → settle → msggen for the duration →
//   drain (server chunks out = floodtest chunks) → stop floodtest, memlog, server (by PID) → write the run folder.
// Whatever happens (Ctrl-C, a child dying, a timeout), every child started here is stopped, in the same order, and
// the run folder is still written with what was collected; the problem becomes an incident that makes it invalid.
import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { parseLog } from '../memlog/row.js';
import { startChild, stopChild, type Child } from './children.js';
import { CpuMeter, readTreeUssKB } from './cpu.js';
import { machineCpu, machineInfo, type MachineInfo } from './machine.js';
import { checkPreflight, formatReport, type PreflightReport, type ProcSnapshot } from './preflight.js';
import { readSnapshot } from './procfs.js';
import { computeSummary, formatSummaryMd, type CpuFigures, type FloodResult, type MemSample, type MsggenResult, type Phases, type ServerStats, type Summary } from './summary.js';
import { floodtestArgs, memlogArgs, msggenArgs, parseFloodLine, parseMsggenLine, parseReadyLine, REPO_DIR, SERVER_NODE_FLAGS, serverArgs, serverEnv, toolCli, type FloodRecord, type MsggenRecord } from './tools.js';
import { writeRunCharts } from './charts.js';
import { defaultClientProcs } from './topology.js';

/** Options of one run (the CLI fills them from flags and presets). */
export interface BenchOptions {
  conns: number;
  /** New connections per second during the ramp. */
  connectRate: number;
  /** msggen workers and per-worker rate: total rate = procs × rate. */
  procs: number;
  rate: number;
  /** Message phase length. */
  durationMs: number;
  /** Run folder (created). */
  out: string;
  preset?: string;
  /** Destination addresses the connections are spread over (loopback 127.0.0.x). */
  destHosts: string[];
  /** Longest the ramp may take before the run goes on short of N. Default: 3 × N / connectRate + 30 s. */
  rampTimeoutMs?: number;
  /** Time at the plateau before messages start, so the memory samples settle. */
  settleMs: number;
  /** Time before the ramp, for the idle memory samples. */
  idleMs: number;
  /** Longest wait after the last message for deliveries to finish. */
  drainTimeoutMs: number;
  /** memlog sample interval. */
  memIntervalMs: number;
  /** Third-party server: shell command to start it (stopped with SIGTERM at the end). */
  serverCmd?: string;
  /** Third-party server already running (never stopped by bench). */
  serverPid?: number;
  /** Stream URL per id: `{id}`, `{host}`, `{port}` are replaced. Default: the reference server's /test/{id}. */
  urlTemplate?: string;
  /** Publish endpoint origin for msggen (the control API); default the reference server's control port. */
  publishTarget?: string;
  /** Third-party publisher URL with `{id}` (msggen --publish-template), instead of publishTarget's POST /send/<id>. */
  publishTemplate?: string;
  /** Bearer token for the control API. */
  token?: string;
  /** Extra flags for the reference server CLI (e.g. `--workers 2` once it has them). */
  serverFlags: string[];
  /** Extra flags passed to floodtest and msggen. */
  floodtestFlags: string[];
  msggenFlags: string[];
  /** Stop before starting anything when preflight says N cannot be reached. */
  preflightStops: boolean;
  /** The command line, for the manifest. */
  argv: string[];
  /** Progress lines (one per second) and notices. */
  log: (line: string) => void;
  /** Where /proc is (tests may point preflight elsewhere). */
  procRoot?: string;
}

/** What a finished run returns. */
export interface BenchResult {
  out: string;
  summary: Summary;
  files: string[];
}

/** A running bench. */
export interface BenchHandle {
  done: Promise<BenchResult>;
  /** Stops the run early (Ctrl-C): children are stopped in order and the run folder is still written. */
  stop(reason?: string): Promise<BenchResult>;
}

type Phase = 'preflight' | 'server' | 'idle' | 'ramp' | 'plateau' | 'messages' | 'drain' | 'stopping' | 'report' | 'done';

class Aborted extends Error {}

/** Default URL template for the reference server. */
export const REFERENCE_URL_TEMPLATE = 'http://{host}:{port}/test/{id}';

/** Expands a URL template for ids 1..n, spreading ids round-robin over the hosts and ports. */
export function buildUrls(template: string, n: number, hosts: readonly string[], ports: readonly number[]): string {
  const out: string[] = [];
  for (let id = 1; id <= n; id++) {
    const host = hosts[(id - 1) % hosts.length]!;
    const port = ports[Math.floor((id - 1) / hosts.length) % ports.length]!;
    out.push(template.replaceAll('{id}', String(id)).replaceAll('{host}', host).replaceAll('{port}', String(port)));
  }
  return out.join('\n') + '\n';
}

/** Starts a run; see the module comment for its order. */
export function startBench(opts: BenchOptions): BenchHandle {
  let stopReason: string | undefined;
  let abortResolve!: () => void;
  const abortP = new Promise<void>((r) => (abortResolve = r));
  const done = runBench(opts, () => stopReason, abortP);
  return {
    done,
    stop(reason = 'stopped by the user') {
      stopReason ??= reason;
      abortResolve();
      return done;
    },
  };
}

async function runBench(o: BenchOptions, stopReason: () => string | undefined, abortP: Promise<void>): Promise<BenchResult> {
  const out = resolve(o.out);
  mkdirSync(out, { recursive: true });
  const file = (name: string): string => join(out, name);
  const incidents: string[] = [];
  const phases: Phases = { start: Date.now(), end: 0 };
  let phase: Phase = 'preflight';
  const msgRate = o.procs * o.rate;
  const isReference = o.serverCmd === undefined && o.serverPid === undefined;

  /** Waits `ms`, or less when the run is being stopped (then throws Aborted). */
  const pause = async (ms: number): Promise<void> => {
    let t: NodeJS.Timeout | undefined;
    const r = await Promise.race([new Promise<'t'>((res) => (t = setTimeout(res, ms, 't'))), abortP.then(() => 'a' as const)]);
    clearTimeout(t);
    if (r === 'a') throw new Aborted(stopReason() ?? 'stopped');
  };
  const checkAbort = (): void => {
    const r = stopReason();
    if (r) throw new Aborted(r);
  };

  // ---- Preflight ----
  const snapshot: ProcSnapshot = await readSnapshot({ procRoot: o.procRoot, serverPid: o.serverPid });
  const clientProcs = defaultClientProcs(o.conns);
  const serverProcs = serverProcsOf(o.serverFlags, o.conns);
  const pre: PreflightReport = checkPreflight(snapshot, {
    conns: o.conns, serverProcs, clientProcs, destHosts: o.destHosts, destPorts: [8000], connectRate: o.connectRate,
  });
  writeFileSync(file('preflight.txt'), formatReport(pre));
  if (!pre.allOk) {
    for (const l of formatReport(pre).trimEnd().split('\n')) o.log(`preflight: ${l}`);
  } else {
    o.log(`preflight: ok, this machine reaches ${pre.reachable.toLocaleString('en-US')} connections as configured`);
  }
  if (!pre.canReach) {
    if (o.preflightStops) throw new Error(`preflight: this machine reaches ${pre.reachable} connections as configured, not ${o.conns} (fix as above, or --force to run anyway; report in ${file('preflight.txt')})`);
    incidents.push(`preflight: this machine reaches only ${pre.reachable} of ${o.conns} connections as configured`);
  }
  const machine: MachineInfo = machineInfo(REPO_DIR);
  const loadBefore = machine.loadavg;
  if (isReference) {
    for (const tool of ['server', 'floodtest', 'msggen', 'memlog'] as const) {
      if (!existsSync(toolCli(tool))) throw new Error(`${toolCli(tool)} is missing: run npm run build first`);
    }
    // A flag the server does not know would only show up as "server exited early"; say what is missing instead.
    const help = serverHelp();
    for (const f of o.serverFlags.filter((x) => x.startsWith('--'))) {
      const name = f.split('=')[0]!;
      if (help !== undefined && !help.includes(name)) {
        throw new Error(`comet-server has no ${name} flag in this build${name === '--workers' ? ' (server workers come with the scale-out issue; one server process holds ~19,900 connections here)' : ''}`);
      }
    }
  }

  // ---- State shared by the phases ----
  let server: Child | undefined;
  let memlog: Child | undefined;
  let flood: Child | undefined;
  let msggen: Child | undefined;
  let serverPid = o.serverPid;
  let port: number | undefined;
  let controlPort: number | undefined;
  let serverTransport: string | undefined;
  let serverWriter: string | undefined;
  let lastStats: ServerStats | undefined;
  let statsBefore: ServerStats | undefined;
  let statsAfter: ServerStats | undefined;
  const floodSamples: FloodRecord[] = [];
  let floodSummary: FloodRecord | undefined;
  let lastFlood: FloodRecord | undefined;
  const msggenSamples: MsggenRecord[] = [];
  let msggenSummary: MsggenRecord | undefined;
  const meters = new Map<string, CpuMeter>();
  let machineAtMsgStart: ReturnType<typeof machineCpu>;
  let machineAtMsgEnd: ReturnType<typeof machineCpu>;
  let c1mAtMsgStart: NodeJS.CpuUsage | undefined;
  let c1mAtMsgEnd: NodeJS.CpuUsage | undefined;
  let statsTimer: NodeJS.Timeout | undefined;
  const uss: { idle?: number; plateau?: number; msgEnd?: number } = {};
  let progressTimer: NodeJS.Timeout | undefined;
  const statsFile = file('stats.ndjson');
  writeFileSync(statsFile, '');

  const fetchStats = async (): Promise<ServerStats | undefined> => {
    if (controlPort === undefined || !isReference) return undefined;
    try {
      const res = await fetch(`http://127.0.0.1:${controlPort}/stats`, {
        headers: o.token ? { authorization: `Bearer ${o.token}` } : {},
        signal: AbortSignal.timeout(2000),
      });
      if (!res.ok) return undefined;
      return (await res.json()) as ServerStats;
    } catch {
      return undefined;
    }
  };
  const statNum = (k: string): number | undefined => {
    const v = lastStats?.[k];
    return typeof v === 'number' ? v : undefined;
  };

  const progress = (): void => {
    for (const m of meters.values()) m.sample();
    const sm = meters.get('server');
    const rss = sm?.latest ? `${(sm.latest.rssKB / 1024).toFixed(1)} MB` : '?';
    const conns = lastFlood ? lastFlood.connected : 0;
    const lastMsg = msggenSamples[msggenSamples.length - 1];
    const rate = phase === 'messages' && lastMsg ? Math.round(lastMsg.rate) : 0;
    const el = ((Date.now() - phases.start) / 1000).toFixed(0);
    o.log(
      `[${phase}] t=${el}s conns ${conns.toLocaleString('en-US')}/${o.conns.toLocaleString('en-US')}  msgs/s ${rate}  ` +
        `server RSS ${rss} CPU ${sm ? sm.pct.toFixed(0) : '?'}%  chunks ${lastFlood ? lastFlood.chunks.toLocaleString('en-US') : 0}`,
    );
  };

  const waitChildExit = (c: Child): Promise<never> =>
    c.exited.then((code) => {
      throw new Error(`${c.name} exited early (${code}): ${c.stderrTail().slice(-3).join(' | ')}`);
    });
  /** Races a promise against the run being stopped and against the given children dying. */
  const guard = <T>(p: Promise<T>, children: (Child | undefined)[]): Promise<T> =>
    Promise.race([
      p,
      abortP.then(() => {
        throw new Aborted(stopReason() ?? 'stopped');
      }),
      ...children.filter((c): c is Child => c !== undefined).map(waitChildExit),
    ]);

  try {
    // ---- Server ----
    phase = 'server';
    const host = o.destHosts.length === 1 ? o.destHosts[0]! : '0.0.0.0';
    if (isReference) {
      let readyResolve!: (v: { port: number; controlPort: number; transport?: string; writer?: string }) => void;
      const ready = new Promise<{ port: number; controlPort: number; transport?: string; writer?: string }>((r) => (readyResolve = r));
      server = await startChild('server', process.execPath, {
        args: serverArgs(host, o.serverFlags),
        env: serverEnv(),
        stderrFile: file('server.log'),
        onStderrLine: (l) => {
          const r = parseReadyLine(l);
          if (r) readyResolve(r);
        },
      });
      serverPid = server.pid;
      const r = await guard(Promise.race([ready, timeoutReject(15_000, 'the server ready line')]), [server]);
      port = r.port;
      controlPort = r.controlPort;
      serverTransport = r.transport;
      serverWriter = r.writer;
    } else if (o.serverCmd !== undefined) {
      server = await startChild('server', o.serverCmd, { args: [], shell: true, stderrFile: file('server.log'), stdoutFile: file('server.out') });
      serverPid = server.pid;
    }
    const firstUrl = o.urlTemplate ?? REFERENCE_URL_TEMPLATE;
    if (!isReference) {
      const u = new URL(buildUrls(firstUrl, 1, o.destHosts, [0]).trim());
      port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
      await guard(waitForPort(u.hostname, port, 15_000), [server]);
    }
    phases.serverReady = Date.now();
    meters.set('server', new CpuMeter('server', serverPid!));
    o.log(`server: pid ${serverPid}, streaming port ${port}${controlPort !== undefined ? `, control port ${controlPort}` : ''}`);

    // ---- /stats poller and memlog ----
    if (isReference) {
      const poll = async (): Promise<void> => {
        const s = await fetchStats();
        if (s) {
          lastStats = s;
          appendFileSync(statsFile, JSON.stringify({ t: Date.now(), phase, ...s }) + '\n');
        }
      };
      await poll();
      statsTimer = setInterval(() => void poll(), 1000);
    }
    memlog = await startChild('memlog', process.execPath, { args: memlogArgs(serverPid!, [port!], file('mem.tsv'), o.memIntervalMs), stderrFile: file('memlog.log') });
    meters.set('memlog', new CpuMeter('memlog', memlog.pid));
    progressTimer = setInterval(progress, 1000);
    progressTimer.unref();

    // ---- Idle ----
    phase = 'idle';
    await guard(waitUntil(() => memRows(file('mem.tsv')) >= 2, Math.max(10_000, o.idleMs + 3 * o.memIntervalMs), 'two idle memlog samples', abortP), [server, memlog]);
    await guard(pause(o.idleMs), [server, memlog]);

    uss.idle = readTreeUssKB(serverPid!);

    // ---- Ramp ----
    phase = 'ramp';
    const urlsFile = file('urls.txt');
    writeFileSync(urlsFile, buildUrls(firstUrl, o.conns, o.destHosts, [port!]));
    const intervalMs = Math.round((1000 / o.connectRate) * 1000) / 1000;
    let plateauResolve!: () => void;
    const plateauP = new Promise<void>((r) => (plateauResolve = r));
    let stableCount = 0;
    let prevConnected = -1;
    phases.rampStart = Date.now();
    flood = await startChild('floodtest', process.execPath, {
      args: floodtestArgs(urlsFile, intervalMs, o.floodtestFlags),
      stdoutFile: file('flood.ndjson'),
      stderrFile: file('floodtest.log'),
      onStdoutLine: (line) => {
        const r = parseFloodLine(line);
        if (!r) return;
        if (r.type === 'summary') {
          floodSummary = r;
          return;
        }
        if (r.type !== 'sample') return;
        floodSamples.push(r);
        lastFlood = r;
        if (phase !== 'ramp') return;
        const serverConns = statNum('connections');
        if (r.connected >= o.conns && (serverConns === undefined || serverConns >= o.conns)) plateauResolve();
        // Short of N: the count has not moved for 5 samples and nothing is connecting.
        stableCount = r.connected === prevConnected && r.inFlight === 0 ? stableCount + 1 : 0;
        prevConnected = r.connected;
        if (stableCount >= 5 && r.connected > 0) plateauResolve();
      },
    });
    meters.set('floodtest', new CpuMeter('floodtest', flood.pid));
    const rampTimeout = o.rampTimeoutMs ?? Math.round((3 * o.conns * 1000) / o.connectRate + 30_000);
    const rampResult = await guard(Promise.race([plateauP.then(() => 'ok' as const), delay(rampTimeout, 'timeout' as const)]), [server, memlog, flood]);
    phases.plateau = Date.now();
    if (rampResult === 'timeout') incidents.push(`ramp timed out after ${Math.round(rampTimeout / 1000)} s at ${lastFlood?.connected ?? 0} connections`);
    phase = 'plateau';
    o.log(`plateau: ${lastFlood?.connected ?? 0} connections after ${((phases.plateau - phases.rampStart) / 1000).toFixed(1)} s; settling ${o.settleMs / 1000} s`);
    await guard(pause(o.settleMs), [server, memlog, flood]);

    // ---- Messages ----
    checkAbort();
    uss.plateau = readTreeUssKB(serverPid!);
    statsBefore = await fetchStats();
    for (const m of meters.values()) {
      m.sample();
      m.mark('msgStart');
    }
    machineAtMsgStart = machineCpu();
    c1mAtMsgStart = process.cpuUsage();
    phase = 'messages';
    phases.msgStart = Date.now();
    // With a publish template msggen POSTs to the template's origin; --target is then only its origin, for the record.
    const target = o.publishTemplate !== undefined ? new URL(o.publishTemplate.replaceAll('{id}', '1')).origin : (o.publishTarget ?? `http://127.0.0.1:${controlPort}`);
    msggen = await startChild('msggen', process.execPath, {
      args: msggenArgs({ target, publishTemplate: o.publishTemplate, procs: o.procs, rate: o.rate, max: o.conns, durationMs: o.durationMs, token: o.token, extra: o.msggenFlags }),
      stdoutFile: file('msggen.ndjson'),
      stderrFile: file('msggen.log'),
      onStdoutLine: (line) => {
        const r = parseMsggenLine(line);
        if (!r) return;
        if (r.type === 'summary') msggenSummary = r;
        else if (r.type === 'sample') msggenSamples.push(r);
      },
    });
    const msggenMeter = new CpuMeter('msggen', msggen.pid);
    msggenMeter.markStart('msgStart');
    msggenMeter.sample();
    meters.set('msggen', msggenMeter);
    const msgExit = await guard(Promise.race([msggen.exited, delay(o.durationMs + 30_000, 'timeout' as const)]), [server, memlog, flood]);
    if (msgExit === 'timeout') incidents.push('msggen did not finish within its duration + 30 s');
    else if (msgExit !== 0) incidents.push(`msggen exited with ${msgExit}: ${msggen.stderrTail().slice(-2).join(' | ')}`);
    phases.msgEnd = Date.now();
    for (const m of meters.values()) {
      m.sample();
      m.mark('msgEnd');
    }
    machineAtMsgEnd = machineCpu();
    c1mAtMsgEnd = process.cpuUsage(c1mAtMsgStart);
    uss.msgEnd = readTreeUssKB(serverPid!);

    // ---- Drain: every chunk the server wrote has reached floodtest ----
    phase = 'drain';
    if (isReference) {
      const drained = await guard(
        waitUntil(() => {
          const out = statNum('chunksOut');
          return out !== undefined && lastFlood !== undefined && lastFlood.chunks >= out && (statNum('chunksQueued') ?? out) <= out + (statNum('chunksDropped') ?? 0);
        }, o.drainTimeoutMs, 'deliveries to drain', abortP).then(() => true, (e: unknown) => (e instanceof Aborted ? Promise.reject(e) : false)),
        [server, flood],
      );
      if (!drained) o.log(`drain: not all chunks seen by floodtest after ${o.drainTimeoutMs / 1000} s`);
      statsAfter = await fetchStats();
    } else {
      await guard(pause(Math.min(3000, o.drainTimeoutMs)), [server, flood]);
    }
    phases.drained = Date.now();
  } catch (err) {
    if (err instanceof Aborted) incidents.push(`${err.message} during the ${phase} phase`);
    else incidents.push(`${phase} phase failed: ${err instanceof Error ? err.message : String(err)}`);
    o.log(`bench: ${incidents[incidents.length - 1]}; stopping everything`);
  }

  // ---- Stop everything, in order, by PID ----
  phase = 'stopping';
  if (msggen && !msggen.hasExited()) await stopChild(msggen, 'SIGINT', 5000);
  if (flood) {
    const r = await stopChild(flood, 'SIGINT', 8000);
    if (r.escalated.length > 1) incidents.push(`floodtest needed ${r.escalated.join(' → ')} to stop`);
  }
  if (!statsAfter && isReference) statsAfter = await fetchStats();
  clearInterval(statsTimer);
  if (memlog) await stopChild(memlog, 'SIGINT', 5000);
  if (server) {
    const r = await stopChild(server, 'SIGTERM', 8000);
    if (r.escalated.length > 1) incidents.push(`the server needed ${r.escalated.join(' → ')} to stop`);
  }
  clearInterval(progressTimer);
  phases.end = Date.now();

  // ---- Report ----
  phase = 'report';
  const mem: MemSample[] = readMem(file('mem.tsv'), incidents);
  const flood2 = floodResult(o.conns, floodSamples, floodSummary, phases);
  const gen = msggenResult(msgRate, msggenSummary, msggenSamples);
  const cpu: CpuFigures = {};
  for (const [name, m] of meters) {
    const v = m.between('msgStart', 'msgEnd');
    if (v !== undefined) (cpu as Record<string, number>)[name] = Math.round(v * 10) / 10;
  }
  if (machineAtMsgStart && machineAtMsgEnd && phases.msgStart !== undefined && phases.msgEnd !== undefined) {
    const sec = (phases.msgEnd - phases.msgStart) / 1000;
    cpu.machineBusy = Math.round(((100 * (machineAtMsgEnd.busySec - machineAtMsgStart.busySec)) / sec) * 10) / 10;
    if (c1mAtMsgEnd) cpu.c1m = Math.round(((c1mAtMsgEnd.user + c1mAtMsgEnd.system) / 1e4 / sec) * 10) / 10;
    const ours = (cpu.server ?? 0) + (cpu.floodtest ?? 0) + (cpu.msggen ?? 0) + (cpu.memlog ?? 0) + (cpu.c1m ?? 0);
    cpu.other = Math.max(0, Math.round((cpu.machineBusy - ours) * 10) / 10);
  }
  const summary = computeSummary({
    conns: o.conns,
    msgRate,
    phases,
    mem,
    flood: flood2,
    msggen: gen,
    statsBefore,
    statsAfter,
    cpu,
    serverHasStats: isReference,
    uss,
    incidents,
  });
  const machineEnd = machineInfo(REPO_DIR);
  const manifest = {
    tool: 'c1m bench',
    argv: o.argv,
    preset: o.preset ?? null,
    options: { ...o, log: undefined, argv: undefined },
    derived: { msgRate, clientProcs, serverProcs, serverPid, pids: { server: server?.pid ?? serverPid ?? null, memlog: memlog?.pid ?? null, floodtest: flood?.pid ?? null, msggen: msggen?.pid ?? null }, port, controlPort, urlTemplate: o.urlTemplate ?? REFERENCE_URL_TEMPLATE, serverNodeFlags: isReference ? [...SERVER_NODE_FLAGS] : null, serverTransport: serverTransport ?? null, serverWriter: serverWriter ?? null },
    startedAt: new Date(phases.start).toISOString(),
    endedAt: new Date(phases.end).toISOString(),
    phases: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, v === undefined ? null : new Date(v).toISOString()])),
    machine: { ...machine, loadavgStart: loadBefore, loadavgEnd: machineEnd.loadavg },
    preflight: { snapshot: jsonSafe(snapshot), reachable: pre.reachable, canReach: pre.canReach, checks: pre.checks },
  };
  writeFileSync(file('manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  writeFileSync(file('summary.json'), JSON.stringify(summary, null, 2) + '\n');
  const title = `c1m bench: ${o.conns.toLocaleString('en-US')} connections, ${msgRate.toLocaleString('en-US')} msg/s for ${Math.round(o.durationMs / 1000)} s${o.preset ? ` (preset ${o.preset})` : ''}`;
  const context = [
    `run ${new Date(phases.start).toISOString()} → ${new Date(phases.end).toISOString()}, git ${machine.git.commit?.slice(0, 10) ?? '?'}${machine.git.dirty ? ' (dirty)' : ''}`,
    `${machine.cpuModel}, ${machine.cpus} cores, ${Math.round(machine.memTotalMB / 1024)} GiB; Linux ${machine.kernel}; Node ${machine.node}`,
    isReference
      ? `server: reference comet-server, node ${SERVER_NODE_FLAGS.join(' ')}${o.serverFlags.length ? ' ' + o.serverFlags.join(' ') : ''}${serverTransport ? `, transport ${serverTransport}` : ''}${serverWriter ? `, writer ${serverWriter}` : ''}`
      : `server: ${o.serverCmd ?? `pid ${o.serverPid}`}`,
    `load average before / after: ${loadBefore.join(' ')} / ${machineEnd.loadavg.join(' ')}`,
    `msggen: ${o.procs} workers × ${o.rate} msg/s; floodtest: ${o.connectRate} connects/s over ${o.destHosts.length} address(es)`,
  ];
  writeFileSync(file('summary.md'), formatSummaryMd(summary, title, context));
  const files = ['manifest.json', 'summary.json', 'summary.md', 'mem.tsv', 'flood.ndjson', 'msggen.ndjson', 'stats.ndjson'];
  try {
    files.push(...(await writeRunCharts(out, floodSamples.map((r) => r.raw), msggenSamples.map((r) => r.raw), phases, title)));
  } catch (err) {
    o.log(`charts: ${err instanceof Error ? err.message : String(err)}`);
  }
  phase = 'done';
  return { out, summary, files: files.filter((f) => existsSync(file(f))) };
}

/** Server processes a run will have: `--workers N` (or `auto`: the cores, or enough for the open-files limit). */
export function serverProcsOf(serverFlags: readonly string[], conns: number): number {
  const i = serverFlags.findIndex((f) => f === '--workers' || f.startsWith('--workers='));
  if (i < 0) return 1;
  const v = serverFlags[i]!.includes('=') ? serverFlags[i]!.split('=')[1] : serverFlags[i + 1];
  if (v === 'auto') return Math.max(cpus().length, defaultClientProcs(conns));
  const n = Number(v);
  return Number.isInteger(n) && n >= 1 ? n : 1;
}

function serverHelp(): string | undefined {
  try {
    return execFileSync(process.execPath, [toolCli('server'), '--help'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch {
    return undefined;
  }
}

function jsonSafe(x: unknown): unknown {
  return JSON.parse(JSON.stringify(x, (_k, v: unknown) => (v === Infinity ? 'unlimited' : v)));
}

function delay<T>(ms: number, v: T): Promise<T> {
  return new Promise((r) => setTimeout(r, ms, v).unref());
}
function timeoutReject(ms: number, what: string): Promise<never> {
  return new Promise((_, rej) => setTimeout(() => rej(new Error(`timed out after ${ms / 1000} s waiting for ${what}`)), ms).unref());
}

/** Polls `cond` every 100 ms until true; rejects after `ms`. */
async function waitUntil(cond: () => boolean, ms: number, what: string, abortP: Promise<void>): Promise<void> {
  const deadline = Date.now() + ms;
  let aborted = false;
  void abortP.then(() => (aborted = true));
  while (!cond()) {
    if (aborted) throw new Aborted('stopped');
    if (Date.now() > deadline) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await delay(100, undefined);
  }
}

async function waitForPort(host: string, port: number, ms: number): Promise<void> {
  const { connect } = await import('node:net');
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const s = connect({ host, port });
      s.once('connect', () => {
        s.destroy();
        res(true);
      });
      s.once('error', () => res(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${host}:${port} after ${ms / 1000} s`);
    await delay(200, undefined);
  }
}

function memRows(path: string): number {
  try {
    return parseLog(readFileSync(path, 'utf8')).length;
  } catch {
    return 0;
  }
}

function readMem(path: string, incidents: string[]): MemSample[] {
  try {
    return parseLog(readFileSync(path, 'utf8')).map((r) => ({
      unix: r.unix, rssKB: r.rssKb, conns: r.conns, pssKB: r.pssKb, treeRssKB: r.treeRssKb, treePssKB: r.treePssKb, cpuPct: r.cpuPct,
    }));
  } catch (err) {
    incidents.push(`mem.tsv unreadable: ${err instanceof Error ? err.message : String(err)}`);
    return [];
  }
}

/** floodtest's figures from its samples and final summary. */
export function floodResult(asked: number, samples: readonly FloodRecord[], summary: FloodRecord | undefined, p: Phases): FloodResult | undefined {
  if (samples.length === 0 && !summary) return undefined;
  const last = summary ?? samples[samples.length - 1]!;
  const ts = (r: FloodRecord): number => (typeof r.raw.ts === 'number' ? r.raw.ts : 0);
  // The generator matters during the message phase (the ramp is connect-bound by design).
  const inMsg = p.msgStart !== undefined ? samples.filter((s) => ts(s) >= p.msgStart! && ts(s) <= (p.msgEnd ?? Infinity)) : [];
  let peak = 0;
  for (const s of samples) peak = Math.max(peak, s.connected);
  const eld = inMsg.map((s) => s.eventLoopDelayP99Ms).filter((x): x is number => x !== undefined);
  const raw = summary?.raw ?? {};
  const reached = typeof raw.reached === 'number' ? raw.reached : Math.max(peak, summary?.connected ?? 0);
  // Connected at the end of the message phase: the last sample taken before the drain ended.
  const endMs = p.drained ?? p.msgEnd;
  const before = endMs !== undefined ? samples.filter((s) => ts(s) <= endMs) : samples;
  const atEnd = before.length > 0 ? before[before.length - 1]!.connected : last.connected;
  const rampSec = typeof raw.rampMs === 'number' ? raw.rampMs / 1000 : undefined;
  const cps = typeof raw.connectsPerSec === 'number' ? raw.connectsPerSec : undefined;
  return {
    asked,
    reached,
    peakConnected: peak,
    connectedAtEnd: atEnd,
    closed: last.closed,
    chunks: last.chunks,
    errors: last.errors,
    latency: last.latency,
    rampSeconds: rampSec,
    connectsPerSec: cps,
    eventLoopDelayP99Ms: eld.length > 0 ? Math.max(...eld) : undefined,
    rssKB: last.rssKB,
  };
}

/** msggen's figures from its summary (or, if it never wrote one, the sum of its samples). */
export function msggenResult(requestedRate: number, summary: MsggenRecord | undefined, samples: readonly MsggenRecord[]): MsggenResult | undefined {
  if (!summary && samples.length === 0) return undefined;
  if (summary) {
    const raw = summary.raw;
    const window = typeof raw.sendWindow === 'number' ? raw.sendWindow : typeof raw.elapsed === 'number' ? raw.elapsed : 0;
    return {
      requestedRate,
      sent: summary.sent,
      acked: summary.acked,
      failed: typeof raw.failed === 'number' ? raw.failed : undefined,
      errors: summary.errors,
      late: typeof raw.late === 'number' ? raw.late : undefined,
      // Acks without a delivered count (a third-party publisher): the sum would be a guess, so it is unknown.
      delivered: typeof raw.deliveredUnreported === 'number' && raw.deliveredUnreported > 0 ? undefined : summary.delivered,
      durationSec: window,
      achievedRate: typeof raw.achievedRate === 'number' ? raw.achievedRate : window > 0 ? summary.sent / window : 0,
      publishLatency: summary.latency,
    };
  }
  const sum = (k: 'sent' | 'acked' | 'delivered'): number => samples.reduce((a, s) => a + s[k], 0);
  const window = samples.reduce((a, s) => a + (typeof s.raw.interval === 'number' ? s.raw.interval : 1), 0);
  const errors: Record<string, number> = {};
  for (const s of samples) for (const [k, v] of Object.entries(s.errors)) errors[k] = (errors[k] ?? 0) + v;
  const unreported = samples.some((s) => typeof s.raw.deliveredUnreported === 'number' && s.raw.deliveredUnreported > 0);
  return { requestedRate, sent: sum('sent'), acked: sum('acked'), errors, delivered: unreported ? undefined : sum('delivered'), durationSec: window, achievedRate: window > 0 ? sum('sent') / window : 0 };
}
