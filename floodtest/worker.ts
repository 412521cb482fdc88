// A floodtest worker process (forked by startFlood when procs > 1): runs one slice of the URLs in-process and
// reports samples, its serialized histogram and its summary to the parent over IPC.
import { startFlood, useLeanHeap, type FloodHandle, type FromWorker, type ToWorker } from './index.js';

useLeanHeap();

let handle: FloodHandle | null = null;
let stopped = false;

function send(m: FromWorker): void {
  if (process.connected) process.send!(m);
}

async function stopAndReport(): Promise<void> {
  if (stopped) return;
  stopped = true;
  if (handle === null) {
    process.disconnect?.();
    return;
  }
  const summary = await handle.stop();
  send({ type: 'final', summary, sample: handle.sample(), histogram: handle.encodedHistogram(), intervalHistogram: handle.encodedIntervalHistogram() });
  // With the IPC channel closed and every socket gone, nothing keeps this process alive: it exits by itself.
  if (process.connected) process.disconnect();
}

// Ctrl-C in a terminal reaches the whole process group: the parent decides when workers stop.
process.on('SIGINT', () => {});

process.on('message', (m: ToWorker) => {
  if (m.type === 'start' && handle === null && !stopped) {
    startFlood({
      ...m.options,
      procs: 1,
      onSample: (sample) => {
        if (handle !== null) send({ type: 'sample', sample, histogram: handle.encodedHistogram(), intervalHistogram: handle.encodedIntervalHistogram() });
      },
    }).then(
      (h) => {
        handle = h;
        if (stopped) {
          stopped = false;
          void stopAndReport();
        } else send({ type: 'started' });
      },
      (err: unknown) => {
        send({ type: 'error', message: err instanceof Error ? err.message : String(err) });
        process.disconnect?.();
      },
    );
  } else if (m.type === 'stop') {
    void stopAndReport();
  }
});

// The parent went away (crash or kill): stop our connections rather than linger as an orphan.
process.on('disconnect', () => void stopAndReport());
