// The policy specification as code: is a flow allowed, and why.
//
// This is the reference statement of the meaning, written from the API references
// (networking.k8s.io/v1 NetworkPolicy, policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy)
// and kept independent of the compiler: the property tests check that the compiled rules,
// executed by a packet tracer, agree with this module on random clusters (docs/design.md,
// invariant two-statements).
//
// Fixed facts come first: a pod may always reach itself, a pod's own node may always reach it,
// and an address of a node's pod CIDR that is not a pod that node enforces gets nothing.
//
// Otherwise a flow is allowed when both sides allow it, each side decided on its own (egress at
// the source pod, ingress at the destination pod) by walking the tiers in order:
// 1. Admin: the Admin ClusterNetworkPolicies whose subject selects the pod and that have rules for
//    this direction, lowest priority first (then by name: the API leaves equal priorities
//    undefined; we warn where that matters); within one, rules in written order. The first rule
//    whose peers and protocols match decides: Accept and Deny are final, Pass skips the rest of
//    the Admin tier. No match: next tier.
// 2. NetworkPolicy: if a NetworkPolicy selects the pod for this direction, the NetworkPolicies
//    decide (allowed when some rule of one of them matches, else denied). Otherwise: next tier.
// 3. Baseline: the same walk over the Baseline ClusterNetworkPolicies; Accept and Deny are final,
//    Pass or no match goes on to the default.
// 4. Default: allowed.
// A ClusterNetworkPolicy never isolates a pod by selecting it, and an egress Accept at the
// source does not decide the ingress side at the destination.

import { bridgeAddress, cidrContainsIp, parseCidr } from '../model/cidr.ts';
import { explainSelector, formatSelector, selectorMatches } from '../model/selector.ts';
import type { Model } from '../model/store.ts';
import type {
  Cidr,
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
  Protocol,
} from '../model/types.ts';
import { isEnforceable } from '../model/types.ts';

export type Endpoint =
  | { readonly kind: 'pod'; readonly pod: PodRecord }
  | { readonly kind: 'ip'; readonly ip: string };

/**
 * `other`: an IP protocol without ports (ICMP, GRE, IPIP, ...). Only a rule without ports (a
 * NetworkPolicy rule) or without protocols (a ClusterNetworkPolicy rule) matches it, as only
 * such a rule compiles to a match without `-p` (rules.ts). `port` is then meaningless (0).
 */
export type FlowProtocol = Protocol | 'other';

export interface Flow {
  readonly src: Endpoint;
  readonly dst: Endpoint;
  readonly protocol: FlowProtocol;
  readonly port: number;
}

/** How a flow's port and protocol read in an explanation: `80/TCP`, or `a protocol without ports`. */
export function flowPortText(flow: Pick<Flow, 'port' | 'protocol'>): string {
  return flow.protocol === 'other' ? 'a protocol without ports' : `${flow.port}/${flow.protocol}`;
}

export interface PeerResult {
  /** Index in the rule's peer list; -1 for "every peer" (from/to absent or empty). */
  readonly index: number;
  readonly matched: boolean;
  readonly why: string;
  readonly isIpBlock: boolean;
}

export interface PortResult {
  /** Index in the rule's port list; -1 for "every port" (ports absent or empty). */
  readonly index: number;
  readonly matched: boolean;
  readonly why: string;
}

export interface RuleResult {
  readonly policy: string; // namespace/name
  readonly ruleIndex: number;
  readonly matched: boolean;
  readonly peers: readonly PeerResult[];
  readonly ports: readonly PortResult[];
  /** One line: why the rule matched or the first reason it did not. */
  readonly summary: string;
}

/** The tiers a direction is decided in, in order. `Default` is the API's "all allowed". */
export type TierName = 'Admin' | 'NetworkPolicy' | 'Baseline' | 'Default';

/** One ClusterNetworkPolicy rule evaluated against the flow. */
export interface ClusterRuleResult {
  /** The ClusterNetworkPolicy's name. */
  readonly policy: string;
  readonly tier: CnpTier;
  readonly priority: number;
  readonly ruleIndex: number;
  /** `name` of the rule as written ('' when it has none). */
  readonly ruleName: string;
  readonly action: CnpAction;
  readonly matched: boolean;
  readonly peers: readonly PeerResult[];
  readonly ports: readonly PortResult[];
  /** Why the rule is enforced in its fail-closed form, if it is (see CnpRule.failClosed). */
  readonly failClosed?: string;
  readonly summary: string;
}

