// The incremental compiler must produce exactly what a full compile produces. On random
// clusters, apply random batches of changes (pods added, relabelled, moved, re-addressed,
// finished or deleted; policies added, changed, moved or deleted; namespaces relabelled,
// added or deleted) and after each batch compare, for every node, the incremental Ruleset with
// `compile(model, node)`: as data (deep equality) and as rendered restore text. Rulesets handed
// out earlier must not change afterwards (objects are shared between successive Rulesets), and
// the deltas, applied in order to an empty kernel state, must give each Ruleset's state, with
// no redundant change.
// Replay a failure with PROPERTY_SEED=<seed>.

import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import { describe, it } from 'vitest';
import { compile, type CompileOptions } from '../../src/compiler/compile.ts';
import { IncrementalCompiler } from '../../src/compiler/incremental.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../../src/sync/render.ts';
import { setDigestForTests } from '../../src/util/digest.ts';
import { createHash } from 'node:crypto';
import type { Ruleset } from '../../src/compiler/ruleset.ts';
import { ruleId } from '../../src/sync/render.ts';
import type { RulesetDelta } from '../../src/compiler/incremental.ts';
import type { KernelState } from '../../src/sync/kernel-state.ts';
import { stateOf } from '../../src/sync/syncer.ts';
import { checkProperty, propertyRuns } from '../support/property.ts';
import { NODES, applyModelOp, clusterArb, modelOpBatchesArb, type Cluster, type ModelOp } from '../support/arbitraries.ts';

const RUNS = propertyRuns(300);
const text = (rs: Ruleset) => `${renderIpsetRestore(rs.sets)}${renderIptablesRestore(rs)}`;

/**
 * Apply a delta to the kernel state the previous Ruleset left, as a sync layer would; throws
 * when the delta is not minimal (a no-op entry, a chain written with the same rules) or does
 * not fit the state (adding a present entry, removing an absent one).
 */
function applyDelta(state: KernelState, d: RulesetDelta): void {
  const fail = (what: string) => {
    throw new Error(`delta does not fit the previous state: ${what}`);
  };
  for (const name of d.destroyedSets) if (!state.sets.delete(name)) fail(`destroys missing set ${name}`);
  for (const s of d.createdSets) {
    if (state.sets.has(s.name)) fail(`creates existing set ${s.name}`);
    state.sets.set(s.name, stateOf({ node: '', sets: [s], chains: [], hooks: [] }).sets.get(s.name)!);
  }
  for (const { after } of d.rebuiltSets) {
    if (!state.sets.has(after.name)) fail(`rebuilds missing set ${after.name}`);
    state.sets.set(after.name, stateOf({ node: '', sets: [after], chains: [], hooks: [] }).sets.get(after.name)!);
  }
  for (const c of d.memberChanges) {
    const set = state.sets.get(c.set) ?? fail(`changes missing set ${c.set}`);
    if (c.added.length + c.removed.length === 0) fail(`empty change of ${c.set}`);
    for (const e of c.removed) if (!set.members.delete(e)) fail(`removes absent ${e} from ${c.set}`);
    for (const e of c.added) {
      if (set.members.has(e)) fail(`adds present ${e} to ${c.set}`);
      set.members.set(e, false);
    }
  }
  for (const name of d.removedChains) if (!state.chains.delete(name)) fail(`removes missing chain ${name}`);
  for (const c of d.writtenChains) {
    const ids = c.rules.map(ruleId);
    const cur = state.chains.get(c.name);
    if (cur && isDeepStrictEqual(cur.ruleIds, ids)) fail(`rewrites chain ${c.name} with the same rules`);
    state.chains.set(c.name, { name: c.name, ruleIds: ids, rules: c.rules });
  }
}

