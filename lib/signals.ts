// Ctrl-C handling shared by the CLIs: the first SIGINT/SIGTERM stops gracefully, a second exits at once.

/**
 * Calls `stop` on the first SIGINT or SIGTERM; on a second one, exits immediately with 130.
 * Returns a function that removes the handlers. Only CLIs use this (library modules never exit).
 */
export function onInterrupt(stop: (signal: NodeJS.Signals) => void | Promise<void>, log: (line: string) => void = (l) => process.stderr.write(l + '\n')): () => void {
  let count = 0;
  const handler = (signal: NodeJS.Signals): void => {
    count++;
    if (count === 1) {
      log(`${signal}: stopping (again to exit at once)`);
      Promise.resolve()
        .then(() => stop(signal))
        .catch((err: unknown) => {
          log(`error while stopping: ${err instanceof Error ? err.message : String(err)}`);
          process.exitCode = 1;
        });
    } else {
      process.exit(130);
    }
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}
