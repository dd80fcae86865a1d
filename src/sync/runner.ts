// The only way the sync layer runs processes. A Runner can be pointed into a network
// namespace (tests, the lab) and can record what it ran (tests that show the lines written).

import { spawn } from 'node:child_process';

export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly exitCode: number;
}

export interface Runner {
  run(cmd: string, args: readonly string[], opts?: { input?: string }): Promise<RunResult>;
}

export class CommandError extends Error {
  readonly command: string;
  readonly exitCode: number;
  readonly stderr: string;
  constructor(command: string, exitCode: number, stderr: string, detail = '') {
    super(`${command} failed with exit code ${exitCode}: ${stderr.trim() || '(no output)'}${detail ? `\n${detail}` : ''}`);
    this.command = command;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

/** Kills a command still running after this long (a wedged xtables lock, a hung ipset). */
const TIMEOUT_MS = 60_000;

/** A command started and waiting for its input (see `startCommand`). */
export interface StartedCommand {
  /** Whether it has exited already (it then never applied any input). */
  readonly exited: boolean;
  /**
   * Write the input, end it, and wait for the exit (killed after TIMEOUT_MS from here). `lost`:
   * the process was gone before it could read the input, so nothing of it was applied.
   */
  finish(input: string): Promise<RunResult & { readonly lost?: boolean }>;
  kill(): void;
}

/**
 * Start a command (on this host, or inside a named network namespace via `ip netns exec`) with
 * its stdin open: `finish` gives it its input. processRunner starts and finishes at once; a spare
 * process (spare-process.ts) is started ahead of the call that needs it.
 */
export function startCommand(cmd: string, args: readonly string[], netns?: string): StartedCommand {
  const [file, argv] = netns ? ['ip', ['netns', 'exec', netns, cmd, ...args]] : [cmd, [...args]];
  const child = spawn(file, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let spawnError: Error | undefined;
  let exited = false;
  let inputLost = false;
  let fed = false;
  let exitCode: number | null = null;
  const closed = new Promise<void>((resolve) =>
    child.on('close', (code) => {
      exitCode = code;
      resolve();
    }),
  );
  child.on('exit', () => (exited = true));
  child.stdout.on('data', (d: Buffer) => out.push(d));
  child.stderr.on('data', (d: Buffer) => err.push(d));
  // A command that exits without reading its input (or fails to start) closes the pipe.
  child.stdin.on('error', () => {
    if (!fed) inputLost = true;
  });
  child.on('error', (e) => {
    spawnError = e;
    exited = true;
  });
  return {
    get exited() {
      return exited;
    },
    kill: () => {
      if (!exited) child.kill('SIGKILL');
    },
    async finish(input) {
      const lostAtStart = exited;
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, TIMEOUT_MS);
      child.stdin.write(input, (e) => {
        if (!e) fed = true;
      });
      child.stdin.end();
      await closed;
      clearTimeout(timer);
      const stderr = Buffer.concat(err).toString('utf8') + (spawnError ? `${spawnError.message}\n` : '') + (timedOut ? `killed after ${TIMEOUT_MS} ms\n` : '');
      return {
        stdout: Buffer.concat(out).toString('utf8'),
        stderr,
        exitCode: timedOut ? 124 : spawnError ? 127 : (exitCode ?? 1),
        ...(lostAtStart || inputLost ? { lost: true } : {}),
      };
    },
  };
}

/**
 * Runs commands on this host, or inside a named network namespace via `ip netns exec`.
 *
 * Plain `child_process.spawn`, not execa: every event that reaches the kernel runs one to three
 * of these, and execa's extra layers cost about 2 ms per command (more in the tail) in the
 * agent's process, measured in bench/parts/kernel.ts.
 */
export function processRunner(netns?: string): Runner {
  return {
    async run(cmd, args, opts = {}) {
      const { lost: _lost, ...r } = await startCommand(cmd, args, netns).finish(opts.input ?? '');
      return r;
    },
  };
}

export interface RecordedCall {
  readonly cmd: string;
  readonly args: readonly string[];
  readonly input?: string;
}

/** Wraps a runner and keeps every call, for tests and `--dry-run` style accounting. */
export class RecordingRunner implements Runner {
  readonly calls: RecordedCall[] = [];
  private readonly inner: Runner;
  constructor(inner: Runner) {
    this.inner = inner;
  }
  run(cmd: string, args: readonly string[], opts: { input?: string } = {}): Promise<RunResult> {
    this.calls.push({ cmd, args, ...(opts.input !== undefined ? { input: opts.input } : {}) });
    return this.inner.run(cmd, args, opts);
  }
  /** The calls that write (restore payloads), not the reads. */
  writes(): RecordedCall[] {
    return this.calls.filter((c) => c.args.includes('restore') || c.cmd.endsWith('-restore'));
  }
}

/** Runs and throws CommandError on a non-zero exit. */
export async function mustRun(r: Runner, cmd: string, args: readonly string[], opts: { input?: string } = {}): Promise<RunResult> {
  const res = await r.run(cmd, args, opts);
  if (res.exitCode !== 0) throw new CommandError([cmd, ...args].join(' '), res.exitCode, res.stderr);
  return res;
}
