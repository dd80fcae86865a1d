// fast-check generators of small random clusters: namespaces, pods on two nodes, policies and
// flows. Small vocabularies on purpose, so random selectors, named ports and ipBlocks collide
// with the pods often enough to exercise every branch of the semantics.

import fc from 'fast-check';
import { Model } from '../../src/model/store.ts';
import type { ClusterPolicyRecord, ContainerPort, Peer, PodRecord, PolicyRecord, PolicyRule, PolicyType, PortSpec, Protocol, Requirement, Selector } from '../../src/model/types.ts';
import { block, node, ns } from './builders.ts';
import { clusterPoliciesArb, clusterPolicyArb } from './cnp-arbitraries.ts';
import type { Endpoint, Flow, FlowProtocol } from '../../src/semantics/evaluate.ts';

export const NODES = [
  { name: 'n1', cidr: '10.244.1.0/24', ip: '192.168.50.11', prefix: '10.244.1.' },
  { name: 'n2', cidr: '10.244.2.0/24', ip: '192.168.50.12', prefix: '10.244.2.' },
] as const;
export const NAMESPACES = ['x', 'y', 'z'] as const;
/**
 * The last octet of the n-th pod address (n from 0): 10, 47, 84, 121, ... (distinct for n < 230,
 * never 250), so that a handful of pods lands in different branches of the dispatch tree at every
 * depth (layout.ts: the bucket is the octet & 63, chosen 2 bits at a time) and a rule of any
 * depth that tests the wrong side or bits is met by some flow.
 */
export function spreadOctet(n: number): number {
  return 10 + ((n * 37) % 230);
}

/** Addresses outside every pod: the far side of flows to and from the outside world. */
// 10.244.1.250 and 10.244.2.250 lie in the nodes' pod CIDRs but belong to no pod: an interface
// attached by hand, or a pod whose IP has not been reported yet.
export const EXTERNAL_IPS = ['192.168.7.7', '8.8.8.8', '10.244.3.3', '10.244.1.250', '10.244.2.250'] as const;
/**
 * The nodes' own addresses: InternalIP and the bridge's (the pod CIDR's first address). A pod's
 * packet to one is delivered to that node (INPUT, judged by the pod's egress only); one from it is
 * the node's own traffic (OUTPUT).
 */
export const NODE_ADDRESSES: readonly string[] = NODES.flatMap((n) => [n.ip, `${n.prefix}1`]);

const labelValue = { app: ['web', 'db', 'api'], tier: ['fe', 'be'] } as const;

export const labelsArb: fc.Arbitrary<Record<string, string>> = fc
  .record({ app: fc.option(fc.constantFrom(...labelValue.app), { nil: undefined }), tier: fc.option(fc.constantFrom(...labelValue.tier), { nil: undefined }) })
  .map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) as Record<string, string>);

export const nsLabelsArb = fc
  .record({ team: fc.option(fc.constantFrom('a', 'b'), { nil: undefined }), env: fc.option(fc.constantFrom('prod', 'dev'), { nil: undefined }) })
  .map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) as Record<string, string>);

// Named ports collide on purpose: `http` is 80 on some pods and 8080 on others.
export const PORT_CHOICES: ContainerPort[] = [
  { containerPort: 80, name: 'http', protocol: 'TCP' },
  { containerPort: 8080, name: 'http', protocol: 'TCP' },
  { containerPort: 53, name: 'dns', protocol: 'UDP' },
  { containerPort: 53, name: 'dns-tcp', protocol: 'TCP' },
  { containerPort: 81, protocol: 'TCP' },
  { containerPort: 9000, name: 'sctp', protocol: 'SCTP' },
];

export const FLOW_PORTS: { port: number; protocol: Protocol }[] = [
  { port: 80, protocol: 'TCP' },
  { port: 8080, protocol: 'TCP' },
  { port: 53, protocol: 'UDP' },
  { port: 53, protocol: 'TCP' },
  { port: 81, protocol: 'TCP' },
  { port: 8050, protocol: 'TCP' },
  { port: 9000, protocol: 'SCTP' },
];

/**
 * FLOW_PORTS and a flow of a protocol without ports (ICMP, GRE, ...: FlowProtocol `other`),
 * which only rules without ports or protocols match.
 */
export const FLOW_PORTS_AND_PORTLESS: readonly { port: number; protocol: FlowProtocol }[] = [...FLOW_PORTS, { port: 0, protocol: 'other' }];

/** A pod that can send and receive: running or pending with an address (a hostNetwork pod uses its node's). */
export function canTalk(p: PodRecord): boolean {
  return p.ips.length > 0 && p.phase !== 'Failed';
}

