// The incremental compiler: follows the model's changes and keeps the node's Ruleset current,
// doing work in proportion to the change (docs/design.md, invariant cost-proportional), not to the cluster.
//
// Contract: after any sequence of model changes, `ruleset()` equals `compile(model, node)`
// exactly (same sets, members, chains, rules, order; test/properties/incremental.test.ts checks
// it on random change sequences). It reuses `compile.ts`'s rule builder, so what is shared is
// the meaning of a chain; what is new here is only the bookkeeping of what a change affects.
//
// State kept between changes:
// - per pods peer (namespace scope + pod selector, shared by key as the sets are): the pods it
//   selects, and its sets (pod IPs, named ports) with a count per entry, so an IP that two pods
//   contribute stays until both are gone;
// - per local pod: the chain it is dispatched to in each direction, and the sets that chain
//   uses (reference counts per set; a set no chain uses is dropped);
// - per group (the local pods sharing a policy chain): its dispatch set, and a count of its
//   addresses in each dispatch bucket; per bucket (direction, k): the groups with an address in
//   it, so a bucket chain is rewritten only when a group enters or leaves it;
// - chains are memoized by (direction, policy versions, the pod's named ports): a chain is built
//   once however many pods share it.
//
// What a change touches:
// - a pod: the peers whose scope holds its namespace (before and after) and whose selector
//   matches it; its own chains when it is local;
// - a policy: the chains of the local pods of its namespace;
// - a namespace's labels: the namespace-selector peers that start or stop matching it.
//
// Output objects are shared between successive Rulesets when unchanged (an IpSet or Chain
// object that is `===` to the previous one has the same content), so a consumer can skip them.

import type { Model, ModelChange } from '../model/store.ts';
import { selectorMatches } from '../model/selector.ts';
import type { IpBlockPeer, PodRecord, PodsPeer, PolicyRecord, PolicyType, Protocol, Selector } from '../model/types.ts';
import { isEnforceable } from '../model/types.ts';
import {
  BUCKETS,
  BUCKET_RULES,
  EGRESS_CHAIN,
  HOOKS,
  INGRESS_CHAIN,
  PROGRAMMED_SPEC,
  blockSetSpec,
  bucketChainName,
  bucketOf,
  dispatchRule,
  dispatchSetSpec,
  namedPortEntries,
  namedPortSetSpec,
  nodePodCidrs,
  peerKey,
  podChain,
  podPortsKey,
  podSetSpec,
  sortedMembers,
  topChains,
  type ChainContent,
  type CompileOptions,
  type SetSource,
  type SetSpec,
} from './compile.ts';
import { collisionOf, contentText, quarantineChain, sameContent, sortCollisions, type NameCollision } from './collisions.ts';
import { CHAIN_PREFIX } from './names.ts';
import { ruleId } from './render.ts';
import type { Chain, IpSet, Rule, Ruleset, SetMember } from './ruleset.ts';

const DIRS = ['Ingress', 'Egress'] as const;

/** One set: members with a contribution count each, kept sorted as the Ruleset wants them. */
class SetState {
  readonly spec: SetSpec;
  /** Number of users (chains, groups) that need the set to exist. */
  refs = 0;
  /** Position in the Ruleset's sorted set list (valid while the list of sets is unchanged). */
  index = -1;
  private readonly counts = new Map<string, number>();
  /** Sorted members; undefined until first output (a bulk fill sorts once). */
  private members: SetMember[] | undefined;
  /** The members array was handed out in an IpSet: copy before changing it. */
  private shared = false;
  private out: IpSet | undefined;
  /** Handed out at least once: from then on, changes are journaled for the delta. */
  private journaled = false;
  /** Net entries added and removed since the last output (journaled sets only). */
  readonly added = new Set<string>();
  readonly removed = new Set<string>();
  /** The pods peer the set belongs to (pod and named-port sets). */
  readonly peer: PeerState | undefined;
  readonly onChange: (s: SetState) => void;

  constructor(spec: SetSpec, onChange: (s: SetState) => void, peer?: PeerState, fixed?: readonly SetMember[]) {
    this.spec = spec;
    this.onChange = onChange;
    this.peer = peer;
    if (fixed) {
      const m = new Map<string, boolean>();
      for (const x of fixed) m.set(x.entry, !!x.nomatch);
      for (const e of m.keys()) this.counts.set(e, 1);
      this.members = sortedMembers(m);
    }
  }

  add(entry: string): void {
    const c = this.counts.get(entry);
    if (c !== undefined) {
      this.counts.set(entry, c + 1);
      return;
    }
    this.counts.set(entry, 1);
    if (this.members) {
      const m = this.writable();
      m.splice(lowerBound(m, entry), 0, { entry });
    }
    if (this.journaled && !this.removed.delete(entry)) this.added.add(entry);
    this.changed();
  }

  delete(entry: string): void {
    const c = this.counts.get(entry);
    if (c === undefined) throw new Error(`incremental compiler: set ${this.spec.name} has no entry ${entry} to remove (bookkeeping bug)`);
    if (c > 1) {
      this.counts.set(entry, c - 1);
      return;
    }
    this.counts.delete(entry);
    if (this.members) {
      const m = this.writable();
      m.splice(lowerBound(m, entry), 1);
    }
    if (this.journaled && !this.added.delete(entry)) this.removed.add(entry);
    this.changed();
  }

