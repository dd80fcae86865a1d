// Applying a plan the kernel refused, piece by piece: find the pieces the kernel refuses, apply
// every other piece, and say which were refused (the agent maps them back to the objects that
// produced them and quarantines those, see src/agent/containment.ts).
//
// Why: one object the kernel refuses (a pod whose address is 0.0.0.0: ipset's "Null-valued
// element") fails the whole `ipset restore` or `iptables-restore` of an apply. Retrying the same
// plan fails forever and, at start-up, no rule at all is written.
//
// How: the plan is cut into pieces (a set created; one member added; a chain written; one rule
// appended; the hooks), and `split` applies groups of pieces, halving a group the kernel refuses
// until each refused piece is alone. The kernel's own line number (`Error in line N`, `Error
// occurred at line: N`) names the piece to try alone first, so a refusal usually costs three
// tries, not a bisection.
//
// Invariants:
// - Only additions are tried: creating and filling sets, writing chains, appending rules,
//   placing the hooks. The plan's removals (set members deleted, sets flushed, stale rules,
//   chains and sets deleted) are withheld: with a piece refused, a removal could be the one that
//   drops a pod's isolation (its address deleted from its old dispatch set while the new one was
//   refused). So after a piecewise apply the kernel enforces at least what it enforced before,
//   plus every accepted addition: never less isolated than the last state in force (invariant
//   *fail-closed*: an error never removes isolation). The sync that follows (after the agent's
//   quarantine) does the removals.
// - A piece is tried together with the pieces it needs that are not in the kernel yet (the sets
//   its rules match, the chains its rules go to); a piece whose need was refused or skipped is
//   never tried ("blocked"), so a refusal is never blamed on what merely depends on it.
// - Addresses of the gate sets (IpSet.gate: PCTL-programmed, the local pods this node enforces, and
//   PCTL-known, every pod the node knows) are added
//   last, only when no set, chain, rule or hook piece was refused, blocked or skipped, and never
//   an address refused (or skipped) in another set: an address enters it only once everything
//   that enforces it is in force (invariant *fail-closed-in-time*).
// - Every try is an ordinary, idempotent restore: `ipset restore -exist` (which keeps the lines
//   before a failing one: trying them again changes nothing) or one atomic
//   `iptables-restore --noflush` transaction (all or nothing).
// - Bounded: at most `maxAttempts` tries and `maxRejected` refused pieces, so a systemic failure
//   (every piece refused: a kernel without the ipset module) stops early (`complete: false`).

import type { Chain, Rule } from '../compiler/ruleset.ts';
import { canonicalEntry, payloads, planBuilder, type Plan, type PlanBuilder } from './plan.ts';
import { ApplyError } from './apply-error.ts';
import { append } from '../util/arrays.ts';

// ---- the generic split -----------------------------------------------------------------------

/** The outcome of applying one group: accepted, or refused with the kernel's error. */
export type Attempt<T> = { readonly ok: true } | { readonly ok: false; readonly error: Error; readonly hint?: T };

export interface SplitOptions<T> {
  /**
   * Apply these units together (needs first). Resolves to whether the kernel accepted them;
   * `hint` is the unit the kernel named (its failing line), if it named one. Throws to abort
   * the whole split (a failure that says nothing about the units: a lock timeout).
   */
  readonly attempt: (units: readonly T[]) => Promise<Attempt<T>>;
  /** Units that must be in the kernel for this one to apply (tried with it while not applied). */
  readonly needs?: (u: T) => readonly T[];
  /** Not to be tried at all (e.g. its object is already known bad). Asked once per unit. */
  readonly skip?: (u: T) => boolean;
  /** Called as soon as a unit is known refused (alone, its needs applied). */
  readonly onRejected?: (u: T, error: Error) => void;
  readonly maxAttempts?: number;
  readonly maxRejected?: number;
  /**
   * What earlier splits decided, shared so a later split over other units knows which of their
   * needs are in force or refused (filled in by this split too).
   */
  readonly decided?: Map<T, Decision>;
}

