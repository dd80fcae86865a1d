// Keeps the kernel's copy of our objects equal to the desired Ruleset.
//
// - Fastest path, `syncDelta`: the plan comes from the IncrementalCompiler's delta, checked
//   against what we last wrote (`known`), and `known` is patched with the plan; cost in
//   proportion to the change, no kernel read, no walk of the whole Ruleset.
// - Fast path, `sync`: diff the whole Ruleset against `known`; no kernel read per event.
// - Either falls back to reading the kernel and diffing the whole Ruleset when `known` is
//   unknown (first sync, after a failure) and, for `syncDelta`, when the delta does not start
//   from the Ruleset we last applied (the lineage is broken: the compiler was reset or rebuilt,
//   a delta was skipped, or the last Ruleset came from somewhere else).
// - `verify()` re-reads the kernel and repairs drift (a flushed chain, a removed or displaced
//   hook, a destroyed set); the agent calls it periodically and shortly after writes.
// - A failed apply forgets `known`, so the next sync re-reads the kernel (full resync).
// - Two steps per write: the main apply (sets created and filled, rules written and appended,
//   set members removed) is what a sync waits for: when it returns, the kernel enforces the
//   desired Ruleset. Deleting stale rules of unordered chains, chains and sets no longer wanted
//   is garbage collection, kept pending until `collectGarbage()` (the agent calls it right after
//   each sync) or the start of the next sync, verify or cleanup, whichever comes first. `known`
//   always reflects the kernel: after the main apply, unordered chains hold their stale rules
//   too (the new ones appended at the end) until the garbage collection removes them.
// - Isolation is never removed by an error: payloads only add or rewrite in dependency
//   order, and a failed transaction leaves the previous rules in place (iptables-restore
//   commits a table atomically).
// - Verdicts of the rules in force only (invariant verdicts-of-the-rules-in-force, docs/design.md
//   "The verdict cache"): the sets whose members are verdicts the kernel remembered
//   (IpSet.runtime.flushOnChange) are emptied after every write that may deny something the
//   rules allowed (verdict-bearing.ts: all but writes of set members that only widen), whether it
//   succeeded or not, before the sync returns; and once more `flushAgainMs` later, for a verdict
//   a packet that was in the middle of its walk when the write landed added after the first
//   flush. The sets flushed are those of the Ruleset applied and of the one before it (a layout
//   that drops the cache flushes it while its rules may still be in force). A flush that fails
//   is owed: the sync (or garbage collection) fails, and the next sync runs it even when nothing
//   else differs, failing until it succeeds; a failing second flush is owed the same way, for the
//   next sync (the agent verifies every --resync-interval). Meanwhile the kernel expires every
//   verdict within the set's timeout. In a piecewise apply a failing flush is owed, never taken
//   for the piece's refusal.

import type { IpSet, Ruleset, RulesetDelta } from '../compiler/ruleset.ts';
import { renderSetFlush, ruleId } from './render.ts';
import { flushedSets, mayNarrow } from './verdict-bearing.ts';
import { detectBackend, type Backend } from './backend.ts';
import { parseFilterSave, parseIpsetSave, type KernelState } from './kernel-state.ts';
import { DeltaMismatchError, planFromDelta } from './plan-from-delta.ts';
import { applyGarbage, applyMain, canonicalEntry, diff, hookLine, isEmpty, payloads, runtimeOf, type Payloads, type Plan } from './plan.ts';
import { ApplyError } from './apply-error.ts';
import { applyPieces, type PiecesOptions, type PiecesResult } from './pieces.ts';
import { CommandError, mustRun, type Runner } from './runner.ts';
import { deltaWithoutLog, rulesetWithoutLog } from './without-log.ts';

export { ApplyError };

