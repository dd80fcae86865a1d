// The layout of a node's filter table: every chain we own that is not a policy chain, in what
// order, what each holds, and how a packet goes from one to the next. Both compilers (compile.ts
// and incremental/) build these chains only through this file, so the layout is written once;
// what a policy means (the rules inside policy chains) is built elsewhere (rules.ts, tiers.ts).
// docs/design.md, "What a node is programmed with", draws the same picture.
//
//   FORWARD -> PCTL-FORWARD (hook, position 1)         TOP_CHAINS, HOOKS
//     1. ctstate RELATED,ESTABLISHED -> RETURN          replies of allowed connections
//     1b. with dropMidstream (--revoke-established) only: -p tcp ! --syn ctstate NEW -> PCTL-MIDSTREAM
//         and -p udp, (destination, its port, source) in PCTL-revoked -> PCTL-MIDSTREAM (REVOKED_SET)
//        (jump; there: -s / -d <podCIDR>, the logged drop, the bridge address being the node's; anything else returns: MIDSTREAM_CHAIN)
//     2. -s <podCIDR> ! src in PCTL-programmed -g PCTL-UNKNOWN-SRC  unknown sources of the node's pod CIDRs
//     3. -d <podCIDR> ! dst in PCTL-programmed -g PCTL-UNKNOWN-DST  unknown destinations
//        (PCTL-UNKNOWN-SRC / -DST: the logged drop, NFLOG then DROP: UNKNOWN_CHAINS)
//     3b. with verdictCache (the agent's default): -p tcp|udp, (source, port, destination) in
//        PCTL-verdicts -> RETURN                         VERDICT_CACHE_SET: allowed within 10 s
//     4. -> PCTL-EGRESS, 5. -> PCTL-INGRESS             DIRECTIONS, in this order
//     6. with verdictCache: -p tcp|udp -j SET --add-set PCTL-verdicts src,dst,dst   what 4 and 5 allowed
//   INPUT -> PCTL-INPUT: 1, 2, then -> PCTL-EGRESS (a pod's egress to its own node)
//   With dropMidstream only: OUTPUT -> PCTL-OUTPUT: 1, 1b (the node's own mid-stream TCP to its
//   pods: REVOKE_OUTPUT_TOP)
//   Under kube-proxy's IPVS mode only (ServiceProxy, IPVS_TOP_CHAINS):
//   INPUT -> PCTL-INPUT: 1, 2, then RETURN for Service VIPs and node ports, then -> PCTL-EGRESS
//   OUTPUT -> PCTL-OUTPUT: 1, (1b), RETURN when the source is an address of this node
//   (`-m addrtype --src-type LOCAL`: the node's own traffic), 3, 4, 5
//   (1b follows 1 in every top chain, before PCTL-OUTPUT's RETURN of the node's own traffic)
//   PCTL-EGRESS: `-s 0.0.0.(16q)/0.0.0.48 -g PCTL-EQ-q` per q (q: bits 4-5 of k = address & 63) DISPATCH
//   PCTL-EQ-q:   `-s 0.0.0.(4b)/0.0.0.12 -g PCTL-ES-s` per s = 4q + b (b: bits 2-3)      the tree,
//   PCTL-ES-s:   `-s 0.0.0.c/0.0.0.3 -g PCTL-EB-k` per k = 4s + c (c: bits 0-1)          only branches
//                                                                                    leading to a bucket in use
//   PCTL-EB-k:   `src in <dispatch set> -g <entry chain>` per group of local pods with a pod in k
//   entry chain: the pod's first tier chain (linkTiers): an Admin chain whose undecided packets go
//     on by goto to the pod's next tier chain (NetworkPolicy or Baseline), or, without Admin
//     policies, that chain itself. With shared Admin chains (a tier that continues by
//     `dispatch`), the Admin chain is shared by the pods under the same Admin policies and goes on
//     to PCTL-EGRESS-NEXT, a second dispatch of the same shape (PCTL-ENQ-q, PCTL-ENB-k) that
//     finds the pod's next tier chain by address
//   (PCTL-INGRESS, PCTL-IQ-q, PCTL-IS-s, PCTL-IB-k, PCTL-INGRESS-NEXT, PCTL-INQ-q, PCTL-INS-s,
//   PCTL-INB-k the same by destination; PCTL-EGRESS-NEXT, PCTL-ENQ-q, PCTL-ENS-s, PCTL-ENB-k)
//   With a shared Admin prefix in a direction (WIDE_CHAINS: the Admin policies selecting every
//   pod, first in the tier), steps 4 / 5 and the other jumps to PCTL-EGRESS go to
//   PCTL-EGRESS-WIDE instead: `-s <podCIDR> -g PCTL-EGRESS-WIDE-R` (their rules, then
//   `-g PCTL-EGRESS`), last `-g PCTL-EGRESS`.
//
// Where to make a change:
// - a tier: tiers.ts (its place in TIERS, its chain kinds, which policies apply, its rules, how
//   it continues); the linking here (a tier that leaves a packet undecided goes to the next by
//   goto, or by the second dispatch) holds for any number of tiers;
// - an address family (IPv6): FAMILY (bucket of an address, the bucket match, which CIDRs
//   apply); the renderer's table and set family (src/sync/render.ts) would follow it;
// - the drop log: every final drop is built by drop-log.ts loggedDrop or chainedDrop (a
//   rate-limited NFLOG rule with the same match right before it, in place or in the drop chain of
//   its prefix, the prefix naming what decided); VERDICTS.deny is the
//   bare drop, for a caller that logs it that way.
//
// Why this shape (docs/design.md invariants):
// - Allow is RETURN, never ACCEPT, so the other side's chain and other agents' rules still run;
//   both the sender's egress and the receiver's ingress are evaluated in one FORWARD pass.
// - Dispatch by goto (cost-proportional at scale): a new connection tests at most
//   TREE_DEPTH x FANOUT address compares (12, 7.5 on average) to reach its bucket chain, then only
//   the groups with a local pod in its bucket (about 1/64 of them), and no rule after the one that
//   matched: `-g` leaves no return point, so a RETURN in a
//   tier chain (or falling off a bucket chain: a pod nothing applies to) returns straight to
//   PCTL-FORWARD (or PCTL-INPUT), which goes on with the other direction.
// - Tiers without marks: Accept is RETURN, Deny DROP, and a tier that leaves a packet undecided
//   goes on to the next tier by goto, so RETURN anywhere still means "this direction allows".
//   By default a tier chain names the pod's next tier chain, so a new connection is dispatched
//   once, as without tiers, and then walks its tier chains; the price is an Admin chain per next
//   chain (the Admin rules copied into each), so a change to an Admin policy that selects every
//   pod rewrites one chain per NetworkPolicy group. A tier that continues by `dispatch` (shared
//   Admin chains, TierOptions) names no next chain: its undecided packets go to the second
//   dispatch (DISPATCH_LEVELS `next`), which finds it by address as the first one finds the
//   entry; pods under the same Admin policies then share one Admin chain, and such a change
//   rewrites a few shared chains and the first dispatch's membership, while a packet of such a
//   pod walks both dispatches (at most 2 x 12 tree rules plus its groups' share).
// - The dispatch chains are `unordered`: their rules match disjoint packets (bucket masks split
//   the address space; a group's dispatch set holds its pods' addresses, and a pod is in one
//   group per direction), so the sync layer may append and delete single rules instead of
//   rewriting them. With an address in two groups (an IP reused while the old pod is still
//   listed; the model takes such addresses out, so only a quarantine race leaves one) any one of
//   their chains decides; each ends isolated, so the address stays isolated.
// - Fail closed in time: PCTL-programmed (the gate, IpSet.gate) holds the local pods the node
//   enforces; new connections of the pod CIDRs from or to any other address are dropped.
//   Across nodes: POD_CIDRS_SET and KNOWN_PODS_SPEC (a gate too) tell an address of any node's
//   pod CIDRs that no pod the node knows has, which the Deny rules that name pods drop (rules.ts).
// - Revoked stays revoked (dropMidstream, with --revoke-established): after the agent deletes the
//   conntrack entry of a connection a change denies, the next packet of either end is taken up
//   by conntrack's loose TCP pickup (nf_conntrack_tcp_loose, the node's setting) as a NEW
//   connection, in whichever direction it travels. Judged by policy, the server's packet would
//   usually pass (its egress and the client's ingress may allow that direction) and re-create
//   the entry in reverse, after which the client's packets pass as replies. A TCP connection
//   only ever starts with a SYN, so a NEW TCP packet without one, from or to the pod CIDRs, is
//   dropped instead (logged `midstream`). One rule per new connection: a SYN fails its flags
//   test, the first after -p; the CIDR tests wait in MIDSTREAM_CHAIN. That chain is jumped to,
//   not reached by goto: a mid-stream packet of no pod CIDR comes back and is judged as before.
//   UDP has no SYN: the answer of a revoked UDP flow that was on its way when the entry went
//   (a server answers late) would be tracked as the server's new flow, which its egress may
//   allow, and the client's datagrams would pass as its replies. So the agent puts the tuple
//   those answers travel on into REVOKED_SET before it deletes the entry, and a new UDP packet
//   on such a tuple goes to MIDSTREAM_CHAIN too, for as long as the entry lives in the set.
// - No mark bits are used, so nothing collides with kube-proxy, kubelet or flannel marks.
// - IPVS (kube-proxy --proxy-mode=ipvs): a connection to a Service VIP, a node port, an
//   externalIP or a LoadBalancer IP enters the node through INPUT with that address as
//   destination (local: on kube-ipvs0, or the node's own); IPVS rewrites it after filter INPUT
//   and sends it, source still the client, destination the backend, through OUTPUT. Judged at
//   INPUT it would meet the client's egress with the VIP, which no peer matches, and the
//   backend's ingress never. So under IPVS PCTL-INPUT lets Service VIPs and node ports pass
//   without a verdict and PCTL-OUTPUT judges what IPVS sends on, with the same dispatch as
//   PCTL-FORWARD: both directions, once per connection. The client may be a local pod, a pod
//   of another node or an outside address (a node port reached from elsewhere): its egress
//   dispatch finds a local pod or falls through, and a local backend's ingress judges it
//   against the client's real address, as FORWARD does under iptables mode (kube-proxy's SNAT
//   comes later, in POSTROUTING). When the backend is elsewhere its node judges ingress in its
//   FORWARD. Only what the node sends itself returns unjudged (NODE_OWN_RULE: source an
//   address of this node, by the node's local routes: kubelet probes from its InternalIP or
//   the bridge's address, hostNetwork processes), as under the other modes: an IPVS-forwarded
//   packet has such a source only when the node itself opened the connection, and a pod's
//   address is never the node's. Under iptables and nftables modes Service traffic is DNATed
//   before FORWARD, so nothing changes there.

