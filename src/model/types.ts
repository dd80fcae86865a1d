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

// ---- ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) ---------------------------------
//
// Cluster-scoped policies in two tiers around NetworkPolicies: Admin (before them) and Baseline
// (after them). Records hold the *effective* rules: a rule that fails closed is stored in the form
// it is enforced in (see `CnpRule.failClosed`), so the semantics and the compiler never decide
// what an unsupported or invalid construct means (docs/design.md, invariant fail-closed).

export type CnpTier = 'Admin' | 'Baseline';
export const CNP_TIERS: readonly CnpTier[] = ['Admin', 'Baseline'];

export type CnpAction = 'Accept' | 'Deny' | 'Pass';
export const CNP_ACTIONS: readonly CnpAction[] = ['Accept', 'Deny', 'Pass'];

/** A `networks` peer (egress only): any address inside one of the CIDRs, pod IPs included. */
export interface NetworksPeer {
  readonly kind: 'networks';
  /** IPv4 and IPv6 as written (IPv6 never matches IPv4 traffic). */
  readonly cidrs: readonly Cidr[];
}

/** Every address, pod or not: the peer of a rule that fails closed as "deny all". */
export interface AnyPeer {
  readonly kind: 'any';
}

/**
 * A CNP peer. `namespaces` and `pods` peers are `PodsPeer`s with a namespace selector
 * (`namespaces.kind` is always `selector`): `pods` absent for a `namespaces` peer (every pod of
 * the selected namespaces), present for a `pods` peer. As for NetworkPolicy, only enforceable
 * pods match (host-network pods never do).
 */
export type CnpPeer = PodsPeer | NetworksPeer | AnyPeer;

/**
 * One `protocols` entry. `port`: a TCP, UDP or SCTP destination port or inclusive range
 * (`endPort` absent for a single port). `namedPort`: `destinationNamedPort`, resolved on the
 * destination pod: every container port of that name, with its own protocol; it never matches
 * a destination that is not a pod.
 */
export type CnpProtocolMatch =
  | { readonly kind: 'port'; readonly protocol: Protocol; readonly port: number; readonly endPort?: number }
  | { readonly kind: 'namedPort'; readonly name: string };

export interface CnpRule {
  /** `name` as written; '' when absent. */
  readonly name: string;
  readonly action: CnpAction;
  /** A connection matches when any peer matches (an empty list matches nothing). */
  readonly peers: readonly CnpPeer[];
  /** Absent: every protocol and port. Otherwise any entry must match. */
  readonly protocols?: readonly CnpProtocolMatch[];
  /**
   * Set when the rule as written could not be enforced and this record holds its fail-closed
   * form instead, saying why: an Accept rule then has no peers (it matches nothing); a Deny or
   * Pass rule, or a rule of an invalid policy, becomes `Deny` to `[{kind: 'any'}]` with no
   * protocols (it denies everything).
   */
  readonly failClosed?: string;
}

export interface ClusterPolicyRecord {
  readonly kind: 'ClusterNetworkPolicy';
  readonly uid: string;
  /** metadata.name (cluster-scoped: no namespace). */
  readonly name: string;
  /** `Admin` also when the tier could not be read (the stricter reading, fail closed). */
  readonly tier: CnpTier;
  /** 0-1000, lower first; 0 when it could not be read. */
  readonly priority: number;
  /**
   * The pods the policy applies to (enforceable pods only, as a peer selects them). Every pod of
   * the cluster when the subject could not be read or names nothing this agent understands.
   */
  readonly subject: PodsPeer;
  /** Rules in written order; empty: the policy does not affect that direction. */
  readonly ingress: readonly CnpRule[];
  readonly egress: readonly CnpRule[];
  /**
   * Non-empty when the policy is invalid (the API server would refuse it). It is then enforced
   * fail-closed: each direction it has rules for holds one rule denying everything.
   */
  readonly issues: readonly ValidationIssue[];
  /**
   * Constructs that are valid but not supported (experimental `nodes` and `domainNames` peers, a
   * peer or subject with no field this agent knows): the rules that use them fail closed, the
   * rest of the policy is enforced as written.
   */
  readonly unsupported: readonly ValidationIssue[];
}

export type ObjectRecord = PodRecord | NamespaceRecord | NodeRecord | PolicyRecord | ClusterPolicyRecord;

/**
 * kubectl-style reference: `pod/ns/name`, `networkpolicy/ns/name`, `clusternetworkpolicy/name`,
 * `namespace/name`, `node/name`.
 */
export function refOf(r: ObjectRecord): string {
  switch (r.kind) {
    case 'Pod':
      return `pod/${r.namespace}/${r.name}`;
    case 'NetworkPolicy':
      return `networkpolicy/${r.namespace}/${r.name}`;
    case 'ClusterNetworkPolicy':
      return `clusternetworkpolicy/${r.name}`;
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
