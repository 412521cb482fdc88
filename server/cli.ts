#!/usr/bin/env -S MALLOC_ARENA_MAX=1 node --max-semi-space-size=1 --optimize-for-size --max-opt=1 --expose-gc
// comet-server: the reference comet server's command line (flags → options, signals, exit codes).
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { FlagError, formatDuration, parseDuration, parseIntFlag, parsePort, parseSize } from '../lib/flags.js';
import { onInterrupt } from '../lib/signals.js';
import { ServerConfigError, startCometServer, type CometServerOptions } from './index.js';
import { parseRouterFlag } from './router-redis.js';
import { autoWorkers, parseListen } from './listen.js';
import { DEFAULT_CONTROL_HOST, DEFAULT_CONTROL_PORT, DEFAULT_HOST, DEFAULT_LIMITS, DEFAULT_PORT, LIMIT_RANGES, WORKER_CONNS } from './limits.js';

const L = DEFAULT_LIMITS;
const R = LIMIT_RANGES;

const HELP = `Usage: comet-server [options]

The reference comet server: streams messages to browsers on GET /test/<id> (chunked HTML)
and GET /sse/<id> (server-sent events); messages are published through the control API.

Options:
  --port N              public streaming port (default ${DEFAULT_PORT}; 0 = any free port)
  --host ADDR           public address (default ${DEFAULT_HOST})
  --control-port N      control API port (default ${DEFAULT_CONTROL_PORT}; 0 = any free port)
  --control-host ADDR   control API address (default ${DEFAULT_CONTROL_HOST}); a non-loopback address needs a token
  --token T             require "Authorization: Bearer T" on the control API (default: env C1M_TOKEN, else none)
  --max-conns N         most open sockets on the public port, more get 503 (default ${L.maxConns} = no limit; ${R.maxConns[0]}..${R.maxConns[1]})
  --heartbeat D         SSE heartbeat interval (default ${formatDuration(L.heartbeatMs)}; ${formatDuration(R.heartbeatMs[0])}..${formatDuration(R.heartbeatMs[1])})
  --max-buffer SIZE     unsent output per stream before it is cut as a slow consumer (default 64KiB; 1KiB..1GiB)
  --heap-slack SIZE     heap garbage before the server asks V8 for a full GC, keeping RSS near its floor while
                        messages flow (default 2MiB; 0 = leave it to V8; 0..1GiB). Smaller holds RSS lower for more
                        GC pauses: at 10k streams and 1000 msg/s, 512KiB ran ~1.2 MB lower with p99.9 5-7 ms
  --max-ids N           most ids per connection in /test/1,2,3 (default ${L.maxIdsPerConn}; ${R.maxIdsPerConn[0]}..${R.maxIdsPerConn[1]})
  --request-timeout D   time to send a complete request head (default ${formatDuration(L.requestTimeoutMs)}; 100ms..1h)
  --max-message SIZE    largest message, POST /send/<id> body (default 64KiB; 1..64MiB)
  --max-batch SIZE      largest NDJSON batch, POST /send body (default 1MiB; 1..1GiB)
  --router R            local (default: in-process) or redis://host:6379: servers on several hosts share
                        one Redis and each message reaches the id's streams on every server
  --workers N|auto      worker processes sharing the public port(s) (default 1 = one process; 1..256; auto = the
                        cores, or more if --max-conns needs them at ${WORKER_CONNS} each); the primary serves the control API
  --listen HOSTS:PORTS  public listeners instead of --host/--port, e.g. 127.0.0.1-127.0.0.8:8000 or 127.0.0.1:8000-8003
                        (every host x port; repeatable)
  --transport T         how the public port holds connections: fd (each request is read on a libuv TCP handle, then
                        the stream is held as a bare fd in the native epoll set, ~0.7 KB less per connection than a
                        handle; the C addon server/native), wrap (libuv TCP handles driven directly, ~1.2 KB less
                        than net.Socket; Node internals), net (net.Socket); auto = the first of those this process
                        supports (default auto; workers always use net)
  --writer W            who writes the streaming sockets (fd and wrap transports): pool (each tick's writes as one batch
                        on a thread of libuv's pool; server/native) or main (the JavaScript thread); auto = pool when
                        the addon is built (default auto)
  --help                print this help
  --version             print the version

When ready it prints one line on stderr: "listening port=<p> control=<c> ...".
SIGINT/SIGTERM: stop accepting, end every stream with its terminating chunk, destroy what is still open after
${formatDuration(L.shutdownGraceMs)}, exit within 5s. A second signal exits at once.
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function parse(argv: string[]): (CometServerOptions & { workers: number }) | 'help' | 'version' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      'control-port': { type: 'string' },
      'control-host': { type: 'string' },
      token: { type: 'string' },
      'max-conns': { type: 'string' },
      heartbeat: { type: 'string' },
      'max-buffer': { type: 'string' },
      'heap-slack': { type: 'string' },
      'max-ids': { type: 'string' },
      'request-timeout': { type: 'string' },
      'max-message': { type: 'string' },
      'max-batch': { type: 'string' },
      router: { type: 'string' },
      workers: { type: 'string' },
      transport: { type: 'string' },
      writer: { type: 'string' },
      listen: { type: 'string', multiple: true },
      help: { type: 'boolean' },
      version: { type: 'boolean' },
    },
  });
  if (values.help) return 'help';
  if (values.version) return 'version';
  const opts: CometServerOptions & { workers: number } = { workers: 1 };
  if (values.port !== undefined) opts.port = parsePort('--port', values.port);
  if (values.host !== undefined) opts.host = nonEmpty('--host', values.host);
  if (values['control-port'] !== undefined) opts.controlPort = parsePort('--control-port', values['control-port']);
  if (values['control-host'] !== undefined) opts.controlHost = nonEmpty('--control-host', values['control-host']);
  const token = values.token ?? process.env.C1M_TOKEN;
  if (token !== undefined && token !== '') opts.token = token;
  if (values['max-conns'] !== undefined) opts.maxConns = parseIntFlag('--max-conns', values['max-conns'], ...R.maxConns);
  if (values.heartbeat !== undefined) opts.heartbeatMs = parseDuration('--heartbeat', values.heartbeat, ...R.heartbeatMs);
  if (values['max-buffer'] !== undefined) opts.maxBufferBytes = parseSize('--max-buffer', values['max-buffer'], ...R.maxBufferBytes);
  if (values['heap-slack'] !== undefined) opts.heapSlackBytes = parseSize('--heap-slack', values['heap-slack'], ...R.heapSlackBytes);
  if (values['max-ids'] !== undefined) opts.maxIdsPerConn = parseIntFlag('--max-ids', values['max-ids'], ...R.maxIdsPerConn);
  if (values['request-timeout'] !== undefined) {
    opts.requestTimeoutMs = parseDuration('--request-timeout', values['request-timeout'], ...R.requestTimeoutMs);
  }
  if (values['max-message'] !== undefined) opts.maxMessageBytes = parseSize('--max-message', values['max-message'], ...R.maxMessageBytes);
  if (values['max-batch'] !== undefined) opts.maxBatchBytes = parseSize('--max-batch', values['max-batch'], ...R.maxBatchBytes);
  if (values.router !== undefined) opts.router = parseRouterFlag('--router', values.router);
  if (values.listen !== undefined) opts.listen = values.listen.flatMap((v) => parseListen('--listen', v));
  if (values.transport !== undefined) {
    const t = values.transport;
    if (t !== 'auto' && t !== 'fd' && t !== 'wrap' && t !== 'net') throw new FlagError('--transport', `'${t}' is not one of auto, fd, wrap, net`);
    opts.transport = t;
  }
  if (values.writer !== undefined) {
    const w = values.writer;
    if (w !== 'auto' && w !== 'pool' && w !== 'main') throw new FlagError('--writer', `'${w}' is not one of auto, pool, main`);
    opts.writer = w;
  }
  if (values.workers !== undefined) {
    opts.workers = values.workers === 'auto' ? autoWorkers(opts.maxConns ?? 0) : parseIntFlag('--workers', values.workers, 1, 256);
    // The primary's registry is the bus between workers; a Redis bus per worker is not wired up yet.
    if (opts.workers > 1 && values.router !== undefined && values.router !== 'local') {
      throw new FlagError('--workers', 'more than 1 worker cannot be combined with --router redis://... yet (use --workers 1)');
    }
  }
  return opts;
}

function nonEmpty(flag: string, raw: string): string {
  if (raw.trim() === '') throw new FlagError(flag, 'empty address (give a host name or IP address)');
  return raw.trim();
}

async function main(): Promise<void> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(process.argv.slice(2));
  } catch (err) {
    // parseArgs errors (unknown flag, missing value) and FlagError both name the flag.
    // Node's parseArgs messages run over several lines; the first one names the flag and the problem.
    const message = (err instanceof Error ? err.message : String(err)).split('\n')[0];
    process.stderr.write(`comet-server: ${message} (see --help)\n`);
    process.exit(2);
  }
  if (parsed === 'help') {
    process.stdout.write(HELP);
    return;
  }
  if (parsed === 'version') {
    process.stdout.write(version() + '\n');
    return;
  }
  let server;
  try {
    server =
      parsed.workers > 1
        ? await (await import('./cluster.js')).startCluster({ ...parsed, onEvent: (line) => process.stderr.write(`comet-server: ${line}\n`) })
        : await startCometServer(parsed);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`comet-server: ${message}\n`);
    process.exit(err instanceof ServerConfigError ? 2 : 1);
  }
  const s = server;
  process.stderr.write(
    `listening port=${s.port} control=${s.controlPort} host=${s.host} control-host=${s.controlHost} ` +
      `token=${parsed.token ? 'yes' : 'no'} pid=${process.pid} workers=${parsed.workers} transport=${s.transport} writer=${s.writer}` +
      `${s.listening.length > 1 ? ` listen=${s.listening.map((l) => `${l.host}:${l.port}`).join(',')}` : ''}\n`,
  );
  onInterrupt(async () => {
    // Belt and braces: whatever happens in stop(), the process is gone shortly after the grace period.
    setTimeout(() => process.exit(1), DEFAULT_LIMITS.shutdownGraceMs + 900).unref();
    const st = await s.stats();
    await s.stop();
    process.stderr.write(`stopped: ${st.connections} streams ended, ${st.messagesIn} messages in, ${st.chunksOut} chunks out\n`);
    process.exit(0);
  });
}

void main();
