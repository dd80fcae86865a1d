// The verdict cache is emptied only by writes that may deny (src/sync/verdict-bearing.ts,
// docs/design.md "The verdict cache", invariant verdicts-of-the-rules-in-force). On random
// clusters with random ClusterNetworkPolicies and a random batch of changes, for each node: when
// the sync plan from the node's old Ruleset to its new one is judged to only widen (no flush),
// every packet the node's old rules let through (a verdict it may have remembered), its new
// rules let through too. Checked hop by hop with the tracer, for every flow among the pods
// before and after. The seed is printed on failure; replay with PROPERTY_SEED=<seed>.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compile, type CompileOptions } from '../../src/compiler/compile.ts';
import type { Ruleset } from '../../src/compiler/ruleset.ts';
import { diff, type Plan } from '../../src/sync/plan.ts';
import { stateOf } from '../../src/sync/syncer.ts';
import { mayNarrow } from '../../src/sync/verdict-bearing.ts';
import { podKey, type Endpoint } from '../../src/semantics/evaluate.ts';
import { applyModelOp, canTalk, clusterArb, flowsAmong, modelOpArb, podSpecArb, tieredClusterArb, type Cluster, type ModelOp } from '../support/arbitraries.ts';
import { checkProperty, propertyRuns } from '../support/property.ts';
import { Dataplane } from '../support/dataplane.ts';
import { formatTrace } from '../support/tracer.ts';

const RUNS = propertyRuns(300);
const CACHE: CompileOptions = { verdictCache: true };
const who = (e: Endpoint) => (e.kind === 'pod' ? podKey(e.pod) : e.ip);

interface Outcome {
  /** Nodes whose plan was judged to only widen and changed something (set members). */
  readonly keptWrites: number;
}

/** The layouts the agent may run with, each with the cache on. */
const LAYOUTS: readonly CompileOptions[] = [
  CACHE,
  { ...CACHE, tiers: { continuation: { Admin: 'dispatch' } } },
  { ...CACHE, dropMidstream: true },
  { ...CACHE, proxy: { mode: 'ipvs', serviceCidrs: ['10.96.0.0/12'] } },
];

/** `judge`: the Syncer's decision (mayNarrow), or a stand-in for the mutation test. */
function check(c: Cluster, ops: readonly ModelOp[], judge: (plan: Plan, rs: Ruleset, before: Ruleset) => boolean = (p, rs, b) => mayNarrow(p, rs, stateOf(b)), opts: CompileOptions = CACHE): Outcome {
  const podsBefore = [...c.model.allPods()];
  // A batch may add, change or remove a third node (its pod CIDR joins PCTL-pod-cidrs).
  const nodesBefore = [...c.model.allNodes()].map((n) => n.name);
  const before = new Map(nodesBefore.map((n) => [n, compile(c.model, n, opts)]));
  const planeBefore = new Dataplane(c.model, nodesBefore, undefined, opts);
  for (const o of ops) applyModelOp(c.model, o);
  const nodesAfter = [...c.model.allNodes()].map((n) => n.name);
  const planeAfter = new Dataplane(c.model, nodesAfter, undefined, opts);
  const keptNodes = new Set<string>();
  let keptWrites = 0;
  for (const n of nodesBefore.filter((x) => nodesAfter.includes(x))) {
    const rs = compile(c.model, n, opts);
    const plan = diff(rs, stateOf(before.get(n)!));
    if (judge(plan, rs, before.get(n)!)) continue;
    keptNodes.add(n);
    if (plan.addMembers.length + plan.delMembers.length > 0) keptWrites++;
  }
  const pods = new Map([...podsBefore, ...c.model.allPods()].map((p) => [p.uid, p]));
  const live = [...pods.values()].filter(canTalk);
  for (const flow of flowsAmong(live)) {
    const was = planeBefore.traverse(flow);
    const now = planeAfter.traverse(flow);
    for (let i = 0; i < was.traces.length; i++) {
      const w = was.traces[i]!;
      if (w.result.verdict === 'DROP') break;
      const x = now.traces[i];
      if (!x || x.node !== w.node || x.hook !== w.hook) break;
      if (x.result.verdict === 'DROP' && keptNodes.has(w.node)) {
        throw new Error(
          `${who(flow.src)} -> ${who(flow.dst)} ${flow.port}/${flow.protocol}: ${w.node} ${w.hook} allowed it before the changes and denies it after, yet the plan was judged to only widen (the cache would keep allowing it)\n` +
            `changes: ${JSON.stringify(ops)}\n--- before\n${formatTrace(w.result)}\n--- after\n${formatTrace(x.result)}`,
        );
      }
      if (x.result.verdict === 'DROP') break;
    }
  }
  return { keptWrites };
}

const opsArb = fc.array(modelOpArb, { minLength: 1, maxLength: 3 }).map((ops) => ops.filter((o) => o.op !== 'reset'));
/** New pods only (slots no cluster uses): on every node but theirs, most of these plans widen. */
const newPodsArb = fc.array(
  fc.record({ op: fc.constant('pod' as const), slot: fc.integer({ min: 20, max: 29 }), spec: podSpecArb }).map((o): ModelOp => o),
  { minLength: 1, maxLength: 2 },
);

describe('the verdict cache is kept only across writes that widen', () => {
  for (const [what, arb] of [
    ['random NetworkPolicies', clusterArb],
    ['random NetworkPolicies and ClusterNetworkPolicies', tieredClusterArb],
  ] as const) {
    it(`on ${RUNS} random clusters with ${what}, a batch of random changes and a layout (shared Admin chains, revoke, IPVS): a plan judged to widen denies nothing the old rules allowed`, () => {
      checkProperty(fc.property(arb, opsArb, fc.constantFrom(...LAYOUTS), (c, ops, opts) => void check(c, ops, undefined, opts)), RUNS);
    });
  }

  // The property must also meet plans that change members and are kept, or it proves nothing:
  // pods that start elsewhere are the usual ones (with ClusterNetworkPolicy Deny or Pass rules
  // that name pods, fewer of them widen).
  it(`on ${RUNS} random clusters with random NetworkPolicies and ClusterNetworkPolicies, new pods: the same, and plans of the other nodes are kept`, () => {
    let keptWrites = 0;
    checkProperty(
      fc.property(tieredClusterArb, newPodsArb, (c, ops) => {
        keptWrites += check(c, ops).keptWrites;
      }),
      RUNS,
    );
    // About 60 in 300 runs: local pods change chains, Deny and Pass rules name pods, a reused address takes both pods out.
    expect(keptWrites).toBeGreaterThan(RUNS / 10);
  });

  it('fails when every plan is taken to widen (some changes deny what was allowed)', () => {
    const result = fc.check(
      fc.property(clusterArb, opsArb, (c, ops) => {
        check(c, ops, () => false);
      }),
      { numRuns: RUNS, seed: 42 },
    );
    expect(result.failed).toBe(true);
  });
});
