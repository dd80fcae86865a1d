// Which mode kube-proxy runs in on this node, read from the traces each mode leaves in the
// node's network namespace (issue 13). Only IPVS changes what the node is programmed with
// (src/compiler/layout.ts, ServiceProxy): its Service traffic crosses INPUT with the VIP and
// OUTPUT with the backend instead of FORWARD after DNAT. Reading is all this does: the traces
// belong to kube-proxy (docs/design.md, invariant own-only-ours).
//
// Traces, strongest first:
// - IPVS: the dummy interface `kube-ipvs0` (kube-proxy binds every VIP to it), the ipset
//   `KUBE-CLUSTER-IP` (the VIP,port pairs it serves);
// - nftables: the nftables table `ip kube-proxy`;
// - iptables: the nat chain `KUBE-SERVICES` (IPVS mode has one too, so IPVS traces win).
// None of them (kube-proxy not started yet, or replaced by another service proxy): iptables,
// the layout of every mode but IPVS; the agent detects again at each periodic verification.

import type { ProxyMode } from '../compiler/ruleset.ts';
import type { Runner } from './runner.ts';

/** What was found in the node's namespace. */
export interface ProxyTraces {
  readonly ipvsInterface: boolean;
  readonly clusterIpSet: boolean;
  readonly nftTable: boolean;
  readonly natServicesChain: boolean;
}

export interface DetectedProxy {
  /** undefined: no trace of kube-proxy. */
  readonly mode: ProxyMode | undefined;
  /** The traces found, for the log line. */
  readonly evidence: readonly string[];
}

/** The mode the traces say (pure: the agent's tests and the lab's check it). */
export function proxyModeOf(t: ProxyTraces): DetectedProxy {
  const evidence: string[] = [];
  if (t.ipvsInterface) evidence.push('interface kube-ipvs0');
  if (t.clusterIpSet) evidence.push('ipset KUBE-CLUSTER-IP');
  if (evidence.length > 0) return { mode: 'ipvs', evidence };
  if (t.nftTable) return { mode: 'nftables', evidence: ['nftables table ip kube-proxy'] };
  if (t.natServicesChain) return { mode: 'iptables', evidence: ['nat chain KUBE-SERVICES'] };
  return { mode: undefined, evidence: [] };
}

/**
 * Reads the traces through `runner` (pointed into the node's namespace). A command that is
 * missing or fails counts as no trace: `nft` is absent from many images, and that is no reason
 * to stop enforcing.
 */
export async function detectProxyMode(runner: Runner): Promise<DetectedProxy> {
  const ok = async (cmd: string, args: string[]): Promise<{ ok: boolean; stdout: string }> => {
    try {
      const r = await runner.run(cmd, args);
      return { ok: r.exitCode === 0, stdout: r.stdout };
    } catch {
      return { ok: false, stdout: '' };
    }
  };
  const [link, sets, nft, nat] = await Promise.all([
    // sysfs, not `ip link`: the agent's image has no iproute2 (`ip netns exec` remounts /sys, so
    // the lab's runners see their namespace's interfaces).
    ok('test', ['-e', '/sys/class/net/kube-ipvs0']),
    ok('ipset', ['list', '-n']),
    ok('nft', ['list', 'table', 'ip', 'kube-proxy']),
    ok('iptables', ['-w', '-t', 'nat', '-S', 'KUBE-SERVICES', '1']),
  ]);
  return proxyModeOf({
    ipvsInterface: link.ok,
    clusterIpSet: sets.ok && sets.stdout.split('\n').some((l) => l.trim() === 'KUBE-CLUSTER-IP'),
    nftTable: nft.ok,
    natServicesChain: nat.ok,
  });
}