export interface SplitResult<T> {
  readonly applied: readonly T[];
  readonly rejected: readonly { readonly unit: T; readonly error: Error }[];
  /** Never tried: something they need was refused, skipped or blocked. */
  readonly blocked: readonly T[];
  readonly skipped: readonly T[];
  /** Never decided: the split stopped at a bound. */
  readonly untried: readonly T[];
  readonly attempts: number;
  /** False when a bound stopped the split before every unit was decided. */
  readonly complete: boolean;
}

export const MAX_ATTEMPTS = 256;
export const MAX_REJECTED = 64;

export type Decision = 'applied' | 'rejected' | 'blocked' | 'skipped';

/**
 * Apply `units` in groups, splitting every group the kernel refuses, until each unit is applied,
 * refused alone, blocked or skipped. With k refused units among n, this takes about
 * 2k·log2(n) + 1 attempts without hints, and about 2k + 1 when the kernel names the failing
 * unit. A wrong hint (the unit named then applies alone) turns hints off for the rest.
 */
export async function split<T>(units: readonly T[], o: SplitOptions<T>): Promise<SplitResult<T>> {
  const maxAttempts = o.maxAttempts ?? MAX_ATTEMPTS;
  const maxRejected = o.maxRejected ?? MAX_REJECTED;
  const state = o.decided ?? new Map<T, Decision>();
  const rejected: { unit: T; error: Error }[] = [];
  let attempts = 0;
  let trustHints = true;
  let complete = true;

  const skipped = (u: T): boolean => {
    if (!o.skip?.(u)) return false;
    state.set(u, 'skipped');
    return true;
  };
  /** Collect u's needs not applied yet (needs of needs first); false when one can never apply. */
  const pendingNeeds = (u: T, out: Set<T>): boolean => {
    for (const n of o.needs?.(u) ?? []) {
      const s = state.get(n);
      if (s === 'applied' || out.has(n)) continue;
      if (s !== undefined || skipped(n)) return false;
      if (!pendingNeeds(n, out)) {
        state.set(n, 'blocked');
        return false;
      }
      out.add(n);
    }
    return true;
  };

  interface Group {
    readonly units: readonly T[];
    /** A unit the kernel named, tried alone. */
    readonly hinted?: boolean;
  }
  const queue: Group[] = [{ units }];
  while (queue.length > 0) {
    const g = queue.shift()!;
    const members: T[] = [];
    const trial = new Set<T>();
    for (const u of g.units) {
      if (state.has(u) || skipped(u)) continue;
      const needs = new Set<T>();
      if (!pendingNeeds(u, needs)) {
        state.set(u, 'blocked');
        continue;
      }
      for (const n of needs) trial.add(n);
      trial.add(u);
      members.push(u);
    }
    if (members.length === 0) continue;
    if (attempts >= maxAttempts) {
      complete = false;
      break;
    }
    const list = [...trial];
    attempts++;
    const r = await o.attempt(list);
    if (r.ok) {
      for (const u of list) state.set(u, 'applied');
      if (g.hinted) trustHints = false; // the kernel named a unit that applies alone
      continue;
    }
    if (list.length === 1) {
      const u = list[0]!;
      state.set(u, 'rejected');
      rejected.push({ unit: u, error: r.error });
      o.onRejected?.(u, r.error);
      if (rejected.length >= maxRejected) {
        complete = false;
        break;
      }
      continue;
    }
    const h = r.hint;
    if (trustHints && h !== undefined && trial.has(h)) {
      // The kernel named h: try it (with its needs) alone, then the others.
      queue.unshift({ units: [h], hinted: true }, { units: members.filter((u) => u !== h) });
    } else if (members.length === 1) {
      // One unit and its needs: the needs first, so a refused need blocks the unit.
      queue.unshift({ units: list.filter((u) => u !== members[0]) }, { units: members });
    } else {
      const mid = members.length >> 1;
      queue.unshift({ units: members.slice(0, mid) }, { units: members.slice(mid) });
    }
  }

  const by = (s: Decision) => units.filter((u) => state.get(u) === s);
  return { applied: by('applied'), rejected, blocked: by('blocked'), skipped: by('skipped'), untried: units.filter((u) => !state.has(u)), attempts, complete };
}

