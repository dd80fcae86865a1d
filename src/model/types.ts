// Normalized records of the cluster objects the enforcer cares about.
//
// Every record is plain data: sources (files, the kube API) build them through
// `normalize.ts`, the model store indexes them, and the semantics and compiler read them.
// Invariant: records are immutable once in the store; an update replaces the record.

export type Labels = Readonly<Record<string, string>>;

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export const PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP', 'SCTP'];

export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

/** One requirement of a label selector; matchLabels entries become `In` with one value. */
export interface Requirement {
  readonly key: string;
  readonly operator: SelectorOperator;
  readonly values: readonly string[];
  /** Where it came from, for explanations: `matchLabels` or `matchExpressions[i]`. */
  readonly origin: string;
}

/** A parsed label selector. An empty requirement list selects everything. */
export interface Selector {
  readonly requirements: readonly Requirement[];
}

export interface ContainerPort {
  readonly name?: string;
  readonly containerPort: number;
  readonly protocol: Protocol;
}

export interface PodRecord {
  readonly kind: 'Pod';
  /** metadata.uid, or `namespace/name` when the source has none. */
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  readonly labels: Labels;
  readonly nodeName?: string;
  /** IPv4 addresses from status.podIPs / status.podIP, in order. */
  readonly ips: readonly string[];
  readonly hostNetwork: boolean;
  readonly phase?: string;
  readonly ports: readonly ContainerPort[];
}

export interface NamespaceRecord {
  readonly kind: 'Namespace';
  readonly uid: string;
  readonly name: string;
  /** Includes `kubernetes.io/metadata.name`, which the API server always sets. */
  readonly labels: Labels;
  /** True when no Namespace object was seen and the record was made up for a pod's namespace. */
  readonly implicit?: boolean;
}

export interface NodeRecord {
  readonly kind: 'Node';
  readonly uid: string;
  readonly name: string;
  readonly podCIDRs: readonly string[];
  readonly internalIPs: readonly string[];
}

/** A normalized IPv4 or IPv6 CIDR: network address with host bits cleared. */
export interface Cidr {
  readonly family: 4 | 6;
  /** Canonical text, e.g. `10.0.0.0/8`. */
  readonly text: string;
  /** As written in the manifest, for explanations. */
  readonly written: string;
  readonly prefix: number;
  /** Network address as a bigint (IPv4 fits in 32 bits). */
  readonly network: bigint;
}

export interface IpBlockPeer {
  readonly kind: 'ipBlock';
  readonly cidr: Cidr;
  readonly except: readonly Cidr[];
}

/**
 * A peer that selects pods. `namespaces` is either the policy's own namespace (a podSelector
 * alone) or a namespace selector; `pods` absent means every pod of the selected namespaces.
 */
export interface PodsPeer {
  readonly kind: 'pods';
  readonly namespaces: { readonly kind: 'own'; readonly name: string } | { readonly kind: 'selector'; readonly selector: Selector };
  readonly pods?: Selector;
}

export type Peer = IpBlockPeer | PodsPeer;

/** A port entry after defaulting: protocol is always set. */
export interface PortSpec {
  readonly protocol: Protocol;
  /** Absent: every port of the protocol. */
  readonly port?: number | string;
  /** Only with a numeric port; inclusive. */
  readonly endPort?: number;
}

/**
 * One ingress or egress rule. `peers` undefined means "every peer" (field absent or empty list);
 * `ports` undefined means "every port and protocol".
 */
export interface PolicyRule {
  readonly peers?: readonly Peer[];
  readonly ports?: readonly PortSpec[];
}

export type PolicyType = 'Ingress' | 'Egress';

export interface ValidationIssue {
  /** Field path in API notation, e.g. `spec.ingress[0].ports[1].endPort`. */
  readonly field: string;
  /** The value received, as JSON text. */
  readonly value: string;
  readonly message: string;
}

export interface PolicyRecord {
  readonly kind: 'NetworkPolicy';
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  /**
   * The pods this policy applies to, inside `namespace`. Invariant (fail closed): for an
   * invalid policy whose podSelector could not be read this is the empty selector, so the
   * policy isolates every pod of its namespace.
   */
  readonly podSelector: Selector;
  readonly policyTypes: readonly PolicyType[];
  /** True when policyTypes was absent and filled in by the API server's defaulting rule. */
  readonly policyTypesDefaulted: boolean;
  /** Rules in force. Empty for an invalid policy: it isolates and allows nothing. */
  readonly ingress: readonly PolicyRule[];
  readonly egress: readonly PolicyRule[];
  /** Sections present in the manifest but without effect (e.g. `ingress` with policyTypes [Egress]). */
  readonly ignored: readonly string[];
  /** Non-empty when the policy is invalid: it then isolates its pods and allows nothing. */
  readonly issues: readonly ValidationIssue[];
}

export type ObjectRecord = PodRecord | NamespaceRecord | NodeRecord | PolicyRecord;

/** kubectl-style reference: `pod/ns/name`, `networkpolicy/ns/name`, `namespace/name`, `node/name`. */
export function refOf(r: ObjectRecord): string {
  switch (r.kind) {
    case 'Pod':
      return `pod/${r.namespace}/${r.name}`;
    case 'NetworkPolicy':
      return `networkpolicy/${r.namespace}/${r.name}`;
    case 'Namespace':
      return `namespace/${r.name}`;
    case 'Node':
      return `node/${r.name}`;
  }
}

/**
 * A pod takes part in enforcement, both as a target and as a set member, only when it has an
 * IP of its own and is running or about to: hostNetwork pods share the node's IP, and
 * Succeeded/Failed pods may have handed their IP to another pod.
 */
export function isEnforceable(p: PodRecord): boolean {
  return p.ips.length > 0 && !p.hostNetwork && p.phase !== 'Succeeded' && p.phase !== 'Failed';
}

/** JSON text of a record; CIDRs hold bigints, which JSON.stringify refuses on its own. */
export function recordJson(r: unknown): string {
  return JSON.stringify(r, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
}

/** Whether two records have the same content (a re-read file, a resync of the same object). */
export function sameRecord(a: ObjectRecord | undefined, b: ObjectRecord | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && recordJson(a) === recordJson(b));
}
