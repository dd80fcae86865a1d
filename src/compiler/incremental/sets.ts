// The incremental compiler's sets: each with a contribution count per entry (an address two pods
// contribute stays until both are gone) and a reference count (the chains and groups that need
// it; a set nothing needs is dropped), kept sorted as the Ruleset lists them, and journaled so
// each output says which entries changed since the previous one (invariant cost-proportional).

import type { IpSet, MemberChange, RulesetDelta, SetMember } from '../ruleset.ts';
import { sortedMembers, type SetSpec } from '../rules.ts';
import { SortedList } from './sorted-list.ts';

/** One set: members with a contribution count each, kept sorted as the Ruleset wants them. */
export class SetState {
  readonly spec: SetSpec;
  /** Number of users (chains, groups) that need the set to exist. */
  refs = 0;
  /** Position in the Ruleset's sorted set list (valid while the list of sets is unchanged). */
  index = -1;
  private readonly counts = new Map<string, number>();
  /** Sorted members; undefined until first output (a bulk fill sorts once). */
  private members: SetMember[] | undefined;
  /** The members array was handed out in an IpSet: copy before changing it. */
  private shared = false;
  private out: IpSet | undefined;
  /** Handed out at least once: from then on, changes are journaled for the delta. */
  private journaled = false;
  /** Net entries added and removed since the last output (journaled sets only). */
  readonly added = new Set<string>();
  readonly removed = new Set<string>();
  private readonly onChange: (s: SetState) => void;

  constructor(spec: SetSpec, onChange: (s: SetState) => void, fixed?: readonly SetMember[]) {
    this.spec = spec;
    this.onChange = onChange;
    if (fixed) {
      const m = new Map<string, boolean>();
      for (const x of fixed) m.set(x.entry, !!x.nomatch);
      for (const e of m.keys()) this.counts.set(e, 1);
      this.members = sortedMembers(m);
    }
  }

  add(entry: string): void {
    const c = this.counts.get(entry);
    if (c !== undefined) {
      this.counts.set(entry, c + 1);
      return;
    }
    this.counts.set(entry, 1);
    if (this.members) {
      const m = this.writable();
      m.splice(lowerBound(m, entry), 0, { entry });
    }
    if (this.journaled && !this.removed.delete(entry)) this.added.add(entry);
    this.changed();
  }

  delete(entry: string): void {
    const c = this.counts.get(entry);
    if (c === undefined) throw new Error(`incremental compiler: set ${this.spec.name} has no entry ${entry} to remove (bookkeeping bug)`);
    if (c > 1) {
      this.counts.set(entry, c - 1);
      return;
    }
    this.counts.delete(entry);
    if (this.members) {
      const m = this.writable();
      m.splice(lowerBound(m, entry), 1);
    }
    if (this.journaled && !this.added.delete(entry)) this.removed.add(entry);
    this.changed();
  }

  output(): IpSet {
    if (!this.out) {
      if (!this.members) this.members = [...this.counts.keys()].sort().map((entry) => ({ entry }));
      this.shared = true;
      this.journaled = true;
      const s = this.spec;
      this.out = { name: s.name, type: s.type, purpose: s.purpose, members: this.members, ...(s.gate && { gate: s.gate }), ...(s.runtime && { runtime: s.runtime }) };
    }
    return this.out;
  }

  /** Back to a previous output whose members equal the current ones (changes cancelled out). */
  restore(prev: IpSet): IpSet {
    this.members = prev.members as SetMember[];
    this.shared = true;
    this.out = prev;
    return prev;
  }

  clearJournal(): void {
    this.added.clear();
    this.removed.clear();
  }

  private writable(): SetMember[] {
    if (this.shared) {
      this.members = this.members!.slice();
      this.shared = false;
    }
    return this.members!;
  }

  private changed(): void {
    if (this.out) {
      this.out = undefined;
      this.onChange(this);
    }
  }
}

