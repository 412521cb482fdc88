// How a run's connections are spread over processes, addresses and ports.

/** Connections one floodtest or server process holds comfortably under this machine's 20,000 open-files limit. */
export const CONNS_PER_PROCESS = 18_000;

/** floodtest's default process count for N connections (one per 18,000). */
export function defaultClientProcs(conns: number): number {
  return Math.max(1, Math.ceil(conns / CONNS_PER_PROCESS));
}
