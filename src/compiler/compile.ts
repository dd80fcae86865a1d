// The full compiler: model + node name -> Ruleset (ipsets and chains as data). Pure.
//
// What it builds is laid out by layout.ts (hooks, top chains, dispatch, how tier chains link)
// and filled by tiers.ts and rules.ts (which policies apply to a pod, and their rules); this file
// only walks the node's local pods, groups the pods whose chains are equal, and assembles the
// Ruleset. The incremental compiler (incremental/) reaches exactly the same Ruleset by following
// the model's changes.
//
// - Chains are named by a digest of their content, so pods under the same policies share their
//   chains, and a pod joins a group by a dispatch set add (invariant cost-proportional).
// - Fail closed: a pod a NetworkPolicy isolates always ends in a DROP; an invalid policy arrives
//   from the model with no rules, so it isolates and allows nothing; a chain name standing for
//   two contents isolates every pod whose chains use it (collisions.ts).

import type { Model } from '../model/store.ts';
import type { IpBlockPeer, PodRecord, PodsPeer, PolicyType, Protocol } from '../model/types.ts';
import { isEnforceable } from '../model/types.ts';
import { collisionOf, contentText, quarantineChain, sortCollisions } from './collisions.ts';
import { DIRECTIONS, KNOWN_PODS_SPEC, PROGRAMMED_SPEC, podCidrsSetSpec, bucketedDispatch, dropsMidstream, dispatchRule, dispatchSetSpec, hooksFor, layoutChains, layoutRuntimeSets, WIDE_CHAINS, nodePodCidrs, programmedSetNeeded, type ChainContent, type Dispatch, type DispatchLevel, type ServiceProxy } from './layout.ts';
import { blockSetSpec, namedPortEntries, namedPortSetSpec, peerKey, podSetSpec, sortedMembers, unknownPodAddressMatches, type PeerRef, type SetSource, type SetSpec } from './rules.ts';
import type { Chain, IpSet, NameCollision, Rule, Ruleset, SetMatch, SetMember } from './ruleset.ts';
import { PodSelection, SharedAdminPrefix, directionPath, selectTiers, selectionKey, type DirectionPath, type TierOptions } from './tiers.ts';

interface SetBuilder extends SetSpec {
  readonly members: Map<string, boolean>; // entry -> nomatch
}

/**
 * Per-compile state: sets are shared by name across policies and pods. The rule builders name
 * the sets they match (`podSet`, ...); a set is filled only if a chain's rule still uses it when
 * its path is built (a tier drops the rules at its end that change nothing), as the incremental
 * compiler keeps only the sets a path's rules use.
 */
class Context implements SetSource {
  readonly sets = new Map<string, SetBuilder>();
  /** Sets named by a rule builder, filled on demand (`materialize`). */
  private readonly named = new Map<string, { readonly spec: SetSpec; readonly fill: (s: SetBuilder) => void }>();
  readonly podsByPeer = new Map<string, PodRecord[]>();
  /** A pod's chains in one direction, by selection key. */
  readonly paths = new Map<string, DirectionPath>();
  readonly model: Model;
  /** The node compiled for (the `local` pods). */
  readonly node: string;
  constructor(model: Model, node: string) {
    this.model = model;
    this.node = node;
  }

  /** Create and fill a set now. */
  set(spec: SetSpec, fill: (s: SetBuilder) => void): string {
    if (!this.sets.has(spec.name)) {
      const s: SetBuilder = { ...spec, members: new Map() };
      fill(s);
      this.sets.set(spec.name, s);
    }
    return spec.name;
  }

  /** Name a set for a rule; it is created only when a path's rule uses it. */
  private lazy(spec: SetSpec, fill: (s: SetBuilder) => void): string {
    if (!this.named.has(spec.name)) this.named.set(spec.name, { spec, fill });
    return spec.name;
  }

  /** Create the sets the rules of these chains match. */
  materialize(chains: readonly ChainContent[]): void {
    for (const c of chains) {
      for (const r of c.rules) {
        for (const m of r.match.sets ?? []) {
          const n = this.named.get(m.set);
          if (n) this.set(n.spec, n.fill);
        }
      }
    }
  }

  /** Enforceable pods a peer selects; `any` = every enforceable pod in the cluster, `local` = this node's. */
  peerPods(peer: PeerRef): PodRecord[] {
    const key = peerKey(peer);
    let pods = this.podsByPeer.get(key);
    if (!pods) {
      pods = peer === 'any' ? [...this.model.allPods()].filter(isEnforceable) : peer === 'local' ? this.model.podsOnNode(this.node).filter(isEnforceable) : this.model.enforceablePodsOf(peer);
      this.podsByPeer.set(key, pods);
    }
    return pods;
  }

