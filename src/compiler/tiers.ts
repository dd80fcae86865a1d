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
import type { Cidr, ClusterPolicyRecord, CnpTier, Labels, PodRecord, PolicyRecord, PolicyType } from '../model/types.ts';
import { isEnforceable } from '../model/types.ts';
import { rememberContentText } from './collisions.ts';
import { cidrContainsIp, parseCidr } from '../model/cidr.ts';
import { DISPATCH_CHAINS, linkTiers, type ChainContent, type Continuation } from './layout.ts';
import { chainName } from './names.ts';
import { dropChainsOf } from './drop-log.ts';
import { clusterPolicyRules, clusterTierRules, networkPolicyRules, type SetSource } from './rules.ts';
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
  /** How its undecided packets reach the next tier (layout.ts Continuation). */
  readonly continuation: Continuation;
  /** The policies of this tier that apply to the pod in this direction, in evaluation order. */
  select(pod: PodSelection, dir: PolicyType, earlier: ReadonlyMap<TierName, readonly TierPolicy[]>): readonly TierPolicy[];
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
 * What selects one pod, computed once for both directions: the NetworkPolicies whose selector
 * matches it, and the ClusterNetworkPolicies of each tier whose subject does (any direction).
 */
export class PodSelection {
  readonly model: Model;
  readonly pod: PodRecord;
  /** Per direction, the shared Admin prefix's policies, when the node's gate sends this pod through it (they are left out of its Admin chain). */
  readonly shared: Partial<Record<PolicyType, ReadonlySet<ClusterPolicyRecord>>>;
  private nps: PolicyRecord[] | undefined;
  private readonly cnps = new Map<CnpTier, ClusterPolicyRecord[]>();
  constructor(model: Model, pod: PodRecord, shared: Partial<Record<PolicyType, ReadonlySet<ClusterPolicyRecord>>> = {}) {
    this.model = model;
    this.pod = pod;
    this.shared = shared;
  }
  /** NetworkPolicies selecting the pod, in name order. */
  networkPolicies(): PolicyRecord[] {
    return (this.nps ??= this.model.policiesSelecting(this.pod));
  }
  /** ClusterNetworkPolicies of the tier whose subject selects the pod, in evaluation order. */
  clusterPolicies(tier: CnpTier): ClusterPolicyRecord[] {
    let l = this.cnps.get(tier);
    if (!l) this.cnps.set(tier, (l = clusterPoliciesSelecting(this.model, this.pod, tier)));
    return l;
  }
}

/**
 * The ClusterNetworkPolicies of a tier whose subject selects the pod, in evaluation order
 * (Model.clusterPoliciesInTier: priority, then name, then UID, as the semantics apply them). A
 * CNP never isolates: selecting a pod only puts its rules first, in the directions it has rules
 * for.
 */
export function clusterPoliciesSelecting(model: Model, pod: PodRecord, tier: CnpTier): ClusterPolicyRecord[] {
  const all = model.clusterPoliciesInTier(tier);
  if (all.length === 0 || !isEnforceable(pod)) return [];
  let nsLabels: Labels | undefined;
  const labels = () => (nsLabels ??= model.namespace(pod.namespace).labels);
  return all.filter((c) => subjectMatches(c, pod, labels));
}

const withRules = (list: readonly ClusterPolicyRecord[], dir: PolicyType) => list.filter((c) => (dir === 'Ingress' ? c.ingress : c.egress).length > 0);

/**
 * A node's shared Admin prefix (sharedAdminPrefix per direction; none without pod CIDRs, which
 * the gate needs) and which of its pods the gate sends through it: those whose every address
 * lies in the node's pod CIDRs.
 */
export class SharedAdminPrefix {
  /** Per direction, the prefix's policies in evaluation order (empty: no prefix chains). */
  readonly policies: Record<PolicyType, readonly ClusterPolicyRecord[]>;
  private readonly shared: Partial<Record<PolicyType, ReadonlySet<ClusterPolicyRecord>>>;
  private readonly nets: readonly Cidr[];
  constructor(model: Model, cidrs: readonly string[]) {
    this.nets = cidrs.map((c) => parseCidr(c));
    const of = (dir: PolicyType) => (cidrs.length > 0 ? sharedAdminPrefix(model, dir) : []);
    this.policies = { Egress: of('Egress'), Ingress: of('Ingress') };
    this.shared = {};
    for (const dir of ['Egress', 'Ingress'] as const) if (this.policies[dir].length > 0) this.shared[dir] = new Set(this.policies[dir]);
  }
  /** Whether the gate sends the pod's packets through the prefix chains: every address of it lies in the node's pod CIDRs. */
  gates(pod: PodRecord): boolean {
    return this.nets.length > 0 && pod.ips.length > 0 && pod.ips.every((ip) => this.nets.some((n) => cidrContainsIp(n, ip)));
  }
  /** What PodSelection leaves out of this pod's Admin chains. */
  forPod(pod: PodRecord): Partial<Record<PolicyType, ReadonlySet<ClusterPolicyRecord>>> {
    if (this.shared.Egress === undefined && this.shared.Ingress === undefined) return this.shared;
    return this.gates(pod) ? this.shared : {};
  }
  /** The prefix chain's rules in one direction (layout.ts LayoutOptions.wide); undecided packets go on to the dispatch. */
  rules(sets: SetSource, dir: PolicyType): Rule[] {
    const list = this.policies[dir];
    // In place: a layout chain, written once, whose drops no path brings along (rules.ts DropShape).
    return list.length === 0 ? [] : clusterTierRules(sets, dir, list, DISPATCH_CHAINS.entry[dir], 'inline');
  }
}