import { LRUCache } from 'lru-cache';
import { bridgeAddress, cidrContainsIp, parseCidr } from '../model/cidr.ts';
import type { Model } from '../model/store.ts';
import type { Cidr, PolicyType } from '../model/types.ts';
import { loggedDrop } from './drop-log.ts';
import { PREFIX, type Action, type Chain, type Hook, type L4Protocol, type PortRange, type ProxyMode, type Rule, type SetMember } from './ruleset.ts';
import type { SetSpec } from './rules.ts';

// ---- family ----------------------------------------------------------------------------------

/** What the layout needs to know of an address family. */
export interface Family {
  /** `family` of the model's CIDRs this table matches (others never match: a v4 table ignores v6). */
  readonly cidrFamily: 4 | 6;
  /** The dispatch bucket of a pod address (throws on an address of another family). */
  bucketOf(ip: string): number;
  /**
   * The address match (`-s`/`-d` value) selecting the addresses whose bucket has `digit` as its
   * digit at tree depth `depth` (0: the most significant FANOUT_BITS of the bucket number).
   */
  digitNet(depth: number, digit: number): string;
  /** How a comment says which bits select the bucket. */
  readonly bucketMaskText: string;
}

/**
 * Pods are dispatched by the low BUCKET_BITS bits of their address: BUCKETS buckets, reached
 * through a tree of chains, each choosing FANOUT_BITS bits of the bucket number (most
 * significant first): the dispatch chain chooses the first digit, TREE_DEPTH - 1 levels of inner
 * chains the next ones, the last of them the bucket chain. A packet tests at most
 * TREE_DEPTH x FANOUT rules (12) to reach its bucket chain, 7.5 on average with every bucket in
 * use, all of them native address compares; the bucket chain then holds the groups with a local
 * pod among BUCKETS-th of the addresses (a /24 of 250 pods: about 4 pods), whose rules are ipset
 * lookups, the dearer test. With 16 buckets (two levels) a bucket held about 16 pods of about 11
 * groups, and the benchmark's flow tested 16 dispatch sets; with 64 it tests 5
 * (bench/README.md, part 4).
 */
export const BUCKET_BITS = 6;
export const FANOUT_BITS = 2;
export const BUCKETS = 1 << BUCKET_BITS;
export const FANOUT = 1 << FANOUT_BITS;
/** Rule levels from the dispatch chain to a bucket chain: the dispatch chain and the inner chains. */
export const TREE_DEPTH = BUCKET_BITS / FANOUT_BITS;

const IPV4_RE = /^(?:(?:0|[1-9][0-9]{0,2})\.){3}(0|[1-9][0-9]{0,2})$/;

/** IPv4: the bucket of an address is its last octet & (BUCKETS - 1). */
export const IPV4: Family = {
  cidrFamily: 4,
  bucketOf(ip: string): number {
    const m = IPV4_RE.exec(ip);
    const octet = m ? Number(m[1]) : NaN;
    if (!(octet <= 255)) throw new Error(`dispatch bucket: pod address "${ip}" is not a dotted-quad IPv4 address`);
    return octet & (BUCKETS - 1);
  },
  digitNet(depth, digit) {
    const shift = BUCKET_BITS - FANOUT_BITS * (depth + 1);
    return `0.0.0.${digit << shift}/0.0.0.${(FANOUT - 1) << shift}`;
  },
  bucketMaskText: `address & ${BUCKETS - 1}`,
};

/** The family this compiler programs (the IPv4 filter table). */
export const FAMILY: Family = IPV4;

/** The dispatch bucket of a pod address. */
export function bucketOf(ip: string): number {
  return FAMILY.bucketOf(ip);
}

// ---- verdicts --------------------------------------------------------------------------------

/**
 * How a decision is expressed on the kernel. `allow` returns (to PCTL-FORWARD or PCTL-INPUT,
 * which goes on with the other direction and then other agents' rules); `deny` drops; `next`
 * hands the packet to the next tier chain of the same pod and direction by goto (so its RETURN
 * still returns to PCTL-FORWARD), or allows when no tier follows.
 */
const ALLOW: Action = { kind: 'return' };
const DENY: Action = { kind: 'drop' };
export const VERDICTS = {
  allow: ALLOW,
  deny: DENY,
  next: (chain: string | undefined): Action => (chain === undefined ? ALLOW : { kind: 'goto', chain }),
} as const;

// ---- top chains and hooks --------------------------------------------------------------------

