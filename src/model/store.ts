// The in-memory model: every record keyed by UID, with the indexes selector lookups need.
//
// Invariants:
// - Records are keyed by UID, so a pod deleted and recreated under the same name is a delete
//   plus an add, never an update of the old record.
// - `generation` increases on every change; consumers compare it to know they are current.
// - Lookups return enforceable pods only where the name says so (`*Enforceable*`).
// - Every change is reported to subscribers, synchronously and in order, with the record it
//   replaced or removed (`before`) and the record now stored (`after`): the incremental
//   compiler follows the model this way.
// - What is stored is what sources upserted, passed through the adjusters (the agent's overlays)
//   and, for pods, without any address that another enforceable pod claims as well: while two
//   pods claim one address it belongs to neither (fail closed: in no allow set, and not a
//   programmed address on its node), and `addressConflicts()` reports it. Everything that reads
//   the model (semantics, compilers) sees only these effective records.

import { selectorMatches } from './selector.ts';
import type { ClusterPolicyRecord, CnpTier, NamespaceRecord, NodeRecord, ObjectRecord, PodRecord, PodsPeer, PolicyRecord, Requirement, Selector } from './types.ts';
import { isEnforceable, sameRecord } from './types.ts';

export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';

type Kind = ObjectRecord['kind'];
type RecordOf<K extends Kind> = Extract<ObjectRecord, { readonly kind: K }>;

/**
 * One change to the model: `before` absent for an insert, `after` absent for a removal. A union
 * by kind, so a subscriber that switches on `kind` gets `before` and `after` typed as that kind's
 * record without a cast.
 */
export type ModelChange = {
  readonly [K in Kind]: { readonly kind: K; readonly uid: string; readonly before?: RecordOf<K>; readonly after?: RecordOf<K> };
}[Kind];

/** The change from `before` to `after` (records of one kind: the model keeps one map per kind). */
function changeOf(uid: string, before: ObjectRecord | undefined, after: ObjectRecord | undefined): ModelChange {
  const r = after ?? before;
  if (!r) throw new Error(`model: a change of ${uid} with neither a record before nor after`);
  switch (r.kind) {
    case 'Pod':
      return { kind: r.kind, uid, ...(before?.kind === 'Pod' && { before }), ...(after?.kind === 'Pod' && { after }) };
    case 'Namespace':
      return { kind: r.kind, uid, ...(before?.kind === 'Namespace' && { before }), ...(after?.kind === 'Namespace' && { after }) };
    case 'Node':
      return { kind: r.kind, uid, ...(before?.kind === 'Node' && { before }), ...(after?.kind === 'Node' && { after }) };
    case 'NetworkPolicy':
      return { kind: r.kind, uid, ...(before?.kind === 'NetworkPolicy' && { before }), ...(after?.kind === 'NetworkPolicy' && { after }) };
    case 'ClusterNetworkPolicy':
      return { kind: r.kind, uid, ...(before?.kind === 'ClusterNetworkPolicy' && { before }), ...(after?.kind === 'ClusterNetworkPolicy' && { after }) };
  }
}

export type ModelListener = (change: ModelChange) => void;

/** Adjusts a record before the model stores it; pure; returns its argument when unchanged. */
export type Adjuster = (r: ObjectRecord) => ObjectRecord;

const recordKey = (kind: ObjectRecord['kind'], uid: string): string => `${kind}|${uid}`;

