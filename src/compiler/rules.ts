// Policy-rule building: what a policy's rules become as iptables rules, and the ipsets they
// match. Independent of the layout (layout.ts says where these rules go and how a packet gets
// there); tiers.ts puts them into tier chains.
//
// Sets are named by what they hold (a digest of the peer's selectors, the ipBlock, the named
// port), so rules of different policies that match the same pods share one set, and a set's name
// never depends on its members: a pod joining a peer is a set add (invariant cost-proportional).

import { selectorKey } from '../model/selector.ts';
import type { Cidr, ClusterPolicyRecord, CnpAction, CnpRule, IpBlockPeer, PodRecord, PodsPeer, PolicyRecord, PolicyRule, PolicyType, Protocol } from '../model/types.ts';
import { dns1123SubdomainErrors } from '../model/validation.ts';
import { hashText } from '../util/digest.ts';
import { chainedDrop, loggedDrop } from './drop-log.ts';
import { FAMILY, VERDICTS } from './layout.ts';
import { policyCommentRef, setName } from './names.ts';
import { type Action, type L4Protocol, type Match, type PortRange, type Rule, type RuntimeSet, type SetMatch, type SetMember, type SetType } from './ruleset.ts';
import { append } from '../util/arrays.ts';
import { MULTIPORT_SLOTS } from '../model/rule-expansion.ts';

// multiport takes at most 15 port slots, a range two: MULTIPORT_SLOTS, shared with the
// validation that bounds what a rule expands to (model/rule-expansion.ts).

/** What a set is called and holds, independent of its members. */
export interface SetSpec {
  readonly name: string;
  readonly type: SetType;
  readonly purpose: string;
  /** The gate set (IpSet.gate). */
  readonly gate?: true;
  /** Members added at run time, expiring (IpSet.runtime). */
  readonly runtime?: RuntimeSet;
}

/**
 * Where the rule builder gets its set names: the full compiler creates and fills each set from
 * the model on first use; the incremental compiler records which sets a chain needs.
 */
export interface SetSource {
  podSet(peer: PodsPeer): string;
  /** `protocol` undefined: the container ports of that name whatever their protocol (a CNP's). */
  namedPortSet(peer: PeerRef, portName: string, protocol: Protocol | undefined): string;
  blockSet(b: IpBlockPeer): string;
  /** A hash:net set of fixed members (a CNP's `networks`). */
  netSet(spec: SetSpec & { readonly members: readonly SetMember[] }): string;
  /**
   * The set matches that hold, on `side`, for an address of the cluster's pod CIDRs that no pod
   * the node knows has (layout.ts POD_CIDRS_SET, then not in KNOWN_PODS_SPEC).
   */
  unknownPodAddress(side: 'src' | 'dst'): readonly SetMatch[];
}

// ---- addresses a node does not know yet (docs/design.md, invariant fail-closed-in-time) -------
//
// A pod starts on one node (its CNI ADD programs it there at once) and the other nodes learn its
// address only from the API, a status report and a watch event later. Until then, on those nodes,
// its address matches no pods or namespaces peer: an allow rule that names it does not match
// (fail closed), but neither does a Deny that names it. So a pod that a ClusterNetworkPolicy
// walls off could reach a pod of another node in that window, and keep the connection. A Deny
// rule with a pods or namespaces peer therefore also matches, after its own peers, an
// address of any node's pod CIDR that no pod the node knows has, and drops it (clusterPolicyRules):
// it may be a pod the rule names. An Admin Pass drops it too: what comes after it (a
// NetworkPolicy isolating the pod) may deny what a later Admin rule would accept; a Baseline Pass
// allows, so it needs none. An allow-only setup (NetworkPolicy) never meets these rules. The
// price (docs/design.md): a new pod of any namespace waits, at such a rule, until the node
// learns it.

/** The test for such an address as set matches: in the pod CIDRs (`cidrs`), not a known pod (`known`). */
export function unknownPodAddressMatches(side: 'src' | 'dst', cidrs: string, known: string): readonly SetMatch[] {
  return [
    { set: cidrs, dirs: side },
    { set: known, dirs: side, negate: true },
  ];
}

/**
 * Whose pods a set holds: a pods peer's, every pod's (`any`), or this node's (`local`: an ingress
 * named port resolves on the destination, which is always one of them).
 */
export type PeerRef = PodsPeer | 'any' | 'local';

const peerKeys = new WeakMap<PodsPeer, string>();