/** The directions in the order PCTL-FORWARD evaluates them. */
export const DIRECTIONS: readonly PolicyType[] = ['Egress', 'Ingress'];

export const FORWARD_CHAIN = `${PREFIX}-FORWARD`;
export const INPUT_CHAIN = `${PREFIX}-INPUT`;
export const OUTPUT_CHAIN = `${PREFIX}-OUTPUT`;
export const EGRESS_CHAIN = `${PREFIX}-EGRESS`;
export const INGRESS_CHAIN = `${PREFIX}-INGRESS`;

/** How a direction dispatches its local pods: from which chain, by which side of the packet. */
export const DISPATCH: Record<PolicyType, { readonly chain: string; readonly side: 'src' | 'dst'; readonly letter: 'E' | 'I' }> = {
  Egress: { chain: EGRESS_CHAIN, side: 'src', letter: 'E' },
  Ingress: { chain: INGRESS_CHAIN, side: 'dst', letter: 'I' },
};

// ---- service proxy ---------------------------------------------------------------------------

/** kube-proxy's default `--service-node-port-range` (the API server's). */
export const DEFAULT_NODE_PORTS: PortRange = { from: 30000, to: 32767 };

/**
 * The node's service proxy, as far as the layout depends on it. Only `ipvs` changes anything
 * (see "IPVS" at the top of this file); iptables and nftables modes DNAT before FORWARD.
 */
export interface ServiceProxy {
  readonly mode: ProxyMode;
  /** ipvs: the Service ClusterIP ranges (the API server's --service-cluster-ip-range). */
  readonly serviceCidrs?: readonly string[];
  /** ipvs: the node port range; default DEFAULT_NODE_PORTS. */
  readonly nodePorts?: PortRange;
}

/** The IPVS part of the layout, canonical: undefined under every other mode. */
interface IpvsLayout {
  readonly serviceCidrs: readonly string[];
  readonly nodePorts: PortRange;
}

function ipvsLayout(proxy: ServiceProxy | undefined): IpvsLayout | undefined {
  if (proxy?.mode !== 'ipvs') return undefined;
  const cidrs = new Set<string>();
  for (const text of proxy.serviceCidrs ?? []) {
    const c = parseCidr(text);
    if (c.family === FAMILY.cidrFamily) cidrs.add(c.text);
  }
  return { serviceCidrs: [...cidrs].sort(), nodePorts: proxy.nodePorts ?? DEFAULT_NODE_PORTS };
}

/** One step of a top chain. */
type TopStep =
  | { readonly kind: 'replies' }
  /**
   * With dropMidstream: a NEW TCP packet without SYN (a mid-stream pickup) of the pod CIDRs, or
   * a new UDP packet on the answer tuple of a flow the agent ended (REVOKED_SET): drop.
   */
  | { readonly kind: 'midstream' }
  /** New connections from (`src`) or to (`dst`) an unprogrammed address of the pod CIDRs: drop. */
  | { readonly kind: 'unknown'; readonly side: 'src' | 'dst' }
  /** Jump to a direction's dispatch chain. */
  | { readonly kind: 'evaluate'; readonly dir: PolicyType }
  /** IPVS: to a Service VIP or a node port: no verdict here, IPVS forwards it through OUTPUT. */
  | { readonly kind: 'services' }
  /** IPVS: from an address of this node (the node's own traffic, NODE_OWN_RULE): no verdict. */
  | { readonly kind: 'nodeOwn' }
  /** With verdictCache: a TCP or UDP client, server and port allowed within VERDICT_CACHE_TIMEOUT_S: allowed. */
  | { readonly kind: 'cached' }
  /** With verdictCache, last: what every rule above allowed (TCP, UDP) is remembered. */
  | { readonly kind: 'remember' };

interface TopChain {
  readonly name: string;
  readonly hook: Hook['chain'];
  readonly hookComment: string;
  readonly steps: readonly TopStep[];
}

const FORWARD_TOP: TopChain = {
  name: FORWARD_CHAIN,
  hook: 'FORWARD',
  hookComment: `${PREFIX}: NetworkPolicy enforcement, keep first`,
  steps: [
    { kind: 'replies' },
    { kind: 'midstream' },
    { kind: 'unknown', side: 'src' },
    { kind: 'unknown', side: 'dst' },
    { kind: 'cached' },
    ...DIRECTIONS.map((dir) => ({ kind: 'evaluate' as const, dir })),
    { kind: 'remember' },
  ],
};

/**
 * The chains the hooks jump to, in Ruleset order. INPUT sees packets addressed to the node
 * itself: a pod's egress to its own node is checked there; the destination is the node, so only
 * the source can be an unknown pod address.
 */
export const TOP_CHAINS: readonly TopChain[] = [
  FORWARD_TOP,
  {
    name: INPUT_CHAIN,
    hook: 'INPUT',
    hookComment: `${PREFIX}: NetworkPolicy egress to this node, keep first`,
    steps: [{ kind: 'replies' }, { kind: 'midstream' }, { kind: 'unknown', side: 'src' }, { kind: 'evaluate', dir: 'Egress' }],
  },
];

/**
 * The top chains under kube-proxy's IPVS mode. PCTL-INPUT lets packets to Service VIPs and node
 * ports pass (after the unknown-source drops: an unprogrammed pod still gets nothing, invariant
 * fail-closed-in-time); PCTL-OUTPUT judges what IPVS sends on like PCTL-FORWARD does, whoever
 * the client (a local pod, a pod of another node, an outside address), and leaves the node's
 * own traffic alone: what leaves from an address of this node. Every other packet in OUTPUT
 * comes from IPVS (a pod's own packets never cross the node's OUTPUT, and the node's sockets
 * send from its addresses).
 */
export const IPVS_TOP_CHAINS: readonly TopChain[] = [
  FORWARD_TOP,
  {
    name: INPUT_CHAIN,
    hook: 'INPUT',
    hookComment: `${PREFIX}: NetworkPolicy egress to this node, keep first`,
    steps: [{ kind: 'replies' }, { kind: 'midstream' }, { kind: 'unknown', side: 'src' }, { kind: 'services' }, { kind: 'evaluate', dir: 'Egress' }],
  },
  {
    name: OUTPUT_CHAIN,
    hook: 'OUTPUT',
    hookComment: `${PREFIX}: NetworkPolicy of pod traffic IPVS forwards, keep first`,
    // The mid-stream drop before the node's own traffic leaves (REVOKE_OUTPUT_TOP says why);
    // what the node sends is otherwise never judged here, and everything else is.
    steps: [{ kind: 'replies' }, { kind: 'midstream' }, { kind: 'nodeOwn' }, { kind: 'unknown', side: 'dst' }, ...DIRECTIONS.map((dir) => ({ kind: 'evaluate' as const, dir }))],
  },
];

/**
 * With dropMidstream (--revoke-established), outside IPVS: the mid-stream drop for what the node
 * itself sends. A pod's connection to a hostNetwork server on its node is the pod's egress,
 * judged at PCTL-INPUT, and revoked like any other; but the server's packets leave the node
 * through OUTPUT, where no policy judges the node's own traffic. Had the server sent first after
 * the revocation, conntrack would take its mid-stream packet for a new connection of the node's
 * and the pod's packets would pass as its replies: the revoked connection back. Dropped here
 * instead, as in FORWARD (the node's own new connections start with a SYN and are not touched).
 */
const REVOKE_OUTPUT_TOP: TopChain = {
  name: OUTPUT_CHAIN,
  hook: 'OUTPUT',
  hookComment: `${PREFIX}: mid-stream TCP of the node to its pods (--revoke-established), keep first`,
  steps: [{ kind: 'replies' }, { kind: 'midstream' }],
};
const REVOKE_TOP_CHAINS: readonly TopChain[] = [...TOP_CHAINS, REVOKE_OUTPUT_TOP];

