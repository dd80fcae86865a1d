// The drop log (issue 11): before each final drop of a new connection the node's rules hand the
// packet to NFLOG with a prefix that says what decided, so the agent can name the pods and the
// policies behind a denial at run time. This file writes the prefix and reads it back, so the
// format is written once.
//
// NFLOG keeps 63 characters of a prefix, and policy names are chosen by tenants and can be long,
// so a prefix names what decided by its kind and a short digest the agent matches against the
// model (it recomputes the digests of the policies it knows):
//
//   PCTL <E|I> np <digest of the isolating policies>       a NetworkPolicy default deny
//   PCTL <E|I> cnp <tier> <rule index> <digest of name>    a ClusterNetworkPolicy Deny rule
//   PCTL <E|I> unknown                                     an unprogrammed address of the pod CIDRs, or
//                                                          one no known pod has at a Deny or Admin Pass that names
//                                                          pods (rules.ts clusterPolicyRules)
//   PCTL <E|I> collision                                   a chain name collision's drop-all chain
//   PCTL <E|I> midstream                                   a TCP packet conntrack took up mid-stream, or a
//                                                          UDP answer of a revoked flow (--revoke-established:
//                                                          layout.ts MIDSTREAM_CHAIN, REVOKED_SET)
//
// E and I are the direction the drop decided: an unknown source is dropped as egress, an unknown
// destination as ingress; a mid-stream packet from the pod CIDRs as egress, one to them as ingress.
//
// Two shapes, one log line per dropped packet either way:
// - in place (loggedDrop): the log rule with the drop's match, then the drop. For a drop that
//   matches every packet (a default deny, a drop-all chain) and the layout's own chains;
// - by a drop chain (chainedDrop): a conditional drop of a policy chain is one rule, `-g` to
//   `PCTL-L-<digest of the prefix>`, which holds the log rule and the drop without a match. A
//   chain per prefix, so it still says what decided (a chain shared by every drop could not say
//   which rule sent the packet there). Why: a packet the drop does not match tests the match once,
//   not twice (for a peer, a set lookup each), and a policy chain copied into many chains
//   (an Admin chain per next tier chain, layout.ts linkTiers) carries half the rules; the drop
//   chain is written once (docs/design.md, invariant cost-proportional).
// The log rule is rate-limited per node by the renderer (src/sync/render.ts DROP_LOG), and it
// only ever follows PCTL-FORWARD's replies rule, so an established connection never meets one
// (docs/design.md, "What a node is programmed with").

import { LRUCache } from 'lru-cache';
import { hashText } from '../util/digest.ts';
import { CHAIN_PREFIX, DROP_LOG_PREFIX_MAX, type Chain, type Match, type Rule } from './ruleset.ts';
import type { CnpTier, PolicyType } from '../model/types.ts';
import { chainName } from './names.ts';

/** The first word of every prefix we write (invariant own-only-ours: our log lines are ours). */
export const DROP_LOG_WORD = 'PCTL';
/** Characters of a digest in a prefix: 60 bits, enough to tell the policies of one cluster apart. */
export const DROP_LOG_DIGEST_CHARS = 12;

export type DropCause =
  /** `policies`: `namespace/name` of each NetworkPolicy isolating the pod in `dir`. */
  | { readonly kind: 'np'; readonly dir: PolicyType; readonly policies: readonly string[] }
  | { readonly kind: 'cnp'; readonly dir: PolicyType; readonly tier: CnpTier; readonly index: number; readonly name: string }
  | { readonly kind: 'unknown'; readonly dir: PolicyType }
  | { readonly kind: 'collision'; readonly dir: PolicyType }
  /** A TCP packet without SYN that conntrack took for a new connection, or a UDP answer of a revoked flow (revoke mode only). */
  | { readonly kind: 'midstream'; readonly dir: PolicyType };

/** What a prefix says, read back: digests instead of names. */
export type DropPrefix =
  | { readonly kind: 'np'; readonly dir: PolicyType; readonly policiesDigest: string }
  | { readonly kind: 'cnp'; readonly dir: PolicyType; readonly tier: CnpTier; readonly index: number; readonly nameDigest: string }
  | { readonly kind: 'unknown'; readonly dir: PolicyType }
  | { readonly kind: 'collision'; readonly dir: PolicyType }
  | { readonly kind: 'midstream'; readonly dir: PolicyType };

/**
 * The digest of a NetworkPolicy default deny's isolating policies: `namespace/name` of each,
 * sorted, joined by commas.
 */