  output(): IpSet {
    if (!this.out) {
      if (!this.members) this.members = [...this.counts.keys()].sort().map((entry) => ({ entry }));
      this.shared = true;
      this.journaled = true;
      this.out = { name: this.spec.name, type: this.spec.type, purpose: this.spec.purpose, members: this.members };
    }
    return this.out;
  }

  /** Back to a previous output whose members equal the current ones (changes cancelled out). */
  restore(prev: IpSet): IpSet {
    this.members = prev.members as SetMember[];
    this.shared = true;
    this.out = prev;
    return prev;
  }

  clearJournal(): void {
    this.added.clear();
    this.removed.clear();
  }

  private writable(): SetMember[] {
    if (this.shared) {
      this.members = this.members!.slice();
      this.shared = false;
    }
    return this.members!;
  }

  private changed(): void {
    if (this.out) {
      this.out = undefined;
      this.onChange(this);
    }
  }
}

function lowerBound(m: readonly SetMember[], entry: string): number {
  let lo = 0;
  let hi = m.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (m[mid]!.entry < entry) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** A pods peer (or `any`): the pods it selects now, and its live sets. */
interface PeerState {
  readonly key: string;
  readonly peer: PodsPeer | 'any';
  readonly podSelector: Selector | undefined;
  /** namespace -> uid -> the record whose entries are in the sets (by namespace: a namespace leaves whole). */
  readonly members: Map<string, Map<string, PodRecord>>;
  pset: SetState | undefined;
  /** Named-port sets by set name. */
  readonly nsets: Map<string, { readonly set: SetState; readonly portName: string; readonly protocol: Protocol }>;
  /** Namespace-selector peers: the namespaces it matches now. */
  readonly nsMatch: Set<string> | undefined;
}

/** A set a chain needs, recorded while the chain is built. */
type SetNeed =
  | { readonly kind: 'p'; readonly spec: SetSpec; readonly peer: PodsPeer }
  | { readonly kind: 'n'; readonly spec: SetSpec; readonly peer: PodsPeer | 'any'; readonly portName: string; readonly protocol: Protocol }
  | { readonly kind: 'b'; readonly spec: SetSpec; readonly members: readonly SetMember[] };

class Recorder implements SetSource {
  readonly needs = new Map<string, SetNeed>();
  podSet(peer: PodsPeer): string {
    const spec = podSetSpec(peer);
    if (!this.needs.has(spec.name)) this.needs.set(spec.name, { kind: 'p', spec, peer });
    return spec.name;
  }
  namedPortSet(peer: PodsPeer | 'any', portName: string, protocol: Protocol): string {
    const spec = namedPortSetSpec(peer, portName, protocol);
    if (!this.needs.has(spec.name)) this.needs.set(spec.name, { kind: 'n', spec, peer, portName, protocol });
    return spec.name;
  }
  blockSet(b: IpBlockPeer): string {
    const spec = blockSetSpec(b);
    if (!this.needs.has(spec.name)) this.needs.set(spec.name, { kind: 'b', spec, members: spec.members });
    return spec.name;
  }
}

interface ChainEntry {
  readonly content: ChainContent;
  readonly needs: readonly SetNeed[];
  /** What the content's name was hashed from (the collision guard compares it). */
  readonly text: string;
}

/** The local pods sharing one policy chain, and the set that dispatches them to it. */
interface Group {
  readonly dir: PolicyType;
  readonly chain: ChainContent;
  readonly dispatch: SetState;
  readonly rule: Rule;
  pods: number;
  /** Addresses contributed by its pods in each dispatch bucket (a reused address counts twice). */
  readonly inBucket: number[];
}

/** One dispatch bucket of one direction: the groups with an address in it, by chain name. */
interface Bucket {
  readonly dir: PolicyType;
  readonly k: number;
  readonly name: string;
  readonly groups: SortedList<Group>;
  /** The chain handed out last (undefined when the bucket was empty or is new). */
  out: Chain | undefined;
}

interface Assignment {
  readonly entry: ChainEntry;
  readonly group: Group;
}

interface LocalPod {
  readonly pod: PodRecord;
  readonly assigned: Assignment[];
}

/**
 * What changed between two successive `ruleset()` results, in terms of the kernel objects: a
 * sync layer that applied the previous Ruleset can apply this instead of diffing the whole
 * Ruleset (cost in proportion to the change). Hooks never change.
 */
export interface RulesetDelta {
  /** Sets new in this Ruleset, with all their members. */
  readonly createdSets: readonly IpSet[];
  /** Sets of the previous Ruleset that are gone. */
  readonly destroyedSets: readonly string[];
  /** Sets in both, same object lineage: the entries added and removed (each set at most once). */
  readonly memberChanges: readonly { readonly set: string; readonly added: readonly string[]; readonly removed: readonly string[] }[];
  /** Sets in both that were dropped and rebuilt in between: compare their members whole. */
  readonly rebuiltSets: readonly { readonly before: IpSet; readonly after: IpSet }[];
  /** Chains new in this Ruleset or with different rules (their object differs from the previous one's). */
  readonly writtenChains: readonly Chain[];
  /** Chains of the previous Ruleset that are gone. */
  readonly removedChains: readonly string[];
}

const EMPTY_DELTA: RulesetDelta = { createdSets: [], destroyedSets: [], memberChanges: [], rebuiltSets: [], writtenChains: [], removedChains: [] };

/** What one `ruleset()` call did, for benchmarks and logs. */
export interface IncrementalStats {
  readonly podsChanged: number;
  readonly policiesChanged: number;
  readonly namespacesChanged: number;
  readonly chainsRecomputed: number;
  readonly setsChanged: number;
  readonly full: boolean;
}

/** Memoized chains beyond this many are dropped (they are rebuilt on demand). */
const MEMO_LIMIT = 4096;

export class IncrementalCompiler {
  readonly node: string;
  private readonly model: Model;
  private readonly unsubscribe: () => void;

  // Pending changes since the last ruleset(): uid -> the record the compiler last saw (undefined: none).
  private readonly dirtyPods = new Map<string, PodRecord | undefined>();
  private readonly dirtyPolicyNamespaces = new Set<string>();
  private readonly dirtyNamespaces = new Set<string>();
  private dirtyPolicies = 0;
  private needsBuild = true;

  private readonly peers = new Map<string, PeerState>();
  private readonly ownPeers = new Map<string, Set<PeerState>>();
  private readonly selectorPeers = new Set<PeerState>();
  private readonly selectorPeersByNs = new Map<string, Set<PeerState>>();
  private anyPeer: PeerState | undefined;
  private readonly knownNamespaces = new Set<string>();

  private readonly sets = new Map<string, SetState>();
  private readonly maybeDeadSets = new Set<SetState>();
  private readonly groups = new Map<string, Group>();
  private readonly maybeDeadGroups = new Set<Group>();
  private readonly locals = new Map<string, LocalPod>();
  /** Kept sorted as the output wants them: sets by name, groups by chain name. */
  private readonly setOrder = new SortedList<SetState>((x) => x.spec.name);
  private readonly groupOrder = new SortedList<Group>((g) => g.chain.name);
  private readonly buckets: Record<PolicyType, Bucket[]> = { Ingress: newBuckets('Ingress'), Egress: newBuckets('Egress') };
  /** Buckets whose list of groups changed since the last output. */
  private readonly dirtyBuckets = new Set<Bucket>();

  private readonly memo = new Map<string, ChainEntry>();
  /** Per content-hashed chain name: the content texts local pods got under it, with their pod counts. */
  private readonly contentsByName = new Map<string, Map<string, number>>();
  /** Names standing for more than one content now. */
  private readonly colliding = new Set<string>();
  /** Names whose pods the last build sent to a quarantine chain (collisions.ts). */
  private quarantined = new Set<string>();
  /** Set when a pod met a group of its chain's name with other rules: the next step rebuilds. */
  private regroup = false;
  private readonly policyIds = new WeakMap<PolicyRecord, number>();
  private nextPolicyId = 1;

  // Output caches.
  private last: Ruleset | undefined;
  private outputDirty = true;
  private setListDirty = true;
  private readonly changedSets = new Set<SetState>();
  private groupListDirty = true;
  private topChains: Chain[] = [];
  private policyChains: Chain[] = [];
  private lastStats: IncrementalStats | undefined;

  // Delta bookkeeping: the sets and chains of the last output.
  private readonly prevStates = new Map<string, SetState>();
  private readonly prevIpSets = new Map<string, IpSet>();
  private readonly destroyedSince = new Set<string>();
  private prevChains = new Map<string, Chain>();
  /** Groups (policy chains) created and removed since the last output; `rebuilt` after build(). */
  private readonly groupsCreated = new Set<Group>();
  private readonly groupsRemoved = new Set<string>();
  private rebuilt = true;
  private lastDelta: RulesetDelta = EMPTY_DELTA;

  /** The node's pod CIDRs as of the last build (a change of them rebuilds). */
  private cidrs: string[] = [];
  private readonly extraCidrs: readonly string[];
  /** PCTL-programmed: the addresses of every local pod (undefined without pod CIDRs). */
  private programmed: SetState | undefined;

  constructor(model: Model, node: string, opts: CompileOptions = {}) {
    this.model = model;
    this.node = node;
    this.extraCidrs = opts.podCidrs ?? [];
    this.unsubscribe = model.subscribe((c) => this.note(c));
  }

  /** Stop following the model. */
  dispose(): void {
    this.unsubscribe();
  }

  /** Forget everything and rebuild from the model on the next ruleset() (a safety valve). */
  reset(): void {
    this.needsBuild = true;
  }

  /**
   * What changed from the previous ruleset() result to the last one. Valid only between those
   * two results: a consumer that skips one must diff the whole Ruleset instead.
   */
  delta(): RulesetDelta {
    return this.lastDelta;
  }

  /** What the last ruleset() call processed. */
  stats(): IncrementalStats | undefined {
    return this.lastStats;
  }

  private note(c: ModelChange): void {
    switch (c.kind) {
      case 'Pod':
        if (!this.dirtyPods.has(c.uid)) this.dirtyPods.set(c.uid, c.before as PodRecord | undefined);
        break;
      case 'NetworkPolicy':
        this.dirtyPolicies++;
        if (c.before) this.dirtyPolicyNamespaces.add((c.before as PolicyRecord).namespace);
        if (c.after) this.dirtyPolicyNamespaces.add((c.after as PolicyRecord).namespace);
        break;
      case 'Namespace':
        if (c.before) this.dirtyNamespaces.add((c.before as { name: string }).name);
        if (c.after) this.dirtyNamespaces.add((c.after as { name: string }).name);
        break;
      case 'Node':
        // Only this node's pod CIDRs matter (the top chains and PCTL-programmed): rebuild when
        // they change, which is rare (a Node's status updates leave them alone).
        if (!this.needsBuild && [c.before, c.after].some((n) => (n as { name?: string } | undefined)?.name === this.node)) {
          if (nodePodCidrs(this.model, this.node, this.extraCidrs).join(',') !== this.cidrs.join(',')) this.needsBuild = true;
        }
        break;
    }
  }

  /** The node's Ruleset for the model as it is now; equal to compile(model, node). */
  ruleset(): Ruleset {
    const full = this.needsBuild;
    const stats = { podsChanged: this.dirtyPods.size, policiesChanged: this.dirtyPolicies, namespacesChanged: this.dirtyNamespaces.size, chainsRecomputed: 0, setsChanged: 0, full };
    if (full) this.build();
    else if (this.dirtyPods.size || this.dirtyPolicyNamespaces.size || this.dirtyNamespaces.size) this.apply(stats);
    // The set of chain names standing for two contents changed: group again from scratch, with
    // those names quarantined (a second build sees the same contents, so it is stable).
    if (this.regroup || !sameKeys(this.colliding, this.quarantined)) {
      this.quarantined = new Set(this.colliding);
      this.build();
      stats.full = true;
    }
    this.dirtyPods.clear();
    this.dirtyPolicyNamespaces.clear();
    this.dirtyNamespaces.clear();
    this.dirtyPolicies = 0;
    stats.setsChanged = this.changedSets.size;
    this.lastStats = stats;
    return this.output();
  }

  // ---- building and applying changes -------------------------------------------------------

  private build(): void {
    this.needsBuild = false;
    this.peers.clear();
    this.ownPeers.clear();
    this.selectorPeers.clear();
    this.selectorPeersByNs.clear();
    this.anyPeer = undefined;
    this.knownNamespaces.clear();
    this.sets.clear();
    this.maybeDeadSets.clear();
    this.groups.clear();
    this.groupsCreated.clear();
    this.groupsRemoved.clear();
    this.rebuilt = true;
    this.setOrder.clear();
    this.groupOrder.clear();
    for (const dir of DIRS) {
      for (const b of this.buckets[dir]) {
        b.groups.clear();
        b.out = undefined;
      }
    }
    this.dirtyBuckets.clear();
    this.maybeDeadGroups.clear();
    this.locals.clear();
    this.memo.clear();
    this.contentsByName.clear();
    this.colliding.clear();
    this.regroup = false;
    this.changedSets.clear();
    // Every set is rebuilt: those of the previous output are gone unless built again.
    for (const name of this.prevStates.keys()) this.destroyedSince.add(name);
    this.setListDirty = this.groupListDirty = this.outputDirty = true;
    for (const n of this.model.allNamespaces()) this.knownNamespaces.add(n.name);
    this.cidrs = nodePodCidrs(this.model, this.node, this.extraCidrs);
    this.programmed = undefined;
    if (this.cidrs.length > 0) {
      this.programmed = this.createSet(PROGRAMMED_SPEC);
      this.programmed.refs++;
    }
    const dirty = new Set<string>();
    for (const p of this.model.podsOnNode(this.node)) {
      if (!isEnforceable(p)) continue;
      this.locals.set(p.uid, { pod: p, assigned: [] });
      for (const ip of p.ips) this.programmed?.add(ip);
      dirty.add(p.uid);
    }
    this.recompute(dirty, { chainsRecomputed: 0 });
    this.sweep();
  }

  private apply(stats: { chainsRecomputed: number }): void {
    this.outputDirty = true;
    if (this.memo.size > MEMO_LIMIT) this.memo.clear();
    const chainDirty = new Set<string>();

    // (a) Take out what changed pods contributed, as the compiler last saw them.
    for (const [uid, before] of this.dirtyPods) {
      if (before) this.forScope(before.namespace, (peer) => peer.members.get(before.namespace)?.has(uid) && this.removeMember(peer, before.namespace, uid));
      const local = this.locals.get(uid);
      if (local) {
        this.unassign(local);
        this.locals.delete(uid);
        for (const ip of local.pod.ips) this.programmed?.delete(ip);
      }
    }

    // (b) Namespaces whose labels changed: selector peers that start or stop matching them.
    for (const name of this.dirtyNamespaces) {
      this.knownNamespaces.add(name);
      const labels = this.model.namespace(name).labels;
      for (const peer of this.selectorPeers) {
        const sel = (peer.peer as PodsPeer).namespaces as { kind: 'selector'; selector: Selector };
        const was = peer.nsMatch!.has(name);
        const now = selectorMatches(sel.selector, labels);
        if (was === now) continue;
        if (now) {
          peer.nsMatch!.add(name);
          addTo(this.selectorPeersByNs, name, peer);
          for (const p of this.model.enforceablePodsIn(name, peer.podSelector)) if (!this.dirtyPods.has(p.uid)) this.addMember(peer, p);
        } else {
          peer.nsMatch!.delete(name);
          removeFrom(this.selectorPeersByNs, name, peer);
          for (const uid of [...(peer.members.get(name)?.keys() ?? [])]) this.removeMember(peer, name, uid);
        }
      }
    }

    // (c) Policies changed: the chains of the local pods of their namespaces.
    if (this.dirtyPolicyNamespaces.size) {
      for (const [uid, l] of this.locals) if (this.dirtyPolicyNamespaces.has(l.pod.namespace)) chainDirty.add(uid);
    }

    // (d) Put back what changed pods contribute now.
    for (const uid of this.dirtyPods.keys()) {
      const p = this.model.getPod(uid);
      if (!p) continue;
      this.ensureNamespace(p.namespace);
      if (!isEnforceable(p)) continue;
      this.forScope(p.namespace, (peer) => (!peer.podSelector || selectorMatches(peer.podSelector, p.labels)) && this.addMember(peer, p));
      if (p.nodeName === this.node) {
        this.locals.set(uid, { pod: p, assigned: [] });
        for (const ip of p.ips) this.programmed?.add(ip);
        chainDirty.add(uid);
      }
    }

    // (e) Chains of the local pods affected.
    this.recompute(chainDirty, stats);
    // (f) Drop what nothing uses any more.
    this.sweep();
  }

  private recompute(uids: Iterable<string>, stats: { chainsRecomputed: number }): void {
    for (const uid of uids) {
      const local = this.locals.get(uid);
      if (!local) continue;
      this.unassign(local);
      this.assign(local, stats);
    }
  }

  private assign(local: LocalPod, stats: { chainsRecomputed: number }): void {
    const pod = local.pod;
    const selecting = this.model.policiesSelecting(pod);
    for (const dir of DIRS) {
      const policies = selecting.filter((p) => p.policyTypes.includes(dir));
      if (policies.length === 0) continue;
      const key = `${dir}|${policies.map((p) => this.policyId(p)).join(',')}|${podPortsKey(pod, dir)}`;
      let entry = this.memo.get(key);
      if (!entry) {
        const rec = new Recorder();
        const content = podChain(rec, pod, dir, policies);
        entry = { content, needs: [...rec.needs.values()], text: contentText(content) };
        this.memo.set(key, entry);
        stats.chainsRecomputed++;
      }
      for (const need of entry.needs) this.ref(need);
      this.noteContent(entry, 1);
      // A name that stands for two contents sends its pods to a drop-all chain (collisions.ts).
      const chain = this.quarantined.has(entry.content.name) ? quarantineChain(dir, entry.content.name) : entry.content;
      let group = this.groups.get(chain.name);
      // A group under this name with other rules (a collision appearing, or a group left empty
      // and not swept yet): grouping by name would merge them. Rebuild after this change.
      if (group && !sameContent(group.chain, chain)) this.regroup = true;
      if (!group) {
        const dispatch = this.createSet(dispatchSetSpec(dir, chain.name));
        group = { dir, chain, dispatch, rule: dispatchRule(dir, dispatch.spec.name, chain.name), pods: 0, inBucket: new Array<number>(BUCKETS).fill(0) };
        dispatch.refs++;
        this.groups.set(chain.name, group);
        this.groupOrder.insert(group);
        this.groupsCreated.add(group);
        this.groupListDirty = true;
      }
      group.pods++;
      for (const ip of pod.ips) {
        group.dispatch.add(ip);
        const k = bucketOf(ip);
        if (group.inBucket[k]!++ === 0) this.enterBucket(group, k);
      }
      local.assigned.push({ entry, group });
    }
  }

  private unassign(local: LocalPod): void {
    if (local.assigned.length === 0) return;
    for (const { entry, group } of local.assigned) {
      for (const need of entry.needs) this.unref(this.sets.get(need.spec.name)!);
      this.noteContent(entry, -1);
      for (const ip of local.pod.ips) {
        group.dispatch.delete(ip);
        const k = bucketOf(ip);
        if (--group.inBucket[k]! === 0) this.leaveBucket(group, k);
      }
      if (--group.pods === 0) this.maybeDeadGroups.add(group);
    }
    local.assigned.length = 0;
  }

  /** A group's first address in bucket k: the bucket chain gets its dispatch rule. */
  private enterBucket(group: Group, k: number): void {
    const b = this.buckets[group.dir][k]!;
    b.groups.insert(group);
    this.dirtyBuckets.add(b);
  }

  /** A group's last address in bucket k went. */
  private leaveBucket(group: Group, k: number): void {
    const b = this.buckets[group.dir][k]!;
    b.groups.remove(group);
    this.dirtyBuckets.add(b);
  }

  /** Count a pod's use of a chain content under its name (+1 / -1); keeps `colliding` current. */
  private noteContent(entry: ChainEntry, delta: 1 | -1): void {
    const name = entry.content.name;
    let texts = this.contentsByName.get(name);
    if (!texts) this.contentsByName.set(name, (texts = new Map()));
    const n = (texts.get(entry.text) ?? 0) + delta;
    if (n > 0) texts.set(entry.text, n);
    else texts.delete(entry.text);
    if (texts.size === 0) this.contentsByName.delete(name);
    if (texts.size > 1) this.colliding.add(name);
    else this.colliding.delete(name);
  }

  /** The collisions the grouping honours, as compile() reports them. */
  private collisions(): NameCollision[] {
    return sortCollisions([...this.quarantined].map((name) => collisionOf(name.startsWith(`${CHAIN_PREFIX}I-`) ? 'Ingress' : 'Egress', name)));
  }

  private policyId(p: PolicyRecord): number {
    let id = this.policyIds.get(p);
    if (id === undefined) this.policyIds.set(p, (id = this.nextPolicyId++));
    return id;
  }

  // ---- sets and peers ------------------------------------------------------------------------

  private createSet(spec: SetSpec, peer?: PeerState, fixed?: readonly SetMember[]): SetState {
    if (this.sets.has(spec.name)) throw new Error(`incremental compiler: set ${spec.name} created twice (bookkeeping bug)`);
    const s = new SetState(spec, (x) => this.changedSets.add(x), peer, fixed);
    this.sets.set(spec.name, s);
    this.setOrder.insert(s);
    this.changedSets.add(s);
    this.setListDirty = true;
    return s;
  }

  private ref(need: SetNeed): void {
    let s = this.sets.get(need.spec.name);
    if (!s) {
      if (need.kind === 'b') s = this.createSet(need.spec, undefined, need.members);
      else {
        const peer = this.peerOf(need.peer);
        s = this.createSet(need.spec, peer);
        if (need.kind === 'p') {
          peer.pset = s;
          for (const inNs of peer.members.values()) for (const p of inNs.values()) for (const ip of p.ips) s.add(ip);
        } else {
          peer.nsets.set(need.spec.name, { set: s, portName: need.portName, protocol: need.protocol });
          for (const inNs of peer.members.values()) for (const p of inNs.values()) for (const e of namedPortEntries(p, need.portName, need.protocol)) s.add(e);
        }
      }
    }
    s.refs++;
  }

  private unref(s: SetState): void {
    if (--s.refs === 0) this.maybeDeadSets.add(s);
  }

  /** Drop sets, groups and peers nothing uses any more. */
  private sweep(): void {
    for (const g of this.maybeDeadGroups) {
      if (g.pods > 0 || this.groups.get(g.chain.name) !== g) continue;
      this.groups.delete(g.chain.name);
      this.groupOrder.remove(g);
      if (!this.groupsCreated.delete(g)) this.groupsRemoved.add(g.chain.name);
      this.unref(g.dispatch);
      this.groupListDirty = true;
    }
    this.maybeDeadGroups.clear();
    for (const s of this.maybeDeadSets) {
      if (s.refs > 0 || this.sets.get(s.spec.name) !== s) continue;
      this.sets.delete(s.spec.name);
      this.setOrder.remove(s);
      this.changedSets.delete(s);
      if (this.prevStates.get(s.spec.name) === s) this.destroyedSince.add(s.spec.name);
      this.setListDirty = true;
      const peer = s.peer;
      if (!peer) continue;
      if (peer.pset === s) peer.pset = undefined;
      else peer.nsets.delete(s.spec.name);
      if (!peer.pset && peer.nsets.size === 0) this.dropPeer(peer);
    }
    this.maybeDeadSets.clear();
  }

  private peerOf(peer: PodsPeer | 'any'): PeerState {
    const key = peerKey(peer);
    const existing = this.peers.get(key);
    if (existing) return existing;
    const nsMatch = peer !== 'any' && peer.namespaces.kind === 'selector' ? new Set<string>() : undefined;
    const st: PeerState = { key, peer, podSelector: peer === 'any' ? undefined : peer.pods, members: new Map(), pset: undefined, nsets: new Map(), nsMatch };
    this.peers.set(key, st);
    if (peer === 'any') {
      this.anyPeer = st;
      for (const p of this.model.allPods()) if (isEnforceable(p)) setMember(st, p);
    } else if (peer.namespaces.kind === 'own') {
      addTo(this.ownPeers, peer.namespaces.name, st);
      for (const p of this.model.enforceablePodsIn(peer.namespaces.name, peer.pods)) setMember(st, p);
    } else {
      this.selectorPeers.add(st);
      const sel = peer.namespaces.selector;
      for (const name of this.knownNamespaces) {
        if (!selectorMatches(sel, this.model.namespace(name).labels)) continue;
        nsMatch!.add(name);
        addTo(this.selectorPeersByNs, name, st);
        for (const p of this.model.enforceablePodsIn(name, peer.pods)) setMember(st, p);
      }
    }
    return st;
  }

  private dropPeer(st: PeerState): void {
    this.peers.delete(st.key);
    if (st.peer === 'any') this.anyPeer = undefined;
    else if (st.peer.namespaces.kind === 'own') removeFrom(this.ownPeers, st.peer.namespaces.name, st);
    else {
      this.selectorPeers.delete(st);
      for (const name of st.nsMatch!) removeFrom(this.selectorPeersByNs, name, st);
    }
  }

  /** A namespace seen for the first time: which selector peers match it. */
  private ensureNamespace(name: string): void {
    if (this.knownNamespaces.has(name)) return;
    this.knownNamespaces.add(name);
    const labels = this.model.namespace(name).labels;
    for (const peer of this.selectorPeers) {
      const sel = ((peer.peer as PodsPeer).namespaces as { kind: 'selector'; selector: Selector }).selector;
      if (!selectorMatches(sel, labels)) continue;
      peer.nsMatch!.add(name);
      addTo(this.selectorPeersByNs, name, peer);
    }
  }

  /** Visit the peers whose namespace scope holds this namespace. */
  private forScope(namespace: string, visit: (peer: PeerState) => unknown): void {
    const own = this.ownPeers.get(namespace);
    if (own) for (const peer of own) visit(peer);
    const sel = this.selectorPeersByNs.get(namespace);
    if (sel) for (const peer of sel) visit(peer);
    if (this.anyPeer) visit(this.anyPeer);
  }

  private addMember(peer: PeerState, p: PodRecord): void {
    setMember(peer, p);
    if (peer.pset) for (const ip of p.ips) peer.pset.add(ip);
    for (const n of peer.nsets.values()) for (const e of namedPortEntries(p, n.portName, n.protocol)) n.set.add(e);
  }

  private removeMember(peer: PeerState, namespace: string, uid: string): void {
    const inNs = peer.members.get(namespace)!;
    const p = inNs.get(uid)!;
    inNs.delete(uid);
    if (inNs.size === 0) peer.members.delete(namespace);
    if (peer.pset) for (const ip of p.ips) peer.pset.delete(ip);
    for (const n of peer.nsets.values()) for (const e of namedPortEntries(p, n.portName, n.protocol)) n.set.delete(e);
  }

  // ---- output --------------------------------------------------------------------------------

  private output(): Ruleset {
    if (this.last && !this.outputDirty && this.changedSets.size === 0 && !this.setListDirty && !this.groupListDirty && this.dirtyBuckets.size === 0) {
      this.lastDelta = EMPTY_DELTA;
      return this.last;
    }

    // Set delta: only the sets that changed, were created or went since the last output.
    const createdSets: IpSet[] = [];
    const rebuiltSets: { before: IpSet; after: IpSet }[] = [];
    const memberChanges: { set: string; added: string[]; removed: string[] }[] = [];
    const destroyedSets: string[] = [];
    for (const name of this.destroyedSince) {
      if (!this.sets.has(name)) destroyedSets.push(name);
      this.prevStates.delete(name);
    }
    for (const s of this.changedSets) {
      const name = s.spec.name;
      const before = this.prevIpSets.get(name);
      let out: IpSet;
      if (this.prevStates.get(name) === s) {
        if (s.added.size || s.removed.size) {
          out = s.output();
          memberChanges.push({ set: name, added: [...s.added], removed: [...s.removed] });
        } else out = s.restore(before!); // changes that cancelled out: keep the previous object
      } else {
        out = s.output();
        if (before) rebuiltSets.push({ before, after: out });
        else createdSets.push(out);
      }
      s.clearJournal();
      this.prevStates.set(name, s);
      this.prevIpSets.set(name, out);
    }
    for (const name of destroyedSets) this.prevIpSets.delete(name);
    this.destroyedSince.clear();

    // Sets: a new array (the previous Ruleset keeps its own), rebuilt whole only when sets came
    // or went; otherwise the previous one with the changed sets replaced in place.
    let sets: IpSet[];
    if (this.setListDirty || !this.last) {
      const order = this.setOrder.items;
      sets = new Array<IpSet>(order.length);
      for (let i = 0; i < order.length; i++) {
        order[i]!.index = i;
        sets[i] = order[i]!.output();
      }
      this.setListDirty = false;
    } else {
      sets = this.last.sets.slice();
      for (const s of this.changedSets) sets[s.index] = s.output();
    }

    this.changedSets.clear();

    // Chains: only the dispatch chains (top and bucket chains) and the list of policy chains can
    // change.
    let chains = this.last?.chains ?? [];
    const writtenChains: Chain[] = [];
    const removedChains: string[] = [];
    if (this.groupListDirty || this.dirtyBuckets.size > 0 || !this.last) {
      const prev = this.topChains;
      if (this.groupListDirty || !this.last) this.policyChains = this.groupOrder.items.map((g) => g.chain);
      // Same order as compile: FORWARD, INPUT, EGRESS, INGRESS, then the egress and the ingress
      // bucket chains by bucket number. Unchanged chains keep their objects (same rule objects).
      const { forward, input } = topChains(this.cidrs);
      const top: Chain[] = [forward, input];
      const bucketChains: Chain[] = [];
      for (const dir of ['Egress', 'Ingress'] as const) {
        const rules: Rule[] = [];
        for (const b of this.buckets[dir]) {
          if (b.groups.items.length === 0) {
            b.out = undefined;
            continue;
          }
          rules.push(BUCKET_RULES[dir][b.k]!);
          if (!b.out || this.dirtyBuckets.has(b)) {
            const c: Chain = { name: b.name, rules: b.groups.items.map((g) => g.rule), unordered: true };
            if (!b.out || !sameRules(b.out, c)) b.out = c;
          }
          bucketChains.push(b.out);
        }
        const at = top.length;
        const chain: Chain = { name: dir === 'Egress' ? EGRESS_CHAIN : INGRESS_CHAIN, rules, unordered: true };
        top.push(sameRules(prev[at], chain) ? prev[at]! : chain);
      }
      top.push(...bucketChains);
      this.dirtyBuckets.clear();
      this.topChains = top;
      this.groupListDirty = false;
      chains = [...top, ...this.policyChains];
      const changed = (c: Chain) => {
        const was = this.prevChains.get(c.name);
        return was !== c && !(was && sameRuleIds(was, c));
      };
      if (!this.last || this.rebuilt) {
        // After a build every object is new: compare the whole list by name.
        const next = new Map<string, Chain>();
        for (const c of chains) {
          next.set(c.name, c);
          if (changed(c)) writtenChains.push(c);
        }
        for (const name of this.prevChains.keys()) if (!next.has(name)) removedChains.push(name);
        this.prevChains = next;
        this.rebuilt = false;
      } else {
        // Policy chains only come and go (a chain's content is its name); top chains change.
        for (const c of top) if (changed(c)) writtenChains.push(c);
        for (const c of prev) if (!top.some((t) => t.name === c.name)) removedChains.push(c.name);
        for (const g of this.groupsCreated) writtenChains.push(g.chain);
        removedChains.push(...this.groupsRemoved);
        for (const name of removedChains) this.prevChains.delete(name);
        for (const c of writtenChains) this.prevChains.set(c.name, c);
        for (const c of top) this.prevChains.set(c.name, c);
      }
      this.groupsCreated.clear();
      this.groupsRemoved.clear();
    }
    this.outputDirty = false;
    this.lastDelta = { createdSets, destroyedSets, memberChanges, rebuiltSets, writtenChains, removedChains };
    const collisions = this.collisions();
    this.last = { node: this.node, sets, chains, hooks: HOOKS, ...(collisions.length > 0 && { collisions }) };
    return this.last;
  }
}

/** An array kept sorted by a string key (binary search; keys are unique). */
class SortedList<T> {
  readonly items: T[] = [];
  private readonly key: (x: T) => string;
  constructor(key: (x: T) => string) {
    this.key = key;
  }
  private find(k: string): number {
    let lo = 0;
    let hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.key(this.items[mid]!) < k) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
  insert(x: T): void {
    this.items.splice(this.find(this.key(x)), 0, x);
  }
  remove(x: T): void {
    const i = this.find(this.key(x));
    if (this.items[i] !== x) throw new Error(`incremental compiler: ${this.key(x)} is not in its sorted list (bookkeeping bug)`);
    this.items.splice(i, 1);
  }
  clear(): void {
    this.items.length = 0;
  }
}

function newBuckets(dir: PolicyType): Bucket[] {
  return Array.from({ length: BUCKETS }, (_, k) => ({ dir, k, name: bucketChainName(dir, k), groups: new SortedList<Group>((g) => g.chain.name), out: undefined }));
}

function setMember(peer: PeerState, p: PodRecord): void {
  let inNs = peer.members.get(p.namespace);
  if (!inNs) peer.members.set(p.namespace, (inNs = new Map()));
  inNs.set(p.uid, p);
}

function sameRules(a: Chain | undefined, b: Chain): boolean {
  if (!a || a.name !== b.name || a.rules.length !== b.rules.length) return false;
  for (let i = 0; i < a.rules.length; i++) if (a.rules[i] !== b.rules[i]) return false;
  return true;
}

/** Same rules by content (rule ids are memoized per Rule object: cheap for shared rules). */
function sameRuleIds(a: Chain, b: Chain): boolean {
  if (a.rules.length !== b.rules.length) return false;
  for (let i = 0; i < a.rules.length; i++) if (a.rules[i] !== b.rules[i] && ruleId(a.rules[i]!) !== ruleId(b.rules[i]!)) return false;
  return true;
}

function sameKeys(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const k of a) if (!b.has(k)) return false;
  return true;
}

function addTo<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(v);
}

function removeFrom<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  const s = m.get(k);
  if (!s) return;
  s.delete(v);
  if (s.size === 0) m.delete(k);
}
