// The in-memory model: every record keyed by UID, with the indexes selector lookups need.
//
// Invariants:
// - Records are keyed by UID, so a pod deleted and recreated under the same name is a delete
//   plus an add, never an update of the old record.
// - `generation` increases on every change; consumers compare it to know they are current.
// - Lookups return enforceable pods only where the name says so (`*Enforceable*`).

import { selectorMatches } from './selector.ts';
import type { NamespaceRecord, NodeRecord, ObjectRecord, PodRecord, PodsPeer, PolicyRecord, Requirement, Selector } from './types.ts';
import { isEnforceable } from './types.ts';

export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';

export class Model {
  private readonly pods = new Map<string, PodRecord>();
  private readonly namespaces = new Map<string, NamespaceRecord>(); // by uid
  private readonly namespacesByName = new Map<string, NamespaceRecord>();
  private readonly nodes = new Map<string, NodeRecord>(); // by uid
  private readonly policies = new Map<string, PolicyRecord>();
  /** namespace name -> uids of its pods */
  private readonly podsByNamespace = new Map<string, Set<string>>();
  /** label key -> value -> pod uids */
  private readonly podLabelIndex = new Map<string, Map<string, Set<string>>>();
  private readonly policiesByNamespace = new Map<string, Set<string>>();
  private gen = 0;

  get generation(): number {
    return this.gen;
  }

  /** Insert or replace a record (by UID). */
  upsert(r: ObjectRecord): void {
    this.remove(r.uid, r.kind);
    switch (r.kind) {
      case 'Pod':
        this.pods.set(r.uid, r);
        addTo(this.podsByNamespace, r.namespace, r.uid);
        for (const [k, v] of Object.entries(r.labels)) {
          let byValue = this.podLabelIndex.get(k);
          if (!byValue) this.podLabelIndex.set(k, (byValue = new Map()));
          addTo(byValue, v, r.uid);
        }
        break;
      case 'Namespace':
        this.namespaces.set(r.uid, r);
        this.namespacesByName.set(r.name, r);
        break;
      case 'Node':
        this.nodes.set(r.uid, r);
        break;
      case 'NetworkPolicy':
        this.policies.set(r.uid, r);
        addTo(this.policiesByNamespace, r.namespace, r.uid);
        break;
    }
    this.gen++;
  }

  /** Remove the record with this UID, if any. Returns whether something was removed. */
  remove(uid: string, kind?: ObjectRecord['kind']): boolean {
    let removed = false;
    if (!kind || kind === 'Pod') {
      const p = this.pods.get(uid);
      if (p) {
        this.pods.delete(uid);
        removeFrom(this.podsByNamespace, p.namespace, uid);
        for (const [k, v] of Object.entries(p.labels)) {
          const byValue = this.podLabelIndex.get(k);
          if (byValue) {
            removeFrom(byValue, v, uid);
            if (byValue.size === 0) this.podLabelIndex.delete(k);
          }
        }
        removed = true;
      }
    }
    if (!kind || kind === 'Namespace') {
      const n = this.namespaces.get(uid);
      if (n) {
        this.namespaces.delete(uid);
        if (this.namespacesByName.get(n.name)?.uid === uid) this.namespacesByName.delete(n.name);
        removed = true;
      }
    }
    if (!kind || kind === 'Node') removed = this.nodes.delete(uid) || removed;
    if (!kind || kind === 'NetworkPolicy') {
      const pol = this.policies.get(uid);
      if (pol) {
        this.policies.delete(uid);
        removeFrom(this.policiesByNamespace, pol.namespace, uid);
        removed = true;
      }
    }
    if (removed) this.gen++;
    return removed;
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

  /** Every namespace: stored ones, plus implicit ones for namespaces that only pods or policies name. */
  allNamespaces(): NamespaceRecord[] {
    const names = new Set<string>(this.namespacesByName.keys());
    for (const n of this.podsByNamespace.keys()) names.add(n);
    for (const n of this.policiesByNamespace.keys()) names.add(n);
    return [...names].sort().map((n) => this.namespace(n));
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
    return this.allNamespaces()
      .filter((n) => selectorMatches(sel, n.labels))
      .map((n) => n.name);
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
    const candidates = sel ? this.narrowest(sel, inNs) : inNs;
    const out: PodRecord[] = [];
    for (const uid of candidates) {
      if (!inNs.has(uid)) continue;
      const p = this.pods.get(uid)!;
      if (isEnforceable(p) && (!sel || selectorMatches(sel, p.labels))) out.push(p);
    }
    return out;
  }

  /**
   * The smallest candidate set the label index gives for a selector: the pods carrying the
   * key of an `In` or `Exists` requirement. Requirements that also match pods lacking the key
   * (NotIn, DoesNotExist) cannot narrow, so the fallback is the whole namespace.
   */
  private narrowest(sel: Selector, fallback: Set<string>): Iterable<string> {
    let best: Set<string> | string[] = fallback;
    let bestSize = fallback.size;
    for (const req of sel.requirements) {
      const cand = this.candidatesFor(req);
      if (cand && sizeOf(cand) < bestSize) {
        best = cand;
        bestSize = sizeOf(cand);
      }
    }
    return best;
  }

  private candidatesFor(req: Requirement): Set<string> | string[] | undefined {
    const byValue = this.podLabelIndex.get(req.key);
    if (req.operator === 'In') {
      if (!byValue) return [];
      if (req.values.length === 1) return byValue.get(req.values[0]!) ?? [];
      const out: string[] = [];
      for (const v of new Set(req.values)) for (const u of byValue.get(v) ?? []) out.push(u);
      return out;
    }
    if (req.operator === 'Exists') {
      if (!byValue) return [];
      const out: string[] = [];
      for (const s of byValue.values()) for (const u of s) out.push(u);
      return out;
    }
    return undefined;
  }
}

function sizeOf(c: Set<string> | string[]): number {
  return c instanceof Set ? c.size : c.length;
}

function addTo<K>(m: Map<K, Set<string>>, k: K, v: string): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(v);
}

function removeFrom<K>(m: Map<K, Set<string>>, k: K, v: string): void {
  const s = m.get(k);
  if (!s) return;
  s.delete(v);
  if (s.size === 0) m.delete(k);
}
