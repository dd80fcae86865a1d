// A lab's specification (what createLab and addPod take) and its validation against the lab,
// before anything touches the kernel. Errors name the field and the value received.

import { LabError } from './exec.ts';
import {
  cidrContainsCidr,
  cidrContainsIp,
  cidrsOverlap,
  formatIpv4,
  lastAddress,
  nthAddress,
  parseIpv4,
  parseIpv4Cidr,
} from './ipv4.ts';
import { nodeNetnsName, podContainerId, podKey, podNetnsName, validateNodeName, validatePodName } from './names.ts';
import { serviceKey, type LabProtocol, type LabService } from './rules.ts';
import type { LabNode, LabPod, LabPort, LabState } from './state.ts';

export const DEFAULT_CLUSTER_CIDR = '10.244.0.0/16';
export const DEFAULT_UNDERLAY_CIDR = '192.168.50.0/24';
/** Index of the first node's address in the underlay (192.168.50.11, .12, ...). */
export const FIRST_NODE_HOST = 11;

export interface LabPortSpec {
  port: number;
  protocol?: LabProtocol;
}

export interface LabPodSpec {
  namespace: string;
  name: string;
  node: string;
  /** status.podIP; host-local picks a free address of the node's podCIDR when absent. */
  ip?: string;
  ports?: LabPortSpec[];
}

export interface LabNodeSpec {
  name: string;
  podCIDR: string;
  /** Underlay address; default .11, .12, ... in node order. */
  ip?: string;
}

export interface LabSpec {
  name: string;
  nodes: LabNodeSpec[];
  pods?: LabPodSpec[];
  /** State root; the lab's files go to <stateDir>/<name>. Default $POLICYCTL_LAB_STATE_DIR or /run/policyctl-lab. */
  stateDir?: string;
  /** flannel's Network; default 10.244.0.0/16. */
  clusterCIDR?: string;
  /** The nodes' network; default 192.168.50.0/24 (it exists only inside the lab). */
  underlayCIDR?: string;
  /** Ports served by the external host (the switch namespace's address). */
  externalPorts?: LabPortSpec[];
  services?: LabServiceSpec[];
  /**
   * Chain policyctl-cni after bridge in every node's conflist, as the DaemonSet does. Each
   * node's agent must then serve the node's socket (`--cni-socket`; `nodeCniSocket`), or no
   * pod can be added there.
   */
  policyCni?: { timeoutSeconds?: number };
  /**
   * How Services are proxied: `iptables` (default: kube-proxy iptables-mode DNAT) or `ipvs`
   * (kube-proxy IPVS mode's netfilter path, reproduced without ip_vs: src/lab/rules.ts).
   */
  serviceProxy?: 'iptables' | 'ipvs';
}

export interface LabServiceSpec {
  name?: string;
  clusterIP: string;
  port: number;
  protocol?: 'TCP' | 'UDP';
  backend: { ip: string; port: number };
}

export function normalizePorts(ports: readonly LabPortSpec[] | undefined, what: string): LabPort[] {
  const out: LabPort[] = [];
  const seen = new Set<string>();
  for (const [i, p] of (ports ?? []).entries()) {
    const protocol = p.protocol ?? 'TCP';
    if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535) {
      throw new LabError(`${what}.ports[${i}].port must be an integer 1-65535, received ${JSON.stringify(p.port)}`);
    }
    if (protocol !== 'TCP' && protocol !== 'UDP' && protocol !== 'SCTP') {
      throw new LabError(`${what}.ports[${i}].protocol must be TCP, UDP or SCTP, received ${JSON.stringify(p.protocol)}`);
    }
    const k = `${p.port}/${protocol}`;
    if (seen.has(k)) continue;
    seen.add(k);
    out.push({ port: p.port, protocol });
  }
  return out;
}