/** Whether the layout drops mid-stream pickups: asked for (dropMidstream) and the node has pod CIDRs to drop them for. */
export function dropsMidstream(cidrs: readonly string[], dropMidstream: boolean | undefined): boolean {
  return !!dropMidstream && cidrs.length > 0;
}

/** The top chains for this service proxy and mid-stream mode (dropsMidstream). */
function topChainsFor(proxy: ServiceProxy | undefined, midstream: boolean): readonly TopChain[] {
  return ipvsLayout(proxy) ? IPVS_TOP_CHAINS : midstream ? REVOKE_TOP_CHAINS : TOP_CHAINS;
}

const hooksOf = (chains: readonly TopChain[]): readonly Hook[] => chains.map((t) => ({ table: 'filter', chain: t.hook, target: t.name, comment: t.hookComment }));

/** Our only rules in chains we do not own: a jump at position 1 (invariant own-only-ours). */
export const HOOKS: readonly Hook[] = hooksOf(TOP_CHAINS);
const IPVS_HOOKS: readonly Hook[] = hooksOf(IPVS_TOP_CHAINS);
const REVOKE_HOOKS: readonly Hook[] = hooksOf(REVOKE_TOP_CHAINS);

/** The hooks for a node with this service proxy and mid-stream mode (OUTPUT as well under IPVS or with dropsMidstream). */
export function hooksFor(proxy: ServiceProxy | undefined, midstream = false): readonly Hook[] {
  const tops = topChainsFor(proxy, midstream);
  return tops === IPVS_TOP_CHAINS ? IPVS_HOOKS : tops === REVOKE_TOP_CHAINS ? REVOKE_HOOKS : HOOKS;
}

/**
 * The gate (invariant fail-closed-in-time): the hash:ip set of every address of a local pod this
 * node enforces (isolated or not). The sync layer adds an address to it only after every other
 * change of the same apply is in force, and removes one before anything else (IpSet.gate).
 */
export const PROGRAMMED_SET = `${PREFIX}-programmed`;
export const PROGRAMMED_SPEC = { name: PROGRAMMED_SET, type: 'hash:ip', purpose: 'addresses of the local pods this node enforces', gate: true } as const;

/**
 * Whether the node gets PCTL-programmed: with pod CIDRs, for the unknown-address drops, its only
 * users (under IPVS too: PCTL-OUTPUT tells the node's own packets by their source's address
 * type, NODE_OWN_RULE, not by this set).
 */
export function programmedSetNeeded(cidrs: readonly string[]): boolean {
  return cidrs.length > 0;
}

/**
 * The gate set of every address of a pod the node knows, on any node (the enforceable pods of
 * the model): an address leaves it before anything else changes and joins it after every other
 * change is in force (IpSet.gate), so the pod's own peer sets hold it first.
 */
export const KNOWN_PODS_SPEC: SetSpec = { name: `${PREFIX}-known`, type: 'hash:ip', purpose: 'addresses of every pod the node knows, on any node', gate: true };

/**
 * The hash:net set of every node's pod CIDRs, each node's own addresses in them (the bridge's,
 * an InternalIP that lies in one) exceptions: they are no pod's.
 */
export const POD_CIDRS_SET = `${PREFIX}-pod-cidrs`;

const podCidrSpecs = new WeakMap<Model, { readonly generation: number; readonly spec: SetSpec & { readonly members: readonly SetMember[] } }>();

/** POD_CIDRS_SET as the model has it now (its members change only with the Nodes' podCIDRs). */
export function podCidrsSetSpec(model: Model): SetSpec & { readonly members: readonly SetMember[] } {
  const memo = podCidrSpecs.get(model);
  if (memo && memo.generation === model.generation) return memo.spec;
  const nets = new Map<string, Cidr>();
  const own = new Set<string>();
  for (const n of model.allNodes()) {
    for (const text of n.podCIDRs) {
      try {
        const c = parseCidr(text);
        if (c.family !== FAMILY.cidrFamily) continue;
        nets.set(c.text, c);
        const b = bridgeAddress(c);
        if (b !== undefined) own.add(b);
      } catch {
        // An invalid podCIDR matches nothing; the model's validation reports it.
      }
    }
  }
  for (const n of model.allNodes()) for (const ip of n.internalIPs) if ([...nets.values()].some((c) => cidrContainsIp(c, ip))) own.add(ip);
  const members: SetMember[] = [...nets.keys()].sort().map((entry) => ({ entry }));
  for (const ip of [...own].sort()) members.push({ entry: ip, nomatch: true });
  const spec = { name: POD_CIDRS_SET, type: 'hash:net' as const, purpose: "every node's pod CIDRs, not the nodes' own addresses in them", members };
  podCidrSpecs.set(model, { generation: model.generation, spec });
  return spec;
}

/** A key that changes exactly when POD_CIDRS_SET's members do. */
export function podCidrsKey(model: Model): string {
  return podCidrsSetSpec(model).members.map((m) => (m.nomatch ? `!${m.entry}` : m.entry)).join(',');
}

export const REPLIES_RULE: Rule = { match: { ctstate: ['RELATED', 'ESTABLISHED'] }, action: VERDICTS.allow, comment: 'replies of allowed connections' };

/**
 * IPVS, PCTL-OUTPUT: the node's own traffic returns unjudged, as under the other modes; it is
 * what leaves from an address of this node (addrtype LOCAL, by the node's local routes: its
 * InternalIP, the bridge's address, which kubelet's probes leave from, hostNetwork processes).
 * Nothing else returns here: IPVS forwards a connection to a node port from a pod of another
 * node or an outside client with that client's address, and a local backend's ingress must
 * judge it (telling "not a local pod" instead, by PCTL-programmed, let every such client
 * through a node port to any local backend).
 */
const NODE_OWN_RULE: Rule = {
  match: { addrType: { src: { type: 'LOCAL' } } },
  action: VERDICTS.allow,
  comment: 'from an address of this node: traffic the node sends itself is not policed',
};

const EVALUATE_RULES: Record<PolicyType, Rule> = {
  Egress: { match: {}, action: { kind: 'jump', chain: EGRESS_CHAIN }, comment: 'egress of local pods' },
  Ingress: { match: {}, action: { kind: 'jump', chain: INGRESS_CHAIN }, comment: 'ingress of local pods' },
};

/**
 * The shared Admin prefix (invariant *shared-admin-prefix*, docs/design.md): the Admin
 * ClusterNetworkPolicies whose subject selects every pod and that come before every other Admin
 * policy in evaluation order (tiers.ts sharedAdminPrefix) are the same first rules for every
 * pod, so they are not copied into each pod's Admin chain: the top chains' step that evaluates a
 * direction jumps to `gate` instead of the dispatch chain; `gate` sends a packet of a local pod
 * (one of the node's pod CIDRs: the unknown-address drops before it leave only programmed pods
 * there) to `rules` and any other to the dispatch; `rules` holds the prefix's rules (Accept
 * RETURN, Deny the logged drop; Pass never, it ends the prefix) and sends what they leave
 * undecided to the dispatch, where the pod's own tier chains go on. A change to such a policy
 * rewrites `rules` alone, where it would rewrite one Admin chain per group of pods. A pod with an
 * address outside the pod CIDRs misses the gate: its own chains keep those policies' rules.
 */
export const WIDE_CHAINS: Record<PolicyType, { readonly gate: string; readonly rules: string }> = {
  Egress: { gate: `${EGRESS_CHAIN}-WIDE`, rules: `${EGRESS_CHAIN}-WIDE-R` },
  Ingress: { gate: `${INGRESS_CHAIN}-WIDE`, rules: `${INGRESS_CHAIN}-WIDE-R` },
};

