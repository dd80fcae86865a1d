// A deterministic synthetic cluster for the benchmarks: model records built directly, in the
// shapes test/support/builders.ts builds (normalized records, no manifest parsing).
//
// Shape (all from one seeded PRNG, so a seed and the sizes name one cluster exactly):
// - `nodes` nodes (default max(100, pods/100)), each with a /24 podCIDR. Two chosen nodes hold
//   exactly `localPods` pods each (default 110 on node-000 and 250 on node-001); every other
//   pod lands on the remaining nodes. One hostNetwork node-exporter pod per node.
// - about pods/50 namespaces, labelled with team, env and kubernetes.io/metadata.name, plus
//   kube-system (CoreDNS), monitoring (Prometheus) and ingress-nginx.
// - deployments of 1..9 replicas; pod labels app, tier, team, version and pod-template-hash;
//   container ports by tier with named ports (http on 8080 or 80, metrics, grpc, postgres,
//   redis, dns/UDP). About 2% Succeeded job pods and 1% Pending pods without an IP.
// - `policies` NetworkPolicies: default deny ingress in every namespace, default deny egress
//   with a DNS allowance in some, then per-app policies of mixed shapes (matchLabels,
//   matchExpressions In/NotIn/Exists, namespaceSelector, namespace+pod AND peers, ipBlocks with
//   except, numeric ports, port ranges, named ports, UDP and SCTP).

import { parseCidr } from '../src/model/cidr.ts';
import { Model } from '../src/model/store.ts';
import type {
  ContainerPort,
  NamespaceRecord,
  NodeRecord,
  Peer,
  PodRecord,
  PolicyRecord,
  PolicyRule,
  PolicyType,
  PortSpec,
  Protocol,
  Requirement,
  Selector,
} from '../src/model/types.ts';

/** sfc32: small, fast, good enough statistically, and fully determined by the seed. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  constructor(seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    for (let i = 0; i < 15; i++) this.next();
  }
  /** Uniform in [0, 1). */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return (t >>> 0) / 4294967296;
  }
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
  /** k distinct items (fewer when xs is shorter). */
  sample<T>(xs: readonly T[], k: number): T[] {
    const copy = [...xs];
    const out: T[] = [];
    while (out.length < k && copy.length) out.push(copy.splice(Math.floor(this.next() * copy.length), 1)[0]!);
    return out;
  }
  shuffle<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [xs[i], xs[j]] = [xs[j]!, xs[i]!];
    }
    return xs;
  }
  /** Lower-case alphanumerics, as in pod-template-hash and pod name suffixes. */
  word(n: number): string {
    const abc = 'bcdfghjklmnpqrstvwxz2456789';
    let s = '';
    for (let i = 0; i < n; i++) s += abc[Math.floor(this.next() * abc.length)];
    return s;
  }
  uid(): string {
    const h = (n: number) => Array.from({ length: n }, () => Math.floor(this.next() * 16).toString(16)).join('');
    return `${h(8)}-${h(4)}-${h(4)}-${h(4)}-${h(12)}`;
  }
}

export interface ClusterSpec {
  readonly pods: number;
  readonly policies: number;
  readonly seed?: number;
  /** Default max(100, ceil(pods / 100)). */
  readonly nodes?: number;
  /** Nodes holding an exact number of pods: node name -> pod count. Default node-000: 110, node-001: 250. */
  readonly localPods?: Readonly<Record<string, number>>;
}

export interface Deployment {
  readonly namespace: string;
  readonly app: string;
  readonly tier: Tier;
  readonly hash: string;
  readonly ports: readonly ContainerPort[];
}

export interface SyntheticCluster {
  readonly spec: Required<ClusterSpec>;
  readonly model: Model;
  readonly nodes: readonly NodeRecord[];
  readonly namespaces: readonly NamespaceRecord[];
  readonly pods: readonly PodRecord[];
  readonly policies: readonly PolicyRecord[];
  readonly deployments: readonly Deployment[];
  /** Free pod addresses per node, for pods added later (events). */
  readonly nextIp: Map<string, number>;
  readonly rng: Rng;
}

type Tier = 'frontend' | 'backend' | 'db' | 'cache' | 'worker';
const TIERS: readonly Tier[] = ['frontend', 'backend', 'backend', 'db', 'cache', 'worker'];
const TEAMS = Array.from({ length: 20 }, (_, i) => `team${String(i).padStart(2, '0')}`);
const ENVS = ['prod', 'staging', 'dev'] as const;
const WORDS = ['api', 'web', 'auth', 'cart', 'search', 'billing', 'users', 'orders', 'media', 'mail', 'feed', 'chat', 'geo', 'stats', 'ads', 'pay'];
const APPS = ['gateway', 'frontend', 'backend', 'worker', 'cache', 'db', 'auth', 'indexer', 'notifier', 'scheduler', 'ingest', 'render', 'export', 'sync', 'router'];
export const NS_NAME = 'kubernetes.io/metadata.name';

