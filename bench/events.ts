// Single model changes of the kinds a node agent sees, drawn from a synthetic cluster with the
// cluster's own PRNG (so a seed names the whole sequence). Each event is applied to the model
// by `apply`; the incremental part times from there to the Ruleset diff.

import type { Model } from '../src/model/store.ts';
import type { ClusterPolicyRecord, NamespaceRecord, PodRecord, PolicyRecord } from '../src/model/types.ts';
import { isEnforceable } from '../src/model/types.ts';
import { appPolicy, nodeIp, type Deployment, type SyntheticCluster } from './synthetic.ts';


/** Quiet time before each single event the kernel part times (bench/kernel-child.ts): the agent is done with the one before. */
export const QUIET_BEFORE_EVENT_MS = 60;
export const EVENT_KINDS = [
  'pod-label',
  'pod-label-local',
  'pod-add',
  'pod-add-local',
  'pod-delete',
  'pod-delete-local',
  'policy-add',
  'policy-delete',
  'namespace-label',
] as const;
/** Changes of ClusterNetworkPolicies (bench/cnps.ts), drawn only where the cluster has them. */
export const CNP_EVENT_KINDS = ['cnp-add', 'cnp-delete', 'cnp-priority'] as const;
export type EventKind = (typeof EVENT_KINDS)[number] | (typeof CNP_EVENT_KINDS)[number];

export const EVENT_DESCRIPTIONS: Record<EventKind, string> = {
  'pod-label': 'a pod anywhere changes its version label',
  'pod-label-local': 'a pod of this node changes its tier and version labels',
  'pod-add': 'a new replica starts on another node',
  'pod-add-local': 'a new replica starts on this node',
  'pod-delete': 'a pod on another node is deleted',
  'pod-delete-local': 'a pod of this node is deleted',
  'policy-add': 'a new app policy in a random namespace',
  'policy-delete': 'an app policy is deleted',
  'namespace-label': "a namespace's env label changes (namespace selectors flip)",
  'cnp-add': 'a ClusterNetworkPolicy deleted earlier comes back (or a copy of one under a new name)',
  'cnp-delete': 'a ClusterNetworkPolicy is deleted',
  'cnp-priority': "a ClusterNetworkPolicy's priority changes (its place in the tier may move)",
};

export interface ModelEvent {
  readonly kind: EventKind;
  readonly apply: (m: Model) => void;
}

/**
 * Draws events against the cluster's current state. Keeps its own lists of live pods and
 * policies up to date as events are drawn, so each event is valid when applied in order.
 */
export class EventSource {
  private readonly c: SyntheticCluster;
  private readonly node: string;
  private readonly pods = new Map<string, PodRecord>();
  private readonly policies: PolicyRecord[];
  private readonly namespaces = new Map<string, NamespaceRecord>();
  private readonly deployments: readonly Deployment[];
  private readonly nodeNames: string[];
  private serial = 100000;
  private readonly freeIps = new Map<string, string[]>();
  private readonly cnps: ClusterPolicyRecord[];
  private readonly deletedCnps: ClusterPolicyRecord[] = [];

  constructor(c: SyntheticCluster, node: string) {
    this.c = c;
    this.node = node;
    for (const p of c.model.allPods()) this.pods.set(p.uid, p);
    this.policies = [...c.model.allPolicies()].filter((p) => !p.name.startsWith('default-deny') && p.name !== 'allow-dns');
    for (const n of c.namespaces) this.namespaces.set(n.name, n);
    this.deployments = c.deployments.filter((d) => !['kube-system', 'monitoring', 'ingress-nginx'].includes(d.namespace));
    this.nodeNames = c.nodes.map((n) => n.name).filter((n) => !(n in c.spec.localPods));
    this.cnps = [...c.model.allClusterPolicies()];
  }

  /** `count` events of each kind, shuffled together. */
  sequence(countPerKind: number, kinds: readonly EventKind[] = EVENT_KINDS): EventKind[] {
    const out: EventKind[] = [];
    for (const k of kinds) for (let i = 0; i < countPerKind; i++) out.push(k);
    return this.c.rng.shuffle(out);
  }

