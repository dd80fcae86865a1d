// The compiler's output: ipsets and iptables chains for one node, as plain data.
//
// Rules are data (match, action, comment), as in Calico Felix: the renderer turns them into
// restore text, the sync layer diffs them against the kernel, and the test tracer executes the
// rendered text. Nothing here knows how it is applied.

import type { NameCollision } from './collisions.ts';

export type SetType = 'hash:ip' | 'hash:net' | 'hash:ip,port' | 'hash:net,net';

export interface SetMember {
  /** `10.0.0.1`, `10.0.0.0/8`, `10.0.0.1,tcp:8080`, `10.0.0.1,10.0.0.1` by set type. */
  readonly entry: string;
  /** hash:net only: the entry is an exception (ipBlock `except`). */
  readonly nomatch?: boolean;
}

export interface IpSet {
  readonly name: string;
  readonly type: SetType;
  /** Sorted by entry, no duplicates. */
  readonly members: readonly SetMember[];
  /** What the set holds, for humans (`policyctl compile -o json`, logs). */
  readonly purpose: string;
}

/** `src` / `dst` for single-dimension sets; `dst,dst` for hash:ip,port; `src,dst` for hash:net,net. */
export type SetDirections = 'src' | 'dst' | 'dst,dst' | 'src,dst';

export interface SetMatch {
  readonly set: string;
  readonly dirs: SetDirections;
  readonly negate?: boolean;
}

export interface PortRange {
  readonly from: number;
  /** Inclusive; equal to `from` for a single port. */
  readonly to: number;
}

export type L4Protocol = 'tcp' | 'udp' | 'sctp';

export interface Match {
  readonly srcNet?: string;
  readonly dstNet?: string;
  readonly protocol?: L4Protocol;
  /** Only with `protocol`. Empty or absent: any port. At most 15 port slots (a range takes 2). */
  readonly dports?: readonly PortRange[];
  readonly sets?: readonly SetMatch[];
  readonly ctstate?: readonly ('NEW' | 'ESTABLISHED' | 'RELATED' | 'INVALID')[];
}

export type Action =
  | { readonly kind: 'return' }
  | { readonly kind: 'drop' }
  | { readonly kind: 'jump'; readonly chain: string }
  /** `-g`: RETURN (or the end) of the target chain returns to the caller of the current chain. */
  | { readonly kind: 'goto'; readonly chain: string };

export interface Rule {
  readonly match: Match;
  readonly action: Action;
  /** Says why the rule exists (policy and rule index); rendered as an iptables comment. */
  readonly comment: string;
}

export interface Chain {
  readonly name: string;
  readonly rules: readonly Rule[];
  /**
   * The rules match disjoint packets, so their order carries no meaning: the sync layer compares
   * the chain's rules as a set and may change it by appending and deleting single rules instead
   * of rewriting it (a rewrite flushes the chain).
   */
  readonly unordered?: true;
}

/**
 * A jump from a chain we do not own (a built-in chain) into ours. Invariant: it is the only
 * kind of rule we place in a foreign chain, it is always at position 1, and its comment marks
 * it as ours.
 */
export interface Hook {
  readonly table: 'filter';
  readonly chain: 'FORWARD' | 'INPUT';
  readonly target: string;
  readonly comment: string;
}

export interface Ruleset {
  readonly node: string;
  /** Sorted by name. Every set a rule references is here. */
  readonly sets: readonly IpSet[];
  /**
   * Dependency order is not required. The hook targets and the dispatch chains first
   * (PCTL-FORWARD, PCTL-INPUT, PCTL-EGRESS, PCTL-INGRESS, PCTL-EB-k and PCTL-IB-k by k), then the
   * policy chains sorted by name.
   */
  readonly chains: readonly Chain[];
  readonly hooks: readonly Hook[];
  /**
   * Chain names that stood for more than one content (never expected: names carry 105 bits of
   * SHA-256). Absent when there are none. Their pods are isolated by a drop-all chain instead
   * (collisions.ts); whoever applies the Ruleset reports these as errors.
   */
  readonly collisions?: readonly NameCollision[];
}