/** What one tier did for a direction. */
export interface TierStep {
  readonly tier: TierName;
  /**
   * `Accept`, `Deny`, `Pass`: a ClusterNetworkPolicy rule matched. `no match`: policies of the
   * tier select the pod but none of their rules matches. `allowed` / `denied`: NetworkPolicies
   * isolate the pod and decided. `not selected`: nothing in the tier applies to the pod.
   * `default`: no tier decided; allowed.
   */
  readonly outcome: 'Accept' | 'Deny' | 'Pass' | 'no match' | 'allowed' | 'denied' | 'not selected' | 'default';
  /** The deciding policy: a ClusterNetworkPolicy name, or `namespace/name` of a NetworkPolicy. */
  readonly policy?: string;
  readonly priority?: number;
  readonly ruleIndex?: number;
  readonly ruleName?: string;
  /** Policies of the tier that apply to the pod in this direction, in evaluation order. */
  readonly policies: readonly string[];
  /** One line, e.g. `[Admin 10 cnp/tenant-wall rule "no-cross"] Pass`. */
  readonly text: string;
}

/** Which tier, policy and rule decided a direction. */
export interface Decision {
  readonly tier: TierName;
  readonly policy?: string;
  readonly priority?: number;
  readonly ruleIndex?: number;
  readonly ruleName?: string;
  /** For a ClusterNetworkPolicy rule: its action (`Accept` or `Deny`; a Pass never decides). */
  readonly action?: CnpAction;
}

export interface DirectionResult {
  readonly direction: PolicyType;
  /** The pod this direction is evaluated for (source for egress, destination for ingress). */
  readonly pod?: string;
  readonly enforced: boolean;
  /** NetworkPolicies that isolate the pod in this direction (whether or not their tier was reached). */
  readonly isolatedBy: readonly string[];
  readonly allowed: boolean;
  /** The NetworkPolicy rule that allowed the flow, when the NetworkPolicy tier decided it. */
  readonly allowedBy?: { readonly policy: string; readonly ruleIndex: number };
  /** NetworkPolicy rules evaluated (only when the NetworkPolicy tier was reached). */
  readonly rules: readonly RuleResult[];
  readonly summary: string;
  /** The tiers walked, in order; empty when the direction is not enforced. */
  readonly path: readonly TierStep[];
  /** The steps as one line ending in the verdict, e.g. `[Admin ...] Pass -> [NetworkPolicy] ... -> DENIED`. */
  readonly pathText: string;
  /** Absent when the direction is not enforced (the pod is not an enforceable pod). */
  readonly decidedBy?: Decision;
  /** ClusterNetworkPolicy rules evaluated, in evaluation order, up to the one that decided. */
  readonly clusterRules: readonly ClusterRuleResult[];
  /** Ambiguities the API leaves undefined (two policies of one tier and priority that both match). */
  readonly warnings: readonly string[];
}

export interface Verdict {
  readonly allowed: boolean;
  readonly summary: string;
  /** Set when a fixed fact decided the flow (self, node to local pod) before any policy. */
  readonly fact?: string;
  readonly egress: DirectionResult;
  readonly ingress: DirectionResult;
}

export function podKey(p: PodRecord): string {
  return `${p.namespace}/${p.name}`;
}

export function policyKey(p: PolicyRecord): string {
  return `${p.namespace}/${p.name}`;
}

/** `cnp/NAME`, as the tier path names a ClusterNetworkPolicy. */
export function clusterPolicyLabel(name: string): string {
  return `cnp/${name}`;
}

function endpointIp(e: Endpoint): string | undefined {
  return e.kind === 'ip' ? e.ip : e.pod.ips[0];
}

function describeEndpoint(e: Endpoint): string {
  return e.kind === 'ip' ? e.ip : `pod ${podKey(e.pod)}`;
}

/** Policies that isolate the pod in one direction, in name order. */
export function isolatingPolicies(model: Model, pod: PodRecord, direction: PolicyType): PolicyRecord[] {
  return model.policiesSelecting(pod).filter((p) => p.policyTypes.includes(direction));
}

export function allowed(model: Model, flow: Flow): Verdict {
  const { src, dst } = flow;
  const notEvaluated = (direction: PolicyType, why: string): DirectionResult => notEnforced(direction, undefined, why);
  if (src.kind === 'pod' && dst.kind === 'pod' && src.pod.uid === dst.pod.uid) {
    const fact = 'a pod can always reach itself';
    return { allowed: true, summary: fact, fact, egress: notEvaluated('Egress', fact), ingress: notEvaluated('Ingress', fact) };
  }
  const host = hostNodeOf(model, src);
  if (host && dst.kind === 'pod' && dst.pod.nodeName === host) {
    // The node's own traffic (kubelet probes, hostNetwork pods) leaves through OUTPUT, where
    // no policy applies.
    const fact = `traffic from the pod's own node ${host} is always allowed (kubelet probes, hostNetwork pods)`;
    return { allowed: true, summary: fact, fact, egress: notEvaluated('Egress', fact), ingress: notEvaluated('Ingress', fact) };
  }
  const unknown = unprogrammed(model, src) ?? unprogrammed(model, dst, host);
  if (unknown) {
    const denied = (direction: PolicyType): DirectionResult => ({ ...notEvaluated(direction, unknown), allowed: false });
    return { allowed: false, summary: `denied: ${unknown}`, fact: unknown, egress: denied('Egress'), ingress: denied('Ingress') };
  }
  const egress = evaluateDirection(model, flow, 'Egress');
  const ingress = evaluateDirection(model, flow, 'Ingress');
  const ok = egress.allowed && ingress.allowed;
  const summary = ok
    ? `allowed: ${egress.summary}; ${ingress.summary}`
    : `denied: ${!egress.allowed ? egress.summary : ingress.summary}`;
  return { allowed: ok, summary, egress, ingress };
}