// ---- a plan in pieces ------------------------------------------------------------------------

/** One addition of a plan, with the plan fragment that makes it. */
export type Piece =
  /** A set created (empty: its members are pieces of their own) or rebuilt whole (type changed). */
  | { readonly kind: 'set'; readonly set: string; readonly setType: string; readonly plan: Plan }
  /** One member added (with the delete that precedes it when its nomatch flag flips). */
  | { readonly kind: 'member'; readonly set: string; readonly setType: string; readonly entry: string; readonly plan: Plan }
  /** A chain written whole. */
  | { readonly kind: 'chain'; readonly chain: Chain; readonly plan: Plan }
  /** One rule appended to an existing unordered chain. */
  | { readonly kind: 'append'; readonly chain: string; readonly rule: Rule; readonly plan: Plan }
  /** The hooks removed and inserted (always together: they keep one jump at position 1). */
  | { readonly kind: 'hooks'; readonly plan: Plan };

export interface PlanPieces {
  /** Set creations: applied first, on their own. */
  readonly sets: readonly Piece[];
  /** Members, chains, appended rules, hooks. */
  readonly rest: readonly Piece[];
  /** Members of the gate sets (IpSet.gate: PCTL-programmed, PCTL-known): last, and only when everything else is in force. */
  readonly programmed: readonly Piece[];
  readonly needs: ReadonlyMap<Piece, readonly Piece[]>;
  /** Removals of the plan, withheld (see the file comment). */
  readonly withheld: number;
}

function fragment(p: Partial<PlanBuilder>): Plan {
  return { ...planBuilder(), ...p };
}

/** The sets a rule matches and the chain it goes to. */
function references(r: Rule): { sets: string[]; chain?: string } {
  const sets = (r.match.sets ?? []).map((s) => s.set);
  const a = r.action;
  return a.kind === 'goto' || a.kind === 'jump' ? { sets, chain: a.chain } : { sets };
}