export interface SyncResult {
  readonly plan: Plan;
  readonly payloads: Payloads;
  /** False when nothing differed, or under dry run. */
  readonly wrote: boolean;
  /** True when the kernel was read for this sync (verify, first sync, after a failure). */
  readonly readKernel: boolean;
  /**
   * Where the plan came from: the compiler's delta checked against `known` (`delta`), a diff of
   * the whole Ruleset against `known` (`known`), or against a fresh read of the kernel (`kernel`).
   */
  readonly planFrom: 'delta' | 'known' | 'kernel';
  readonly durationMs: number;
  readonly counts: { readonly rules: number; readonly setEntries: number };
  /**
   * On a kernel read after an apply: how the kernel differed from the Ruleset last applied
   * (drift by someone else, or a delta plan that missed something). The plan itself also holds
   * what changed in the model since, which is not drift.
   */
  readonly drift?: Plan;
}

export interface SyncerOptions {
  readonly runner: Runner;
  readonly backend?: Backend;
  readonly dryRun?: boolean;
  /** Seconds iptables-restore waits for the xtables lock. */
  readonly lockWaitSeconds?: number;
  /** false: program no drop-log rule (without-log.ts; `policyctl agent --no-drop-log`). Default true. */
  readonly dropLog?: boolean;
  /**
   * How long after a write the verdict cache is emptied a second time (see the header). Far
   * longer than a packet's walk through our chains (microseconds); default 250 ms.
   */
  readonly flushAgainMs?: number;
}

export const EMPTY_RULESET: Ruleset = { node: '', sets: [], chains: [], hooks: [] };

export class Syncer {
  /** What the syncer runs commands with (the agent runs conntrack through it too). */
  readonly runner: Runner;
  private backendP: Promise<Backend> | undefined;
  /** What the kernel holds of ours, as far as we know: set after every successful sync. */
  private known: KernelState | undefined;
  /** The Ruleset `known` reflects (lineage check for deltas); undefined with `known`. */
  private knownRuleset: Ruleset | undefined;
  /** The garbage collection of the last applied plan, not run yet. */
  private garbage: { readonly plan: Plan; readonly payloads: Payloads } | undefined;
  readonly dryRun: boolean;
  /** Whether the drop log's rules are programmed (SyncerOptions.dropLog). */
  readonly dropLog: boolean;
  private readonly lockWait: number;
  readonly flushAgainMs: number;
  /** The sets of the Ruleset last applied that every write empties (IpSet.runtime.flushOnChange). */
  private flushSets: readonly IpSet[] = [];
  /**
   * A flush of `flushSets` is owed: none ran yet (a new Syncer: the kernel may hold verdicts of
   * an agent that ran before), or the last one failed. The next sync runs it, wrote or not.
   */
  private flushOwed = true;
  private flushTimer: NodeJS.Timeout | undefined;

  constructor(o: SyncerOptions) {
    this.runner = o.runner;
    this.dryRun = !!o.dryRun;
    this.lockWait = o.lockWaitSeconds ?? 10;
    if (o.backend) this.backendP = Promise.resolve(o.backend);
    this.dropLog = o.dropLog !== false;
    this.flushAgainMs = o.flushAgainMs ?? 250;
  }

  backend(): Promise<Backend> {
    this.backendP ??= detectBackend(this.runner);
    return this.backendP;
  }

  async readKernel(): Promise<KernelState> {
    const b = await this.backend();
    // Both reads at once: two processes that only read, each mostly its own start-up (a cold
    // apply's read took 45 ms one after the other). Not more consistent one after the other
    // either: nothing but this agent writes our chains and sets, and it does not while it reads.
    const [filter, sets] = await Promise.all([mustRun(this.runner, b.save, ['-t', 'filter']), mustRun(this.runner, 'ipset', ['save'])]);
    if (/incompatible/i.test(filter.stdout)) {
      throw new Error(`${b.save} reports the filter table as incompatible (another iptables variant wrote it): ${filter.stdout.trim().split('\n')[0]}`);
    }
    return { ...parseFilterSave(filter.stdout), sets: parseIpsetSave(sets.stdout) };
  }