/**
 * Why an endpoint's address gets no new connection at all, if it does not: it lies in a node's
 * pod CIDR but is not the address of a pod that node enforces (an IP not reported yet, a
 * finished pod, an address two pods claim, an interface attached by hand). Fail closed in time:
 * that node drops new connections from and to such an address on every path, except its own
 * traffic to it (`fromNode`).
 */
function unprogrammed(model: Model, e: Endpoint, fromNode?: string): string | undefined {
  const ip = e.kind === 'ip' ? e.ip : e.pod.hostNetwork ? undefined : e.pod.ips[0];
  if (ip === undefined) return undefined;
  const { cidrs, programmed, bridges } = podCidrFacts(model);
  // The bridge's address is the node's (a host endpoint), not an address a pod may get: the node
  // gates only FORWARDed traffic of its pod CIDRs, and a packet to its bridge is delivered to it
  // (INPUT, judged by the sender's egress only), one from it is its own (OUTPUT).
  if (bridges.has(ip)) return undefined;
  for (const { node, cidr } of cidrs) {
    if (!cidrContainsIp(cidr, ip)) continue;
    // The node's own traffic to its pods leaves through OUTPUT, which no policy polices.
    if (node === fromNode || programmed.get(ip) === node) return undefined;
    return `address ${ip} is in pod CIDR ${cidr.text} of node ${node} but is not a pod that node enforces (IP not reported yet, pod finished, or the address claimed by two pods): new connections from and to it are dropped`;
  }
  return undefined;
}

/** Whether an address lies in a node's pod CIDR without being a pod that node enforces. */
export function isUnprogrammedAddress(model: Model, ip: string): boolean {
  return unprogrammed(model, { kind: 'ip', ip }) !== undefined;
}

/** Every node's IPv4 pod CIDRs and the enforceable pods' addresses (-> node), per model generation. */
function podCidrFacts(model: Model): CidrFacts {
  const cached = cidrFacts.get(model);
  if (cached && cached.generation === model.generation) return cached;
  const cidrs: { node: string; cidr: Cidr }[] = [];
  const bridges = new Map<string, string>();
  for (const n of model.allNodes()) {
    for (const text of n.podCIDRs) {
      try {
        const cidr = parseCidr(text);
        if (cidr.family !== 4) continue;
        cidrs.push({ node: n.name, cidr });
        const bridge = bridgeAddress(cidr);
        if (bridge !== undefined) bridges.set(bridge, n.name);
      } catch {
        // unparsable: matches nothing (the model reports it)
      }
    }
  }
  const programmed = new Map<string, string>();
  if (cidrs.length > 0) for (const p of model.allPods()) if (isEnforceable(p) && p.nodeName !== undefined) for (const ip of p.ips) programmed.set(ip, p.nodeName);
  const facts = { generation: model.generation, cidrs, programmed, bridges };
  cidrFacts.set(model, facts);
  return facts;
}
interface CidrFacts {
  readonly generation: number;
  readonly cidrs: readonly { node: string; cidr: Cidr }[];
  /** Enforceable pods' addresses -> their node. */
  readonly programmed: ReadonlyMap<string, string>;
  /** Each node's bridge address (src/model/cidr.ts bridgeAddress) -> the node. */
  readonly bridges: ReadonlyMap<string, string>;
}
const cidrFacts = new WeakMap<Model, CidrFacts>();

/** The node an endpoint is the host of: a node's InternalIP or bridge address, or a hostNetwork pod. */
function hostNodeOf(model: Model, e: Endpoint): string | undefined {
  if (e.kind === 'pod') return e.pod.hostNetwork ? e.pod.nodeName : undefined;
  for (const n of model.allNodes()) if (n.internalIPs.includes(e.ip)) return n.name;
  return podCidrFacts(model).bridges.get(e.ip);
}

/** A direction no policy applies to (not a pod, not an enforceable pod, or a fixed fact). */
function notEnforced(direction: PolicyType, pod: string | undefined, why: string): DirectionResult {
  return { direction, ...(pod !== undefined && { pod }), enforced: false, isolatedBy: [], allowed: true, rules: [], summary: why, path: [], pathText: why, clusterRules: [], warnings: [] };
}