export class Model {
  private readonly pods = new Map<string, PodRecord>();
  private readonly namespaces = new Map<string, NamespaceRecord>(); // by uid
  private readonly namespacesByName = new Map<string, NamespaceRecord>();
  private readonly nodes = new Map<string, NodeRecord>(); // by uid
  private readonly policies = new Map<string, PolicyRecord>();
  /** ClusterNetworkPolicies by uid; cluster-scoped, so they name no namespace. */
  private readonly clusterPolicies = new Map<string, ClusterPolicyRecord>();
  /** clusterPoliciesInTier(), kept until a ClusterNetworkPolicy changes. */
  private tierCache: ReadonlyMap<CnpTier, readonly ClusterPolicyRecord[]> | undefined;
  /** namespace name -> uids of its pods */
  private readonly podsByNamespace = new Map<string, Set<string>>();
  /** node name -> uids of the pods bound to it */
  private readonly podsByNode = new Map<string, Set<string>>();
  /**
   * namespace name -> label key -> value -> pod uids. Per namespace, because every selector
   * lookup is scoped to one namespace: a cluster-wide index would hand each namespace the
   * candidates of all the others.
   */
  private readonly podLabelIndex = new Map<string, Map<string, Map<string, Uids>>>();
  private readonly policiesByNamespace = new Map<string, Set<string>>();
  /** allNamespaces(), kept until a namespace record changes or a namespace name appears or goes. */
  private namespaceCache: NamespaceRecord[] | undefined;
  private readonly listeners = new Set<ModelListener>();
  private gen = 0;
  private readonly adjusters: Adjuster[] = [];
  /** kind|uid -> the record as its source stored it, only where an adjuster changed it. */
  private readonly sourceRecords = new Map<string, ObjectRecord>();
  /** pod uid -> the adjusted record, only where conflicted addresses were taken out of it. */
  private readonly podBases = new Map<string, PodRecord>();
  /**
   * address -> uid of the enforceable pod (adjusted record) claiming it, or a Set of uids while
   * several do (no Set per address in the usual case: at 50k pods that is 5 MB of the agent's
   * memory).
   */
  private readonly claims = new Map<string, string | Set<string>>();
  /** Addresses with more than one claimant. */
  private readonly conflicted = new Set<string>();

  get generation(): number {
    return this.gen;
  }

  /**
   * Insert or replace a record (by UID), as a source read it. What the model stores and
   * serves is the record after the adjusters and, for a pod, without the addresses another pod
   * claims too (see the class comment).
   */
  upsert(r: ObjectRecord): void {
    const key = recordKey(r.kind, r.uid);
    const base = this.adjust(r);
    if (base !== r) this.sourceRecords.set(key, r);
    else this.sourceRecords.delete(key);
    if (base.kind === 'Pod') this.claimAndPut(base);
    else this.put(base);
  }

  /**
   * Add a function that adjusts every record a source stores (the agent's overlays: addresses a
   * CNI ADD reported before the API did, a quarantine). Adjusters run in the order added; each
   * must be pure and return its argument itself when it changes nothing. Every stored record is
   * adjusted again now, and again after the adjuster is removed.
   */
  addAdjuster(fn: Adjuster): () => void {
    this.adjusters.push(fn);
    this.readjustAll();
    return () => {
      const i = this.adjusters.indexOf(fn);
      if (i < 0) return;
      this.adjusters.splice(i, 1);
      this.readjustAll();
    };
  }

  /**
   * Run the adjusters again on the source's record of this object (an adjuster's own state
   * changed). Emits a change only when the stored record's content changes.
   */
  readjust(uid: string, kind: ObjectRecord['kind']): void {
    const src = this.sourceRecord(uid, kind);
    if (!src) return;
    const key = recordKey(kind, uid);
    const base = this.adjust(src);
    if (base !== src) this.sourceRecords.set(key, src);
    else this.sourceRecords.delete(key);
    if (base.kind === 'Pod') {
      const cur = this.podBases.get(uid) ?? this.pods.get(uid);
      if (sameRecord(cur, base)) return;
      this.claimAndPut(base);
    } else {
      if (sameRecord(this.current(uid, kind), base)) return;
      this.put(base);
    }
  }

  /** The record of this object as its source stored it, before any adjuster. */
  sourceRecord(uid: string, kind: ObjectRecord['kind']): ObjectRecord | undefined {
    const key = recordKey(kind, uid);
    const src = this.sourceRecords.get(key);
    if (src) return src;
    return kind === 'Pod' ? (this.podBases.get(uid) ?? this.pods.get(uid)) : this.current(uid, kind);
  }

