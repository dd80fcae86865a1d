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
//   PCTL <E|I> unknown                                     an unprogrammed address of the pod CIDRs
//   PCTL <E|I> collision                                   a chain name collision's drop-all chain
//   PCTL <E|I> midstream                                   a TCP packet conntrack took up mid-stream
//                                                          (--revoke-established: layout.ts MIDSTREAM_CHAIN)
//
// E and I are the direction the drop decided: an unknown source is dropped as egress, an unknown
// destination as ingress; a mid-stream packet from the pod CIDRs as egress, one to them as ingress. Why a log rule and not a goto to a logging chain (the layout's
// VERDICTS note): a shared logging chain could not say which rule sent the packet there.
// The log rule is rate-limited per node by the renderer (src/sync/render.ts DROP_LOG), and it
// only ever follows PCTL-FORWARD's replies rule, so an established connection never meets one
// (docs/design.md, "What a node is programmed with").

import { hashText } from '../util/digest.ts';
import { DROP_LOG_PREFIX_MAX, type Match, type Rule } from './ruleset.ts';
import type { CnpTier, PolicyType } from '../model/types.ts';

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
  /** A TCP packet without SYN that conntrack took for a new connection (revoke mode only). */
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
 * build every drop through here, so each drop of a new connection is logged.
 */
export function loggedDrop(match: Match, comment: string, cause: DropCause): Rule[] {
  return [
    { match, action: { kind: 'log', prefix: dropLogPrefix(cause) }, comment: `log: ${comment}` },
    { match, action: { kind: 'drop' }, comment },
  ];
}