  podSet(peer: PodsPeer): string {
    return this.lazy(podSetSpec(peer), (s) => {
      for (const p of this.peerPods(peer)) for (const ip of p.ips) s.members.set(ip, false);
    });
  }

  namedPortSet(peer: PeerRef, portName: string, protocol: Protocol | undefined): string {
    return this.lazy(namedPortSetSpec(peer, portName, protocol), (s) => {
      for (const p of this.peerPods(peer)) for (const e of namedPortEntries(p, portName, protocol)) s.members.set(e, false);
    });
  }

  blockSet(b: IpBlockPeer): string {
    return this.netSet(blockSetSpec(b));
  }

  netSet(spec: SetSpec & { readonly members: readonly SetMember[] }): string {
    return this.lazy({ name: spec.name, type: spec.type, purpose: spec.purpose }, (s) => {
      for (const m of spec.members) s.members.set(m.entry, !!m.nomatch);
    });
  }

  unknownPodAddress(side: 'src' | 'dst'): readonly SetMatch[] {
    const known = this.lazy(KNOWN_PODS_SPEC, (s) => {
      for (const p of this.peerPods('any')) for (const ip of p.ips) s.members.set(ip, false);
    });
    return unknownPodAddressMatches(side, this.netSet(podCidrsSetSpec(this.model)), known);
  }
}

/** The local pods dispatched to one chain at one level (their entry chain, a quarantine chain, or their next tier chain). */
interface Group {
  /** The chains the group's pods go through from there, the one dispatched to first. */
  readonly chains: readonly ChainContent[];
  /** They end in a chain that goes on to the next-level dispatch. */
  readonly continues: boolean;
  readonly ips: Set<string>;
}

export interface CompileOptions {
  /** Pod CIDRs of the node besides its Node object's `spec.podCIDRs` (agent configuration). */
  readonly podCidrs?: readonly string[];
  /** How tiers are linked (tiers.ts TierOptions: shared Admin chains). */
  readonly tiers?: TierOptions;
  /** kube-proxy's mode and, under IPVS, its Service ranges (layout.ts ServiceProxy); absent: iptables mode. */
  readonly proxy?: ServiceProxy;
  /**
   * Drop mid-stream TCP pickups of the pod CIDRs (layout.ts MIDSTREAM_CHAIN): the agent sets it
   * with `--revoke-established`, so a connection whose entry it deleted is not taken up again.
   */
  readonly dropMidstream?: boolean;
  /**
   * The verdict cache (layout.ts VERDICT_CACHE_SET): the agent's default, off with
   * `--no-verdict-cache`; a compile without it leaves it out.
   */
  readonly verdictCache?: boolean;
}

