// `policyctl agent --no-drop-log`: the node is programmed without the drop log's rules (the
// rate-limited NFLOG rule before each drop, src/compiler/drop-log.ts), for kernels without NFLOG
// or hashlimit, or nodes that want no log at all. The compiler's Rulesets always carry them; the
// sync layer takes them out before anything is diffed or written. The drop after each log rule
// decides alone, so the verdicts are the same (invariant two-statements: the tracer checks the
// rules with the log rules, and a log rule never ends a walk).
//
// Memoized by object, so the same input gives the same output object: the sync layer's
// lineage check (a delta applies when it starts from the Ruleset last applied) and identity
// skips still hold (invariant cost-proportional).

import type { Chain, Ruleset, RulesetDelta } from '../compiler/ruleset.ts';

const chains = new WeakMap<Chain, Chain>();
const rulesets = new WeakMap<Ruleset, Ruleset>();
const deltas = new WeakMap<RulesetDelta, RulesetDelta>();

export function chainWithoutLog(c: Chain): Chain {
  let out = chains.get(c);
  if (!out) {
    out = c.rules.some((r) => r.action.kind === 'log') ? { ...c, rules: c.rules.filter((r) => r.action.kind !== 'log') } : c;
    chains.set(c, out);
    chains.set(out, out);
  }
  return out;
}

export function rulesetWithoutLog(rs: Ruleset): Ruleset {
  let out = rulesets.get(rs);
  if (!out) {
    out = { ...rs, chains: rs.chains.map(chainWithoutLog) };
    rulesets.set(rs, out);
    // Taken out once, a Ruleset stays itself (a fallback from syncDelta to sync passes it again).
    rulesets.set(out, out);
  }
  return out;
}

export function deltaWithoutLog(d: RulesetDelta): RulesetDelta {
  let out = deltas.get(d);
  if (!out) {
    out = { ...d, writtenChains: d.writtenChains.map(chainWithoutLog) };
    deltas.set(d, out);
  }
  return out;
}
