// The tiers a direction is decided in, in order, and what each contributes to a pod's chains.
// Adding a tier is one entry in TIERS: its chain kind letters, which policies apply to a pod,
// and how their rules are built (rules.ts); the layout links the tier chains (layout.ts
// linkTiers) and both compilers follow TIERS.
//
// A pod's chains in one direction are its tier chains linked by goto: the first is the entry its
// dispatch rule goes to; a tier that leaves a packet undecided goes to the next tier's chain,
// and past the last tier the packet is allowed (RETURN to PCTL-FORWARD). A tier that does not
// apply to the pod has no chain; a pod no tier applies to is not dispatched at all.

import { selectorMatches } from '../model/selector.ts';
import type { Model } from '../model/store.ts';
import type { ClusterPolicyRecord, CnpTier, Labels, PodRecord, PolicyRecord, PolicyType } from '../model/types.ts';
import { isEnforceable } from '../model/types.ts';
import { rememberContentText } from './collisions.ts';
import { linkTiers, type ChainContent } from './layout.ts';
import { chainName } from './names.ts';
import { clusterPolicyRules, clusterTierRules, networkPolicyRules, podPortsKey, type SetSource } from './rules.ts';
import type { Rule } from './ruleset.ts';

export type TierName = 'Admin' | 'NetworkPolicy' | 'Baseline';

/** A policy of some tier, as the model stores it. */
export type TierPolicy = PolicyRecord | ClusterPolicyRecord;

/**
 * Which changes invalidate a tier's chains (the incremental compiler): a NetworkPolicy affects the
 * pods of its namespace; a ClusterNetworkPolicy any pod, and which pods its subject selects
 * changes with namespace labels too.
 */
export type TierScope = 'namespace' | 'cluster';

export interface Tier {
  readonly name: TierName;
  /**
   * The letter of its chains' names per direction (`PCTL-<letter>-<digest>`). Also the dispatch
   * set's letter, lower-cased (layout.ts dispatchSetSpec): unique among chain kinds, and its
   * lower case among set kinds (p, n, b, t).
   */
  readonly kinds: Record<PolicyType, string>;
  /** Policies of this kind are in `model` by namespace (`namespace`) or cluster-wide. */
  readonly scope: TierScope;
  /** The policies of this tier that apply to the pod in this direction, in evaluation order. */
  select(model: Model, pod: PodRecord, dir: PolicyType, earlier: ReadonlyMap<TierName, readonly TierPolicy[]>): readonly TierPolicy[];
  /** The tier's rules for the pod; a packet they leave undecided goes to `next` (layout.ts VERDICTS.next). */
  rules(sets: SetSource, pod: PodRecord, dir: PolicyType, policies: readonly TierPolicy[], next: string | undefined): readonly Rule[];
  /**
   * The rules one of those policies puts into the tier's chain (the same Rule contents as in
   * `rules`), for telling which policy a rule came from (src/agent/provenance.ts).
   */
  policyRules(sets: SetSource, pod: PodRecord, dir: PolicyType, policy: TierPolicy, next: string | undefined): readonly Rule[];
}

/** The policies isolating a pod in one direction, in name order. */
export function isolating(model: Model, pod: PodRecord, dir: PolicyType): PolicyRecord[] {
  return model.policiesSelecting(pod).filter((p) => p.policyTypes.includes(dir));
}

/**
 * The ClusterNetworkPolicies of a tier whose subject selects the pod and that have rules for the
 * direction, in evaluation order (Model.clusterPoliciesInTier: priority, then name, then UID, as
 * the semantics apply them). A CNP never isolates: selecting a pod only puts its rules first.
 */
export function clusterPoliciesSelecting(model: Model, pod: PodRecord, tier: CnpTier, dir: PolicyType): ClusterPolicyRecord[] {
  const all = model.clusterPoliciesInTier(tier);
  if (all.length === 0 || !isEnforceable(pod)) return [];
  let nsLabels: Labels | undefined;
  const labels = () => (nsLabels ??= model.namespace(pod.namespace).labels);
  return all.filter((c) => (dir === 'Ingress' ? c.ingress : c.egress).length > 0 && subjectMatches(c, pod, labels));
}

/** Whether a ClusterNetworkPolicy's subject selects the pod (an enforceable pod). */
export function subjectSelects(model: Model, c: ClusterPolicyRecord, pod: PodRecord): boolean {
  return isEnforceable(pod) && subjectMatches(c, pod, () => model.namespace(pod.namespace).labels);
}

function subjectMatches(c: ClusterPolicyRecord, pod: PodRecord, nsLabels: () => Labels): boolean {
  const s = c.subject;
  if (s.namespaces.kind === 'own') {
    if (s.namespaces.name !== pod.namespace) return false;
  } else if (!selectorMatches(s.namespaces.selector, nsLabels())) return false;
  return !s.pods || selectorMatches(s.pods, pod.labels);
}

