// Conformance steps judge new connections. Each probe draws a fresh ephemeral source port, but
// a port can be drawn again: a UDP probe of an earlier step or case on the same 5-tuple (allowed
// then) is still tracked for up to 120 s, and a tracked flow is established, which a policy
// change does not revoke unless the agent runs with --revoke-established (README, "Established
// connections"). Forgetting the nodes' tracked flows before a round of probes makes every
// probe a new connection, as the case means it.

import type { LabState } from '../../src/lab/state.ts';
import { runInNetns } from '../../src/lab/exec.ts';

/** `conntrack -F` in every node namespace of the lab (never the machine's own namespace). */
export async function forgetTrackedFlows(lab: LabState): Promise<void> {
  await Promise.all(lab.nodes.map((n) => runInNetns(n.netns, ['conntrack', '-F'], { context: `flushing conntrack in node ${n.name} of lab ${lab.name}` })));
}