/** Cut the additions of a plan into pieces (removals withheld). */
export function planPieces(plan: Plan): PlanPieces {
  const sets: Piece[] = [];
  const rest: Piece[] = [];
  const programmed: Piece[] = [];
  const needs = new Map<Piece, Piece[]>();
  const setPiece = new Map<string, Piece>();
  const chainPiece = new Map<string, Piece>();

  for (const s of plan.createSets) {
    const p: Piece = { kind: 'set', set: s.name, setType: s.type, plan: fragment({ createSets: [{ ...s, members: [] }] }) };
    sets.push(p);
    setPiece.set(s.name, p);
  }
  for (const s of plan.replaceSets) {
    const p: Piece = { kind: 'set', set: s.name, setType: s.type, plan: fragment({ replaceSets: [s] }) };
    sets.push(p);
    setPiece.set(s.name, p);
  }
  const member = (set: string, setType: string, entry: string, nomatch: boolean | undefined, flip: boolean, gate: boolean | undefined): void => {
    const g = gate ? { gate: true as const } : {};
    const add = { set, entry, ...(nomatch ? { nomatch } : {}), ...g };
    const p: Piece = { kind: 'member', set, setType, entry, plan: fragment({ addMembers: [add], delMembers: flip ? [{ set, entry, ...g }] : [] }) };
    const created = setPiece.get(set);
    if (created) needs.set(p, [created]);
    (gate ? programmed : rest).push(p);
  };
  for (const s of plan.createSets) for (const m of s.members) member(s.name, s.type, m.entry, m.nomatch, false, s.gate);
  const types = new Map<string, string>();
  for (const s of plan.createSets) types.set(s.name, s.type);
  const flipped = new Set(plan.delMembers.map((d) => `${d.set}|${d.entry}`));
  let flips = 0;
  for (const a of plan.addMembers) {
    const flip = flipped.has(`${a.set}|${a.entry}`);
    if (flip) flips++;
    member(a.set, types.get(a.set) ?? '', a.entry, a.nomatch, flip, a.gate);
  }

  const ruleNeeds = (rules: readonly Rule[], self?: string): Piece[] => {
    const out = new Set<Piece>();
    for (const r of rules) {
      const ref = references(r);
      for (const s of ref.sets) {
        const p = setPiece.get(s);
        if (p) out.add(p);
      }
      if (ref.chain !== undefined && ref.chain !== self) {
        const p = chainPiece.get(ref.chain);
        if (p) out.add(p);
      }
    }
    return [...out];
  };
  const chains: Piece[] = [];
  for (const c of plan.writeChains) {
    const p: Piece = { kind: 'chain', chain: c, plan: fragment({ writeChains: [c] }) };
    chains.push(p);
    chainPiece.set(c.name, p);
  }
  for (const p of chains) {
    if (p.kind !== 'chain') continue;
    needs.set(p, ruleNeeds(p.chain.rules, p.chain.name));
    rest.push(p);
  }
  for (const a of plan.appendRules) {
    for (const r of a.rules) {
      const p: Piece = { kind: 'append', chain: a.chain, rule: r, plan: fragment({ appendRules: [{ chain: a.chain, rules: [r] }] }) };
      needs.set(p, ruleNeeds([r]));
      rest.push(p);
    }
  }
  if (plan.insertHooks.length + plan.removeHooks.length > 0) {
    const p: Piece = { kind: 'hooks', plan: fragment({ insertHooks: [...plan.insertHooks], removeHooks: [...plan.removeHooks] }) };
    needs.set(p, plan.insertHooks.flatMap((h) => (chainPiece.has(h.target) ? [chainPiece.get(h.target)!] : [])));
    rest.push(p);
  }
  const withheld = plan.delMembers.length - flips + plan.destroySets.length + plan.removeRules.reduce((n, r) => n + r.ids.length, 0) + plan.deleteChains.length;
  return { sets, rest, programmed, needs, withheld };
}

/** One plan holding the fragments of these pieces. */
export function mergePieces(pieces: readonly Piece[]): Plan {
  const out = planBuilder();
  for (const { plan } of pieces) {
    append(out.createSets, plan.createSets);
    append(out.replaceSets, plan.replaceSets);
    append(out.addMembers, plan.addMembers);
    append(out.delMembers, plan.delMembers);
    append(out.writeChains, plan.writeChains);
    append(out.appendRules, plan.appendRules);
    append(out.removeHooks, plan.removeHooks);
    append(out.insertHooks, plan.insertHooks);
  }
  return out;
}

/** Every payload line a piece renders (but the table header and COMMIT) -> the piece. */
function lineIndex(pieces: readonly Piece[]): Map<string, Piece> {
  const index = new Map<string, Piece>();
  for (const p of pieces) {
    const pl = payloads(p.plan);
    for (const text of [pl.ipsetBefore, pl.iptables, pl.ipsetAfter]) {
      for (const line of text.split('\n')) {
        if (line === '' || line === '*filter' || line === 'COMMIT' || index.has(line)) continue;
        index.set(line, p);
      }
    }
  }
  return index;
}

/** The first address of a set entry (`10.0.0.1`, `10.0.0.1,tcp:80`, `10.0.0.0/8` -> itself). */
export function entryAddress(setType: string, entry: string): string {
  return canonicalEntry(setType, entry.split(',')[0]!);
}

// ---- applying a plan in pieces ---------------------------------------------------------------

export interface Rejection {
  readonly piece: Piece;
  readonly error: ApplyError;
  /** The payload line the kernel named, when it named one. */
  readonly line?: string;
}

export interface PiecesOptions {
  /** Skip a piece without trying it (its object is already known bad). */
  readonly skip?: (p: Piece) => boolean;
  /** A piece is known refused (alone, its needs in force). */
  readonly onRejected?: (r: Rejection) => void;
  readonly maxAttempts?: number;
  readonly maxRejected?: number;
}

