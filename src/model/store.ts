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

import { selectorMatches } from './selector.ts';
import type { NamespaceRecord, NodeRecord, ObjectRecord, PodRecord, PodsPeer, PolicyRecord, Requirement, Selector } from './types.ts';
import { isEnforceable } from './types.ts';

export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';

/** One change to the model: `before` absent for an insert, `after` absent for a removal. */
export interface ModelChange {
  readonly kind: ObjectRecord['kind'];
  readonly uid: string;
  readonly before?: ObjectRecord;
  readonly after?: ObjectRecord;
}

export type ModelListener = (change: ModelChange) => void;

export class Model {
  private readonly pods = new Map<string, PodRecord>();
  private readonly namespaces = new Map<string, NamespaceRecord>(); // by uid
  private readonly namespacesByName = new Map<string, NamespaceRecord>();
  private readonly nodes = new Map<string, NodeRecord>(); // by uid
  private readonly policies = new Map<string, PolicyRecord>();
  /** namespace name -> uids of its pods */
  private readonly podsByNamespace = new Map<string, Set<string>>();
  /** node name -> uids of the pods bound to it */
  private readonly podsByNode = new Map<string, Set<string>>();
  /**
   * namespace name -> label key -> value -> pod uids. Per namespace, because every selector
   * lookup is scoped to one namespace: a cluster-wide index would hand each namespace the
   * candidates of all the others.
   */
  private readonly podLabelIndex = new Map<string, Map<string, Map<string, Set<string>>>>();
  private readonly policiesByNamespace = new Map<string, Set<string>>();
  /** allNamespaces(), kept until a namespace record changes or a namespace name appears or goes. */
  private namespaceCache: NamespaceRecord[] | undefined;
  private readonly listeners = new Set<ModelListener>();
  private gen = 0;

  get generation(): number {
    return this.gen;
  }

  /** Insert or replace a record (by UID). */
  upsert(r: ObjectRecord): void {
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
          addTo(byValue, v, r.uid);
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
    }
    this.gen++;
    this.emit({ kind: r.kind, uid: r.uid, ...(before ? { before } : {}), after: r });
  }

  /** Remove the record with this UID, if any. Returns whether something was removed. */
  remove(uid: string, kind?: ObjectRecord['kind']): boolean {
    let removed = false;
    for (const k of kind ? [kind] : KINDS) {
      const before = this.take(uid, k);
      if (!before) continue;
      removed = true;
      this.gen++;
      this.emit({ kind: k, uid, before });
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
              removeFrom(byValue, v, uid);
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
    }
  }

  allPods(): Iterable<PodRecord> {
    return this.pods.values();
  }
  allPolicies(): Iterable<PolicyRecord> {
    return this.policies.values();
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
  private narrowest(sel: Selector, byKey: Map<string, Map<string, Set<string>>> | undefined): Candidates | undefined {
    let best: Candidates | undefined;
    for (const req of sel.requirements) {
      const cand = candidatesFor(req, byKey);
      if (cand && (!best || cand.size < best.size)) best = cand;
    }
    return best;
  }
}

interface Candidates {
  readonly sets: readonly Set<string>[];
  readonly size: number;
}

const KINDS: readonly ObjectRecord['kind'][] = ['Pod', 'Namespace', 'Node', 'NetworkPolicy'];

function candidatesFor(req: Requirement, byKey: Map<string, Map<string, Set<string>>> | undefined): Candidates | undefined {
  if (req.operator !== 'In' && req.operator !== 'Exists') return undefined;
  const byValue = byKey?.get(req.key);
  if (!byValue) return { sets: [], size: 0 };
  const sets: Set<string>[] = [];
  if (req.operator === 'In') {
    for (const v of req.values.length === 1 ? req.values : new Set(req.values)) {
      const s = byValue.get(v);
      if (s) sets.push(s);
    }
  } else {
    for (const s of byValue.values()) sets.push(s);
  }
  let size = 0;
  for (const s of sets) size += s.size;
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
