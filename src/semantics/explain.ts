// `policyctl explain` as data: everything about one pod's isolation, policy by policy: the
// ClusterNetworkPolicies whose subject selects it (Admin and Baseline tiers) and the
// NetworkPolicies of its namespace. Pure; the CLI only formats this report.

import { explainSelector, formatSelector, selectorMatches, type RequirementResult } from '../model/selector.ts';
import type { Model } from '../model/store.ts';
import type {
  ClusterPolicyRecord,
  CnpAction,
  CnpPeer,
  CnpProtocolMatch,
  CnpRule,
  CnpTier,
  Peer,
  PodRecord,
  PodsPeer,
  PolicyRecord,
  PolicyRule,
  PolicyType,
  PortSpec,
  ValidationIssue,
} from '../model/types.ts';
import { CNP_TIERS, isEnforceable } from '../model/types.ts';
import { allowed, clusterPolicyLabel, isolatingPolicies, notEnforceableReason, podKey, policyKey, subjectSelects, type Endpoint, type Verdict } from './evaluate.ts';

export interface PeerView {
  /**
   * `pods` selectors, `ipBlock`, or `all` when the rule has no from/to list; for
   * ClusterNetworkPolicies also `networks` (CIDRs) and `any` (every address: a rule that fails
   * closed as deny all).
   */
  readonly kind: 'pods' | 'ipBlock' | 'all' | 'networks' | 'any';
  readonly description: string;
  /** Current enforceable pods the peer selects (namespace/name), for pod peers and `all`. */
  readonly pods?: readonly string[];
  readonly cidr?: string;
  readonly except?: readonly string[];
  /** For `networks`: the CIDRs. */
  readonly cidrs?: readonly string[];
}

export interface PortView {
  readonly description: string;
  /** For named ports: where they resolve, as `ns/pod:port` (or the selected pod's port numbers). */
  readonly resolved?: readonly string[];
}

export interface RuleView {
  readonly index: number;
  readonly peers: readonly PeerView[];
  readonly ports: readonly PortView[] | 'all';
}

export interface PolicyView {
  readonly name: string;
  readonly selects: boolean;
  readonly podSelector: string;
  readonly requirements: readonly RequirementResult[];
  readonly policyTypes: readonly PolicyType[];
  readonly policyTypesDefaulted: boolean;
  readonly ignored: readonly string[];
  readonly issues: readonly ValidationIssue[];
  readonly ingress: readonly RuleView[];
  readonly egress: readonly RuleView[];
}

export interface ClusterRuleView {
  readonly index: number;
  /** The rule's name ('' when it has none). */
  readonly name: string;
  readonly action: CnpAction;
  /** Empty for an Accept rule that fails closed (it matches nothing). */
  readonly peers: readonly PeerView[];
  readonly ports: readonly PortView[] | 'all';
  /** Why the rule is enforced in its fail-closed form (see CnpRule.failClosed). */
  readonly failClosed?: string;
}

export interface ClusterPolicyView {
  /** The ClusterNetworkPolicy's name. */
  readonly name: string;
  readonly tier: CnpTier;
  readonly priority: number;
  readonly subject: string;
  readonly issues: readonly ValidationIssue[];
  readonly unsupported: readonly ValidationIssue[];
  readonly ingress: readonly ClusterRuleView[];
  readonly egress: readonly ClusterRuleView[];
}

export interface ExplainReport {
  readonly pod: {
    readonly ref: string;
    readonly namespace: string;
    readonly name: string;
    readonly labels: Readonly<Record<string, string>>;
    readonly ips: readonly string[];
    readonly node?: string;
    readonly enforced: boolean;
    readonly notEnforcedReason?: string;
    readonly namedPorts: readonly { name: string; port: number; protocol: string }[];
    readonly namespaceLabels: Readonly<Record<string, string>>;
    readonly namespaceImplicit: boolean;
  };
  readonly isolation: readonly { direction: PolicyType; isolated: boolean; by: readonly string[] }[];
  /** Every policy of the pod's namespace; `selects` tells whether it applies to the pod. */
  readonly policies: readonly PolicyView[];
  /**
   * The ClusterNetworkPolicies whose subject selects the pod, in evaluation order: Admin tier
   * (before NetworkPolicies) then Baseline tier (after them), each by priority then name.
   */
  readonly clusterPolicies: readonly ClusterPolicyView[];
  /** With --from / --to: the verdict for each port asked. */
  readonly flows?: readonly { from: string; to: string; port: number; protocol: string; verdict: Verdict }[];
}

