// The plan built from the IncrementalCompiler's delta must be the plan a diff of the whole
// Ruleset gives, and patching the known kernel state with it must give the state of the new
// Ruleset. On random clusters and random batches of changes (resets of the compiler included),
// for every node, the Syncer's fast path is replayed without a kernel:
//   known = stateOf(first Ruleset); after each batch, with rs = ic.ruleset(), d = ic.delta():
//   planFromDelta(d, known) == diff(rs, known)   (the same changes, in any order)
//   main = applyMain(known, plan): every chain of rs is in place (unordered ones: with their
//     stale rules, new ones appended at the end), stale rules are the plan's removals
//   known = applyGarbage(main, plan) has the content of stateOf(rs), up to the order of the
//     rules of unordered chains
// Replay a failure with PROPERTY_SEED=<seed>.

import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { pod, port } from '../../test/support/builders.ts';
import { sampleCluster } from '../../test/support/clusters.ts';
import { NODES, applyModelOp, clusterArb, modelOpBatchesArb, type Cluster, type ModelOp } from '../../test/support/arbitraries.ts';
import { IncrementalCompiler } from '../compiler/incremental.ts';
import { ruleId } from './render.ts';
import type { Ruleset } from '../compiler/ruleset.ts';
import { emptyState, type KernelState } from './kernel-state.ts';
import { DeltaMismatchError, planFromDelta } from './plan-from-delta.ts';
import { applyGarbage, applyMain, applyPlan, diff, isEmpty, type Plan } from './plan.ts';
import { stateOf } from './syncer.ts';

const RUNS = Number(process.env.PROPERTY_RUNS ?? 300);
const SEED = process.env.PROPERTY_SEED ? Number(process.env.PROPERTY_SEED) : undefined;

/** A plan as order-insensitive text: two plans that make the same changes give the same text. */
function planKey(p: Plan): string {
  const sorted = <T>(xs: readonly T[], k: (x: T) => string) => xs.map(k).sort().join('\n');
  return [
    sorted(p.createSets, (s) => `${s.name} ${s.type} ${s.members.map((m) => m.entry + (m.nomatch ? '!' : '')).join(',')}`),
    sorted(p.replaceSets, (s) => `${s.name} ${s.type} ${s.members.map((m) => m.entry + (m.nomatch ? '!' : '')).join(',')}`),
    sorted(p.addMembers, (m) => `${m.set} ${m.entry} ${!!m.nomatch}`),
    sorted(p.delMembers, (m) => `${m.set} ${m.entry}`),
    sorted(p.writeChains, (c) => `${c.name} ${c.rules.map(ruleId).join(',')}`),
    sorted(p.appendRules, (a) => `${a.chain} ${a.rules.map(ruleId).join(',')}`),
    sorted(p.removeRules, (r) => `${r.chain} ${r.ids.join(',')} ${r.lines.join('|')}`),
    sorted(p.deleteChains, (c) => c),
    sorted(p.removeHooks, (h) => `${h.chain} ${h.position} ${h.line}`),
    sorted(p.insertHooks, (h) => `${h.chain} ${h.target}`),
    sorted(p.destroySets, (s) => s),
  ].join('\n--\n');
}

/**
 * The content `diff` compares: sets (type, members) and chains (rule ids; sorted for the
 * unordered chains of `rs`), hooks (where, what).
 */
function content(s: KernelState, rs?: Ruleset): unknown {
  const unordered = new Set(rs?.chains.filter((c) => c.unordered).map((c) => c.name));
  return {
    sets: [...s.sets.values()].map((x) => [x.name, x.type, [...x.members].sort()]).sort(),
    chains: [...s.chains.values()].map((c) => [c.name, unordered.has(c.name) ? [...c.ruleIds].sort() : c.ruleIds]).sort(),
    hooks: s.hooks.map((h) => [h.chain, h.target, h.position, h.line]).sort(),
  };
}

/** Plans seen with edits of unordered chains (the property must exercise them). */
const seen = { appends: 0, removals: 0 };

