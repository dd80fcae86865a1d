// The iptables rules of the other agents on a lab node: flannel (host-gw, ip-masq) and a
// kube-proxy-like subset (KUBE-FORWARD, KUBE-SERVICES DNAT, KUBE-POSTROUTING masquerade), rendered
// as `iptables-restore --noflush` input. Pure.
//
// They reproduce what those agents install on a real node, so the enforcer's coexistence with
// them is tested on the kernel, not assumed:
// - flannel (pkg/trafficmngr/iptables): `-A FORWARD -j FLANNEL-FWD` accepting everything from or
//   to the cluster CIDR, and `-A POSTROUTING -j FLANNEL-POSTRTG` masquerading traffic leaving the
//   cluster CIDR but not pod-to-pod traffic. Flannel appends its jumps.
// - kube-proxy (iptables mode): KUBE-FORWARD (INVALID drop, 0x4000-marked accept, RELATED,
//   ESTABLISHED accept), jumped from FORWARD before flannel's chain (kube-proxy prepends); nat
//   KUBE-SERVICES from PREROUTING and OUTPUT, KUBE-MARK-MASQ and KUBE-POSTROUTING.
// - kubelet's KUBE-IPTABLES-HINT chain in mangle, which tells the enforcer the backend in use.

import { shortHash } from './names.ts';

export const KUBE_MARK_MASQ = '0x4000/0x4000';

export interface NodeRulesInput {
  clusterCIDR: string;
  podCIDR: string;
}

export type LabProtocol = 'TCP' | 'UDP' | 'SCTP';

export interface LabService {
  /** Free text shown in rule comments, e.g. "default/web:http". */
  name: string;
  clusterIP: string;
  port: number;
  protocol: LabProtocol;
  backend: { ip: string; port: number };
}

export function serviceKey(s: Pick<LabService, 'clusterIP' | 'port' | 'protocol'>): string {
  return `${s.clusterIP}:${s.port}/${s.protocol}`;
}

export function serviceChains(s: Pick<LabService, 'clusterIP' | 'port' | 'protocol'>): { svc: string; sep: string } {
  const h = shortHash(serviceKey(s), 16).toUpperCase();
  return { svc: `KUBE-SVC-${h}`, sep: `KUBE-SEP-${h}` };
}

function q(comment: string): string {
  return `"${comment.replaceAll('"', "'")}"`;
}

