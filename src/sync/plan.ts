// The difference between the desired Ruleset and what the kernel holds, and the restore
// payloads that apply it. Pure: the syncer runs the payloads.
//
// Order (docs/design.md, invariant dependency-order): phase 1 creates and fills sets (`ipset restore`), phase 2 writes
// every iptables change of the filter table in one `iptables-restore --noflush` transaction,
// phase 3 removes set members and flushes the sets no longer wanted. These three are the main
// apply: when they are done the kernel enforces the desired Ruleset. The one exception is
// the gate sets (IpSet.gate: PCTL-programmed, the addresses of the local pods the node enforces,
// and PCTL-known, those of every pod it knows): their removals come first of all and their
// additions last of all, so an address is in one only while all its rules are in force.
//
// Garbage collection, a second step the Syncer runs after the main apply (`collectGarbage`):
// phase 4 deletes, in one iptables transaction, the stale rules of unordered chains and the
// chains no longer wanted; phase 5 destroys the sets no longer wanted. Deferring them keeps
// every deletion of a rule out of the main transaction: on the nft backend a transaction that
// deletes a rule costs iptables-nft-restore 12-15 ms more (in close() of its netlink socket)
// than one that only adds.
//
// Unordered chains (Chain.unordered: the rules match disjoint packets) are compared as sets of
// rule ids, and an existing one is changed by edits: the new rules are appended in phase 2,
// the stale ones deleted in phase 4. In between, a stale rule is harmless: it is a dispatch
// rule whose set no longer holds the addresses it matched in that chain (a removed member is
// deleted in phase 3, a set no longer wanted is flushed in phase 3), or a bucket rule whose
// bucket chain dispatches nothing any more for the same reason. A chain that does not exist
// yet, or that a kernel read found drifted, is written whole.

import { SET_PREFIX, type Chain, type Hook, type IpSet, type Rule, type Ruleset } from '../compiler/ruleset.ts';
import { hash64 } from '../util/digest.ts';
import { maxelemOf, renderChainBody, renderHook, renderRule, renderSetCreate, renderSetMember, ruleId } from './render.ts';
import type { KernelChain, KernelHook, KernelSet, KernelState } from './kernel-state.ts';
import { append } from '../util/arrays.ts';

export interface SetChange {
  readonly set: string;
  readonly entry: string;
  readonly nomatch?: boolean;
  /** A change of the gate set (IpSet.gate): removals first of all, additions last of all. */
  readonly gate?: true;
}

/** Rules appended to an existing unordered chain (main apply). */
export interface RuleAppend {
  readonly chain: string;
  readonly rules: readonly Rule[];
}

/** Stale rules deleted from an existing unordered chain (garbage collection). */
export interface RuleRemoval {
  readonly chain: string;
  readonly ids: readonly string[];
  /** `-D chain <rule>`, one per id: the rule as rendered (or as the kernel printed it), comment included. */
  readonly lines: readonly string[];
}

export interface Plan {
  readonly createSets: readonly IpSet[];
  /** Sets whose type changed: rebuilt under a temporary name and swapped in. */
  readonly replaceSets: readonly IpSet[];
  readonly addMembers: readonly SetChange[];
  readonly delMembers: readonly SetChange[];
  /** Chains written whole (created, or flushed and refilled). */
  readonly writeChains: readonly Chain[];
  /** New rules appended to existing unordered chains. */
  readonly appendRules: readonly RuleAppend[];
  /** Hook rules to delete (misplaced, duplicated or stale) and hooks to insert at position 1. */
  readonly removeHooks: readonly KernelHook[];
  readonly insertHooks: readonly Hook[];
  // Garbage collection (after the main apply):
  /** Stale rules of existing unordered chains. */
  readonly removeRules: readonly RuleRemoval[];
  /** Chains no longer wanted: deleted by garbage collection. */
  readonly deleteChains: readonly string[];
  /** Sets no longer wanted: flushed in the main apply, destroyed by garbage collection. */
  readonly destroySets: readonly string[];
}

export function isEmpty(p: Plan): boolean {
  return (
    p.createSets.length +
      p.replaceSets.length +
      p.addMembers.length +
      p.delMembers.length +
      p.writeChains.length +
      p.appendRules.length +
      p.removeRules.length +
      p.deleteChains.length +
      p.removeHooks.length +
      p.insertHooks.length +
      p.destroySets.length ===
    0
  );
}

