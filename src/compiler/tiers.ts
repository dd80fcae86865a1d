// The tiers a direction is decided in, in order, and what each contributes to a pod's chains.
// Adding a tier is one entry in TIERS: its chain kind letters, which policies apply to a pod,
// and how their rules are built (rules.ts); the layout links the tier chains (layout.ts
// linkTiers) and both compilers follow TIERS.
//
// A pod's chains in one direction are its tier chains linked by goto: the first is the entry its
// dispatch rule goes to; a tier that leaves a packet undecided goes to the next tier's chain,
// and past the last tier the packet is allowed (RETURN to PCTL-FORWARD). A tier that does not
// apply to the pod has no chain; a pod no tier applies to is not dispatched at all.

import type { Model } from '../model/store.ts';
import type { PodRecord, PolicyRecord, PolicyType } from '../model/types.ts';
import { rememberContentText } from './collisions.ts';
import { linkTiers, type ChainContent } from './layout.ts';
import { chainName } from './names.ts';
import { networkPolicyRules, podPortsKey, type SetSource } from './rules.ts';
import type { Rule } from './ruleset.ts';

export type TierName = 'NetworkPolicy';

/** A policy of some tier, as the model stores it. */
export type TierPolicy = PolicyRecord;

/** Who invalidates a tier's chains when its policies change (the incremental compiler). */
export type TierScope = 'namespace';

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

export const TIERS: readonly Tier[] = [
  {
    // A pod a NetworkPolicy isolates is decided here: its allow rules, then the default deny.
    name: 'NetworkPolicy',
    kinds: { Egress: 'E', Ingress: 'I' },
    scope: 'namespace',
    select: (model, pod, dir) => isolating(model, pod, dir),
    rules: (sets, pod, dir, policies) => networkPolicyRules(sets, pod, dir, policies),
    // Its allow rules, without the default deny that ends every NetworkPolicy chain.
    policyRules: (sets, pod, dir, policy) => networkPolicyRules(sets, pod, dir, [policy]).slice(0, -1),
  },
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
