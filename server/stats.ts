// The server's counters, the /stats JSON and the /metrics Prometheus text, defined together so they cannot drift.
import type { BusStats } from './router-redis.js';
import { writerCounters } from './wrap.js';

/** Monotonic counters kept by the streaming listener and the publish path (plain numbers, no allocation). */
export class Counters {
  /** Streams opened since start (GET /test or /sse answered with 200). */
  connectionsTotal = 0;
  /** Streams closed since start, for any reason. */
  closed = 0;
  /** TCP connections accepted on the public port (streams, errors, HEADs and rejects alike). */
  accepted = 0;
  /** Messages accepted through the control API. */
  messagesIn = 0;
  /** Accepted messages that reached at least one connection. */
  messagesDelivered = 0;
  /** Accepted messages whose id had no connection (counted, not an error). */
  toNobody = 0;
  /** Per-connection deliveries queued by send (one per receiving connection per message). */
  chunksQueued = 0;
  /** Per-connection deliveries written to a socket. */
  chunksOut = 0;
  /** Per-connection deliveries dropped because their connection closed or was cut as a slow consumer first. */
  chunksDropped = 0;
  /** Bytes written to streaming sockets (response heads, chunks, heartbeats, terminating chunks). */
  bytesOut = 0;
  /** socket.write calls on the streaming port. */
  writes = 0;
  /** Streams closed because their unsent output passed the cap. */
  slowDrops = 0;
  /** Requests answered 4xx/5xx on the public port (bad request, 404, 501, timeouts, oversize). */
  badRequests = 0;
  /** Requests that did not complete within the request timeout (also counted in badRequests). */
  timeouts = 0;
  /** Connections refused with 503 because of --max-conns. */
  rejected = 0;
  /** Streams closed because the client kept sending after its request. */
  inputAbuse = 0;
  /** SSE heartbeat comments written. */
  heartbeats = 0;
  /** Socket errors seen on the public port (resets, broken pipes). */
  socketErrors = 0;
  /** Control API requests refused with 401. */
  unauthorized = 0;
  /** Failed accepts on the public port (e.g. EMFILE at the open-files limit). */
  acceptErrors = 0;
  /** Full GCs the server asked V8 for because the heap's garbage passed --heap-slack (heap.ts). */
  heapGcs = 0;
}

/** The /stats document; field names are part of the contract other tools read. */
export interface ServerStats {
  connections: number;
  ids: number;
  sockets: number;
  connectionsTotal: number;
  closed: number;
  accepted: number;
  messagesIn: number;
  messagesDelivered: number;
  toNobody: number;
  chunksQueued: number;
  chunksOut: number;
  chunksDropped: number;
  bytesOut: number;
  writes: number;
  slowDrops: number;
  badRequests: number;
  timeouts: number;
  rejected: number;
  inputAbuse: number;
  heartbeats: number;
  socketErrors: number;
  unauthorized: number;
  acceptErrors: number;
  heapGcs: number;
  /** Batches of socket writes this process handed to the writer addon's pool thread (wrap.ts; 0 without it). */
  writerBatches: number;
  /** Socket writes those batches carried. */
  writerWrites: number;
  /** Of those, writes the kernel took only part of; the rest went through libuv's queue. */
  writerShort: number;
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  uptimeSec: number;
  pid: number;
  /** With `--router redis://…`: the message bus's state and counters (see router-redis.ts). */
  bus?: BusStats;
  /** Cluster mode (`--workers N`): one entry per worker slot; the fields above are then sums (ids: distinct ids). */
  workers?: WorkerStats[];
  /** Cluster mode: workers replaced after they died. */
  workerRestarts?: number;
}

/** One worker's figures in a cluster's /stats. */
export interface WorkerStats {
  slot: number;
  pid: number;
  /** False when the worker did not answer in time (figures are its last answer) or is being replaced. */
  fresh: boolean;
  connections: number;
  ids: number;
  sockets: number;
  connectionsTotal: number;
  closed: number;
  chunksOut: number;
  chunksDropped: number;
  rss: number;
  heapUsed: number;
  /** Messages the primary routed to this worker (one IPC op each). */
  delivers: number;
  /** IPC messages (per-tick batches) the primary sent to it. */
  ipcBatches: number;
  restarts: number;
}