/** The same, when the direction has the shared Admin prefix: to its gate first. */
const WIDE_EVALUATE_RULES: Record<PolicyType, Rule> = {
  Egress: { ...EVALUATE_RULES.Egress, action: { kind: 'jump', chain: WIDE_CHAINS.Egress.gate } },
  Ingress: { ...EVALUATE_RULES.Ingress, action: { kind: 'jump', chain: WIDE_CHAINS.Ingress.gate } },
};

/** Where a packet from (`src`) or to (`dst`) an unprogrammed address of the pod CIDRs goes: logged and dropped. */
export const UNKNOWN_CHAINS: Record<'src' | 'dst', string> = { src: `${PREFIX}-UNKNOWN-SRC`, dst: `${PREFIX}-UNKNOWN-DST` };

/**
 * The drops of unprogrammed addresses of the node's pod CIDRs, on one side of a packet: one
 * rule per CIDR whose match (the CIDR, then the gate set) sends the packet on by goto to
 * UNKNOWN_CHAINS[side]. The log rule and the drop live there, so a packet of a programmed pod
 * meets the gate set once per side, not once per rule of a logged drop.
 */
function unknownDrops(cidrs: readonly string[], side: 'src' | 'dst'): Rule[] {
  return cidrs.map((net) => ({
    match: { ...(side === 'src' ? { srcNet: net } : { dstNet: net }), sets: [{ set: PROGRAMMED_SET, dirs: side, negate: true }] },
    action: { kind: 'goto', chain: UNKNOWN_CHAINS[side] },
    comment: `${side === 'src' ? 'from' : 'to'} an address of pod CIDR ${net} that is not a programmed pod`,
  }));
}

/** The chains the unknown-address drops go to (memoized rules: both compilers share them). */
const UNKNOWN_CHAIN_RULES: Record<'src' | 'dst', readonly Rule[]> = {
  src: loggedDrop({}, 'from an address of the pod CIDRs that is not a programmed pod', { kind: 'unknown', dir: 'Egress' }),
  // An unknown source is denied as its egress, an unknown destination as its ingress.
  dst: loggedDrop({}, 'to an address of the pod CIDRs that is not a programmed pod', { kind: 'unknown', dir: 'Ingress' }),
};

/** Where a mid-stream pickup goes (dropMidstream): the logged drops of the pod CIDRs' packets. */
export const MIDSTREAM_CHAIN = `${PREFIX}-MIDSTREAM`;

/**
 * The top chains' test for a mid-stream pickup: TCP, not a SYN, and new to conntrack (past the
 * replies rule only NEW, INVALID and UNTRACKED are left; INVALID and UNTRACKED are judged as
 * before). In this order a SYN fails at the flags, the first test after the protocol.
 */
const MIDSTREAM_RULE: Rule = {
  match: { protocol: 'tcp', syn: false, ctstate: ['NEW'] },
  action: { kind: 'jump', chain: MIDSTREAM_CHAIN },
  comment: 'TCP without SYN that conntrack takes for a new connection: a revoked or lost connection, never a new one',
};

/**
 * Revoked stays revoked, for UDP (invariant fail-closed-in-time): for each UDP flow the agent
 * ends (`--revoke-established`), where its answers go and who sends them, `<client>,udp:<the
 * client's port>,<server>` (the reply tuple's destination, its port and its source: after a
 * Service's DNAT the backend), added before the entry is deleted. Keyed by the client's port,
 * usually ephemeral, not the server's: ipset has no type with both ports, and this one blocks
 * only what goes to that very socket of the client (from any port of the server's). UDP has no SYN to tell a flow's start from its middle: an
 * answer still on its way when the entry went (a server that answers late) would be tracked as
 * a new flow of the server's, which its egress and the client's ingress may allow, and the
 * client's datagrams would then pass as its replies, for as long as the client sends. The kernel
 * expires each entry after REVOKED_TIMEOUT_S, the default time conntrack keeps an answered UDP
 * flow (nf_conntrack_udp_timeout_stream): an answer later than that is the server's own new
 * flow. The set's members are the agent's, never the compiler's (IpSet.runtime).
 */
export const REVOKED_SET = `${PREFIX}-revoked`;
export const REVOKED_TIMEOUT_S = 120;
export const REVOKED_SPEC: SetSpec = { name: REVOKED_SET, type: 'hash:ip,port,ip', purpose: 'answer tuples of UDP flows the agent ended (--revoke-established), each for a while', runtime: { timeout: REVOKED_TIMEOUT_S } };

/**
 * The top chains' test for such an answer. Past the replies rule only new packets are left;
 * `-p udp` first, a native test, so a new TCP connection never pays the set lookup.
 */
const REVOKED_ANSWER_RULE: Rule = {
  match: { protocol: 'udp', sets: [{ set: REVOKED_SET, dirs: 'dst,dst,src' }] },
  action: { kind: 'jump', chain: MIDSTREAM_CHAIN },
  comment: 'UDP on the answer tuple of a flow the agent ended: a revoked flow, never a new one',
};

/**
 * The verdict cache (invariant *verdicts-of-the-rules-in-force*, docs/design.md "The verdict
 * cache"): what a new TCP or UDP connection costs is mostly its walk through the dispatch and the
 * tier chains, dozens of rules and set lookups, and that walk decides by four things only: the
 * source, the destination, the protocol and the destination port (no rule of the walk tests
 * anything else: ports of the source, flags and conntrack states are tested before it). So its
 * last rule remembers what the walk allowed as `<client>,<protocol>:<port>,<server>`, and a new
 * connection with the same four things skips the walk. A verdict is only as good as the rules and
 * sets that gave it: whoever writes anything of ours to the kernel that may deny something empties
 * the set right after (IpSet.runtime.flushOnChange; the Syncer, src/sync/verdict-bearing.ts), so a
 * change is in force for new connections as soon as the sync returns, as without the cache. The
 * kernel expires an entry VERDICT_CACHE_TIMEOUT_S after the walk that added it (a hit does not
 * renew it): even a flush that fails leaves no verdict older than that. Only allowed connections are remembered; a denied one walks every
 * time, so the drop log and the deny counters see each. After the unknown-address drops: an
 * address the node does not enforce yet is dropped whatever was remembered.
 */
export const VERDICT_CACHE_SET = `${PREFIX}-verdicts`;
export const VERDICT_CACHE_TIMEOUT_S = 10;
export const VERDICT_CACHE_SPEC: SetSpec = {
  name: VERDICT_CACHE_SET,
  type: 'hash:ip,port,ip',
  purpose: `client, port and server of TCP and UDP connections the rules in force allowed within the last ${VERDICT_CACHE_TIMEOUT_S} s (the verdict cache)`,
  // Bounded (about 3 MB of kernel memory when full): a pod that opens connections to every port
  // its policies allow fills it, and then only stops new verdicts from being remembered.
  runtime: { timeout: VERDICT_CACHE_TIMEOUT_S, flushOnChange: true, maxelem: 65536 },
};

/** The protocols whose verdicts are remembered: the ones with ports (the kernel has no SCTP here, and ICMP is rare). */
const CACHED_PROTOCOLS = ['tcp', 'udp'] as const;

const VERDICT_HIT_RULES: readonly Rule[] = CACHED_PROTOCOLS.map((protocol) => ({
  match: { protocol, sets: [{ set: VERDICT_CACHE_SET, dirs: 'src,dst,dst' }] },
  action: VERDICTS.allow,
  comment: `verdict cache: ${protocol} client, port and server the rules in force allowed within ${VERDICT_CACHE_TIMEOUT_S} s`,
}));

