// The cluster's flag parsing, kept apart from cluster.ts so the CLI can parse --workers and --listen without
// loading node:cluster and the worker bus (~1.3 MB of RSS) in a single-process server.
import { availableParallelism } from 'node:os';
import { FlagError, parseHostList, parsePortList } from '../lib/flags.js';
import { WORKER_CONNS } from './limits.js';

/**
 * `--workers auto`: the number of cores, or more when `--max-conns` needs more processes to stay under the
 * open-files limit (WORKER_CONNS each).
 */
export function autoWorkers(maxConns: number, cores = availableParallelism()): number {
  return Math.max(cores, maxConns > 0 ? Math.ceil(maxConns / WORKER_CONNS) : 1);
}

/**
 * Parses one `--listen` value: `HOSTS:PORTS`, where HOSTS is a parseHostList spec (`127.0.0.1-127.0.0.8`,
 * `a,b`) and PORTS a parsePortList spec (`8000`, `8000-8003`); every host × port pair is a listener.
 * `[::1]:8000` for IPv6; port 0 is a free port per listener.
 */
export function parseListen(flag: string, raw: string): Array<{ host: string; port: number }> {
  const v = raw.trim();
  const colon = v.lastIndexOf(':');
  if (colon <= 0 || colon === v.length - 1) throw new FlagError(flag, `'${raw}' is not HOSTS:PORTS (e.g. 127.0.0.1-127.0.0.8:8000 or 127.0.0.1:8000-8003)`);
  const hostPart = v.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  const portPart = v.slice(colon + 1);
  const hosts = hostPart.includes(':') ? [hostPart] : parseHostList(flag, hostPart);
  const ports = portPart === '0' ? [0] : parsePortList(flag, portPart);
  const out: Array<{ host: string; port: number }> = [];
  for (const host of hosts) for (const port of ports) out.push({ host, port });
  if (out.length > 4096) throw new FlagError(flag, 'more than 4096 listeners');
  return out;
}

