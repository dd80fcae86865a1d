// How many iptables rules a NetworkPolicy rule becomes at most, counted from the spec alone so
// that validation can refuse a rule the compiler should never be asked to write. The API sets no
// limit on a rule's peers or ports, and the compiler writes one rule per peer and per group of
// ports (src/compiler/rules.ts rulesFor: multiport takes 15 ports, a range two of them; a named
// port is a rule of its own): a tenant's 66 KB policy of 1000 ipBlocks and 2000 ports is
// 134,000 rules in every chain that holds it. A policy whose rules expand to more than
// MAX_RULES_PER_POLICY is invalid and fails closed (docs/design.md, invariant fail-closed), with
// an error saying why (normalize-policy.ts checkExpansion).

import type { PolicyRule, Protocol } from './types.ts';

/** Ports one multiport match holds (a range takes two). */
export const MULTIPORT_SLOTS = 15;
/** The most iptables rules one NetworkPolicy's rules may become, together. */
export const MAX_RULES_PER_POLICY = 5000;

export interface RuleExpansion {
  /** Peers (1 for a rule that names none: every peer). */
  readonly peers: number;
  /** Port matches per peer (1 for a rule without ports). */
  readonly portMatches: number;
  /** Their product: the rules it becomes at most. */
  readonly rules: number;
}

/**
 * An upper bound of the rules `rule` compiles to (ports are not merged here, so it can only be
 * more than the compiler writes, never less). A named port is a match of its own in either
 * direction: a set of pods' named ports, matched on the destination, whatever ports the pods
 * declare under that name (the API does not keep a name unique across a pod's containers).
 */
export function ruleExpansion(rule: PolicyRule): RuleExpansion {
  const peers = Math.max(1, rule.peers?.length ?? 0);
  if (!rule.ports || rule.ports.length === 0) return { peers, portMatches: 1, rules: peers };
  const slots = new Map<Protocol, number | 'all'>();
  let namedMatches = 0;
  for (const p of rule.ports) {
    const had = slots.get(p.protocol) ?? 0;
    if (had === 'all') continue;
    if (p.port === undefined) slots.set(p.protocol, 'all');
    else if (typeof p.port === 'string') namedMatches++;
    else slots.set(p.protocol, had + (typeof p.port === 'number' && p.endPort !== undefined && p.endPort !== p.port ? 2 : 1));
  }
  let portMatches = namedMatches;
  for (const s of slots.values()) portMatches += s === 'all' ? 1 : Math.ceil(s / MULTIPORT_SLOTS);
  return { peers, portMatches, rules: peers * portMatches };
}
