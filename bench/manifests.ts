// A synthetic cluster (bench/synthetic.ts) as the text `kubectl get
// namespaces,nodes,pods,networkpolicies -A -o yaml` (or `-o json`) would print for it: one
// `List` document whose items carry the fields the loader reads, in kubectl's key order. Used
// by the `load` part to measure what loading a big dump costs.

import { stringify } from 'yaml';
import type { NamespaceRecord, NodeRecord, Peer, PodRecord, PolicyRecord, PolicyRule, Selector } from '../src/model/types.ts';
import { generateCluster, type SyntheticCluster } from './synthetic.ts';

type Obj = Record<string, unknown>;

function selector(s: Selector): Obj {
  const matchLabels: Record<string, string> = {};
  const matchExpressions: Obj[] = [];
  for (const r of s.requirements) {
    if (r.origin === 'matchLabels') matchLabels[r.key] = r.values[0]!;
    else matchExpressions.push({ key: r.key, operator: r.operator, ...(r.values.length ? { values: [...r.values] } : {}) });
  }
  return { ...(matchExpressions.length ? { matchExpressions } : {}), ...(Object.keys(matchLabels).length ? { matchLabels } : {}) };
}

function peer(p: Peer): Obj {
  if (p.kind === 'ipBlock') return { ipBlock: { cidr: p.cidr.written, ...(p.except.length ? { except: p.except.map((e) => e.written) } : {}) } };
  if (p.namespaces.kind === 'own') return { podSelector: p.pods ? selector(p.pods) : {} };
  return { namespaceSelector: selector(p.namespaces.selector), ...(p.pods ? { podSelector: selector(p.pods) } : {}) };
}

function policyRule(r: PolicyRule, side: 'from' | 'to'): Obj {
  return {
    ...(r.peers ? { [side]: r.peers.map(peer) } : {}),
    ...(r.ports ? { ports: r.ports.map((p) => ({ ...(p.endPort !== undefined ? { endPort: p.endPort } : {}), ...(p.port !== undefined ? { port: p.port } : {}), protocol: p.protocol })) } : {}),
  };
}

function meta(r: { uid: string; name: string; labels?: Readonly<Record<string, string>> }, namespace?: string): Obj {
  return {
    creationTimestamp: '2026-01-01T00:00:00Z',
    ...(r.labels && Object.keys(r.labels).length ? { labels: { ...r.labels } } : {}),
    name: r.name,
    ...(namespace ? { namespace } : {}),
    resourceVersion: '123456',
    uid: r.uid,
  };
}

export function podObject(p: PodRecord): Obj {
  const ip = p.ips[0];
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: meta(p, p.namespace),
    spec: {
      containers: [{ image: `registry.example/${p.labels['app'] ?? 'app'}:1.0`, name: 'main', ...(p.ports.length ? { ports: p.ports.map((c) => ({ containerPort: c.containerPort, ...(c.name ? { name: c.name } : {}), protocol: c.protocol })) } : {}) }],
      ...(p.hostNetwork ? { hostNetwork: true } : {}),
      ...(p.nodeName ? { nodeName: p.nodeName } : {}),
    },
    status: { ...(p.phase ? { phase: p.phase } : {}), ...(ip ? { podIP: ip, podIPs: [{ ip }] } : {}) },
  };
}

function policyObject(p: PolicyRecord): Obj {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: meta(p, p.namespace),
    spec: {
      ...(p.egress.length ? { egress: p.egress.map((r) => policyRule(r, 'to')) } : {}),
      ...(p.ingress.length ? { ingress: p.ingress.map((r) => policyRule(r, 'from')) } : {}),
      podSelector: selector(p.podSelector),
      policyTypes: [...p.policyTypes],
    },
  };
}

function namespaceObject(n: NamespaceRecord): Obj {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: meta(n), spec: { finalizers: ['kubernetes'] }, status: { phase: 'Active' } };
}

function nodeObject(n: NodeRecord): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: meta({ ...n, labels: { 'kubernetes.io/hostname': n.name } }),
    spec: { podCIDR: n.podCIDRs[0], podCIDRs: [...n.podCIDRs] },
    status: { addresses: n.internalIPs.map((address) => ({ address, type: 'InternalIP' })) },
  };
}

/** The cluster as one List object, in kubectl's order (namespaces, nodes, pods, policies). */
export function clusterList(c: SyntheticCluster): Obj {
  return {
    apiVersion: 'v1',
    items: [...c.namespaces.map(namespaceObject), ...c.nodes.map(nodeObject), ...c.pods.map(podObject), ...c.policies.map(policyObject)],
    kind: 'List',
    metadata: { resourceVersion: '' },
  };
}

/** `kubectl get ... -o yaml` text of a synthetic cluster. */
export function clusterYaml(c: SyntheticCluster): string {
  return stringify(clusterList(c), { lineWidth: 0 });
}

/** `kubectl get ... -o json` text (4-space indent, as kubectl prints it). */
export function clusterJson(c: SyntheticCluster): string {
  return JSON.stringify(clusterList(c), null, 4) + '\n';
}

/** A cluster whose YAML dump is about `mb` megabytes (pods scale; policies are a fifth of the pods). */
export function clusterOfSize(mb: number, seed = 1): SyntheticCluster {
  // Bytes of YAML per pod (with its share of policies, namespaces and nodes), measured on a
  // small cluster of the same shape, then one generation at the size asked.
  const sample = 2000;
  const perPod = Buffer.byteLength(clusterYaml(generateCluster({ pods: sample, policies: sample / 5, seed }))) / sample;
  const pods = Math.round((mb * 1e6) / perPod);
  return generateCluster({ pods, policies: Math.round(pods / 5), seed });
}
