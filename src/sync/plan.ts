// The difference between the desired Ruleset and what the kernel holds, and the restore
// payloads that apply it. Pure: the syncer runs the payloads.
//
// Order (DESIGN invariant 4): phase 1 creates and fills sets (`ipset restore`), phase 2 writes
// every iptables change of the filter table in one `iptables-restore --noflush` transaction,
// phase 3 removes set members and destroys sets no rule references any more.

import { SET_PREFIX, hash64 } from '../compiler/names.ts';
import { renderChainBody, renderHook, renderSetCreate, renderSetMember, ruleId } from '../compiler/render.ts';
import type { Chain, Hook, IpSet, Ruleset } from '../compiler/ruleset.ts';
import type { KernelChain, KernelHook, KernelSet, KernelState } from './kernel-state.ts';

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

/** A plan under construction (the diff and the delta planner fill the same lists). */
export interface PlanBuilder {
  readonly createSets: IpSet[];
  readonly replaceSets: IpSet[];
  readonly addMembers: SetChange[];
  readonly delMembers: SetChange[];
  readonly writeChains: Chain[];
  readonly deleteChains: string[];
  readonly removeHooks: KernelHook[];
  readonly insertHooks: Hook[];
  readonly destroySets: string[];
}

export function planBuilder(): PlanBuilder {
  return { createSets: [], replaceSets: [], addMembers: [], delMembers: [], writeChains: [], deleteChains: [], removeHooks: [], insertHooks: [], destroySets: [] };
}

/** How the kernel prints a hook once inserted (`-A FORWARD ...`): the form `diff` compares. */
export function hookLine(h: Hook): string {
  return renderHook(h).replace(/^-I (\S+) 1 /, '-A $1 ');
}

/**
 * One desired set against the kernel's copy of it (undefined: absent): create it, rebuild it
 * (its type changed), or add and delete the members that differ.
 */
export function diffSet(s: IpSet, cur: KernelSet | undefined, out: PlanBuilder): void {
  if (!cur) {
    out.createSets.push(s);
    return;
  }
  if (cur.type !== s.type) {
    out.replaceSets.push(s);
    return;
  }
  const want = new Map<string, boolean>();
  for (const m of s.members) want.set(canonicalEntry(s.type, m.entry), !!m.nomatch);
  for (const [entry, nomatch] of want) {
    const has = cur.members.get(entry);
    if (has === nomatch) continue;
    // A flipped nomatch flag is a delete then an add of the same entry.
    if (has !== undefined) out.delMembers.push({ set: s.name, entry });
    out.addMembers.push({ set: s.name, entry, ...(nomatch ? { nomatch } : {}) });
  }
  for (const entry of cur.members.keys()) if (!want.has(entry)) out.delMembers.push({ set: s.name, entry });
}

/** Whether the kernel's copy of a chain (undefined: absent) differs from the desired chain. */
export function chainDiffers(c: Chain, cur: KernelChain | undefined): boolean {
  if (!cur || cur.ruleIds.length !== c.rules.length) return true;
  for (let i = 0; i < c.rules.length; i++) if (cur.ruleIds[i] !== ruleId(c.rules[i]!)) return true;
  return false;
}

/** Everything that differs between the desired Ruleset and the kernel: O(size of both). */
export function diff(desired: Ruleset, actual: KernelState): Plan {
  const out = planBuilder();
  const wanted = new Set<string>();
  for (const s of desired.sets) {
    wanted.add(s.name);
    diffSet(s, actual.sets.get(s.name), out);
  }
  for (const n of actual.sets.keys()) if (!wanted.has(n)) out.destroySets.push(n);
  out.destroySets.sort();

  const desiredChains = new Set<string>();
  for (const c of desired.chains) {
    desiredChains.add(c.name);
    if (chainDiffers(c, actual.chains.get(c.name))) out.writeChains.push(c);
  }
  for (const n of actual.chains.keys()) if (!desiredChains.has(n)) out.deleteChains.push(n);
  out.deleteChains.sort();

  // Each desired hook must be the only jump to its target in its chain, at position 1. Any
  // other jump into our chains from a foreign chain is stale and goes.
  const wantedHooks = new Map(desired.hooks.map((h) => [`${h.chain}|${h.target}`, h]));
  const byKey = new Map<string, KernelHook[]>();
  for (const h of actual.hooks) {
    const k = `${h.chain}|${h.target}`;
    if (!wantedHooks.has(k)) out.removeHooks.push(h);
    else byKey.set(k, [...(byKey.get(k) ?? []), h]);
  }
  for (const [k, h] of wantedHooks) {
    const present = byKey.get(k) ?? [];
    const good = present.length === 1 && present[0]!.position === 1 && present[0]!.line === hookLine(h);
    if (good) continue;
    out.removeHooks.push(...present);
    out.insertHooks.push(h);
  }
  return out;
}

/**
 * The kernel state after a successful apply of `plan` to `state`: patches `state`'s maps in
 * place (cost in proportion to the plan) and returns the state with its hooks updated. With
 * `plan = diff(desired, state)` the result has the content of `stateOf(desired)`.
 */
export function applyPlan(state: KernelState, plan: Plan): KernelState {
  const memberMap = (s: IpSet) => {
    const m = new Map<string, boolean>();
    for (const x of s.members) m.set(canonicalEntry(s.type, x.entry), !!x.nomatch);
    return m;
  };
  for (const s of [...plan.createSets, ...plan.replaceSets]) state.sets.set(s.name, { name: s.name, type: s.type, members: memberMap(s) });
  // Deletes first: a flipped nomatch flag is a delete and an add of the same entry.
  for (const d of plan.delMembers) state.sets.get(d.set)?.members.delete(d.entry);
  for (const a of plan.addMembers) state.sets.get(a.set)?.members.set(a.entry, !!a.nomatch);
  for (const n of plan.destroySets) state.sets.delete(n);
  for (const c of plan.writeChains) state.chains.set(c.name, { name: c.name, ruleIds: c.rules.map(ruleId) });
  for (const n of plan.deleteChains) state.chains.delete(n);
  if (plan.removeHooks.length === 0 && plan.insertHooks.length === 0) return state;
  // Hooks: a removal moves the later rules of its chain up one; an insert at 1 moves all down.
  let hooks = [...state.hooks];
  for (const r of plan.removeHooks) {
    const i = hooks.findIndex((h) => h.chain === r.chain && h.position === r.position && h.line === r.line);
    if (i < 0) continue;
    hooks.splice(i, 1);
    hooks = hooks.map((h) => (h.chain === r.chain && h.position > r.position ? { ...h, position: h.position - 1 } : h));
  }
  for (const h of plan.insertHooks) {
    hooks = hooks.map((x) => (x.chain === h.chain ? { ...x, position: x.position + 1 } : x));
    hooks.push({ chain: h.chain, target: h.target, position: 1, line: hookLine(h) });
  }
  return { ...state, hooks };
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