/**
 * Every flow of interest among these pods (the caller picks which can send): each ordered pair,
 * and each pod to and from the outside addresses and the nodes' own, on every port and protocol
 * (FLOW_PORTS_AND_PORTLESS).
 */
export function flowsAmong(pods: readonly PodRecord[]): Flow[] {
  const eps: Endpoint[] = pods.map((pod) => ({ kind: 'pod', pod }));
  const out: Flow[] = [];
  for (const src of eps) {
    for (const dst of eps) for (const q of FLOW_PORTS_AND_PORTLESS) out.push({ src, dst, ...q });
    for (const ip of [...EXTERNAL_IPS, ...NODE_ADDRESSES]) {
      const ext: Endpoint = { kind: 'ip', ip };
      for (const q of FLOW_PORTS_AND_PORTLESS) out.push({ src, dst: ext, ...q }, { src: ext, dst: src, ...q });
    }
  }
  return out;
}

const requirementArb = (keys: readonly string[], values: readonly string[]): fc.Arbitrary<Omit<Requirement, 'origin'>> =>
  fc.oneof(
    fc.record({ key: fc.constantFrom(...keys), operator: fc.constantFrom('In' as const, 'NotIn' as const), values: fc.uniqueArray(fc.constantFrom(...values), { minLength: 1, maxLength: 2 }) }),
    fc.record({ key: fc.constantFrom(...keys), operator: fc.constantFrom('Exists' as const, 'DoesNotExist' as const), values: fc.constant([] as string[]) }),
  );

function selectorArb(keys: readonly string[], values: readonly string[]): fc.Arbitrary<Selector> {
  return fc
    .array(requirementArb(keys, values), { maxLength: 2 })
    .map((reqs) => ({ requirements: reqs.map((r, i) => ({ ...r, origin: `matchExpressions[${i}]` })) }));
}

const podSelectorArb = selectorArb(['app', 'tier'], ['web', 'db', 'api', 'fe', 'be']);
const nsSelectorArb = selectorArb(['team', 'env', 'kubernetes.io/metadata.name'], ['a', 'b', 'prod', 'dev', 'x', 'y']);

const BLOCKS: Peer[] = [
  block('10.244.0.0/16', ['10.244.1.0/24']),
  block('10.244.1.0/24'),
  block('0.0.0.0/0', ['10.244.2.0/24']),
  block('0.0.0.0/0'),
  block('10.244.2.10/32'),
  block('192.168.0.0/16', ['192.168.50.0/24']),
  block('0.0.0.0/0', ['0.0.0.0/1']),
  block('fd00::/8'),
];

function peerArb(policyNs: string): fc.Arbitrary<Peer> {
  return fc.oneof(
    podSelectorArb.map((pods): Peer => ({ kind: 'pods', namespaces: { kind: 'own', name: policyNs }, pods })),
    fc.tuple(nsSelectorArb, fc.option(podSelectorArb, { nil: undefined })).map(
      ([sel, pods]): Peer => ({ kind: 'pods', namespaces: { kind: 'selector', selector: sel }, ...(pods ? { pods } : {}) }),
    ),
    fc.constantFrom(...BLOCKS),
  );
}

const PORT_SPECS: PortSpec[] = [
  { protocol: 'TCP', port: 80 },
  { protocol: 'TCP', port: 'http' },
  { protocol: 'UDP', port: 'dns' },
  { protocol: 'TCP', port: 'dns' },
  { protocol: 'TCP', port: 8000, endPort: 8100 },
  { protocol: 'UDP' },
  { protocol: 'SCTP', port: 9000 },
  { protocol: 'SCTP', port: 'sctp' },
  { protocol: 'TCP', port: 81 },
];

function ruleArb(policyNs: string): fc.Arbitrary<PolicyRule> {
  return fc
    .record({
      peers: fc.option(fc.array(peerArb(policyNs), { minLength: 1, maxLength: 2 }), { nil: undefined }),
      ports: fc.option(fc.uniqueArray(fc.constantFrom(...PORT_SPECS), { minLength: 1, maxLength: 2 }), { nil: undefined }),
    })
    .map((r) => ({ ...(r.peers ? { peers: r.peers } : {}), ...(r.ports ? { ports: r.ports } : {}) }));
}

