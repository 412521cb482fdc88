// A cluster worker (forked by cluster.ts): streams and a ClusterRouter node; no control listener (the primary has it).
import { startCometServer, type CometServer } from './index.js';
import type { WorkerConfig } from './cluster.js';
import { ClusterRouter, processLink } from './router-cluster.js';

async function main(): Promise<void> {
  const cfg = JSON.parse(process.env.C1M_WORKER_CONFIG ?? '{}') as WorkerConfig;
  let server: CometServer | undefined;
  try {
    server = await startCometServer({
      ...cfg.opts,
      control: false,
      router: (deliver) => new ClusterRouter(deliver, processLink(), { stats: () => server?.stats() ?? null }),
    });
  } catch (err) {
    process.send?.({ c1m: 'fail', message: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  }
  const s = server;
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    setTimeout(() => process.exit(1), (cfg.opts.limits?.shutdownGraceMs ?? 4000) + 900).unref();
    void s.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // The primary is gone: nobody can publish or replace us, so end the streams and leave.
  process.on('disconnect', stop);
  process.send?.({ c1m: 'ready', listening: s.listening, slot: cfg.slot });
}

void main();
