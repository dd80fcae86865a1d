// Deterministic, length-limited names for the kernel objects we own.
//
// Invariants (pinned by names.test.ts):
// - every chain name starts with CHAIN_PREFIX and is at most 28 characters (iptables' limit);
// - every ipset name starts with SET_PREFIX and is at most 31 characters (ipset's limit);
// - a name depends only on the content it names, so it is stable across restarts and equal on
//   every node that needs the same object;
// - the prefix is ours alone: no other agent (KUBE-, FLANNEL-, CNI-, cali-, KUBE-ROUTER-,
//   WEAVE-) uses it, so cleanup can remove every object carrying it and nothing else.

export const PREFIX = 'PCTL';
export const CHAIN_PREFIX = `${PREFIX}-`;
export const SET_PREFIX = `${PREFIX}-`;
export const MAX_CHAIN_NAME = 28;
export const MAX_SET_NAME = 31;

/** Top-level chains the hooks jump to. */
export const FORWARD_CHAIN = `${PREFIX}-FORWARD`;
export const INPUT_CHAIN = `${PREFIX}-INPUT`;

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';

/**
 * A 64-bit FNV-1a hash of the text, base32-encoded to 13 characters. Pure (no node:crypto:
 * the compiler may not import node modules). Collisions across a node's few thousand names
 * are negligible at 64 bits; names.test.ts checks there are none in a large sample.
 */
export function hash64(text: string): string {
  // Two 32-bit FNV-1a lanes with different offsets, combined: BigInt-free for speed.
  let h1 = 0x811c9dc5;
  let h2 = 0x050c5d1f;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x01000193) ^ (h1 >>> 15);
  }
  let out = '';
  let a = h1 >>> 0;
  let b = h2 >>> 0;
  for (let i = 0; i < 13; i++) {
    // Take 5 bits at a time from the 64-bit value b:a.
    out += ALPHABET[a & 31];
    a = ((a >>> 5) | ((b & 31) << 27)) >>> 0;
    b = b >>> 5;
  }
  return out;
}

/** `PCTL-<kind>-<hash>`; kind is a short tag such as `I` (ingress chain) or `p` (pod set). */
export function chainName(kind: string, content: string): string {
  const name = `${CHAIN_PREFIX}${kind}-${hash64(content)}`;
  if (name.length > MAX_CHAIN_NAME) throw new Error(`chain name ${name} is longer than ${MAX_CHAIN_NAME}`);
  return name;
}

export function setName(kind: string, content: string): string {
  const name = `${SET_PREFIX}${kind}-${hash64(content)}`;
  if (name.length > MAX_SET_NAME) throw new Error(`set name ${name} is longer than ${MAX_SET_NAME}`);
  return name;
}
