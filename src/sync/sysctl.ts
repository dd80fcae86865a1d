// Kernel settings the enforcer depends on, read from /proc/sys of the namespace the process
// runs in (net.* sysctls are per network namespace).

import { readFile } from 'node:fs/promises';

export const BRIDGE_NF_CALL_IPTABLES = '/proc/sys/net/bridge/bridge-nf-call-iptables';

/**
 * Whether bridged (same-node) pod traffic passes through iptables. Without br_netfilter the
 * file is missing: that reads as false, never as an error that could hide the problem.
 */
export async function bridgeNfCallIptables(path: string = BRIDGE_NF_CALL_IPTABLES): Promise<boolean> {
  try {
    return (await readFile(path, 'utf8')).trim() === '1';
  } catch {
    return false;
  }
}
