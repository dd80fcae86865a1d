// Attaching pods with the real CNI `bridge` plugin and `host-local` IPAM, configured the way
// flannel's CNI plugin delegates to them, run the way a kubelet runs them: with the node's
// network namespace as the plugin's own and the pod's namespace in CNI_NETNS.

import { join } from 'node:path';
import { run } from './exec.ts';
import { CNI_BRIDGE, CNI_NETWORK_NAME, POD_IFNAME } from './names.ts';
import { NETNS_DIR } from './exec.ts';

export const CNI_PATH = process.env['POLICYCTL_LAB_CNI_PATH'] ?? '/usr/lib/cni';

export interface CniConfigInput {
  podCIDR: string;
  clusterCIDR: string;
  /** host-local's dataDir for this node (inside the lab's state directory). */
  ipamDataDir: string;
  mtu?: number;
}

/**
 * The delegate configuration flanneld's CNI plugin hands to `bridge` under host-gw: cni0 as the
 * pods' gateway and default gateway, hairpin mode, no masquerading by the plugin (flannel does
 * it), host-local over the node's podCIDR with a route to the cluster CIDR.
 */
export function cniConfig(input: CniConfigInput): Record<string, unknown> {
  return {
    cniVersion: '0.3.1',
    name: CNI_NETWORK_NAME,
    type: 'bridge',
    bridge: CNI_BRIDGE,
    isGateway: true,
    isDefaultGateway: true,
    hairpinMode: true,
    ipMasq: false,
    mtu: input.mtu ?? 1500,
    ipam: {
      type: 'host-local',
      dataDir: input.ipamDataDir,
      ranges: [[{ subnet: input.podCIDR }]],
      routes: [{ dst: input.clusterCIDR }],
    },
  };
}

export function ipamDataDir(labDir: string, node: string): string {
  return join(labDir, 'ipam', node);
}

export interface CniCall {
  command: 'ADD' | 'DEL';
  nodeNetns: string;
  podNetns: string;
  containerId: string;
  config: Record<string, unknown>;
  /** Requested pod IP (status.podIP); host-local picks one when absent. */
  ip?: string;
  podNamespace: string;
  podName: string;
}

export interface CniAddResult {
  ips: Array<{ address: string; gateway?: string }>;
  interfaces?: Array<{ name: string; sandbox?: string }>;
}

/** Runs the bridge plugin inside the node's namespace. Returns the plugin's JSON result for ADD. */
export async function runCni(call: CniCall): Promise<CniAddResult | undefined> {
  const args = [
    'IgnoreUnknown=1',
    `K8S_POD_NAMESPACE=${call.podNamespace}`,
    `K8S_POD_NAME=${call.podName}`,
    `K8S_POD_INFRA_CONTAINER_ID=${call.containerId}`,
    ...(call.ip ? [`IP=${call.ip}`] : []),
  ].join(';');
  const env = {
    CNI_COMMAND: call.command,
    CNI_CONTAINERID: call.containerId,
    CNI_NETNS: `${NETNS_DIR.replace(/^\/run/, '/var/run')}/${call.podNetns}`,
    CNI_IFNAME: POD_IFNAME,
    CNI_PATH,
    CNI_ARGS: args,
  };
  const argv = ['ip', 'netns', 'exec', call.nodeNetns, join(CNI_PATH, 'bridge')];
  const envText = Object.entries(env)
    .map(([k, v]) => `${k}='${v}'`)
    .join(' ');
  const r = await run(argv, {
    env,
    input: JSON.stringify(call.config),
    context: `CNI ${call.command} for pod ${call.podNamespace}/${call.podName} (env ${envText})`,
  });
  if (call.command !== 'ADD') return undefined;
  return JSON.parse(r.stdout) as CniAddResult;
}