  /** Apply the difference between `desired` and the kernel (or what we last wrote). */
  async sync(input: Ruleset, opts: { readKernel?: boolean } = {}): Promise<SyncResult> {
    const t0 = performance.now();
    const desired = this.programmed(input);
    await this.collectGarbage();
    const read = !!opts.readKernel || !this.known;
    const last = this.knownRuleset;
    const state = read ? await this.readKernel() : this.known!;
    // What a kernel read finds different has drifted: written whole, not edited.
    const plan = diff(desired, state, { edit: !read });
    const drift = read && last ? (last === desired ? plan : diff(last, state, { edit: false })) : undefined;
    return this.execute(desired, plan, read ? 'kernel' : 'known', t0, state, () => applyMain(state, plan), drift);
  }

  /**
   * Apply `desired` knowing what changed since `from`: `delta` is the IncrementalCompiler's
   * `delta()` after the `ruleset()` call that returned `desired`, and `from` the Ruleset its
   * previous `ruleset()` call returned. When `from` is the Ruleset this Syncer last applied
   * (or found in place), the plan is built from the delta and `known` is patched with it, in
   * proportion to the change; otherwise (first sync, after a failure, a reset or skipped
   * compiler, a delta that does not fit) this re-reads the kernel and diffs the whole Ruleset.
   */
  async syncDelta(input: Ruleset, inputDelta: RulesetDelta, inputFrom: Ruleset): Promise<SyncResult> {
    const t0 = performance.now();
    const [desired, delta, from] = this.dropLog ? [input, inputDelta, inputFrom] : [rulesetWithoutLog(input), deltaWithoutLog(inputDelta), rulesetWithoutLog(inputFrom)];
    await this.collectGarbage();
    const known = this.known;
    if (!known || from !== this.knownRuleset) return this.sync(desired, { readKernel: true });
    let plan: Plan;
    try {
      plan = planFromDelta(delta, known);
    } catch (e) {
      if (e instanceof DeltaMismatchError) return this.sync(desired, { readKernel: true });
      throw e;
    }
    return this.execute(desired, plan, 'delta', t0, known, () => applyMain(known, plan));
  }

  /**
   * Run the pending garbage collection of the last apply, if any: delete the stale rules of
   * unordered chains and the chains no longer wanted (one iptables-restore transaction), then
   * destroy the sets no longer wanted. Resolves to whether it wrote. A failure forgets `known`
   * (the next sync re-reads the kernel) and throws, like a failed apply.
   */
  async collectGarbage(): Promise<boolean> {
    const g = this.garbage;
    if (!g) return false;
    this.garbage = undefined;
    // Only stale rules of unordered chains bear on verdicts here: the chains and sets it deletes
    // are no rule's any more.
    const flush = g.plan.removeRules.length > 0;
    try {
      await this.applyGarbagePayloads(g.payloads);
    } catch (e) {
      this.forget();
      if (flush) await this.flushVerdicts().catch(() => {}); // owed on failure; the collection's error is the one thrown
      throw e;
    }
    if (this.known) this.known = applyGarbage(this.known, g.plan);
    if (flush) await this.flushVerdicts();
    return true;
  }

  /** Whether a garbage collection is pending. */
  hasGarbage(): boolean {
    return this.garbage !== undefined;
  }

  /**
   * Render and apply the main part of a plan (dependency order, one iptables-restore
   * transaction); then record what the kernel holds, `after()`, and keep the plan's garbage
   * collection pending. A failed apply forgets `known` instead (next sync reads).
   */
  private async execute(desired: Ruleset, plan: Plan, planFrom: SyncResult['planFrom'], t0: number, before: KernelState, after: () => KernelState, drift?: Plan): Promise<SyncResult> {
    const p = payloads(plan);
    const counts = {
      rules: countRuleLines(p.iptables),
      setEntries: plan.addMembers.length + plan.delMembers.length + [...plan.createSets, ...plan.replaceSets].reduce((n, s) => n + s.members.length, 0),
    };
    const result = (wrote: boolean): SyncResult => ({ plan, payloads: p, wrote, readKernel: planFrom === 'kernel', planFrom, durationMs: performance.now() - t0, counts, ...(drift && { drift }) });
    if (!this.dryRun) this.flushSets = union(this.flushSets, flushedSets(desired));
    if (isEmpty(plan)) {
      if (this.flushOwed && !this.dryRun) await this.flushVerdicts();
      if (!this.dryRun) this.flushSets = flushedSets(desired);
      this.remember(desired, after());
      return result(false);
    }
    if (this.dryRun) return result(false);
    try {
      await this.apply(p, this.flushSets.length > 0 && mayNarrow(plan, desired, before), 'throw');
    } catch (e) {
      this.forget(); // the kernel is in an unknown state: read it next time
      throw e;
    }
    this.flushSets = flushedSets(desired);
    this.remember(desired, after());
    if (p.gcIptables || p.gcIpset) this.garbage = { plan, payloads: p };
    return result(true);
  }