export interface PiecesResult {
  readonly rejected: readonly Rejection[];
  readonly applied: number;
  readonly blocked: number;
  readonly skipped: number;
  /** Removals and programmed addresses held back for the next sync. */
  readonly withheld: number;
  readonly attempts: number;
  readonly complete: boolean;
}

/**
 * Apply the additions of `plan` piece by piece through `apply` (one ordinary apply of a plan:
 * payloads rendered and run in dependency order; throws ApplyError when refused). A transient
 * failure (ApplyError.transient: a lock, a timeout) says nothing about the pieces and aborts.
 */
export async function applyPieces(plan: Plan, apply: (p: Plan) => Promise<void>, o: PiecesOptions = {}): Promise<PiecesResult> {
  const pp = planPieces(plan);
  const index = lineIndex([...pp.sets, ...pp.rest, ...pp.programmed]);
  let attempts = 0;
  const rejections: Rejection[] = [];
  const decided = new Map<Piece, Decision>();
  const budget = { attempts: o.maxAttempts ?? MAX_ATTEMPTS, rejected: o.maxRejected ?? MAX_REJECTED };
  const run = (units: readonly Piece[]) =>
    split(units, {
      attempt: async (group) => {
        try {
          await apply(mergePieces(group));
          return { ok: true };
        } catch (e) {
          if (!(e instanceof ApplyError) || e.transient) throw e;
          const hint = e.offendingLine !== undefined ? index.get(e.offendingLine) : undefined;
          return { ok: false, error: e, ...(hint ? { hint } : {}) };
        }
      },
      needs: (p) => pp.needs.get(p) ?? [],
      ...(o.skip ? { skip: o.skip } : {}),
      onRejected: (piece, error) => {
        const e = error as ApplyError;
        const r: Rejection = { piece, error: e, ...(e.offendingLine !== undefined ? { line: e.offendingLine } : {}) };
        rejections.push(r);
        o.onRejected?.(r);
      },
      decided,
      maxAttempts: budget.attempts - attempts,
      maxRejected: budget.rejected - rejections.length,
    });

  const sets = await run(pp.sets);
  attempts += sets.attempts;
  let rest: SplitResult<Piece> | undefined;
  if (sets.complete) {
    rest = await run(pp.rest);
    attempts += rest.attempts;
  }
  const results = rest ? [sets, rest] : [sets];
  // Programmed addresses: only when every set, chain, rule and hook piece is in force (refused,
  // blocked or skipped pieces are members only), and not the addresses one of whose entries
  // (in any set) was refused, blocked, skipped or left untried.
  const onlyMembers = (ps: readonly Piece[]) => ps.every((p) => p.kind === 'member');
  const everythingElse = rest !== undefined && results.every((r) => r.complete && onlyMembers(r.rejected.map((x) => x.unit)) && onlyMembers(r.blocked) && onlyMembers(r.skipped));
  let held = pp.programmed.length;
  if (everythingElse && pp.programmed.length > 0) {
    const bad = new Set<string>();
    for (const r of results) {
      for (const p of [...r.rejected.map((x) => x.unit), ...r.blocked, ...r.skipped, ...r.untried]) if (p.kind === 'member') bad.add(entryAddress(p.setType, p.entry));
    }
    const ok = pp.programmed.filter((p) => p.kind === 'member' && !bad.has(entryAddress(p.setType, p.entry)));
    held = pp.programmed.length - ok.length;
    const programmed = await run(ok);
    attempts += programmed.attempts;
    results.push(programmed);
  }

  const count = (f: (r: SplitResult<Piece>) => number) => results.reduce((n, r) => n + f(r), 0);
  return {
    rejected: rejections,
    applied: count((r) => r.applied.length),
    blocked: count((r) => r.blocked.length),
    skipped: count((r) => r.skipped.length),
    withheld: pp.withheld + held,
    attempts,
    complete: rest !== undefined && results.every((r) => r.complete),
  };
}
