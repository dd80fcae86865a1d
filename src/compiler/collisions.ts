// The collision guard: one chain name must never stand for two different chain contents.
//
// Policy chains are named by a digest of their rules (names.ts), and both compilers group the
// local pods by those names: pods whose chains have one name share one chain and one dispatch
// set, and a tier chain names the next one by name. If two different contents ever got one name
// (a broken or weakened hash: names carry 105 bits of SHA-256, so not by chance or by search),
// grouping by name would send the second group's pods to the first group's rules: a silent merge
// that can open traffic. Instead:
// - a name that stands for more than one content (among the chains of this node's local pods)
//   is not programmed, and every pod whose chains use it is dispatched to a quarantine chain
//   that drops everything (named after the first such name of its chains, in name order): those
//   pods are isolated in that direction and allow nothing, whatever their policies say
//   (invariant fail-closed);
// - the quarantine chain's name is outside the content-hashed names (`PCTL-IX-` / `PCTL-EX-`
//   never comes out of chainName, whose kinds are one letter), so it cannot collide with them;
// - the Ruleset lists each collision (`collisions`), and the chain's DROP rule says why.
// The decision depends only on the set of contents per name, never on the order pods were seen,
// so the incremental compiler reaches the same result as compile() (it rebuilds when the set of
// colliding names changes).

import { LRUCache } from 'lru-cache';
import type { PolicyType } from '../model/types.ts';
import { loggedDrop } from './drop-log.ts';
import { CHAIN_PREFIX, MAX_CHAIN_NAME, type NameCollision, type Rule } from './ruleset.ts';

export type { NameCollision };

interface Content {
  readonly name: string;
  readonly rules: readonly Rule[];
}

/** The exact text each chain content was named from (what the digest was taken of). */
const texts = new WeakMap<Content, string>();

export function rememberContentText(content: Content, text: string): void {
  texts.set(content, text);
}

/** The text a chain content was named from; compared in full when two contents share a name. */
export function contentText(content: Content): string {
  let t = texts.get(content);
  if (t === undefined) texts.set(content, (t = JSON.stringify(content.rules))); // a quarantine chain
  return t;
}

/** Whether two chains with one name have the same rules (the cheap case first: one object). */
export function sameContent(a: Content, b: Content): boolean {
  return a === b || (a.name === b.name && contentText(a) === contentText(b));
}

/** `PCTL-I-<hash>` -> `PCTL-IX-<hash, one character shorter>` (28 characters at most). */
export function quarantineChainName(name: string): string {
  const kind = name.slice(CHAIN_PREFIX.length, CHAIN_PREFIX.length + 1);
  const hash = name.slice(CHAIN_PREFIX.length + 2);
  const q = `${CHAIN_PREFIX}${kind}X-${hash}`.slice(0, MAX_CHAIN_NAME);
  return q;
}

const quarantines = new LRUCache<string, Content>({ max: 1024 });

/** The quarantine chain for a colliding name: one logged DROP (drop-log.ts) (shared objects, so rule ids are memoized). */
export function quarantineChain(dir: PolicyType, name: string): Content {
  const qname = quarantineChainName(name);
  let c = quarantines.get(qname);
  if (!c) {
    const rules = loggedDrop({}, `name collision: ${name} stands for different ${dir.toLowerCase()} chains; isolated, allows nothing`, { kind: 'collision', dir });
    c = { name: qname, rules };
    quarantines.set(qname, c);
  }
  return c;
}

export function collisionOf(dir: PolicyType, name: string): NameCollision {
  return { direction: dir, name, chain: quarantineChainName(name) };
}

/** Collisions in the order both compilers report them: by name. */
export function sortCollisions(list: NameCollision[]): NameCollision[] {
  return list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
