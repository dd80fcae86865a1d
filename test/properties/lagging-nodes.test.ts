// Fail closed in time across nodes (docs/design.md, invariant fail-closed-in-time, "Addresses a
// node does not know yet"): a node learns the pods of the other nodes from the API, late. On
// random clusters with random ClusterNetworkPolicies, one node at a time compiles from a model
// that lacks some pods of the other nodes (their own nodes know them: they were programmed
// there at CNI ADD), and every flow is traced through the nodes on its path. A flow the lagging
// node lets through must be one the complete model allows: a node that does not know a pod yet
// may refuse it what it is allowed, never give it what it is not. The seed is printed on
// failure; replay with PROPERTY_SEED=<seed>.

import fc from 'fast-check';
import { describe, it } from 'vitest';
import type { CompileOptions } from '../../src/compiler/compile.ts';
import { Model } from '../../src/model/store.ts';
import { allowed, podKey, type Endpoint } from '../../src/semantics/evaluate.ts';
import { NODES, flowsAmong, tieredClusterArb, canTalk, type Cluster } from '../support/arbitraries.ts';
import { Dataplane, type Mutator } from '../support/dataplane.ts';
import { checkProperty, expectMutationCaught, propertyRuns } from '../support/property.ts';
import { formatTrace } from '../support/tracer.ts';

const RUNS = propertyRuns(200);

/** The cluster as `node` sees it when it has not learned `hidden` (pods of other nodes) yet. */
function laggingModel(c: Cluster, node: string, hidden: ReadonlySet<string>): Model {
  const m = new Model();
  const src = c.model;
  for (const r of [...src.allNamespaces().filter((n) => !n.implicit), ...src.allNodes(), ...src.allPods(), ...src.allPolicies(), ...src.allClusterPolicies()]) {
    if (r.kind === 'Pod' && r.nodeName !== node && hidden.has(r.uid)) continue;
    m.upsert(r);
  }
  return m;
}

const name = (e: Endpoint) => (e.kind === 'pod' ? podKey(e.pod) : e.ip);

/** A cluster with random ClusterNetworkPolicies, and which of its pods each lagging node has not learned. */
const scenarioArb = tieredClusterArb.chain((c) => fc.record({ cluster: fc.constant(c), hide: fc.array(fc.boolean(), { minLength: c.pods.length, maxLength: c.pods.length }) }));

function checkLagging({ cluster: c, hide }: { cluster: Cluster; hide: boolean[] }, mutate?: Mutator, opts: CompileOptions = {}): void {
  // hostNetwork pods have their node's address, not one a node learns from the API.
  const hidden = new Set(c.pods.filter((p, i) => hide[i] && !p.hostNetwork).map((p) => p.uid));
  if (hidden.size === 0) return;
  const flows = flowsAmong(c.pods.filter(canTalk));
  for (const lagging of NODES.map((n) => n.name)) {
    const behind = laggingModel(c, lagging, hidden);
    const plane = new Dataplane(c.model, NODES.map((n) => n.name), mutate ? (t, n) => (n === lagging ? mutate(t, n) : t) : undefined, opts, (n) => (n === lagging ? behind : c.model));
    for (const flow of flows) {
      const got = plane.traverse(flow);
      if (!got.allowed) continue;
      const want = allowed(c.model, flow);
      if (want.allowed) continue;
      const traces = got.traces.map((t) => `--- ${t.node} ${t.hook}${t.node === lagging ? ' (lagging)' : ''}\n${formatTrace(t.result)}`).join('\n');
      throw new Error(`${name(flow.src)} -> ${name(flow.dst)} ${flow.port}/${flow.protocol}: ${lagging}, not knowing ${[...hidden].join(', ')}, lets it through; the complete model denies it (${want.summary})\n${traces}\n=== ${lagging}\n${plane.nodes.get(lagging)!.iptablesText}`);
    }
  }
}

describe('a node that has not learned some pods of the other nodes yet', () => {
  it(`never lets through what the complete model denies (${RUNS} random clusters with ClusterNetworkPolicies)`, () => {
    checkProperty(fc.property(scenarioArb, (s) => checkLagging(s)), RUNS);
  });

  // The other layouts: Admin chains shared by a second dispatch; the mid-stream drops of
  // --revoke-established; kube-proxy's IPVS mode (its direct paths: FORWARD and INPUT).
  for (const [what, opts] of [
    ['--shared-admin-chains', { tiers: { continuation: { Admin: 'dispatch' } } }],
    ['--revoke-established', { dropMidstream: true }],
    ['the IPVS layout', { proxy: { mode: 'ipvs', serviceCidrs: ['10.96.0.0/12'] } }],
  ] as const satisfies readonly (readonly [string, CompileOptions])[]) {
    it(`the same with ${what} (${Math.ceil(RUNS / 2)} clusters)`, () => {
      checkProperty(fc.property(scenarioArb, (s) => checkLagging(s, undefined, opts)), Math.ceil(RUNS / 2));
    });
  }

  it('fails when a Deny or Pass does not drop the addresses of the pod CIDRs no known pod has', () => {
    const withoutUnknownDrops: Mutator = (t) => t.replace(/^-A [^\n]*no known pod[^\n]*\n/gm, '');
    expectMutationCaught('the unknown-address drops are gone', withoutUnknownDrops, (spy) => fc.property(scenarioArb, (s) => checkLagging(s, spy)), RUNS);
  });
});