function portsFor(tier: Tier, rng: Rng): ContainerPort[] {
  const http: ContainerPort = { name: 'http', containerPort: rng.chance(0.3) ? 80 : 8080, protocol: 'TCP' };
  const metrics = (p: number): ContainerPort => ({ name: 'metrics', containerPort: p, protocol: 'TCP' });
  switch (tier) {
    case 'frontend':
      return [http, metrics(9090)];
    case 'backend':
      return rng.chance(0.5) ? [http, { name: 'grpc', containerPort: 50051, protocol: 'TCP' }, metrics(9090)] : [http, metrics(9090)];
    case 'db':
      return [{ name: 'postgres', containerPort: 5432, protocol: 'TCP' }, metrics(9187)];
    case 'cache':
      return [{ name: 'redis', containerPort: 6379, protocol: 'TCP' }, metrics(9121)];
    case 'worker':
      return rng.chance(0.2) ? [metrics(9090), { name: 'diameter', containerPort: 3868, protocol: 'SCTP' }] : [metrics(9090)];
  }
}

const matchLabels = (l: Record<string, string>): Requirement[] =>
  Object.entries(l).map(([key, v]) => ({ key, operator: 'In' as const, values: [v], origin: 'matchLabels' }));
const expr = (key: string, operator: Requirement['operator'], values: string[] = [], i = 0): Requirement => ({ key, operator, values, origin: `matchExpressions[${i}]` });
const sel = (...reqs: Requirement[]): Selector => ({ requirements: reqs });
const own = (namespace: string, pods?: Selector): Peer => ({ kind: 'pods', namespaces: { kind: 'own', name: namespace }, ...(pods ? { pods } : {}) });
const nsPeer = (namespaces: Selector, pods?: Selector): Peer => ({ kind: 'pods', namespaces: { kind: 'selector', selector: namespaces }, ...(pods ? { pods } : {}) });
const block = (cidr: string, except: string[] = []): Peer => ({ kind: 'ipBlock', cidr: parseCidr(cidr), except: except.map((e) => parseCidr(e)) });
const tcp = (port?: number | string, endPort?: number): PortSpec => ({ protocol: 'TCP', ...(port !== undefined ? { port } : {}), ...(endPort !== undefined ? { endPort } : {}) });

export function policyRecord(rng: Rng, namespace: string, name: string, podSelector: Selector, types: PolicyType[], ingress: PolicyRule[], egress: PolicyRule[]): PolicyRecord {
  return {
    kind: 'NetworkPolicy',
    uid: rng.uid(),
    namespace,
    name,
    podSelector,
    policyTypes: types,
    policyTypesDefaulted: false,
    ingress: types.includes('Ingress') ? ingress : [],
    egress: types.includes('Egress') ? egress : [],
    ignored: [],
    issues: [],
  };
}