  /** What of a Ruleset the kernel gets: all of it, or without the drop log's rules. */
  private programmed(rs: Ruleset): Ruleset {
    return this.dropLog ? rs : rulesetWithoutLog(rs);
  }

  private remember(desired: Ruleset, state: KernelState): void {
    this.known = state;
    this.knownRuleset = desired;
  }

  private forget(): void {
    this.known = undefined;
    this.knownRuleset = undefined;
    this.garbage = undefined;
  }

  /** Re-read the kernel and repair whatever differs: drift, other agents' edits. */
  verify(desired: Ruleset): Promise<SyncResult> {
    return this.sync(desired, { readKernel: true });
  }

  /**
   * After an apply the kernel refused: re-read the kernel and apply the additions of the plan
   * to `desired` piece by piece (src/sync/pieces.ts), so everything the kernel accepts is in
   * force and the refused pieces are known. Removals are withheld (a removal could drop
   * isolation while its replacement was refused). `known` is forgotten: the next sync re-reads
   * the kernel. Under dry run, nothing is applied and nothing is refused.
   */
  async applyInPieces(input: Ruleset, o: PiecesOptions = {}): Promise<PiecesResult> {
    const desired = this.programmed(input);
    this.forget();
    if (this.dryRun) return { rejected: [], applied: 0, blocked: 0, skipped: 0, withheld: 0, attempts: 0, complete: true };
    this.flushSets = union(this.flushSets, flushedSets(desired));
    try {
      const state = await this.readKernel();
      // With edits (appends to unordered chains), a new dispatch rule is a piece of its own. A
      // flush that fails after a piece is owed (the next sync fails on it), never the piece's refusal.
      return await applyPieces(diff(desired, state), (p) => this.apply(payloads(p), true, 'owe'), o);
    } finally {
      this.forget();
    }
  }

  /** Remove every chain, hook and set we own, and nothing else (garbage collection included). */
  async cleanup(): Promise<SyncResult> {
    const r = await this.sync(EMPTY_RULESET, { readKernel: true });
    await this.collectGarbage();
    return r;
  }

  private async step(name: string, cmd: string, args: string[], input: string): Promise<void> {
    if (!input) return;
    try {
      await mustRun(this.runner, cmd, args, { input });
    } catch (e) {
      if (e instanceof CommandError) throw new ApplyError(name, e, input);
      throw e;
    }
  }

  private async applyGarbagePayloads(p: Payloads): Promise<void> {
    const b = await this.backend();
    await this.step('iptables-restore (garbage collection)', b.restore, ['--noflush', `--wait=${this.lockWait}`], p.gcIptables);
    await this.step('ipset restore (garbage collection)', 'ipset', ['restore', '-exist'], p.gcIpset);
  }

