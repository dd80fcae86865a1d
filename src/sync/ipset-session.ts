// A long-lived `ipset -exist -` process (ipset's interactive mode) that takes the small set
// payloads of single events, so that most events reach the kernel without starting a process.
//
// Why: an event that changes set members only (a pod relabelled or started elsewhere, a
// namespace relabelled) is one `ipset restore` of a few lines; starting that process is most of
// the event's time (bench/parts/kernel.ts, "processes p99"), and under load its tail dominates
// the event-to-kernel p99 (docs/design.md, invariant cost-proportional).
//
// Protocol: ipset reads one command per line from stdin and prints the prompt "ipset> " before
// each read; a failing command prints its error (stderr, merged into stdout so that the order
// holds) and ipset reads on. `stdbuf -o0` makes the prompt reach the pipe at once (stdout to a
// pipe is block-buffered otherwise). After the startup prompt, writing N lines yields N more
// prompts, and the text before the k-th of them is line k's error, if any.
//
// Semantics against `ipset restore -exist` (which the Syncer runs otherwise):
// - Success is the same: every line applied.
// - On a failing line, restore stops; the session runs the remaining lines too. Either way the
//   call fails with "Error in line N: ..." (the first failing line, as restore words it; restore
//   itself can name a later one, an error it finds before sending the batch holding an earlier
//   add the kernel refuses; the line is only a hint for the piecewise apply, src/sync/pieces.ts) and
//   the Syncer treats the kernel as unknown (re-read, piecewise apply: docs/design.md,
//   fail-closed), so nothing relies on the lines after the failure being skipped. The lines of
//   one call are always of one plan step, in the step's order: Syncer.apply never joins the
//   step of additions with the step of removals and gate additions, which must not run after a
//   failed add.
// - Payloads above `maxLines` (1000) go to `ipset restore`, and so does everything when the
//   session cannot run (no stdbuf, ipset exited): the session is an optimisation, never a
//   dependency. The session sends each line as a netlink message of its own; `ipset restore`
//   batches many into one, which is faster for big payloads once it runs: measured in a
//   namespace, the session took 6.2 ms for 300 lines, 19.4 for 1000 and 41 for 2000, a waiting
//   `ipset restore` 4.5, 6.3 and 9.1 ms (bench/RESULTS-2026-12-01.md), a freshly started one
//   about 12 ms more. The agent's runner (agent-runner.ts) sends big payloads to a spare
//   `ipset restore` when one waits.

import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import type { RunResult } from './runner.ts';

const PROMPT = 'ipset> ';
/** A call still unanswered after this long kills the session (a hung ipset), as processRunner does. */
const TIMEOUT_MS = 60_000;

interface Job {
  readonly lines: readonly string[];
  readonly answers: string[];
  readonly resolve: (r: RunResult) => void;
  readonly timer: NodeJS.Timeout;
}

export interface IpsetSessionOptions {
  /** Run inside this network namespace (`ip netns exec`), as processRunner(netns). */
  readonly netns?: string;
  /** Payloads with more lines go to `ipset restore`. Default 1000. */
  readonly maxLines?: number;
}

export class IpsetSession {
  readonly maxLines: number;
  private readonly netns: string | undefined;
  private child: ChildProcessWithoutNullStreams | undefined;
  /** Resolves when the startup prompt arrived (true) or the process failed to start (false). */
  private started: Promise<boolean> | undefined;
  private onStartup: ((ok: boolean) => void) | undefined;
  private out = '';
  private job: Job | undefined;
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** Calls answered by the session (tests and metrics). */
  calls = 0;

  constructor(o: IpsetSessionOptions = {}) {
    this.netns = o.netns;
    this.maxLines = o.maxLines ?? 1000;
  }

  /** Lines of a restore payload, or undefined when the session should not take it. */
  linesOf(input: string): string[] | undefined {
    if (this.closed) return undefined;
    const lines = input.split('\n').filter((l) => l.trim() !== '');
    return lines.length <= this.maxLines ? lines : undefined;
  }

