// How the comet server's Node runs: the one list of V8 flags and environment, used by its shebang (server/cli.ts,
// checked by a test) and by every script that starts it as `node <flags> dist/server/cli.js`.

/**
 * V8 flags of the server. --max-semi-space-size=1 --optimize-for-size: ~20% lower peaks for ~3% CPU
 * (DEVELOPERS.md). --max-opt=1: no optimizing compiler (Sparkplug baseline code at most). TurboFan's own code is
 * ~4 MB of the Node binary that stays resident once it has compiled anything, and its compile jobs showed in the
 * delivery-latency tail; without it, server/bench-mem at 10,000 streams measured 57.8 MB RSS instead of 62.0–62.3 and
 * p99 0.51–0.58 ms instead of 1.07–1.24 ms, for 61–64k instead of 67–74k msgs/s of fan-out (server/README.md).
 * --expose-gc: the heap budget (heap.ts) asks for full GCs itself, which holds RSS near its floor while messages flow.
 */
export const SERVER_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--optimize-for-size', '--max-opt=1', '--expose-gc'];

/** Environment the server adds: one malloc arena (~5 MB less RSS at 10k streams, server/bench-mem). */
export const SERVER_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '1' };

/** The shebang line server/cli.ts must start with. */
export const SERVER_SHEBANG = `#!/usr/bin/env -S ${Object.entries(SERVER_ENV).map(([k, v]) => `${k}=${v}`).join(' ')} node ${SERVER_NODE_FLAGS.join(' ')}`;
