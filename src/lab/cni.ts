// Attaching pods with the real CNI `bridge` plugin and `host-local` IPAM, configured the way
// flannel's CNI plugin delegates to them, chained with policyctl-cni as the DaemonSet installs
// it, and run the way a container runtime runs a conflist (libcni): with the node's network
// namespace as the plugins' own and the pod's namespace in CNI_NETNS; ADD through the plugins
// in order, each given the previous one's result as `prevResult`; DEL in reverse, each given the
// ADD's result.

import { join } from 'node:path';
import { LabError, run } from './exec.ts';
import { CNI_BRIDGE, CNI_NETWORK_NAME, POD_IFNAME } from './names.ts';
import { NETNS_DIR } from './exec.ts';

export const CNI_PATH = process.env['POLICYCTL_LAB_CNI_PATH'] ?? '/usr/lib/cni';
/** The version of the lab's conflist (as the DaemonSet's): from 0.4.0 on, DEL gets the ADD's result. */
export const CNI_VERSION = '1.0.0';

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

export interface PolicyCniConfig {
  /** The node agent's CNI socket. */
  socket: string;
  timeoutSeconds: number;
}

export interface CniConflist {
  cniVersion: string;
  name: string;
  plugins: Record<string, unknown>[];
}

/** The node's conflist: bridge (with host-local), then policyctl-cni when given (the DaemonSet's chain). */
export function cniConflist(input: CniConfigInput, policy?: PolicyCniConfig): CniConflist {
  const { cniVersion: _v, name: _n, ...bridge } = cniConfig(input);
  return {
    cniVersion: CNI_VERSION,
    name: CNI_NETWORK_NAME,
    plugins: [bridge, ...(policy ? [{ type: 'policyctl-cni', socket: policy.socket, timeoutSeconds: policy.timeoutSeconds }] : [])],
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
  config: CniConflist;
  /** Requested pod IP (status.podIP); host-local picks one when absent. */
  ip?: string;
  podNamespace: string;
  podName: string;
  /** DEL: the ADD's result, as a runtime caches it. */
  prevResult?: CniAddResult;
  /** DEL: go on through the remaining plugins when one fails (the lab cleaning up a failed ADD); the first error is thrown at the end. */
  force?: boolean;
  /** Where policyctl-cni is installed (`installPlugin`); needed when the conflist chains it. */
  binDir?: string;
  /** Called as each plugin returns (ADD: with its result), e.g. to note when the pod's network is up. */
  onPlugin?: (type: string, result: CniAddResult | undefined) => void;
}

export interface CniAddResult {
  cniVersion?: string;
  ips: Array<{ address: string; gateway?: string }>;
  interfaces?: Array<{ name: string; sandbox?: string }>;
}

/** The executable of a plugin type, as a runtime finds it: policyctl-cni where it was installed, the others in CNI_PATH. */
function pluginArgv(type: string, binDir: string | undefined): string[] {
  if (type !== 'policyctl-cni') return [join(CNI_PATH, type)];
  if (!binDir) throw new LabError('the conflist chains policyctl-cni but the CNI call names no folder it is installed in (binDir)');
  return [join(binDir, 'policyctl-cni')];
}

/** Runs the conflist inside the node's namespace. Returns the chain's result for ADD. */
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
  const envText = Object.entries(env)
    .map(([k, v]) => `${k}='${v}'`)
    .join(' ');
  const plugins = call.command === 'ADD' ? call.config.plugins : [...call.config.plugins].reverse();
  let prev: CniAddResult | undefined = call.command === 'DEL' ? call.prevResult : undefined;
  let firstError: unknown;
  for (const plugin of plugins) {
    const type = String(plugin['type']);
    const netconf = { cniVersion: call.config.cniVersion, name: call.config.name, ...plugin, ...(prev ? { prevResult: prev } : {}) };
    try {
      const r = await run(['ip', 'netns', 'exec', call.nodeNetns, ...pluginArgv(type, call.binDir)], {
        env,
        input: JSON.stringify(netconf),
        context: `CNI ${call.command} (${type}) for pod ${call.podNamespace}/${call.podName} (env ${envText})`,
      });
      if (call.command === 'ADD') prev = JSON.parse(r.stdout) as CniAddResult;
      call.onPlugin?.(type, call.command === 'ADD' ? prev : undefined);
    } catch (e) {
      if (call.command !== 'DEL' || !call.force) throw e;
      firstError ??= e;
    }
  }
  if (firstError) throw firstError;
  return call.command === 'ADD' ? prev : undefined;
}

/** The result a runtime would have cached for a pod attached at `ip` in `podCIDR`. */
export function cachedResult(ip: string, podCIDR: string): CniAddResult {
  return { cniVersion: CNI_VERSION, ips: [{ address: `${ip}/${podCIDR.split('/')[1]}` }] };
}
