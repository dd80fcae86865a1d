// The incremental compiler: follows the model's changes and keeps the node's Ruleset current,
// doing work in proportion to the change (DESIGN invariant 5), not to the cluster.
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
  EGRESS_CHAIN,
  EVALUATE_RULES,
  HOOKS,
  INGRESS_CHAIN,
  LOCAL_SET_SPEC,
  REPLIES_RULE,
  SELF_CHAIN,
  SELF_GUARD_RULE,
  blockSetSpec,
  dispatchRule,
  dispatchSetSpec,
  namedPortEntries,
  namedPortSetSpec,
  peerKey,
  podChain,
  podPortsKey,
  podSetSpec,
  selfRules,
  sortedMembers,
  type ChainContent,
  type SetSource,
  type SetSpec,
} from './compile.ts';
import { FORWARD_CHAIN, INPUT_CHAIN } from './names.ts';
import type { Chain, IpSet, Rule, Ruleset, SetMember } from './ruleset.ts';

const DIRS = ['Ingress', 'Egress'] as const;

/** One set: members with a contribution count each, kept sorted as the Ruleset wants them. */
class SetState {
  readonly spec: SetSpec;
  /** Number of users (chains, groups, isolated pods) that need the set to exist. */
  refs = 0;
  private readonly counts = new Map<string, number>();
  /** Sorted members; undefined until first output (a bulk fill sorts once). */
  private members: SetMember[] | undefined;
  /** The members array was handed out in an IpSet: copy before changing it. */
  private shared = false;
  private out: IpSet | undefined;
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
    this.changed();
  }

  output(): IpSet {
    if (!this.out) {
      if (!this.members) this.members = [...this.counts.keys()].sort().map((entry) => ({ entry }));
      this.shared = true;
      this.out = { name: this.spec.name, type: this.spec.type, purpose: this.spec.purpose, members: this.members };
    }
    return this.out;
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
  /** uid -> the record whose entries are in the sets. */
  readonly members: Map<string, PodRecord>;
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
}

/** The local pods sharing one policy chain, and the set that dispatches them to it. */
interface Group {
  readonly dir: PolicyType;
  readonly chain: ChainContent;
  readonly dispatch: SetState;
  readonly rule: Rule;
  pods: number;
}

interface Assignment {
  readonly entry: ChainEntry;
  readonly group: Group;
}

interface LocalPod {
  readonly pod: PodRecord;
  readonly assigned: Assignment[];
  self: Rule[] | undefined;
}

/** What one `ruleset()` call did, for benchmarks and logs. */
export interface IncrementalStats {
  readonly podsChanged: number;
  readonly policiesChanged: number;
  readonly namespacesChanged: number;
  readonly chainsRecomputed: number;
  readonly setsChanged: number;
  readonly full: boolean;
}

