// Policy-rule building: what a policy's rules become as iptables rules, and the ipsets they
// match. Independent of the layout (layout.ts says where these rules go and how a packet gets
// there); tiers.ts puts them into tier chains.
//
// Sets are named by what they hold (a digest of the peer's selectors, the ipBlock, the named
// port), so rules of different policies that match the same pods share one set, and a set's name
// never depends on its members: a pod joining a peer is a set add (invariant cost-proportional).

import { selectorKey } from '../model/selector.ts';
import type { IpBlockPeer, PodRecord, PodsPeer, PolicyRecord, PolicyRule, PolicyType, Protocol } from '../model/types.ts';
import { VERDICTS } from './layout.ts';
import { policyCommentRef, setName } from './names.ts';
import type { L4Protocol, Match, PortRange, Rule, SetMember, SetType } from './ruleset.ts';

/** multiport takes at most 15 port slots; a range uses two. */
const MULTIPORT_SLOTS = 15;

/** What a set is called and holds, independent of its members. */
export interface SetSpec {
  readonly name: string;
  readonly type: SetType;
  readonly purpose: string;
  /** The gate set (IpSet.gate). */
  readonly gate?: true;
}

/**
 * Where the rule builder gets its set names: the full compiler creates and fills each set from
 * the model on first use; the incremental compiler records which sets a chain needs.
 */
export interface SetSource {
  podSet(peer: PodsPeer): string;
  namedPortSet(peer: PodsPeer | 'any', portName: string, protocol: Protocol): string;
  blockSet(b: IpBlockPeer): string;
}

const peerKeys = new WeakMap<PodsPeer, string>();

/** Canonical key of a pods peer: equal keys select the same pods (shared sets). Memoized per peer object. */
export function peerKey(peer: PodsPeer | 'any'): string {
  if (peer === 'any') return 'any';
  let key = peerKeys.get(peer);
  if (key === undefined) {
    const ns = peer.namespaces.kind === 'own' ? `own:${peer.namespaces.name}` : `nssel:${selectorKey(peer.namespaces.selector)}`;
    key = `${ns}|${peer.pods ? `pods:${selectorKey(peer.pods)}` : 'allpods'}`;
    peerKeys.set(peer, key);
  }
  return key;
}

function describePeer(peer: PodsPeer | 'any'): string {
  if (peer === 'any') return 'every pod';
  const ns = peer.namespaces.kind === 'own' ? `namespace ${peer.namespaces.name}` : 'selected namespaces';
  return `${peer.pods ? 'selected pods' : 'all pods'} in ${ns}`;
}

export const l4 = (p: Protocol): L4Protocol => p.toLowerCase() as L4Protocol;

const podSetSpecs = new WeakMap<PodsPeer, SetSpec>();

/** The hash:ip set of a pods peer's pod IPs. */
export function podSetSpec(peer: PodsPeer): SetSpec {
  let spec = podSetSpecs.get(peer);
  if (!spec) {
    const key = peerKey(peer);
    spec = { name: setName('p', key), type: 'hash:ip', purpose: `pod IPs of ${describePeer(peer)} (${key})` };
    podSetSpecs.set(peer, spec);
  }
  return spec;
}

/** The hash:ip,port set of the peer's pods' containerPorts called portName (protocol included). */
export function namedPortSetSpec(peer: PodsPeer | 'any', portName: string, protocol: Protocol): SetSpec {
  const key = `${peerKey(peer)}|${portName}/${protocol}`;
  return { name: setName('n', key), type: 'hash:ip,port', purpose: `named port ${portName}/${protocol} on ${describePeer(peer)} (${key})` };
}

/** A pod's entries in a named-port set: `ip,proto:port` for each matching containerPort. */
export function namedPortEntries(p: PodRecord, portName: string, protocol: Protocol): string[] {
  const out: string[] = [];
  for (const cp of p.ports) {
    if (cp.name !== portName || cp.protocol !== protocol) continue;
    for (const ip of p.ips) out.push(`${ip},${l4(protocol)}:${cp.containerPort}`);
  }
  return out;
}

