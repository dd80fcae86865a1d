// The compiler: model + node name -> Ruleset (ipsets and chains as data). Pure.
//
// Shape of what it produces (filter table):
//
//   FORWARD -> PCTL-FORWARD   (hook, position 1)
//     1. ctstate RELATED,ESTABLISHED -> RETURN        replies of allowed connections
//     2. -> PCTL-EGRESS, 3. -> PCTL-INGRESS
//     between 1 and 2: new connections from or to an address of the node's pod CIDRs that is not
//     in PCTL-programmed (the local pods this node enforces) -> DROP
//   INPUT -> PCTL-INPUT: replies RETURN, unprogrammed pod-CIDR sources DROP, then -> PCTL-EGRESS
//     (a pod's egress to its own node)
//   PCTL-EGRESS: `-s 0.0.0.k/0.0.0.15 -g PCTL-EB-k` per bucket k (0..15) holding an
//     egress-isolated local pod; the bucket of an address is its last octet & 15
//   PCTL-INGRESS: `-d 0.0.0.k/0.0.0.15 -g PCTL-IB-k`, the same for ingress
//   PCTL-EB-k / PCTL-IB-k: `src|dst in PCTL-e-H|PCTL-i-H -g PCTL-E-H|PCTL-I-H` per policy
//     chain with a local pod address in bucket k, in chain name order
//   PCTL-E-H / PCTL-I-H: the allow rules of every policy isolating the pod (RETURN), then DROP
//
// Why this shape:
// - Allow is RETURN, never ACCEPT, so the other side's chain and other agents' rules still run;
//   both the sender's egress and the receiver's ingress are evaluated in one FORWARD pass.
// - Two-level dispatch by goto: a new connection tests at most 16 bucket rules, then only the
//   policy chains that have a local pod in its bucket (about 1/16 of them), and no rule after
//   the one that matched: `-g` leaves no return point, so a RETURN in PCTL-E-H (or falling off
//   PCTL-EB-k: an unisolated source) returns straight to PCTL-FORWARD (or PCTL-INPUT), which
//   goes on with the ingress side. With one `-j` rule per policy chain, every new connection
//   walked all of them (about 550 rules for 250 local pods under 2k policies).
// - Policy chains are named by a hash of their content, and pods are dispatched to them by
//   ipset: pods under the same policies share one chain, and a local pod that joins an existing
//   group (or a peer pod that changes labels or IP) changes set members only (invariant cost-proportional). The
//   dispatch set holds every address of the group, so a pod joining a group that already has a
//   member in its bucket is an ipset add; a bucket chain is rewritten only when a group enters
//   or leaves the bucket. An address is in one group per direction, except when two local pods
//   share it (an IP reused while the old pod is still listed): then the first of their rules in
//   the bucket chain decides for both (each chain still ends in DROP: the address stays isolated).
// - The dispatch chains (PCTL-EGRESS, PCTL-INGRESS, PCTL-EB-k, PCTL-IB-k) are `unordered`: their
//   rules match disjoint packets, so the sync layer may append a new rule and delete a stale one
//   later instead of rewriting (flushing) the chain, which on the nft backend costs a slow
//   transaction per event. The top chains' rules are disjoint by construction (the bucket masks
//   split the address space). A bucket chain's rules are disjoint because groups' dispatch sets
//   are: pod IPs are unique, and a pod is in one group per direction. With an address duplicated
//   in two groups (an IP reused while the old pod is still listed) any one of their chains
//   decides, whichever rule comes first; both end in DROP, so the address stays isolated.
// - No self check: a pod reaching its own IP never leaves its network namespace (the route is
//   local), so no rule sees it and it is always allowed. Hairpin traffic through a Service
//   (pod -> ClusterIP -> the same pod) does cross FORWARD, and is policed as traffic from the
//   pod's own IP, which is what upstream's conformance diagonal cells expect (default-deny
//   ingress shows X on the diagonal). A self check also cost a rule per local pod, rewritten on
//   every local pod add and delete.
// - No mark bits are used, so nothing collides with kube-proxy, kubelet or flannel marks.
// - Fail closed: an isolated pod's chain always ends in DROP; an invalid policy arrives from
//   the model with no rules, so it isolates and allows nothing.

