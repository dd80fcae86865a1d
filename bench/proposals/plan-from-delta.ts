// PROPOSAL, not used by the agent: the sync plan built from the IncrementalCompiler's delta
// instead of from a diff of the whole Ruleset. Measured by the incremental part next to the
// real diff, and checked there to give the same plan as `diff(desired, stateOf(previous))`.
//
// Why: even skipping unchanged objects (diff-since.ts), a changed set is compared whole, and
// the sets a remote pod's relabel touches can hold thousands of entries. The compiler already
// knows which entries it added and removed; the plan can be exactly that. Plugged into the
// Syncer: on the fast path (previous apply succeeded, `known` = stateOf(previous)), take
// `planFromDelta(ic.delta())` and patch `known` with the same changes; `verify()` and any
// failure keep the full read-and-diff.

import type { RulesetDelta } from '../../src/compiler/incremental.ts';
import type { IpSet } from '../../src/compiler/ruleset.ts';
import { canonicalEntry, type Plan, type SetChange } from '../../src/sync/plan.ts';

export function planFromDelta(d: RulesetDelta): Plan {
  const addMembers: SetChange[] = [];
  const delMembers: SetChange[] = [];
  const replaceSets: IpSet[] = [];
  for (const c of d.memberChanges) {
    // Only hash:ip and hash:ip,port sets change members (ipBlock sets are fixed): entries are canonical.
    for (const entry of c.removed) delMembers.push({ set: c.set, entry });
    for (const entry of c.added) addMembers.push({ set: c.set, entry });
  }
  for (const { before, after } of d.rebuiltSets) {
    if (before.type !== after.type) {
      replaceSets.push(after);
      continue;
    }
    const had = new Map(before.members.map((m) => [canonicalEntry(before.type, m.entry), !!m.nomatch]));
    const want = new Map(after.members.map((m) => [canonicalEntry(after.type, m.entry), !!m.nomatch]));
    for (const [entry, nomatch] of want) {
      const has = had.get(entry);
      if (has === nomatch) continue;
      if (has !== undefined) delMembers.push({ set: after.name, entry });
      addMembers.push({ set: after.name, entry, ...(nomatch ? { nomatch } : {}) });
    }
    for (const entry of had.keys()) if (!want.has(entry)) delMembers.push({ set: after.name, entry });
  }
  return {
    createSets: d.createdSets,
    replaceSets,
    addMembers,
    delMembers,
    writeChains: d.writtenChains,
    deleteChains: [...d.removedChains].sort(),
    removeHooks: [],
    insertHooks: [],
    destroySets: [...d.destroyedSets].sort(),
  };
}
