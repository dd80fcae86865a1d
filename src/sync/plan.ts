// The difference between the desired Ruleset and what the kernel holds, and the restore
// payloads that apply it. Pure: the syncer runs the payloads.
//
// Order (DESIGN invariant 4): phase 1 creates and fills sets (`ipset restore`), phase 2 writes
// every iptables change of the filter table in one `iptables-restore --noflush` transaction,
// phase 3 removes set members and destroys sets no rule references any more.

import { SET_PREFIX, hash64 } from '../compiler/names.ts';
import { renderChainBody, renderHook, renderSetCreate, renderSetMember, ruleId } from '../compiler/render.ts';
import type { Chain, Hook, IpSet, Ruleset } from '../compiler/ruleset.ts';
import type { KernelHook, KernelState } from './kernel-state.ts';

export interface SetChange {
  readonly set: string;
  readonly entry: string;
  readonly nomatch?: boolean;
}

export interface Plan {
  readonly createSets: readonly IpSet[];
  /** Sets whose type changed: rebuilt under a temporary name and swapped in. */
  readonly replaceSets: readonly IpSet[];
  readonly addMembers: readonly SetChange[];
  readonly delMembers: readonly SetChange[];
  readonly writeChains: readonly Chain[];
  readonly deleteChains: readonly string[];
  /** Hook rules to delete (misplaced, duplicated or stale) and hooks to insert at position 1. */
  readonly removeHooks: readonly KernelHook[];
  readonly insertHooks: readonly Hook[];
  readonly destroySets: readonly string[];
}

export function isEmpty(p: Plan): boolean {
  return (
    p.createSets.length + p.replaceSets.length + p.addMembers.length + p.delMembers.length + p.writeChains.length + p.deleteChains.length + p.removeHooks.length + p.insertHooks.length + p.destroySets.length ===
    0
  );
}

/** ipset prints hash:net /32 entries as plain addresses; compare in that form. */
export function canonicalEntry(type: string, entry: string): string {
  return type === 'hash:net' && entry.endsWith('/32') ? entry.slice(0, -3) : entry;
}

export function diff(desired: Ruleset, actual: KernelState): Plan {
  const createSets: IpSet[] = [];
  const replaceSets: IpSet[] = [];
  const addMembers: SetChange[] = [];
  const delMembers: SetChange[] = [];
  const wanted = new Set<string>();
  for (const s of desired.sets) {
    wanted.add(s.name);
    const cur = actual.sets.get(s.name);
    if (!cur) {
      createSets.push(s);
      continue;
    }
    if (cur.type !== s.type) {
      replaceSets.push(s);
      continue;
    }
    const want = new Map(s.members.map((m) => [canonicalEntry(s.type, m.entry), !!m.nomatch]));
    for (const [entry, nomatch] of want) {
      const has = cur.members.get(entry);
      if (has === nomatch) continue;
      // A flipped nomatch flag is a delete then an add of the same entry.
      if (has !== undefined) delMembers.push({ set: s.name, entry });
      addMembers.push({ set: s.name, entry, ...(nomatch ? { nomatch } : {}) });
    }
    for (const entry of cur.members.keys()) if (!want.has(entry)) delMembers.push({ set: s.name, entry });
  }
  const destroySets = [...actual.sets.keys()].filter((n) => !wanted.has(n)).sort();

  const writeChains: Chain[] = [];
  const desiredChains = new Set<string>();
  for (const c of desired.chains) {
    desiredChains.add(c.name);
    const cur = actual.chains.get(c.name);
    const ids = c.rules.map(ruleId);
    if (!cur || cur.ruleIds.length !== ids.length || cur.ruleIds.some((id, i) => id !== ids[i])) writeChains.push(c);
  }
  const deleteChains = [...actual.chains.keys()].filter((n) => !desiredChains.has(n)).sort();

  // Each desired hook must be the only jump to its target in its chain, at position 1. Any
  // other jump into our chains from a foreign chain is stale and goes.
  const removeHooks: KernelHook[] = [];
  const insertHooks: Hook[] = [];
  const wantedHooks = new Map(desired.hooks.map((h) => [`${h.chain}|${h.target}`, h]));
  const byKey = new Map<string, KernelHook[]>();
  for (const h of actual.hooks) {
    const k = `${h.chain}|${h.target}`;
    if (!wantedHooks.has(k)) removeHooks.push(h);
    else byKey.set(k, [...(byKey.get(k) ?? []), h]);
  }
  for (const [k, h] of wantedHooks) {
    const present = byKey.get(k) ?? [];
    const good = present.length === 1 && present[0]!.position === 1 && present[0]!.line === renderHook(h).replace(/^-I (\S+) 1 /, '-A $1 ');
    if (good) continue;
    removeHooks.push(...present);
    insertHooks.push(h);
  }
  return { createSets, replaceSets, addMembers, delMembers, writeChains, deleteChains, removeHooks, insertHooks, destroySets };
}

