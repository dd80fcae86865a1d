// `policyctl explain` as data: everything about one pod's isolation, policy by policy.
// Pure; the CLI only formats this report.

import { explainSelector, formatSelector, selectorMatches, type RequirementResult } from '../model/selector.ts';
import type { Model } from '../model/store.ts';
import type { Peer, PodRecord, PolicyRecord, PolicyRule, PolicyType, PortSpec, ValidationIssue } from '../model/types.ts';
import { isEnforceable } from '../model/types.ts';
import { allowed, isolatingPolicies, notEnforceableReason, podKey, policyKey, type Endpoint, type Verdict } from './evaluate.ts';

export interface PeerView {
  /** `pods` selectors, `ipBlock`, or `all` when the rule has no from/to list. */
  readonly kind: 'pods' | 'ipBlock' | 'all';
  readonly description: string;
  /** Current enforceable pods the peer selects (namespace/name), for pod peers and `all`. */
  readonly pods?: readonly string[];
  readonly cidr?: string;
  readonly except?: readonly string[];
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