function evaluateDirection(model: Model, flow: Flow, direction: PolicyType): DirectionResult {
  const self = direction === 'Egress' ? flow.src : flow.dst;
  const side = direction === 'Egress' ? 'source' : 'destination';
  if (self.kind !== 'pod') return notEnforced(direction, undefined, `${direction.toLowerCase()} not enforced: the ${side} is not a pod`);
  const pod = self.pod;
  if (!isEnforceable(pod)) return notEnforced(direction, podKey(pod), `${direction.toLowerCase()} not enforced: ${podKey(pod)} ${notEnforceableReason(pod)}`);

  const path: TierStep[] = [];
  const clusterRules: ClusterRuleResult[] = [];
  const warnings: string[] = [];
  const isolatedBy = isolatingPolicies(model, pod, direction);
  const finish = (allowed: boolean, decidedBy: Decision, np?: NetworkPolicyTier): DirectionResult => {
    // Tiers of ClusterNetworkPolicies that select nothing are left out of the line.
    const shown = path.filter((s) => s.tier === 'NetworkPolicy' || s.tier === 'Default' || s.outcome !== 'not selected');
    const pathText = `${shown.map((s) => s.text).join(' -> ')} -> ${allowed ? 'ALLOWED' : 'DENIED'}`;
    const onlyNetworkPolicies = shown.every((s) => s.tier === 'NetworkPolicy' || s.tier === 'Default');
    const npDecided = decidedBy.tier === 'NetworkPolicy' && np && onlyNetworkPolicies;
    return {
      direction,
      pod: podKey(pod),
      enforced: true,
      isolatedBy: isolatedBy.map(policyKey),
      allowed,
      ...(decidedBy.tier === 'NetworkPolicy' && np?.allowedBy ? { allowedBy: np.allowedBy } : {}),
      rules: np?.rules ?? [],
      // Where only NetworkPolicies (or nothing) decided, the summary reads as it always has.
      summary: npDecided ? np.summary : decidedBy.tier === 'Default' && onlyNetworkPolicies ? `${podKey(pod)} is not isolated for ${direction.toLowerCase()}` : pathText,
      path,
      pathText,
      decidedBy,
      clusterRules,
      warnings,
    };
  };

  // 1. Admin tier.
  const admin = walkClusterTier(model, 'Admin', pod, flow, direction);
  path.push(admin.step);
  clusterRules.push(...admin.results);
  warnings.push(...admin.warnings);
  if (admin.decision) return finish(admin.decision.action === 'Accept', admin.decision);

  // 2. NetworkPolicy tier: decides whenever a NetworkPolicy isolates the pod in this direction.
  if (isolatedBy.length > 0) {
    const np = evaluateNetworkPolicies(model, flow, direction, pod, isolatedBy);
    const policies = isolatedBy.map(policyKey);
    path.push({
      tier: 'NetworkPolicy',
      outcome: np.allowedBy ? 'allowed' : 'denied',
      ...(np.allowedBy ? { policy: np.allowedBy.policy, ruleIndex: np.allowedBy.ruleIndex } : {}),
      policies,
      text: np.allowedBy
        ? `[NetworkPolicy] allowed by ${np.allowedBy.policy} ${direction.toLowerCase()} rule ${np.allowedBy.ruleIndex}`
        : `[NetworkPolicy] isolated by ${policies.join(', ')}, no rule matches`,
    });
    return finish(!!np.allowedBy, { tier: 'NetworkPolicy', ...(np.allowedBy ? { policy: np.allowedBy.policy, ruleIndex: np.allowedBy.ruleIndex } : {}) }, np);
  }
  path.push({ tier: 'NetworkPolicy', outcome: 'not selected', policies: [], text: `[NetworkPolicy] not isolated for ${direction.toLowerCase()}` });

  // 3. Baseline tier.
  const baseline = walkClusterTier(model, 'Baseline', pod, flow, direction);
  path.push(baseline.step);
  clusterRules.push(...baseline.results);
  warnings.push(...baseline.warnings);
  if (baseline.decision) return finish(baseline.decision.action === 'Accept', baseline.decision);

  // 4. Default.
  path.push({ tier: 'Default', outcome: 'default', policies: [], text: '[default] allowed' });
  return finish(true, { tier: 'Default' });
}

interface NetworkPolicyTier {
  readonly allowedBy?: { readonly policy: string; readonly ruleIndex: number };
  readonly rules: readonly RuleResult[];
  readonly summary: string;
}

