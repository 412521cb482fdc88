// Worker-thread entry for `--threads N`: runs one Engine for its share of the workers and answers the main
// thread's sample and stop requests. Histograms cross the thread boundary in serialized form.
import { parentPort, workerData } from 'node:worker_threads';
import { Engine, type EngineConfig } from './engine.js';

/** Messages from the main thread. */
export type ToThread = { type: 'start'; startEpochMs: number } | { type: 'sample'; seq: number } | { type: 'stop' };

/** Messages to the main thread. */
export type FromThread =
  | { type: 'ready' }
  | { type: 'sample'; seq: number; sample: ReturnType<Engine['takeSample']> }
  | { type: 'final'; final: Awaited<Engine['finished']>; last: ReturnType<Engine['takeSample']> }
  | { type: 'error'; message: string };

const port = parentPort;
if (port) {
  const post = (m: FromThread): void => port.postMessage(m);
  try {
    const engine = new Engine(workerData as EngineConfig);
    void engine.finished.then((final) => {
      post({ type: 'final', final, last: engine.takeSample() });
      port.close();
    });
    port.on('message', (m: ToThread) => {
      if (m.type === 'start') engine.start(m.startEpochMs);
      else if (m.type === 'sample') post({ type: 'sample', seq: m.seq, sample: engine.takeSample() });
      else if (m.type === 'stop') void engine.stop();
    });
    void engine.warmup().then(() => post({ type: 'ready' }));
  } catch (err) {
    post({ type: 'error', message: err instanceof Error ? err.message : String(err) });
  }
}