/** Whether a ClusterNetworkPolicy's subject selects every pod (no requirement on the namespace or the pod). */
export function selectsEveryPod(c: ClusterPolicyRecord): boolean {
  const s = c.subject;
  return s.namespaces.kind === 'selector' && s.namespaces.selector.requirements.length === 0 && (!s.pods || s.pods.requirements.length === 0);
}

/**
 * The shared Admin prefix of a direction (layout.ts WIDE_CHAINS, invariant
 * *shared-admin-prefix*): in evaluation order, the Admin policies with rules in this direction,
 * from the first as long as each selects every pod and has no Pass rule there (a Pass skips the
 * rest of the tier, which is the pod's own: it ends the prefix). Every pod's Admin tier starts
 * with exactly these, so evaluating them once, before the pod's own chains, means the same.
 */
export function sharedAdminPrefix(model: Model, dir: PolicyType): ClusterPolicyRecord[] {
  const out: ClusterPolicyRecord[] = [];
  for (const c of model.clusterPoliciesInTier('Admin')) {
    const rules = dir === 'Ingress' ? c.ingress : c.egress;
    if (rules.length === 0) continue;
    if (!selectsEveryPod(c) || rules.some((r) => r.action === 'Pass')) break;
    out.push(c);
  }
  return out;
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
function clusterTier(name: CnpTier, kinds: Record<PolicyType, string>, continuation: Continuation, select: Tier['select']): Tier {
  return {
    name,
    kinds,
    scope: 'cluster',
    continuation,
    select,
    rules: (sets, _pod, dir, policies, next) => clusterTierRules(sets, dir, cnps(policies), next),
    policyRules: (sets, _pod, dir, policy, next) => (policy.kind === 'ClusterNetworkPolicy' ? clusterPolicyRules(sets, dir, policy, next) : []),
  };
}

/**
 * In order: Admin, NetworkPolicy, Baseline; past the last, allowed. Chain kind letters: E and I
 * for NetworkPolicy chains (as before tiers), A and D for Admin, F and J for Baseline; their
 * lower cases name dispatch sets, apart from the set kinds p, n, b, w and t.
 */
export const TIERS: readonly Tier[] = [
  // First match decides: Accept allows this direction, Deny drops, Pass skips to the next tier.
  // By default it goes on to the pod's next tier chain by goto: no second dispatch per
  // connection, an Admin chain per next chain. With TierOptions.continuation {Admin: 'dispatch'}
  // (`--shared-admin-chains`) the pods under the same Admin policies share one Admin chain, which
  // goes on by the next-level dispatch (layout.ts): fewer rules and cheaper changes to Admin
  // policies that select many pods, a second dispatch for their packets.
  // The shared prefix (sharedAdminPrefix) is left out for the pods the node's gate sends through it.
  clusterTier('Admin', { Egress: 'A', Ingress: 'D' }, 'goto', (p, dir) => {
    const all = withRules(p.clusterPolicies('Admin'), dir);
    const shared = p.shared[dir];
    return shared && shared.size > 0 ? all.filter((c) => !shared.has(c)) : all;
  }),
  {
    // A pod a NetworkPolicy isolates is decided here: its allow rules, then the default deny.
    name: 'NetworkPolicy',
    kinds: { Egress: 'E', Ingress: 'I' },
    scope: 'namespace',
    continuation: 'goto',
    select: (p, dir) => p.networkPolicies().filter((np) => np.policyTypes.includes(dir)),
    rules: (sets, _pod, dir, policies) => networkPolicyRules(sets, dir, nps(policies)),
    // Its allow rules, without the logged default deny (two rules) that ends every NetworkPolicy chain.
    policyRules: (sets, _pod, dir, policy) => (policy.kind === 'NetworkPolicy' ? networkPolicyRules(sets, dir, [policy]).slice(0, -2) : []),
  },
  // Only for pods no NetworkPolicy isolates in that direction; Pass and no match allow.
  clusterTier('Baseline', { Egress: 'F', Ingress: 'J' }, 'goto', (p, dir, earlier) => ((earlier.get('NetworkPolicy')?.length ?? 0) > 0 ? [] : withRules(p.clusterPolicies('Baseline'), dir))),
];

/** The tiers that apply to a pod in one direction, each with its policies, in tier order. */
export type Selection = readonly { readonly tier: Tier; readonly policies: readonly TierPolicy[] }[];

/**
 * What applies to a pod in one direction (empty: nothing; the pod is not dispatched). Pass the
 * same PodSelection for both directions of a pod to select once.
 */
export function selectTiers(model: Model, pod: PodRecord, dir: PolicyType, selection: PodSelection = new PodSelection(model, pod)): Selection {
  const out: { tier: Tier; policies: readonly TierPolicy[] }[] = [];
  const earlier = new Map<TierName, readonly TierPolicy[]>();
  for (const tier of TIERS) {
    const policies = tier.select(selection, dir, earlier);
    earlier.set(tier.name, policies);
    if (policies.length > 0) out.push({ tier, policies });
  }
  return out;
}

/**
 * The key of a pod's chains in one direction: pods with equal keys get the same chains (the
 * compilers build them once). `id` names a policy record (its UID, or an id per record object).
 */
export function selectionKey(dir: PolicyType, sel: Selection, id: (p: TierPolicy) => string | number): string {
  let key = dir;
  for (const s of sel) key += `|${s.tier.name}:${s.policies.map(id).join(',')}`;
  return key;
}

/** A chain named by a digest of its rules (the collision guard keeps the text it was named from). */
export function namedChain(kind: string, rules: readonly Rule[]): ChainContent {
  const text = JSON.stringify(rules);
  const content = { name: chainName(kind, text), rules };
  rememberContentText(content, text);
  return content;
}

/** A chain of a pod's path with the tier it was built for, the tier's policies and its `next`. */
export interface TierChain {
  readonly chain: ChainContent;
  readonly tier: Tier;
  readonly policies: readonly TierPolicy[];
  readonly next: string | undefined;
}

/** A pod's chains in one direction, at each dispatch level (layout.ts LinkedPath). */
export interface DirectionPath {
  /** Dispatched at the entry level, the entry chain first, the drop chains they use last; empty when nothing applies. */
  readonly entry: readonly ChainContent[];
  /** Dispatched at the next level (after an Admin chain), its first chain first, the drop chains they use last. */
  readonly next: readonly ChainContent[];
  /** The entry chains go on to the next-level dispatch (they end in an Admin chain). */
  readonly continues: boolean;
}

/** How the compilers link tiers, where it can be chosen. */
export interface TierOptions {
  /** A tier's continuation instead of its default (TIERS): `{ Admin: 'dispatch' }` shares Admin chains. */
  readonly continuation?: Partial<Record<TierName, Continuation>>;
}

/** A tier's continuation under these options. */
export function continuationOf(tier: Tier, opts: TierOptions | undefined): Continuation {
  return opts?.continuation?.[tier.name] ?? tier.continuation;
}

/**
 * Remembers tier chains between calls (the incremental compiler): returns the chain of `tier`
 * for these policies and `next`, building it with `build` (given the set source to record its
 * sets with) when it does not have it. Undefined: the tier has no rule for the pod.
 */
export type TierChainCache = (
  tier: Tier,
  dir: PolicyType,
  policies: readonly TierPolicy[],
  next: string | undefined,
  build: (sets: SetSource) => ChainContent | undefined,
) => ChainContent | undefined;

/** A pod's chains in one direction. */
export function directionPath(sets: SetSource, pod: PodRecord, dir: PolicyType, sel: Selection, cache?: TierChainCache, opts?: TierOptions): DirectionPath {
  const t = tierChains(sets, pod, dir, sel, cache, opts);
  // Each level's chains bring the drop chains their rules go to (drop-log.ts chainedDrop): they
  // are programmed, counted and collected with them, last, so the chain dispatched to stays first.
  const withDrops = (l: readonly TierChain[]): ChainContent[] => {
    const chains = l.map((c) => c.chain);
    return [...chains, ...dropChainsOf(chains)];
  };
  return { entry: withDrops(t.entry), next: withDrops(t.next), continues: t.continues };
}

/** A pod's chains in one direction, each with its tier, policies and `next`. */
export function tierChains(
  sets: SetSource,
  pod: PodRecord,
  dir: PolicyType,
  sel: Selection,
  cache?: TierChainCache,
  opts?: TierOptions,
): { entry: TierChain[]; next: TierChain[]; continues: boolean } {
  const linked = linkTiers(
    dir,
    sel.map((s) => {
      const build = (src: SetSource, next: string | undefined): ChainContent | undefined => {
        const rules = s.tier.rules(src, pod, dir, s.policies, next);
        return rules.length === 0 ? undefined : namedChain(s.tier.kinds[dir], rules);
      };
      return {
        continuation: continuationOf(s.tier, opts),
        chain: (next: string | undefined) => (cache ? cache(s.tier, dir, s.policies, next, (src) => build(src, next)) : build(sets, next)),
        s,
      };
    }),
  );
  const of = (l: (typeof linked.entry)[number]): TierChain => ({ chain: l.chain, tier: l.tier.s.tier, policies: l.tier.s.policies, next: l.next });
  return { entry: linked.entry.map(of), next: linked.next.map(of), continues: linked.continues };
}
