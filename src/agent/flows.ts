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
//   connection stays ended. UDP has no SYN: before the entry of a UDP flow goes, the tuple its
//   answers travel on goes into layout.ts REVOKED_SET for a while (src/sync/revoked-answers.ts), so an answer that was still
//   on its way (a server answering late) is dropped too instead of being tracked as a new flow
//   of the server's, whose replies the client's datagrams would then be. The connections the node opens itself (from one of its own addresses:
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
import { allowed, isUnprogrammedAddress, type Endpoint, type FlowProtocol } from '../semantics/evaluate.ts';
import { deleteAddressFlows, deleteFlow, listFlows, type ConntrackFlow } from '../sync/conntrack.ts';
import { holdAnswers } from '../sync/revoked-answers.ts';
import { REVOKED_SET } from '../compiler/layout.ts';
import { localAddresses } from '../sync/local-addresses.ts';
import type { Runner } from '../sync/runner.ts';
import { errorText } from '../util/error-text.ts';

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

/** How the semantics see a tracked protocol: TCP, UDP, SCTP, or one without ports (ICMP, GRE, ...). */
const flowProtocol = (p: string): FlowProtocol => PROTOCOLS[p] ?? 'other';

/**
 * The tracked connections of this node that the model now denies: those with a local pod at
 * either end (the ones this node polices), judged as the rules judge a new connection, except
 * those opened from one of the node's own addresses (`own`), which the rules never judge. The
 * destination and its port are the reply's source and source port: after a Service's DNAT, the
 * backend and its port (the targetPort), which is what policy judges, not the Service's port.
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
    // A protocol without ports (ICMP, GRE, ...) is judged as such: only rules without ports
    // allow it, so a change that leaves it none ends it too.
    const protocol = flowProtocol(f.protocol);
    if ((protocol !== 'other' && f.dport === undefined) || own.has(f.src)) continue;
    // The reply's source is where the connection really goes (the original destination unless DNATed).
    const dstIp = f.replySrc ?? f.dst;
    const port = protocol === 'other' ? 0 : (f.replySport ?? f.dport)!;
    const local = (ip: string) => byIp.get(ip)?.nodeName === node;
    if (!local(f.src) && !local(dstIp)) continue;
    const verdict = allowed(model, { src: endpoint(f.src), dst: endpoint(dstIp), protocol, port });
    if (!verdict.allowed) out.push(f);
  }
  return out;
}

/**
 * Delete the entries of the connections `deniedFlows` finds; returns them, and why their UDP
 * answers could not be held (then the entries are deleted all the same: an established flow
 * the policy denies must end; only a late answer could take it up again).
 */
export async function revokeDenied(model: Model, node: string, runner: Runner): Promise<{ denied: ConntrackFlow[]; holdError?: string }> {
  const denied = deniedFlows(model, node, await listFlows(runner), await localAddresses(runner));
  let holdError: string | undefined;
  // Before the entries go: from the moment one is deleted, an answer on its tuple is new.
  try {
    await holdAnswers(runner, REVOKED_SET, denied);
  } catch (e) {
    holdError = errorText(e);
  }
  for (const f of denied) await deleteFlow(runner, f);
  return { denied, ...(holdError !== undefined && { holdError }) };
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

