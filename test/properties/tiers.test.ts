// The tier order as properties of the semantics alone, on random clusters (arbitraries.ts) with
// random ClusterNetworkPolicies (cnp-arbitraries.ts). Each property is one sentence of the
// tier walk that a mutation of the order or of Pass would break; the compiled rules are checked
// against the same semantics elsewhere (docs/design.md, invariant two-statements). The seed is
// printed on failure; replay with PROPERTY_SEED=<seed>.

import fc from 'fast-check';
import { describe, it } from 'vitest';
import { parseCidr } from '../../src/model/cidr.ts';
import { EVERYTHING } from '../../src/model/selector.ts';
import { Model } from '../../src/model/store.ts';
import type { ClusterPolicyRecord, CnpAction, CnpTier, ObjectRecord, PodRecord } from '../../src/model/types.ts';
import { isEnforceable } from '../../src/model/types.ts';
import { allowed, podKey, type DirectionResult, type Endpoint, type Flow, type Verdict } from '../../src/semantics/evaluate.ts';
import { clusterArb, flowsAmong, type Cluster } from '../support/arbitraries.ts';
import { clusterPoliciesArb } from '../support/cnp-arbitraries.ts';

const RUNS = Number(process.env.PROPERTY_RUNS ?? 150);
const SEED = process.env.PROPERTY_SEED ? Number(process.env.PROPERTY_SEED) : undefined;
const params = { numRuns: RUNS, ...(SEED !== undefined ? { seed: SEED } : {}) };

const flowsOf = (pods: readonly PodRecord[]) => flowsAmong(pods.filter((p) => p.ips.length > 0));

const name = (e: Endpoint) => (e.kind === 'pod' ? podKey(e.pod) : e.ip);
const show = (f: Flow, v: Verdict) => `${name(f.src)} -> ${name(f.dst)} ${f.port}/${f.protocol}: ${v.summary}`;

/** A copy of the cluster's model with records added (or, by UID, replaced). */
function withRecords(c: Cluster, records: readonly ObjectRecord[], drop: (r: ClusterPolicyRecord) => boolean = () => false): Model {
  const m = new Model();
  const src = c.model;
  for (const r of [...src.allNamespaces().filter((n) => !n.implicit), ...src.allNodes(), ...src.allPods(), ...src.allPolicies(), ...src.allClusterPolicies(), ...records]) {
    if (r.kind === 'ClusterNetworkPolicy' && drop(r)) continue;
    m.upsert(r);
  }
  return m;
}

/** Priority 0, named to sort first: applies to every pod and matches every flow of a direction. */
function everything(action: CnpAction, tier: CnpTier = 'Admin', uid = 'aaa-everything'): ClusterPolicyRecord {
  return {
    kind: 'ClusterNetworkPolicy',
    uid,
    name: uid,
    tier,
    priority: 0,
    subject: { kind: 'pods', namespaces: { kind: 'selector', selector: EVERYTHING } },
    // Ingress peers are pods; egress to 0.0.0.0/0 covers every IPv4 address, pods included.
    ingress: [{ name: 'all', action, peers: [{ kind: 'pods', namespaces: { kind: 'selector', selector: EVERYTHING } }] }],
    egress: [{ name: 'all', action, peers: [{ kind: 'networks', cidrs: [parseCidr('0.0.0.0/0')] }] }],
    issues: [],
    unsupported: [],
  };
}

const same = (a: DirectionResult, b: DirectionResult) => a.allowed === b.allowed;
const scenario = fc.record({ cluster: clusterArb, cnps: clusterPoliciesArb(0, 4) });

function check(run: (c: Cluster, base: Model) => string | undefined): void {
  fc.assert(
    fc.property(scenario, ({ cluster, cnps }) => {
      const base = withRecords(cluster, cnps);
      const wrong = run(cluster, base);
      if (wrong) throw new Error(wrong);
    }),
    params,
  );
}