  /**
   * Addresses claimed by more than one enforceable pod (an IP reused while the old pod is still
   * listed, a copied manifest, a forged status), each with the UIDs of the pods claiming it.
   * Invariant (fail closed): such an address is in no pod record the model serves, so it is in
   * no allow set and, on the node that owns it, not a programmed address.
   */
  addressConflicts(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const ip of this.conflicted) out.set(ip, [...this.claimants(ip)].sort());
    return out;
  }

  private readjustAll(): void {
    for (const kind of KINDS) {
      const uids =
        kind === 'Pod'
          ? [...this.pods.keys()]
          : kind === 'Namespace'
            ? [...this.namespaces.keys()]
            : kind === 'Node'
              ? [...this.nodes.keys()]
              : kind === 'NetworkPolicy'
                ? [...this.policies.keys()]
                : [...this.clusterPolicies.keys()];
      for (const uid of uids) this.readjust(uid, kind);
    }
  }

  private adjust(r: ObjectRecord): ObjectRecord {
    let out = r;
    for (const fn of this.adjusters) out = fn(out);
    return out;
  }

  private current(uid: string, kind: ObjectRecord['kind']): ObjectRecord | undefined {
    switch (kind) {
      case 'Pod':
        return this.pods.get(uid);
      case 'Namespace':
        return this.namespaces.get(uid);
      case 'Node':
        return this.nodes.get(uid);
      case 'NetworkPolicy':
        return this.policies.get(uid);
      case 'ClusterNetworkPolicy':
        return this.clusterPolicies.get(uid);
    }
  }

  /**
   * Record the addresses this pod claims (after the adjusters), store it without the addresses
   * another pod claims too, and store again every other pod whose addresses' conflicts changed.
   */
  private claimAndPut(base: PodRecord): void {
    const uid = base.uid;
    const old = this.podBases.get(uid) ?? this.pods.get(uid);
    const touched = new Set<string>();
    if (old && isEnforceable(old)) for (const ip of old.ips) this.unclaim(ip, uid, touched);
    if (isEnforceable(base)) for (const ip of base.ips) this.claim(ip, uid, touched);
    this.putPod(base);
    for (const other of this.claimantsOf(touched, uid)) this.refreshPod(other);
  }

  private claimants(ip: string): Iterable<string> {
    const c = this.claims.get(ip);
    return c === undefined ? [] : typeof c === 'string' ? [c] : c;
  }

  private claim(ip: string, uid: string, touched: Set<string>): void {
    const c = this.claims.get(ip);
    if (c === undefined) {
      this.claims.set(ip, uid);
      return;
    }
    if (c === uid) return;
    const s = typeof c === 'string' ? new Set([c]) : c;
    if (s !== c) this.claims.set(ip, s);
    s.add(uid);
    if (s.size > 1) {
      this.conflicted.add(ip);
      touched.add(ip);
    }
  }

  private unclaim(ip: string, uid: string, touched: Set<string>): void {
    const c = this.claims.get(ip);
    let left: number;
    if (c === undefined) return;
    if (typeof c === 'string') {
      if (c !== uid) return;
      this.claims.delete(ip);
      left = 0;
    } else {
      if (!c.delete(uid)) return;
      left = c.size;
      if (left === 0) this.claims.delete(ip);
      else if (left === 1) this.claims.set(ip, c.values().next().value!);
    }
    if (this.conflicted.has(ip)) {
      touched.add(ip);
      if (left <= 1) this.conflicted.delete(ip);
    }
  }

  private claimantsOf(ips: Set<string>, except: string): Set<string> {
    const out = new Set<string>();
    for (const ip of ips) for (const u of this.claimants(ip)) if (u !== except) out.add(u);
    return out;
  }

  /** Store a pod's base record without its conflicted addresses (the base kept aside if they differ). */
  private putPod(base: PodRecord): void {
    let effective: PodRecord = base;
    if (this.conflicted.size > 0 && base.ips.some((ip) => this.conflicted.has(ip))) {
      effective = { ...base, ips: base.ips.filter((ip) => !this.conflicted.has(ip)) };
    }
    if (effective !== base) this.podBases.set(base.uid, base);
    else this.podBases.delete(base.uid);
    this.put(effective);
  }

  /** Store another pod again when the conflicts of its addresses changed. */
  private refreshPod(uid: string): void {
    const base = this.podBases.get(uid) ?? this.pods.get(uid);
    const cur = this.pods.get(uid);
    if (!base || !cur) return;
    const want = base.ips.filter((ip) => !this.conflicted.has(ip));
    if (want.length === cur.ips.length && want.every((ip, i) => ip === cur.ips[i])) return;
    this.putPod(base);
  }

  /** Index a record as the model serves it and report the change. */
  private put(r: ObjectRecord): void {
    const before = this.take(r.uid, r.kind);
    switch (r.kind) {
      case 'Pod': {
        this.pods.set(r.uid, r);
        if (addTo(this.podsByNamespace, r.namespace, r.uid)) this.namespaceCache = undefined;
        if (r.nodeName !== undefined) addTo(this.podsByNode, r.nodeName, r.uid);
        let byKey = this.podLabelIndex.get(r.namespace);
        if (!byKey) this.podLabelIndex.set(r.namespace, (byKey = new Map()));
        for (const [k, v] of Object.entries(r.labels)) {
          let byValue = byKey.get(k);
          if (!byValue) byKey.set(k, (byValue = new Map()));
          addUid(byValue, v, r.uid);
        }
        break;
      }
      case 'Namespace':
        this.namespaces.set(r.uid, r);
        this.namespacesByName.set(r.name, r);
        this.namespaceCache = undefined;
        break;
      case 'Node':
        this.nodes.set(r.uid, r);
        break;
      case 'NetworkPolicy':
        this.policies.set(r.uid, r);
        if (addTo(this.policiesByNamespace, r.namespace, r.uid)) this.namespaceCache = undefined;
        break;
      case 'ClusterNetworkPolicy':
        this.clusterPolicies.set(r.uid, r);
        this.tierCache = undefined;
        break;
    }
    this.gen++;
    this.emit(changeOf(r.uid, before, r));
  }

  /** Remove the record with this UID, if any. Returns whether something was removed. */
  remove(uid: string, kind?: ObjectRecord['kind']): boolean {
    let removed = false;
    for (const k of kind ? [kind] : KINDS) {
      const base = k === 'Pod' ? this.podBases.get(uid) : undefined;
      const before = this.take(uid, k);
      if (!before) continue;
      removed = true;
      this.sourceRecords.delete(recordKey(k, uid));
      this.gen++;
      this.emit(changeOf(uid, before, undefined));
      if (k === 'Pod') {
        this.podBases.delete(uid);
        const claimed = (base ?? before) as PodRecord;
        const touched = new Set<string>();
        if (isEnforceable(claimed)) for (const ip of claimed.ips) this.unclaim(ip, uid, touched);
        for (const other of this.claimantsOf(touched, uid)) this.refreshPod(other);
      }
    }
    return removed;
  }

  /**
   * Follow every change: the listener runs synchronously after each upsert and removal, in
   * order. Returns the function that stops it.
   */
  subscribe(listener: ModelListener): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  private emit(c: ModelChange): void {
    for (const l of this.listeners) l(c);
  }

  /** Unindex and return the record of this kind with this UID; no generation bump, no event. */
  private take(uid: string, kind: ObjectRecord['kind']): ObjectRecord | undefined {
    switch (kind) {
      case 'Pod': {
        const p = this.pods.get(uid);
        if (!p) return undefined;
        this.pods.delete(uid);
        if (removeFrom(this.podsByNamespace, p.namespace, uid)) this.namespaceCache = undefined;
        if (p.nodeName !== undefined) removeFrom(this.podsByNode, p.nodeName, uid);
        const byKey = this.podLabelIndex.get(p.namespace);
        if (byKey) {
          for (const [k, v] of Object.entries(p.labels)) {
            const byValue = byKey.get(k);
            if (byValue) {
              removeUid(byValue, v, uid);
              if (byValue.size === 0) byKey.delete(k);
            }
          }
          if (byKey.size === 0) this.podLabelIndex.delete(p.namespace);
        }
        return p;
      }
      case 'Namespace': {
        const n = this.namespaces.get(uid);
        if (!n) return undefined;
        this.namespaces.delete(uid);
        if (this.namespacesByName.get(n.name)?.uid === uid) this.namespacesByName.delete(n.name);
        this.namespaceCache = undefined;
        return n;
      }
      case 'Node': {
        const n = this.nodes.get(uid);
        if (n) this.nodes.delete(uid);
        return n;
      }
      case 'NetworkPolicy': {
        const pol = this.policies.get(uid);
        if (!pol) return undefined;
        this.policies.delete(uid);
        if (removeFrom(this.policiesByNamespace, pol.namespace, uid)) this.namespaceCache = undefined;
        return pol;
      }
      case 'ClusterNetworkPolicy': {
        const cnp = this.clusterPolicies.get(uid);
        if (!cnp) return undefined;
        this.clusterPolicies.delete(uid);
        this.tierCache = undefined;
        return cnp;
      }
    }
  }

  allPods(): Iterable<PodRecord> {
    return this.pods.values();
  }
  allPolicies(): Iterable<PolicyRecord> {
    return this.policies.values();
  }
  allClusterPolicies(): Iterable<ClusterPolicyRecord> {
    return this.clusterPolicies.values();
  }

  /**
   * The ClusterNetworkPolicies of a tier in evaluation order: lower priority first; at one
   * priority, by name, then UID. The API leaves the order of equal priorities undefined; name
   * order makes ours deterministic (the semantics warn where it matters).
   */
  clusterPoliciesInTier(tier: CnpTier): readonly ClusterPolicyRecord[] {
    if (!this.tierCache) {
      const byTier = new Map<CnpTier, ClusterPolicyRecord[]>([
        ['Admin', []],
        ['Baseline', []],
      ]);
      for (const c of this.clusterPolicies.values()) byTier.get(c.tier)!.push(c);
      for (const list of byTier.values()) list.sort(compareClusterPolicies);
      this.tierCache = byTier;
    }
    return this.tierCache.get(tier)!;
  }

  /** The ClusterNetworkPolicy with this name (the first in UID order if a source holds two). */
  findClusterPolicy(name: string): ClusterPolicyRecord | undefined {
    let found: ClusterPolicyRecord | undefined;
    for (const c of this.clusterPolicies.values()) if (c.name === name && (!found || c.uid < found.uid)) found = c;
    return found;
  }

  allNodes(): Iterable<NodeRecord> {
    return this.nodes.values();
  }
  getPod(uid: string): PodRecord | undefined {
    return this.pods.get(uid);
  }

  /** Pods bound to a node (any phase, hostNetwork included). */
  podsOnNode(node: string): PodRecord[] {
    return [...(this.podsByNode.get(node) ?? [])].map((u) => this.pods.get(u)!);
  }

  /** Every namespace: stored ones, plus implicit ones for namespaces that only pods or policies name. */
  allNamespaces(): NamespaceRecord[] {
    if (!this.namespaceCache) {
      const names = new Set<string>(this.namespacesByName.keys());
      for (const n of this.podsByNamespace.keys()) names.add(n);
      for (const n of this.policiesByNamespace.keys()) names.add(n);
      this.namespaceCache = [...names].sort().map((n) => this.namespace(n));
    }
    return [...this.namespaceCache];
  }

  /**
   * The namespace record by name. A namespace known only from its pods gets the label the
   * API server always sets (`kubernetes.io/metadata.name`), so offline snapshots that omit
   * Namespace objects still select as a live cluster would.
   */
  namespace(name: string): NamespaceRecord {
    return (
      this.namespacesByName.get(name) ?? {
        kind: 'Namespace',
        uid: `implicit/${name}`,
        name,
        labels: { [NAMESPACE_NAME_LABEL]: name },
        implicit: true,
      }
    );
  }

  findPod(namespace: string, name: string): PodRecord | undefined {
    for (const uid of this.podsByNamespace.get(namespace) ?? []) {
      const p = this.pods.get(uid)!;
      if (p.name === name) return p;
    }
    return undefined;
  }

  findPolicy(namespace: string, name: string): PolicyRecord | undefined {
    for (const uid of this.policiesByNamespace.get(namespace) ?? []) {
      const p = this.policies.get(uid)!;
      if (p.name === name) return p;
    }
    return undefined;
  }

  findNode(name: string): NodeRecord | undefined {
    for (const n of this.nodes.values()) if (n.name === name) return n;
    return undefined;
  }

  policiesInNamespace(namespace: string): PolicyRecord[] {
    return [...(this.policiesByNamespace.get(namespace) ?? [])].map((u) => this.policies.get(u)!);
  }

  /** Policies whose podSelector selects this pod (any policy type), in name order. */
  policiesSelecting(pod: PodRecord): PolicyRecord[] {
    return this.policiesInNamespace(pod.namespace)
      .filter((p) => selectorMatches(p.podSelector, pod.labels))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Names of namespaces (known or implicit) a pods-peer reaches. */
  namespacesOf(peer: PodsPeer): string[] {
    if (peer.namespaces.kind === 'own') return [peer.namespaces.name];
    const sel = peer.namespaces.selector;
    this.allNamespaces();
    const out: string[] = [];
    for (const n of this.namespaceCache!) if (selectorMatches(sel, n.labels)) out.push(n.name);
    return out;
  }

  /** Enforceable pods selected by a pods-peer, across the namespaces it reaches. */
  enforceablePodsOf(peer: PodsPeer): PodRecord[] {
    const out: PodRecord[] = [];
    for (const ns of this.namespacesOf(peer)) out.push(...this.enforceablePodsIn(ns, peer.pods));
    return out;
  }

  /** Enforceable pods of one namespace matching the selector (all pods when absent). */
  enforceablePodsIn(namespace: string, sel?: Selector): PodRecord[] {
    const inNs = this.podsByNamespace.get(namespace);
    if (!inNs) return [];
    const out: PodRecord[] = [];
    const visit = (uid: string) => {
      const p = this.pods.get(uid)!;
      if (isEnforceable(p) && (!sel || selectorMatches(sel, p.labels))) out.push(p);
    };
    const best = sel ? this.narrowest(sel, this.podLabelIndex.get(namespace)) : undefined;
    if (!best || best.size >= inNs.size) {
      for (const uid of inNs) visit(uid);
    } else {
      // Candidates come from the namespace's own index: each set is disjoint (one value each).
      for (const s of best.sets) for (const uid of s) visit(uid);
    }
    return out;
  }

  /**
   * The smallest candidate list the namespace's label index gives for a selector: the pods
   * carrying the key of an `In` or `Exists` requirement, as the disjoint per-value sets.
   * Requirements that also match pods lacking the key (NotIn, DoesNotExist) cannot narrow.
   */
  private narrowest(sel: Selector, byKey: Map<string, Map<string, Uids>> | undefined): Candidates | undefined {
    let best: Candidates | undefined;
    for (const req of sel.requirements) {
      const cand = candidatesFor(req, byKey);
      if (cand && (!best || cand.size < best.size)) best = cand;
    }
    return best;
  }
}

