// Spare restore processes: started ahead, waiting on their stdin, so that the event that needs
// one does not wait for a process to start (fork and exec cost 5 to 12 ms on the machines
// measured: bench/RESULTS-2026-11-30.md). One slot per command: `iptables-nft-restore` (rule
// changes) and `ipset restore -exist` (big set payloads: a waiting `ipset restore` took 6.3 ms
// for 1000 lines where the ipset session, which sends each line as a netlink message of its own,
// took 19.4: bench/RESULTS-2026-12-01.md). When a call comes, the spare gets the payload; once
// the runner has been quiet for a moment, the next spare of that command is started.
//
// Invariants (docs/design.md, invariant cost-proportional):
// - Only commands that take no lock and read nothing of the kernel before their input is
//   complete, so that a process started earlier applies exactly what it is given, against the
//   kernel as it is then (pinned on the real kernel by spare-process.test.ts):
//   iptables-nft-restore (the nft cache is built when the transaction is committed) and
//   `ipset restore` (userspace ipset has no lock and sends the kernel only what it has parsed).
//   Never iptables-legacy-restore, which may take the xtables lock that kube-proxy and
//   flannel wait for.
// - Only the same command and arguments: a call with other ones (another backend, another lock
//   wait) kills that command's spare and runs a process of its own.
// - A spare that was gone before it could read its input applied nothing: the call runs again in
//   a fresh process. A spare never outlives `close()`; one left by a process that died reads end
//   of input and exits having done nothing.

import { basename } from 'node:path';
import { startCommand, type RunResult, type StartedCommand } from './runner.ts';

/** How long the runner must be quiet before the next spare is started. */
export const SPARE_AFTER_QUIET_MS = 25;

export class SpareProcesses {
  /** By slot (the command's name): the spare waiting, and the key of its command and arguments. */
  private readonly spares = new Map<string, { readonly key: string; readonly p: StartedCommand }>();
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  /** Calls through the agent's runner in flight (enter/leave): no spare starts while one runs. */
  private busy = 0;
  /** By slot: the spare to start once the runner is quiet. */
  private readonly next = new Map<string, { readonly key: string; readonly cmd: string; readonly args: readonly string[] }>();
  private readonly netns: string | undefined;
  /** Calls served by a spare, and calls that found none ready (tests, the benchmark). */
  readonly counts = { spare: 0, fresh: 0 };

  constructor(netns?: string) {
    this.netns = netns;
  }

  static eligible(cmd: string, args: readonly string[] = []): boolean {
    const name = basename(cmd);
    return name === 'iptables-nft-restore' || (name === 'ipset' && args.length === 2 && args[0] === 'restore' && args[1] === '-exist');
  }

  /** Whether a spare for exactly this command and arguments is waiting. */
  ready(cmd: string, args: readonly string[]): boolean {
    const s = this.spares.get(basename(cmd));
    return !this.closed && !!s && s.key === JSON.stringify([cmd, ...args]) && !s.p.exited;
  }

  /** Have a spare of this command ready for a later call (a call the caller served otherwise). */
  want(cmd: string, args: readonly string[]): void {
    if (!SpareProcesses.eligible(cmd, args) || this.closed || this.ready(cmd, args)) return;
    this.next.set(basename(cmd), { key: JSON.stringify([cmd, ...args]), cmd, args });
    this.touch();
  }

  /** Run `cmd args` with this input through a spare; undefined when the command is not eligible. */
  async run(cmd: string, args: readonly string[], input: string): Promise<RunResult | undefined> {
    if (!SpareProcesses.eligible(cmd, args) || this.closed) return undefined;
    const slot = basename(cmd);
    const key = JSON.stringify([cmd, ...args]);
    const s = this.spares.get(slot);
    this.spares.delete(slot);
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
    this.next.set(slot, { key, cmd, args });
    this.touch();
    const { lost: _lost, ...result } = r;
    return result;
  }

  /** A call through the agent's runner begins: no spare starts until every call in flight has ended. */
  enter(): void {
    this.busy++;
    clearTimeout(this.timer);
  }

  /** A call through the agent's runner ended: once none is in flight, the quiet moment starts (touch). */
  leave(): void {
    if (this.busy > 0) this.busy--;
    this.touch();
  }

  /**
   * Start the next spares once the runner has been quiet for SPARE_AFTER_QUIET_MS: starting a
   * process blocks this thread for the fork (5 to 12 ms measured), which must not land inside
   * the rest of this sync (its next steps, the garbage collection right after) or the next event.
   * Every call through the agent's runner holds the moment off while it runs (enter/leave), so a
   * call that lasts longer than the moment does not get another command's spare forked beside it;
   * its end moves the moment on.
   */
  private touch(): void {
    clearTimeout(this.timer);
    if (this.busy > 0 || this.next.size === 0 || this.closed) return;
    this.timer = setTimeout(() => {
      const pending = [...this.next];
      this.next.clear();
      for (const [slot, n] of pending) {
        if (this.closed || this.spares.has(slot)) continue;
        this.spares.set(slot, { key: n.key, p: startCommand(n.cmd, n.args, this.netns) });
      }
    }, SPARE_AFTER_QUIET_MS);
    this.timer.unref();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    for (const s of this.spares.values()) s.p.kill();
    this.spares.clear();
    this.next.clear();
  }
}