const VERDICT_REMEMBER_RULES: readonly Rule[] = CACHED_PROTOCOLS.map((protocol) => ({
  match: { protocol },
  action: { kind: 'remember', set: VERDICT_CACHE_SET, timeout: VERDICT_CACHE_TIMEOUT_S },
  comment: `verdict cache: ${protocol} allowed by every rule above, remembered for ${VERDICT_CACHE_TIMEOUT_S} s`,
}));

/** The sets the layout's own rules match whose members the compiler never fills (the agent's or the kernel's). */
export function layoutRuntimeSets(cidrs: readonly string[], layout: LayoutOptions): readonly SetSpec[] {
  return [...(dropsMidstream(cidrs, layout.dropMidstream) ? [REVOKED_SPEC] : []), ...(layout.verdictCache ? [VERDICT_CACHE_SPEC] : [])];
}

/**
 * MIDSTREAM_CHAIN's rules (for a TCP packet without SYN, or UDP on a revoked flow's answer
 * tuple): the logged drop of each pod CIDR, as a source (egress), then as a destination
 * (ingress). First the bridge address of each pod CIDR (its first address: the
 * node's, no pod's; invariant *fail-closed-in-time*), which `-s <podCIDR>` would take for a pod:
 * its mid-stream TCP to a pod CIDR (a hostNetwork server answering a revoked connection through
 * OUTPUT) is dropped as the pod's ingress, and to anything else returns, as any other of the
 * node's own packets. Likewise a packet to the bridge's address that no pod sent (the pods'
 * are dropped as their egress just before) is the node's own and returns.
 */
function midstreamDrops(cidrs: readonly string[]): Rule[] {
  const bridges = cidrs.flatMap((net) => {
    const b = bridgeAddress(parseCidr(net));
    return b ? [`${b}/32`] : [];
  });
  return [
    ...bridges.flatMap((src) =>
      cidrs.flatMap((net) => loggedDrop({ srcNet: src, dstNet: net }, `mid-stream packet from the node's bridge address ${src} to pod CIDR ${net}: its connection was revoked or its conntrack entry lost`, { kind: 'midstream', dir: 'Ingress' })),
    ),
    ...bridges.map((src): Rule => ({ match: { srcNet: src }, action: { kind: 'return' }, comment: `mid-stream packet from the node's bridge address ${src} elsewhere: the node's own, not judged` })),
    ...cidrs.flatMap((net) => loggedDrop({ srcNet: net }, `mid-stream packet from pod CIDR ${net}: its connection was revoked or its conntrack entry lost`, { kind: 'midstream', dir: 'Egress' })),
    ...bridges.map((dst): Rule => ({ match: { dstNet: dst }, action: { kind: 'return' }, comment: `mid-stream packet to the node's bridge address ${dst} from no pod: the node's own, not judged` })),
    ...cidrs.flatMap((net) => loggedDrop({ dstNet: net }, `mid-stream packet to pod CIDR ${net}: its connection was revoked or its conntrack entry lost`, { kind: 'midstream', dir: 'Ingress' })),
  ];
}

const NODE_PORT_PROTOCOLS: readonly L4Protocol[] = ['tcp', 'udp', 'sctp'];

/** IPVS: Service VIPs and node ports pass PCTL-INPUT without a verdict; PCTL-OUTPUT gives it. */
function serviceReturns(ipvs: IpvsLayout): Rule[] {
  const { from, to } = ipvs.nodePorts;
  return [
    ...ipvs.serviceCidrs.map((net): Rule => ({
      match: { dstNet: net },
      action: VERDICTS.allow,
      comment: `to a Service VIP of ${net}: IPVS forwards it, judged in ${OUTPUT_CHAIN} against the backend`,
    })),
    ...NODE_PORT_PROTOCOLS.map((protocol): Rule => ({
      match: { protocol, dports: [{ from, to }] },
      action: VERDICTS.allow,
      comment: `to a node port (${protocol} ${from}-${to}): IPVS forwards it, judged in ${OUTPUT_CHAIN} against the backend`,
    })),
  ];
}

/** What the layout depends on besides the pod CIDRs and the dispatch (both compilers pass the same). */
export interface LayoutOptions {
  /** kube-proxy's mode and, under IPVS, its Service ranges; absent: iptables mode. */
  readonly proxy?: ServiceProxy | undefined;
  /**
   * Drop mid-stream TCP pickups of the pod CIDRs (MIDSTREAM_CHAIN): for agents that revoke
   * established connections (`--revoke-established`), so a revoked connection stays revoked.
   */
  readonly dropMidstream?: boolean | undefined;
  /**
   * Per direction, the rules of the shared Admin prefix (WIDE_CHAINS: the Admin policies that
   * select every pod and come first in the tier), ending where undecided packets go on to the
   * dispatch. Absent or empty: no prefix chains, and the top chains jump to the dispatch chain.
   */
  readonly wide?: Partial<Record<PolicyType, readonly Rule[]>> | undefined;
  /**
   * The verdict cache in PCTL-FORWARD (VERDICT_CACHE_SET): on unless the agent runs with
   * `--no-verdict-cache`; absent or false here (a bare compile) means off.
   */
  readonly verdictCache?: boolean | undefined;
}

/** Whether the layout has the shared Admin prefix chains in this direction (they need pod CIDRs to gate on). */
function hasWidePrefix(cidrs: readonly string[], layout: LayoutOptions, dir: PolicyType): boolean {
  return cidrs.length > 0 && (layout.wide?.[dir]?.length ?? 0) > 0;
}

/** The shared Admin prefix chains of the directions that have one: gate, then rules. */
function wideChains(cidrs: readonly string[], layout: LayoutOptions): Chain[] {
  const out: Chain[] = [];
  for (const dir of DIRECTIONS) {
    if (!hasWidePrefix(cidrs, layout, dir)) continue;
    const { gate, rules } = WIDE_CHAINS[dir];
    const side = DISPATCH[dir].side;
    out.push({
      name: gate,
      rules: [
        ...cidrs.map((net): Rule => ({ match: side === 'src' ? { srcNet: net } : { dstNet: net }, action: { kind: 'goto', chain: rules }, comment: `${dir.toLowerCase()} of local pods (pod CIDR ${net}): the Admin policies every pod shares first` })),
        { match: {}, action: { kind: 'goto', chain: DISPATCH_CHAINS.entry[dir] }, comment: `${dir.toLowerCase()} of other addresses: the dispatch` },
      ],
    });
    out.push({ name: rules, rules: layout.wide![dir]! });
  }
  return out;
}

/**
 * The top chains for a node with these pod CIDRs and layout options, in TOP_CHAINS (or
 * IPVS_TOP_CHAINS) order (memoized: equal inputs give the same objects, so an unchanged top
 * chain is skipped by identity). Without pod CIDRs (none known) there are no drops.
 */