function follow(c: Cluster, batches: ModelOp[][]): void {
  for (const nd of NODES) {
    const ic = new IncrementalCompiler(c.model, nd.name);
    let rs = ic.ruleset();
    // The first sync: a full diff against an empty kernel, the state patched with that plan.
    let known = applyPlan(emptyState(), diff(rs, emptyState()));
    if (!isDeepStrictEqual(content(known), content(stateOf(rs)))) throw new Error(`node ${nd.name}: applyPlan of the first full plan does not give stateOf`);
    batches.forEach((batch, i) => {
      for (const o of batch) {
        applyModelOp(c.model, o);
        if (o.op === 'reset') ic.reset();
      }
      const step = `node ${nd.name}, after batch ${i} ${JSON.stringify(batch.map((o) => o.op))}`;
      const next = ic.ruleset();
      const plan = planFromDelta(ic.delta(), known);
      const want = diff(next, known);
      const [got, exp] = [planKey(plan), planKey(want)];
      if (got !== exp) throw new Error(`${step}: plan from the delta differs from the diff\n--- from delta\n${got}\n--- diff\n${exp}`);
      seen.appends += plan.appendRules.length;
      seen.removals += plan.removeRules.length;
      const before = new Map([...known.chains].map(([n, c]) => [n, c.ruleIds]));
      const main = applyMain(known, plan);
      checkMain(step, main, before, next, plan);
      known = applyGarbage(main, plan);
      if (!isDeepStrictEqual(content(known, next), content(stateOf(next), next))) throw new Error(`${step}: the patched state is not the state of the new Ruleset`);
      // The patched state is a fixed point: nothing left to do.
      if (!isEmpty(diff(next, known))) throw new Error(`${step}: a diff against the patched state is not empty`);
      rs = next;
    });
    expect(rs).toBe(ic.ruleset());
    ic.dispose();
  }
}

/**
 * After the main apply: every chain of `rs` holds its rules; ordered chains exactly; unordered
 * ones as their previous rules (kept in place) followed by the appended ones, the extra ones
 * exactly the plan's stale rules. Chains no longer wanted are still there until the garbage
 * collection, sets no longer wanted are empty.
 */
function checkMain(step: string, main: KernelState, before: Map<string, readonly (string | undefined)[]>, rs: Ruleset, plan: Plan): void {
  const stale = new Map(plan.removeRules.map((r) => [r.chain, new Set(r.ids)]));
  for (const c of rs.chains) {
    const got = main.chains.get(c.name)?.ruleIds ?? [];
    const want = c.rules.map(ruleId);
    if (!c.unordered || !stale.has(c.name)) {
      if (c.unordered ? !isDeepStrictEqual([...got].sort(), [...want].sort()) : !isDeepStrictEqual(got, want)) throw new Error(`${step}: after the main apply, chain ${c.name} holds ${got.join(',')}, not ${want.join(',')}`);
      continue;
    }
    const prev = before.get(c.name) ?? [];
    if (!isDeepStrictEqual(got.slice(0, prev.length), prev)) throw new Error(`${step}: the main apply moved or removed rules of unordered chain ${c.name}`);
    const extra = got.filter((id) => !want.includes(id!));
    if (!isDeepStrictEqual([...extra].sort(), [...stale.get(c.name)!].sort())) throw new Error(`${step}: chain ${c.name}: stale rules ${extra.join(',')} are not the plan's removals`);
    if (!want.every((id) => got.includes(id))) throw new Error(`${step}: chain ${c.name} lacks a wanted rule after the main apply`);
  }
  for (const n of plan.deleteChains) if (!main.chains.has(n)) throw new Error(`${step}: chain ${n} deleted before the garbage collection`);
  for (const n of plan.destroySets) if (main.sets.get(n)?.members.size) throw new Error(`${step}: set ${n}, no longer wanted, is not empty after the main apply`);
  // Rules the main apply writes never include a deletion: only the garbage collection deletes.
  if (plan.removeRules.some((r) => r.lines.some((l) => !l.startsWith(`-D ${r.chain} `)))) throw new Error(`${step}: a stale rule is not removed by -D`);
}

