// The incremental compiler: follows the model's changes and keeps the node's Ruleset current,
// doing work in proportion to the change (docs/design.md, invariant cost-proportional), not to
// the cluster.
//
// Contract: after any sequence of model changes, `ruleset()` equals `compile(model, node)`
// exactly (same sets, members, chains, rules, order; test/properties/incremental.test.ts checks
// it on random change sequences). It builds with the same pieces as compile.ts (layout.ts for
// the layout, tiers.ts and rules.ts for the policy chains), so what is shared is the meaning of
// every chain; what is here is only the bookkeeping of what a change affects, by concern:
// - incremental/peers.ts: per pods peer, the pods it selects and its sets;
// - incremental/sets.ts: every set, with a count per entry and per user, journaled for the delta;
// - incremental/paths.ts: a pod's chains per direction, built once per selection key (bounded
//   memo), and the collision guard's count of contents per chain name;
// - incremental/dispatch.ts: the groups of local pods sharing their chains, their dispatch sets
//   and buckets, the policy chains in use, and the layout's chains for an output;
// - this file: what a change touches, and the order of the steps.
//
// What a change touches:
// - a pod: the peers whose scope holds its namespace (before and after) and whose selector
//   matches it; its own chains when it is local;
// - a NetworkPolicy: the chains of the local pods of its namespace;
// - a ClusterNetworkPolicy: the chains of the local pods its subject selects, before or after
//   (cluster-scoped: any namespace);
// - a namespace's labels: the namespace-selector peers that start or stop matching it, and, when
//   there are ClusterNetworkPolicies (whose subjects select namespaces), the chains of its local
//   pods;
// - the node's pod CIDRs: everything (a rebuild; rare).
//
// Output objects are shared between successive Rulesets when unchanged (an IpSet or Chain
// object that is `===` to the previous one has the same content), so a consumer can skip them.

import { LRUCache } from 'lru-cache';
import type { Model, ModelChange } from '../model/store.ts';
import type { ClusterPolicyRecord, PodRecord, PolicyType } from '../model/types.ts';
import { isEnforceable } from '../model/types.ts';
import { quarantineChain, sameContent } from './collisions.ts';
import type { CompileOptions } from './compile.ts';
import { DIRECTIONS, POD_CIDRS_SET, PROGRAMMED_SPEC, podCidrsKey, dropsMidstream, hooksFor, layoutRuntimeSets, nodePodCidrs, programmedSetNeeded, type ChainContent, type DispatchLevel, type LayoutOptions, type ServiceProxy } from './layout.ts';
import type { Rule, Ruleset, RulesetDelta } from './ruleset.ts';
import { PodSelection, SharedAdminPrefix, directionPath, selectTiers, selectionKey, subjectSelects, type Selection, type TierChainCache, type TierOptions, type TierPolicy } from './tiers.ts';
import { DispatchState, type Group } from './incremental/dispatch.ts';
import { ContentTracker, Recorder, collisionsOf, newPathMemo, newTierMemo, type PathEntry, type SetNeed } from './incremental/paths.ts';
import { PeerIndex } from './incremental/peers.ts';
import { SetRegistry, type SetState } from './incremental/sets.ts';

export type { RulesetDelta } from './ruleset.ts';
export { MEMO_LIMIT } from './incremental/paths.ts';

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

/** A local pod and, per direction it is dispatched in, its path and groups (one per dispatch level). */
interface LocalPod {
  readonly pod: PodRecord;
  readonly assigned: { path: PathEntry; readonly groups: readonly Group[] }[];
  /** The selection key per direction its paths were built for ('' where nothing applies); undefined before its first assignment. */
  keys?: string[];
}

export class IncrementalCompiler {
  readonly node: string;
  private readonly model: Model;
  private readonly unsubscribe: () => void;

  // Pending changes since the last ruleset(): uid -> the record the compiler last saw (undefined: none).
  private readonly dirtyPods = new Map<string, PodRecord | undefined>();
  private readonly dirtyPolicyNamespaces = new Set<string>();
  private readonly dirtyNamespaces = new Set<string>();
  /** ClusterNetworkPolicies changed, as they were and as they are: the local pods their subjects select are looked at again. */
  private readonly dirtyClusterPolicies: ClusterPolicyRecord[] = [];
  private dirtyPolicies = 0;
  private needsBuild = true;