import type { Model } from '../model/store.ts';
import { parseCidr } from '../model/cidr.ts';
import { selectorKey } from '../model/selector.ts';
import type { IpBlockPeer, PodRecord, PodsPeer, PolicyRecord, PolicyRule, PolicyType, Protocol } from '../model/types.ts';
import { isEnforceable } from '../model/types.ts';
import { FORWARD_CHAIN, INPUT_CHAIN, PREFIX, chainName, policyCommentRef, setName } from './names.ts';
import { contentText, quarantineGroups, rememberContentText, sortCollisions } from './collisions.ts';
import type { Chain, IpSet, L4Protocol, Match, PortRange, Rule, Ruleset, SetMember, SetType } from './ruleset.ts';

export const EGRESS_CHAIN = `${PREFIX}-EGRESS`;
export const INGRESS_CHAIN = `${PREFIX}-INGRESS`;
/** Pods are dispatched by the low bits of their address: this many buckets (a power of two). */
export const BUCKETS = 16;
/** multiport takes at most 15 port slots; a range uses two. */
const MULTIPORT_SLOTS = 15;

const RETURN = { kind: 'return' } as const;
const DROP = { kind: 'drop' } as const;

interface SetBuilder {
  readonly name: string;
  readonly type: SetType;
  readonly purpose: string;
  readonly members: Map<string, boolean>; // entry -> nomatch
}

/** What a set is called and holds, independent of its members. */
export interface SetSpec {
  readonly name: string;
  readonly type: SetType;
  readonly purpose: string;
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

/** Per-compile state: sets are shared by key across policies and pods. */
class Context implements SetSource {
  readonly sets = new Map<string, SetBuilder>();
  readonly podsByPeer = new Map<string, PodRecord[]>();
  /** Chains already built in this compile, by chainKey. */
  readonly chains = new Map<string, ChainContent>();
  readonly model: Model;
  constructor(model: Model) {
    this.model = model;
  }

  set(spec: SetSpec, fill: (s: SetBuilder) => void): string {
    if (!this.sets.has(spec.name)) {
      const s: SetBuilder = { ...spec, members: new Map() };
      fill(s);
      this.sets.set(spec.name, s);
    }
    return spec.name;
  }

  /** Enforceable pods a peer selects; `any` = every enforceable pod in the cluster. */
  peerPods(peer: PodsPeer | 'any'): PodRecord[] {
    const key = peerKey(peer);
    let pods = this.podsByPeer.get(key);
    if (!pods) {
      pods = peer === 'any' ? [...this.model.allPods()].filter(isEnforceable) : this.model.enforceablePodsOf(peer);
      this.podsByPeer.set(key, pods);
    }
    return pods;
  }

  podSet(peer: PodsPeer): string {
    return this.set(podSetSpec(peer), (s) => {
      for (const p of this.peerPods(peer)) for (const ip of p.ips) s.members.set(ip, false);
    });
  }

  namedPortSet(peer: PodsPeer | 'any', portName: string, protocol: Protocol): string {
    return this.set(namedPortSetSpec(peer, portName, protocol), (s) => {
      for (const p of this.peerPods(peer)) for (const e of namedPortEntries(p, portName, protocol)) s.members.set(e, false);
    });
  }

