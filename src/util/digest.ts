// SHA-256 cut to base32 text: what kernel object names (src/compiler/names.ts), rule ids and the
// sync layer's temporary names (src/sync/render.ts, plan.ts) are made of. Pure JavaScript
// (@noble/hashes), so the pure layers may use it; it imports nothing of the project.

import { sha256 } from '@noble/hashes/sha2.js';

/** What a digest is for; lets a test make one kind of name collide and leave the others alone. */
export type HashUse = 'chain' | 'set' | 'rule' | 'other';
/** SHA-256 of the text's UTF-8 bytes (32 bytes), or a test's stand-in. */
export type DigestFn = (text: string, use: HashUse) => Uint8Array;

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';
const encoder = new TextEncoder();
const sha256Digest: DigestFn = (text) => sha256(encoder.encode(text));
let digest: DigestFn = sha256Digest;

/**
 * Tests only: replace the digest (e.g. by one that collides on purpose, to prove the collision
 * guard). `undefined` restores SHA-256. Production code never calls this.
 */
export function setDigestForTests(fn: DigestFn | undefined): void {
  digest = fn ?? sha256Digest;
}

/**
 * The first `chars` * 5 bits of the text's digest, base32 (lower case and 2-7: valid in chain,
 * set and comment text alike).
 */
export function hashText(text: string, chars: number, use: HashUse = 'other'): string {
  const d = digest(text, use);
  if (chars * 5 > d.length * 8) throw new Error(`hashText: ${chars} characters need ${chars * 5} bits, the digest has ${d.length * 8}`);
  let out = '';
  let acc = 0;
  let bits = 0;
  for (let i = 0; out.length < chars; ) {
    if (bits < 5) {
      acc = ((acc << 8) | d[i++]!) & 0xffff;
      bits += 8;
    }
    bits -= 5;
    out += ALPHABET[(acc >>> bits) & 31];
  }
  return out;
}

/**
 * 65 bits of SHA-256 (13 characters), for names where a collision costs nothing but a retry
 * (the sync layer's temporary swap sets) or that only need to be deterministic.
 */
export function hash64(text: string): string {
  return hashText(text, 13);
}