describe('planFromDelta', () => {
  it(`gives the plan diff gives, and applyPlan the new Ruleset's state, on random change batches (${RUNS} runs)`, () => {
    const result = fc.check(
      fc.property(fc.tuple(clusterArb, modelOpBatchesArb), ([c, batches]) => follow(c, batches)),
      { numRuns: RUNS, ...(SEED !== undefined ? { seed: SEED } : {}) },
    );
    if (result.failed) {
      throw new Error(`property failed with seed ${result.seed} (replay: PROPERTY_SEED=${result.seed}), path ${result.counterexamplePath}\n${result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance)}`);
    }
    expect(result.numRuns).toBe(RUNS);
    expect(seen.appends).toBeGreaterThan(0);
    expect(seen.removals).toBeGreaterThan(0);
  });

  it('unordered chains: compared as sets; edited from a known state, written whole from a kernel read when they differ', () => {
    const rs = stateOfRuleset();
    const top = rs.chains.find((c) => c.name === 'PCTL-INGRESS')!;
    expect(top.unordered).toBe(true);
    const bucket = rs.chains.find((c) => c.unordered && c.name.startsWith('PCTL-IB-'))!;
    const state = stateOf(rs);
    // The same rules in another order: nothing to do, whether read or known.
    const cur = state.chains.get(bucket.name)!;
    state.chains.set(bucket.name, { ...cur, ruleIds: [...cur.ruleIds].reverse(), rules: [...cur.rules!].reverse() });
    expect(isEmpty(diff(rs, state))).toBe(true);
    expect(isEmpty(diff(rs, state, { edit: false }))).toBe(true);
    // A stale rule and a missing one: from a known state, an append and a deferred -D.
    const stale = { match: { sets: [{ set: 'PCTL-i-old', dirs: 'dst' as const }] }, action: { kind: 'goto' as const, chain: 'PCTL-I-old' }, comment: 'stale' };
    state.chains.set(bucket.name, { name: bucket.name, ruleIds: [ruleId(stale)], rules: [stale] });
    const plan = diff(rs, state);
    expect(plan.writeChains).toEqual([]);
    expect(plan.appendRules).toEqual([{ chain: bucket.name, rules: bucket.rules }]);
    expect(plan.removeRules).toEqual([{ chain: bucket.name, ids: [ruleId(stale)], lines: [expect.stringMatching(new RegExp(`^-D ${bucket.name} -m set --match-set PCTL-i-old dst -m comment --comment "\\w+ stale" -g PCTL-I-old$`))] }]);
    // From a kernel read: drift, written whole; so is a chain with a rule not ours.
    expect(diff(rs, state, { edit: false }).writeChains.map((c) => c.name)).toEqual([bucket.name]);
    state.chains.set(bucket.name, { name: bucket.name, ruleIds: [...bucket.rules.map(ruleId), undefined], rules: [...bucket.rules, '-A x'] });
    expect(diff(rs, state).writeChains.map((c) => c.name)).toEqual([bucket.name]);
  });

  it('a remote relabel is set members only: no chain, no walk of the other sets', () => {
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1');
    const known = stateOf(ic.ruleset());
    m.upsert({ ...m.findPod('x', 'r')!, labels: { app: 'db' } });
    ic.ruleset();
    const plan = planFromDelta(ic.delta(), known);
    // Two peers select it now: app=db in x (x/allow) and app=db everywhere (y/web).
    expect(plan.addMembers).toEqual([
      { set: expect.stringMatching(/^PCTL-p-/), entry: '10.244.2.11' },
      { set: expect.stringMatching(/^PCTL-p-/), entry: '10.244.2.11' },
    ]);
    expect(isEmpty({ ...plan, addMembers: [] })).toBe(true);
  });

  it('skips changes the kernel state already has, and reports a delta that does not fit', () => {
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1');
    let known = stateOf(ic.ruleset());
    m.upsert({ ...m.findPod('x', 'r')!, labels: { app: 'db' } });
    m.upsert(pod('x', 'c', { app: 'web' }, { ip: '10.244.1.13', node: 'n1', ports: [port(80, 'http')] }));
    const rs = ic.ruleset();
    const d = ic.delta();
    known = applyPlan(known, planFromDelta(d, known));
    // The same delta again: everything is in place already.
    expect(isEmpty(planFromDelta(d, known))).toBe(true);
    expect(isEmpty(diff(rs, known))).toBe(true);
    // A state that lacks a set whose members the delta changes: not the delta's starting point.
    const changed = d.memberChanges[0]!.set;
    const other: KernelState = { ...known, sets: new Map([...known.sets].filter(([n]) => n !== changed)) };
    expect(() => planFromDelta(d, other)).toThrow(DeltaMismatchError);
  });

  it('applyPlan moves hooks as the kernel does: removed, and inserted at position 1', () => {
    const rs: Ruleset = stateOfRuleset();
    const state = stateOf(rs);
    // A foreign rule pushed our FORWARD jump to position 2, and a stale jump sits in INPUT.
    const drifted: KernelState = {
      ...state,
      hooks: [
        ...state.hooks.map((h) => (h.chain === 'FORWARD' ? { ...h, position: 2 } : h)),
        { chain: 'INPUT', target: 'PCTL-OLD', position: 2, line: '-A INPUT -j PCTL-OLD' },
      ],
    };
    const plan = diff(rs, drifted);
    expect(plan.insertHooks.map((h) => h.chain)).toEqual(['FORWARD']);
    expect(plan.removeHooks.map((h) => h.target).sort()).toEqual(['PCTL-FORWARD', 'PCTL-OLD']);
    const after = applyPlan(drifted, plan);
    expect(content(after, rs)).toEqual(content(state, rs));
    expect(isEmpty(diff(rs, after))).toBe(true);
  });
});

function stateOfRuleset(): Ruleset {
  const ic = new IncrementalCompiler(sampleCluster(), 'n1');
  const rs = ic.ruleset();
  ic.dispose();
  return rs;
}