  blockSet(b: IpBlockPeer): string {
    const spec = blockSetSpec(b);
    return this.set(spec, (s) => {
      for (const m of spec.members) s.members.set(m.entry, !!m.nomatch);
    });
  }
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

const l4 = (p: Protocol): L4Protocol => p.toLowerCase() as L4Protocol;

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

function peerMatches(sets: SetSource, rule: PolicyRule, dir: PolicyType): PeerMatch[] {
  const side = dir === 'Ingress' ? 'src' : 'dst';
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
type PortPlan = Map<Protocol, PortRange[] | 'all'>;

function addPorts(plan: PortPlan, protocol: Protocol, ranges: PortRange[] | 'all'): void {
  const cur = plan.get(protocol);
  if (cur === 'all') return;
  if (ranges === 'all') plan.set(protocol, 'all');
  else plan.set(protocol, [...(cur ?? []), ...ranges]);
}

function rulesFor(sets: SetSource, pol: PolicyRecord, index: number, rule: PolicyRule, dir: PolicyType, selected: PodRecord): Rule[] {
  const comment = `${policyCommentRef(pol.namespace, pol.name)} ${dir.toLowerCase()}[${index}]`;
  const peers = peerMatches(sets, rule, dir);
  if (peers.length === 0) return [];
  if (!rule.ports) return peers.map((p) => ({ match: p.match, action: RETURN, comment }));

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
  for (const peer of peers) {
    for (const [protocol, ranges] of [...numeric].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (ranges === 'all') {
        out.push({ match: { ...peer.match, protocol: l4(protocol) }, action: RETURN, comment });
        continue;
      }
      for (const chunk of chunkPorts(mergeRanges(ranges))) {
        out.push({ match: { ...peer.match, protocol: l4(protocol), dports: chunk }, action: RETURN, comment });
      }
    }
    // Egress named ports resolve on each destination pod: an ip,port set of the peer's pods.
    // They never match an ipBlock destination (peer.pods undefined).
    if (peer.pods) {
      for (const n of named) {
        const set = sets.namedPortSet(peer.pods, n.name, n.protocol);
        out.push({ match: { protocol: l4(n.protocol), sets: [{ set, dirs: 'dst,dst' }] }, action: RETURN, comment });
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

/** The policies isolating a pod in one direction, in name order. */
export function isolating(model: Model, pod: PodRecord, dir: PolicyType): PolicyRecord[] {
  return model.policiesSelecting(pod).filter((p) => p.policyTypes.includes(dir));
}

/** The allow rules and final DROP of one pod in one direction. */
function podChainRules(sets: SetSource, pod: PodRecord, dir: PolicyType, policies: readonly PolicyRecord[]): Rule[] {
  const rules: Rule[] = [];
  for (const pol of policies) {
    (dir === 'Ingress' ? pol.ingress : pol.egress).forEach((r, i) => rules.push(...rulesFor(sets, pol, i, r, dir, pod)));
  }
  const by = policies.map((p) => policyCommentRef(p.namespace, p.name)).join(','); // never a refused name
  rules.push({ match: {}, action: DROP, comment: `default deny ${dir.toLowerCase()}: isolated by ${by}` });
  return rules;
}

/** A pod's chain in one direction: its content-hashed name and its rules. */
export interface ChainContent {
  readonly name: string;
  readonly rules: readonly Rule[];
}

export function podChain(sets: SetSource, pod: PodRecord, dir: PolicyType, policies: readonly PolicyRecord[]): ChainContent {
  const rules = podChainRules(sets, pod, dir, policies);
  const text = JSON.stringify(rules);
  const content = { name: chainName(dir === 'Ingress' ? 'I' : 'E', text), rules };
  rememberContentText(content, text); // the collision guard compares contents by this text
  return content;
}

/**
 * What a pod's chain depends on besides the policies: ingress named ports resolve on the
 * selected pod, so its named container ports (in order). Egress chains depend on the policies
 * only. Pods with equal keys under the same policies get the same chain.
 */
export function podPortsKey(pod: PodRecord, dir: PolicyType): string {
  if (dir === 'Egress') return '';
  let key = '';
  for (const cp of pod.ports) if (cp.name !== undefined) key += `${cp.name}/${cp.protocol}/${cp.containerPort};`;
  return key;
}

/** Name of the hash:ip set dispatching local pods to a policy chain. */
export function dispatchSetSpec(dir: PolicyType, chain: string): SetSpec {
  const kind = dir === 'Ingress' ? 'i' : 'e';
  // The chain's name with its kind letter lower-cased: unique as the chain name is, and as long.
  return { name: `${PREFIX}-${kind}${chain.slice(PREFIX.length + 2)}`, type: 'hash:ip', purpose: `local pods dispatched to ${chain}` };
}

/** The rule of a bucket chain sending the pods of a dispatch set to their policy chain (goto). */
export function dispatchRule(dir: PolicyType, set: string, chain: string): Rule {
  return {
    match: { sets: [{ set, dirs: dir === 'Ingress' ? 'dst' : 'src' }] },
    action: { kind: 'goto', chain },
    // No member count in the comment: a pod joining the group must change the set only.
    comment: `${dir.toLowerCase()} policy of the local pods in ${set}`,
  };
}

/** The dispatch bucket of an IPv4 address: its last octet & (BUCKETS - 1). */
export function bucketOf(ip: string): number {
  const m = IPV4.exec(ip);
  const octet = m ? Number(m[1]) : NaN;
  if (!(octet <= 255)) throw new Error(`dispatch bucket: pod address "${ip}" is not a dotted-quad IPv4 address`);
  return octet & (BUCKETS - 1);
}

const IPV4 = /^(?:(?:0|[1-9][0-9]{0,2})\.){3}(0|[1-9][0-9]{0,2})$/;

/** `PCTL-EB-<k>` / `PCTL-IB-<k>`: the chain of the policy chains with a local pod in bucket k. */
export function bucketChainName(dir: PolicyType, k: number): string {
  return `${PREFIX}-${dir === 'Ingress' ? 'I' : 'E'}B-${k}`;
}

function makeBucketRules(dir: PolicyType): readonly Rule[] {
  const mask = `0.0.0.${BUCKETS - 1}`;
  return Array.from({ length: BUCKETS }, (_, k): Rule => {
    const net = `0.0.0.${k}/${mask}`;
    return {
      match: dir === 'Ingress' ? { dstNet: net } : { srcNet: net },
      action: { kind: 'goto', chain: bucketChainName(dir, k) },
      comment: `${dir.toLowerCase()} of local pods in bucket ${k} (address & ${BUCKETS - 1})`,
    };
  });
}

/** The rules of PCTL-EGRESS / PCTL-INGRESS, one per bucket (shared objects: memoized ids). */
export const BUCKET_RULES: Record<PolicyType, readonly Rule[]> = { Egress: makeBucketRules('Egress'), Ingress: makeBucketRules('Ingress') };

export const REPLIES_RULE: Rule = { match: { ctstate: ['RELATED', 'ESTABLISHED'] }, action: RETURN, comment: 'replies of allowed connections' };
export const EVALUATE_RULES: readonly Rule[] = [
  { match: {}, action: { kind: 'jump', chain: EGRESS_CHAIN }, comment: 'egress of local pods' },
  { match: {}, action: { kind: 'jump', chain: INGRESS_CHAIN }, comment: 'ingress of local pods' },
];

/**
 * The hash:ip set of every address of a local pod this node enforces (isolated or not).
 * Invariant (fail closed in time): a new connection from or to an address of the node's pod
 * CIDRs that is not in this set is dropped, so a pod the agent has not programmed yet (its IP
 * not reported yet, attached by hand, an address two pods claim) gets nothing. The sync layer
 * adds an address to it only after every other change of the same apply is in force (its
 * dispatch and peer set entries, its chains), and removes one before anything else.
 */
export const PROGRAMMED_SET = `${PREFIX}-programmed`;
export const PROGRAMMED_SPEC: SetSpec = { name: PROGRAMMED_SET, type: 'hash:ip', purpose: 'addresses of the local pods this node enforces' };

/**
 * The node's IPv4 pod CIDRs, canonical, sorted and without duplicates: `Node.spec.podCIDRs` of
 * this node plus any given by the agent's configuration. Unparsable and IPv6 entries are left
 * out (this compiler programs the IPv4 table only).
 */
export function nodePodCidrs(model: Model, node: string, extra: readonly string[] = []): string[] {
  const out = new Set<string>();
  for (const text of [...(model.findNode(node)?.podCIDRs ?? []), ...extra]) {
    try {
      const c = parseCidr(text);
      if (c.family === 4) out.add(c.text);
    } catch {
      // An invalid podCIDR cannot be matched; the model's validation reports it.
    }
  }
  return [...out].sort();
}

/** The drops of unprogrammed addresses of the node's pod CIDRs, on one side of a packet. */
function unknownDrops(cidrs: readonly string[], side: 'src' | 'dst'): Rule[] {
  return cidrs.map((net) => ({
    match: { ...(side === 'src' ? { srcNet: net } : { dstNet: net }), sets: [{ set: PROGRAMMED_SET, dirs: side, negate: true }] },
    action: DROP,
    comment: `${side === 'src' ? 'from' : 'to'} an address of pod CIDR ${net} that is not a programmed pod`,
  }));
}

/**
 * PCTL-FORWARD and PCTL-INPUT for a node with these pod CIDRs (memoized: equal CIDRs give the
 * same objects, so an unchanged top chain is skipped by identity). After the replies of allowed
 * connections, new connections of unprogrammed pod-CIDR addresses are dropped (both sides in
 * FORWARD; the source in INPUT, where the destination is the node itself), then the local pods'
 * egress and ingress are evaluated. Without pod CIDRs (none known) there are no drops.
 */
export function topChains(cidrs: readonly string[]): { forward: Chain; input: Chain } {
  const key = cidrs.join(',');
  let t = topChainMemo.get(key);
  if (!t) {
    t = {
      forward: { name: FORWARD_CHAIN, rules: [REPLIES_RULE, ...unknownDrops(cidrs, 'src'), ...unknownDrops(cidrs, 'dst'), ...EVALUATE_RULES] },
      input: { name: INPUT_CHAIN, rules: [REPLIES_RULE, ...unknownDrops(cidrs, 'src'), EVALUATE_RULES[0]!] },
    };
    if (topChainMemo.size > 64) topChainMemo.clear();
    topChainMemo.set(key, t);
  }
  return t;
}
const topChainMemo = new Map<string, { forward: Chain; input: Chain }>();
export const HOOKS: Ruleset['hooks'] = [
  { table: 'filter', chain: 'FORWARD', target: FORWARD_CHAIN, comment: `${PREFIX}: NetworkPolicy enforcement, keep first` },
  { table: 'filter', chain: 'INPUT', target: INPUT_CHAIN, comment: `${PREFIX}: NetworkPolicy egress to this node, keep first` },
];

/** Sorted set members, as the Ruleset holds them. */
export function sortedMembers(members: Map<string, boolean>): SetMember[] {
  const entries = [...members.keys()].sort();
  return entries.map((entry): SetMember => (members.get(entry) ? { entry, nomatch: true } : { entry }));
}

interface Group {
  readonly chain: ChainContent;
  readonly ips: Set<string>;
  /** The texts of the contents grouped under the chain's name: more than one is a collision (collisions.ts). */
  readonly texts: Set<string>;
}

/**
 * PCTL-EGRESS / PCTL-INGRESS and their bucket chains, from the dispatch rules of one direction
 * in chain name order, each with its group's addresses: a bucket rule and a bucket chain for each
 * bucket holding an address; a bucket chain's rules keep the given order.
 */
function bucketedDispatch(dir: PolicyType, groups: readonly { readonly rule: Rule; readonly ips: Iterable<string> }[]): { top: Chain; buckets: Chain[] } {
  const inBucket: Rule[][] = Array.from({ length: BUCKETS }, () => []);
  for (const g of groups) {
    const seen = new Set<number>();
    for (const ip of g.ips) seen.add(bucketOf(ip));
    for (const k of seen) inBucket[k]!.push(g.rule);
  }
  const top: Rule[] = [];
  const buckets: Chain[] = [];
  for (let k = 0; k < BUCKETS; k++) {
    if (inBucket[k]!.length === 0) continue;
    top.push(BUCKET_RULES[dir][k]!);
    buckets.push({ name: bucketChainName(dir, k), rules: inBucket[k]!, unordered: true });
  }
  return { top: { name: dir === 'Ingress' ? INGRESS_CHAIN : EGRESS_CHAIN, rules: top, unordered: true }, buckets };
}

export interface CompileOptions {
  /** Pod CIDRs of the node besides its Node object's `spec.podCIDRs` (agent configuration). */
  readonly podCidrs?: readonly string[];
}

export function compile(model: Model, node: string, opts: CompileOptions = {}): Ruleset {
  const ctx = new Context(model);
  const cidrs = nodePodCidrs(model, node, opts.podCidrs);
  const groups: Record<PolicyType, Map<string, Group>> = { Ingress: new Map(), Egress: new Map() };

  const local = model.podsOnNode(node).filter(isEnforceable);
  local.sort((a, b) => (a.uid < b.uid ? -1 : a.uid > b.uid ? 1 : 0));
  for (const pod of local) {
    const selecting = model.policiesSelecting(pod);
    for (const dir of ['Ingress', 'Egress'] as const) {
      const policies = selecting.filter((p) => p.policyTypes.includes(dir));
      if (policies.length === 0) continue;
      // Pods under the same policies (with the same named ports, for ingress) share a chain:
      // build it once per compile.
      const key = `${dir}|${policies.map((p) => p.uid).join(',')}|${podPortsKey(pod, dir)}`;
      let content = ctx.chains.get(key);
      if (!content) ctx.chains.set(key, (content = podChain(ctx, pod, dir, policies)));
      let g = groups[dir].get(content.name);
      if (!g) groups[dir].set(content.name, (g = { chain: content, ips: new Set(), texts: new Set() }));
      g.texts.add(contentText(content));
      for (const ip of pod.ips) g.ips.add(ip);
    }
  }
  if (cidrs.length > 0) {
    ctx.set(PROGRAMMED_SPEC, (s) => {
      for (const pod of local) for (const ip of pod.ips) s.members.set(ip, false);
    });
  }

  // The collision guard: a name that stands for two contents isolates both groups (collisions.ts).
  const make = (chain: ChainContent, ips: Set<string>): Group => ({ chain, ips, texts: new Set() });
  const collisions = sortCollisions([...quarantineGroups('Egress', groups.Egress, make), ...quarantineGroups('Ingress', groups.Ingress, make)]);

  const chains: Chain[] = [];
  const dispatch = (dir: PolicyType) =>
    bucketedDispatch(
      dir,
      [...groups[dir].values()]
        .sort((a, b) => (a.chain.name < b.chain.name ? -1 : 1))
        .map((g) => {
          const set = ctx.set(dispatchSetSpec(dir, g.chain.name), (s) => {
            for (const ip of g.ips) s.members.set(ip, false);
          });
          chains.push(g.chain);
          return { rule: dispatchRule(dir, set, g.chain.name), ips: g.ips };
        }),
    );
  const egress = dispatch('Egress');
  const ingress = dispatch('Ingress');
  const { forward, input } = topChains(cidrs);
  const top: Chain[] = [forward, input, egress.top, ingress.top, ...egress.buckets, ...ingress.buckets];
  chains.sort((a, b) => (a.name < b.name ? -1 : 1));

  const sets: IpSet[] = [...ctx.sets.values()]
    .map((s) => ({ name: s.name, type: s.type, purpose: s.purpose, members: sortedMembers(s.members) }))
    .sort((a, b) => (a.name < b.name ? -1 : 1));

  return { node, sets, chains: [...top, ...chains], hooks: HOOKS, ...(collisions.length > 0 && { collisions }) };
}