export function policyArb(index: number): fc.Arbitrary<PolicyRecord> {
  return fc.constantFrom(...NAMESPACES).chain((namespace) =>
    fc
      .record({
        podSelector: podSelectorArb,
        types: fc.constantFrom<PolicyType[]>(['Ingress'], ['Egress'], ['Ingress', 'Egress']),
        ingress: fc.array(ruleArb(namespace), { maxLength: 2 }),
        egress: fc.array(ruleArb(namespace), { maxLength: 2 }),
        broken: fc.integer({ min: 0, max: 19 }),
      })
      .map(
        (r): PolicyRecord => ({
          kind: 'NetworkPolicy',
          uid: `pol-${index}`,
          namespace,
          name: `p${index}`,
          podSelector: r.podSelector,
          policyTypes: r.types,
          policyTypesDefaulted: false,
          // One policy in twenty is invalid: fail closed, it isolates and allows nothing.
          ingress: r.broken === 0 || !r.types.includes('Ingress') ? [] : r.ingress,
          egress: r.broken === 0 || !r.types.includes('Egress') ? [] : r.egress,
          ignored: [],
          issues: r.broken === 0 ? [{ field: 'spec', value: '{}', message: 'generated invalid policy' }] : [],
        }),
      ),
  );
}

export interface Cluster {
  readonly model: Model;
  readonly pods: readonly PodRecord[];
}

export const clusterArb: fc.Arbitrary<Cluster> = fc
  .record({
    nsLabels: fc.tuple(nsLabelsArb, nsLabelsArb, nsLabelsArb),
    pods: fc.array(
      fc.record({
        namespace: fc.constantFrom(...NAMESPACES),
        labels: labelsArb,
        node: fc.constantFrom(0, 1),
        ports: fc.subarray(PORT_CHOICES, { maxLength: 3 }),
        // Mostly ordinary pods; some hostNetwork, IP-less or finished ones.
        state: fc.constantFrom('running', 'running', 'running', 'running', 'running', 'running', 'host', 'noip', 'failed', 'succeeded'),
      }),
      { minLength: 2, maxLength: 7 },
    ),
    policies: fc.integer({ min: 0, max: 4 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => policyArb(i)))),
  })
  .map((r) => {
    const m = new Model();
    NAMESPACES.forEach((n, i) => m.upsert(ns(n, r.nsLabels[i])));
    for (const nd of NODES) m.upsert(node(nd.name, nd.cidr, nd.ip));
    const pods: PodRecord[] = r.pods.map((p, i) => {
      const nd = NODES[p.node]!;
      return {
        kind: 'Pod',
        uid: `pod-${i}`,
        namespace: p.namespace,
        name: `pod${i}`,
        labels: p.labels,
        nodeName: nd.name,
        ips: p.state === 'noip' ? [] : p.state === 'host' ? [nd.ip] : [`${nd.prefix}${spreadOctet(i)}`],
        hostNetwork: p.state === 'host',
        phase: p.state === 'failed' ? 'Failed' : p.state === 'succeeded' ? 'Succeeded' : 'Running',
        ports: p.ports,
      };
    });
    for (const p of pods) m.upsert(p);
    for (const pol of r.policies) m.upsert(pol);
    return { model: m, pods };
  });

/** A random cluster with random ClusterNetworkPolicies of both tiers (cnp-arbitraries.ts). */
export const tieredClusterArb: fc.Arbitrary<Cluster> = fc.tuple(clusterArb, clusterPoliciesArb(1, 4)).map(([c, cnps]) => {
  for (const r of cnps) c.model.upsert(r);
  return c;
});

// ---- change sequences ------------------------------------------------------------------------
// Random model changes against a `clusterArb` cluster, for the tests that follow a model through
// its changes (the incremental compiler, the sync planner built on its delta).

/** Namespaces pods may live in; `w` has no Namespace object (implicit). */
export const POD_NAMESPACES = [...NAMESPACES, 'w'] as const;

export interface PodSpec {
  namespace: string;
  labels: Record<string, string>;
  node: number;
  ports: ContainerPort[];
  state: string;
  /** Small range on purpose: two pods often share an address (a reused IP). */
  ip: number;
}

export type ModelOp =
  | { op: 'pod'; slot: number; spec: PodSpec }
  | { op: 'relabel'; slot: number; labels: Record<string, string> }
  | { op: 'delPod'; slot: number }
  | { op: 'policy'; index: number; policy: PolicyRecord }
  | { op: 'delPolicy'; index: number }
  | { op: 'ns'; name: string; labels: Record<string, string> }
  | { op: 'delNs'; name: string }
  /** A ClusterNetworkPolicy added or changed (tier, priority, subject, rules), or deleted. */
  | { op: 'cnp'; index: number; policy: ClusterPolicyRecord }
  | { op: 'delCnp'; index: number }
  /** A third node, n3, with this pod CIDR (added or changed), or gone (every node's pod CIDRs are in PCTL-pod-cidrs). */
  | { op: 'node'; cidr: string | undefined }
  /** Not a model change: the consumer drops its state and rebuilds (a compiler's reset()). */
  | { op: 'reset' };

