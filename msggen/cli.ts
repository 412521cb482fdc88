#!/usr/bin/env node
// msggen CLI: flags → options, progress on stderr, NDJSON on stdout with --json, Ctrl-C handling, exit codes.
import { parseArgs } from 'node:util';
import { FlagError, parseChoice, parseDuration, parseIntFlag, parseNumberFlag } from '../lib/flags.js';
import { onInterrupt } from '../lib/signals.js';
import { LIMITS, MsggenOptionError, RANGES, startMsggen, type MsggenOptions, type Sample } from './index.js';
import { DISTRIBUTIONS } from './random.js';
import { formatSample, formatSummary } from './report.js';

const HELP = `msggen: parallel message generators at a fixed rate, against a comet server's control API

Usage: msggen [--procs 10] [--rate 10] [--num 1000000] [--max 10000] [--target http://127.0.0.1:8001]
              [--duration 10m] [--token T] [--dist uniform|zipf] [--seed N] [--text "Fake message"]
              [--batch K] [--threads N] [--connections ${LIMITS.connections}] [--json]

  --procs N         workers (the seed's parallel msggen processes)              default 10    (1..${RANGES.procs[1]})
  --rate R          sends per second of each worker (Interval = 1000/R ms)     default 10    (${RANGES.rate[0]}..${RANGES.rate[1]})
                    total rate = procs × rate; workers are staggered evenly across one interval
  --num N           sends per worker; the run ends when all are made           default 1000000
  --max N           ids are drawn from 1..N                                    default 10000 (1..${RANGES.max[1]})
  --duration D      stop after D (500ms, 30s, 10m, 1h)                         default none
  --target URL      control API origin                                         default http://127.0.0.1:8001
  --redis URL       publish straight to Redis (redis://host:6379) on the servers' per-id channels,
                    instead of --target (for comet-server --router redis://...)  default none
  --publish-template URL
                    POST each message (raw text/plain body) to URL with {id} replaced, instead of
                    <target>/send/<id>: a third-party publisher, e.g. 'http://127.0.0.1:8080/pub?id={id}'
                    (nginx+nchan). Any 2xx is an ack; 'delivered' only if the answer is JSON with a
                    numeric delivered. Not with --batch > 1 or --redis              default none
  --token T         send 'Authorization: Bearer T'                             default env C1M_TOKEN, else none
  --dist D          id distribution: uniform or zipf (P(k) ∝ 1/k^s)            default uniform
  --zipf-s S        zipf exponent s                                            default 1     (${RANGES.zipfExponent[0]}..${RANGES.zipfExponent[1]})
  --seed N          seed for the id streams (each worker derives its own)      default random (printed in the summary)
  --text T          message prefix: '<T> Num = <n> @t=<scheduled µs>'          default 'Fake message'
  --batch K         up to K messages per request via POST /send (NDJSON)       default 1 (POST /send/<id>)
  --threads N       spread the workers over N worker threads                   default 1     (1..min(procs, ${RANGES.threads[1]}))
  --connections N   keep-alive connections (in-flight requests are bounded by connections × pipelining)
                                                                               default ${LIMITS.connections}     (1..${RANGES.connections[1]})
  --pipelining N    HTTP requests per connection in flight                     default ${LIMITS.pipelining}     (1..${RANGES.pipelining[1]})
  --late D          a send issued over D after its scheduled time is late     default ${LIMITS.lateMs}ms
  --no-warmup       do not open the connections (one GET /healthz each) before the clock starts
  --json            one NDJSON {"type":"sample"} per second on stdout, then {"type":"summary"}
  --quiet           no per-second progress lines on stderr (the summary is still printed)
  -h, --help        this text

Progress every second on stderr; summary on stderr at the end. Ctrl-C once: stop and summarize; twice: exit.
Exit codes: 0 run complete, 1 nothing acknowledged (e.g. server down) or internal error, 2 bad flag, 130 second Ctrl-C.`;

function fail(message: string): never {
  process.stderr.write(`msggen: ${message}\n`);
  process.exit(2);
}