export function compile(model: Model, node: string, opts: CompileOptions = {}): Ruleset {
  const ctx = new Context(model, node);
  const cidrs = nodePodCidrs(model, node, opts.podCidrs);

  const local = model.podsOnNode(node).filter(isEnforceable);
  local.sort((a, b) => (a.uid < b.uid ? -1 : a.uid > b.uid ? 1 : 0));
  // The Admin policies every pod shares first: their own chains (layout.ts WIDE_CHAINS).
  const prefix = new SharedAdminPrefix(model, cidrs);
  const wide: Partial<Record<PolicyType, Rule[]>> = {};
  for (const dir of DIRECTIONS) {
    const rules = prefix.rules(ctx, dir);
    if (rules.length === 0) continue;
    wide[dir] = rules;
    ctx.materialize([{ name: WIDE_CHAINS[dir].rules, rules }]);
  }
  // Each local pod's chains per direction; pods with equal selections share them (built once).
  const paths: { pod: PodRecord; dir: PolicyType; path: DirectionPath }[] = [];
  for (const pod of local) {
    const selection = new PodSelection(model, pod, prefix.forPod(pod));
    for (const dir of DIRECTIONS) {
      const sel = selectTiers(model, pod, dir, selection);
      if (sel.length === 0) continue;
      const key = selectionKey(dir, sel, (p) => p.uid);
      let path = ctx.paths.get(key);
      if (!path) {
        ctx.paths.set(key, (path = directionPath(ctx, pod, dir, sel, undefined, opts.tiers)));
        ctx.materialize([...path.entry, ...path.next]);
      }
      if (path.entry.length > 0) paths.push({ pod, dir, path });
    }
  }
  if (programmedSetNeeded(cidrs)) {
    ctx.set(PROGRAMMED_SPEC, (s) => {
      for (const pod of local) for (const ip of pod.ips) s.members.set(ip, false);
    });
  }
  const layout = { proxy: opts.proxy, dropMidstream: opts.dropMidstream, verdictCache: opts.verdictCache };
  for (const spec of layoutRuntimeSets(cidrs, layout)) ctx.set(spec, () => {});

  // The collision guard (collisions.ts): a chain name that stands for two contents among this
  // node's chains is not programmed; every pod whose chains use it goes to a drop-all chain
  // named after the first such name (in name order) instead, at the entry level.
  const texts = new Map<string, Set<string>>();
  for (const { path } of paths) {
    for (const c of [...path.entry, ...path.next]) {
      let t = texts.get(c.name);
      if (!t) texts.set(c.name, (t = new Set()));
      t.add(contentText(c));
    }
  }
  const colliding = new Set([...texts].filter(([, t]) => t.size > 1).map(([name]) => name));
  const collisions: NameCollision[] = [];
  const groups: Record<DispatchLevel, Record<PolicyType, Map<string, Group>>> = {
    entry: { Ingress: new Map(), Egress: new Map() },
    next: { Ingress: new Map(), Egress: new Map() },
  };
  const join = (level: DispatchLevel, dir: PolicyType, chains: readonly ChainContent[], continues: boolean, ips: readonly string[]) => {
    let g = groups[level][dir].get(chains[0]!.name);
    if (!g) groups[level][dir].set(chains[0]!.name, (g = { chains, continues, ips: new Set() }));
    for (const ip of ips) g.ips.add(ip);
  };
  for (const { pod, dir, path } of paths) {
    const all = [...path.entry, ...path.next];
    const bad = colliding.size > 0 ? all.filter((c) => colliding.has(c.name)).map((c) => c.name).sort()[0] : undefined;
    if (bad !== undefined) {
      join('entry', dir, [quarantineChain(dir, bad)], false, pod.ips);
      continue;
    }
    join('entry', dir, path.entry, path.continues, pod.ips);
    if (path.next.length > 0) join('next', dir, path.next, false, pod.ips);
  }
  for (const { dir, path } of paths) for (const c of [...path.entry, ...path.next]) if (colliding.has(c.name)) collisions.push(collisionOf(dir, c.name));

  // Each level's and direction's dispatch: a group's rule goes to the chain its pods are
  // dispatched to, in chain name order; its chains are programmed. The next level exists in a
  // direction where an entry chain goes on to it (an Admin chain).
  const policyChains = new Map<string, Chain>();
  const dispatchOf = (level: DispatchLevel, dir: PolicyType): Dispatch => {
    const sorted = [...groups[level][dir]].sort(([a], [b]) => (a < b ? -1 : 1));
    return bucketedDispatch(
      dir,
      sorted.map(([first, g]) => {
        const set = ctx.set(dispatchSetSpec(first, level), (s) => {
          for (const ip of g.ips) s.members.set(ip, false);
        });
        for (const c of g.chains) policyChains.set(c.name, c);
        return { rule: dispatchRule(dir, set, first), ips: g.ips };
      }),
      level,
    );
  };
  const nextOf = (dir: PolicyType): Dispatch | undefined => ([...groups.entry[dir].values()].some((g) => g.continues) ? dispatchOf('next', dir) : undefined);
  const dispatch: Record<DispatchLevel, Partial<Record<PolicyType, Dispatch>>> = {
    entry: { Egress: dispatchOf('entry', 'Egress'), Ingress: dispatchOf('entry', 'Ingress') },
    next: { Egress: nextOf('Egress'), Ingress: nextOf('Ingress') },
  };

  const sets: IpSet[] = [...ctx.sets.values()]
    .map((s): IpSet => ({ name: s.name, type: s.type, purpose: s.purpose, members: sortedMembers(s.members), ...(s.gate && { gate: s.gate }), ...(s.runtime && { runtime: s.runtime }) }))
    .sort((a, b) => (a.name < b.name ? -1 : 1));
  const chains = [...layoutChains(cidrs, dispatch, { ...layout, wide }), ...[...policyChains.values()].sort((a, b) => (a.name < b.name ? -1 : 1))];
  const found = sortCollisions(dedupeCollisions(collisions));
  return { node, sets, chains, hooks: hooksFor(opts.proxy, dropsMidstream(cidrs, opts.dropMidstream)), ...(found.length > 0 && { collisions: found }) };
}

function dedupeCollisions(list: NameCollision[]): NameCollision[] {
  const seen = new Map<string, NameCollision>();
  for (const c of list) seen.set(c.name, c);
  return [...seen.values()];
}