/** The NetworkPolicy tier for a pod isolated by `policies` in this direction. */
function evaluateNetworkPolicies(model: Model, flow: Flow, direction: PolicyType, pod: PodRecord, policies: readonly PolicyRecord[]): NetworkPolicyTier {
  const peer = direction === 'Egress' ? flow.dst : flow.src;
  const rules: RuleResult[] = [];
  let allowedBy: DirectionResult['allowedBy'];
  for (const pol of policies) {
    const list = direction === 'Ingress' ? pol.ingress : pol.egress;
    list.forEach((rule, i) => {
      const r = evaluateRule(model, pol, i, rule, direction, peer, flow, pod);
      rules.push(r);
      if (r.matched && !allowedBy) allowedBy = { policy: policyKey(pol), ruleIndex: i };
    });
  }
  const isolatedBy = policies.map(policyKey);
  const dirLower = direction.toLowerCase();
  const summary = allowedBy
    ? `${dirLower} of ${podKey(pod)} allowed by ${allowedBy.policy} ${dirLower} rule ${allowedBy.ruleIndex} (${rules.find((r) => r.matched)!.summary})`
    : `${podKey(pod)} is isolated for ${dirLower} by ${isolatedBy.join(', ')} and no ${dirLower} rule matches ${describeEndpoint(peer)} on ${flowPortText(flow)}` +
      (rules.length ? ` (${rules.map((r) => r.summary).join(' | ')})` : ` (the isolating policies have no ${dirLower} rules)`);
  return { ...(allowedBy ? { allowedBy } : {}), rules, summary };
}

// ---- ClusterNetworkPolicy tiers ------------------------------------------------------------

interface TierWalk {
  readonly step: TierStep;
  readonly results: readonly ClusterRuleResult[];
  readonly warnings: readonly string[];
  /** Set when an Accept or Deny rule decided; a Pass or no match leaves it unset. */
  readonly decision?: Decision;
}

/** `rule "name"` for a named rule, `rule N` otherwise. */
export function clusterRuleLabel(index: number, name: string): string {
  return name === '' ? `rule ${index}` : `rule ${JSON.stringify(name)}`;
}

/** Whether a ClusterNetworkPolicy's subject selects this pod (an enforceable pod, as peers select). */
export function subjectSelects(model: Model, cnp: ClusterPolicyRecord, pod: PodRecord): boolean {
  return isEnforceable(pod) && podsPeerSelects(model, cnp.subject, pod);
}

function podsPeerSelects(model: Model, peer: PodsPeer, pod: PodRecord): boolean {
  const nsOk = peer.namespaces.kind === 'own' ? peer.namespaces.name === pod.namespace : selectorMatches(peer.namespaces.selector, model.namespace(pod.namespace).labels);
  return nsOk && (!peer.pods || selectorMatches(peer.pods, pod.labels));
}

/**
 * The ClusterNetworkPolicies of a tier that apply to the pod in one direction (subject selects
 * it, rules for that direction), in evaluation order; cached per model generation.
 */
export function clusterPoliciesFor(model: Model, pod: PodRecord, tier: CnpTier, direction: PolicyType): readonly ClusterPolicyRecord[] {
  let cache = selectionCache.get(model);
  if (!cache || cache.generation !== model.generation) selectionCache.set(model, (cache = { generation: model.generation, byKey: new Map() }));
  const key = `${pod.uid}\u0000${tier}\u0000${direction}`;
  let out = cache.byKey.get(key);
  if (!out) {
    out = model.clusterPoliciesInTier(tier).filter((c) => (direction === 'Ingress' ? c.ingress : c.egress).length > 0 && subjectSelects(model, c, pod));
    cache.byKey.set(key, out);
  }
  return out;
}
const selectionCache = new WeakMap<Model, { generation: number; byKey: Map<string, readonly ClusterPolicyRecord[]> }>();

function walkClusterTier(model: Model, tier: CnpTier, pod: PodRecord, flow: Flow, direction: PolicyType): TierWalk {
  const applicable = clusterPoliciesFor(model, pod, tier, direction);
  const names = applicable.map((c) => clusterPolicyLabel(c.name));
  const dirLower = direction.toLowerCase();
  if (applicable.length === 0) {
    return { step: { tier, outcome: 'not selected', policies: [], text: `[${tier}] no ClusterNetworkPolicy selects ${podKey(pod)} for ${dirLower}` }, results: [], warnings: [] };
  }
  const results: ClusterRuleResult[] = [];
  for (const cnp of applicable) {
    const rules = direction === 'Ingress' ? cnp.ingress : cnp.egress;
    for (const [i, rule] of rules.entries()) {
      const r = evaluateClusterRule(model, cnp, i, rule, direction, flow, pod);
      results.push(r);
      if (!r.matched) continue;
      const step: TierStep = {
        tier,
        outcome: rule.action,
        policy: cnp.name,
        priority: cnp.priority,
        ruleIndex: i,
        ruleName: rule.name,
        policies: names,
        text: `[${tier} ${cnp.priority} ${clusterPolicyLabel(cnp.name)} ${clusterRuleLabel(i, rule.name)}] ${rule.action}`,
      };
      const warnings = tieWarnings(model, applicable, cnp, flow, direction, pod);
      if (rule.action === 'Pass') return { step, results, warnings };
      return { step, results, warnings, decision: { tier, policy: cnp.name, priority: cnp.priority, ruleIndex: i, ruleName: rule.name, action: rule.action } };
    }
  }
  return { step: { tier, outcome: 'no match', policies: names, text: `[${tier}] ${names.join(', ')} select${names.length === 1 ? 's' : ''} the pod, no rule matches` }, results, warnings: [] };
}

