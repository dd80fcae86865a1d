// Keeps the kernel's copy of our objects equal to the desired Ruleset.
//
// - Fast path: diff against what we last wrote (`known`); no kernel read per event.
// - `verify()` re-reads the kernel and repairs drift (a flushed chain, a removed or displaced
//   hook, a destroyed set); the agent calls it periodically and shortly after writes.
// - A failed apply forgets `known`, so the next sync re-reads the kernel (full resync).
// - Isolation is never removed by an error: payloads only add or rewrite in dependency
//   order, and a failed transaction leaves the previous rules in place (iptables-restore
//   commits a table atomically).

import { renderHook, ruleId } from '../compiler/render.ts';
import type { Ruleset } from '../compiler/ruleset.ts';
import { detectBackend, type Backend } from './backend.ts';
import { parseFilterSave, parseIpsetSave, type KernelState } from './kernel-state.ts';
import { canonicalEntry, diff, isEmpty, payloads, type Payloads, type Plan } from './plan.ts';
import { CommandError, mustRun, type Runner } from './runner.ts';

export interface SyncResult {
  readonly plan: Plan;
  readonly payloads: Payloads;
  /** False when nothing differed, or under dry run. */
  readonly wrote: boolean;
  /** True when the kernel was read for this sync (verify, first sync, after a failure). */
  readonly readKernel: boolean;
  readonly durationMs: number;
  readonly counts: { readonly rules: number; readonly setEntries: number };
}

export class ApplyError extends Error {
  readonly step: string;
  readonly offendingLine?: string;
  constructor(step: string, cause: CommandError, payload: string) {
    const n = /(?:line:?\s*|Error in line )(\d+)/i.exec(cause.stderr)?.[1];
    const offending = n ? payload.split('\n')[Number(n) - 1] : undefined;
    super(`${step} failed: ${cause.message}${offending !== undefined ? `\noffending line ${n}: ${offending}` : ''}`);
    this.step = step;
    if (offending !== undefined) this.offendingLine = offending;
  }
}

export interface SyncerOptions {
  readonly runner: Runner;
  readonly backend?: Backend;
  readonly dryRun?: boolean;
  /** Seconds iptables-restore waits for the xtables lock. */
  readonly lockWaitSeconds?: number;
}

export const EMPTY_RULESET: Ruleset = { node: '', sets: [], chains: [], hooks: [] };

export class Syncer {
  private readonly runner: Runner;
  private backendP: Promise<Backend> | undefined;
  private known: KernelState | undefined;
  private readonly dryRun: boolean;
  private readonly lockWait: number;

  constructor(o: SyncerOptions) {
    this.runner = o.runner;
    this.dryRun = !!o.dryRun;
    this.lockWait = o.lockWaitSeconds ?? 10;
    if (o.backend) this.backendP = Promise.resolve(o.backend);
  }

  backend(): Promise<Backend> {
    this.backendP ??= detectBackend(this.runner);
    return this.backendP;
  }

  async readKernel(): Promise<KernelState> {
    const b = await this.backend();
    const filter = await mustRun(this.runner, b.save, ['-t', 'filter']);
    if (/incompatible/i.test(filter.stdout)) {
      throw new Error(`${b.save} reports the filter table as incompatible (another iptables variant wrote it): ${filter.stdout.trim().split('\n')[0]}`);
    }
    const sets = await mustRun(this.runner, 'ipset', ['save']);
    return { ...parseFilterSave(filter.stdout), sets: parseIpsetSave(sets.stdout) };
  }

  /** Apply the difference between `desired` and the kernel (or what we last wrote). */
  async sync(desired: Ruleset, opts: { readKernel?: boolean } = {}): Promise<SyncResult> {
    const t0 = performance.now();
    const read = !!opts.readKernel || !this.known;
    const state = read ? await this.readKernel() : this.known!;
    const plan = diff(desired, state);
    const p = payloads(plan);
    const counts = {
      rules: p.iptables.split('\n').filter((l) => l.startsWith('-A ') || l.startsWith('-I ')).length,
      setEntries: plan.addMembers.length + plan.delMembers.length + [...plan.createSets, ...plan.replaceSets].reduce((n, s) => n + s.members.length, 0),
    };
    const result = (wrote: boolean): SyncResult => ({ plan, payloads: p, wrote, readKernel: read, durationMs: performance.now() - t0, counts });
    if (isEmpty(plan)) {
      this.known = state;
      return result(false);
    }
    if (this.dryRun) return result(false);
    try {
      await this.apply(p);
    } catch (e) {
      this.known = undefined; // the kernel is in an unknown state: read it next time
      throw e;
    }
    this.known = stateOf(desired);
    return result(true);
  }

  /** Re-read the kernel and repair whatever differs: drift, other agents' edits. */
  verify(desired: Ruleset): Promise<SyncResult> {
    return this.sync(desired, { readKernel: true });
  }

  /** Remove every chain, hook and set we own, and nothing else. */
  cleanup(): Promise<SyncResult> {
    return this.sync(EMPTY_RULESET, { readKernel: true });
  }

  private async apply(p: Payloads): Promise<void> {
    const b = await this.backend();
    const step = async (name: string, cmd: string, args: string[], input: string) => {
      if (!input) return;
      try {
        await mustRun(this.runner, cmd, args, { input });
      } catch (e) {
        if (e instanceof CommandError) throw new ApplyError(name, e, input);
        throw e;
      }
    };
    await step('ipset restore (create and add)', 'ipset', ['restore', '-exist'], p.ipsetBefore);
    await step('iptables-restore', b.restore, ['--noflush', `--wait=${this.lockWait}`], p.iptables);
    await step('ipset restore (delete and destroy)', 'ipset', ['restore', '-exist'], p.ipsetAfter);
  }
}

/** The kernel state that results from a successful apply of `rs`. */
export function stateOf(rs: Ruleset): KernelState {
  return {
    chains: new Map(rs.chains.map((c) => [c.name, { name: c.name, ruleIds: c.rules.map(ruleId) }])),
    hooks: rs.hooks.map((h) => ({ chain: h.chain, target: h.target, position: 1, line: renderHook(h).replace(/^-I (\S+) 1 /, '-A $1 ') })),
    sets: new Map(rs.sets.map((s) => [s.name, { name: s.name, type: s.type, members: new Map(s.members.map((m) => [canonicalEntry(s.type, m.entry), !!m.nomatch])) }])),
  };
}