/** Bus figures in /metrics (with `--router redis://…`). */
const BUS_METRICS: Array<[keyof BusStats, 'gauge' | 'counter', string, string]> = [
  ['outages', 'counter', 'c1m_bus_outages_total', 'Times the message bus went down.'],
  ['lastOutageMs', 'gauge', 'c1m_bus_last_outage_ms', 'Length of the last finished bus outage, ms.'],
  ['downForMs', 'gauge', 'c1m_bus_down_for_ms', 'Length of the current bus outage so far, ms (0 when up).'],
  ['published', 'counter', 'c1m_bus_published_total', 'Messages published on the bus and confirmed.'],
  ['publishedToNobody', 'counter', 'c1m_bus_published_to_nobody_total', 'Published messages no server was subscribed to.'],
  ['lostOnBus', 'counter', 'c1m_bus_lost_total', 'Messages that could not be published (bus down or connection dropped).'],
  ['received', 'counter', 'c1m_bus_received_total', 'Messages received from the bus.'],
  ['receivedToNobody', 'counter', 'c1m_bus_received_to_nobody_total', 'Received messages whose id had no local stream any more.'],
  ['channels', 'gauge', 'c1m_bus_channels', 'Bus channels (ids) this process is subscribed to.'],
  ['resubscribed', 'counter', 'c1m_bus_resubscribed_total', 'Ids re-subscribed after reconnects.'],
];

/** Per-worker gauges in /metrics, labelled by slot and pid. */
const WORKER_METRICS: Array<[keyof WorkerStats, 'gauge' | 'counter', string, string]> = [
  ['connections', 'gauge', 'c1m_worker_connections', 'Open streaming connections of one worker.'],
  ['ids', 'gauge', 'c1m_worker_ids', 'Distinct ids with an open stream on one worker.'],
  ['chunksOut', 'counter', 'c1m_worker_chunks_out_total', 'Per-connection deliveries written by one worker.'],
  ['rss', 'gauge', 'c1m_worker_rss_bytes', 'Resident set size of one worker.'],
  ['delivers', 'counter', 'c1m_worker_ipc_delivers_total', 'Messages routed to one worker by the primary.'],
  ['restarts', 'counter', 'c1m_worker_restarts_total', 'Times this worker slot was replaced.'],
];

/** Builds the /stats document from the counters and the live gauges. */
export function snapshot(c: Counters, gauges: { connections: number; ids: number; sockets: number }, startedAt: number): ServerStats {
  const mem = process.memoryUsage();
  return {
    connections: gauges.connections,
    ids: gauges.ids,
    sockets: gauges.sockets,
    connectionsTotal: c.connectionsTotal,
    closed: c.closed,
    accepted: c.accepted,
    messagesIn: c.messagesIn,
    messagesDelivered: c.messagesDelivered,
    toNobody: c.toNobody,
    chunksQueued: c.chunksQueued,
    chunksOut: c.chunksOut,
    chunksDropped: c.chunksDropped,
    bytesOut: c.bytesOut,
    writes: c.writes,
    slowDrops: c.slowDrops,
    badRequests: c.badRequests,
    timeouts: c.timeouts,
    rejected: c.rejected,
    inputAbuse: c.inputAbuse,
    heartbeats: c.heartbeats,
    socketErrors: c.socketErrors,
    unauthorized: c.unauthorized,
    acceptErrors: c.acceptErrors,
    heapGcs: c.heapGcs,
    writerBatches: writerCounters.batches,
    writerWrites: writerCounters.writes,
    writerShort: writerCounters.short,
    rss: mem.rss,
    heapUsed: mem.heapUsed,
    heapTotal: mem.heapTotal,
    external: mem.external,
    arrayBuffers: mem.arrayBuffers,
    uptimeSec: Math.round((performance.now() - startedAt) / 10) / 100,
    pid: process.pid,
  };
}