  private readonly peers: PeerIndex;
  private readonly sets = new SetRegistry();
  private readonly dispatch = new DispatchState(this.sets);
  private readonly locals = new Map<string, LocalPod>();
  private readonly memo = newPathMemo();
  /** Tier chains by tier, direction, policies, pod ports (where they matter) and next (paths.ts). */
  private readonly tierMemo = newTierMemo();
  private readonly contents = new ContentTracker();
  /** Names whose pods the last build sent to a quarantine chain (collisions.ts), with their direction. */
  private quarantined = new Map<string, PolicyType>();
  /** Set when a pod met a group of its chain's name with other chains: the next step rebuilds. */
  private regroup = false;
  private readonly policyIds = new WeakMap<TierPolicy, number>();
  /** ClusterNetworkPolicy ids by content without the priority (policyId); bounded: a forgotten one only costs a rebuild. */
  private readonly clusterPolicyIds = new LRUCache<string, number>({ max: 4096 });
  private nextPolicyId = 1;

  // Output.
  private last: Ruleset | undefined;
  private outputDirty = true;
  private lastStats: IncrementalStats | undefined;
  private lastDelta: RulesetDelta = EMPTY_DELTA;

  /** The node's pod CIDRs as of the last build (a change of them rebuilds). */
  private cidrs: string[] = [];
  /** Every node's pod CIDRs as of the last build (layout.ts podCidrsKey; a change of them rebuilds). */
  private podCidrsKey = '';
  private readonly extraCidrs: readonly string[];
  private readonly tierOptions: TierOptions | undefined;
  private readonly proxy: ServiceProxy | undefined;
  /** What the layout depends on besides the pod CIDRs (compile.ts CompileOptions), and the shared Admin prefix's rules. */
  private layout: LayoutOptions;
  /** The shared Admin prefix as of the last build or change of ClusterNetworkPolicies (tiers.ts SharedAdminPrefix). */
  private prefix: SharedAdminPrefix | undefined;
  /** The sets the prefix chains' rules match. */
  private prefixNeeds: SetNeed[] = [];
  /** PCTL-programmed, the gate: the addresses of every local pod (undefined without pod CIDRs). */
  private programmed: SetState | undefined;