interface Candidates {
  readonly sets: readonly Iterable<string>[];
  readonly size: number;
}

/**
 * The pods of a label index entry: one uid, or a Set while several pods carry that label value.
 * Most values are carried by one workload's replicas or by one pod (pod-template-hash, a name):
 * a Set for each would be 9 MB of the agent's memory at 50k pods.
 */
type Uids = string | Set<string>;

function addUid<K>(m: Map<K, Uids>, k: K, uid: string): void {
  const u = m.get(k);
  if (u === undefined) m.set(k, uid);
  else if (typeof u === 'string') {
    if (u !== uid) m.set(k, new Set([u, uid]));
  } else u.add(uid);
}

function removeUid<K>(m: Map<K, Uids>, k: K, uid: string): void {
  const u = m.get(k);
  if (u === undefined) return;
  if (typeof u === 'string') {
    if (u === uid) m.delete(k);
    return;
  }
  u.delete(uid);
  if (u.size === 0) m.delete(k);
  else if (u.size === 1) m.set(k, u.values().next().value!);
}

const KINDS: readonly ObjectRecord['kind'][] = ['Pod', 'Namespace', 'Node', 'NetworkPolicy', 'ClusterNetworkPolicy'];

/** Evaluation order within a tier: priority, then name, then UID. */
export function compareClusterPolicies(a: ClusterPolicyRecord, b: ClusterPolicyRecord): number {
  return a.priority - b.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) || (a.uid < b.uid ? -1 : a.uid > b.uid ? 1 : 0);
}