/** Canonical key of a pods peer: equal keys select the same pods (shared sets). Memoized per peer object. */
export function peerKey(peer: PeerRef): string {
  if (peer === 'any' || peer === 'local') return peer;
  let key = peerKeys.get(peer);
  if (key === undefined) {
    const ns = peer.namespaces.kind === 'own' ? `own:${peer.namespaces.name}` : `nssel:${selectorKey(peer.namespaces.selector)}`;
    key = `${ns}|${peer.pods ? `pods:${selectorKey(peer.pods)}` : 'allpods'}`;
    peerKeys.set(peer, key);
  }
  return key;
}

function describePeer(peer: PeerRef): string {
  if (peer === 'any') return 'every pod';
  if (peer === 'local') return "this node's pods";
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

/**
 * The hash:ip,port set of the peer's pods' containerPorts called portName: of one protocol (a
 * NetworkPolicy's named port), or of any (`undefined`: a ClusterNetworkPolicy's
 * destinationNamedPort, which matches each port with its own protocol).
 */
export function namedPortSetSpec(peer: PeerRef, portName: string, protocol: Protocol | undefined): SetSpec {
  const key = `${peerKey(peer)}|${portName}/${protocol ?? '*'}`;
  return { name: setName('n', key), type: 'hash:ip,port', purpose: `named port ${portName}/${protocol ?? 'any protocol'} on ${describePeer(peer)} (${key})` };
}

/** A pod's entries in a named-port set: `ip,proto:port` for each matching containerPort. */
export function namedPortEntries(p: PodRecord, portName: string, protocol: Protocol | undefined): string[] {
  const out: string[] = [];
  for (const cp of p.ports) {
    if (cp.name !== portName || (protocol !== undefined && cp.protocol !== protocol)) continue;
    for (const ip of p.ips) out.push(`${ip},${l4(cp.protocol)}:${cp.containerPort}`);
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

/** One NetworkPolicy rule as allow rules (RETURN), the same for every pod it selects. */
function rulesFor(sets: SetSource, pol: PolicyRecord, index: number, rule: PolicyRule, dir: PolicyType): Rule[] {
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
    else named.push({ name: spec.port, protocol: spec.protocol });
  }

  const out: Rule[] = [];
  const ports = portMatches(numeric);
  for (const peer of peers) {
    for (const pm of ports) out.push({ match: { ...peer.match, ...pm }, action: allow, comment });
    for (const n of named) {
      if (dir === 'Egress') {
        // Egress named ports resolve on each destination pod: an ip,port set of the peer's pods.
        // They never match an ipBlock destination (peer.pods undefined).
        if (peer.pods) out.push({ match: { protocol: l4(n.protocol), sets: [{ set: sets.namedPortSet(peer.pods, n.name, n.protocol), dirs: 'dst,dst' }] }, action: allow, comment });
      } else {
        // Ingress named ports resolve on the selected pod, the destination, a pod of this node:
        // the ip,port set of the node's pods' ports of that name, matched on it. One rule
        // whatever ports the pod declares under that name (several containers may), and the
        // chain does not depend on the pod's ports, so pods under the same policies share it.
        const set = { set: sets.namedPortSet('local', n.name, n.protocol), dirs: 'dst,dst' as const };
        out.push({ match: { ...peer.match, protocol: l4(n.protocol), sets: [...(peer.match.sets ?? []), set] }, action: allow, comment });
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
export function networkPolicyRules(sets: SetSource, dir: PolicyType, policies: readonly PolicyRecord[]): Rule[] {
  const rules: Rule[] = [];
  for (const pol of policies) {
    (dir === 'Ingress' ? pol.ingress : pol.egress).forEach((r, i) => append(rules, rulesFor(sets, pol, i, r, dir)));
  }
  const refs = policies.map((p) => policyCommentRef(p.namespace, p.name)); // never a refused name
  rules.push(...loggedDrop({}, `default deny ${dir.toLowerCase()}: isolated by ${refs.join(',')}`, { kind: 'np', dir, policies: refs }));
  return rules;
}

/** Sorted set members, as the Ruleset holds them. */
export function sortedMembers(members: Map<string, boolean>): SetMember[] {
  const entries = [...members.keys()].sort();
  return entries.map((entry): SetMember => (members.get(entry) ? { entry, nomatch: true } : { entry }));
}

// ---- ClusterNetworkPolicy rules ----------------------------------------------------------------

/**
 * A ClusterNetworkPolicy as a rule comment names it: `cnp/NAME` when the name is a valid
 * Kubernetes name, else `cnp/invalid-name-<digest>` (text a tenant chose and validation refused
 * never reaches the kernel).
 */
export function clusterPolicyCommentRef(name: string): string {
  return dns1123SubdomainErrors(name).length === 0 ? `cnp/${name}` : `cnp/invalid-name-${hashText(JSON.stringify(name), 13)}`;
}

/**
 * A `networks` peer with several IPv4 CIDRs as one hash:net set (one rule instead of one per
 * CIDR). hash:net cannot hold a /0; a list holding one matches everything and needs no set.
 */
export function networksSetSpec(cidrs: readonly Cidr[]): SetSpec & { readonly members: readonly SetMember[] } {
  const texts = [...new Set(cidrs.map((c) => c.text))].sort();
  const key = texts.join(',');
  return { name: setName('w', key), type: 'hash:net', purpose: `networks ${key}`, members: texts.map((entry) => ({ entry })) };
}

/** One way a CNP rule's peers can match: match fields on the peer's address. */
interface CnpPeerMatch {
  readonly match: Match;
  /** The pods a destination named port resolves among: the peer's, or any pod (`any`). */
  readonly pods: PodsPeer | 'any';
}

function cnpPeerMatches(sets: SetSource, rule: CnpRule, dir: PolicyType): CnpPeerMatch[] {
  const side = peerSide(dir);
  const net = (text: string): Match => (side === 'src' ? { srcNet: text } : { dstNet: text });
  const out: CnpPeerMatch[] = [];
  for (const peer of rule.peers) {
    if (peer.kind === 'pods') out.push({ match: { sets: [{ set: sets.podSet(peer), dirs: side }] }, pods: peer });
    else if (peer.kind === 'any') out.push({ match: {}, pods: 'any' });
    else {
      // Any address in the CIDRs, pod addresses included. CIDRs of another family never match.
      const cidrs = peer.cidrs.filter((c) => c.family === FAMILY.cidrFamily);
      if (cidrs.length === 0) continue;
      if (cidrs.some((c) => c.prefix === 0)) out.push({ match: {}, pods: 'any' });
      else if (new Set(cidrs.map((c) => c.text)).size === 1) out.push({ match: net(cidrs[0]!.text), pods: 'any' });
      else out.push({ match: { sets: [{ set: sets.netSet(networksSetSpec(cidrs)), dirs: side }] }, pods: 'any' });
    }
  }
  return out;
}

/**
 * How a policy chain's conditional drops are written (drop-log.ts): `chained` (one rule to the
 * drop chain of its prefix) in the chains of pods, `inline` (the log rule and the drop) in a
 * chain of the layout, which the compilers do not scan for drop chains (the shared Admin prefix).
 */
export type DropShape = 'chained' | 'inline';

/** How a CNP rule's action is expressed in its tier's chain (`next`: where Pass goes). */
function cnpAction(action: CnpAction, next: string | undefined): Action {
  return action === 'Accept' ? VERDICTS.allow : action === 'Deny' ? VERDICTS.deny : VERDICTS.next(next);
}

/** Whether a CNP rule drops the addresses of the pod CIDRs no known pod has (clusterPolicyRules). */
function unknownMayMatter(cnp: ClusterPolicyRecord, rule: CnpRule): boolean {
  const decides = rule.action === 'Deny' || (rule.action === 'Pass' && cnp.tier === 'Admin');
  return decides && rule.peers.some((p) => p.kind === 'pods');
}

/**
 * The rules one ClusterNetworkPolicy puts into its tier's chain for a pod it selects, in written
 * order: each rule matches when one of its peers and one of its protocols match, and then
 * decides by its action (Accept: allow, Deny: drop, Pass: on to `next`).
 */
export function clusterPolicyRules(sets: SetSource, dir: PolicyType, cnp: ClusterPolicyRecord, next: string | undefined, drops: DropShape = 'chained'): Rule[] {
  const ref = clusterPolicyCommentRef(cnp.name);
  const out: Rule[] = [];
  (dir === 'Ingress' ? cnp.ingress : cnp.egress).forEach((rule, index) => {
    const action = cnpAction(rule.action, next);
    // No priority in the comment: a priority change that leaves the order as it was changes no rule.
    const comment = `${ref} ${cnp.tier} ${rule.action} ${dir.toLowerCase()}[${index}]`;
    // A Deny is logged before it drops (drop-log.ts): the prefix names the tier, the rule and the policy.
    const push = (match: Match) => {
      if (rule.action === 'Deny') out.push(...(drops === 'chained' ? chainedDrop : loggedDrop)(match, comment, { kind: 'cnp', dir, tier: cnp.tier, index, name: cnp.name }));
      else out.push({ match, action, comment });
    };
    const peers = cnpPeerMatches(sets, rule, dir);
    // A Deny, or an Admin Pass, that names pods also drops, after its own peers, the addresses of
    // the pod CIDRs no known pod has (above): with the rule's ports, and for an egress named port,
    // which resolves on a destination pod the node does not know, with any port. A Baseline Pass
    // needs none: it allows, and what comes after it in the tier can only deny less.
    const unknown = unknownMayMatter(cnp, rule) ? sets.unknownPodAddress(peerSide(dir)) : undefined;
    const unknownDrop = (m: Match) => {
      const text = `${comment}: ${peerSide(dir) === 'src' ? 'from' : 'to'} an address no known pod has`;
      // Logged as the layout's unknown-address drops are, by the side the address is on (an
      // unknown source as egress, an unknown destination as ingress: drop-log.ts), so the drop
      // log names the address, not the pod the rule protects.
      const cause = { kind: 'unknown' as const, dir: peerSide(dir) === 'src' ? ('Egress' as const) : ('Ingress' as const) };
      append(out, (drops === 'chained' ? chainedDrop : loggedDrop)({ ...m, sets: [...unknown!, ...(m.sets ?? [])] }, text, cause));
    };
    if (!rule.protocols) {
      for (const p of peers) push(p.match);
      if (unknown) unknownDrop({});
      return;
    }
    const numeric: PortPlan = new Map();
    const named: string[] = [];
    for (const m of rule.protocols) {
      if (m.kind === 'port') addPorts(numeric, m.protocol, [{ from: m.port, to: m.endPort ?? m.port }]);
      else named.push(m.name);
    }
    const ports = portMatches(numeric);
    // destinationNamedPort resolves on the destination pod, each port with its own protocol: an
    // ip,port set of the pods' ports of that name, matched on the destination. Egress: the peer's
    // pods (a destination that is not a pod is in no such set). Ingress: the destination is the
    // selected pod itself, a pod of this node, so the set of the node's pods serves, and the
    // chain does not depend on the pod's ports (pods under the same policies share it).
    const namedSet = (pods: PeerRef, name: string): SetMatch => ({ set: sets.namedPortSet(pods, name, undefined), dirs: 'dst,dst' });
    for (const p of peers) {
      for (const pm of ports) push({ ...p.match, ...pm });
      for (const name of named) {
        const set = namedSet(dir === 'Egress' ? p.pods : 'local', name);
        push({ ...p.match, sets: dir === 'Egress' && p.pods !== 'any' ? [set] : [...(p.match.sets ?? []), set] });
      }
    }
    if (unknown) {
      for (const pm of ports) unknownDrop(pm);
      if (named.length > 0) {
        if (dir === 'Egress') unknownDrop({});
        else for (const name of named) unknownDrop({ sets: [namedSet('local', name)] });
      }
    }
  });
  return out;
}

/**
 * A ClusterNetworkPolicy tier's chain for a pod: the rules of the policies selecting it, in tier
 * order (priority, then name); a packet no rule decides goes on to `next` (the NetworkPolicy or
 * Baseline tier), or is allowed past the last tier. Rules at the end that would only do what
 * falling through does are left out, and a tier whose rules all are gets no chain (a Baseline
 * tier without a Deny, for one).
 */
export function clusterTierRules(sets: SetSource, dir: PolicyType, cnps: readonly ClusterPolicyRecord[], next: string | undefined, drops: DropShape = 'chained'): Rule[] {
  const rules = cnps.flatMap((c) => clusterPolicyRules(sets, dir, c, next, drops));
  // A rule that matches every packet (a deny-all of a policy that fails closed) ends the chain:
  // nothing after it is reached. A log rule goes on: it is the drop after it that ends the chain.
  const all = rules.findIndex((r) => Object.keys(r.match).length === 0 && r.action.kind !== 'log');
  if (all >= 0) rules.length = all + 1;
  const through = VERDICTS.next(next);
  while (rules.length > 0 && sameAction(rules[rules.length - 1]!.action, through)) rules.pop();
  const last = rules[rules.length - 1];
  if (last && next !== undefined && Object.keys(last.match).length > 0) rules.push({ match: {}, action: through, comment: `no ${cnps[0]!.tier} rule decides: next tier` });
  return rules;
}

function sameAction(a: Action, b: Action): boolean {
  return a.kind === b.kind && (a.kind === 'jump' || a.kind === 'goto' || a.kind === 'logdrop' ? a.chain === (b as typeof a).chain : true);
}