/**
 * The API leaves undefined which of two policies of one tier and priority applies when both
 * match a connection; we apply them in name order and say so when it matters for this flow.
 */
function tieWarnings(model: Model, applicable: readonly ClusterPolicyRecord[], decider: ClusterPolicyRecord, flow: Flow, direction: PolicyType, pod: PodRecord): string[] {
  const out: string[] = [];
  for (const other of applicable) {
    if (other === decider || other.priority !== decider.priority) continue;
    const rules = direction === 'Ingress' ? other.ingress : other.egress;
    const hit = rules.findIndex((rule, i) => evaluateClusterRule(model, other, i, rule, direction, flow, pod).matched);
    if (hit < 0) continue;
    const [first, second] = other.name < decider.name ? [other, decider] : [decider, other];
    out.push(
      `${clusterPolicyLabel(first.name)} and ${clusterPolicyLabel(second.name)} are both ${decider.tier} priority ${decider.priority} and both match this ${direction.toLowerCase()} flow; ` +
        `the API leaves their order undefined: policyctl applies them in name order (${clusterPolicyLabel(first.name)} first)`,
    );
  }
  return out;
}

function evaluateClusterRule(model: Model, cnp: ClusterPolicyRecord, index: number, rule: CnpRule, direction: PolicyType, flow: Flow, selected: PodRecord): ClusterRuleResult {
  const peerEp = direction === 'Egress' ? flow.dst : flow.src;
  const peers: PeerResult[] = rule.peers.length
    ? rule.peers.map((p, i) => matchClusterPeer(model, p, i, peerEp))
    : [{ index: -1, matched: false, isIpBlock: false, why: 'no peer: the rule matches nothing' }];
  // destinationNamedPort resolves on the destination pod: the selected pod for ingress, the peer for egress.
  const dstPod = direction === 'Ingress' ? selected : peerEp.kind === 'pod' ? peerEp.pod : undefined;
  const ports: PortResult[] = rule.protocols
    ? rule.protocols.map((m, i) => matchClusterProtocol(m, i, flow, dstPod))
    : [{ index: -1, matched: true, why: 'every protocol and port (no protocols list)' }];
  const peerOk = peers.some((p) => p.matched);
  const portOk = ports.some((p) => p.matched);
  const where = `${clusterPolicyLabel(cnp.name)} ${direction.toLowerCase()} ${clusterRuleLabel(index, rule.name)} (${rule.action})`;
  const closed = rule.failClosed ? ` [fails closed: ${rule.failClosed}]` : '';
  const summary =
    peerOk && portOk
      ? `${where} matches: ${peers.find((p) => p.matched)!.why}; ${ports.find((p) => p.matched)!.why}${closed}`
      : `${where} does not match: ${(peerOk ? ports : peers).map((p) => p.why).join('; ')}${closed}`;
  return {
    policy: cnp.name,
    tier: cnp.tier,
    priority: cnp.priority,
    ruleIndex: index,
    ruleName: rule.name,
    action: rule.action,
    matched: peerOk && portOk,
    peers,
    ports,
    ...(rule.failClosed !== undefined && { failClosed: rule.failClosed }),
    summary,
  };
}

function matchClusterPeer(model: Model, peer: CnpPeer, index: number, ep: Endpoint): PeerResult {
  const label = `peer ${index}`;
  switch (peer.kind) {
    case 'any':
      return { index, matched: true, isIpBlock: false, why: `${label} every address (fail-closed deny all) includes ${describeEndpoint(ep)}` };
    case 'networks': {
      const ip = endpointIp(ep);
      const list = peer.cidrs.map((c) => c.text).join(',');
      if (!ip) return { index, matched: false, isIpBlock: true, why: `${label} networks ${list}: ${describeEndpoint(ep)} has no IP` };
      // Any address, pod IPs included (the API says so: a network peer also matches pod traffic).
      const hit = peer.cidrs.find((c) => cidrContainsIp(c, ip));
      return hit
        ? { index, matched: true, isIpBlock: true, why: `${label} networks ${list}: ${hit.text} contains ${ip}` }
        : { index, matched: false, isIpBlock: true, why: `${label} networks ${list}: ${ip} is in none of them` };
    }
    case 'pods':
      return matchPeer(model, peer, index, ep);
  }
}

