// The incremental compiler's pods peers: for each pods peer a live chain matches (namespace scope
// plus pod selector, shared by key as its sets are), the pods it selects now, and its sets (pod
// IPs, named ports), kept current as pods and namespaces change.
//
// What a change touches: a pod, the peers whose scope holds its namespace (before and after) and
// whose selector matches it; a namespace's labels, the namespace-selector peers that start or
// stop matching it.

import type { Model } from '../../model/store.ts';
import { selectorMatches } from '../../model/selector.ts';
import type { PodRecord, Protocol, Selector } from '../../model/types.ts';
import { isEnforceable } from '../../model/types.ts';
import { namedPortEntries, peerKey, type PeerRef } from '../rules.ts';
import type { SetState } from './sets.ts';
import { addTo, removeFrom } from './sorted-list.ts';

/** A pods peer (or `any`, or `local`): the pods it selects now, and its live sets. */
export interface PeerState {
  readonly key: string;
  readonly peer: PeerRef;
  readonly podSelector: Selector | undefined;
  /** Set for a namespace-selector peer: the selector. */
  readonly nsSelector: Selector | undefined;
  /** namespace -> uid -> the record whose entries are in the sets (by namespace: a namespace leaves whole). */
  readonly members: Map<string, Map<string, PodRecord>>;
  pset: SetState | undefined;
  /** Named-port sets by set name. */
  readonly nsets: Map<string, { readonly set: SetState; readonly portName: string; readonly protocol: Protocol | undefined }>;
  /** Namespace-selector peers: the namespaces it matches now. */
  readonly nsMatch: Set<string> | undefined;
}

export class PeerIndex {
  private readonly model: Model;
  private readonly peers = new Map<string, PeerState>();
  private readonly ownPeers = new Map<string, Set<PeerState>>();
  private readonly selectorPeers = new Set<PeerState>();
  private readonly selectorPeersByNs = new Map<string, Set<PeerState>>();
  private anyPeer: PeerState | undefined;
  /** The peer of this node's pods (rules.ts PeerRef `local`). */
  private localPeer: PeerState | undefined;
  private readonly node: string;
  /** The peer each of its pod and named-port sets belongs to (the sets know nothing of peers). */
  private readonly setOwners = new Map<SetState, PeerState>();
  private readonly knownNamespaces = new Set<string>();

  constructor(model: Model, node: string) {
    this.model = model;
    this.node = node;
  }

  /** Forget every peer; the namespaces known are the model's now. */
  reset(): void {
    this.peers.clear();
    this.ownPeers.clear();
    this.selectorPeers.clear();
    this.selectorPeersByNs.clear();
    this.anyPeer = undefined;
    this.localPeer = undefined;
    this.setOwners.clear();
    this.knownNamespaces.clear();
    for (const n of this.model.allNamespaces()) this.knownNamespaces.add(n.name);
  }

  /** The state of a peer, created (with its current members) on first use. */
  peerOf(peer: PeerRef): PeerState {
    const key = peerKey(peer);
    const existing = this.peers.get(key);
    if (existing) return existing;
    const nsSelector = peer !== 'any' && peer !== 'local' && peer.namespaces.kind === 'selector' ? peer.namespaces.selector : undefined;
    const st: PeerState = {
      key,
      peer,
      podSelector: peer === 'any' || peer === 'local' ? undefined : peer.pods,
      nsSelector,
      members: new Map(),
      pset: undefined,
      nsets: new Map(),
      nsMatch: nsSelector ? new Set<string>() : undefined,
    };
    this.peers.set(key, st);
    if (peer === 'any') {
      this.anyPeer = st;
      for (const p of this.model.allPods()) if (isEnforceable(p)) setMember(st, p);
    } else if (peer === 'local') {
      this.localPeer = st;
      for (const p of this.model.podsOnNode(this.node)) if (isEnforceable(p)) setMember(st, p);
    } else if (peer.namespaces.kind === 'own') {
      addTo(this.ownPeers, peer.namespaces.name, st);
      for (const p of this.model.enforceablePodsIn(peer.namespaces.name, peer.pods)) setMember(st, p);
    } else {
      this.selectorPeers.add(st);
      for (const name of this.knownNamespaces) {
        if (!selectorMatches(peer.namespaces.selector, this.model.namespace(name).labels)) continue;
        st.nsMatch!.add(name);
        addTo(this.selectorPeersByNs, name, st);
        for (const p of this.model.enforceablePodsIn(name, peer.pods)) setMember(st, p);
      }
    }
    return st;
  }

