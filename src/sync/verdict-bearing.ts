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
import type { KernelState } from './kernel-state.ts';
import { canonicalEntry, type Plan } from './plan.ts';

/** What a set's growing, or shrinking, may do to the rules' verdicts: deny something (`narrows`). */
export interface Bearing {
  readonly growNarrows: boolean;
  readonly shrinkNarrows: boolean;
}

/**
 * How a rule's action turns a match into a verdict; `goto`: it depends on the chain it goes to
 * (one that drops every packet is a drop: the unknown-address chains, PCTL-UNKNOWN-SRC / -DST).
 */
function actionKind(r: Rule): 'allow' | 'deny' | 'none' | 'other' | 'goto' {
  switch (r.action.kind) {
    case 'return':
      return 'allow';
    case 'drop':
    case 'logdrop':
      return 'deny';
    case 'log':
    case 'remember':
      return 'none';
    case 'goto':
      return 'goto';
    case 'jump':
      return 'other';
  }
}

type MutableBearing = { growNarrows: boolean; shrinkNarrows: boolean };

/** What one chain's rules make of each set they test; the gotos wait for what their chain does. */
interface ChainUses {
  readonly bearings: ReadonlyMap<string, Bearing>;
  readonly gotos: readonly { readonly set: string; readonly negate: boolean; readonly chain: string }[];
}

/**
 * A set tested (`negate`: with `!`) by a rule that drops (`deny`) or returns: a drop matching more
 * packets narrows, a return matching fewer; a test matches more when its set grows, or, negated,
 * shrinks.
 */
function note(b: MutableBearing, negate: boolean, deny: boolean): void {
  if (deny === !negate) b.growNarrows = true;
  else b.shrinkNarrows = true;
}

/** Memoized per chain: chains are immutable and shared between successive Rulesets. */
function chainUses(c: Chain): ChainUses {
  let out = perChain.get(c);
  if (out) return out;
  const m = new Map<string, MutableBearing>();
  const gotos: { set: string; negate: boolean; chain: string }[] = [];
  for (const r of c.rules) {
    const sets = r.match.sets;
    if (!sets || sets.length === 0) continue;
    const kind = actionKind(r);
    if (kind === 'none') continue;
    for (const s of sets) {
      let b = m.get(s.set);
      if (!b) m.set(s.set, (b = { growNarrows: false, shrinkNarrows: false }));
      if (kind === 'goto') gotos.push({ set: s.set, negate: !!s.negate, chain: (r.action as { chain: string }).chain });
      else if (kind === 'other') b.growNarrows = b.shrinkNarrows = true;
      else note(b, !!s.negate, kind === 'deny');
    }
  }
  out = { bearings: m, gotos };
  perChain.set(c, out);
  return out;
}
const perChain = new WeakMap<Chain, ChainUses>();

/** Whether a chain drops every packet it gets: its first rule that decides is a drop that tests nothing (drop-log.ts loggedDrop of no match). */
function dropsEverything(c: Chain): boolean {
  const first = c.rules.find((r) => r.action.kind !== 'log');
  return !!first && first.action.kind === 'drop' && Object.keys(first.match).length === 0;
}

/** The bearing of every set the Ruleset's rules test (a set no rule tests bears on nothing). */
export function setBearings(rs: Pick<Ruleset, 'chains'>): ReadonlyMap<string, Bearing> {
  let out = perRuleset.get(rs.chains);
  if (out) return out;
  // Successive Rulesets of the incremental compiler share every chain that did not change: when
  // none did (a plan of set members alone), the last answer stands (a pointer compare per chain).
  if (last && last.chains.length === rs.chains.length && last.chains.every((c, i) => c === rs.chains[i])) {
    perRuleset.set(rs.chains, last.out);
    return last.out;
  }
  const m = new Map<string, MutableBearing>();
  const drops = new Set(rs.chains.filter(dropsEverything).map((c) => c.name));
  const of = (set: string) => {
    let b = m.get(set);
    if (!b) m.set(set, (b = { growNarrows: false, shrinkNarrows: false }));
    return b;
  };
  for (const c of rs.chains) {
    const u = chainUses(c);
    for (const [set, b] of u.bearings) {
      const cur = of(set);
      cur.growNarrows ||= b.growNarrows;
      cur.shrinkNarrows ||= b.shrinkNarrows;
    }
    for (const g of u.gotos) {
      const cur = of(g.set);
      if (drops.has(g.chain)) note(cur, g.negate, true);
      else cur.growNarrows = cur.shrinkNarrows = true;
    }
  }
  out = m;
  perRuleset.set(rs.chains, out);
  last = { chains: rs.chains, out };
  return out;
}
const perRuleset = new WeakMap<readonly Chain[], ReadonlyMap<string, Bearing>>();
let last: { readonly chains: readonly Chain[]; readonly out: ReadonlyMap<string, Bearing> } | undefined;

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