function parse(argv: string[]): { options: MsggenOptions; json: boolean; quiet: boolean } {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        procs: { type: 'string' },
        rate: { type: 'string' },
        num: { type: 'string' },
        max: { type: 'string' },
        duration: { type: 'string' },
        target: { type: 'string' },
        redis: { type: 'string' },
        'publish-template': { type: 'string' },
        token: { type: 'string' },
        dist: { type: 'string' },
        'zipf-s': { type: 'string' },
        seed: { type: 'string' },
        text: { type: 'string' },
        batch: { type: 'string' },
        threads: { type: 'string' },
        connections: { type: 'string' },
        pipelining: { type: 'string' },
        late: { type: 'string' },
        'no-warmup': { type: 'boolean' },
        json: { type: 'boolean' },
        quiet: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    fail(`${err instanceof Error ? err.message : String(err)} (see --help)`);
  }
  if (values.help) {
    process.stdout.write(HELP + '\n');
    process.exit(0);
  }
  const o: MsggenOptions = {};
  const int = (flag: string, raw: string | undefined, range: readonly [number, number]): number | undefined =>
    raw === undefined ? undefined : parseIntFlag(flag, raw, range[0], range[1]);
  o.procs = int('--procs', values.procs, RANGES.procs);
  if (values.rate !== undefined) o.rate = parseNumberFlag('--rate', values.rate, RANGES.rate[0], RANGES.rate[1]);
  o.num = int('--num', values.num, RANGES.num);
  o.max = int('--max', values.max, RANGES.max);
  if (values.duration !== undefined) o.durationMs = parseDuration('--duration', values.duration, 1);
  if (values.target !== undefined) o.target = values.target;
  if (values.redis !== undefined) o.redis = values.redis;
  if (values['publish-template'] !== undefined) o.publishTemplate = values['publish-template'];
  const token = values.token ?? process.env.C1M_TOKEN;
  if (token !== undefined && token !== '') o.token = token;
  if (values.dist !== undefined) o.dist = parseChoice('--dist', values.dist, DISTRIBUTIONS);
  if (values['zipf-s'] !== undefined) o.zipfExponent = parseNumberFlag('--zipf-s', values['zipf-s'], RANGES.zipfExponent[0], RANGES.zipfExponent[1]);
  o.seed = int('--seed', values.seed, RANGES.seed);
  if (values.text !== undefined) o.text = values.text;
  o.batch = int('--batch', values.batch, RANGES.batch);
  o.threads = int('--threads', values.threads, RANGES.threads);
  o.connections = int('--connections', values.connections, RANGES.connections);
  o.pipelining = int('--pipelining', values.pipelining, RANGES.pipelining);
  if (values['no-warmup']) o.warmup = false;
  if (values.late !== undefined) o.lateMs = parseDuration('--late', values.late, 0, 3_600_000);
  for (const k of Object.keys(o) as Array<keyof MsggenOptions>) if (o[k] === undefined) delete o[k];
  return { options: o, json: values.json === true, quiet: values.quiet === true };
}

async function main(): Promise<void> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(process.argv.slice(2));
  } catch (err) {
    if (err instanceof FlagError) fail(err.message);
    throw err;
  }
  const { options, json, quiet } = parsed;
  process.stdout.on('error', () => {}); // a closed pipe on stdout must not kill the summary on stderr
  options.onSample = (s: Sample): void => {
    if (!quiet) process.stderr.write(formatSample(s) + '\n');
    if (json) process.stdout.write(JSON.stringify(s) + '\n');
  };
  let handle;
  try {
    handle = startMsggen(options);
  } catch (err) {
    if (err instanceof MsggenOptionError) fail(`--${err.option.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}: ${err.message.slice(err.option.length + 2)}`);
    throw err;
  }
  const h = handle;
  const removeSignals = onInterrupt(async () => {
    await h.stop();
  });
  const summary = await h.done;
  removeSignals();
  if (json) process.stdout.write(JSON.stringify(summary) + '\n');
  process.stderr.write(formatSummary(summary) + '\n');
  process.exitCode = summary.sent > 0 && summary.acked === 0 ? 1 : 0;
}

main().catch((err: unknown) => {
  process.stderr.write(`msggen: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
