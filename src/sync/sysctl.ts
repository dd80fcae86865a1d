// Kernel settings the enforcer depends on, read from /proc/sys of the namespace the process
// runs in (net.* sysctls are per network namespace).

import { readFile, writeFile } from 'node:fs/promises';
import { errorText } from '../util/error-text.ts';

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

/**
 * Turn bridge-nf-call-iptables back on (the agent's `--set-bridge-nf`). Throws with the path and
 * the cause when it cannot (no br_netfilter, read-only /proc/sys).
 */
export async function enableBridgeNfCallIptables(path: string = BRIDGE_NF_CALL_IPTABLES): Promise<void> {
  try {
    await writeFile(path, '1\n');
  } catch (e) {
    throw new Error(`cannot set ${path} to 1: ${errorText(e)}`);
  }
}
