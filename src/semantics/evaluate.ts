// The NetworkPolicy specification as code: is a flow allowed, and why.
//
// This is the reference statement of the meaning, written from the API reference and kept
// independent of the compiler: the property tests check that the compiled rules, executed by
// a packet tracer, agree with this module on random clusters (docs/design.md, invariant two-statements).
//
// A flow is allowed when both sides allow it:
// - egress: the source pod is not isolated for egress, or some egress rule of a policy
//   selecting it matches the destination and port;
// - ingress: the destination pod is not isolated for ingress, or some ingress rule matches.
// Plus the fixed facts: a pod may always reach itself, a pod's own node may always reach it, and
// an address of a node's pod CIDR that is not a pod that node enforces gets nothing.

import { cidrContainsIp, parseCidr } from '../model/cidr.ts';
import { explainSelector, formatSelector, selectorMatches } from '../model/selector.ts';
import type { Model } from '../model/store.ts';
import type { Cidr, Peer, PodRecord, PolicyRecord, PolicyRule, PolicyType, PortSpec, Protocol } from '../model/types.ts';
import { isEnforceable } from '../model/types.ts';

export type Endpoint =
  | { readonly kind: 'pod'; readonly pod: PodRecord }
  | { readonly kind: 'ip'; readonly ip: string };

export interface Flow {
  readonly src: Endpoint;
  readonly dst: Endpoint;
  readonly protocol: Protocol;
  readonly port: number;
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

export interface DirectionResult {
  readonly direction: PolicyType;
  /** The pod this direction is evaluated for (source for egress, destination for ingress). */
  readonly pod?: string;
  readonly enforced: boolean;
  readonly isolatedBy: readonly string[];
  readonly allowed: boolean;
  readonly allowedBy?: { readonly policy: string; readonly ruleIndex: number };
  readonly rules: readonly RuleResult[];
  readonly summary: string;
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
  const notEvaluated = (direction: PolicyType, why: string): DirectionResult => ({
    direction,
    enforced: false,
    isolatedBy: [],
    allowed: true,
    rules: [],
    summary: why,
  });
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
  const { cidrs, programmed } = podCidrFacts(model);
  for (const { node, cidr } of cidrs) {
    if (!cidrContainsIp(cidr, ip)) continue;
    // The node's own traffic to its bridge leaves through OUTPUT, which no policy polices.
    if (node === fromNode || programmed.get(ip) === node) return undefined;
    return `address ${ip} is in pod CIDR ${cidr.text} of node ${node} but is not a pod that node enforces (IP not reported yet, pod finished, or the address claimed by two pods): new connections from and to it are dropped`;
  }
  return undefined;
}

/** Every node's IPv4 pod CIDRs and the enforceable pods' addresses (-> node), per model generation. */
function podCidrFacts(model: Model): { cidrs: { node: string; cidr: Cidr }[]; programmed: Map<string, string> } {
  const cached = cidrFacts.get(model);
  if (cached && cached.generation === model.generation) return cached;
  const cidrs: { node: string; cidr: Cidr }[] = [];
  for (const n of model.allNodes()) {
    for (const text of n.podCIDRs) {
      try {
        const cidr = parseCidr(text);
        if (cidr.family === 4) cidrs.push({ node: n.name, cidr });
      } catch {
        // unparsable: matches nothing (the model reports it)
      }
    }
  }
  const programmed = new Map<string, string>();
  if (cidrs.length > 0) for (const p of model.allPods()) if (isEnforceable(p) && p.nodeName !== undefined) for (const ip of p.ips) programmed.set(ip, p.nodeName);
  const facts = { generation: model.generation, cidrs, programmed };
  cidrFacts.set(model, facts);
  return facts;
}
const cidrFacts = new WeakMap<Model, { generation: number; cidrs: { node: string; cidr: Cidr }[]; programmed: Map<string, string> }>();

/** The node an endpoint is the host of: a node's InternalIP, or a hostNetwork pod. */
function hostNodeOf(model: Model, e: Endpoint): string | undefined {
  if (e.kind === 'pod') return e.pod.hostNetwork ? e.pod.nodeName : undefined;
  for (const n of model.allNodes()) if (n.internalIPs.includes(e.ip)) return n.name;
  return undefined;
}

function evaluateDirection(model: Model, flow: Flow, direction: PolicyType): DirectionResult {
  const self = direction === 'Egress' ? flow.src : flow.dst;
  const peer = direction === 'Egress' ? flow.dst : flow.src;
  const side = direction === 'Egress' ? 'source' : 'destination';
  if (self.kind !== 'pod') {
    return { direction, enforced: false, isolatedBy: [], allowed: true, rules: [], summary: `${direction.toLowerCase()} not enforced: the ${side} is not a pod` };
  }
  const pod = self.pod;
  if (!isEnforceable(pod)) {
    return {
      direction,
      pod: podKey(pod),
      enforced: false,
      isolatedBy: [],
      allowed: true,
      rules: [],
      summary: `${direction.toLowerCase()} not enforced: ${podKey(pod)} ${notEnforceableReason(pod)}`,
    };
  }
  const policies = isolatingPolicies(model, pod, direction);
  if (policies.length === 0) {
    return {
      direction,
      pod: podKey(pod),
      enforced: true,
      isolatedBy: [],
      allowed: true,
      rules: [],
      summary: `${podKey(pod)} is not isolated for ${direction.toLowerCase()}`,
    };
  }
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
    : `${podKey(pod)} is isolated for ${dirLower} by ${isolatedBy.join(', ')} and no ${dirLower} rule matches ${describeEndpoint(peer)} on ${flow.port}/${flow.protocol}` +
      (rules.length ? ` (${rules.map((r) => r.summary).join(' | ')})` : ` (the isolating policies have no ${dirLower} rules)`);
  return { direction, pod: podKey(pod), enforced: true, isolatedBy, allowed: !!allowedBy, ...(allowedBy ? { allowedBy } : {}), rules, summary };
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