export function resolveNodes(spec: LabSpec, clusterCIDR: string, underlayCIDR: string): LabNode[] {
  const cluster = parseIpv4Cidr(clusterCIDR, 'clusterCIDR');
  const underlay = parseIpv4Cidr(underlayCIDR, 'underlayCIDR');
  if (cidrsOverlap(cluster, underlay)) {
    throw new LabError(`underlayCIDR ${underlay.text} overlaps clusterCIDR ${cluster.text}`);
  }
  if (underlay.prefix > 28) throw new LabError(`underlayCIDR ${underlay.text} is too small (at most /28)`);
  if (!Array.isArray(spec.nodes) || spec.nodes.length === 0) throw new LabError('a lab needs at least one node');
  const external = nthAddress(underlay, 1);
  const names = new Set<string>();
  const ips = new Set<number>([external]);
  const nodes: LabNode[] = [];
  for (const [i, n] of spec.nodes.entries()) {
    validateNodeName(n.name);
    if (names.has(n.name)) throw new LabError(`nodes[${i}]: duplicate node name ${JSON.stringify(n.name)}`);
    names.add(n.name);
    const pod = parseIpv4Cidr(n.podCIDR, `nodes[${i}].podCIDR`);
    if (!cidrContainsCidr(cluster, pod)) {
      throw new LabError(`nodes[${i}].podCIDR ${pod.text} is not inside clusterCIDR ${cluster.text}`);
    }
    if (pod.prefix > 30) throw new LabError(`nodes[${i}].podCIDR ${pod.text} is too small (at most /30)`);
    for (const other of nodes) {
      if (cidrsOverlap(parseIpv4Cidr(other.podCIDR), pod)) {
        throw new LabError(`nodes[${i}].podCIDR ${pod.text} overlaps node ${other.name}'s ${other.podCIDR}`);
      }
    }
    let ip: number;
    if (n.ip !== undefined) {
      const parsed = parseIpv4(n.ip);
      if (parsed === undefined || !cidrContainsIp(underlay, parsed) || parsed === underlay.base || parsed === lastAddress(underlay)) {
        throw new LabError(`nodes[${i}].ip must be a host address of ${underlay.text}, received ${JSON.stringify(n.ip)}`);
      }
      ip = parsed;
    } else {
      ip = nthAddress(underlay, FIRST_NODE_HOST + i);
      if (ip === lastAddress(underlay)) throw new LabError(`too many nodes for underlay ${underlay.text}`);
    }
    if (ips.has(ip)) throw new LabError(`nodes[${i}].ip ${formatIpv4(ip)} is already used`);
    ips.add(ip);
    nodes.push({
      name: n.name,
      podCIDR: pod.text,
      ip: formatIpv4(ip),
      gateway: formatIpv4(nthAddress(pod, 1)),
      netns: nodeNetnsName(spec.name, n.name),
    });
  }
  return nodes;
}

export function resolvePod(lab: LabState, spec: LabPodSpec, what: string): LabPod {
  validatePodName(spec.namespace, spec.name);
  const key = podKey(spec.namespace, spec.name);
  if (lab.pods.some((p) => p.key === key)) throw new LabError(`${what}: pod ${key} already exists in lab ${lab.name}`);
  const node = lab.nodes.find((n) => n.name === spec.node);
  if (!node) {
    throw new LabError(`${what}: pod ${key} names node ${JSON.stringify(spec.node)}, not one of ${lab.nodes.map((n) => n.name).join(', ')}`);
  }
  let ip = '';
  if (spec.ip !== undefined) {
    const cidr = parseIpv4Cidr(node.podCIDR);
    const v = parseIpv4(spec.ip);
    if (v === undefined || !cidrContainsIp(cidr, v) || v === cidr.base || v === lastAddress(cidr) || v === nthAddress(cidr, 1)) {
      throw new LabError(
        `${what}: pod ${key} ip must be a free host address of node ${node.name}'s podCIDR ${node.podCIDR} other than the gateway ${node.gateway}, received ${JSON.stringify(spec.ip)}`,
      );
    }
    const holder = lab.pods.find((p) => p.ip === spec.ip);
    if (holder) throw new LabError(`${what}: pod ${key} ip ${spec.ip} is already used by pod ${holder.key}`);
    ip = spec.ip;
  }
  const ports = normalizePorts(spec.ports, what);
  return {
    key,
    namespace: spec.namespace,
    name: spec.name,
    node: node.name,
    ip,
    ports,
    unserved: ports.filter((p) => p.protocol === 'SCTP'),
    netns: podNetnsName(lab.name, key),
    containerId: podContainerId(lab.name, key),
  };
}

export function resolveService(lab: LabState, spec: LabServiceSpec): LabService {
  const protocol = spec.protocol ?? 'TCP';
  if (protocol !== 'TCP' && protocol !== 'UDP') {
    throw new LabError(`service protocol must be TCP or UDP, received ${JSON.stringify(spec.protocol)}`);
  }
  const ip = parseIpv4(spec.clusterIP);
  if (ip === undefined) throw new LabError(`service clusterIP must be an IPv4 address, received ${JSON.stringify(spec.clusterIP)}`);
  if (cidrContainsIp(parseIpv4Cidr(lab.clusterCIDR), ip) || cidrContainsIp(parseIpv4Cidr(lab.underlayCIDR), ip)) {
    throw new LabError(`service clusterIP ${spec.clusterIP} must be outside the clusterCIDR ${lab.clusterCIDR} and the underlay ${lab.underlayCIDR}`);
  }
  for (const [what, port] of [
    ['port', spec.port],
    ['backend.port', spec.backend?.port],
  ] as const) {
    if (!Number.isInteger(port) || port! < 1 || port! > 65535) {
      throw new LabError(`service ${what} must be an integer 1-65535, received ${JSON.stringify(port)}`);
    }
  }
  if (parseIpv4(spec.backend.ip) === undefined) {
    throw new LabError(`service backend.ip must be an IPv4 address, received ${JSON.stringify(spec.backend.ip)}`);
  }
  const key = serviceKey({ clusterIP: spec.clusterIP, port: spec.port, protocol });
  return {
    name: spec.name ?? key,
    clusterIP: spec.clusterIP,
    port: spec.port,
    protocol,
    backend: { ip: spec.backend.ip, port: spec.backend.port },
  };
}
