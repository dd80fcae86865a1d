// A spare `iptables-nft-restore`: started ahead, waiting on its stdin, so that the event that
// needs it does not wait for a process to start (fork and exec of a large Node process cost 5 to
// 12 ms on the machines measured: bench/RESULTS-2026-11-30.md). When a call comes, the spare
// gets the payload; once the runner has been quiet for a moment, the next spare is started.
//
// Invariants (docs/design.md, invariant cost-proportional):
// - Only iptables-nft-restore. It takes no lock and reads nothing of the kernel before its input
//   is complete: the nft cache is built when the transaction is committed, so a process started
//   earlier applies exactly what it is given, against the kernel as it is then (pinned on the
//   real kernel by spare-process.test.ts). Never iptables-legacy-restore, which may take the
//   xtables lock that kube-proxy and flannel wait for.
// - Only the same command and arguments: a call with other ones (another backend, another lock
//   wait) kills the spare and runs a process of its own.
// - A spare that was gone before it could read its input applied nothing: the call runs again in
//   a fresh process. A spare never outlives `close()`; one left by a process that died reads end
//   of input and exits having done nothing.

import { basename } from 'node:path';
import { startCommand, type RunResult, type StartedCommand } from './runner.ts';

/** How long the runner must be quiet before the next spare is started. */
export const SPARE_AFTER_QUIET_MS = 25;

export class SpareProcesses {
  private spare: { readonly key: string; readonly p: StartedCommand } | undefined;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  private next: { readonly key: string; readonly cmd: string; readonly args: readonly string[] } | undefined;
  private readonly netns: string | undefined;
  /** Calls served by a spare, and calls that found none ready (tests, the benchmark). */
  readonly counts = { spare: 0, fresh: 0 };

  constructor(netns?: string) {
    this.netns = netns;
  }

  static eligible(cmd: string): boolean {
    return basename(cmd) === 'iptables-nft-restore';
  }

  /** Run `cmd args` with this input through a spare; undefined when the command is not eligible. */
  async run(cmd: string, args: readonly string[], input: string): Promise<RunResult | undefined> {
    if (!SpareProcesses.eligible(cmd) || this.closed) return undefined;
    const key = JSON.stringify([cmd, ...args]);
    const s = this.spare;
    this.spare = undefined;
    let r: RunResult & { lost?: boolean };
    if (s && s.key === key && !s.p.exited) {
      this.counts.spare++;
      r = await s.p.finish(input);
      if (r.lost) {
        this.counts.fresh++;
        r = await startCommand(cmd, args, this.netns).finish(input);
      }
    } else {
      s?.p.kill();
      this.counts.fresh++;
      r = await startCommand(cmd, args, this.netns).finish(input);
    }
    this.prepare(key, cmd, args);
    const { lost: _lost, ...result } = r;
    return result;
  }

  /**
   * Start the next spare once the runner has been quiet for SPARE_AFTER_QUIET_MS: starting a
   * process blocks this thread for the fork (5 to 12 ms measured), which must not land inside
   * the rest of this sync (its next steps, the garbage collection right after) or the next event.
   * `touch()` (every call through the agent's runner, start and end) moves the moment on.
   */
  private prepare(key: string, cmd: string, args: readonly string[]): void {
    this.next = { key, cmd, args };
    this.touch();
  }

  /** The runner is busy: put off starting the next spare. */
  touch(): void {
    clearTimeout(this.timer);
    if (!this.next || this.closed) return;
    this.timer = setTimeout(() => {
      const n = this.next;
      this.next = undefined;
      if (!n || this.closed || this.spare) return;
      this.spare = { key: n.key, p: startCommand(n.cmd, n.args, this.netns) };
    }, SPARE_AFTER_QUIET_MS);
    this.timer.unref();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.spare?.p.kill();
    this.spare = undefined;
  }
}
