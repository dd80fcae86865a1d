// The collision guard: one chain name must never stand for two different chain contents.
//
// Policy chains are named by a digest of their rules (names.ts), and both compilers group the
// local pods by that name: pods whose chains have one name share one chain and one dispatch set.
// If two different contents ever got one name (a broken or weakened hash: names carry 105 bits
// of SHA-256, so not by chance or by search), grouping by name would send the second group's
// pods to the first group's rules: a silent merge that can open traffic. Instead:
// - every group under a name that stands for more than one content (among this node's local
//   pods) is dispatched to one quarantine chain that drops everything: those pods are isolated
//   in that direction and allow nothing, whatever their policies say (fail closed);
// - the quarantine chain's name is outside the content-hashed names (`PCTL-IX-` / `PCTL-EX-`
//   never comes out of chainName, whose kinds are one letter), so it cannot collide with them;
// - the Ruleset lists each collision (`collisions`), and the chain's DROP rule says why.
// The decision depends only on the set of contents per name, never on the order pods were seen,
// so the incremental compiler reaches the same result as compile() (it rebuilds when the set of
// colliding names changes).

import type { PolicyType } from '../model/types.ts';
import { CHAIN_PREFIX, MAX_CHAIN_NAME } from './names.ts';
import type { Rule } from './ruleset.ts';

export interface NameCollision {
  readonly direction: PolicyType;
  /** The content-hashed chain name that stood for more than one content. */
  readonly name: string;
  /** The chain that drops everything, where the pods of every such content are sent instead. */
  readonly chain: string;
}

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

const quarantines = new Map<string, Content>();

/** The quarantine chain for a colliding name: one DROP rule (shared objects, so rule ids are memoized). */
export function quarantineChain(dir: PolicyType, name: string): Content {
  const qname = quarantineChainName(name);
  let c = quarantines.get(qname);
  if (!c) {
    const rule: Rule = {
      match: {},
      action: { kind: 'drop' },
      comment: `name collision: ${name} stands for different ${dir.toLowerCase()} chains; isolated, allows nothing`,
    };
    c = { name: qname, rules: [rule] };
    if (quarantines.size > 1024) quarantines.clear();
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

/**
 * The full compiler's guard, on one direction's groups (by chain name, each with the texts of
 * the contents grouped under it): every group whose name stands for more than one text is
 * replaced by the quarantine group of that name, which keeps every address. Returns the
 * collisions found.
 */
export function quarantineGroups<G extends { readonly chain: Content; readonly ips: Set<string>; readonly texts: Set<string> }>(
  dir: PolicyType,
  groups: Map<string, G>,
  make: (chain: Content, ips: Set<string>) => G,
): NameCollision[] {
  const found: NameCollision[] = [];
  for (const [name, g] of [...groups]) {
    if (g.texts.size < 2) continue;
    groups.delete(name);
    const chain = quarantineChain(dir, name);
    const q = groups.get(chain.name);
    if (q) for (const ip of g.ips) q.ips.add(ip);
    else groups.set(chain.name, make(chain, new Set(g.ips)));
    found.push(collisionOf(dir, name));
  }
  return found;
}