export interface FlowQuery {
  readonly peer: Endpoint;
  /** `ingress`: peer -> pod (--from); `egress`: pod -> peer (--to). */
  readonly direction: 'ingress' | 'egress';
  readonly ports: readonly { port: number; protocol: 'TCP' | 'UDP' | 'SCTP' }[];
}

export function endpointName(e: Endpoint): string {
  return e.kind === 'pod' ? podKey(e.pod) : e.ip;
}

export function explainPod(model: Model, pod: PodRecord, query?: FlowQuery): ExplainReport {
  const nsRec = model.namespace(pod.namespace);
  const policies = model
    .policiesInNamespace(pod.namespace)
    .sort((a, b) => (a.name < b.name ? -1 : 1))
    .map((p) => policyView(model, p, pod));
  const report: ExplainReport = {
    pod: {
      ref: `pod/${podKey(pod)}`,
      namespace: pod.namespace,
      name: pod.name,
      labels: pod.labels,
      ips: pod.ips,
      ...(pod.nodeName ? { node: pod.nodeName } : {}),
      enforced: isEnforceable(pod),
      ...(isEnforceable(pod) ? {} : { notEnforcedReason: notEnforceableReason(pod) }),
      namedPorts: pod.ports.filter((p) => p.name).map((p) => ({ name: p.name!, port: p.containerPort, protocol: p.protocol })),
      namespaceLabels: nsRec.labels,
      namespaceImplicit: !!nsRec.implicit,
    },
    isolation: (['Ingress', 'Egress'] as const).map((d) => {
      const by = isEnforceable(pod) ? isolatingPolicies(model, pod, d).map(policyKey) : [];
      return { direction: d, isolated: by.length > 0, by };
    }),
    policies,
    clusterPolicies: CNP_TIERS.flatMap((t) => model.clusterPoliciesInTier(t).filter((c) => subjectSelects(model, c, pod)).map((c) => clusterPolicyView(model, c, pod))),
  };
  if (!query) return report;
  const self: Endpoint = { kind: 'pod', pod };
  const flows = query.ports.map((p) => {
    const [src, dst] = query.direction === 'ingress' ? [query.peer, self] : [self, query.peer];
    return { from: endpointName(src), to: endpointName(dst), port: p.port, protocol: p.protocol, verdict: allowed(model, { src, dst, port: p.port, protocol: p.protocol }) };
  });
  return { ...report, flows };
}

function policyView(model: Model, pol: PolicyRecord, pod: PodRecord): PolicyView {
  const rules = (list: readonly PolicyRule[], dir: PolicyType) => list.map((r, i) => ruleView(model, r, i, dir, pod));
  return {
    name: policyKey(pol),
    selects: selectorMatches(pol.podSelector, pod.labels),
    podSelector: formatSelector(pol.podSelector),
    requirements: explainSelector(pol.podSelector, pod.labels),
    policyTypes: pol.policyTypes,
    policyTypesDefaulted: pol.policyTypesDefaulted,
    ignored: pol.ignored,
    issues: pol.issues,
    ingress: rules(pol.ingress, 'Ingress'),
    egress: rules(pol.egress, 'Egress'),
  };
}

function ruleView(model: Model, rule: PolicyRule, index: number, dir: PolicyType, pod: PodRecord): RuleView {
  const peers: PeerView[] = rule.peers ? rule.peers.map((p) => peerView(model, p)) : [{ kind: 'all', description: dir === 'Ingress' ? 'every source' : 'every destination' }];
  const peerPods = (): PodRecord[] => {
    if (!rule.peers) return [...model.allPods()].filter(isEnforceable);
    return rule.peers.flatMap((p) => (p.kind === 'pods' ? model.enforceablePodsOf(p) : []));
  };
  const ports = rule.ports ? rule.ports.map((s) => portView(s, dir, pod, peerPods)) : ('all' as const);
  return { index, peers, ports };
}

function peerView(model: Model, p: Peer): PeerView {
  if (p.kind === 'ipBlock') {
    return {
      kind: 'ipBlock',
      description: `ipBlock ${p.cidr.text}${p.cidr.written !== p.cidr.text ? ` (written ${p.cidr.written})` : ''}${p.except.length ? ` except ${p.except.map((e) => e.text).join(', ')}` : ''}`,
      cidr: p.cidr.text,
      except: p.except.map((e) => e.text),
    };
  }
  const nsPart = p.namespaces.kind === 'own' ? `namespace ${p.namespaces.name}` : `namespaces matching ${formatSelector(p.namespaces.selector)}`;
  const podPart = p.pods ? `pods matching ${formatSelector(p.pods)}` : 'all pods';
  return { kind: 'pods', description: `${podPart} in ${nsPart}`, pods: model.enforceablePodsOf(p).map(podKey).sort() };
}

