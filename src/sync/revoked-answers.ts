// The answers of revoked UDP flows, held back (docs/design.md, "Revoked stays revoked"): with
// `--revoke-established`, before the agent deletes the conntrack entry of a UDP flow a change
// denies, it puts the tuple the flow's answers travel on into the compiler's REVOKED_SET
// (layout.ts; its name comes from the caller: the sync layer knows the Ruleset contract only),
// whose rule drops a new UDP packet on it; the kernel expires each element after the set's
// timeout. Here, in the sync layer, because it writes to the kernel.

import type { ConntrackFlow } from './conntrack.ts';
import type { Runner } from './runner.ts';

/**
 * The element of a UDP flow in that set: where its answers go (the reply tuple's destination
 * and port: the client and its port) and who sends them (the reply's source: the server, after
 * a Service's DNAT the backend); undefined for other protocols or an entry without a reply tuple.
 */
export function answerTuple(f: ConntrackFlow): string | undefined {
  if (f.protocol !== 'udp' || !f.replySrc || !f.replyDst || f.replyDport === undefined) return undefined;
  return `${f.replyDst},udp:${f.replyDport},${f.replySrc}`;
}

/**
 * Put the answer tuples of these flows into `set` (the kernel expires each after the set's
 * timeout; adding one again restarts it). Returns how many, or throws naming the set and what
 * ipset said.
 */
export async function holdAnswers(runner: Runner, set: string, flows: readonly ConntrackFlow[]): Promise<number> {
  const tuples = [...new Set(flows.flatMap((f) => answerTuple(f) ?? []))];
  if (tuples.length === 0) return 0;
  const r = await runner.run('ipset', ['restore', '-exist'], { input: tuples.map((t) => `add ${set} ${t}\n`).join('') });
  if (r.exitCode !== 0) throw new Error(`adding ${tuples.length} answer tuple(s) of revoked UDP flows to ${set} failed with exit code ${r.exitCode}: ${r.stderr.trim() || '(no output)'}`);
  return tuples.length;
}