const FORWARD_PLAIN: Chain = { name: FORWARD_CHAIN, rules: [REPLIES_RULE, ...EVALUATE_RULES] };
const FORWARD_GUARDED: Chain = { name: FORWARD_CHAIN, rules: [REPLIES_RULE, SELF_GUARD_RULE, ...EVALUATE_RULES] };
const INPUT: Chain = { name: INPUT_CHAIN, rules: [REPLIES_RULE, EVALUATE_RULES[0]!] };
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
  private isolatedCount = 0;

  private readonly memo = new Map<string, ChainEntry>();
  private readonly policyIds = new WeakMap<PolicyRecord, number>();
  private nextPolicyId = 1;

  // Output caches.
  private last: Ruleset | undefined;
  private outputDirty = true;
  private setListDirty = true;
  private sortedSets: SetState[] = [];
  private readonly changedSets = new Set<SetState>();
  private groupListDirty = true;
  private selfDirty = true;
  private topChains: Chain[] = [];
  private policyChains: Chain[] = [];
  private lastStats: IncrementalStats | undefined;

  constructor(model: Model, node: string) {
    this.model = model;
    this.node = node;
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
        break; // the compiler does not read nodes
    }
  }

  /** The node's Ruleset for the model as it is now; equal to compile(model, node). */
  ruleset(): Ruleset {
    const full = this.needsBuild;
    const stats = { podsChanged: this.dirtyPods.size, policiesChanged: this.dirtyPolicies, namespacesChanged: this.dirtyNamespaces.size, chainsRecomputed: 0, setsChanged: 0, full };
    if (full) this.build();
    else if (this.dirtyPods.size || this.dirtyPolicyNamespaces.size || this.dirtyNamespaces.size) this.apply(stats);
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
    this.maybeDeadGroups.clear();
    this.locals.clear();
    this.isolatedCount = 0;
    this.memo.clear();
    this.changedSets.clear();
    this.setListDirty = this.groupListDirty = this.selfDirty = this.outputDirty = true;
    for (const n of this.model.allNamespaces()) this.knownNamespaces.add(n.name);
    const dirty = new Set<string>();
    for (const p of this.model.podsOnNode(this.node)) {
      if (!isEnforceable(p)) continue;
      this.locals.set(p.uid, { pod: p, assigned: [], self: undefined });
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
      if (before) for (const peer of this.scope(before.namespace)) if (peer.members.has(uid)) this.removeMember(peer, uid);
      const local = this.locals.get(uid);
      if (local) {
        this.unassign(local);
        this.locals.delete(uid);
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
          for (const [uid, p] of peer.members) if (p.namespace === name) this.removeMember(peer, uid);
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
      for (const peer of this.scope(p.namespace)) if (!peer.podSelector || selectorMatches(peer.podSelector, p.labels)) this.addMember(peer, p);
      if (p.nodeName === this.node) {
        this.locals.set(uid, { pod: p, assigned: [], self: undefined });
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
        entry = { content, needs: [...rec.needs.values()] };
        this.memo.set(key, entry);
        stats.chainsRecomputed++;
      }
      for (const need of entry.needs) this.ref(need);
      let group = this.groups.get(entry.content.name);
      if (!group) {
        const dispatch = this.createSet(dispatchSetSpec(dir, entry.content.name));
        group = { dir, chain: entry.content, dispatch, rule: dispatchRule(dir, dispatch.spec.name, entry.content.name), pods: 0 };
        dispatch.refs++;
        this.groups.set(entry.content.name, group);
        this.groupListDirty = true;
      }
      group.pods++;
      for (const ip of pod.ips) group.dispatch.add(ip);
      local.assigned.push({ entry, group });
    }
    if (local.assigned.length > 0) {
      this.isolatedCount++;
      const set = this.sets.get(LOCAL_SET_SPEC.name) ?? this.createSet(LOCAL_SET_SPEC);
      set.refs++;
      for (const ip of pod.ips) set.add(ip);
      local.self = selfRules(pod);
      this.selfDirty = true;
    }
  }

  private unassign(local: LocalPod): void {
    if (local.assigned.length === 0) return;
    for (const { entry, group } of local.assigned) {
      for (const need of entry.needs) this.unref(this.sets.get(need.spec.name)!);
      for (const ip of local.pod.ips) group.dispatch.delete(ip);
      if (--group.pods === 0) this.maybeDeadGroups.add(group);
    }
    local.assigned.length = 0;
    this.isolatedCount--;
    const set = this.sets.get(LOCAL_SET_SPEC.name)!;
    for (const ip of local.pod.ips) set.delete(ip);
    this.unref(set);
    local.self = undefined;
    this.selfDirty = true;
  }

  private policyId(p: PolicyRecord): number {
    let id = this.policyIds.get(p);
    if (id === undefined) this.policyIds.set(p, (id = this.nextPolicyId++));
    return id;
  }

  // ---- sets and peers ------------------------------------------------------------------------

  private createSet(spec: SetSpec, peer?: PeerState, fixed?: readonly SetMember[]): SetState {
    const s = new SetState(spec, (x) => this.changedSets.add(x), peer, fixed);
    this.sets.set(spec.name, s);
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
          for (const p of peer.members.values()) for (const ip of p.ips) s.add(ip);
        } else {
          peer.nsets.set(need.spec.name, { set: s, portName: need.portName, protocol: need.protocol });
          for (const p of peer.members.values()) for (const e of namedPortEntries(p, need.portName, need.protocol)) s.add(e);
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
      this.unref(g.dispatch);
      this.groupListDirty = true;
    }
    this.maybeDeadGroups.clear();
    for (const s of this.maybeDeadSets) {
      if (s.refs > 0 || this.sets.get(s.spec.name) !== s) continue;
      this.sets.delete(s.spec.name);
      this.changedSets.delete(s);
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
      for (const p of this.model.allPods()) if (isEnforceable(p)) st.members.set(p.uid, p);
    } else if (peer.namespaces.kind === 'own') {
      addTo(this.ownPeers, peer.namespaces.name, st);
      for (const p of this.model.enforceablePodsIn(peer.namespaces.name, peer.pods)) st.members.set(p.uid, p);
    } else {
      this.selectorPeers.add(st);
      const sel = peer.namespaces.selector;
      for (const name of this.knownNamespaces) {
        if (!selectorMatches(sel, this.model.namespace(name).labels)) continue;
        nsMatch!.add(name);
        addTo(this.selectorPeersByNs, name, st);
        for (const p of this.model.enforceablePodsIn(name, peer.pods)) st.members.set(p.uid, p);
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

  /** The peers whose namespace scope holds this namespace. */
  private *scope(namespace: string): Iterable<PeerState> {
    const own = this.ownPeers.get(namespace);
    if (own) yield* own;
    const sel = this.selectorPeersByNs.get(namespace);
    if (sel) yield* sel;
    if (this.anyPeer) yield this.anyPeer;
  }

  private addMember(peer: PeerState, p: PodRecord): void {
    peer.members.set(p.uid, p);
    if (peer.pset) for (const ip of p.ips) peer.pset.add(ip);
    for (const n of peer.nsets.values()) for (const e of namedPortEntries(p, n.portName, n.protocol)) n.set.add(e);
  }

  private removeMember(peer: PeerState, uid: string): void {
    const p = peer.members.get(uid)!;
    peer.members.delete(uid);
    if (peer.pset) for (const ip of p.ips) peer.pset.delete(ip);
    for (const n of peer.nsets.values()) for (const e of namedPortEntries(p, n.portName, n.protocol)) n.set.delete(e);
  }

  // ---- output --------------------------------------------------------------------------------

  private output(): Ruleset {
    if (this.last && !this.outputDirty && this.changedSets.size === 0 && !this.setListDirty && !this.groupListDirty && !this.selfDirty) return this.last;
    if (this.setListDirty) {
      this.sortedSets = [...this.sets.values()].sort((a, b) => (a.spec.name < b.spec.name ? -1 : 1));
      this.setListDirty = false;
    }
    this.changedSets.clear();
    const sets = this.sortedSets.map((s) => s.output());

    if (this.groupListDirty || this.selfDirty || this.topChains.length === 0) {
      const top: Chain[] = [this.isolatedCount > 0 ? FORWARD_GUARDED : FORWARD_PLAIN, INPUT];
      if (this.groupListDirty || this.topChains.length === 0) {
        const sorted = [...this.groups.values()].sort((a, b) => (a.chain.name < b.chain.name ? -1 : 1));
        this.policyChains = sorted.map((g) => g.chain);
        const egress = { name: EGRESS_CHAIN, rules: sorted.filter((g) => g.dir === 'Egress').map((g) => g.rule) };
        const ingress = { name: INGRESS_CHAIN, rules: sorted.filter((g) => g.dir === 'Ingress').map((g) => g.rule) };
        const prev = this.topChains;
        // Keep the previous objects when their rules did not change (cheap to compare: same rule objects).
        top.push(sameRules(prev[2], egress) ? prev[2]! : egress, sameRules(prev[3], ingress) ? prev[3]! : ingress);
      } else {
        top.push(this.topChains[2]!, this.topChains[3]!);
      }
      if (this.isolatedCount > 0) {
        const prevSelf = this.topChains[4];
        if (this.selfDirty || !prevSelf) {
          const isolated = [...this.locals.values()].filter((l) => l.self).sort((a, b) => (a.pod.uid < b.pod.uid ? -1 : a.pod.uid > b.pod.uid ? 1 : 0));
          const self = { name: SELF_CHAIN, rules: [...isolated.flatMap((l) => l.self!), ...EVALUATE_RULES] };
          top.push(sameRules(prevSelf, self) ? prevSelf! : self);
        } else top.push(prevSelf);
      }
      this.topChains = top;
      this.groupListDirty = false;
      this.selfDirty = false;
    }
    this.outputDirty = false;
    this.last = { node: this.node, sets, chains: [...this.topChains, ...this.policyChains], hooks: HOOKS };
    return this.last;
  }
}

function sameRules(a: Chain | undefined, b: Chain): boolean {
  if (!a || a.name !== b.name || a.rules.length !== b.rules.length) return false;
  for (let i = 0; i < a.rules.length; i++) if (a.rules[i] !== b.rules[i]) return false;
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