function portView(s: PortSpec, dir: PolicyType, pod: PodRecord, peerPods: () => PodRecord[]): PortView {
  if (s.port === undefined) return { description: `every ${s.protocol} port` };
  if (typeof s.port === 'number') return { description: s.endPort !== undefined ? `${s.port}-${s.endPort}/${s.protocol}` : `${s.port}/${s.protocol}` };
  const name = s.port;
  const on = (p: PodRecord) => p.ports.filter((cp) => cp.name === name && cp.protocol === s.protocol).map((cp) => cp.containerPort);
  if (dir === 'Ingress') {
    const nums = on(pod);
    return {
      description: `named port ${name}/${s.protocol}`,
      resolved: nums.length ? nums.map((n) => `${podKey(pod)}:${n}`) : [`${podKey(pod)} has no ${s.protocol} port named ${name}: matches nothing`],
    };
  }
  const resolved = peerPods()
    .flatMap((p) => on(p).map((n) => `${podKey(p)}:${n}`))
    .sort();
  return { description: `named port ${name}/${s.protocol} (resolved on each destination pod; never on an ipBlock)`, resolved };
}

function clusterPolicyView(model: Model, c: ClusterPolicyRecord, pod: PodRecord): ClusterPolicyView {
  const rules = (list: readonly CnpRule[], dir: PolicyType) => list.map((r, i) => clusterRuleView(model, r, i, dir, pod));
  return {
    name: c.name,
    tier: c.tier,
    priority: c.priority,
    subject: describePodsPeer(c.subject),
    issues: c.issues,
    unsupported: c.unsupported,
    ingress: rules(c.ingress, 'Ingress'),
    egress: rules(c.egress, 'Egress'),
  };
}

function describePodsPeer(p: PodsPeer): string {
  const nsPart = p.namespaces.kind === 'own' ? `namespace ${p.namespaces.name}` : `namespaces matching ${formatSelector(p.namespaces.selector)}`;
  return `${p.pods ? `pods matching ${formatSelector(p.pods)}` : 'all pods'} in ${nsPart}`;
}

function clusterRuleView(model: Model, rule: CnpRule, index: number, dir: PolicyType, pod: PodRecord): ClusterRuleView {
  const peers = rule.peers.map((p) => clusterPeerView(model, p));
  const peerPods = (): PodRecord[] => rule.peers.flatMap((p) => (p.kind === 'pods' ? model.enforceablePodsOf(p) : p.kind === 'any' ? [...model.allPods()].filter(isEnforceable) : []));
  const ports = rule.protocols ? rule.protocols.map((m) => clusterPortView(m, dir, pod, peerPods)) : ('all' as const);
  return { index, name: rule.name, action: rule.action, peers, ports, ...(rule.failClosed !== undefined && { failClosed: rule.failClosed }) };
}

function clusterPeerView(model: Model, p: CnpPeer): PeerView {
  switch (p.kind) {
    case 'any':
      return { kind: 'any', description: 'every address (fail closed)' };
    case 'networks':
      return { kind: 'networks', description: `networks ${p.cidrs.map((c) => c.text + (c.written !== c.text ? ` (written ${c.written})` : '')).join(', ')}`, cidrs: p.cidrs.map((c) => c.text) };
    case 'pods':
      return { kind: 'pods', description: describePodsPeer(p), pods: model.enforceablePodsOf(p).map(podKey).sort() };
  }
}

function clusterPortView(m: CnpProtocolMatch, dir: PolicyType, pod: PodRecord, peerPods: () => PodRecord[]): PortView {
  if (m.kind === 'port') return { description: m.endPort !== undefined ? `${m.port}-${m.endPort}/${m.protocol}` : `${m.port}/${m.protocol}` };
  const on = (p: PodRecord) => p.ports.filter((cp) => cp.name === m.name).map((cp) => `${cp.containerPort}/${cp.protocol}`);
  if (dir === 'Ingress') {
    const nums = on(pod);
    return {
      description: `destinationNamedPort ${m.name}`,
      resolved: nums.length ? nums.map((n) => `${podKey(pod)}:${n}`) : [`${podKey(pod)} has no port named ${m.name}: matches nothing`],
    };
  }
  const resolved = peerPods()
    .flatMap((p) => on(p).map((n) => `${podKey(p)}:${n}`))
    .sort();
  return { description: `destinationNamedPort ${m.name} (resolved on each destination pod)`, resolved };
}

/** `cnp/NAME` of a view, as the tier path prints it. */
export function clusterPolicyRef(v: Pick<ClusterPolicyView, 'name'>): string {
  return clusterPolicyLabel(v.name);
}