  /**
   * Runs the lines; resolves like a `ipset restore -exist` RunResult, or undefined when the
   * session could not start (the caller runs `ipset restore` instead). Calls are serialised.
   */
  run(lines: readonly string[]): Promise<RunResult | undefined> {
    const next = this.tail.then(() => this.runNow(lines));
    this.tail = next.catch(() => undefined);
    return next;
  }

  /** Ends the process (the agent stopping); later calls go to `ipset restore`. */
  close(): void {
    this.closed = true;
    this.child?.stdin.end();
    this.child?.kill();
    this.child = undefined;
  }

  private async runNow(lines: readonly string[]): Promise<RunResult | undefined> {
    if (lines.length === 0) return { stdout: '', stderr: '', exitCode: 0 };
    if (!(await this.start())) return undefined;
    const child = this.child!;
    return new Promise<RunResult>((resolve) => {
      const timer = setTimeout(() => {
        this.finish({ stdout: '', stderr: `ipset session: no answer within ${TIMEOUT_MS} ms; killed\n`, exitCode: 124 });
        child.kill('SIGKILL');
      }, TIMEOUT_MS);
      this.job = { lines, answers: [], resolve, timer };
      this.calls++;
      child.stdin.write(lines.join('\n') + '\n');
    });
  }

  private start(): Promise<boolean> {
    if (this.child && this.started) return this.started;
    const argv = ['stdbuf', '-o0', 'ipset', '-exist', '-'];
    const [file, args] = this.netns ? ['ip', ['netns', 'exec', this.netns, ...argv]] : [argv[0]!, argv.slice(1)];
    // `sh -c 'exec ... 2>&1'`: errors and prompts in one pipe, in the order ipset wrote them.
    const child = spawn('sh', ['-c', 'exec "$@" 2>&1', 'sh', file, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    this.out = '';
    this.started = new Promise<boolean>((resolve) => (this.onStartup = resolve));
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => this.read(d));
    child.stderr.on('data', () => {}); // sh's own complaints; ipset's go to stdout
    child.stdin.on('error', () => {});
    child.on('error', () => this.exited(child, 127));
    child.on('close', (code) => this.exited(child, code ?? 1));
    return this.started;
  }

  private read(d: string): void {
    this.out += d;
    for (let i = this.out.indexOf(PROMPT); i >= 0; i = this.out.indexOf(PROMPT)) {
      const text = this.out.slice(0, i);
      this.out = this.out.slice(i + PROMPT.length);
      if (this.onStartup) {
        const ok = this.onStartup;
        this.onStartup = undefined;
        ok(true);
        continue;
      }
      const job = this.job;
      if (!job) continue;
      job.answers.push(text);
      if (job.answers.length === job.lines.length) this.finish(answer(job));
    }
  }

  private finish(r: RunResult): void {
    const job = this.job;
    if (!job) return;
    this.job = undefined;
    clearTimeout(job.timer);
    job.resolve(r);
  }

  private exited(child: ChildProcessWithoutNullStreams, code: number): void {
    if (this.child !== child) return;
    this.child = undefined;
    this.started = undefined;
    if (this.onStartup) {
      const failed = this.onStartup;
      this.onStartup = undefined;
      failed(false);
    }
    const job = this.job;
    if (job) this.finish({ stdout: '', stderr: `${answer(job).stderr}ipset session exited with code ${code} after ${job.answers.length} of ${job.lines.length} lines${this.out.trim() ? `: ${this.out.trim()}` : ''}\n`, exitCode: code === 0 ? 1 : code });
  }
}

/** The RunResult `ipset restore` would give: the first failing line named as restore names it. */
function answer(job: Job): RunResult {
  const errors = job.answers.flatMap((text, i) => (text.trim() ? [`${text.trim().replace(/^(ipset v[\d.]+: )?/, (_m, v: string | undefined) => `${v ?? 'ipset: '}Error in line ${i + 1}: `)}`] : []));
  return { stdout: '', stderr: errors.length ? `${errors.join('\n')}\n` : '', exitCode: errors.length ? 1 : 0 };
}