export function policiesDigest(refs: readonly string[]): string {
  return hashText([...refs].sort().join(','), DROP_LOG_DIGEST_CHARS);
}

/** The digest of a ClusterNetworkPolicy's name. */
export function clusterPolicyDigest(name: string): string {
  return hashText(name, DROP_LOG_DIGEST_CHARS);
}

const letter = (dir: PolicyType) => (dir === 'Egress' ? 'E' : 'I');

export function dropLogPrefix(cause: DropCause): string {
  const head = `${DROP_LOG_WORD} ${letter(cause.dir)} ${cause.kind}`;
  let text: string;
  switch (cause.kind) {
    case 'np':
      text = `${head} ${policiesDigest(cause.policies)}`;
      break;
    case 'cnp':
      text = `${head} ${cause.tier} ${cause.index} ${clusterPolicyDigest(cause.name)}`;
      break;
    default:
      text = head;
  }
  if (text.length > DROP_LOG_PREFIX_MAX) throw new Error(`drop log: prefix "${text}" is longer than ${DROP_LOG_PREFIX_MAX} characters`);
  return text;
}

/** A prefix read back; undefined for one we did not write. */
export function parseDropLogPrefix(text: string): DropPrefix | undefined {
  const w = text.trim().split(' ');
  if (w[0] !== DROP_LOG_WORD || (w[1] !== 'E' && w[1] !== 'I')) return undefined;
  const dir: PolicyType = w[1] === 'E' ? 'Egress' : 'Ingress';
  switch (w[2]) {
    case 'np':
      return w.length === 4 ? { kind: 'np', dir, policiesDigest: w[3]! } : undefined;
    case 'cnp': {
      const index = Number(w[4]);
      if (w.length !== 6 || (w[3] !== 'Admin' && w[3] !== 'Baseline') || !Number.isInteger(index) || index < 0) return undefined;
      return { kind: 'cnp', dir, tier: w[3], index, nameDigest: w[5]! };
    }
    case 'unknown':
    case 'collision':
    case 'midstream':
      return w.length === 3 ? { kind: w[2], dir } : undefined;
    default:
      return undefined;
  }
}

/**
 * A final drop as rules: the log rule (same match, non-terminating), then the drop. Both compilers
 * build every drop through here or chainedDrop, so each drop of a new connection is logged.
 */
export function loggedDrop(match: Match, comment: string, cause: DropCause): Rule[] {
  return logThenDrop(match, comment, dropLogPrefix(cause));
}

function logThenDrop(match: Match, comment: string, prefix: string): Rule[] {
  return [
    { match, action: { kind: 'log', prefix }, comment: `log: ${comment}` },
    { match, action: { kind: 'drop' }, comment },
  ];
}

/**
 * A final drop of a policy chain: with a match, one rule going to the drop chain of its prefix
 * (dropChain), which the compilers program with every chain that uses it (dropChainsOf);
 * without one (it drops every packet that gets there), the log rule and the drop in place.
 */
export function chainedDrop(match: Match, comment: string, cause: DropCause): Rule[] {
  if (Object.keys(match).length === 0) return loggedDrop(match, comment, cause);
  const chain = dropChain(dropLogPrefix(cause));
  return [{ match, action: { kind: 'logdrop', chain: chain.name, prefix: chain.prefix }, comment }];
}

/** The start of every drop chain's name (`PCTL-L-<digest>`). */
export const DROP_CHAIN_PREFIX = `${CHAIN_PREFIX}L-`;

/** Drop chains by prefix: equal in content whenever rebuilt, so a bounded memo only saves work. */
const dropChains = new LRUCache<string, Chain & { readonly prefix: string }>({ max: 4096 });

/** `PCTL-L-<digest of the prefix>`: the log rule and the drop, for every packet sent there. */
export function dropChain(prefix: string): Chain & { readonly prefix: string } {
  let c = dropChains.get(prefix);
  if (!c) {
    c = { name: chainName('L', prefix), prefix, rules: logThenDrop({}, `drop: ${prefix}`, prefix) };
    dropChains.set(prefix, c);
  }
  return c;
}

/** The drop chains the rules of these chains go to, each once, in the order first met. */
export function dropChainsOf(chains: Iterable<{ readonly rules: readonly Rule[] }>): Chain[] {
  const out = new Map<string, Chain>();
  for (const c of chains) for (const r of c.rules) if (r.action.kind === 'logdrop' && !out.has(r.action.chain)) out.set(r.action.chain, dropChain(r.action.prefix));
  return [...out.values()];
}