  constructor(model: Model, node: string, opts: CompileOptions = {}) {
    this.model = model;
    this.node = node;
    this.extraCidrs = opts.podCidrs ?? [];
    this.tierOptions = opts.tiers;
    this.proxy = opts.proxy;
    this.layout = { proxy: opts.proxy, dropMidstream: opts.dropMidstream, verdictCache: opts.verdictCache };
    this.peers = new PeerIndex(model, node);
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
        if (!this.dirtyPods.has(c.uid)) this.dirtyPods.set(c.uid, c.before);
        break;
      case 'NetworkPolicy':
        this.dirtyPolicies++;
        if (c.before) this.dirtyPolicyNamespaces.add(c.before.namespace);
        if (c.after) this.dirtyPolicyNamespaces.add(c.after.namespace);
        break;
      case 'Namespace':
        if (c.before) this.dirtyNamespaces.add(c.before.name);
        if (c.after) this.dirtyNamespaces.add(c.after.name);
        break;
      case 'Node':
        // This node's pod CIDRs (the top chains and PCTL-programmed) and every node's (the
        // members of POD_CIDRS_SET, which the chains' needs carry): rebuild when they change,
        // which is rare (a Node's status updates leave them alone).
        if (this.needsBuild) break;
        if ((c.before?.name === this.node || c.after?.name === this.node) && nodePodCidrs(this.model, this.node, this.extraCidrs).join(',') !== this.cidrs.join(',')) this.needsBuild = true;
        else {
          const key = podCidrsKey(this.model);
          if (key === this.podCidrsKey) break;
          // In use: rebuild with the new members. Not in use: only the remembered chains'
          // needs carry the old members (an evicted entry is rebuilt equal, so forgetting is safe).
          if (this.sets.get(POD_CIDRS_SET)) this.needsBuild = true;
          else {
            this.memo.clear();
            this.tierMemo.clear();
            this.podCidrsKey = key;
          }
        }
        break;
      case 'ClusterNetworkPolicy':
        this.dirtyPolicies++;
        if (c.before) this.dirtyClusterPolicies.push(c.before);
        if (c.after) this.dirtyClusterPolicies.push(c.after);
        break;
    }
  }

  /** The node's Ruleset for the model as it is now; equal to compile(model, node). */
  ruleset(): Ruleset {
    const full = this.needsBuild;
    const stats = { podsChanged: this.dirtyPods.size, policiesChanged: this.dirtyPolicies, namespacesChanged: this.dirtyNamespaces.size, chainsRecomputed: 0, setsChanged: 0, full };
    if (full) this.build();
    else if (this.dirtyPods.size || this.dirtyPolicyNamespaces.size || this.dirtyNamespaces.size || this.dirtyClusterPolicies.length) this.apply(stats);
    // The set of chain names standing for two contents changed: group again from scratch, with
    // those names quarantined. A build sees the contents of every local pod's chains as they are
    // now, so the next one is stable; one more covers a pod that met a stale group on the way.
    for (let i = 0; this.regroup || !sameKeys(this.contents.colliding, this.quarantined); i++) {
      if (i === 3) {
        const names = (m: ReadonlyMap<string, unknown>) => [...m.keys()].join(', ') || 'none';
        throw new Error(`incremental compiler: the grouping of chains with colliding names does not settle (bookkeeping bug): colliding ${names(this.contents.colliding)}; quarantined ${names(this.quarantined)}; a group met other chains: ${this.regroup}`);
      }
      this.quarantined = new Map(this.contents.colliding);
      this.build();
      stats.full = true;
    }
    this.dirtyPods.clear();
    this.dirtyPolicyNamespaces.clear();
    this.dirtyNamespaces.clear();
    this.dirtyClusterPolicies.length = 0;
    this.dirtyPolicies = 0;
    stats.setsChanged = this.sets.changedCount;
    this.lastStats = stats;
    return this.output();
  }

  // ---- building and applying changes -------------------------------------------------------

  private build(): void {
    this.needsBuild = false;
    this.peers.reset();
    this.sets.clear();
    this.dispatch.reset();
    this.locals.clear();
    this.memo.clear();
    this.tierMemo.clear();
    this.contents.clear();
    this.regroup = false;
    this.outputDirty = true;
    this.cidrs = nodePodCidrs(this.model, this.node, this.extraCidrs);
    this.podCidrsKey = podCidrsKey(this.model);
    this.programmed = undefined;
    if (programmedSetNeeded(this.cidrs)) {
      this.programmed = this.sets.create(PROGRAMMED_SPEC);
      this.programmed.refs++;
    }
    for (const spec of layoutRuntimeSets(this.cidrs, this.layout)) this.sets.create(spec).refs++;
    this.prefixNeeds = [];
    this.prefix = undefined;
    this.layout = { ...this.layout, wide: undefined };
    this.setPrefix(new SharedAdminPrefix(this.model, this.cidrs));
    this.takePrefixRules();
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
    const chainDirty = new Set<string>();

    // (a) Take out what changed pods contributed, as the compiler last saw them.
    for (const [uid, before] of this.dirtyPods) {
      if (before) this.peers.podGone(before);
      const local = this.locals.get(uid);
      if (local) {
        this.unassign(local);
        this.locals.delete(uid);
        for (const ip of local.pod.ips) this.programmed?.delete(ip);
      }
    }

    // (b) Namespaces whose labels changed: selector peers that start or stop matching them.
    for (const name of this.dirtyNamespaces) this.peers.namespaceChanged(name, (uid) => this.dirtyPods.has(uid));

    // (c) Policies changed: the chains of the local pods of their namespaces (NetworkPolicy), or
    // of the local pods a changed ClusterNetworkPolicy's subject selects, as it was or as it is
    // (cluster-scoped: any namespace). Namespaces relabelled: their local pods' chains, when there
    // are ClusterNetworkPolicies now or were before this step (their subjects select by namespace
    // labels). A pod whose selection did not change keeps its chains (assign).
    // A ClusterNetworkPolicy of the shared Admin prefix, before and after, changes the prefix
    // chains alone for the pods the gate sends through them (layout.ts WIDE_CHAINS); when a
    // policy that did not change enters or leaves the prefix, every pod's Admin chains may.
    const cnps = this.dirtyClusterPolicies;
    let everyPod = false;
    let prefixChanged = false;
    let prefixOnly = (_c: ClusterPolicyRecord) => false;
    if (cnps.length > 0) {
      const before = this.prefix!;
      const after = new SharedAdminPrefix(this.model, this.cidrs);
      everyPod = this.setPrefix(after, new Set(cnps.map((c) => c.uid)));
      prefixChanged = true;
      const inPrefix = (p: SharedAdminPrefix, c: ClusterPolicyRecord) => DIRECTIONS.every((dir) => (dir === 'Ingress' ? c.ingress : c.egress).length === 0 || p.policies[dir].includes(c));
      // A record before the change can only be in the old prefix, one after it only in the new.
      prefixOnly = (c) => inPrefix(before, c) || inPrefix(after, c);
    }
    const relabelled = this.dirtyNamespaces.size > 0 && (cnps.length > 0 || this.model.clusterPoliciesInTier('Admin').length > 0 || this.model.clusterPoliciesInTier('Baseline').length > 0);
    if (this.dirtyPolicyNamespaces.size || cnps.length || relabelled) {
      for (const [uid, l] of this.locals) {
        const ns = l.pod.namespace;
        if (everyPod || this.dirtyPolicyNamespaces.has(ns) || (relabelled && this.dirtyNamespaces.has(ns))) chainDirty.add(uid);
        else if (cnps.length > 0) {
          const gated = this.prefix!.gates(l.pod);
          if (cnps.some((c) => !(gated && prefixOnly(c)) && subjectSelects(this.model, c, l.pod))) chainDirty.add(uid);
        }
      }
    }

    // (d) Put back what changed pods contribute now.
    for (const uid of this.dirtyPods.keys()) {
      const p = this.model.getPod(uid);
      if (!p) continue;
      this.peers.ensureNamespace(p.namespace);
      if (!isEnforceable(p)) continue;
      this.peers.podCame(p);
      if (p.nodeName === this.node) {
        this.locals.set(uid, { pod: p, assigned: [] });
        for (const ip of p.ips) this.programmed?.add(ip);
        chainDirty.add(uid);
      }
    }

    // The prefix chains' rules and their sets, once the peers hold the pods as they are now.
    if (prefixChanged) this.takePrefixRules();
    // (e) Chains of the local pods affected.
    this.recompute(chainDirty, stats);
    // (f) Drop what nothing uses any more.
    this.sweep();
  }

  private recompute(uids: Iterable<string>, stats: { chainsRecomputed: number }): void {
    for (const uid of uids) {
      const local = this.locals.get(uid);
      if (local) this.assign(local, stats);
    }
  }

  /** (Re)assign a local pod to the paths and groups of what applies to it now. */
  private assign(local: LocalPod, stats: { chainsRecomputed: number }): void {
    const pod = local.pod;
    const selection = new PodSelection(this.model, pod, this.prefix!.forPod(pod));
    const sels = DIRECTIONS.map((dir) => selectTiers(this.model, pod, dir, selection));
    const keys = DIRECTIONS.map((dir, i) => (sels[i]!.length === 0 ? '' : selectionKey(dir, sels[i]!, (p) => this.policyId(p))));
    // The same policies in the same order (same records) give the same chains: nothing to do.
    if (local.keys && keys.every((k, i) => k === local.keys![i])) return;
    local.keys = keys;
    const paths: PathEntry[] = [];
    for (const [i, dir] of DIRECTIONS.entries()) {
      if (sels[i]!.length === 0) continue;
      const path = this.pathOf(keys[i]!, pod, dir, sels[i]!, stats);
      if (path.entry.length > 0) paths.push(path);
    }
    // New policy records that give the same chains (a priority change that keeps the order, an
    // edit elsewhere in the policy): the pod stays where it is.
    if (local.assigned.length === paths.length && local.assigned.every((a, i) => samePath(a.path, paths[i]!))) {
      local.assigned.forEach((a, i) => (a.path = paths[i]!));
      return;
    }
    // Move the pod: the new path's sets are referenced before the old one's are let go (a set
    // both use never drops), and it keeps its group at each level where the chains are the same.
    const old = local.assigned.splice(0);
    for (const path of paths) {
      for (const need of path.needs) this.ref(need);
      this.contents.note(path, 1);
    }
    for (const { path } of old) {
      for (const need of path.needs) this.sets.unref(this.sets.get(need.spec.name)!);
      this.contents.note(path, -1);
    }
    const kept = new Set<Group>();
    for (const path of paths) {
      const dir = path.dir;
      const before = old.find((a) => a.path.dir === dir)?.groups ?? [];
      // A name that stands for two contents sends its pods to a drop-all chain (collisions.ts):
      // the first such name of the path, in name order, as compile() does.
      const bad = this.quarantined.size > 0 ? path.chains.filter((c) => this.quarantined.has(c.name)).map((c) => c.name).sort()[0] : undefined;
      const targets: { level: DispatchLevel; chains: readonly ChainContent[]; continues: boolean }[] =
        bad !== undefined
          ? [{ level: 'entry', chains: [quarantineChain(dir, bad)], continues: false }]
          : [{ level: 'entry', chains: path.entry, continues: path.continues }, ...(path.next.length > 0 ? [{ level: 'next' as const, chains: path.next, continues: false }] : [])];
      const groups: Group[] = [];
      for (const t of targets) {
        const same = before.find((g) => g.level === t.level && g.continues === t.continues && g.chains.length === t.chains.length && g.chains.every((c, i) => sameContent(c, t.chains[i]!)));
        if (same) {
          kept.add(same);
          groups.push(same);
          continue;
        }
        const { group, conflict } = this.dispatch.join(t.level, dir, t.chains, t.continues, pod.ips);
        if (conflict) this.regroup = true;
        groups.push(group);
      }
      local.assigned.push({ path, groups });
    }
    for (const { groups } of old) for (const g of groups) if (!kept.has(g)) this.dispatch.leave(g, pod.ips);
  }

  /** A pod's chains in one direction for this selection (memoized by its key). */
  private pathOf(key: string, pod: PodRecord, dir: PolicyType, sel: Selection, stats: { chainsRecomputed: number }): PathEntry {
    let path = this.memo.get(key);
    if (path) return path;
    // Each tier chain comes from its own memo when its policies and next are unchanged: an Admin
    // policy's change rebuilds the Admin chains, not the NetworkPolicy chains after them.
    const needsOf = new Map<ChainContent, readonly SetNeed[]>();
    const cache: TierChainCache = (tier, d, policies, next, build) => {
      const tierKey = `${tier.name}|${d}|${policies.map((p) => this.policyId(p)).join(',')}|${next ?? ''}`;
      let e = this.tierMemo.get(tierKey);
      if (!e) {
        const rec = new Recorder(this.model);
        const chain = build(rec);
        // The sets the chain's rules still match (a tier drops the rules at its end that change
        // nothing), as compile() keeps them.
        const used = new Set(chain?.rules.flatMap((r) => (r.match.sets ?? []).map((m) => m.set)) ?? []);
        e = { chain, needs: [...rec.needs.values()].filter((n) => used.has(n.spec.name)) };
        this.tierMemo.set(tierKey, e);
        stats.chainsRecomputed++;
      }
      if (e.chain) needsOf.set(e.chain, e.needs);
      return e.chain;
    };
    const dp = directionPath(new Recorder(this.model), pod, dir, sel, cache, this.tierOptions);
    const chains = [...dp.entry, ...dp.next];
    // The sets of the chains the path keeps (a tier after a deny-all is left out).
    const needs = new Map<string, SetNeed>();
    for (const c of chains) for (const n of needsOf.get(c) ?? []) needs.set(n.spec.name, n);
    path = { dir, entry: dp.entry, next: dp.next, continues: dp.continues, chains, needs: [...needs.values()] };
    this.memo.set(key, path);
    return path;
  }

  private unassign(local: LocalPod): void {
    if (local.assigned.length === 0) return;
    for (const { path, groups } of local.assigned) {
      for (const need of path.needs) this.sets.unref(this.sets.get(need.spec.name)!);
      this.contents.note(path, -1);
      for (const group of groups) this.dispatch.leave(group, local.pod.ips);
    }
    local.assigned.length = 0;
  }

  /**
   * A policy record's id in the keys of selections and tier chains. A ClusterNetworkPolicy's
   * rules do not depend on its priority (the comments leave it out: rules.ts), only the order of
   * the tier does, and the keys list the policies in that order: a record that changed nothing but
   * its priority gets the id of the one before, so where the order holds its pods keep their
   * chains without building them again.
   */
  private policyId(p: TierPolicy): number {
    let id = this.policyIds.get(p);
    if (id !== undefined) return id;
    if (p.kind === 'ClusterNetworkPolicy') {
      const content = JSON.stringify({ ...p, priority: 0 }, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v)); // CIDRs hold bigints
      id = this.clusterPolicyIds.get(content);
      if (id === undefined) this.clusterPolicyIds.set(content, (id = this.nextPolicyId++));
    } else id = this.nextPolicyId++;
    this.policyIds.set(p, id);
    return id;
  }

  /**
   * Take the shared Admin prefix as it is now. Returns whether a policy that did not change
   * entered or left it (the policies changed, `dirty`, are looked at through their subjects): then
   * every pod's Admin chains change. Its rules follow with takePrefixRules.
   */
  private setPrefix(prefix: SharedAdminPrefix, dirty: ReadonlySet<string> = new Set()): boolean {
    const before = this.prefix;
    this.prefix = prefix;
    if (!before) return false;
    const kept = (p: SharedAdminPrefix, dir: PolicyType) =>
      p.policies[dir]
        .filter((c) => !dirty.has(c.uid))
        .map((c) => c.uid)
        .join(',');
    return DIRECTIONS.some((dir) => kept(before, dir) !== kept(prefix, dir));
  }

  /** The prefix chains' rules into the layout, their sets referenced before the old ones are let go. */
  private takePrefixRules(): void {
    const prefix = this.prefix!;
    const rec = new Recorder(this.model);
    const wide: Partial<Record<PolicyType, Rule[]>> = {};
    for (const dir of DIRECTIONS) {
      const rules = prefix.rules(rec, dir);
      if (rules.length > 0) wide[dir] = rules;
    }
    if (JSON.stringify(wide) !== JSON.stringify(this.layout.wide ?? {})) {
      const used = new Set(Object.values(wide).flatMap((rules) => rules.flatMap((r) => (r.match.sets ?? []).map((m) => m.set))));
      const needs = [...rec.needs.values()].filter((n) => used.has(n.spec.name));
      for (const need of needs) this.ref(need);
      for (const need of this.prefixNeeds) this.sets.unref(this.sets.get(need.spec.name)!);
      this.prefixNeeds = needs;
      this.layout = { ...this.layout, wide };
      this.outputDirty = true;
      this.dispatch.layoutChanged();
    }
  }

  /** A chain needs a set: create it (filled from its peer) on first use. */
  private ref(need: SetNeed): void {
    let s = this.sets.get(need.spec.name);
    if (!s) {
      if (need.kind === 'b') s = this.sets.create(need.spec, need.members);
      else {
        const peer = this.peers.peerOf(need.peer);
        s = this.sets.create(need.spec);
        if (need.kind === 'p') this.peers.attachPodSet(peer, s);
        else this.peers.attachNamedPortSet(peer, s, need.portName, need.protocol);
      }
    }
    s.refs++;
  }

  /** Drop groups, sets and peers nothing uses any more. */
  private sweep(): void {
    this.dispatch.sweep();
    for (const s of this.sets.sweep()) this.peers.detachSet(s);
  }

  // ---- output --------------------------------------------------------------------------------

  private output(): Ruleset {
    if (this.last && !this.outputDirty && !this.sets.dirty && !this.dispatch.dirty) {
      this.lastDelta = EMPTY_DELTA;
      return this.last;
    }
    const { sets, ...setDelta } = this.sets.output(this.last?.sets);
    const { chains, writtenChains, removedChains } = this.dispatch.output(this.cidrs, this.layout);
    this.outputDirty = false;
    this.lastDelta = { ...setDelta, writtenChains, removedChains };
    const collisions = collisionsOf(this.quarantined);
    this.last = { node: this.node, sets, chains, hooks: hooksFor(this.proxy, dropsMidstream(this.cidrs, this.layout.dropMidstream)), ...(collisions.length > 0 && { collisions }) };
    return this.last;
  }
}

/** Two paths of one direction with the same chains at the same levels (same contents). */
function samePath(a: PathEntry, b: PathEntry): boolean {
  if (a === b) return true;
  if (a.dir !== b.dir || a.continues !== b.continues || a.entry.length !== b.entry.length || a.next.length !== b.next.length) return false;
  for (let i = 0; i < a.chains.length; i++) if (!sameContent(a.chains[i]!, b.chains[i]!)) return false;
  return true;
}

function sameKeys(a: ReadonlyMap<string, unknown>, b: ReadonlyMap<string, unknown>): boolean {
  if (a.size !== b.size) return false;
  for (const k of a.keys()) if (!b.has(k)) return false;
  return true;
}