/** An app-level policy of one of several shapes, selecting deployment `d`. */
export function appPolicy(rng: Rng, d: Deployment, others: readonly Deployment[], namespaces: readonly NamespaceRecord[], serial: number): PolicyRecord {
  const name = `${d.app}-${['allow', 'ingress', 'access', 'rules'][serial % 4]}-${serial}`;
  const peerApp = others.length ? rng.pick(others) : d;
  const team = rng.pick(namespaces).labels.team ?? TEAMS[0]!;
  const hasGrpc = d.ports.some((p) => p.name === 'grpc');
  const shape = rng.int(0, 11);
  const selApp = sel(...matchLabels({ app: d.app }));
  const I: PolicyType[] = ['Ingress'];
  switch (shape) {
    case 0: // same-namespace app to app on the named http port
      return policyRecord(rng, d.namespace, name, selApp, I, [{ peers: [own(d.namespace, sel(...matchLabels({ app: peerApp.app })))], ports: [tcp('http')] }], []);
    case 1: // matchExpressions on both sides, numeric port
      return policyRecord(
        rng,
        d.namespace,
        name,
        sel(expr('tier', 'In', ['frontend', 'backend']), expr('app', 'In', [d.app, peerApp.app], 1)),
        I,
        [{ peers: [own(d.namespace, sel(expr('version', 'NotIn', ['v1']), expr('team', 'Exists', [], 1)))], ports: [tcp(8080), tcp(9090)] }],
        [],
      );
    case 2: // a team's namespaces, any pod
      return policyRecord(rng, d.namespace, name, selApp, I, [{ peers: [nsPeer(sel(...matchLabels({ team })))], ports: [tcp('http'), ...(hasGrpc ? [tcp('grpc')] : [])] }], []);
    case 3: // namespace AND pod: the ingress controller
      return policyRecord(
        rng,
        d.namespace,
        name,
        selApp,
        I,
        [{ peers: [nsPeer(sel(...matchLabels({ [NS_NAME]: 'ingress-nginx' })), sel(...matchLabels({ 'app.kubernetes.io/name': 'ingress-nginx' })))], ports: [tcp('http')] }],
        [],
      );
    case 4: // Prometheus scrapes the named metrics port
      return policyRecord(
        rng,
        d.namespace,
        name,
        sel(expr('app', 'Exists')),
        I,
        [{ peers: [nsPeer(sel(...matchLabels({ purpose: 'monitoring' })), sel(...matchLabels({ app: 'prometheus' })))], ports: [tcp('metrics')] }],
        [],
      );
    case 5: // ipBlock with except, numeric ports and a range
      return policyRecord(rng, d.namespace, name, selApp, I, [{ peers: [block('10.0.0.0/8', ['10.96.0.0/12', '10.244.0.0/16']), block('192.168.0.0/16')], ports: [tcp(443), tcp(8000, 8100)] }], []);
    case 6: // a port range from an env of namespaces, pods not in v1
      return policyRecord(
        rng,
        d.namespace,
        name,
        selApp,
        I,
        [{ peers: [nsPeer(sel(...matchLabels({ env: rng.pick(ENVS) })), sel(expr('version', 'NotIn', ['v1'])))], ports: [tcp(30000, 30100), { protocol: 'UDP', port: 5353 }] }],
        [],
      );
    case 7: // egress to another app's grpc port (named port resolved on the peer pods) and HTTPS out
      return policyRecord(
        rng,
        d.namespace,
        name,
        selApp,
        ['Egress'],
        [],
        [
          { peers: [own(d.namespace, sel(...matchLabels({ app: peerApp.app })))], ports: [tcp('grpc'), tcp('http')] },
          { peers: [block('0.0.0.0/0', ['10.0.0.0/8', '169.254.169.254/32'])], ports: [tcp(443)] },
        ],
      );
    case 8: // SCTP and UDP from a tier in the namespace
      return policyRecord(
        rng,
        d.namespace,
        name,
        selApp,
        I,
        [{ peers: [own(d.namespace, sel(...matchLabels({ tier: rng.pick(TIERS) })))], ports: [{ protocol: 'SCTP', port: 3868 }, { protocol: 'UDP', port: 8125 }, tcp('http')] }],
        [],
      );
    case 9: // two peers (OR): a team's namespaces (pods with a team label) or this namespace's frontends
      return policyRecord(
        rng,
        d.namespace,
        name,
        selApp,
        I,
        [{ peers: [nsPeer(sel(expr('team', 'In', [team, rng.pick(TEAMS)])), sel(expr('team', 'Exists'))), own(d.namespace, sel(...matchLabels({ tier: 'frontend' })))], ports: [tcp('http')] }],
        [],
      );
    case 10: // ingress and egress in one policy, no ports on ingress
      return policyRecord(
        rng,
        d.namespace,
        name,
        selApp,
        ['Ingress', 'Egress'],
        [{ peers: [own(d.namespace, sel(...matchLabels({ app: peerApp.app })))] }],
        [{ peers: [own(d.namespace, sel(...matchLabels({ app: peerApp.app })))], ports: [tcp('http'), tcp(5432), tcp(6379)] }],
      );
    default: // everything from the namespace on the app's ports
      return policyRecord(rng, d.namespace, name, sel(...matchLabels({ app: d.app, tier: d.tier })), I, [{ peers: [own(d.namespace)], ports: d.ports.map((p) => ({ protocol: p.protocol, port: p.name ?? p.containerPort })) }], []);
  }
}

const DNS_EGRESS: PolicyRule = {
  peers: [nsPeer(sel(...matchLabels({ [NS_NAME]: 'kube-system' })), sel(...matchLabels({ 'k8s-app': 'kube-dns' })))],
  ports: [{ protocol: 'UDP', port: 53 }, { protocol: 'TCP', port: 53 }],
};
const DNS_EGRESS_NAMED: PolicyRule = {
  peers: [nsPeer(sel(...matchLabels({ [NS_NAME]: 'kube-system' })), sel(...matchLabels({ 'k8s-app': 'kube-dns' })))],
  ports: [{ protocol: 'UDP', port: 'dns' }, { protocol: 'TCP', port: 'dns-tcp' }],
};

