// Deterministic, length-limited names for the kernel objects we own.
//
// Invariants (pinned by names.test.ts):
// - every chain name starts with CHAIN_PREFIX and is at most 28 characters (iptables' limit);
// - every ipset name starts with SET_PREFIX and is at most 31 characters (ipset's limit);
// - a name depends only on the content it names, so it is stable across restarts and equal on
//   every node that needs the same object;
// - names cannot be made to collide: the content includes text tenants choose (policy names,
//   label keys and values), so a name must be a cryptographic digest of it, not a checksum a
//   tenant can invert or search (a 64-bit FNV-1a was both). Names carry SHA-256 cut to what the
//   kernel's name limits leave: 105 bits for chains, 120 bits for sets (see below); finding
//   two contents with one name takes about 2^52 hashes, one matching a given name about 2^105;
// - the prefix is ours alone: no other agent (KUBE-, FLANNEL-, CNI-, cali-, KUBE-ROUTER-,
//   WEAVE-) uses it, so cleanup can remove every object carrying it and nothing else.
//
// The compiler still never trusts a name to be unique: it checks that one chain name never
// stands for two contents (collisions.ts), and fails closed if it does. The digest itself is
// src/util/digest.ts (shared with the sync layer's rule ids).

import { dns1123LabelErrors, dns1123SubdomainErrors } from '../model/validation.ts';
import { hashText } from '../util/digest.ts';
import { CHAIN_PREFIX, MAX_CHAIN_NAME, MAX_SET_NAME, PREFIX, SET_PREFIX } from './ruleset.ts';

export { CHAIN_PREFIX, MAX_CHAIN_NAME, MAX_SET_NAME, PREFIX, SET_PREFIX };

/**
 * Digest characters in a chain name: `PCTL-` + a one-letter kind + `-` leave 28 - 7 = 21
 * base32 characters, 105 bits of SHA-256.
 */
export const CHAIN_HASH_CHARS = 21;
/** Digest characters in a set name: 31 - 7 = 24 base32 characters, 120 bits of SHA-256. */
export const SET_HASH_CHARS = 24;

/** `PCTL-<kind>-<105 bits>`; kind is one letter such as `I` (ingress chain) or `E`. */
export function chainName(kind: string, content: string): string {
  const name = `${CHAIN_PREFIX}${kind}-${hashText(content, CHAIN_HASH_CHARS, 'chain')}`;
  if (name.length > MAX_CHAIN_NAME) throw new Error(`chain name ${name} is longer than ${MAX_CHAIN_NAME}`);
  return name;
}

/** `PCTL-<kind>-<120 bits>`; kind is one letter such as `p` (pod set) or `b` (ipBlock set). */
export function setName(kind: string, content: string): string {
  const name = `${SET_PREFIX}${kind}-${hashText(content, SET_HASH_CHARS, 'set')}`;
  if (name.length > MAX_SET_NAME) throw new Error(`set name ${name} is longer than ${MAX_SET_NAME}`);
  return name;
}

/**
 * A policy as a rule comment names it: `namespace/name` when both are valid Kubernetes names
 * (DNS labels and subdomains: lower-case letters, digits, `-` and `.`, which can neither break
 * the quoted comment nor the restore line); otherwise `invalid-name-<digest>`, so that text a
 * tenant chose and validation refused never reaches the kernel. Deterministic (part of the
 * chain content, hence of its name).
 */
export function policyCommentRef(namespace: string, name: string): string {
  if (dns1123LabelErrors(namespace).length === 0 && dns1123SubdomainErrors(name).length === 0) return `${namespace}/${name}`;
  return `invalid-name-${hashText(JSON.stringify([namespace, name]), 13)}`;
}