function check(c: Cluster, batches: ModelOp[][], opts: CompileOptions = {}): void {
  const compilers = NODES.map((n) => new IncrementalCompiler(c.model, n.name, opts));
  const handedOut: { rs: Ruleset; text: string }[] = [];
  // What a sync layer applying only the deltas would hold, per node.
  const kernels = compilers.map((): KernelState => ({ chains: new Map(), hooks: [], sets: new Map() }));
  const last: (Ruleset | undefined)[] = compilers.map(() => undefined);
  const compare = (step: string) => {
    for (const [i, ic] of compilers.entries()) {
      const got = ic.ruleset();
      const d = ic.delta();
      applyDelta(kernels[i]!, d);
      // A set the delta does not mention is the previous Ruleset's very object (shared, not copied).
      const mentioned = new Set([...d.createdSets.map((x) => x.name), ...d.rebuiltSets.map((x) => x.after.name), ...d.memberChanges.map((x) => x.set)]);
      const previous = new Map((last[i]?.sets ?? []).map((x) => [x.name, x]));
      for (const set of got.sets) if (!mentioned.has(set.name) && previous.get(set.name) !== set) throw new Error(`${step}, node ${ic.node}: set ${set.name} is unchanged but not shared`);
      last[i] = got;
      const expected = stateOf(got);
      if (!isDeepStrictEqual(kernels[i]!.sets, expected.sets) || !isDeepStrictEqual(kernels[i]!.chains, expected.chains)) {
        throw new Error(`${step}, node ${ic.node}: applying the deltas does not give the Ruleset's kernel state`);
      }
      const want = compile(c.model, ic.node, opts);
      const [g, w] = [text(got), text(want)];
      if (g !== w || !isDeepStrictEqual(got, want)) {
        throw new Error(`${step}, node ${ic.node}: incremental and full compile differ\n--- incremental\n${g}\n--- full\n${w}`);
      }
      handedOut.push({ rs: got, text: g });
    }
    for (const h of handedOut) if (text(h.rs) !== h.text) throw new Error(`${step}: a Ruleset handed out earlier changed afterwards`);
  };
  compare('initial build');
  batches.forEach((batch, i) => {
    for (const o of batch) {
      applyModelOp(c.model, o);
      if (o.op === 'reset') for (const ic of compilers) ic.reset();
    }
    compare(`after batch ${i} ${JSON.stringify(batch.map((o) => o.op))}`);
  });
  for (const ic of compilers) ic.dispose();
}

describe('incremental compiler', () => {
  it(`equals a full compile after random change batches (${RUNS} runs)`, () => {
    const arb = fc.tuple(clusterArb, modelOpBatchesArb);
    checkProperty(fc.property(arb, ([c, batches]) => check(c, batches)), RUNS);
  });

  it(`equals a full compile with Admin chains shared (--shared-admin-chains) (${Math.ceil(RUNS / 2)} runs)`, () => {
    const runs = Math.ceil(RUNS / 2);
    checkProperty(fc.property(fc.tuple(clusterArb, modelOpBatchesArb), ([c, batches]) => check(c, batches, { tiers: { continuation: { Admin: 'dispatch' } } })), runs);
  });

  // kube-proxy IPVS mode (layout.ts ServiceProxy): PCTL-OUTPUT, the OUTPUT hook, the Service
  // returns in PCTL-INPUT, and PCTL-programmed even without pod CIDRs.
  it(`equals a full compile under kube-proxy IPVS mode (${Math.ceil(RUNS / 3)} runs)`, () => {
    const runs = Math.ceil(RUNS / 3);
    checkProperty(fc.property(fc.tuple(clusterArb, modelOpBatchesArb), ([c, batches]) => check(c, batches, { proxy: { mode: 'ipvs', serviceCidrs: ['10.96.0.0/12'] } })), runs);
  });

  // Revoke mode (--revoke-established): the top chains jump to PCTL-MIDSTREAM, which holds the
  // drops of the pod CIDRs. With or without the verdict cache (the agent's default), whose rules
  // and set come and go with nothing in the model.
  it(`equals a full compile with mid-stream drops (--revoke-established), the verdict cache on or off (${Math.ceil(RUNS / 3)} runs)`, () => {
    const runs = Math.ceil(RUNS / 3);
    checkProperty(
      fc.property(fc.tuple(clusterArb, modelOpBatchesArb, fc.boolean(), fc.boolean()), ([c, batches, ipvs, verdictCache]) =>
        check(c, batches, { dropMidstream: true, verdictCache, ...(ipvs && { proxy: { mode: 'ipvs', serviceCidrs: ['10.96.0.0/12'] } }) }),
      ),
      runs,
    );
  });

  it(`equals a full compile with the verdict cache (${Math.ceil(RUNS / 3)} runs)`, () => {
    const runs = Math.ceil(RUNS / 3);
    checkProperty(fc.property(fc.tuple(clusterArb, modelOpBatchesArb), ([c, batches]) => check(c, batches, { verdictCache: true })), runs);
  });

  // The collision guard under change: every chain digest is zero, so two different chains of
  // one direction on a node always share a name; collisions appear and go as pods and policies
  // change, and the incremental compiler must still equal compile().
  it(`equals a full compile when chain names collide (${Math.ceil(RUNS / 3)} runs, a constant chain digest)`, () => {
    setDigestForTests((text, use) => (use === 'chain' ? new Uint8Array(32) : new Uint8Array(createHash('sha256').update(text).digest())));
    try {
      const runs = Math.ceil(RUNS / 3);
      checkProperty(fc.property(fc.tuple(clusterArb, modelOpBatchesArb), ([c, batches]) => check(c, batches)), runs);
    } finally {
      setDigestForTests(undefined);
    }
  });
});
