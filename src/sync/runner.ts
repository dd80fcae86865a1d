// The only way the sync layer runs processes. A Runner can be pointed into a network
// namespace (tests, the lab) and can record what it ran (tests that show the lines written).

import { execa } from 'execa';

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

/** Runs commands on this host, or inside a named network namespace via `ip netns exec`. */
export function processRunner(netns?: string): Runner {
  return {
    async run(cmd, args, opts = {}) {
      const [file, argv] = netns ? ['ip', ['netns', 'exec', netns, cmd, ...args]] : [cmd, [...args]];
      const r = await execa(file, argv, { input: opts.input ?? '', reject: false, stripFinalNewline: false, timeout: 60_000 });
      return { stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), exitCode: r.exitCode ?? (r.timedOut ? 124 : 1) };
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
