// What the kernel holds of ours, read from `iptables-save -t filter` and `ipset save`.
//
// Our rules are recognised by chain name (prefix) and compared by the rule id written at the
// front of each comment (see render.ts ruleId), so the comparison does not depend on
// how iptables-save re-prints matches. In chains we do not own, the only rules we look at are
// those jumping into our chains: our hooks.

import { CHAIN_PREFIX, SET_PREFIX, type Rule } from '../compiler/ruleset.ts';
import { DEFAULT_MAXELEM, RULE_ID_CHARS } from './render.ts';

export interface KernelChain {
  readonly name: string;
  /** Rule ids in order; undefined for a rule without our id (someone else's edit). */
  readonly ruleIds: readonly (string | undefined)[];
  /**
   * The same rules, to delete one by one (`-D chain <rule>`): as data (a chain we wrote) or as
   * iptables-save printed it (`-A chain ...`, a chain we read). Absent: unknown, so the chain
   * can only be rewritten whole.
   */
  readonly rules?: readonly (Rule | string)[];
}

export interface KernelHook {
  /** The built-in chain holding the jump. */
  readonly chain: string;
  readonly target: string;
  /** 1-based position in its chain. */
  readonly position: number;
  /** The rule as iptables-save printed it (`-A FORWARD ...`). */
  readonly line: string;
}

export interface KernelSet {
  readonly name: string;
  readonly type: string;
  /** entry -> nomatch */
  readonly members: Map<string, boolean>;
  /** A set created with a timeout (IpSet.runtime): its timeout and maxelem, which a layout may change. */
  readonly runtime?: RuntimeParams;
}

/** What a runtime set is created with besides its type (render.ts renderSetCreate). */
export interface RuntimeParams {
  readonly timeout: number;
  readonly maxelem: number;
}

export interface KernelState {
  readonly chains: Map<string, KernelChain>;
  readonly hooks: readonly KernelHook[];
  readonly sets: Map<string, KernelSet>;
}

export function emptyState(): KernelState {
  return { chains: new Map(), hooks: [], sets: new Map() };
}

/** Split an iptables-save line into words, honouring double quotes and backslash escapes. */
export function splitWords(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inWord = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quoted) {
      if (c === '\\' && i + 1 < line.length) cur += line[++i];
      else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') {
      quoted = true;
      inWord = true;
    } else if (c === ' ' || c === '\t') {
      if (inWord) out.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (inWord) out.push(cur);
  return out;
}

/** A rule id as render.ts writes it; an older agent's shorter ids read as none (the chain is rewritten). */
const RULE_ID = new RegExp(`^[a-z2-7]{${RULE_ID_CHARS}}$`);

/** Parse the filter table of an iptables-save dump into our chains and hooks. */
export function parseFilterSave(dump: string): Pick<KernelState, 'chains' | 'hooks'> {
  const chains = new Map<string, { name: string; ruleIds: (string | undefined)[]; rules: string[] }>();
  const hooks: KernelHook[] = [];
  const positions = new Map<string, number>();
  let inFilter = false;
  for (const raw of dump.split('\n')) {
    const line = raw.trimEnd();
    if (line.startsWith('*')) {
      inFilter = line === '*filter';
      continue;
    }
    if (!inFilter) continue;
    if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0]!;
      if (name.startsWith(CHAIN_PREFIX)) chains.set(name, { name, ruleIds: [], rules: [] });
      continue;
    }
    if (!line.startsWith('-A ')) continue;
    const words = splitWords(line);
    const chain = words[1]!;
    const pos = (positions.get(chain) ?? 0) + 1;
    positions.set(chain, pos);
    if (chain.startsWith(CHAIN_PREFIX)) {
      let c = chains.get(chain);
      if (!c) chains.set(chain, (c = { name: chain, ruleIds: [], rules: [] }));
      const ci = words.indexOf('--comment');
      const id = ci >= 0 ? words[ci + 1]?.split(' ')[0] : undefined;
      c.ruleIds.push(id && RULE_ID.test(id) ? id : undefined);
      c.rules.push(line);
      continue;
    }
    const ti = Math.max(words.indexOf('-j'), words.indexOf('-g'));
    const target = ti >= 0 ? words[ti + 1] : undefined;
    if (target?.startsWith(CHAIN_PREFIX)) hooks.push({ chain, target, position: pos, line });
  }
  return { chains, hooks };
}

/** Parse `ipset save` output, keeping our sets only. */
export function parseIpsetSave(dump: string): Map<string, KernelSet> {
  const sets = new Map<string, KernelSet>();
  for (const line of dump.split('\n')) {
    const w = line.trim().split(/\s+/);
    if (w[0] === 'create' && w[1]?.startsWith(SET_PREFIX)) {
      const opt = (k: string) => (w.indexOf(k) > 2 ? Number(w[w.indexOf(k) + 1]) : undefined);
      const timeout = opt('timeout');
      sets.set(w[1], { name: w[1], type: w[2] ?? '', members: new Map(), ...(timeout !== undefined && { runtime: { timeout, maxelem: opt('maxelem') ?? DEFAULT_MAXELEM } }) });
    } else if (w[0] === 'add' && w[1]?.startsWith(SET_PREFIX)) {
      sets.get(w[1])?.members.set(w[2]!, w.includes('nomatch'));
    }
  }
  return sets;
}