export const podSpecArb: fc.Arbitrary<PodSpec> = fc.record({
  namespace: fc.constantFrom(...POD_NAMESPACES),
  labels: labelsArb,
  node: fc.constantFrom(0, 1),
  ports: fc.subarray(PORT_CHOICES, { maxLength: 3 }),
  state: fc.constantFrom('running', 'running', 'running', 'running', 'host', 'noip', 'failed', 'succeeded'),
  ip: fc.integer({ min: 10, max: 16 }),
});

export const modelOpArb: fc.Arbitrary<ModelOp> = fc.oneof(
  { arbitrary: fc.record({ op: fc.constant('pod' as const), slot: fc.integer({ min: 0, max: 9 }), spec: podSpecArb }), weight: 4 },
  { arbitrary: fc.record({ op: fc.constant('relabel' as const), slot: fc.integer({ min: 0, max: 9 }), labels: labelsArb }), weight: 3 },
  { arbitrary: fc.record({ op: fc.constant('delPod' as const), slot: fc.integer({ min: 0, max: 9 }) }), weight: 2 },
  { arbitrary: fc.integer({ min: 0, max: 5 }).chain((index) => policyArb(index).map((policy) => ({ op: 'policy' as const, index, policy }))), weight: 3 },
  { arbitrary: fc.record({ op: fc.constant('delPolicy' as const), index: fc.integer({ min: 0, max: 5 }) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('ns' as const), name: fc.constantFrom(...POD_NAMESPACES), labels: nsLabelsArb }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('delNs' as const), name: fc.constantFrom(...POD_NAMESPACES) }), weight: 1 },
  { arbitrary: fc.integer({ min: 0, max: 3 }).chain((index) => clusterPolicyArb(index).map((policy) => ({ op: 'cnp' as const, index, policy }))), weight: 3 },
  { arbitrary: fc.record({ op: fc.constant('delCnp' as const), index: fc.integer({ min: 0, max: 3 }) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('node' as const), cidr: fc.constantFrom('10.244.3.0/24', '10.244.4.0/24', undefined) }), weight: 1 },
  { arbitrary: fc.constant({ op: 'reset' as const }), weight: 1 },
);

/** Batches of changes: what a consumer sees between two of its syncs. */
export const modelOpBatchesArb = fc.array(fc.array(modelOpArb, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 8 });

export function podOf(slot: number, s: PodSpec): PodRecord {
  const nd = NODES[s.node]!;
  return {
    kind: 'Pod',
    uid: `pod-${slot}`,
    namespace: s.namespace,
    name: `pod${slot}`,
    labels: s.labels,
    nodeName: nd.name,
    ips: s.state === 'noip' ? [] : s.state === 'host' ? [nd.ip] : [`${nd.prefix}${spreadOctet(s.ip - 10)}`],
    hostNetwork: s.state === 'host',
    phase: s.state === 'failed' ? 'Failed' : s.state === 'succeeded' ? 'Succeeded' : 'Running',
    ports: s.ports,
  };
}

/** Apply one change to the model (`reset` changes nothing: the caller handles it). */
export function applyModelOp(m: Model, o: ModelOp): void {
  switch (o.op) {
    case 'pod':
      m.upsert(podOf(o.slot, o.spec));
      break;
    case 'relabel': {
      const p = m.getPod(`pod-${o.slot}`);
      if (p) m.upsert({ ...p, labels: o.labels });
      break;
    }
    case 'delPod':
      m.remove(`pod-${o.slot}`, 'Pod');
      break;
    case 'policy':
      m.upsert(o.policy);
      break;
    case 'delPolicy':
      m.remove(`pol-${o.index}`, 'NetworkPolicy');
      break;
    case 'ns':
      m.upsert(ns(o.name, o.labels));
      break;
    case 'delNs':
      m.remove(`ns-${o.name}`, 'Namespace');
      break;
    case 'cnp':
      m.upsert(o.policy);
      break;
    case 'node':
      if (o.cidr) m.upsert(node('n3', o.cidr, '192.168.50.13'));
      else m.remove('node-n3', 'Node');
      break;
    case 'delCnp':
      m.remove(`cnp-${o.index}`, 'ClusterNetworkPolicy');
      break;
    case 'reset':
      break;
  }
}