/**
 * An ipBlock with exceptions as a hash:net set: the most specific entry wins, so `except`
 * entries are `nomatch`. hash:net cannot hold a /0, so 0.0.0.0/0 is stored as two /1 halves;
 * an except equal to a half removes that half. Members in insertion order (not sorted).
 */
export function blockSetSpec(b: IpBlockPeer): SetSpec & { readonly members: readonly SetMember[] } {
  const excepts = [...new Set(b.except.map((e) => e.text))].sort();
  const key = `${b.cidr.text}|${excepts.join(',')}`;
  const positive = b.cidr.prefix === 0 ? ['0.0.0.0/1', '128.0.0.0/1'] : [b.cidr.text];
  const members: SetMember[] = [];
  for (const p of positive) if (!excepts.includes(p)) members.push({ entry: p });
  for (const e of excepts) if (!positive.includes(e)) members.push({ entry: e, nomatch: true });
  return { name: setName('b', key), type: 'hash:net', purpose: `ipBlock ${b.cidr.text} except ${excepts.join(',')}`, members };
}

/** One way a rule's peer list can match, as match fields on the peer's address. */
interface PeerMatch {
  readonly match: Match;
  /** The pods it selects, for named ports on egress; undefined for ipBlocks. */
  readonly pods?: PodsPeer | 'any';
}

/** The side of a packet where a direction's peer is: the source of ingress, the destination of egress. */
export const peerSide = (dir: PolicyType): 'src' | 'dst' => (dir === 'Ingress' ? 'src' : 'dst');

function peerMatches(sets: SetSource, rule: PolicyRule, dir: PolicyType): PeerMatch[] {
  const side = peerSide(dir);
  if (!rule.peers) return [{ match: {}, pods: 'any' }];
  const out: PeerMatch[] = [];
  for (const peer of rule.peers) {
    if (peer.kind === 'pods') {
      out.push({ match: { sets: [{ set: sets.podSet(peer), dirs: side }] }, pods: peer });
    } else if (peer.cidr.family === 4) {
      // IPv6 blocks never match IPv4 traffic; this compiler programs the IPv4 table only.
      if (peer.except.length > 0) out.push({ match: { sets: [{ set: sets.blockSet(peer), dirs: side }] } });
      else if (peer.cidr.prefix === 0) out.push({ match: {} });
      else out.push({ match: side === 'src' ? { srcNet: peer.cidr.text } : { dstNet: peer.cidr.text } });
    }
  }
  return out;
}

/** Numeric port matches per protocol; `all` when some entry allows every port of it. */
export type PortPlan = Map<Protocol, PortRange[] | 'all'>;

export function addPorts(plan: PortPlan, protocol: Protocol, ranges: PortRange[] | 'all'): void {
  const cur = plan.get(protocol);
  if (cur === 'all') return;
  if (ranges === 'all') plan.set(protocol, 'all');
  else plan.set(protocol, [...(cur ?? []), ...ranges]);
}

/** A port plan as matches, one per protocol (in protocol order) and multiport chunk. */
export function portMatches(plan: PortPlan): Match[] {
  const out: Match[] = [];
  for (const [protocol, ranges] of [...plan].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (ranges === 'all') {
      out.push({ protocol: l4(protocol) });
      continue;
    }
    for (const chunk of chunkPorts(mergeRanges(ranges))) out.push({ protocol: l4(protocol), dports: chunk });
  }
  return out;
}