// Metric name, type and help for each /stats field; gauges are current values, counters only grow.
const METRICS: Array<[keyof ServerStats, 'gauge' | 'counter', string, string]> = [
  ['connections', 'gauge', 'c1m_connections', 'Open streaming connections.'],
  ['ids', 'gauge', 'c1m_ids', 'Distinct ids with at least one open stream.'],
  ['sockets', 'gauge', 'c1m_sockets', 'Open TCP sockets on the public port, streams included.'],
  ['connectionsTotal', 'counter', 'c1m_connections_opened_total', 'Streams opened.'],
  ['closed', 'counter', 'c1m_connections_closed_total', 'Streams closed.'],
  ['accepted', 'counter', 'c1m_accepted_total', 'TCP connections accepted on the public port.'],
  ['messagesIn', 'counter', 'c1m_messages_in_total', 'Messages accepted by the control API.'],
  ['messagesDelivered', 'counter', 'c1m_messages_delivered_total', 'Messages that reached at least one connection.'],
  ['toNobody', 'counter', 'c1m_messages_to_nobody_total', 'Messages whose id had no connection.'],
  ['chunksQueued', 'counter', 'c1m_chunks_queued_total', 'Per-connection deliveries queued.'],
  ['chunksOut', 'counter', 'c1m_chunks_out_total', 'Per-connection deliveries written.'],
  ['chunksDropped', 'counter', 'c1m_chunks_dropped_total', 'Per-connection deliveries dropped (connection gone or too slow).'],
  ['bytesOut', 'counter', 'c1m_bytes_out_total', 'Bytes written to streaming sockets.'],
  ['writes', 'counter', 'c1m_writes_total', 'Socket writes on the streaming port.'],
  ['slowDrops', 'counter', 'c1m_slow_consumer_drops_total', 'Streams closed as slow consumers.'],
  ['badRequests', 'counter', 'c1m_bad_requests_total', 'Requests answered with an error on the public port.'],
  ['timeouts', 'counter', 'c1m_request_timeouts_total', 'Requests not completed in time.'],
  ['rejected', 'counter', 'c1m_rejected_total', 'Connections refused by --max-conns.'],
  ['inputAbuse', 'counter', 'c1m_input_abuse_total', 'Streams closed for sending data after their request.'],
  ['heartbeats', 'counter', 'c1m_heartbeats_total', 'SSE heartbeat comments written.'],
  ['socketErrors', 'counter', 'c1m_socket_errors_total', 'Socket errors on the public port.'],
  ['unauthorized', 'counter', 'c1m_unauthorized_total', 'Control API requests refused with 401.'],
  ['acceptErrors', 'counter', 'c1m_accept_errors_total', 'Failed accepts on the public port.'],
  ['heapGcs', 'counter', 'c1m_heap_gcs_total', 'Full GCs requested because the heap garbage passed --heap-slack.'],
  ['writerBatches', 'counter', 'c1m_writer_batches_total', 'Batches of socket writes made on the writer pool thread.'],
  ['writerWrites', 'counter', 'c1m_writer_writes_total', 'Socket writes made on the writer pool thread.'],
  ['writerShort', 'counter', 'c1m_writer_short_writes_total', 'Writer writes the kernel took only part of (the rest queued in libuv).'],
  ['rss', 'gauge', 'c1m_process_rss_bytes', 'Resident set size of the server process.'],
  ['heapUsed', 'gauge', 'c1m_process_heap_used_bytes', 'V8 heap in use.'],
  ['heapTotal', 'gauge', 'c1m_process_heap_total_bytes', 'V8 heap reserved.'],
  ['external', 'gauge', 'c1m_process_external_bytes', 'Memory of C++ objects bound to JavaScript objects.'],
  ['arrayBuffers', 'gauge', 'c1m_process_array_buffers_bytes', 'Memory of ArrayBuffers and Buffers.'],
  ['uptimeSec', 'gauge', 'c1m_uptime_seconds', 'Seconds since the server started.'],
];

/** The /metrics document in Prometheus text exposition format 0.0.4. */
export function prometheus(s: ServerStats): string {
  let out = '';
  for (const [key, type, name, help] of METRICS) {
    out += `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name} ${s[key]}\n`;
  }
  if (s.bus !== undefined) {
    const bus = s.bus;
    out += `# HELP c1m_bus_up Whether the message bus is up (1) or down (0).\n# TYPE c1m_bus_up gauge\nc1m_bus_up ${bus.state === 'up' ? 1 : 0}\n`;
    for (const [key, type, name, help] of BUS_METRICS) out += `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name} ${bus[key]}\n`;
  }
  if (s.workers !== undefined) {
    for (const [key, type, name, help] of WORKER_METRICS) {
      out += `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`;
      for (const w of s.workers) out += `${name}{slot="${w.slot}",pid="${w.pid}"} ${w[key]}\n`;
    }
  }
  return out;
}
