// Builds preflight's snapshot from /proc. The root is injectable so tests read fixture trees (bench/fixtures/proc-*).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NofileLimits, ProcSnapshot } from './preflight.js';

async function readText(root: string, rel: string): Promise<string | undefined> {
  try {
    return await readFile(join(root, rel), 'utf8');
  } catch {
    return undefined;
  }
}

function numbers(text: string | undefined): number[] | undefined {
  if (text === undefined) return undefined;
  const parts = text.trim().split(/\s+/).map(Number);
  return parts.length > 0 && parts.every(Number.isFinite) ? parts : undefined;
}

/** Parses the "Max open files" line of a /proc/<pid>/limits file. */
export function parseNofile(limitsText: string | undefined): NofileLimits | undefined {
  if (limitsText === undefined) return undefined;
  const line = limitsText.split('\n').find((l) => l.startsWith('Max open files'));
  if (!line) return undefined;
  const m = line.slice('Max open files'.length).trim().split(/\s+/);
  const val = (s: string | undefined): number => (s === 'unlimited' ? Infinity : Number(s));
  const soft = val(m[0]);
  const hard = val(m[1]);
  return Number.isNaN(soft) || Number.isNaN(hard) ? undefined : { soft, hard };
}

/** Parses one field of /proc/meminfo in KB. */
export function meminfoKB(text: string | undefined, field: string): number | undefined {
  const m = text?.match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
  return m ? Number(m[1]) : undefined;
}

function triple(a: number[] | undefined): [number, number, number] | undefined {
  return a && a.length >= 3 ? [a[0]!, a[1]!, a[2]!] : undefined;
}

/** Reads every value preflight uses; missing files become `undefined`. `procRoot` defaults to /proc. */
export async function readSnapshot(opts: { procRoot?: string; serverPid?: number } = {}): Promise<ProcSnapshot> {
  const root = opts.procRoot ?? '/proc';
  const sys = (k: string): Promise<string | undefined> => readText(root, join('sys', k));
  const [selfLimits, serverLimits, nrOpen, fileMax, fileNr, portRange, somaxconn, synBacklog, tcpMem, tcpRmem, tcpWmem, ctMax, ctCount, meminfo] =
    await Promise.all([
      readText(root, 'self/limits'),
      opts.serverPid !== undefined ? readText(root, `${opts.serverPid}/limits`) : Promise.resolve(undefined),
      sys('fs/nr_open'),
      sys('fs/file-max'),
      sys('fs/file-nr'),
      sys('net/ipv4/ip_local_port_range'),
      sys('net/core/somaxconn'),
      sys('net/ipv4/tcp_max_syn_backlog'),
      sys('net/ipv4/tcp_mem'),
      sys('net/ipv4/tcp_rmem'),
      sys('net/ipv4/tcp_wmem'),
      sys('net/netfilter/nf_conntrack_max'),
      sys('net/netfilter/nf_conntrack_count'),
      readText(root, 'meminfo'),
    ]);
  const pr = numbers(portRange);
  const snap: ProcSnapshot = {
    selfNofile: parseNofile(selfLimits),
    nrOpen: numbers(nrOpen)?.[0],
    fileMax: numbers(fileMax)?.[0],
    fileAllocated: numbers(fileNr)?.[0],
    portRange: pr && pr.length >= 2 ? [pr[0]!, pr[1]!] : undefined,
    somaxconn: numbers(somaxconn)?.[0],
    tcpMaxSynBacklog: numbers(synBacklog)?.[0],
    tcpMem: triple(numbers(tcpMem)),
    tcpRmem: triple(numbers(tcpRmem)),
    tcpWmem: triple(numbers(tcpWmem)),
    memTotalKB: meminfoKB(meminfo, 'MemTotal'),
    memAvailableKB: meminfoKB(meminfo, 'MemAvailable'),
    // tcp_mem counts pages; x86-64 and arm64 Linux as configured here use 4 KiB pages.
    pageSize: 4096,
  };
  if (opts.serverPid !== undefined) snap.server = { pid: opts.serverPid, nofile: parseNofile(serverLimits) };
  const max = numbers(ctMax)?.[0];
  if (max !== undefined) snap.conntrack = { max, count: numbers(ctCount)?.[0] ?? 0 };
  return snap;
}
