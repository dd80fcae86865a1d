// Small builders for model records, so tests state clusters in a few lines.
// They build normalized records directly (no manifest parsing), the shape the model stores.

import { parseCidr } from '../../src/model/cidr.ts';
import { Model } from '../../src/model/store.ts';
import type {
  ContainerPort,
  IpBlockPeer,
  NamespaceRecord,
  NodeRecord,
  ObjectRecord,
  Peer,
  PodRecord,
  PodsPeer,
  PolicyRecord,
  PolicyRule,
  PolicyType,
  PortSpec,
  Protocol,
  Requirement,
  Selector,
} from '../../src/model/types.ts';

export function sel(matchLabels: Record<string, string> = {}, exprs: Omit<Requirement, 'origin'>[] = []): Selector {
  return {
    requirements: [
      ...Object.entries(matchLabels).map(([key, v]) => ({ key, operator: 'In' as const, values: [v], origin: 'matchLabels' })),
      ...exprs.map((e, i) => ({ ...e, origin: `matchExpressions[${i}]` })),
    ],
  };
}

export function ns(name: string, labels: Record<string, string> = {}): NamespaceRecord {
  return { kind: 'Namespace', uid: `ns-${name}`, name, labels: { 'kubernetes.io/metadata.name': name, ...labels } };
}

export function node(name: string, podCIDR: string, ip: string): NodeRecord {
  return { kind: 'Node', uid: `node-${name}`, name, podCIDRs: [podCIDR], internalIPs: [ip] };
}

export interface PodOpts {
  ip?: string | null;
  node?: string;
  ports?: ContainerPort[];
  hostNetwork?: boolean;
  phase?: string;
}

export function pod(namespace: string, name: string, labels: Record<string, string>, o: PodOpts = {}): PodRecord {
  return {
    kind: 'Pod',
    uid: `pod-${namespace}-${name}`,
    namespace,
    name,
    labels,
    nodeName: o.node ?? 'node-1',
    ips: o.ip === null ? [] : [o.ip ?? '10.244.1.2'],
    hostNetwork: o.hostNetwork ?? false,
    phase: o.phase ?? 'Running',
    ports: o.ports ?? [],
  };
}

export function port(containerPort: number, name?: string, protocol: Protocol = 'TCP'): ContainerPort {
  return name ? { containerPort, name, protocol } : { containerPort, protocol };
}

export function podsPeer(namespace: string, pods?: Selector): PodsPeer {
  return { kind: 'pods', namespaces: { kind: 'own', name: namespace }, ...(pods ? { pods } : {}) };
}

export function nsPeer(namespaces: Selector, pods?: Selector): PodsPeer {
  return { kind: 'pods', namespaces: { kind: 'selector', selector: namespaces }, ...(pods ? { pods } : {}) };
}

export function block(cidr: string, except: string[] = []): IpBlockPeer {
  return { kind: 'ipBlock', cidr: parseCidr(cidr), except: except.map(parseCidr) };
}

export function ports(...specs: (number | string | [number, number] | { protocol: Protocol; port?: number | string; endPort?: number })[]): PortSpec[] {
  return specs.map((s) => {
    if (typeof s === 'number' || typeof s === 'string') return { protocol: 'TCP', port: s };
    if (Array.isArray(s)) return { protocol: 'TCP', port: s[0], endPort: s[1] };
    return s;
  });
}

export function rule(peers?: Peer[], p?: PortSpec[]): PolicyRule {
  return { ...(peers ? { peers } : {}), ...(p ? { ports: p } : {}) };
}

export interface PolicyOpts {
  types?: PolicyType[];
  ingress?: PolicyRule[];
  egress?: PolicyRule[];
  invalid?: boolean;
}

export function policy(namespace: string, name: string, podSelector: Selector, o: PolicyOpts = {}): PolicyRecord {
  const types = o.types ?? (['Ingress', ...(o.egress?.length ? ['Egress' as const] : [])] as PolicyType[]);
  return {
    kind: 'NetworkPolicy',
    uid: `pol-${namespace}-${name}`,
    namespace,
    name,
    podSelector,
    policyTypes: types,
    policyTypesDefaulted: !o.types,
    ingress: types.includes('Ingress') && !o.invalid ? (o.ingress ?? []) : [],
    egress: types.includes('Egress') && !o.invalid ? (o.egress ?? []) : [],
    ignored: [],
    issues: o.invalid ? [{ field: 'spec', value: '{}', message: 'invalid for the test' }] : [],
  };
}

export function modelOf(...records: ObjectRecord[]): Model {
  const m = new Model();
  for (const r of records) m.upsert(r);
  return m;
}