/** filter and mangle tables: KUBE-FORWARD, FLANNEL-FWD and their jumps, KUBE-IPTABLES-HINT. */
export function renderNodeFilter(input: NodeRulesInput): string {
  const c = input.clusterCIDR;
  return [
    '*mangle',
    ':KUBE-IPTABLES-HINT - [0:0]',
    'COMMIT',
    '*filter',
    ':KUBE-FORWARD - [0:0]',
    ':FLANNEL-FWD - [0:0]',
    `-A FORWARD -m comment --comment ${q('kubernetes forwarding rules')} -j KUBE-FORWARD`,
    `-A FORWARD -m comment --comment ${q('flanneld forward')} -j FLANNEL-FWD`,
    '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
    `-A KUBE-FORWARD -m comment --comment ${q('kubernetes forwarding rules')} -m mark --mark ${KUBE_MARK_MASQ} -j ACCEPT`,
    `-A KUBE-FORWARD -m comment --comment ${q('kubernetes forwarding conntrack rule')} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
    `-A FLANNEL-FWD -s ${c} -m comment --comment ${q('flanneld forward')} -j ACCEPT`,
    `-A FLANNEL-FWD -d ${c} -m comment --comment ${q('flanneld forward')} -j ACCEPT`,
    'COMMIT',
    '',
  ].join('\n');
}

/** nat table: flannel's FLANNEL-POSTRTG and kube-proxy's masquerade plumbing (no services). */
export function renderNodeNat(input: NodeRulesInput): string {
  const c = input.clusterCIDR;
  const p = input.podCIDR;
  const fm = q('flanneld masq');
  return [
    '*nat',
    ':KUBE-SERVICES - [0:0]',
    ':KUBE-MARK-MASQ - [0:0]',
    ':KUBE-POSTROUTING - [0:0]',
    ':FLANNEL-POSTRTG - [0:0]',
    `-A PREROUTING -m comment --comment ${q('kubernetes service portals')} -j KUBE-SERVICES`,
    `-A OUTPUT -m comment --comment ${q('kubernetes service portals')} -j KUBE-SERVICES`,
    `-A POSTROUTING -m comment --comment ${q('kubernetes postrouting rules')} -j KUBE-POSTROUTING`,
    `-A POSTROUTING -m comment --comment ${fm} -j FLANNEL-POSTRTG`,
    `-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000`,
    `-A KUBE-POSTROUTING -m mark ! --mark ${KUBE_MARK_MASQ} -j RETURN`,
    `-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000`,
    `-A KUBE-POSTROUTING -m comment --comment ${q('kubernetes service traffic requiring SNAT')} -j MASQUERADE --random-fully`,
    `-A FLANNEL-POSTRTG -m mark --mark ${KUBE_MARK_MASQ} -m comment --comment ${fm} -j RETURN`,
    `-A FLANNEL-POSTRTG -s ${p} -d ${c} -m comment --comment ${fm} -j RETURN`,
    `-A FLANNEL-POSTRTG -s ${c} -d ${p} -m comment --comment ${fm} -j RETURN`,
    `-A FLANNEL-POSTRTG ! -s ${c} -d ${p} -m comment --comment ${fm} -j RETURN`,
    `-A FLANNEL-POSTRTG -s ${c} ! -d 224.0.0.0/4 -m comment --comment ${fm} -j MASQUERADE --random-fully`,
    `-A FLANNEL-POSTRTG ! -s ${c} -d ${c} -m comment --comment ${fm} -j MASQUERADE --random-fully`,
    'COMMIT',
    '',
  ].join('\n');
}

/**
 * nat table: KUBE-SERVICES rewritten for `services`, one KUBE-SVC/KUBE-SEP pair each (one backend
 * per service), and the chains of `removed` services deleted. `--noflush` keeps every other chain.
 */
export function renderServices(
  services: readonly LabService[],
  clusterCIDR: string,
  removed: readonly LabService[] = [],
): string {
  const lines = ['*nat', ':KUBE-SERVICES - [0:0]'];
  const live = new Set(services.map(serviceKey));
  const gone = removed.filter((s) => !live.has(serviceKey(s)));
  for (const s of [...services, ...gone]) {
    const { svc, sep } = serviceChains(s);
    lines.push(`:${svc} - [0:0]`, `:${sep} - [0:0]`);
  }
  for (const s of services) {
    const { svc, sep } = serviceChains(s);
    const proto = s.protocol.toLowerCase();
    const comment = q(`${s.name} cluster IP`);
    lines.push(
      `-A KUBE-SERVICES -d ${s.clusterIP}/32 -p ${proto} -m comment --comment ${comment} -m ${proto} --dport ${s.port} -j ${svc}`,
      `-A ${svc} ! -s ${clusterCIDR} -d ${s.clusterIP}/32 -p ${proto} -m comment --comment ${comment} -m ${proto} --dport ${s.port} -j KUBE-MARK-MASQ`,
      `-A ${svc} -m comment --comment ${q(`${s.name} -> ${s.backend.ip}:${s.backend.port}`)} -j ${sep}`,
      `-A ${sep} -s ${s.backend.ip}/32 -m comment --comment ${q(s.name)} -j KUBE-MARK-MASQ`,
      `-A ${sep} -p ${proto} -m comment --comment ${q(s.name)} -m ${proto} -j DNAT --to-destination ${s.backend.ip}:${s.backend.port}`,
    );
  }
  for (const s of gone) {
    const { svc, sep } = serviceChains(s);
    lines.push(`-X ${svc}`, `-X ${sep}`);
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}

// ---- IPVS-path mode (issue 13) ---------------------------------------------------------------
//
// kube-proxy's IPVS mode cannot run here (no ip_vs), so a lab built with `serviceProxy: 'ipvs'`
// reproduces its netfilter path instead: no DNAT; every VIP is an address of `kube-ipvs0` (left
// down, as kube-proxy leaves its dummy interface; a bridge here, as this kernel has no dummy
// driver), listed in the ipset KUBE-CLUSTER-IP (kube-proxy's traces, which the agents detect);
// a transparent proxy (ipvs-proxy.py) accepts on the VIPs and connects to the backends with the
// client pod's address. The rules below bring the backends' replies back to it.

/** The lab proxy's reply mark: clear of kube-proxy's 0x4000 and 0x8000; policyctl uses none. */
export const IPVS_PROXY_MARK = '0x200/0x200';
/** The routing table that delivers marked replies locally. */
export const IPVS_PROXY_TABLE = 100;
export const IPVS_INTERFACE = 'kube-ipvs0';
export const IPVS_CLUSTER_IP_SET = 'KUBE-CLUSTER-IP';

/**
 * mangle: a packet for a socket that uses a foreign address (the proxy's connection to a
 * backend, bound to the client pod's address) is marked, so the policy route delivers it locally
 * instead of forwarding it to the client pod.
 */
export function renderIpvsMangle(): string {
  return ['*mangle', `-A PREROUTING -p tcp -m socket --transparent -m comment --comment ${q('lab ipvs-proxy: replies to the proxy')} -j MARK --set-xmark ${IPVS_PROXY_MARK}`, 'COMMIT', ''].join('\n');
}

/** `ip -batch` lines of a node's IPVS-path plumbing: the VIP interface and the reply route. */
export function ipvsNodeLines(): string[] {
  return [
    `link add ${IPVS_INTERFACE} type bridge`,
    `rule add fwmark ${IPVS_PROXY_MARK} lookup ${IPVS_PROXY_TABLE}`,
    `route add local 0.0.0.0/0 dev lo table ${IPVS_PROXY_TABLE}`,
  ];
}

/** The proxy's `--map VIP:PORT=BACKEND:PORT` arguments for these services (TCP only). */
export function ipvsProxyArgs(services: readonly LabService[]): string[] {
  return services.flatMap((s) => ['--map', `${s.clusterIP}:${s.port}=${s.backend.ip}:${s.backend.port}`]);
}