function matchClusterProtocol(m: CnpProtocolMatch, index: number, flow: Flow, dstPod: PodRecord | undefined): PortResult {
  const label = `protocols[${index}]`;
  if (m.kind === 'port') {
    const shown = `${m.port}${m.endPort !== undefined ? `-${m.endPort}` : ''}/${m.protocol}`;
    if (m.protocol !== flow.protocol) return { index, matched: false, why: `${label} ${shown}: protocol ${flow.protocol} is not ${m.protocol}` };
    const ok = flow.port >= m.port && flow.port <= (m.endPort ?? m.port);
    return { index, matched: ok, why: `${label} ${shown} ${ok ? 'includes' : 'does not include'} ${flow.port}` };
  }
  if (!dstPod || !isEnforceable(dstPod)) {
    return { index, matched: false, why: `${label} destinationNamedPort ${m.name}: the destination is not a pod, so a named port cannot resolve` };
  }
  const resolved = dstPod.ports.filter((p) => p.name === m.name);
  if (resolved.length === 0) return { index, matched: false, why: `${label} destinationNamedPort ${m.name}: ${podKey(dstPod)} has no port named ${m.name}` };
  const ok = resolved.some((p) => p.containerPort === flow.port && p.protocol === flow.protocol);
  const shown = resolved.map((p) => `${p.containerPort}/${p.protocol}`).join(',');
  return { index, matched: ok, why: `${label} destinationNamedPort ${m.name} resolves to ${shown} on ${podKey(dstPod)}${ok ? '' : `, not ${flowPortText(flow)}`}` };
}

export function notEnforceableReason(p: PodRecord): string {
  if (p.hostNetwork) return 'uses the host network';
  if (p.ips.length === 0) return 'has no pod IP';
  return `is in phase ${p.phase}`;
}

function evaluateRule(
  model: Model,
  pol: PolicyRecord,
  index: number,
  rule: PolicyRule,
  direction: PolicyType,
  peer: Endpoint,
  flow: Flow,
  selected: PodRecord,
): RuleResult {
  const peers: PeerResult[] = rule.peers
    ? rule.peers.map((p, i) => matchPeer(model, p, i, peer))
    : [{ index: -1, matched: true, why: 'every peer (no from/to list)', isIpBlock: false }];
  // Named ports resolve on the destination pod: the selected pod for ingress, the peer for egress.
  const dstPod = direction === 'Ingress' ? selected : peer.kind === 'pod' ? peer.pod : undefined;
  const matchedPeers = peers.filter((p) => p.matched);
  const viaSelector = matchedPeers.some((p) => !p.isIpBlock);
  const viaIpBlock = matchedPeers.some((p) => p.isIpBlock);
  const ports: PortResult[] = rule.ports
    ? rule.ports.map((p, i) => matchPort(p, i, flow, dstPod, direction, viaSelector, viaIpBlock))
    : [{ index: -1, matched: true, why: 'every port (no ports list)' }];
  const peerOk = matchedPeers.length > 0;
  const portOk = ports.some((p) => p.matched);
  const where = `${policyKey(pol)} ${direction.toLowerCase()} rule ${index}`;
  let summary: string;
  if (peerOk && portOk) {
    const pr = matchedPeers[0]!;
    const po = ports.find((p) => p.matched)!;
    summary = `${where} matches: ${pr.why}; ${po.why}`;
  } else if (!peerOk) {
    summary = `${where} does not match: ${peers.map((p) => p.why).join('; ')}`;
  } else {
    summary = `${where} does not match: ${ports.map((p) => p.why).join('; ')}`;
  }
  return { policy: policyKey(pol), ruleIndex: index, matched: peerOk && portOk, peers, ports, summary };
}