export function nodeIp(nodeIndex: number, host: number): string {
  return `10.${244 + (nodeIndex >> 8)}.${nodeIndex & 255}.${host}`;
}

export function generateCluster(spec: ClusterSpec): SyntheticCluster {
  const seed = spec.seed ?? 1;
  const nodeCount = spec.nodes ?? Math.max(100, Math.ceil(spec.pods / 100));
  const localPods = spec.localPods ?? { 'node-000': 110, 'node-001': 250 };
  const full: Required<ClusterSpec> = { pods: spec.pods, policies: spec.policies, seed, nodes: nodeCount, localPods };
  const rng = new Rng(seed);

  const nodes: NodeRecord[] = Array.from({ length: nodeCount }, (_, i) => ({
    kind: 'Node',
    uid: rng.uid(),
    name: `node-${String(i).padStart(3, '0')}`,
    podCIDRs: [`${nodeIp(i, 0)}/24`],
    // 192.168.0.1 upwards, skipping .0 and .255 of every /24 (a node address is a unicast host address).
    internalIPs: [`192.168.${Math.floor(i / 254)}.${(i % 254) + 1}`],
  }));
  const nodeIndex = new Map(nodes.map((n, i) => [n.name, i]));

  // Namespaces: system ones, then app namespaces.
  const appNsCount = Math.max(3, Math.round(spec.pods / 50));
  const namespaces: NamespaceRecord[] = [];
  const mkNs = (name: string, labels: Record<string, string>): NamespaceRecord => ({ kind: 'Namespace', uid: rng.uid(), name, labels: { [NS_NAME]: name, ...labels } });
  namespaces.push(mkNs('kube-system', {}), mkNs('monitoring', { purpose: 'monitoring' }), mkNs('ingress-nginx', { purpose: 'ingress' }));
  for (let i = 0; i < appNsCount; i++) {
    const team = TEAMS[i % TEAMS.length]!;
    const labels: Record<string, string> = { team, env: rng.pick(ENVS) };
    if (rng.chance(0.3)) labels['istio-injection'] = 'enabled';
    namespaces.push(mkNs(`${team}-${rng.pick(WORDS)}-${i}`, labels));
  }
  const appNamespaces = namespaces.slice(3);
  const nsByName = new Map(namespaces.map((n) => [n.name, n]));

  // Deployments: system ones, then apps until the pod budget (minus node-exporters) is spent.
  const deployments: { d: Deployment; replicas: number; labels: Record<string, string> }[] = [];
  const addDeployment = (namespace: string, app: string, tier: Tier, replicas: number, ports: ContainerPort[], extra: Record<string, string> = {}) => {
    const d: Deployment = { namespace, app, tier, hash: rng.word(10), ports };
    const team = nsByName.get(namespace)?.labels.team;
    deployments.push({ d, replicas, labels: { app, tier, ...(team ? { team } : {}), version: rng.pick(['v1', 'v2', 'v2', 'v3']), 'pod-template-hash': d.hash, ...extra } });
  };
  addDeployment('kube-system', 'coredns', 'backend', 2, [
    { name: 'dns', containerPort: 53, protocol: 'UDP' },
    { name: 'dns-tcp', containerPort: 53, protocol: 'TCP' },
    { name: 'metrics', containerPort: 9153, protocol: 'TCP' },
  ], { 'k8s-app': 'kube-dns' });
  addDeployment('monitoring', 'prometheus', 'backend', 2, [{ name: 'http', containerPort: 9090, protocol: 'TCP' }]);
  addDeployment('ingress-nginx', 'ingress-nginx', 'frontend', 3, [{ name: 'http', containerPort: 80, protocol: 'TCP' }, { name: 'https', containerPort: 443, protocol: 'TCP' }], { 'app.kubernetes.io/name': 'ingress-nginx' });
  let budget = spec.pods - nodeCount - deployments.reduce((n, x) => n + x.replicas, 0);
  let nsCursor = 0;
  while (budget > 0) {
    const ns = appNamespaces[nsCursor++ % appNamespaces.length]!;
    const used = new Set(deployments.filter((x) => x.d.namespace === ns.name).map((x) => x.d.app));
    const free = APPS.filter((a) => !used.has(a));
    const app = free.length ? rng.pick(free) : `${rng.pick(APPS)}-${rng.word(4)}`;
    const tier = rng.pick(TIERS);
    const replicas = Math.min(budget, rng.int(1, 9));
    addDeployment(ns.name, app, tier, replicas, portsFor(tier, rng));
    budget -= replicas;
  }

  // Pods of deployments, then node placement: the chosen nodes get exactly their count.
  interface Draft {
    d: Deployment;
    labels: Record<string, string>;
    state: 'running' | 'succeeded' | 'pending';
  }
  const drafts: Draft[] = [];
  for (const { d, replicas, labels } of deployments) {
    for (let r = 0; r < replicas; r++) drafts.push({ d, labels, state: rng.chance(0.02) ? 'succeeded' : rng.chance(0.01) ? 'pending' : 'running' });
  }
  rng.shuffle(drafts);
  const chosen = Object.entries(localPods);
  const placement: string[] = [];
  let cursor = 0;
  for (const [name, count] of chosen) {
    // One node-exporter (hostNetwork) is among the node's count.
    for (let i = 0; i < count - 1 && cursor < drafts.length; i++) placement[cursor++] = name;
  }
  const others = nodes.filter((n) => !(n.name in localPods));
  for (let i = 0; cursor < drafts.length; i++) placement[cursor++] = others[i % others.length]!.name;

  const nextIp = new Map<string, number>(nodes.map((n) => [n.name, 2]));
  const pods: PodRecord[] = [];
  for (let i = 0; i < drafts.length; i++) {
    const { d, labels, state } = drafts[i]!;
    const nodeName = placement[i]!;
    const ips: string[] = [];
    if (state !== 'pending') {
      const host = nextIp.get(nodeName)!;
      nextIp.set(nodeName, host + 1);
      ips.push(nodeIp(nodeIndex.get(nodeName)!, host));
    }
    pods.push({
      kind: 'Pod',
      uid: rng.uid(),
      namespace: d.namespace,
      name: `${d.app}-${d.hash}-${rng.word(5)}`,
      labels,
      nodeName,
      ips,
      hostNetwork: false,
      phase: state === 'succeeded' ? 'Succeeded' : state === 'pending' ? 'Pending' : 'Running',
      ports: d.ports,
    });
  }
  for (const n of nodes) {
    pods.push({
      kind: 'Pod',
      uid: rng.uid(),
      namespace: 'monitoring',
      name: `node-exporter-${rng.word(5)}`,
      labels: { app: 'node-exporter', 'controller-revision-hash': 'abc123', 'pod-template-generation': '1' },
      nodeName: n.name,
      ips: [n.internalIPs[0]!],
      hostNetwork: true,
      phase: 'Running',
      ports: [{ name: 'metrics', containerPort: 9100, protocol: 'TCP' }],
    });
  }

  // Policies: a default deny per namespace, then egress lockdown in some, then app policies.
  const policies: PolicyRecord[] = [];
  const byNs = new Map<string, Deployment[]>();
  for (const { d } of deployments) byNs.set(d.namespace, [...(byNs.get(d.namespace) ?? []), d]);
  for (const n of namespaces) {
    if (policies.length >= spec.policies) break;
    policies.push(policyRecord(rng, n.name, 'default-deny-ingress', sel(), ['Ingress'], [], []));
  }
  for (const n of appNamespaces) {
    if (policies.length + 2 > spec.policies) break;
    if (!rng.chance(0.4)) continue;
    policies.push(policyRecord(rng, n.name, 'default-deny-egress', sel(), ['Egress'], [], []));
    policies.push(policyRecord(rng, n.name, 'allow-dns', sel(), ['Egress'], [], [rng.chance(0.5) ? DNS_EGRESS : DNS_EGRESS_NAMED]));
  }
  let serial = 0;
  const appNsNames = new Set(appNamespaces.map((n) => n.name));
  const appDeployments = deployments.map((x) => x.d).filter((d) => appNsNames.has(d.namespace));
  const shuffled = rng.shuffle([...appDeployments]);
  while (policies.length < spec.policies) {
    const d = shuffled[serial % shuffled.length]!;
    policies.push(appPolicy(rng, d, (byNs.get(d.namespace) ?? []).filter((o) => o !== d), namespaces, serial++));
  }

  const model = new Model();
  for (const n of nodes) model.upsert(n);
  for (const n of namespaces) model.upsert(n);
  for (const p of pods) model.upsert(p);
  for (const p of policies) model.upsert(p);
  return { spec: full, model, nodes, namespaces, pods, policies, deployments: deployments.map((x) => x.d), nextIp, rng };
}

/** Counts of what a cluster holds, for the report. */
export function describeCluster(c: SyntheticCluster): Record<string, number> {
  return {
    nodes: c.nodes.length,
    namespaces: c.namespaces.length,
    pods: c.pods.length,
    policies: c.policies.length,
    deployments: c.deployments.length,
  };
}

export type { Protocol };