/** A runtime set's settings as the kernel state records them (KernelSet.runtime). */
export function runtimeOf(s: IpSet): Pick<KernelSet, 'runtime'> {
  return s.runtime ? { runtime: { timeout: s.runtime.timeout, maxelem: maxelemOf(s) } } : {};
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
  readonly appendRules: RuleAppend[];
  readonly removeHooks: KernelHook[];
  readonly insertHooks: Hook[];
  readonly removeRules: RuleRemoval[];
  readonly deleteChains: string[];
  readonly destroySets: string[];
}

export function planBuilder(): PlanBuilder {
  return { createSets: [], replaceSets: [], addMembers: [], delMembers: [], writeChains: [], appendRules: [], removeHooks: [], insertHooks: [], removeRules: [], deleteChains: [], destroySets: [] };
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
  // A runtime set created with other settings (a layout that changed its timeout or bound) is
  // rebuilt too: its members are the kernel's or the agent's, and a flush keeps the settings.
  if (cur.type !== s.type || (s.runtime && (cur.runtime?.timeout !== s.runtime.timeout || cur.runtime.maxelem !== maxelemOf(s)))) {
    out.replaceSets.push(s);
    return;
  }
  // Its members are the agent's, added at run time and expired by the kernel (IpSet.runtime).
  if (s.runtime) return;
  const want = new Map<string, boolean>();
  const gate = s.gate ? { gate: true as const } : {};
  for (const m of s.members) want.set(canonicalEntry(s.type, m.entry), !!m.nomatch);
  for (const [entry, nomatch] of want) {
    const has = cur.members.get(entry);
    if (has === nomatch) continue;
    // A flipped nomatch flag is a delete then an add of the same entry.
    if (has !== undefined) out.delMembers.push({ set: s.name, entry, ...gate });
    out.addMembers.push({ set: s.name, entry, ...(nomatch ? { nomatch } : {}), ...gate });
  }
  for (const entry of cur.members.keys()) if (!want.has(entry)) out.delMembers.push({ set: s.name, entry, ...gate });
}

/**
 * Whether the kernel's copy of a chain (undefined: absent) differs from the desired chain: rule
 * ids in order, or as a set for an unordered chain (a rule without our id, or a repeated one,
 * always differs).
 */
export function chainDiffers(c: Chain, cur: KernelChain | undefined): boolean {
  if (!cur || cur.ruleIds.length !== c.rules.length) return true;
  if (c.unordered) {
    const e = unorderedEdits(c, cur);
    return !e || e.add.length > 0 || e.stale.length > 0;
  }
  for (let i = 0; i < c.rules.length; i++) if (cur.ruleIds[i] !== ruleId(c.rules[i]!)) return true;
  return false;
}

/**
 * The edits that turn the kernel's copy of an unordered chain into the desired one: rules to
 * append and indexes (in `cur`) of stale rules. Undefined when set edits cannot express it: a
 * rule without our id, or an id twice (in the kernel or in the chain).
 */
function unorderedEdits(c: Chain, cur: KernelChain): { add: Rule[]; stale: number[] } | undefined {
  const have = new Map<string, number>();
  for (let i = 0; i < cur.ruleIds.length; i++) {
    const id = cur.ruleIds[i];
    if (id === undefined || have.has(id)) return undefined;
    have.set(id, i);
  }
  const add: Rule[] = [];
  const want = new Set<string>();
  for (const r of c.rules) {
    const id = ruleId(r);
    if (want.has(id)) return undefined;
    want.add(id);
    if (!have.has(id)) add.push(r);
  }
  const stale: number[] = [];
  for (const [id, i] of have) if (!want.has(id)) stale.push(i);
  return { add, stale };
}

/** `-D chain ...`: deletes the rule a `-A` line (or a Rule rendered as one) appended. */
function deleteLine(chain: string, r: Rule | string): string {
  return (typeof r === 'string' ? r : renderRule(chain, r)).replace(/^-A /, '-D ');
}

/**
 * One desired chain against the kernel's copy of it (undefined: absent). With `edit`, an
 * existing unordered chain is changed by appending its new rules (main apply) and deleting its
 * stale ones (garbage collection); otherwise, or when edits cannot express the difference, a
 * chain that differs is written whole.
 */