const cnps = (policies: readonly TierPolicy[]): ClusterPolicyRecord[] => policies.filter((p): p is ClusterPolicyRecord => p.kind === 'ClusterNetworkPolicy');
const nps = (policies: readonly TierPolicy[]): PolicyRecord[] => policies.filter((p): p is PolicyRecord => p.kind === 'NetworkPolicy');

/** A ClusterNetworkPolicy tier: its policies' rules in order, undecided packets to `next`. */
function clusterTier(name: CnpTier, kinds: Record<PolicyType, string>, select: Tier['select']): Tier {
  return {
    name,
    kinds,
    scope: 'cluster',
    select,
    rules: (sets, pod, dir, policies, next) => clusterTierRules(sets, pod, dir, cnps(policies), next),
    policyRules: (sets, pod, dir, policy, next) => (policy.kind === 'ClusterNetworkPolicy' ? clusterPolicyRules(sets, pod, dir, policy, next) : []),
  };
}

/**
 * In order: Admin, NetworkPolicy, Baseline; past the last, allowed. Chain kind letters: E and I
 * for NetworkPolicy chains (as before tiers), A and D for Admin, F and J for Baseline; their
 * lower cases name dispatch sets, apart from the set kinds p, n, b, w and t.
 */
export const TIERS: readonly Tier[] = [
  // First match decides: Accept allows this direction, Deny drops, Pass skips to the next tier.
  clusterTier('Admin', { Egress: 'A', Ingress: 'D' }, (model, pod, dir) => clusterPoliciesSelecting(model, pod, 'Admin', dir)),
  {
    // A pod a NetworkPolicy isolates is decided here: its allow rules, then the default deny.
    name: 'NetworkPolicy',
    kinds: { Egress: 'E', Ingress: 'I' },
    scope: 'namespace',
    select: (model, pod, dir) => isolating(model, pod, dir),
    rules: (sets, pod, dir, policies) => networkPolicyRules(sets, pod, dir, nps(policies)),
    // Its allow rules, without the default deny that ends every NetworkPolicy chain.
    policyRules: (sets, pod, dir, policy) => (policy.kind === 'NetworkPolicy' ? networkPolicyRules(sets, pod, dir, [policy]).slice(0, -1) : []),
  },
  // Only for pods no NetworkPolicy isolates in that direction; Pass and no match allow.
  clusterTier('Baseline', { Egress: 'F', Ingress: 'J' }, (model, pod, dir, earlier) =>
    (earlier.get('NetworkPolicy')?.length ?? 0) > 0 ? [] : clusterPoliciesSelecting(model, pod, 'Baseline', dir),
  ),
];

/** The tiers that apply to a pod in one direction, each with its policies, in tier order. */
export type Selection = readonly { readonly tier: Tier; readonly policies: readonly TierPolicy[] }[];

/** What applies to a pod in one direction (empty: nothing; the pod is not dispatched). */
export function selectTiers(model: Model, pod: PodRecord, dir: PolicyType): Selection {
  const out: { tier: Tier; policies: readonly TierPolicy[] }[] = [];
  const earlier = new Map<TierName, readonly TierPolicy[]>();
  for (const tier of TIERS) {
    const policies = tier.select(model, pod, dir, earlier);
    earlier.set(tier.name, policies);
    if (policies.length > 0) out.push({ tier, policies });
  }
  return out;
}

/**
 * The key of a pod's chains in one direction: pods with equal keys get the same chains (the
 * compilers build them once). `id` names a policy record (its UID, or an id per record object).
 */
export function selectionKey(dir: PolicyType, sel: Selection, pod: PodRecord, id: (p: TierPolicy) => string | number): string {
  let key = dir;
  for (const s of sel) key += `|${s.tier.name}:${s.policies.map(id).join(',')}`;
  return `${key}|${podPortsKey(pod, dir)}`;
}

/** A chain named by a digest of its rules (the collision guard keeps the text it was named from). */
export function namedChain(kind: string, rules: readonly Rule[]): ChainContent {
  const text = JSON.stringify(rules);
  const content = { name: chainName(kind, text), rules };
  rememberContentText(content, text);
  return content;
}

/** A pod's chains in one direction, entry first (empty when nothing applies). */
export function directionPath(sets: SetSource, pod: PodRecord, dir: PolicyType, sel: Selection): ChainContent[] {
  return tierChains(sets, pod, dir, sel).map((c) => c.chain);
}

/** A pod's chains in one direction, entry first, each with its tier, policies and `next`. */
export function tierChains(
  sets: SetSource,
  pod: PodRecord,
  dir: PolicyType,
  sel: Selection,
): { readonly chain: ChainContent; readonly tier: Tier; readonly policies: readonly TierPolicy[]; readonly next: string | undefined }[] {
  const linked = linkTiers(
    sel.map((s) => ({ kind: s.tier.kinds[dir], body: (next: string | undefined) => s.tier.rules(sets, pod, dir, s.policies, next), s })),
    namedChain,
  );
  return linked.map((l) => ({ chain: l.chain, tier: l.tier.s.tier, policies: l.tier.s.policies, next: l.next }));
}
