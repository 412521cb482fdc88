// Every limit of the comet server, named once with its default (mochiweb style).
// The CLI flags, the library options and the tests all read these; change a default here and nowhere else.

/** The server's limits and intervals; every field has a default in DEFAULT_LIMITS. */
export interface Limits {
  /** Longest request line (method, target, version) accepted on the streaming port, in bytes. */
  maxRequestLineBytes: number;
  /** Largest total size of the request header block (all header lines) on the streaming port, in bytes. */
  maxHeaderBytes: number;
  /** Most header lines accepted in one request; more is treated as abuse. */
  maxHeaderCount: number;
  /** Time a client has to send a complete request head after connecting (slowloris guard), in ms. */
  requestTimeoutMs: number;
  /** Most ids one streaming connection may log in as with `/test/1,2,3`. */
  maxIdsPerConn: number;
  /** Interval of the SSE heartbeat comment, sent to every SSE stream by one shared timer, in ms. */
  heartbeatMs: number;
  /** Unsent output a streaming connection may hold before it is closed as a slow consumer, in bytes. */
  maxBufferBytes: number;
  /** Bytes a client may send after its request on a streaming connection before it is closed (it should send none). */
  maxIgnoredInputBytes: number;
  /** Largest control API body for `POST /send/<id>` (one message), in bytes; more gets 413. */
  maxMessageBytes: number;
  /** Largest control API body for `POST /send` (NDJSON batch), in bytes; more gets 413. */
  maxBatchBytes: number;
  /** Most open sockets on the streaming port; further connections get 503 and are closed (0 = no limit). */
  maxConns: number;
  /** Time a graceful stop waits for clients to close their ended streams before destroying them, in ms (under 5 s, so the process exits within 5 s). */
  shutdownGraceMs: number;
  /** Time an answered-and-ending connection (error reply, 503) may linger before it is destroyed, in ms. */
  lingerMs: number;
  /** Granularity of the shared sweep timer that enforces request timeouts and lingering, in ms. */
  sweepIntervalMs: number;
  /** Garbage the V8 heap may gather above its size after the last full GC before the server asks for one, in bytes (0 = leave it to V8; see heap.ts). */
  heapSlackBytes: number;
  /** How often the heap budget is checked, in ms. */
  heapCheckMs: number;
}

/** The defaults of every limit. */
export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxRequestLineBytes: 8 * 1024,
  maxHeaderBytes: 8 * 1024,
  maxHeaderCount: 100,
  requestTimeoutMs: 10_000,
  maxIdsPerConn: 64,
  heartbeatMs: 25_000,
  maxBufferBytes: 64 * 1024,
  maxIgnoredInputBytes: 8 * 1024,
  maxMessageBytes: 64 * 1024,
  maxBatchBytes: 1024 * 1024,
  maxConns: 0,
  shutdownGraceMs: 4_000,
  lingerMs: 2_000,
  sweepIntervalMs: 250,
  heapSlackBytes: 2 * 1024 * 1024,
  heapCheckMs: 1_000,
});

/** Default public (streaming) listener address and port. */
export const DEFAULT_HOST = '0.0.0.0';
/** Default public (streaming) port. */
export const DEFAULT_PORT = 8000;
/** Default control API address: loopback, so publishing is local unless a token is set. */
export const DEFAULT_CONTROL_HOST = '127.0.0.1';
/** Default control API port. */
export const DEFAULT_CONTROL_PORT = 8001;

/** Largest id accepted: 2^53 - 1, so every id is an exact JavaScript number. */
export const MAX_ID = Number.MAX_SAFE_INTEGER;

/** Allowed ranges of the limits a user can set, used by the CLI and by startCometServer's validation. */
export const LIMIT_RANGES = {
  maxConns: [0, 10_000_000],
  heartbeatMs: [100, 3_600_000],
  maxBufferBytes: [1024, 1024 ** 3],
  maxIdsPerConn: [1, 100_000],
  requestTimeoutMs: [100, 3_600_000],
  maxMessageBytes: [1, 64 * 1024 ** 2],
  maxBatchBytes: [1, 1024 ** 3],
  shutdownGraceMs: [0, 60_000],
  heapSlackBytes: [0, 1024 ** 3],
} as const satisfies Partial<Record<keyof Limits, readonly [number, number]>>;

/**
 * Fewest socket writes a tick must have before the pool writer takes them (wrap.ts "Batched writes"); a smaller tick
 * is written from the main thread. Handing a batch to a pool thread costs delivery latency (bench-mem at 1000 msg/s,
 * when every tick went to the pool: p50 0.27-0.30 ms against 0.23-0.24 ms), worth it only when the sends it moves
 * off the main thread (~9 µs each here) add up: at 1000 msg/s a tick holds one write, at fan-out rates hundreds.
 */
export const WRITER_MIN_BATCH = 8;

/**
 * Connections one server process holds comfortably under this machine's 20,000 open-files limit; `--workers auto`
 * starts enough workers for `--max-conns` at this many each.
 */
export const WORKER_CONNS = 18_000;
