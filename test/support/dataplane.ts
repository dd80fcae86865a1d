// A simulated cluster dataplane: every node's compiled Ruleset, rendered to restore text and
// executed by the tracer on top of flannel's own FORWARD rules, and a packet's path through
// the nodes as flannel host-gw routes it. This is the "kernel" side that the property tests
// compare with the semantics.

import { compile, type CompileOptions } from '../../src/compiler/compile.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../../src/sync/render.ts';
import type { Model } from '../../src/model/store.ts';
import { bridgeAddress, cidrContainsIp, parseCidr } from '../../src/model/cidr.ts';
import type { Cidr } from '../../src/model/types.ts';
import type { Endpoint, Flow, FlowProtocol } from '../../src/semantics/evaluate.ts';
import { parseIpsetRestore, parseIptablesRestore, trace, type IpsetState, type Packet, type Table, type TraceResult } from './tracer.ts';

/** What flannel (and kube-proxy) leave in a node's filter table before we arrive. */
export const FOREIGN_FILTER = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:FLANNEL-FWD - [0:0]
:KUBE-FORWARD - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
COMMIT
`;

export interface NodePlane {
  readonly table: Table;
  readonly ipsets: IpsetState;
  readonly iptablesText: string;
  readonly ipsetText: string;
  /**
   * The node's own addresses, what its local routes hold (the LOCAL of `-m addrtype`, given to
   * every trace on it): its InternalIPs (a hostNetwork pod's address is one) and the bridge's
   * address in each of its pod CIDRs. Never a pod's: a pod's address is in its own namespace.
   */
  readonly local: readonly string[];
}

export type Mutator = (iptablesText: string, node: string) => string;

export class Dataplane {
  readonly nodes = new Map<string, NodePlane>();
  /**
   * `-j SET` rules change the node's sets as the kernel's do (the verdict cache remembers what it
   * allowed), so later traversals see what earlier ones left; default false: every traversal
   * meets the sets as compiled.
   */
  rememberVerdicts = false;

  private readonly cidrs: { readonly node: string; readonly cidr: Cidr }[] = [];
  private readonly nodeIps = new Map<string, string>();
  /** Every node's own addresses (InternalIPs, the bridge's address in each pod CIDR) -> the node. */
  private readonly hostAddresses = new Map<string, string>();

  /**
   * `modelOf`: the model a node compiles from, when it is not `model` (a node that lags behind
   * the API: test/properties/lagging-nodes.test.ts); the nodes and addresses come from `model`.
   */
  constructor(model: Model, nodeNames: readonly string[], mutate?: Mutator, opts: CompileOptions = {}, modelOf?: (node: string) => Model) {
    const base = parseIptablesRestore(FOREIGN_FILTER);
    for (const n of model.allNodes()) for (const c of n.podCIDRs) this.cidrs.push({ node: n.name, cidr: parseCidr(c) });
    for (const n of model.allNodes()) if (n.internalIPs[0]) this.nodeIps.set(n.name, n.internalIPs[0]);
    for (const n of model.allNodes()) {
      for (const ip of n.internalIPs) this.hostAddresses.set(ip, n.name);
      for (const c of n.podCIDRs) {
        const bridge = bridgeAddress(parseCidr(c));
        if (bridge) this.hostAddresses.set(bridge, n.name);
      }
    }
    for (const n of nodeNames) {
      const local = [...this.hostAddresses].filter(([, owner]) => owner === n).map(([ip]) => ip);
      const rs = compile(modelOf?.(n) ?? model, n, opts);
      let iptablesText = renderIptablesRestore(rs);
      if (mutate) iptablesText = mutate(iptablesText, n);
      const ipsetText = renderIpsetRestore(rs.sets);
      this.nodes.set(n, {
        table: parseIptablesRestore(iptablesText, { base, noflush: true }),
        ipsets: parseIpsetRestore(ipsetText),
        iptablesText,
        ipsetText,
        local,
      });
    }
  }

  /**
   * The hooks a packet crosses under flannel host-gw: FORWARD on the source pod's node (INPUT
   * instead when it is addressed to that node itself), then FORWARD on the destination pod's
   * node when that is another node (INPUT when the destination is that node itself). A node's
   * own addresses are its InternalIPs, its bridge's address in each pod CIDR and its
   * hostNetwork pods'. Traffic a node sends itself (from one of those) starts in OUTPUT, where
   * no policy applies.
   * The flow is allowed when no hop dropped it. `extra`: the packet's TCP flags when it is not
   * a connection's first packet (a mid-stream pickup).
   *
   * A pod sending to its own address crosses no hook at all: the destination is local to the
   * pod's network namespace (its `local` route table), so the packet goes through the pod's
   * loopback and never reaches the node's bridge or FORWARD. It is allowed without tracing,
   * whatever the policies (the compiler has no self rule). Hairpin traffic through a Service
   * (pod -> ClusterIP -> itself) does cross FORWARD, but this dataplane models no Services.
   */
  traverse(flow: Flow, extra: Pick<Packet, 'tcpFlags'> = {}): { allowed: boolean; traces: { node: string; hook: 'FORWARD' | 'INPUT'; result: TraceResult }[] } {
    if (flow.src.kind === 'pod' && flow.dst.kind === 'pod' && flow.src.pod.uid === flow.dst.pod.uid) return { allowed: true, traces: [] };
    const src = ipOf(flow.src);
    const dst = ipOf(flow.dst);
    const hostOf = (e: Endpoint, ip: string) => (e.kind === 'pod' ? (e.pod.hostNetwork ? e.pod.nodeName : undefined) : this.hostAddresses.get(ip));
    const srcHost = hostOf(flow.src, src);
    const dstHost = hostOf(flow.dst, dst);
    // An outside address inside a node's pod CIDR (other than the bridge's) is on that node's
    // bridge (attached by hand, not reported yet): its packets cross that node's FORWARD.
    const srcNode = srcHost !== undefined ? undefined : flow.src.kind === 'pod' ? flow.src.pod.nodeName : this.podCidrNode(src);
    const dstNode = dstHost ?? (flow.dst.kind === 'pod' ? flow.dst.pod.nodeName : this.podCidrNode(dst));
    const hops: { node: string; hook: 'FORWARD' | 'INPUT' }[] = [];
    if (srcNode) hops.push({ node: srcNode, hook: dstHost !== undefined && dstNode === srcNode ? 'INPUT' : 'FORWARD' });
    if (dstNode && dstNode !== srcNode && srcHost !== dstNode) hops.push({ node: dstNode, hook: dstHost !== undefined ? 'INPUT' : 'FORWARD' });
    const traces: { node: string; hook: 'FORWARD' | 'INPUT'; result: TraceResult }[] = [];
    for (const h of hops) {
      const plane = this.nodes.get(h.node);
      if (!plane) throw new Error(`no compiled plane for node ${h.node}`);
      const result = trace(plane.table, plane.ipsets, h.hook, { src, dst, protocol: l4(flow.protocol), dport: flow.port, sport: 40000, ...extra }, { local: plane.local, setTargets: this.rememberVerdicts });
      traces.push({ ...h, result });
      if (result.verdict === 'DROP') return { allowed: false, traces };
    }
    return { allowed: true, traces };
  }

  /**
   * The path of a connection to a pod through a Service under kube-proxy's IPVS mode
   * (docs/design.md, "How a packet walks it"). The Service has the flow's destination pod (not
   * hostNetwork) as its one backend and the flow's port as its target port. The client connects
   * to the Service on its entry node E: `clusterIP` (an address of the Service CIDR and the
   * Service's port), on the client's own node; `nodePort`, E's address and a node port, E being
   * `node` (default: the client's node). The packet reaches E's INPUT with that destination
   * - from a pod (not hostNetwork) of E, or an address on E's bridge: directly;
   * - from a pod (or an address on the bridge) of another node C: through C's FORWARD first,
   *   where kube-proxy takes no node port but its own node's, so the client's egress is judged
   *   against E's address, as for any packet to a node;
   * - from a node's own address (its InternalIP, the bridge's, a hostNetwork pod's): through
   *   that node's OUTPUT first, as everything the node sends itself (E's too: to its own
   *   address, back in through INPUT);
   * - from an outside address (not a node's, in no pod CIDR; `nodePort` only): directly.
   * IPVS rewrites it after filter INPUT and sends it through E's OUTPUT, source still the
   * client, destination the backend and the target port (kube-proxy's SNAT of node port
   * traffic, if any, comes later, in POSTROUTING). When the backend is on another node, that
   * node's FORWARD sees it with the client's address (only for a client pod of E: elsewhere
   * kube-proxy masquerades it, which is not modelled). A pod reaching itself (hairpin) is
   * another path, not modelled either.
   */
  traverseIpvs(flow: Flow, via: { kind: 'clusterIP'; vip: string; port: number } | { kind: 'nodePort'; port: number; node?: string }): {
    allowed: boolean;
    traces: { node: string; hook: 'FORWARD' | 'INPUT' | 'OUTPUT'; result: TraceResult }[];
  } {
    if (flow.dst.kind !== 'pod' || flow.dst.pod.hostNetwork) throw new Error('traverseIpvs: the backend is a pod, not hostNetwork');
    if (flow.src.kind === 'pod' && flow.src.pod.uid === flow.dst.pod.uid) throw new Error('traverseIpvs: a pod through its own Service (hairpin) is not modelled');
    const src = ipOf(flow.src);
    const dst = ipOf(flow.dst);
    const dstNode = flow.dst.pod.nodeName;
    if (!dstNode) throw new Error('traverseIpvs: the backend needs a node');
    // Where the client is: on a node's bridge (a pod, or an address in its pod CIDR), a node's
    // own address, or outside.
    const host = flow.src.kind === 'pod' ? (flow.src.pod.hostNetwork ? flow.src.pod.nodeName : undefined) : this.hostAddresses.get(src);
    const bridged = host !== undefined ? undefined : flow.src.kind === 'pod' ? flow.src.pod.nodeName : this.podCidrNode(src);
    if (flow.src.kind === 'pod' && !flow.src.pod.nodeName) throw new Error('traverseIpvs: a client pod needs a node');
    const entry = via.kind === 'nodePort' ? (via.node ?? host ?? bridged) : (host ?? bridged);
    if (!entry) throw new Error(`traverseIpvs: a client outside every node reaches a Service through a node port of a given node, not by ${via.kind}`);
    const entryIp = via.kind === 'clusterIP' ? via.vip : this.nodeIps.get(entry);
    if (!entryIp) throw new Error(`traverseIpvs: node ${entry} has no address`);
    if (dstNode !== entry && bridged !== entry) throw new Error('traverseIpvs: a backend on another node than the entry node is modelled for a client pod of the entry node only (kube-proxy masquerades the others)');
    const protocol = l4(flow.protocol);
    const toService: Packet = { src, dst: entryIp, protocol, dport: via.port, sport: 40000 };
    const toBackend: Packet = { src, dst, protocol, dport: flow.port, sport: 40000 };
    const hops: { node: string; hook: 'FORWARD' | 'INPUT' | 'OUTPUT'; packet: Packet }[] = [];
    if (host !== undefined) hops.push({ node: host, hook: 'OUTPUT', packet: toService });
    else if (bridged !== undefined && bridged !== entry) hops.push({ node: bridged, hook: 'FORWARD', packet: toService });
    hops.push({ node: entry, hook: 'INPUT', packet: toService }, { node: entry, hook: 'OUTPUT', packet: toBackend });
    if (dstNode !== entry) hops.push({ node: dstNode, hook: 'FORWARD', packet: toBackend });
    return this.run(hops);
  }

  /** A packet the node itself sends (a kubelet probe), through that node's OUTPUT. */
  traceOutput(node: string, packet: Packet): TraceResult {
    const plane = this.nodes.get(node);
    if (!plane) throw new Error(`no compiled plane for node ${node}`);
    return trace(plane.table, plane.ipsets, 'OUTPUT', packet, { local: plane.local });
  }

  private run<H extends string>(hops: readonly { node: string; hook: H; packet: Packet }[]): { allowed: boolean; traces: { node: string; hook: H; result: TraceResult }[] } {
    const traces: { node: string; hook: H; result: TraceResult }[] = [];
    for (const h of hops) {
      const plane = this.nodes.get(h.node);
      if (!plane) throw new Error(`no compiled plane for node ${h.node}`);
      const result = trace(plane.table, plane.ipsets, h.hook as 'FORWARD' | 'INPUT' | 'OUTPUT', h.packet, { local: plane.local });
      traces.push({ node: h.node, hook: h.hook, result });
      if (result.verdict === 'DROP') return { allowed: false, traces };
    }
    return { allowed: true, traces };
  }

  /** Whether `ip` is in a pod CIDR of `node`. */
  inPodCidrOf(node: string, ip: string): boolean {
    return this.cidrs.some((c) => c.node === node && cidrContainsIp(c.cidr, ip));
  }

  /** In one of the node's pod CIDRs and not the node's own (its bridge's address): a pod's, or no one's. */
  podSideOf(node: string, ip: string): boolean {
    return this.inPodCidrOf(node, ip) && !this.hostAddresses.has(ip);
  }

  private podCidrNode(ip: string): string | undefined {
    return this.cidrs.find((c) => cidrContainsIp(c.cidr, ip))?.node;
  }
}

function ipOf(e: Endpoint): string {
  if (e.kind === 'ip') return e.ip;
  const ip = e.pod.ips[0];
  if (!ip) throw new Error(`pod ${e.pod.namespace}/${e.pod.name} has no IP: not a dataplane endpoint`);
  return ip;
}

/** The packet's protocol: a protocol without ports (FlowProtocol `other`) as ICMP, which stands for all of them. */
const l4 = (p: FlowProtocol) => (p === 'other' ? 'icmp' : (p.toLowerCase() as 'tcp' | 'udp' | 'sctp'));
