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

/**
 * `make(x)` once per object: the same input gives the same output object, and an output given
 * again is itself when `fixed` (taken out once, it stays so: a fallback from syncDelta to sync
 * passes a Ruleset again).
 */
function memo<T extends object>(make: (x: T) => T, fixed: boolean): (x: T) => T {
  const seen = new WeakMap<T, T>();
  return (x) => {
    let out = seen.get(x);
    if (!out) {
      out = make(x);
      seen.set(x, out);
      if (fixed) seen.set(out, out);
    }
    return out;
  };
}

export const chainWithoutLog = memo<Chain>((c) => (c.rules.some((r) => r.action.kind === 'log') ? { ...c, rules: c.rules.filter((r) => r.action.kind !== 'log') } : c), true);

export const rulesetWithoutLog = memo<Ruleset>((rs) => ({ ...rs, chains: rs.chains.map(chainWithoutLog) }), true);

export const deltaWithoutLog = memo<RulesetDelta>((d) => ({ ...d, writtenChains: d.writtenChains.map(chainWithoutLog) }), false);
