// Test helper: a real redis-server (the Debian package) on a free loopback port, killed by PID at the end.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';

/** Where the redis-server binary is; C1M_REDIS_SERVER overrides it. */
export const REDIS_SERVER = process.env.C1M_REDIS_SERVER ?? 'redis-server';

/** A redis-server started for a test. */
export interface TestRedis {
  port: number;
  url: string;
  /** PID of the current redis-server process (changes after restart). */
  readonly pid: number;
  /** Kills it at once (SIGKILL: a crash, not a shutdown) and waits until it is gone. */
  kill(): Promise<void>;
  /** Starts it again on the same port (after kill). */
  restart(): Promise<void>;
  /** Kills it if running; call it in `after`. */
  stop(): Promise<void>;
}

/** A port that was free a moment ago: redis-server needs an explicit one, so bind port 0 first and release it. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen({ host, port: 0 }, resolve);
  });
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

function spawnRedis(port: number): { child: ChildProcess; ready: Promise<void> } {
  const child = spawn(
    REDIS_SERVER,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const ready = new Promise<void>((resolve, reject) => {
    const deadline = Date.now() + 5000;
    let exited = false;
    child.once('error', (err) => {
      exited = true;
      reject(new Error(`cannot start ${REDIS_SERVER} (apt-get install redis-server): ${err.message}`));
    });
    child.once('exit', (code) => {
      exited = true;
      reject(new Error(`redis-server exited with ${code} before it was ready: ${stderr.trim().slice(0, 300)}`));
    });
    // Ready = answers PING on its port.
    const probe = (): void => {
      if (exited) return;
      const s = net.connect({ host: '127.0.0.1', port });
      let got = '';
      s.on('data', (d) => {
        got += d.toString();
        if (got.includes('+PONG')) {
          s.destroy();
          resolve();
        }
      });
      s.on('connect', () => s.write('PING\r\n'));
      s.on('error', () => {
        s.destroy();
        if (Date.now() > deadline) reject(new Error(`redis-server on port ${port} not ready within 5 s: ${stderr.trim().slice(0, 300)}`));
        else setTimeout(probe, 20);
      });
    };
    probe();
  });
  return { child, ready };
}

/** Starts a redis-server on a free port and waits until it answers PING. */
export async function startRedis(): Promise<TestRedis> {
  // Another process may grab the port between freePort and the bind: try a few ports.
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const first = spawnRedis(port);
    try {
      await first.ready;
    } catch (err) {
      lastErr = err;
      first.child.kill('SIGKILL');
      continue;
    }
    let child: ChildProcess | null = first.child;
    const kill = async (): Promise<void> => {
      const c = child;
      child = null;
      if (c === null || c.exitCode !== null || c.signalCode !== null) return;
      const gone = new Promise<void>((resolve) => c.once('exit', () => resolve()));
      c.kill('SIGKILL');
      await gone;
    };
    return {
      port,
      url: `redis://127.0.0.1:${port}`,
      get pid() {
        return child?.pid ?? 0;
      },
      kill,
      async restart() {
        await kill();
        const next = spawnRedis(port);
        child = next.child;
        await next.ready;
      },
      stop: kill,
    };
  }
  throw lastErr instanceof Error ? lastErr : new Error(String(lastErr));
}