/** One NetworkPolicy rule as allow rules (RETURN) for a pod it selects. */
function rulesFor(sets: SetSource, pol: PolicyRecord, index: number, rule: PolicyRule, dir: PolicyType, selected: PodRecord): Rule[] {
  const comment = `${policyCommentRef(pol.namespace, pol.name)} ${dir.toLowerCase()}[${index}]`;
  const allow = VERDICTS.allow;
  const peers = peerMatches(sets, rule, dir);
  if (peers.length === 0) return [];
  if (!rule.ports) return peers.map((p) => ({ match: p.match, action: allow, comment }));

  const numeric: PortPlan = new Map();
  const named: { name: string; protocol: Protocol }[] = [];
  for (const spec of rule.ports) {
    if (spec.port === undefined) addPorts(numeric, spec.protocol, 'all');
    else if (typeof spec.port === 'number') addPorts(numeric, spec.protocol, [{ from: spec.port, to: spec.endPort ?? spec.port }]);
    else if (dir === 'Ingress') {
      // Ingress named ports resolve on the selected pod itself, so they become numbers here.
      const found = selected.ports.filter((cp) => cp.name === spec.port && cp.protocol === spec.protocol);
      if (found.length) addPorts(numeric, spec.protocol, found.map((cp) => ({ from: cp.containerPort, to: cp.containerPort })));
    } else named.push({ name: spec.port, protocol: spec.protocol });
  }

  const out: Rule[] = [];
  const ports = portMatches(numeric);
  for (const peer of peers) {
    for (const pm of ports) out.push({ match: { ...peer.match, ...pm }, action: allow, comment });
    // Egress named ports resolve on each destination pod: an ip,port set of the peer's pods.
    // They never match an ipBlock destination (peer.pods undefined).
    if (peer.pods) {
      for (const n of named) {
        const set = sets.namedPortSet(peer.pods, n.name, n.protocol);
        out.push({ match: { protocol: l4(n.protocol), sets: [{ set, dirs: 'dst,dst' }] }, action: allow, comment });
      }
    }
  }
  return out;
}

export function mergeRanges(ranges: readonly PortRange[]): PortRange[] {
  const sorted = [...ranges].sort((a, b) => a.from - b.from || a.to - b.to);
  const out: PortRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.from <= last.to + 1) out[out.length - 1] = { from: last.from, to: Math.max(last.to, r.to) };
    else out.push(r);
  }
  return out;
}

/** Split into groups that fit multiport's 15 slots (a range takes two). */
export function chunkPorts(ranges: readonly PortRange[]): PortRange[][] {
  const out: PortRange[][] = [];
  let cur: PortRange[] = [];
  let slots = 0;
  for (const r of ranges) {
    const need = r.from === r.to ? 1 : 2;
    if (slots + need > MULTIPORT_SLOTS) {
      out.push(cur);
      cur = [];
      slots = 0;
    }
    cur.push(r);
    slots += need;
  }
  if (cur.length) out.push(cur);
  return out;
}

/**
 * The NetworkPolicy tier of one pod in one direction: the allow rules of every policy isolating
 * it (in the order given), then the default deny. Its last rule always decides: a pod a
 * NetworkPolicy isolates never reaches a later tier (fail closed: an invalid policy has no
 * rules, so it isolates and allows nothing).
 */
export function networkPolicyRules(sets: SetSource, pod: PodRecord, dir: PolicyType, policies: readonly PolicyRecord[]): Rule[] {
  const rules: Rule[] = [];
  for (const pol of policies) {
    (dir === 'Ingress' ? pol.ingress : pol.egress).forEach((r, i) => rules.push(...rulesFor(sets, pol, i, r, dir, pod)));
  }
  const by = policies.map((p) => policyCommentRef(p.namespace, p.name)).join(','); // never a refused name
  rules.push({ match: {}, action: VERDICTS.deny, comment: `default deny ${dir.toLowerCase()}: isolated by ${by}` });
  return rules;
}

/**
 * What a pod's rules depend on besides its policies: ingress named ports resolve on the selected
 * pod, so its named container ports (in order). Egress rules depend on the policies only. Pods
 * with equal keys under the same policies get the same chains.
 */
export function podPortsKey(pod: PodRecord, dir: PolicyType): string {
  if (dir === 'Egress') return '';
  let key = '';
  for (const cp of pod.ports) if (cp.name !== undefined) key += `${cp.name}/${cp.protocol}/${cp.containerPort};`;
  return key;
}

/** Sorted set members, as the Ruleset holds them. */
export function sortedMembers(members: Map<string, boolean>): SetMember[] {
  const entries = [...members.keys()].sort();
  return entries.map((entry): SetMember => (members.get(entry) ? { entry, nomatch: true } : { entry }));
}
