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
  const base = workerData as Omit<EngineConfig, 'startEpochMs'>;
  let engine: Engine | undefined;
  const post = (m: FromThread): void => port.postMessage(m);
  port.on('message', (m: ToThread) => {
    try {
      if (m.type === 'start' && !engine) {
        const e = new Engine({ ...base, startEpochMs: m.startEpochMs });
        engine = e;
        void e.finished.then((final) => {
          post({ type: 'final', final, last: e.takeSample() });
          port.close();
        });
        e.start();
      } else if (m.type === 'sample' && engine) {
        post({ type: 'sample', seq: m.seq, sample: engine.takeSample() });
      } else if (m.type === 'stop' && engine) {
        void engine.stop();
      }
    } catch (err) {
      post({ type: 'error', message: err instanceof Error ? err.message : String(err) });
    }
  });
  post({ type: 'ready' });
}
