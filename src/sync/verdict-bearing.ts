// Whether a write can deny what a remembered verdict allows (docs/design.md, "The verdict cache",
// invariant verdicts-of-the-rules-in-force): the Syncer empties the verdict cache after a write
// unless this proves that the write only widens what the rules allow. In a cluster with churn
// most writes are pods of other nodes coming and going: their addresses join and leave the
// allow sets and PCTL-known, which only widen, and emptying the cache for each would leave it
// nearly always empty.
//
// Why it holds. Our rules have no terminal allow: a packet is allowed when it never reaches a
// DROP (a RETURN, or falling off a chain, goes back to where the chain was entered from, and the
// rest of the walk goes on from there, whatever was skipped). Our only other actions are jumps
// and gotos to chains, and rules without effect on the verdict (the drop log's NFLOG, the cache's
// own add). So, the rules unchanged:
// - a RETURN rule that matches more packets only skips rules for them, and skipping rules can
//   only skip DROPs: the verdict of every packet stays or widens;
// - a DROP rule (or a goto to a chain that drops everything) that matches fewer packets lets them
//   go on to where the walk would have gone had the rule not been there: stays or widens;
// - a rule that jumps or goes to any other chain (a dispatch, a Pass, a tier's continuation) may
//   send a packet anywhere: any change of its match may deny.
// A set in a rule's match makes it match more packets when the set grows (an entry added, or a
// hash:net exception removed) and it is tested positively, or shrinks and it is tested negated
// (`! --match-set`). Each rule's set tests are conditions of one conjunction, so each set bears on
// the rule alone. A plan that changes rules, chains, hooks or the sets' existence is never
// proved: only set members, with the rules in force equal to the Ruleset's (the Syncer collects
// the garbage of the last write, stale rules included, before it applies the next one).

import type { Chain, IpSet, Rule, Ruleset } from '../compiler/ruleset.ts';
import { UNKNOWN_CHAINS } from '../compiler/layout.ts';
import type { KernelState } from './kernel-state.ts';
import { canonicalEntry, type Plan } from './plan.ts';

/** What a set's growing, or shrinking, may do to the rules' verdicts: deny something (`narrows`). */
export interface Bearing {
  readonly growNarrows: boolean;
  readonly shrinkNarrows: boolean;
}

const DROPS_ALL = new Set<string>(Object.values(UNKNOWN_CHAINS));

/** How a rule's action turns a match into a verdict. */
function actionKind(r: Rule): 'allow' | 'deny' | 'none' | 'other' {
  const a = r.action;
  switch (a.kind) {
    case 'return':
      return 'allow';
    case 'drop':
    case 'logdrop':
      return 'deny';
    case 'log':
    case 'remember':
      return 'none';
    case 'goto':
      return DROPS_ALL.has(a.chain) ? 'deny' : 'other';
    case 'jump':
      return 'other';
  }
}

type MutableBearing = { growNarrows: boolean; shrinkNarrows: boolean };

/** The bearing of each set one chain's rules test (memoized: chains are immutable and shared between Rulesets). */
function chainBearings(c: Chain): ReadonlyMap<string, Bearing> {
  let out = perChain.get(c);
  if (out) return out;
  const m = new Map<string, MutableBearing>();
  for (const r of c.rules) {
    const sets = r.match.sets;
    if (!sets || sets.length === 0) continue;
    const kind = actionKind(r);
    if (kind === 'none') continue;
    for (const s of sets) {
      let b = m.get(s.set);
      if (!b) m.set(s.set, (b = { growNarrows: false, shrinkNarrows: false }));
      if (kind === 'other') {
        b.growNarrows = b.shrinkNarrows = true;
        continue;
      }
      // allow: the rule matching more packets widens; deny: narrows. A negated test matches more when the set shrinks.
      const moreNarrows = kind === 'deny';
      if (s.negate) {
        if (moreNarrows) b.shrinkNarrows = true;
        else b.growNarrows = true;
      } else if (moreNarrows) b.growNarrows = true;
      else b.shrinkNarrows = true;
    }
  }
  out = m;
  perChain.set(c, out);
  return out;
}
const perChain = new WeakMap<Chain, ReadonlyMap<string, Bearing>>();

/** The bearing of every set the Ruleset's rules test (a set no rule tests bears on nothing). */
export function setBearings(rs: Pick<Ruleset, 'chains'>): ReadonlyMap<string, Bearing> {
  let out = perRuleset.get(rs.chains);
  if (out) return out;
  const m = new Map<string, MutableBearing>();
  for (const c of rs.chains) {
    for (const [set, b] of chainBearings(c)) {
      const cur = m.get(set);
      if (!cur) m.set(set, { ...b });
      else {
        cur.growNarrows ||= b.growNarrows;
        cur.shrinkNarrows ||= b.shrinkNarrows;
      }
    }
  }
  out = m;
  perRuleset.set(rs.chains, out);
  return out;
}
const perRuleset = new WeakMap<readonly Chain[], ReadonlyMap<string, Bearing>>();

/**
 * Whether applying `plan` may deny a packet the rules in force allow now: false only when the
 * plan changes set members alone and each change widens (see the header). `rs` is the Ruleset
 * the plan applies (its rules are the kernel's, before and after); `before` what the kernel
 * holds, for whether a removed hash:net entry was an exception (unknown: assumed to narrow).
 */
export function mayNarrow(plan: Plan, rs: Pick<Ruleset, 'chains' | 'sets'>, before: KernelState | undefined): boolean {
  if (
    plan.createSets.length + plan.replaceSets.length + plan.writeChains.length + plan.appendRules.length + plan.removeHooks.length + plan.insertHooks.length + plan.removeRules.length + plan.destroySets.length >
    0
  ) {
    return true;
  }
  const bearings = setBearings(rs);
  const narrows = (set: string, grows: boolean): boolean => {
    const b = bearings.get(set);
    return b !== undefined && (grows ? b.growNarrows : b.shrinkNarrows);
  };
  // An added hash:net exception (nomatch) shrinks the set; removing one grows it.
  for (const a of plan.addMembers) if (narrows(a.set, !a.nomatch)) return true;
  for (const d of plan.delMembers) {
    const cur = before?.sets.get(d.set);
    const wasException = cur?.members.get(canonicalEntry(cur.type, d.entry));
    if (wasException === undefined) {
      if (narrows(d.set, false) || narrows(d.set, true)) return true;
    } else if (narrows(d.set, wasException)) return true;
  }
  return false;
}

/** The sets of a Ruleset that every write that may deny empties (IpSet.runtime.flushOnChange). */
export function flushedSets(rs: Ruleset): readonly IpSet[] {
  let out = flushed.get(rs.sets);
  if (!out) flushed.set(rs.sets, (out = rs.sets.filter((s) => s.runtime?.flushOnChange)));
  return out;
}
const flushed = new WeakMap<readonly IpSet[], readonly IpSet[]>();
