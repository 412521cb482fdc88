// What the run folder records about the machine: versions, CPU, memory, load, git commit.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';

/** Static facts about the machine and the code. */
export interface MachineInfo {
  hostname: string;
  kernel: string;
  os: string;
  arch: string;
  cpuModel: string;
  cpus: number;
  memTotalMB: number;
  memAvailableMB: number | null;
  node: string;
  nodeFlags: string[];
  git: { commit: string | null; dirty: boolean | null };
  loadavg: number[];
}

function git(args: string[], cwd: string): string | null {
  try {
    return execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).trim();
  } catch {
    return null;
  }
}

/** Reads the machine facts; `repoDir` is where to ask git for the commit. */
export function machineInfo(repoDir: string): MachineInfo {
  let memAvail: number | null = null;
  try {
    const m = readFileSync('/proc/meminfo', 'utf8').match(/^MemAvailable:\s+(\d+) kB/m);
    if (m) memAvail = Math.round(Number(m[1]) / 1024);
  } catch {
    /* not Linux */
  }
  const status = git(['status', '--porcelain', '--untracked-files=no'], repoDir);
  return {
    hostname: os.hostname(),
    kernel: os.release(),
    os: `${os.type()} ${os.version()}`,
    arch: os.arch(),
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    cpus: os.cpus().length,
    memTotalMB: Math.round(os.totalmem() / 1048576),
    memAvailableMB: memAvail,
    node: process.version,
    nodeFlags: process.execArgv,
    git: { commit: git(['rev-parse', 'HEAD'], repoDir), dirty: status === null ? null : status.length > 0 },
    loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/** Cumulative machine CPU time from /proc/stat, in seconds (busy and total over all cores). */
export function machineCpu(): { busySec: number; totalSec: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return { busySec: (total - idle) / 100, totalSec: total / 100 };
  } catch {
    return undefined;
  }
}