  /**
   * `flush`: the write may deny what a remembered verdict allows (verdict-bearing.ts); a flush
   * that is owed runs anyway. `flushErrors`: a failing flush fails the apply (`throw`), or is
   * only owed (`owe`: a piece of a piecewise apply, which must not be blamed for it).
   */
  private async apply(p: Payloads, flush: boolean, flushErrors: 'throw' | 'owe'): Promise<void> {
    const b = await this.backend();
    const step = (name: string, cmd: string, args: string[], input: string) => this.step(name, cmd, args, input);
    try {
      // Three steps, each only once the one before it succeeded, even when no rule changes: the
      // removals and the gate's additions of the last step must not run after a failed add
      // (invariant fail-closed-in-time). `ipset restore` stops at a failing line, but the agent's
      // ipset session (ipset-session.ts) runs the lines after it, so the phases are never one call.
      await step('ipset restore (create and add)', 'ipset', ['restore', '-exist'], p.ipsetBefore);
      await step('iptables-restore', b.restore, ['--noflush', `--wait=${this.lockWait}`], p.iptables);
      await step('ipset restore (delete and destroy)', 'ipset', ['restore', '-exist'], p.ipsetAfter);
    } finally {
      // Also after a failed step: what did land may deny what a remembered verdict allows. A
      // failing flush stays owed; the step's own error is the one reported.
      if (flush) await this.flushVerdicts().catch(() => {});
    }
    if (this.flushOwed && flushErrors === 'throw') await this.flushVerdicts();
  }

  /**
   * Empty the verdict cache now (`flushSets`), and once more `flushAgainMs` later (see the
   * header). Throws an ApplyError when the flush fails; it is then owed.
   */
  private async flushVerdicts(): Promise<void> {
    const sets = this.flushSets;
    if (sets.length === 0) {
      this.flushOwed = false;
      return;
    }
    this.flushOwed = true;
    await this.flushEach(sets, 'ipset restore (flush the verdict cache)');
    this.flushOwed = false;
    clearTimeout(this.flushTimer);
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      // The sets of the Ruleset in force by then (none after a cleanup).
      const again = this.flushSets;
      if (again.length === 0) return;
      this.flushEach(again, 'ipset restore (flush the verdict cache again)').catch(() => {
        this.flushOwed = true;
      });
    }, this.flushAgainMs);
    this.flushTimer.unref();
  }

  /**
   * One `flush` per set. A set that does not exist holds no verdict, and no rule can read it (the
   * kernel refuses a rule that names a missing set): nothing to flush, not a failure.
   */
  private async flushEach(sets: readonly IpSet[], name: string): Promise<void> {
    for (const s of sets) {
      try {
        await this.step(name, 'ipset', ['restore', '-exist'], renderSetFlush([s]));
      } catch (e) {
        if (e instanceof ApplyError && /does not exist/i.test(e.stderr)) continue;
        throw e;
      }
    }
  }

  /** Whether a flush of the verdict cache is owed (see the header): the next sync runs it. */
  verdictFlushOwed(): boolean {
    return this.flushOwed && this.flushSets.length > 0;
  }

  /** Stop the pending second flush, if any (tests; the agent leaves it to run). */
  dispose(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
  }
}

/** The kernel state that results from a successful apply of `rs` (garbage collected). */
export function stateOf(rs: Ruleset): KernelState {
  return {
    chains: new Map(rs.chains.map((c) => [c.name, { name: c.name, ruleIds: c.rules.map(ruleId), rules: c.rules }])),
    hooks: rs.hooks.map((h) => ({ chain: h.chain, target: h.target, position: 1, line: hookLine(h) })),
    sets: new Map(rs.sets.map((s) => [s.name, { name: s.name, type: s.type, members: new Map(s.members.map((m) => [canonicalEntry(s.type, m.entry), !!m.nomatch])), ...runtimeOf(s) }])),
  };
}

/** The sets of both lists, each once (by name). */
function union(a: readonly IpSet[], b: readonly IpSet[]): readonly IpSet[] {
  if (a.length === 0 || a === b) return b;
  const names = new Set(b.map((s) => s.name));
  return [...b, ...a.filter((s) => !names.has(s.name))];
}

/** Rule lines (appended or inserted) in an iptables-restore payload. */
function countRuleLines(payload: string): number {
  let n = 0;
  for (let i = payload.indexOf('\n-'); i >= 0; i = payload.indexOf('\n-', i + 1)) {
    const c = payload[i + 2];
    if (c === 'A' || c === 'I') n++;
  }
  return n;
}