function matchPeer(model: Model, peer: Peer, index: number, ep: Endpoint): PeerResult {
  const label = `peer ${index}`;
  if (peer.kind === 'ipBlock') {
    const ip = endpointIp(ep);
    const block = peer.cidr.text + (peer.except.length ? ` except ${peer.except.map((e) => e.text).join(',')}` : '');
    if (!ip) return { index, matched: false, isIpBlock: true, why: `${label} ipBlock ${block}: ${describeEndpoint(ep)} has no IP` };
    if (peer.cidr.family !== 4) return { index, matched: false, isIpBlock: true, why: `${label} ipBlock ${block} is IPv6; ${ip} is IPv4` };
    if (!cidrContainsIp(peer.cidr, ip)) return { index, matched: false, isIpBlock: true, why: `${label} ipBlock ${block}: ${ip} is outside ${peer.cidr.text}` };
    const hole = peer.except.find((e) => cidrContainsIp(e, ip));
    if (hole) return { index, matched: false, isIpBlock: true, why: `${label} ipBlock ${block}: ${ip} is in except ${hole.text}` };
    return { index, matched: true, isIpBlock: true, why: `${label} ipBlock ${block} contains ${ip}` };
  }
  if (ep.kind !== 'pod') {
    return { index, matched: false, isIpBlock: false, why: `${label} selects pods; ${ep.ip} is not a pod` };
  }
  const pod = ep.pod;
  if (!isEnforceable(pod)) {
    return { index, matched: false, isIpBlock: false, why: `${label} selects pods; ${podKey(pod)} ${notEnforceableReason(pod)}, so no selector matches it` };
  }
  if (peer.namespaces.kind === 'own') {
    if (pod.namespace !== peer.namespaces.name) {
      return { index, matched: false, isIpBlock: false, why: `${label} podSelector applies only in namespace ${peer.namespaces.name}; pod is in ${pod.namespace}` };
    }
  } else {
    const ns = model.namespace(pod.namespace);
    if (!selectorMatches(peer.namespaces.selector, ns.labels)) {
      const failed = explainSelector(peer.namespaces.selector, ns.labels).filter((r) => !r.matched);
      return {
        index,
        matched: false,
        isIpBlock: false,
        why: `${label} namespaceSelector ${formatSelector(peer.namespaces.selector)} does not match namespace ${pod.namespace} (${failed.map((f) => `wants ${f.requirement}, has ${f.actual}`).join('; ')})`,
      };
    }
  }
  if (peer.pods && !selectorMatches(peer.pods, pod.labels)) {
    const failed = explainSelector(peer.pods, pod.labels).filter((r) => !r.matched);
    return {
      index,
      matched: false,
      isIpBlock: false,
      why: `${label} podSelector ${formatSelector(peer.pods)} does not match ${podKey(pod)} (${failed.map((f) => `wants ${f.requirement}, has ${f.actual}`).join('; ')})`,
    };
  }
  const nsPart = peer.namespaces.kind === 'own' ? `namespace ${peer.namespaces.name}` : `namespaceSelector ${formatSelector(peer.namespaces.selector)}`;
  const podPart = peer.pods ? `podSelector ${formatSelector(peer.pods)}` : 'all pods';
  return { index, matched: true, isIpBlock: false, why: `${label} (${nsPart}, ${podPart}) selects ${podKey(pod)}` };
}

function matchPort(
  spec: PortSpec,
  index: number,
  flow: Flow,
  dstPod: PodRecord | undefined,
  direction: PolicyType,
  viaSelector: boolean,
  viaIpBlock: boolean,
): PortResult {
  const label = `port ${index}`;
  const shown = `${spec.port ?? '*'}${spec.endPort !== undefined ? `-${spec.endPort}` : ''}/${spec.protocol}`;
  if (spec.protocol !== flow.protocol) {
    return { index, matched: false, why: `${label} ${shown}: protocol ${flow.protocol} is not ${spec.protocol}` };
  }
  if (spec.port === undefined) return { index, matched: true, why: `${label} ${shown} allows every ${spec.protocol} port` };
  if (typeof spec.port === 'number') {
    const hi = spec.endPort ?? spec.port;
    const ok = flow.port >= spec.port && flow.port <= hi;
    return { index, matched: ok, why: `${label} ${shown} ${ok ? 'includes' : 'does not include'} ${flow.port}` };
  }
  // Named port: resolved on the destination pod, protocol included.
  if (!dstPod || !isEnforceable(dstPod)) {
    return { index, matched: false, why: `${label} named port ${spec.port}/${spec.protocol}: the destination is not a pod, so a named port cannot resolve` };
  }
  if (direction === 'Egress' && !viaSelector && viaIpBlock) {
    return { index, matched: false, why: `${label} named port ${spec.port}/${spec.protocol} never matches a destination matched only by an ipBlock` };
  }
  const resolved = dstPod.ports.filter((p) => p.name === spec.port && p.protocol === spec.protocol).map((p) => p.containerPort);
  if (resolved.length === 0) {
    return { index, matched: false, why: `${label} named port ${spec.port}/${spec.protocol}: ${podKey(dstPod)} has no ${spec.protocol} port named ${spec.port}` };
  }
  const ok = resolved.includes(flow.port);
  return {
    index,
    matched: ok,
    why: `${label} named port ${spec.port}/${spec.protocol} resolves to ${resolved.join(',')} on ${podKey(dstPod)}${ok ? '' : `, not ${flow.port}`}`,
  };
}

/** Convenience for tables: a pod-to-pod flow. */
export function podFlow(src: PodRecord, dst: PodRecord, port: number, protocol: Protocol = 'TCP'): Flow {
  return { src: { kind: 'pod', pod: src }, dst: { kind: 'pod', pod: dst }, port, protocol };
}