export function topChains(cidrs: readonly string[], layout: LayoutOptions = {}): readonly Chain[] {
  const ipvs = ipvsLayout(layout.proxy);
  const midstream = dropsMidstream(cidrs, layout.dropMidstream);
  const wide = { Egress: hasWidePrefix(cidrs, layout, 'Egress'), Ingress: hasWidePrefix(cidrs, layout, 'Ingress') };
  const key = (ipvs ? `${cidrs.join(',')}|ipvs|${ipvs.serviceCidrs.join(',')}|${ipvs.nodePorts.from}-${ipvs.nodePorts.to}` : cidrs.join(',')) + (midstream ? '|midstream' : '') + (wide.Egress ? '|wideE' : '') + (wide.Ingress ? '|wideI' : '') + (layout.verdictCache ? '|verdicts' : '');
  let t = topChainMemo.get(key);
  if (!t) {
    const tops = topChainsFor(layout.proxy, midstream);
    const chains: Chain[] = tops.map((tc) => ({
      name: tc.name,
      rules: tc.steps.flatMap((s): Rule[] => {
        switch (s.kind) {
          case 'replies':
            return [REPLIES_RULE];
          case 'midstream':
            return midstream ? [MIDSTREAM_RULE, REVOKED_ANSWER_RULE] : [];
          case 'unknown':
            return unknownDrops(cidrs, s.side);
          case 'evaluate':
            return [wide[s.dir] ? WIDE_EVALUATE_RULES[s.dir] : EVALUATE_RULES[s.dir]];
          case 'services':
            return serviceReturns(ipvs!);
          case 'nodeOwn':
            return [NODE_OWN_RULE];
          case 'cached':
            return layout.verdictCache ? [...VERDICT_HIT_RULES] : [];
          case 'remember':
            return layout.verdictCache ? [...VERDICT_REMEMBER_RULES] : [];
        }
      }),
    }));
    // The unknown-address chains the top chains send packets to (none without pod CIDRs).
    if (cidrs.length > 0) {
      for (const side of ['src', 'dst'] as const) {
        if (tops.some((tc) => tc.steps.some((st) => st.kind === 'unknown' && st.side === side))) chains.push({ name: UNKNOWN_CHAINS[side], rules: UNKNOWN_CHAIN_RULES[side] });
      }
    }
    if (midstream) chains.push({ name: MIDSTREAM_CHAIN, rules: midstreamDrops(cidrs) });
    t = chains;
    topChainMemo.set(key, t);
  }
  return t;
}
const topChainMemo = new LRUCache<string, readonly Chain[]>({ max: 64 });

/**
 * The node's pod CIDRs of the layout's family, canonical, sorted and without duplicates:
 * `Node.spec.podCIDRs` of this node plus any given by the agent's configuration. Unparsable
 * entries and other families are left out.
 */
export function nodePodCidrs(model: Model, node: string, extra: readonly string[] = []): string[] {
  const out = new Set<string>();
  for (const text of [...(model.findNode(node)?.podCIDRs ?? []), ...extra]) {
    try {
      const c = parseCidr(text);
      if (c.family === FAMILY.cidrFamily) out.add(c.text);
    } catch {
      // An invalid podCIDR cannot be matched; the model's validation reports it.
    }
  }
  return [...out].sort();
}

// ---- dispatch ----------------------------------------------------------------------------

/**
 * The two dispatch levels of a direction: `entry` sends a local pod to its first tier chain
 * (from PCTL-FORWARD by way of PCTL-EGRESS / PCTL-INGRESS); `next` sends it, after a tier that
 * continues by dispatch (Admin), to its next tier chain.
 */
export type DispatchLevel = 'entry' | 'next';
export const DISPATCH_LEVELS: readonly DispatchLevel[] = ['entry', 'next'];

/** A direction's dispatch chain at each level. */
export const DISPATCH_CHAINS: Record<DispatchLevel, Record<PolicyType, string>> = {
  entry: { Egress: EGRESS_CHAIN, Ingress: INGRESS_CHAIN },
  next: { Egress: `${EGRESS_CHAIN}-NEXT`, Ingress: `${INGRESS_CHAIN}-NEXT` },
};

/** `PCTL-EB-<k>` / `PCTL-IB-<k>` (entry), `PCTL-ENB-<k>` / `PCTL-INB-<k>` (next): the groups with a local pod in bucket k. */
export function bucketChainName(dir: PolicyType, k: number, level: DispatchLevel = 'entry'): string {
  return `${PREFIX}-${DISPATCH[dir].letter}${level === 'next' ? 'N' : ''}B-${k}`;
}

/**
 * The letter of the inner chains at each depth from 1: `PCTL-EQ-<p>` / `PCTL-IQ-<p>` at depth 1,
 * `PCTL-ES-<p>` / `PCTL-IS-<p>` at depth 2 (with `N` after the direction's letter at the next
 * level), p the bucket number's digits chosen so far.
 */
const INNER_LETTERS = 'QST';

/** The inner chain of the dispatch tree at `depth` (1 to TREE_DEPTH - 1) for the bucket-number prefix `prefix`. */
export function innerChainName(dir: PolicyType, depth: number, prefix: number, level: DispatchLevel = 'entry'): string {
  return `${PREFIX}-${DISPATCH[dir].letter}${level === 'next' ? 'N' : ''}${INNER_LETTERS[depth - 1]}-${prefix}`;
}

const next = (level: DispatchLevel) => (level === 'next' ? ', next tier' : '');
const sideNet = (dir: PolicyType, net: string) => (DISPATCH[dir].side === 'dst' ? { dstNet: net } : { srcNet: net });

/** The buckets whose numbers start with `prefix` (the chain at `depth`'s digits), as text. */
function bucketRange(depth: number, prefix: number): string {
  const width = 1 << (FANOUT_BITS * (TREE_DEPTH - depth));
  return width === 1 ? `bucket ${prefix}` : `buckets ${prefix * width}-${(prefix + 1) * width - 1}`;
}

/**
 * The rule at `depth` of the tree sending the packets of child prefix `child` (the digits chosen
 * down to depth + 1) on by goto: to the inner chain of that prefix, or at the last depth to bucket
 * chain `child`.
 */
function makeTreeRule(dir: PolicyType, level: DispatchLevel, depth: number, child: number): Rule {
  const last = depth === TREE_DEPTH - 1;
  return {
    match: sideNet(dir, FAMILY.digitNet(depth, child % FANOUT)),
    action: { kind: 'goto', chain: last ? bucketChainName(dir, child, level) : innerChainName(dir, depth + 1, child, level) },
    comment: `${dir.toLowerCase()} of local pods in ${bucketRange(depth + 1, child)} (${FAMILY.bucketMaskText})${next(level)}`,
  };
}

/**
 * The rules of the dispatch tree (shared objects: memoized ids), by level, direction, depth and
 * child prefix: TREE_RULES.entry.Egress[d][c] is the rule at depth d whose packets go on to
 * child prefix c.
 */
export const TREE_RULES: Record<DispatchLevel, Record<PolicyType, readonly (readonly Rule[])[]>> = (() => {
  const make = (dir: PolicyType, level: DispatchLevel) =>
    Array.from({ length: TREE_DEPTH }, (_, d) => Array.from({ length: FANOUT ** (d + 1) }, (_, c) => makeTreeRule(dir, level, d, c)));
  return {
    entry: { Egress: make('Egress', 'entry'), Ingress: make('Ingress', 'entry') },
    next: { Egress: make('Egress', 'next'), Ingress: make('Ingress', 'next') },
  };
})();

/**
 * The hash:ip set dispatching a group's local pods to its chain: the chain's name with the kind
 * letter lower-cased (unique as the chain name is, and as long), and `N` after it at the next
 * level (a chain can be the entry of some pods and the next tier of others).
 */
export function dispatchSetSpec(chain: string, level: DispatchLevel = 'entry'): { readonly name: string; readonly type: 'hash:ip'; readonly purpose: string } {
  const at = PREFIX.length + 1;
  const name = `${chain.slice(0, at)}${chain.charAt(at).toLowerCase()}${level === 'next' ? 'N' : ''}${chain.slice(at + 1)}`;
  return { name, type: 'hash:ip', purpose: `local pods dispatched to ${chain}${level === 'next' ? ' after their Admin tier' : ''}` };
}