function candidatesFor(req: Requirement, byKey: Map<string, Map<string, Uids>> | undefined): Candidates | undefined {
  if (req.operator !== 'In' && req.operator !== 'Exists') return undefined;
  const byValue = byKey?.get(req.key);
  if (!byValue) return { sets: [], size: 0 };
  const sets: Iterable<string>[] = [];
  let size = 0;
  const take = (u: Uids | undefined) => {
    if (u === undefined) return;
    // A lone uid as a list of one (a string would iterate over its characters).
    sets.push(typeof u === 'string' ? [u] : u);
    size += typeof u === 'string' ? 1 : u.size;
  };
  if (req.operator === 'In') {
    for (const v of req.values.length === 1 ? req.values : new Set(req.values)) take(byValue.get(v));
  } else {
    for (const u of byValue.values()) take(u);
  }
  return { sets, size };
}

/** Adds; returns true when the key is new. */
function addTo<K>(m: Map<K, Set<string>>, k: K, v: string): boolean {
  let s = m.get(k);
  const fresh = !s;
  if (!s) m.set(k, (s = new Set()));
  s.add(v);
  return fresh;
}

/** Removes; returns true when the key went (its last value was removed). */
function removeFrom<K>(m: Map<K, Set<string>>, k: K, v: string): boolean {
  const s = m.get(k);
  if (!s) return false;
  s.delete(v);
  if (s.size === 0) {
    m.delete(k);
    return true;
  }
  return false;
}
