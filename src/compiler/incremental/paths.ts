// The incremental compiler's chains: a pod's chains in one direction (its path, tiers.ts), built
// once per selection key however many pods share them and remembered, each tier's chain once per
// tier key (bounded LRUs: an evicted entry is rebuilt on demand, equal in content), with the sets
// they need; and the collision guard's bookkeeping (collisions.ts): which contents each chain
// name stands for among the local pods' paths.

import { LRUCache } from 'lru-cache';
import type { IpBlockPeer, PodsPeer, PolicyType, Protocol } from '../../model/types.ts';
import { collisionOf, contentText, sortCollisions, type NameCollision } from '../collisions.ts';
import type { ChainContent } from '../layout.ts';
import { KNOWN_PODS_SPEC, podCidrsSetSpec } from '../layout.ts';
import { blockSetSpec, namedPortSetSpec, podSetSpec, unknownPodAddressMatches, type PeerRef, type SetSource, type SetSpec } from '../rules.ts';
import type { SetMatch, SetMember } from '../ruleset.ts';
import type { Model } from '../../model/store.ts';

/** A set a chain needs, recorded while the chain is built. */
export type SetNeed =
  /** A peer's pod addresses (`any`: every pod's, KNOWN_PODS_SPEC). */
  | { readonly kind: 'p'; readonly spec: SetSpec; readonly peer: PodsPeer | 'any' }
  | { readonly kind: 'n'; readonly spec: SetSpec; readonly peer: PeerRef; readonly portName: string; readonly protocol: Protocol | undefined }
  /** A set of fixed members (ipBlock, networks). */
  | { readonly kind: 'b'; readonly spec: SetSpec; readonly members: readonly SetMember[] };

/** The rule builder's set source: records the sets a path needs instead of filling them. */
export class Recorder implements SetSource {
  readonly needs = new Map<string, SetNeed>();
  private readonly model: Model;
  constructor(model: Model) {
    this.model = model;
  }
  podSet(peer: PodsPeer): string {
    const spec = podSetSpec(peer);
    if (!this.needs.has(spec.name)) this.needs.set(spec.name, { kind: 'p', spec, peer });
    return spec.name;
  }
  namedPortSet(peer: PeerRef, portName: string, protocol: Protocol | undefined): string {
    const spec = namedPortSetSpec(peer, portName, protocol);
    if (!this.needs.has(spec.name)) this.needs.set(spec.name, { kind: 'n', spec, peer, portName, protocol });
    return spec.name;
  }
  blockSet(b: IpBlockPeer): string {
    return this.netSet(blockSetSpec(b));
  }
  netSet(spec: SetSpec & { readonly members: readonly SetMember[] }): string {
    if (!this.needs.has(spec.name)) this.needs.set(spec.name, { kind: 'b', spec: { name: spec.name, type: spec.type, purpose: spec.purpose }, members: spec.members });
    return spec.name;
  }
  unknownPodAddress(side: 'src' | 'dst'): readonly SetMatch[] {
    if (!this.needs.has(KNOWN_PODS_SPEC.name)) this.needs.set(KNOWN_PODS_SPEC.name, { kind: 'p', spec: KNOWN_PODS_SPEC, peer: 'any' });
    return unknownPodAddressMatches(side, this.netSet(podCidrsSetSpec(this.model)), KNOWN_PODS_SPEC.name);
  }
}

/** A pod's chains in one direction (tiers.ts DirectionPath), with the sets they need. */
export interface PathEntry {
  readonly dir: PolicyType;
  /** Dispatched at the entry level, the entry chain first; empty when nothing applies. */
  readonly entry: readonly ChainContent[];
  /** Dispatched at the next level (after an Admin chain). */
  readonly next: readonly ChainContent[];
  /** The entry chains go on to the next-level dispatch. */
  readonly continues: boolean;
  /** Every chain of the path (entry, then next). */
  readonly chains: readonly ChainContent[];
  readonly needs: readonly SetNeed[];
}

/** Paths beyond this many are forgotten, least recently used first (rebuilt on demand). */
export const MEMO_LIMIT = 4096;

export function newPathMemo(): LRUCache<string, PathEntry> {
  return new LRUCache<string, PathEntry>({ max: MEMO_LIMIT });
}

/** A tier chain (undefined: the tier had no rule) and the sets it needs. */
export interface TierEntry {
  readonly chain: ChainContent | undefined;
  readonly needs: readonly SetNeed[];
}

export function newTierMemo(): LRUCache<string, TierEntry> {
  return new LRUCache<string, TierEntry>({ max: MEMO_LIMIT });
}

/**
 * Per chain name, the contents the local pods' paths use under it (with pod counts): a name with
 * two contents is colliding. The decision depends only on this multiset, never on the order
 * pods were seen, so the incremental compiler reaches compile()'s result.
 */
export class ContentTracker {
  private readonly byName = new Map<string, { readonly dir: PolicyType; readonly texts: Map<string, number> }>();
  /** Names standing for more than one content now, with their direction. */
  readonly colliding = new Map<string, PolicyType>();

  clear(): void {
    this.byName.clear();
    this.colliding.clear();
  }

  /** Count a pod's use of a path's chain contents (+1 / -1). */
  note(path: PathEntry, delta: 1 | -1): void {
    for (const c of path.chains) {
      let e = this.byName.get(c.name);
      if (!e) this.byName.set(c.name, (e = { dir: path.dir, texts: new Map() }));
      const text = contentText(c);
      const n = (e.texts.get(text) ?? 0) + delta;
      if (n > 0) e.texts.set(text, n);
      else e.texts.delete(text);
      if (e.texts.size === 0) this.byName.delete(c.name);
      if (e.texts.size > 1) this.colliding.set(c.name, e.dir);
      else this.colliding.delete(c.name);
    }
  }
}

/** The collisions a set of quarantined names stands for, as compile() reports them. */
export function collisionsOf(quarantined: ReadonlyMap<string, PolicyType>): NameCollision[] {
  return sortCollisions([...quarantined].map(([name, dir]) => collisionOf(dir, name)));
}