  next(kind: EventKind): ModelEvent {
    const rng = this.c.rng;
    switch (kind) {
      case 'pod-label': {
        const p = this.pickPod((x) => x.nodeName !== this.node);
        const version = rng.pick(['v1', 'v2', 'v3'].filter((v) => v !== p.labels.version));
        return this.upsertPod(kind, { ...p, labels: { ...p.labels, version } });
      }
      case 'pod-label-local': {
        const p = this.pickPod((x) => x.nodeName === this.node);
        const tier = rng.pick(['frontend', 'backend', 'db', 'cache', 'worker'].filter((t) => t !== p.labels.tier));
        return this.upsertPod(kind, { ...p, labels: { ...p.labels, tier, version: rng.pick(['v1', 'v2', 'v3']) } });
      }
      case 'pod-add':
      case 'pod-add-local': {
        const d = rng.pick(this.deployments);
        const nodeName = kind === 'pod-add-local' ? this.node : rng.pick(this.nodeNames);
        const template = [...this.podsOf(d)][0];
        const ip = this.allocateIp(nodeName);
        const p: PodRecord = {
          kind: 'Pod',
          uid: `bench-${this.serial++}`,
          namespace: d.namespace,
          name: `${d.app}-${d.hash}-${rng.word(5)}`,
          labels: template?.labels ?? { app: d.app, tier: d.tier, version: 'v2', 'pod-template-hash': d.hash },
          nodeName,
          ips: [ip],
          hostNetwork: false,
          phase: 'Running',
          ports: d.ports,
        };
        return this.upsertPod(kind, p);
      }
      case 'pod-delete':
      case 'pod-delete-local': {
        const local = kind === 'pod-delete-local';
        const p = this.pickPod((x) => (x.nodeName === this.node) === local);
        this.pods.delete(p.uid);
        for (const ip of p.ips) this.freeIps.get(p.nodeName!)?.push(ip);
        return { kind, apply: (m) => void m.remove(p.uid, 'Pod') };
      }
      case 'policy-add': {
        const d = rng.pick(this.deployments);
        const others = this.deployments.filter((o) => o.namespace === d.namespace && o !== d);
        const pol = appPolicy(rng, d, others, this.c.namespaces, this.serial++);
        this.policies.push(pol);
        return { kind, apply: (m) => m.upsert(pol) };
      }
      case 'policy-delete': {
        const i = Math.floor(rng.next() * this.policies.length);
        const pol = this.policies[i]!;
        this.policies.splice(i, 1);
        return { kind, apply: (m) => void m.remove(pol.uid, 'NetworkPolicy') };
      }
      case 'namespace-label': {
        const n = rng.pick([...this.namespaces.values()].filter((x) => x.labels.env));
        const env = rng.pick(['prod', 'staging', 'dev'].filter((e) => e !== n.labels.env));
        const next: NamespaceRecord = { ...n, labels: { ...n.labels, env } };
        this.namespaces.set(n.name, next);
        return { kind, apply: (m) => m.upsert(next) };
      }
      case 'cnp-add': {
        const back = this.deletedCnps.length ? this.deletedCnps.splice(Math.floor(rng.next() * this.deletedCnps.length), 1)[0]! : undefined;
        const base = back ?? rng.pick(this.cnps);
        const c: ClusterPolicyRecord = back ?? { ...base, uid: `bench-cnp-${this.serial}`, name: `${base.name}-copy-${this.serial++}` };
        this.cnps.push(c);
        return { kind, apply: (m) => m.upsert(c) };
      }
      case 'cnp-delete': {
        const i = Math.floor(rng.next() * this.cnps.length);
        const c = this.cnps.splice(i, 1)[0]!;
        this.deletedCnps.push(c);
        return { kind, apply: (m) => void m.remove(c.uid, 'ClusterNetworkPolicy') };
      }
      case 'cnp-priority': {
        const i = Math.floor(rng.next() * this.cnps.length);
        const c: ClusterPolicyRecord = { ...this.cnps[i]!, priority: rng.int(0, 1000) };
        this.cnps[i] = c;
        return { kind, apply: (m) => m.upsert(c) };
      }
    }
  }

  /** A free address of the node's /24 (freed by a deletion first); past .254, a spare range. */
  private allocateIp(nodeName: string): string {
    const free = this.freeIps.get(nodeName) ?? [];
    this.freeIps.set(nodeName, free);
    const reused = free.shift();
    if (reused) return reused;
    const host = this.c.nextIp.get(nodeName)!;
    this.c.nextIp.set(nodeName, host + 1);
    const nodeIndex = Number(nodeName.slice(5));
    return host <= 254 ? nodeIp(nodeIndex, host) : `10.250.${nodeIndex & 255}.${(host - 255) % 254 + 1}`;
  }

  private upsertPod(kind: EventKind, p: PodRecord): ModelEvent {
    this.pods.set(p.uid, p);
    return { kind, apply: (m) => m.upsert(p) };
  }

  /** A random running pod (not hostNetwork) matching the filter. */
  private pickPod(filter: (p: PodRecord) => boolean): PodRecord {
    const rng = this.c.rng;
    const all = [...this.pods.values()];
    for (let tries = 0; tries < 10000; tries++) {
      const p = all[Math.floor(rng.next() * all.length)]!;
      if (isEnforceable(p) && filter(p)) return p;
    }
    throw new Error('no pod matches the event filter (cluster too small?)');
  }

  private *podsOf(d: Deployment): Iterable<PodRecord> {
    for (const p of this.pods.values()) if (p.namespace === d.namespace && p.labels['pod-template-hash'] === d.hash) yield p;
  }
}