export interface Payloads {
  /** `ipset restore -exist`, before iptables. Empty when nothing to do. */
  readonly ipsetBefore: string;
  /** `iptables-restore --noflush`, one transaction for the filter table. */
  readonly iptables: string;
  /** `ipset restore -exist`, after iptables. */
  readonly ipsetAfter: string;
}

/** A temporary set name for a swap: same prefix, within ipset's 31 characters. */
export function tempSetName(name: string): string {
  return `${SET_PREFIX}t-${hash64(name)}`;
}

export function payloads(p: Plan): Payloads {
  const before: string[] = [];
  for (const s of p.createSets) {
    before.push(renderSetCreate(s));
    for (const m of s.members) before.push(renderSetMember(s.name, m.entry, m.nomatch));
  }
  for (const s of p.replaceSets) {
    const tmp = tempSetName(s.name);
    // A temp set left by an interrupted swap is one of ours that no rule wants: the next diff
    // destroys it.
    before.push(renderSetCreate({ name: tmp, type: s.type }));
    for (const m of s.members) before.push(renderSetMember(tmp, m.entry, m.nomatch));
    before.push(`swap ${tmp} ${s.name}`, `destroy ${tmp}`);
  }
  // Adds before iptables so a rule never sees a set missing a member it should have; a member
  // whose nomatch flag flips is deleted and re-added in this same phase.
  const flipped = new Set(p.addMembers.map((a) => `${a.set}|${a.entry}`));
  for (const d of p.delMembers) if (flipped.has(`${d.set}|${d.entry}`)) before.push(`del ${d.set} ${d.entry}`);
  for (const a of p.addMembers) before.push(renderSetMember(a.set, a.entry, a.nomatch));

  const ipt: string[] = [];
  if (p.writeChains.length || p.deleteChains.length || p.removeHooks.length || p.insertHooks.length) {
    ipt.push('*filter');
    for (const c of p.writeChains) ipt.push(`:${c.name} - [0:0]`);
    // Declaring a chain flushes it, so no rule of a chain about to be deleted references others.
    for (const n of p.deleteChains) ipt.push(`:${n} - [0:0]`);
    for (const c of p.writeChains) ipt.push(...renderChainBody(c));
    for (const h of p.removeHooks) ipt.push(h.line.replace(/^-A /, '-D '));
    for (const h of p.insertHooks) ipt.push(renderHook(h));
    for (const n of p.deleteChains) ipt.push(`-X ${n}`);
    ipt.push('COMMIT');
  }

  const after: string[] = [];
  for (const d of p.delMembers) if (!flipped.has(`${d.set}|${d.entry}`)) after.push(`del ${d.set} ${d.entry}`);
  for (const n of p.destroySets) after.push(`destroy ${n}`);
  const text = (l: string[]) => (l.length ? l.join('\n') + '\n' : '');
  return { ipsetBefore: text(before), iptables: text(ipt), ipsetAfter: text(after) };
}