describe('tier properties on random clusters with random ClusterNetworkPolicies', () => {
  it('a Pass that matches first skips the whole Admin tier: the direction is decided as if no Admin policy existed', () => {
    check((c, base) => {
      const passed = withRecords(c, [...base.allClusterPolicies(), everything('Pass')]);
      const noAdmin = withRecords(c, [...base.allClusterPolicies()], (r) => r.tier === 'Admin');
      for (const f of flowsOf(c.pods)) {
        const v = allowed(passed, f);
        const ref = allowed(noAdmin, f);
        const orig = allowed(base, f);
        if (!same(v.egress, ref.egress)) return `egress: ${show(f, v)} / without Admin: ${show(f, ref)}`;
        // The Pass matches pod sources only (ingress peers select pods); others see the Admin tier as before.
        const podSource = f.src.kind === 'pod' && isEnforceable(f.src.pod);
        if (!same(v.ingress, podSource ? ref.ingress : orig.ingress)) return `ingress: ${show(f, v)}`;
      }
      return undefined;
    });
  });

  it('an Admin Deny that matches first is final: no NetworkPolicy or Baseline policy opens the flow', () => {
    check((c, base) => {
      const denied = withRecords(c, [...base.allClusterPolicies(), everything('Deny')]);
      for (const f of flowsOf(c.pods)) {
        const v = allowed(denied, f);
        if (v.fact) continue;
        const enforcedSource = f.src.kind === 'pod' && isEnforceable(f.src.pod);
        if (enforcedSource && v.allowed) return `expected denied: ${show(f, v)}`;
      }
      return undefined;
    });
  });

  it('an Admin Accept that matches first on both sides allows every flow between enforced pods', () => {
    check((c, base) => {
      const accepted = withRecords(c, [...base.allClusterPolicies(), everything('Accept')]);
      for (const f of flowsOf(c.pods)) {
        if (f.src.kind !== 'pod' || f.dst.kind !== 'pod' || !isEnforceable(f.src.pod) || !isEnforceable(f.dst.pod)) continue;
        const v = allowed(accepted, f);
        if (!v.allowed) return `expected allowed: ${show(f, v)}`;
      }
      return undefined;
    });
  });

  it('a NetworkPolicy that isolates a pod decides before any Baseline policy: a Baseline Accept of everything opens nothing it denies', () => {
    check((c, base) => {
      const npOnly = withRecords(c, [], () => true);
      const opened = withRecords(c, [...[...base.allClusterPolicies()].filter((r) => r.tier === 'Baseline'), everything('Accept', 'Baseline')]);
      for (const f of flowsOf(c.pods)) {
        const v = allowed(opened, f);
        const ref = allowed(npOnly, f);
        for (const d of ['egress', 'ingress'] as const) {
          if (ref[d].isolatedBy.length > 0 && !same(v[d], ref[d])) return `${d}: ${show(f, v)} / NetworkPolicies alone: ${show(f, ref)}`;
        }
      }
      return undefined;
    });
  });

  it('Baseline policies never change a direction decided by the Admin tier or by a NetworkPolicy', () => {
    fc.assert(
      fc.property(scenario, clusterPoliciesArb(1, 3, 'Baseline', 10), ({ cluster, cnps }, extra) => {
        const base = withRecords(cluster, cnps);
        const more = withRecords(cluster, [...cnps, ...extra]);
        for (const f of flowsOf(cluster.pods)) {
          const before = allowed(base, f);
          const after = allowed(more, f);
          for (const d of ['egress', 'ingress'] as const) {
            const tier = before[d].decidedBy?.tier;
            if ((tier === 'Admin' || tier === 'NetworkPolicy') && !same(before[d], after[d])) throw new Error(`${d} decided by ${tier} changed: ${show(f, before)} / ${show(f, after)}`);
          }
        }
      }),
      params,
    );
  });

  it('a direction no policy of any tier decides is allowed by default, and selecting a pod alone never isolates it', () => {
    check((c, base) => {
      for (const f of flowsOf(c.pods)) {
        const v = allowed(base, f);
        for (const d of [v.egress, v.ingress]) {
          if (d.decidedBy?.tier === 'Default' && !d.allowed) return `default must allow: ${show(f, v)}`;
          if (d.decidedBy?.tier === 'Default' && d.path.some((s) => s.outcome === 'Accept' || s.outcome === 'Deny')) return `a final action did not decide: ${show(f, v)}`;
        }
      }
      return undefined;
    });
  });
});