/** The rule of a bucket chain sending the pods of a dispatch set to their chain (goto). */
export function dispatchRule(dir: PolicyType, set: string, chain: string): Rule {
  return {
    match: { sets: [{ set, dirs: DISPATCH[dir].side }] },
    action: { kind: 'goto', chain },
    // No member count in the comment: a pod joining the group must change the set only.
    comment: `${dir.toLowerCase()} policy of the local pods in ${set}`,
  };
}

/** A direction's dispatch chain, inner chains and bucket chains at one level. */
export interface Dispatch {
  readonly chain: Chain;
  /** The inner chains of the tree by depth, then prefix; only those leading to a bucket in use. */
  readonly inner: readonly Chain[];
  /** By bucket number, only the buckets holding a dispatched address. */
  readonly buckets: readonly Chain[];
}

/** A bucket chain (unordered: its rules match disjoint packets). */
export function bucketChain(dir: PolicyType, k: number, rules: readonly Rule[], level: DispatchLevel = 'entry'): Chain {
  return { name: bucketChainName(dir, k, level), rules, unordered: true };
}

/**
 * A dispatch chain and its inner chains, holding a rule for each child prefix that leads to a
 * bucket in `present` (ascending). All unordered: their rules match disjoint addresses.
 */
export function dispatchChains(dir: PolicyType, present: readonly number[], level: DispatchLevel = 'entry'): { chain: Chain; inner: Chain[] } {
  const inner: Chain[] = [];
  let top: Rule[] = [];
  for (let d = 0; d < TREE_DEPTH; d++) {
    // The chains at depth d, by prefix: the child prefixes (digits down to depth d + 1) in use.
    const shift = FANOUT_BITS * (TREE_DEPTH - d - 1);
    const byPrefix = new Map<number, Rule[]>();
    let lastChild = -1;
    for (const k of present) {
      const child = k >> shift;
      if (child === lastChild) continue;
      lastChild = child;
      const prefix = child >> FANOUT_BITS;
      let rules = byPrefix.get(prefix);
      if (!rules) byPrefix.set(prefix, (rules = []));
      rules.push(TREE_RULES[level][dir][d]![child]!);
    }
    if (d === 0) top = byPrefix.get(0) ?? [];
    else for (const [prefix, rules] of byPrefix) inner.push({ name: innerChainName(dir, d, prefix, level), rules, unordered: true });
  }
  return { chain: { name: DISPATCH_CHAINS[level][dir], rules: top, unordered: true }, inner };
}

/**
 * A direction's dispatch at one level from its groups (each a dispatch rule and the addresses it
 * dispatches), given in the order their rules go into each bucket chain.
 */
export function bucketedDispatch(dir: PolicyType, groups: readonly { readonly rule: Rule; readonly ips: Iterable<string> }[], level: DispatchLevel = 'entry'): Dispatch {
  const inBucket: Rule[][] = Array.from({ length: BUCKETS }, () => []);
  for (const g of groups) {
    const seen = new Set<number>();
    for (const ip of g.ips) seen.add(bucketOf(ip));
    for (const k of seen) inBucket[k]!.push(g.rule);
  }
  const present: number[] = [];
  const buckets: Chain[] = [];
  for (let k = 0; k < BUCKETS; k++) {
    if (inBucket[k]!.length === 0) continue;
    present.push(k);
    buckets.push(bucketChain(dir, k, inBucket[k]!, level));
  }
  return { ...dispatchChains(dir, present, level), buckets };
}

// ---- tiers -----------------------------------------------------------------------------------

/** A chain with its content-hashed name. */
export interface ChainContent {
  readonly name: string;
  readonly rules: readonly Rule[];
}

/**
 * How a tier's undecided packets reach the next tier: `goto` the next tier chain by name (its
 * chain is then built for that next chain), or `dispatch`: to the direction's next-level
 * dispatch chain (its chain does not depend on the pod's later tiers, so pods share it). A
 * `dispatch` tier can only be the first tier (there is one next level).
 */
export type Continuation = 'goto' | 'dispatch';

/** A pod's chains in one direction: those dispatched at the entry level, and at the next level. */
export interface LinkedPath<T> {
  /** From the entry chain on; empty when no tier has rules (the pod is not dispatched). */
  readonly entry: readonly { readonly chain: ChainContent; readonly tier: T; readonly next: string | undefined }[];
  /** After a `dispatch` tier: from the chain the next-level dispatch sends the pod to. */
  readonly next: readonly { readonly chain: ChainContent; readonly tier: T; readonly next: string | undefined }[];
  /** The entry chains end in a `dispatch` tier: they go to the next-level dispatch chain. */
  readonly continues: boolean;
}

/**
 * A pod's tier chains in one direction, linked: built from the last tier to the first, each
 * given where its undecided packets go (its `next`): the following tier chain's name, or, for a
 * `dispatch` tier, the direction's next-level dispatch chain; past the last tier, nothing
 * (allow). `tiers` holds the tiers that apply, in tier order; `chain(next)` builds one's chain,
 * or nothing when it has no rule: it decides nothing, and its packets go straight to the tier
 * after it. A chain that leaves a packet undecided must say so with a last rule going to
 * `next`: falling off the end of a tier chain reached by goto returns to PCTL-FORWARD, which is
 * allow.
 */
export function linkTiers<T extends { readonly continuation: Continuation; readonly chain: (next: string | undefined) => ChainContent | undefined }>(
  dir: PolicyType,
  tiers: readonly T[],
): LinkedPath<T> {
  const built: { chain: ChainContent; tier: T; next: string | undefined }[] = [];
  let next: string | undefined;
  let continues = false;
  for (let i = tiers.length - 1; i >= 0; i--) {
    const tier = tiers[i]!;
    if (tier.continuation === 'dispatch' && i !== 0) throw new Error('layout: only the first tier can continue by dispatch');
    const to = tier.continuation === 'dispatch' ? DISPATCH_CHAINS.next[dir] : next;
    const chain = tier.chain(to);
    if (!chain) continue;
    // A chain none of whose rules goes on (the first matches every packet: a deny-all) leaves
    // the tiers after it unreachable: they are not part of the pod's chains.
    const goesOn = to !== undefined && chain.rules.some((r) => r.action.kind === 'goto' && r.action.chain === to);
    if (!goesOn) {
      built.length = 0;
      continues = false;
    }
    built.unshift({ chain, tier, next: to });
    if (tier.continuation === 'dispatch' && goesOn) continues = true;
    next = chain.name;
  }
  // A dispatch tier is first: when it has a chain, the entry level holds it alone.
  if (!continues) return { entry: built, next: [], continues: false };
  return { entry: built.slice(0, 1), next: built.slice(1), continues: true };
}

// ---- the Ruleset's chain list ----------------------------------------------------------------

/**
 * The layout's chains in Ruleset order: the top chains; the shared Admin prefix chains of the
 * directions that have one (gate, rules); at the entry level, each direction's
 * dispatch chain, then each direction's inner chains by depth and prefix, then each direction's bucket
 * chains by bucket number; the same at the next level for the directions that have one (an
 * Admin chain goes there). Policy chains follow, by name.
 */
export function layoutChains(cidrs: readonly string[], dispatch: Record<DispatchLevel, Partial<Record<PolicyType, Dispatch>>>, layout: LayoutOptions = {}): Chain[] {
  const out: Chain[] = [...topChains(cidrs, layout), ...wideChains(cidrs, layout)];
  for (const level of DISPATCH_LEVELS) {
    const d = dispatch[level];
    for (const dir of DIRECTIONS) if (d[dir]) out.push(d[dir].chain);
    for (const dir of DIRECTIONS) if (d[dir]) out.push(...d[dir].inner);
    for (const dir of DIRECTIONS) if (d[dir]) out.push(...d[dir].buckets);
  }
  return out;
}
