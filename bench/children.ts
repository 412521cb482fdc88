// Child processes of a bench run: started with their output captured line by line, stopped by PID with bounded
// escalation (the tool's own graceful signal, then SIGTERM, then SIGKILL), never by name.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';

/** A started child with its exit as a promise. */
export interface Child {
  name: string;
  pid: number;
  proc: ChildProcess;
  /** Resolves with the exit code (or the signal name) once the process has exited. */
  exited: Promise<number | string>;
  /** True once `exited` has resolved. */
  hasExited(): boolean;
  /** Last lines of stderr, for error messages. */
  stderrTail(): string[];
}

export interface SpawnOptions {
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Each stdout line (without newline). */
  onStdoutLine?: (line: string) => void;
  /** Each stderr line (without newline). */
  onStderrLine?: (line: string) => void;
  /** Copies stdout verbatim into this file. */
  stdoutFile?: string;
  /** Copies stderr verbatim into this file (the run folder keeps each tool's log). */
  stderrFile?: string;
  /** Run through /bin/sh -c (for --server-cmd). */
  shell?: boolean;
}

/** Children started and not yet exited, so an exiting c1m can still stop them (see killAllChildrenSync). */
const live = new Set<Child>();

/**
 * Sends `signal` to every child still running; synchronous, for process.on('exit') (a second Ctrl-C, a crash).
 * Children run in their own process group (detached), so a terminal's Ctrl-C reaches only c1m, which stops them in
 * order; this is the last resort when c1m itself exits first.
 */
export function killAllChildrenSync(signal: NodeJS.Signals = 'SIGKILL'): number[] {
  const pids: number[] = [];
  for (const c of live) {
    try {
      process.kill(c.pid, signal);
      pids.push(c.pid);
    } catch {
      /* already gone */
    }
  }
  return pids;
}

/** How many stderr lines a child keeps for error messages. */
const STDERR_TAIL_LINES = 20;

/** Starts `cmd` with piped output; rejects if it cannot be spawned at all. */
export function startChild(name: string, cmd: string, opts: SpawnOptions): Promise<Child> {
  return new Promise((resolve, reject) => {
    const common = { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] as ['ignore', 'pipe', 'pipe'], detached: true };
    const proc = opts.shell ? spawn('/bin/sh', ['-c', `exec ${cmd}`], common) : spawn(cmd, opts.args, common);
    const tail: string[] = [];
    let done = false;
    const files: WriteStream[] = [];
    const exited = new Promise<number | string>((res) => {
      proc.once('exit', (code, signal) => {
        done = true;
        res(code ?? signal ?? 'unknown');
      });
    });
    const closeFiles = (): Promise<void> => Promise.all(files.map((f) => new Promise<void>((r) => f.end(r)))).then(() => undefined);
    // The output files are complete only when the pipes have drained; callers await `exited`, so chain onto it.
    const fullyExited = Promise.all([exited, new Promise<void>((r) => proc.once('close', () => r()))]).then(async ([c]) => {
      await closeFiles();
      return c;
    });
    if (proc.stdout) {
      if (opts.stdoutFile) {
        const f = createWriteStream(opts.stdoutFile);
        files.push(f);
        proc.stdout.pipe(f, { end: false });
      }
      if (opts.onStdoutLine) createInterface({ input: proc.stdout, crlfDelay: Infinity }).on('line', opts.onStdoutLine);
      else if (!opts.stdoutFile) proc.stdout.resume();
    }
    if (proc.stderr) {
      if (opts.stderrFile) {
        const f = createWriteStream(opts.stderrFile);
        files.push(f);
        proc.stderr.pipe(f, { end: false });
      }
      createInterface({ input: proc.stderr, crlfDelay: Infinity }).on('line', (line) => {
        tail.push(line);
        if (tail.length > STDERR_TAIL_LINES) tail.shift();
        opts.onStderrLine?.(line);
      });
    }
    proc.once('error', (err) => {
      if (proc.pid === undefined) reject(new Error(`${name}: cannot start ${cmd}: ${err.message}`));
    });
    proc.once('spawn', () => {
      const child: Child = {
        name,
        pid: proc.pid!,
        proc,
        exited: fullyExited,
        hasExited: () => done,
        stderrTail: () => [...tail],
      };
      live.add(child);
      void exited.then(() => live.delete(child));
      resolve(child);
    });
  });
}

function timeout(ms: number): Promise<'timeout'> {
  return new Promise((r) => setTimeout(r, ms, 'timeout').unref());
}

/**
 * Stops a child by PID: `first` (the tool's graceful signal), then SIGTERM, then SIGKILL, waiting up to `graceMs`
 * after each. Returns how it ended. Safe to call on a child that has already exited.
 */
export async function stopChild(child: Child, first: NodeJS.Signals = 'SIGINT', graceMs = 5000): Promise<{ exit: number | string; escalated: NodeJS.Signals[] }> {
  const escalated: NodeJS.Signals[] = [];
  for (const sig of [first, 'SIGTERM', 'SIGKILL'] as NodeJS.Signals[]) {
    if (child.hasExited()) break;
    if (escalated.includes(sig)) continue;
    escalated.push(sig);
    try {
      process.kill(child.pid, sig);
    } catch {
      break; // already gone
    }
    if ((await Promise.race([child.exited, timeout(sig === 'SIGKILL' ? 2000 : graceMs)])) !== 'timeout') break;
  }
  const exit = await Promise.race([child.exited, timeout(2000)]);
  return { exit: exit === 'timeout' ? 'still running' : exit, escalated };
}

/** Resolves with the first value `probe` returns that is not undefined, checking on each call of `feed`. */
export function waitFor<T>(what: string, ms: number, register: (check: (v: T | undefined) => void) => void, failed?: Promise<unknown>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    register((v) => {
      if (v !== undefined) {
        clearTimeout(t);
        resolve(v);
      }
    });
    failed?.then((why) => {
      clearTimeout(t);
      reject(new Error(`${what}: process exited (${String(why)}) first`));
    });
  });
}
