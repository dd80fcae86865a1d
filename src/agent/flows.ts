// Established flows that must not outlive a change (see src/sync/conntrack.ts for why).
//
// - Addresses that leave the model (a pod deleted or finished, its IP changed, an address now
//   claimed by two pods) are collected as the model changes and, once the sync that removed
//   them from every set is in force, every conntrack entry from or to them is deleted: a pod
//   that gets the address next never inherits the old pod's connections. Always on.
// - With `--revoke-established`, after a sync that wrote anything (a member leaving a peer set
//   denies as surely as a rule), every tracked connection of a local pod is judged again by the
//   semantics (the same meaning the compiled rules have, property-tested) and the entries of those
//   now denied are deleted: their next packet is a new connection, which the rules drop; a TCP
//   packet without SYN is dropped as a mid-stream pickup (layout.ts MIDSTREAM_CHAIN), so the
//   connection stays ended. The connections the node opens itself (from one of its own addresses:
//   kubelet's probes come from the bridge's) are left alone: the rules never judge them (they leave
//   through OUTPUT), and ending one would drop the pod's answers, mid-stream, until the node sends
//   again.
//
// - After the first sync, entries of pod-CIDR addresses that no pod holds are deleted too: the
//   addresses released while no agent watched (it was down) left no trace to follow.
// All run after the apply, never before: deleting an entry while the old rules are still in
// force would let the next packet re-create it under them.

import type { Model, ModelChange } from '../model/store.ts';
import type { PodRecord, Protocol } from '../model/types.ts';
import { isEnforceable } from '../model/types.ts';
import { allowed, isUnprogrammedAddress, type Endpoint } from '../semantics/evaluate.ts';
import { deleteAddressFlows, deleteFlow, listFlows, type ConntrackFlow } from '../sync/conntrack.ts';
import { localAddresses } from '../sync/local-addresses.ts';
import type { Runner } from '../sync/runner.ts';

/** Collects the addresses that left the model since the last flush. */
export class ReleasedAddresses {
  private readonly pending = new Set<string>();
  private readonly unsubscribe: () => void;

  constructor(model: Model) {
    this.unsubscribe = model.subscribe((c) => this.note(c));
  }

  private note(c: ModelChange): void {
    if (c.kind !== 'Pod') return;
    const { before, after } = c;
    if (!before || !isEnforceable(before)) return;
    const kept = after && isEnforceable(after) ? after.ips : [];
    for (const ip of before.ips) if (!kept.includes(ip)) this.pending.add(ip);
  }

  /** Addresses waiting for their flows to be deleted. */
  size(): number {
    return this.pending.size;
  }

  /**
   * Delete the conntrack entries of every address collected so far (call once the sync that
   * removed them is in force). On failure the addresses stay pending for the next call.
   */
  async flush(runner: Runner): Promise<{ addresses: string[]; entries: number }> {
    const addresses = [...this.pending];
    if (addresses.length === 0) return { addresses, entries: 0 };
    const entries = await deleteAddressFlows(runner, addresses);
    for (const ip of addresses) this.pending.delete(ip);
    return { addresses, entries };
  }

  dispose(): void {
    this.unsubscribe();
  }
}

const PROTOCOLS: Record<string, Protocol> = { tcp: 'TCP', udp: 'UDP', sctp: 'SCTP' };

/**
 * The tracked connections of this node that the model now denies: those with a local pod at
 * either end (the ones this node polices), judged as the rules judge a new connection, except
 * those opened from one of the node's own addresses (`own`), which the rules never judge. The
 * destination is the reply's source when they differ (a Service DNATed to its backend).
 */
export function deniedFlows(model: Model, node: string, flows: readonly ConntrackFlow[], own: ReadonlySet<string> = new Set()): ConntrackFlow[] {
  const byIp = new Map<string, PodRecord>();
  for (const p of model.allPods()) if (isEnforceable(p)) for (const ip of p.ips) byIp.set(ip, p);
  const endpoint = (ip: string): Endpoint => {
    const pod = byIp.get(ip);
    return pod ? { kind: 'pod', pod } : { kind: 'ip', ip };
  };
  const out: ConntrackFlow[] = [];
  for (const f of flows) {
    const protocol = PROTOCOLS[f.protocol];
    if (!protocol || f.dport === undefined || own.has(f.src)) continue;
    const dstIp = f.replySrc && f.replySrc !== f.dst ? f.replySrc : f.dst;
    const local = (ip: string) => byIp.get(ip)?.nodeName === node;
    if (!local(f.src) && !local(dstIp)) continue;
    const verdict = allowed(model, { src: endpoint(f.src), dst: endpoint(dstIp), protocol, port: f.dport });
    if (!verdict.allowed) out.push(f);
  }
  return out;
}

/** Delete the entries of the connections `deniedFlows` finds; returns them. */
export async function revokeDenied(model: Model, node: string, runner: Runner): Promise<ConntrackFlow[]> {
  const denied = deniedFlows(model, node, await listFlows(runner), await localAddresses(runner));
  for (const f of denied) await deleteFlow(runner, f);
  return denied;
}

/**
 * Delete the entries whose ends are addresses of a pod CIDR that no pod holds now: the
 * addresses released while no agent was watching (it was down or restarting), which
 * `ReleasedAddresses` never saw leave. Run once, after the first sync is in force.
 */
export async function deleteOrphanFlows(model: Model, runner: Runner): Promise<ConntrackFlow[]> {
  const orphan = (await listFlows(runner)).filter((f) => [f.src, f.dst, f.replySrc].some((ip) => ip !== undefined && isUnprogrammedAddress(model, ip)));
  for (const f of orphan) await deleteFlow(runner, f);
  return orphan;
}

