// PROPOSAL, not used by the agent: a diff that skips what did not change since the Ruleset the
// kernel state was derived from. Measured by the incremental part as a comparison column.
//
// `diff(desired, actual)` (src/sync/plan.ts) walks every member of every set and every rule id
// of every chain: O(size of the Ruleset) per event, about 4 ms for the 10k/2k cluster's 23k
// set entries. The IncrementalCompiler hands out the same IpSet / Chain objects when they did
// not change, so when `actual` is `stateOf(previous)`, an object shared by `desired` and
// `previous` cannot differ from the kernel and can be skipped. A changed set is still compared
// whole, which is why the agent uses the plan built from the compiler's delta instead
// (src/sync/plan-from-delta.ts, Syncer.syncDelta); this stays as the measured alternative.

import type { Ruleset } from '../../src/compiler/ruleset.ts';
import type { KernelState } from '../../src/sync/kernel-state.ts';
import { diff, type Plan } from '../../src/sync/plan.ts';

/** Precondition: `actual` is `stateOf(previous)`. Then the result equals `diff(desired, actual)`. */
export function diffSince(desired: Ruleset, previous: Ruleset, actual: KernelState): Plan {
  const prevSets = new Map(previous.sets.map((s) => [s.name, s]));
  const prevChains = new Map(previous.chains.map((c) => [c.name, c]));
  const sets = desired.sets.filter((s) => prevSets.get(s.name) !== s);
  const chains = desired.chains.filter((c) => prevChains.get(c.name) !== c);
  const actualSets = new Map(actual.sets);
  for (const s of desired.sets) if (prevSets.get(s.name) === s) actualSets.delete(s.name);
  const actualChains = new Map(actual.chains);
  for (const c of desired.chains) if (prevChains.get(c.name) === c) actualChains.delete(c.name);
  return diff({ ...desired, sets, chains }, { hooks: actual.hooks, sets: actualSets, chains: actualChains });
}