export function diffChain(c: Chain, cur: KernelChain | undefined, out: PlanBuilder, edit: boolean): void {
  if (!c.unordered || !cur) {
    if (chainDiffers(c, cur)) out.writeChains.push(c);
    return;
  }
  const e = unorderedEdits(c, cur);
  if (e && e.add.length === 0 && e.stale.length === 0) return;
  const rules = cur.rules;
  if (!e || !edit || (e.stale.length > 0 && (!rules || rules.length !== cur.ruleIds.length))) {
    out.writeChains.push(c);
    return;
  }
  if (e.add.length > 0) out.appendRules.push({ chain: c.name, rules: e.add });
  if (e.stale.length > 0) {
    e.stale.sort((a, b) => a - b);
    out.removeRules.push({ chain: c.name, ids: e.stale.map((i) => cur.ruleIds[i]!), lines: e.stale.map((i) => deleteLine(c.name, rules![i]!)) });
  }
}

export interface DiffOptions {
  /**
   * Change existing unordered chains by edits (append now, delete stale rules later). Default
   * true: the state is what we wrote. False for a state just read from the kernel: a chain that
   * differs there has drifted (a rule flushed or added by someone), and is written whole.
   */
  readonly edit?: boolean;
}

/** Everything that differs between the desired Ruleset and the kernel: O(size of both). */
export function diff(desired: Ruleset, actual: KernelState, opts: DiffOptions = {}): Plan {
  const edit = opts.edit ?? true;
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
    diffChain(c, actual.chains.get(c.name), out, edit);
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
 * The kernel state after a successful apply of `plan` to `state`, garbage collection included:
 * patches `state`'s maps in place (cost in proportion to the plan) and returns the state with its
 * hooks updated. With `plan = diff(desired, state)` the result has the content of
 * `stateOf(desired)`, up to the order of the rules of unordered chains.
 */
export function applyPlan(state: KernelState, plan: Plan): KernelState {
  return applyGarbage(applyMain(state, plan), plan);
}

/**
 * The kernel state after the main apply of `plan` (phases 1-3): unordered chains hold their old
 * rules and the appended ones (at the end, as the kernel holds them); sets no longer wanted are
 * empty; chains no longer wanted are still there. Patches `state` in place.
 */
export function applyMain(state: KernelState, plan: Plan): KernelState {
  const memberMap = (s: IpSet) => {
    const m = new Map<string, boolean>();
    for (const x of s.members) m.set(canonicalEntry(s.type, x.entry), !!x.nomatch);
    return m;
  };
  for (const s of [...plan.createSets, ...plan.replaceSets]) state.sets.set(s.name, { name: s.name, type: s.type, members: memberMap(s), ...runtimeOf(s) });
  // Deletes first: a flipped nomatch flag is a delete and an add of the same entry.
  for (const d of plan.delMembers) state.sets.get(d.set)?.members.delete(d.entry);
  for (const a of plan.addMembers) state.sets.get(a.set)?.members.set(a.entry, !!a.nomatch);
  for (const n of plan.destroySets) state.sets.get(n)?.members.clear();
  for (const c of plan.writeChains) state.chains.set(c.name, { name: c.name, ruleIds: c.rules.map(ruleId), rules: c.rules });
  for (const a of plan.appendRules) {
    const cur = state.chains.get(a.chain);
    if (!cur) continue;
    const rules = cur.rules && cur.rules.length === cur.ruleIds.length ? [...cur.rules, ...a.rules] : undefined;
    state.chains.set(a.chain, { name: a.chain, ruleIds: [...cur.ruleIds, ...a.rules.map(ruleId)], ...(rules ? { rules } : {}) });
  }
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

/** The kernel state after the garbage collection of `plan` (phases 4-5). Patches `state` in place. */
export function applyGarbage(state: KernelState, plan: Plan): KernelState {
  for (const r of plan.removeRules) {
    const cur = state.chains.get(r.chain);
    if (!cur) continue;
    const gone = new Set(r.ids);
    const keep: number[] = [];
    for (let i = 0; i < cur.ruleIds.length; i++) {
      const id = cur.ruleIds[i];
      if (id === undefined || !gone.has(id)) keep.push(i);
      else gone.delete(id); // `-D` deletes the first matching rule only
    }
    const rules = cur.rules && cur.rules.length === cur.ruleIds.length ? keep.map((i) => cur.rules![i]!) : undefined;
    state.chains.set(r.chain, { name: r.chain, ruleIds: keep.map((i) => cur.ruleIds[i]), ...(rules ? { rules } : {}) });
  }
  for (const n of plan.deleteChains) state.chains.delete(n);
  for (const n of plan.destroySets) state.sets.delete(n);
  return state;
}

export interface Payloads {
  /** `ipset restore -exist`, before iptables. Empty when nothing to do. */
  readonly ipsetBefore: string;
  /** `iptables-restore --noflush`, one transaction for the filter table. */
  readonly iptables: string;
  /** `ipset restore -exist`, after iptables. */
  readonly ipsetAfter: string;
  /** Garbage collection: `iptables-restore --noflush` deleting stale rules and unwanted chains. */
  readonly gcIptables: string;
  /** Garbage collection: `ipset restore -exist` destroying unwanted sets, after gcIptables. */
  readonly gcIpset: string;
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
    before.push(renderSetCreate({ ...s, name: tmp }));
    for (const m of s.members) before.push(renderSetMember(tmp, m.entry, m.nomatch));
    before.push(`swap ${tmp} ${s.name}`, `destroy ${tmp}`);
  }
  // Adds before iptables so a rule never sees a set missing a member it should have; a member
  // whose nomatch flag flips is deleted and re-added in this same phase.
  const flipped = new Set(p.addMembers.map((a) => `${a.set}|${a.entry}`));
  // The gate set (IpSet.gate, invariant fail-closed-in-time): an address leaves it before
  // anything else changes, and joins it only after everything else is in force (its dispatch and
  // peer entries, its chains and bucket rules), at the very end of the apply.
  const gateDels: string[] = [];
  const gateAdds: string[] = [];
  for (const d of p.delMembers) if (d.gate && !flipped.has(`${d.set}|${d.entry}`)) gateDels.push(`del ${d.set} ${d.entry}`);
  for (const a of p.addMembers) if (a.gate) gateAdds.push(renderSetMember(a.set, a.entry, a.nomatch));
  before.unshift(...gateDels);
  for (const d of p.delMembers) if (flipped.has(`${d.set}|${d.entry}`)) before.push(`del ${d.set} ${d.entry}`);
  for (const a of p.addMembers) if (!a.gate) before.push(renderSetMember(a.set, a.entry, a.nomatch));

  const ipt: string[] = [];
  if (p.writeChains.length || p.appendRules.length || p.removeHooks.length || p.insertHooks.length) {
    ipt.push('*filter');
    for (const c of p.writeChains) ipt.push(`:${c.name} - [0:0]`);
    for (const c of p.writeChains) append(ipt, renderChainBody(c));
    // After the chains they may jump to are created.
    for (const a of p.appendRules) for (const r of a.rules) ipt.push(renderRule(a.chain, r));
    for (const h of p.removeHooks) ipt.push(h.line.replace(/^-A /, '-D '));
    for (const h of p.insertHooks) ipt.push(renderHook(h));
    ipt.push('COMMIT');
  }

  const after: string[] = [];
  for (const d of p.delMembers) if (!d.gate && !flipped.has(`${d.set}|${d.entry}`)) after.push(`del ${d.set} ${d.entry}`);
  // A set no longer wanted may still be used by a stale rule until garbage collection: empty it
  // now, so that rule matches nothing. A set matched in the negative (the gate sets) only ever
  // guards a drop (layout.ts, rules.ts): emptied, its stale rule drops more, never less.
  for (const n of p.destroySets) after.push(`flush ${n}`);
  append(after, gateAdds);

  const gc: string[] = [];
  if (p.removeRules.length || p.deleteChains.length) {
    gc.push('*filter');
    // Declaring a chain flushes it, so no rule of a chain about to be deleted references others.
    for (const n of p.deleteChains) gc.push(`:${n} - [0:0]`);
    // Stale rules go before the chains they may jump to are deleted.
    for (const r of p.removeRules) append(gc, r.lines);
    for (const n of p.deleteChains) gc.push(`-X ${n}`);
    gc.push('COMMIT');
  }
  const gcSets = p.destroySets.map((n) => `destroy ${n}`);
  const text = (l: string[]) => (l.length ? l.join('\n') + '\n' : '');
  return { ipsetBefore: text(before), iptables: text(ipt), ipsetAfter: text(after), gcIptables: text(gc), gcIpset: text(gcSets) };
}
