// ClusterNetworkPolicies of one tier at one priority that could both apply to a connection.
//
// The API leaves their order undefined ("the implementation can apply any of the matching
// policies"); the semantics apply them in name order (Model.clusterPoliciesInTier), and this
// says where that choice may matter, so it can be reported once when objects are loaded. A pair
// counts when both have rules for a common direction and their subjects select a common pod now.

import type { Model } from '../model/store.ts';
import type { ClusterPolicyRecord, CnpTier, PodRecord } from '../model/types.ts';
import { CNP_TIERS, isEnforceable } from '../model/types.ts';
import { clusterPolicyLabel, podKey, subjectSelects } from './evaluate.ts';

export interface PriorityTie {
  readonly tier: CnpTier;
  readonly priority: number;
  /** Names, in the order the semantics apply them (name order). */
  readonly policies: readonly [string, string];
  /** A pod both subjects select (the first in name order), as `namespace/name`. */
  readonly pod: string;
  readonly message: string;
}

export function clusterPriorityTies(model: Model): PriorityTie[] {
  const out: PriorityTie[] = [];
  let pods: PodRecord[] | undefined;
  for (const tier of CNP_TIERS) {
    const list = model.clusterPoliciesInTier(tier);
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length && list[j]!.priority === list[i]!.priority; j++) {
        const [a, b] = [list[i]!, list[j]!];
        if (!sharesDirection(a, b)) continue;
        pods ??= [...model.allPods()].filter(isEnforceable).sort((p, q) => (podKey(p) < podKey(q) ? -1 : 1));
        const pod = pods.find((p) => subjectSelects(model, a, p) && subjectSelects(model, b, p));
        if (!pod) continue;
        out.push({
          tier,
          priority: a.priority,
          policies: [a.name, b.name],
          pod: podKey(pod),
          message:
            `${clusterPolicyLabel(a.name)} and ${clusterPolicyLabel(b.name)} are both ${tier} priority ${a.priority} and both select pod ${podKey(pod)}: ` +
            `where both match a connection the API leaves their order undefined; policyctl applies ${clusterPolicyLabel(a.name)} first (name order)`,
        });
      }
    }
  }
  return out;
}

function sharesDirection(a: ClusterPolicyRecord, b: ClusterPolicyRecord): boolean {
  return (a.ingress.length > 0 && b.ingress.length > 0) || (a.egress.length > 0 && b.egress.length > 0);
}