  /** A new pod-IP set of the peer: filled with its members' addresses. */
  attachPodSet(peer: PeerState, s: SetState): void {
    peer.pset = s;
    this.setOwners.set(s, peer);
    for (const inNs of peer.members.values()) for (const p of inNs.values()) for (const ip of p.ips) s.add(ip);
  }

  /** A new named-port set of the peer: filled with its members' entries. */
  attachNamedPortSet(peer: PeerState, s: SetState, portName: string, protocol: Protocol | undefined): void {
    peer.nsets.set(s.spec.name, { set: s, portName, protocol });
    this.setOwners.set(s, peer);
    for (const inNs of peer.members.values()) for (const p of inNs.values()) for (const e of namedPortEntries(p, portName, protocol)) s.add(e);
  }

  /** A set of the peer was dropped; the peer goes with its last set. */
  detachSet(s: SetState): void {
    const peer = this.setOwners.get(s);
    if (!peer) return;
    this.setOwners.delete(s);
    if (peer.pset === s) peer.pset = undefined;
    else peer.nsets.delete(s.spec.name);
    if (!peer.pset && peer.nsets.size === 0) this.drop(peer);
  }

  private drop(st: PeerState): void {
    this.peers.delete(st.key);
    if (st.peer === 'any') this.anyPeer = undefined;
    else if (st.peer === 'local') this.localPeer = undefined;
    else if (st.peer.namespaces.kind === 'own') removeFrom(this.ownPeers, st.peer.namespaces.name, st);
    else {
      this.selectorPeers.delete(st);
      for (const name of st.nsMatch!) removeFrom(this.selectorPeersByNs, name, st);
    }
  }

  /** A namespace seen for the first time: which selector peers match it. */
  ensureNamespace(name: string): void {
    if (this.knownNamespaces.has(name)) return;
    this.knownNamespaces.add(name);
    const labels = this.model.namespace(name).labels;
    for (const peer of this.selectorPeers) {
      if (!selectorMatches(peer.nsSelector!, labels)) continue;
      peer.nsMatch!.add(name);
      addTo(this.selectorPeersByNs, name, peer);
    }
  }

  /**
   * A namespace's labels changed: selector peers that start matching it gain its enforceable
   * pods (but `skip`: pods changing in the same step, added with their new records), those that
   * stop lose them.
   */
  namespaceChanged(name: string, skip: (uid: string) => boolean): void {
    this.knownNamespaces.add(name);
    const labels = this.model.namespace(name).labels;
    for (const peer of this.selectorPeers) {
      const was = peer.nsMatch!.has(name);
      const now = selectorMatches(peer.nsSelector!, labels);
      if (was === now) continue;
      if (now) {
        peer.nsMatch!.add(name);
        addTo(this.selectorPeersByNs, name, peer);
        for (const p of this.model.enforceablePodsIn(name, peer.podSelector)) if (!skip(p.uid)) this.addMember(peer, p);
      } else {
        peer.nsMatch!.delete(name);
        removeFrom(this.selectorPeersByNs, name, peer);
        for (const uid of [...(peer.members.get(name)?.keys() ?? [])]) this.removeMember(peer, name, uid);
      }
    }
  }

  /** Take out what a pod contributed, as the compiler last saw it. */
  podGone(before: PodRecord): void {
    this.forScope(before.namespace, before.nodeName, (peer) => {
      if (peer.members.get(before.namespace)?.has(before.uid)) this.removeMember(peer, before.namespace, before.uid);
    });
  }

  /** Put in what an enforceable pod contributes now. */
  podCame(p: PodRecord): void {
    this.ensureNamespace(p.namespace);
    this.forScope(p.namespace, p.nodeName, (peer) => {
      if (!peer.podSelector || selectorMatches(peer.podSelector, p.labels)) this.addMember(peer, p);
    });
  }

  /** Visit the peers whose scope holds a pod of this namespace and node. */
  private forScope(namespace: string, node: string | undefined, visit: (peer: PeerState) => void): void {
    const own = this.ownPeers.get(namespace);
    if (own) for (const peer of own) visit(peer);
    const sel = this.selectorPeersByNs.get(namespace);
    if (sel) for (const peer of sel) visit(peer);
    if (this.anyPeer) visit(this.anyPeer);
    if (this.localPeer && node === this.node) visit(this.localPeer);
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
}

function setMember(peer: PeerState, p: PodRecord): void {
  let inNs = peer.members.get(p.namespace);
  if (!inNs) peer.members.set(p.namespace, (inNs = new Map()));
  inNs.set(p.uid, p);
}