function lowerBound(m: readonly SetMember[], entry: string): number {
  let lo = 0;
  let hi = m.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (m[mid]!.entry < entry) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The set part of an output: the Ruleset's sets and what changed since the previous output. */
export type SetOutput = Pick<RulesetDelta, 'createdSets' | 'destroyedSets' | 'memberChanges' | 'rebuiltSets'> & { readonly sets: IpSet[] };

/** Every live set, by name and in name order, with what changed since the last output. */
export class SetRegistry {
  private readonly byName = new Map<string, SetState>();
  private readonly order = new SortedList<SetState>((x) => x.spec.name);
  private readonly maybeDead = new Set<SetState>();
  private readonly changed = new Set<SetState>();
  private listDirty = true;
  // The sets of the last output, for the delta.
  private readonly prevStates = new Map<string, SetState>();
  private readonly prevIpSets = new Map<string, IpSet>();
  private readonly destroyedSince = new Set<string>();

  get(name: string): SetState | undefined {
    return this.byName.get(name);
  }

  /** Sets changed, created or gone since the last output. */
  get dirty(): boolean {
    return this.changed.size > 0 || this.listDirty;
  }

  get changedCount(): number {
    return this.changed.size;
  }

  /** Forget every set: those of the last output are gone unless created again (a rebuild). */
  clear(): void {
    this.byName.clear();
    this.order.clear();
    this.maybeDead.clear();
    this.changed.clear();
    for (const name of this.prevStates.keys()) this.destroyedSince.add(name);
    this.listDirty = true;
  }

  create(spec: SetSpec, fixed?: readonly SetMember[]): SetState {
    if (this.byName.has(spec.name)) throw new Error(`incremental compiler: set ${spec.name} created twice (bookkeeping bug)`);
    const s = new SetState(spec, (x) => this.changed.add(x), fixed);
    this.byName.set(spec.name, s);
    this.order.insert(s);
    this.changed.add(s);
    this.listDirty = true;
    return s;
  }

  unref(s: SetState): void {
    if (--s.refs === 0) this.maybeDead.add(s);
  }

  /** Drop the sets nothing needs any more; returns them (so that their users let go of them). */
  sweep(): SetState[] {
    const dropped: SetState[] = [];
    for (const s of this.maybeDead) {
      if (s.refs > 0 || this.byName.get(s.spec.name) !== s) continue;
      this.byName.delete(s.spec.name);
      this.order.remove(s);
      this.changed.delete(s);
      if (this.prevStates.get(s.spec.name) === s) this.destroyedSince.add(s.spec.name);
      this.listDirty = true;
      dropped.push(s);
    }
    this.maybeDead.clear();
    return dropped;
  }

  /**
   * The sets for this output (`previous`: the last output's list) and the delta: only the sets
   * that changed, were created or went since the last output are looked at.
   */
  output(previous: readonly IpSet[] | undefined): SetOutput {
    const createdSets: IpSet[] = [];
    const rebuiltSets: { before: IpSet; after: IpSet }[] = [];
    const memberChanges: MemberChange[] = [];
    const destroyedSets: string[] = [];
    for (const name of this.destroyedSince) {
      if (!this.byName.has(name)) destroyedSets.push(name);
      this.prevStates.delete(name);
    }
    for (const s of this.changed) {
      const name = s.spec.name;
      const before = this.prevIpSets.get(name);
      let out: IpSet;
      if (this.prevStates.get(name) === s) {
        if (s.added.size || s.removed.size) {
          out = s.output();
          memberChanges.push({ set: name, added: [...s.added], removed: [...s.removed], ...(s.spec.gate && { gate: s.spec.gate }) });
        } else out = s.restore(before!); // changes that cancelled out: keep the previous object
      } else {
        out = s.output();
        if (before) rebuiltSets.push({ before, after: out });
        else createdSets.push(out);
      }
      s.clearJournal();
      this.prevStates.set(name, s);
      this.prevIpSets.set(name, out);
    }
    for (const name of destroyedSets) this.prevIpSets.delete(name);
    this.destroyedSince.clear();

    // A new array (the previous Ruleset keeps its own), rebuilt whole only when sets came or
    // went; otherwise the previous one with the changed sets replaced in place.
    let sets: IpSet[];
    if (this.listDirty || !previous) {
      const order = this.order.items;
      sets = new Array<IpSet>(order.length);
      for (let i = 0; i < order.length; i++) {
        order[i]!.index = i;
        sets[i] = order[i]!.output();
      }
      this.listDirty = false;
    } else {
      sets = previous.slice();
      for (const s of this.changed) sets[s.index] = s.output();
    }
    this.changed.clear();
    return { sets, createdSets, destroyedSets, memberChanges, rebuiltSets };
  }
}
