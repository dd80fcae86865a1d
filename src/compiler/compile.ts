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
import { DIRECTIONS, HOOKS, PROGRAMMED_SPEC, bucketedDispatch, dispatchRule, dispatchSetSpec, layoutChains, nodePodCidrs, type ChainContent, type Dispatch } from './layout.ts';
import { blockSetSpec, namedPortEntries, namedPortSetSpec, peerKey, podSetSpec, sortedMembers, type SetSource, type SetSpec } from './rules.ts';
import type { Chain, IpSet, NameCollision, Ruleset } from './ruleset.ts';
import { directionPath, selectTiers, selectionKey } from './tiers.ts';

interface SetBuilder extends SetSpec {
  readonly members: Map<string, boolean>; // entry -> nomatch
}

/** Per-compile state: sets are shared by name across policies and pods. */
class Context implements SetSource {
  readonly sets = new Map<string, SetBuilder>();
  readonly podsByPeer = new Map<string, PodRecord[]>();
  /** A pod's chains in one direction, by selection key (layout: entry first). */
  readonly paths = new Map<string, ChainContent[]>();
  readonly model: Model;
  constructor(model: Model) {
    this.model = model;
  }

  set(spec: SetSpec, fill: (s: SetBuilder) => void): string {
    if (!this.sets.has(spec.name)) {
      const s: SetBuilder = { ...spec, members: new Map() };
      fill(s);
      this.sets.set(spec.name, s);
    }
    return spec.name;
  }

  /** Enforceable pods a peer selects; `any` = every enforceable pod in the cluster. */
  peerPods(peer: PodsPeer | 'any'): PodRecord[] {
    const key = peerKey(peer);
    let pods = this.podsByPeer.get(key);
    if (!pods) {
      pods = peer === 'any' ? [...this.model.allPods()].filter(isEnforceable) : this.model.enforceablePodsOf(peer);
      this.podsByPeer.set(key, pods);
    }
    return pods;
  }

  podSet(peer: PodsPeer): string {
    return this.set(podSetSpec(peer), (s) => {
      for (const p of this.peerPods(peer)) for (const ip of p.ips) s.members.set(ip, false);
    });
  }

  namedPortSet(peer: PodsPeer | 'any', portName: string, protocol: Protocol): string {
    return this.set(namedPortSetSpec(peer, portName, protocol), (s) => {
      for (const p of this.peerPods(peer)) for (const e of namedPortEntries(p, portName, protocol)) s.members.set(e, false);
    });
  }

  blockSet(b: IpBlockPeer): string {
    const spec = blockSetSpec(b);
    return this.set(spec, (s) => {
      for (const m of spec.members) s.members.set(m.entry, !!m.nomatch);
    });
  }
}

/** The local pods dispatched to one chain (their entry chain, or a quarantine chain). */
interface Group {
  /** The chains the group's pods go through, the one dispatched to first. */
  readonly chains: readonly ChainContent[];
  readonly ips: Set<string>;
}

export interface CompileOptions {
  /** Pod CIDRs of the node besides its Node object's `spec.podCIDRs` (agent configuration). */
  readonly podCidrs?: readonly string[];
}

export function compile(model: Model, node: string, opts: CompileOptions = {}): Ruleset {
  const ctx = new Context(model);
  const cidrs = nodePodCidrs(model, node, opts.podCidrs);

  const local = model.podsOnNode(node).filter(isEnforceable);
  local.sort((a, b) => (a.uid < b.uid ? -1 : a.uid > b.uid ? 1 : 0));
  // Each local pod's chains per direction; pods with equal selections share them (built once).
  const paths: { pod: PodRecord; dir: PolicyType; path: ChainContent[] }[] = [];
  for (const pod of local) {
    for (const dir of DIRECTIONS) {
      const sel = selectTiers(model, pod, dir);
      if (sel.length === 0) continue;
      const key = selectionKey(dir, sel, pod, (p) => p.uid);
      let path = ctx.paths.get(key);
      if (!path) ctx.paths.set(key, (path = directionPath(ctx, pod, dir, sel)));
      if (path.length > 0) paths.push({ pod, dir, path });
    }
  }
  if (cidrs.length > 0) {
    ctx.set(PROGRAMMED_SPEC, (s) => {
      for (const pod of local) for (const ip of pod.ips) s.members.set(ip, false);
    });
  }

  // The collision guard (collisions.ts): a chain name that stands for two contents among this
  // node's chains is not programmed; every pod whose chains use it goes to a drop-all chain
  // named after the first such name (in name order) instead.
  const texts = new Map<string, Set<string>>();
  for (const { path } of paths) {
    for (const c of path) {
      let t = texts.get(c.name);
      if (!t) texts.set(c.name, (t = new Set()));
      t.add(contentText(c));
    }
  }
  const colliding = new Set([...texts].filter(([, t]) => t.size > 1).map(([name]) => name));
  const collisions: NameCollision[] = [];
  const groups: Record<PolicyType, Map<string, Group>> = { Ingress: new Map(), Egress: new Map() };
  for (const { pod, dir, path } of paths) {
    const bad = colliding.size > 0 ? path.filter((c) => colliding.has(c.name)).map((c) => c.name).sort()[0] : undefined;
    const chains = bad === undefined ? path : [quarantineChain(dir, bad)];
    let g = groups[dir].get(chains[0]!.name);
    if (!g) groups[dir].set(chains[0]!.name, (g = { chains, ips: new Set() }));
    for (const ip of pod.ips) g.ips.add(ip);
  }
  for (const { dir, path } of paths) for (const c of path) if (colliding.has(c.name)) collisions.push(collisionOf(dir, c.name));

  // Each direction's dispatch: a group's rule goes to the chain its pods are dispatched to, in
  // chain name order; its chains are programmed.
  const policyChains = new Map<string, Chain>();
  const dispatchOf = (dir: PolicyType): Dispatch => {
    const sorted = [...groups[dir]].sort(([a], [b]) => (a < b ? -1 : 1));
    return bucketedDispatch(
      dir,
      sorted.map(([entry, g]) => {
        const set = ctx.set(dispatchSetSpec(entry), (s) => {
          for (const ip of g.ips) s.members.set(ip, false);
        });
        for (const c of g.chains) policyChains.set(c.name, c);
        return { rule: dispatchRule(dir, set, entry), ips: g.ips };
      }),
    );
  };
  const dispatch: Record<PolicyType, Dispatch> = { Egress: dispatchOf('Egress'), Ingress: dispatchOf('Ingress') };

  const sets: IpSet[] = [...ctx.sets.values()]
    .map((s): IpSet => ({ name: s.name, type: s.type, purpose: s.purpose, members: sortedMembers(s.members), ...(s.gate && { gate: s.gate }) }))
    .sort((a, b) => (a.name < b.name ? -1 : 1));
  const chains = [...layoutChains(cidrs, dispatch), ...[...policyChains.values()].sort((a, b) => (a.name < b.name ? -1 : 1))];
  const found = sortCollisions(dedupeCollisions(collisions));
  return { node, sets, chains, hooks: HOOKS, ...(found.length > 0 && { collisions: found }) };
}

function dedupeCollisions(list: NameCollision[]): NameCollision[] {
  const seen = new Map<string, NameCollision>();
  for (const c of list) seen.set(c.name, c);
  return [...seen.values()];
}
