// The incremental compiler's groups and dispatch: the local pods sharing the chains they are
// dispatched to at one dispatch level (a group), the dispatch set of each group, the dispatch
// buckets each group has an address in, and the policy chains the groups use, kept so that an
// output rewrites a bucket chain only when a group enters or leaves the bucket, and lists a
// policy chain only while a group uses it. The chains themselves come from layout.ts, as for the
// full compiler.

import type { PolicyType } from '../../model/types.ts';
import { sameContent } from '../collisions.ts';
import { BUCKETS, DIRECTIONS, DISPATCH_LEVELS, bucketChain, bucketOf, dispatchChains, dispatchRule, dispatchSetSpec, layoutChains, type ChainContent, type Dispatch, type DispatchLevel, type LayoutOptions } from '../layout.ts';
import type { Chain, Rule } from '../ruleset.ts';
import type { SetRegistry, SetState } from './sets.ts';
import { SortedList } from './sorted-list.ts';
import { append } from '../../util/arrays.ts';

/** The local pods dispatched to one chain at one level, and the set that dispatches them to it. */
export interface Group {
  readonly level: DispatchLevel;
  readonly dir: PolicyType;
  /** Its chains end in one that goes on to the next-level dispatch (an Admin chain). */
  readonly continues: boolean;
  /** The chains its pods go through, the one dispatched to first (its name is the group's). */
  readonly chains: readonly ChainContent[];
  readonly dispatch: SetState;
  readonly rule: Rule;
  pods: number;
  /** Addresses contributed by its pods in each dispatch bucket (a reused address counts twice). */
  readonly inBucket: number[];
}

/** One dispatch bucket of one level and direction: the groups with an address in it, by chain name. */
interface Bucket {
  readonly level: DispatchLevel;
  readonly dir: PolicyType;
  readonly k: number;
  readonly groups: SortedList<Group>;
  /** The chain handed out last (undefined when the bucket was empty or is new). */
  out: Chain | undefined;
}

/** A policy chain and the number of groups using it. */
interface ChainUse {
  readonly chain: ChainContent;
  refs: number;
}

const nameOf = (g: Group): string => g.chains[0]!.name;

/** What the chains of an output are, and which of them changed since the previous output. */
export interface ChainOutput {
  readonly chains: readonly Chain[];
  readonly writtenChains: readonly Chain[];
  readonly removedChains: readonly string[];
}

export class DispatchState {
  private readonly sets: SetRegistry;
  /** By level and first chain name (`level|name`). */
  private readonly groups = new Map<string, Group>();
  private readonly maybeDeadGroups = new Set<Group>();
  private readonly buckets: Record<DispatchLevel, Record<PolicyType, Bucket[]>> = {
    entry: { Ingress: newBuckets('entry', 'Ingress'), Egress: newBuckets('entry', 'Egress') },
    next: { Ingress: newBuckets('next', 'Ingress'), Egress: newBuckets('next', 'Egress') },
  };
  /** Entry groups whose chains go on to the next-level dispatch, per direction: it exists while there are any. */
  private readonly continuing: Record<PolicyType, number> = { Ingress: 0, Egress: 0 };
  /** The next level appeared or went in a direction since the last output. */
  private levelsDirty = false;
  /** Buckets whose list of groups changed since the last output. */
  private readonly dirtyBuckets = new Set<Bucket>();
  /** The policy chains the groups use, sorted by name as the output lists them. */
  private readonly uses = new Map<string, ChainUse>();
  private readonly useOrder = new SortedList<ChainUse>((u) => u.chain.name);
  private chainListDirty = true;
  /** Policy chains that came and went since the last output; `rebuilt` after reset(). */
  private readonly chainsCreated = new Set<ChainUse>();
  private readonly chainsRemoved = new Set<string>();
  private rebuilt = true;
  // The chains of the last output.
  private layout: readonly Chain[] = [];
  private policyChains: readonly Chain[] = [];
  private prevChains = new Map<string, Chain>();
  private last: readonly Chain[] | undefined;

  constructor(sets: SetRegistry) {
    this.sets = sets;
  }

  /** Changes since the last output that its chains must show. */
  /** The layout's own chains changed (LayoutOptions: the shared Admin prefix): the next output lays them out again. */
  layoutChanged(): void {
    this.levelsDirty = true;
  }

  get dirty(): boolean {
    return this.chainListDirty || this.levelsDirty || this.dirtyBuckets.size > 0 || !this.last;
  }

  /** Forget every group (a rebuild): the next output compares every chain by name. */
  reset(): void {
    this.groups.clear();
    this.maybeDeadGroups.clear();
    for (const level of DISPATCH_LEVELS) {
      for (const dir of DIRECTIONS) {
        for (const b of this.buckets[level][dir]) {
          b.groups.clear();
          b.out = undefined;
        }
      }
    }
    this.continuing.Ingress = this.continuing.Egress = 0;
    this.levelsDirty = true;
    this.dirtyBuckets.clear();
    this.uses.clear();
    this.useOrder.clear();
    this.chainsCreated.clear();
    this.chainsRemoved.clear();
    this.rebuilt = true;
    this.chainListDirty = true;
  }

  /**
   * A pod joins the group of these chains (created when new). Returns the group and whether a
   * group or a chain of one of these names already stood for other rules (a collision appearing,
   * or a group left empty and not swept yet): grouping by name would merge them, so the caller
   * rebuilds.
   */
  join(level: DispatchLevel, dir: PolicyType, chains: readonly ChainContent[], continues: boolean, ips: readonly string[]): { group: Group; conflict: boolean } {
    const name = chains[0]!.name;
    let group = this.groups.get(`${level}|${name}`);
    let conflict = group !== undefined && !sameChains(group.chains, chains);
    if (!group) {
      const dispatch = this.sets.create(dispatchSetSpec(name, level));
      dispatch.refs++;
      group = { level, dir, continues, chains, dispatch, rule: dispatchRule(dir, dispatch.spec.name, name), pods: 0, inBucket: new Array<number>(BUCKETS).fill(0) };
      this.groups.set(`${level}|${name}`, group);
      for (const c of chains) if (!this.useChain(c)) conflict = true;
      if (continues && this.continuing[dir]++ === 0) this.levelsDirty = true;
    }
    group.pods++;
    for (const ip of ips) {
      group.dispatch.add(ip);
      const k = bucketOf(ip);
      if (group.inBucket[k]!++ === 0) this.enterBucket(group, k);
    }
    return { group, conflict };
  }

  /** A pod leaves its group. */
  leave(group: Group, ips: readonly string[]): void {
    for (const ip of ips) {
      group.dispatch.delete(ip);
      const k = bucketOf(ip);
      if (--group.inBucket[k]! === 0) this.leaveBucket(group, k);
    }
    if (--group.pods === 0) this.maybeDeadGroups.add(group);
  }

  /** Drop the groups with no pod left, and the chains no group uses. */
  sweep(): void {
    for (const g of this.maybeDeadGroups) {
      const key = `${g.level}|${nameOf(g)}`;
      if (g.pods > 0 || this.groups.get(key) !== g) continue;
      this.groups.delete(key);
      this.sets.unref(g.dispatch);
      for (const c of g.chains) this.unuseChain(c.name);
      if (g.continues && --this.continuing[g.dir] === 0) this.levelsDirty = true;
    }
    this.maybeDeadGroups.clear();
  }

  /** One more group uses the chain; false when its name is in use for other rules. */
  private useChain(c: ChainContent): boolean {
    const u = this.uses.get(c.name);
    if (u) {
      u.refs++;
      return sameContent(u.chain, c);
    }
    const nu: ChainUse = { chain: c, refs: 1 };
    this.uses.set(c.name, nu);
    this.useOrder.insert(nu);
    this.chainsCreated.add(nu);
    this.chainListDirty = true;
    return true;
  }

  private unuseChain(name: string): void {
    const u = this.uses.get(name)!;
    if (--u.refs > 0) return;
    this.uses.delete(name);
    this.useOrder.remove(u);
    if (!this.chainsCreated.delete(u)) this.chainsRemoved.add(name);
    this.chainListDirty = true;
  }

  /** A group's first address in bucket k: the bucket chain gets its dispatch rule. */
  private enterBucket(group: Group, k: number): void {
    const b = this.buckets[group.level][group.dir][k]!;
    b.groups.insert(group);
    this.dirtyBuckets.add(b);
  }

  /** A group's last address in bucket k went. */
  private leaveBucket(group: Group, k: number): void {
    const b = this.buckets[group.level][group.dir][k]!;
    b.groups.remove(group);
    this.dirtyBuckets.add(b);
  }

  /**
   * The chains of this output (the layout's for these pod CIDRs, then the policy chains), and
   * which were written or removed since the previous output. Unchanged chains keep their objects
   * (same rule objects), so a consumer can skip them by identity.
   */
  output(cidrs: readonly string[], opts: LayoutOptions = {}): ChainOutput {
    if (!this.dirty && this.last) return { chains: this.last, writtenChains: [], removedChains: [] };
    const prevLayout = this.layout;
    // By name: the layout holds a few hundred chains (64 buckets per direction and level, their
    // tree), looked up once per chain of this output.
    const prevByName = new Map(prevLayout.map((c) => [c.name, c]));
    if (this.chainListDirty || !this.last) this.policyChains = this.useOrder.items.map((u) => u.chain);
    const next = (dir: PolicyType): Dispatch | undefined => (this.continuing[dir] > 0 ? this.dispatchOf('next', dir, prevByName) : undefined);
    const dispatch: Record<DispatchLevel, Partial<Record<PolicyType, Dispatch>>> = {
      entry: { Egress: this.dispatchOf('entry', 'Egress', prevByName), Ingress: this.dispatchOf('entry', 'Ingress', prevByName) },
      next: { Egress: next('Egress'), Ingress: next('Ingress') },
    };
    this.dirtyBuckets.clear();
    const layout = layoutChains(cidrs, dispatch, opts);
    this.layout = layout;
    this.chainListDirty = false;
    this.levelsDirty = false;
    const chains = [...layout, ...this.policyChains];
    const writtenChains: Chain[] = [];
    const removedChains: string[] = [];
    const changed = (c: Chain) => {
      const was = this.prevChains.get(c.name);
      return was !== c && !(was && sameRules(was, c, true));
    };
    if (!this.last || this.rebuilt) {
      // After a rebuild every object is new: compare the whole list by name.
      const next = new Map<string, Chain>();
      for (const c of chains) {
        next.set(c.name, c);
        if (changed(c)) writtenChains.push(c);
      }
      for (const name of this.prevChains.keys()) if (!next.has(name)) removedChains.push(name);
      this.prevChains = next;
      this.rebuilt = false;
    } else {
      // Policy chains only come and go (a chain's content is its name); layout chains change.
      for (const c of layout) if (changed(c)) writtenChains.push(c);
      const inLayout = new Set(layout.map((c) => c.name));
      for (const c of prevLayout) if (!inLayout.has(c.name)) removedChains.push(c.name);
      for (const u of this.chainsCreated) writtenChains.push(u.chain);
      append(removedChains, this.chainsRemoved);
      for (const name of removedChains) this.prevChains.delete(name);
      for (const c of writtenChains) this.prevChains.set(c.name, c);
      for (const c of layout) this.prevChains.set(c.name, c);
    }
    this.chainsCreated.clear();
    this.chainsRemoved.clear();
    this.last = chains;
    return { chains, writtenChains, removedChains };
  }

  /** One level's and direction's dispatch, inner and bucket chains, reusing the objects of unchanged ones. */
  private dispatchOf(level: DispatchLevel, dir: PolicyType, prevByName: ReadonlyMap<string, Chain>): Dispatch {
    const present: number[] = [];
    const buckets: Chain[] = [];
    for (const b of this.buckets[level][dir]) {
      if (b.groups.items.length === 0) {
        b.out = undefined;
        continue;
      }
      present.push(b.k);
      if (!b.out || this.dirtyBuckets.has(b)) {
        const c = bucketChain(dir, b.k, b.groups.items.map((g) => g.rule), level);
        if (!b.out || !sameRules(b.out, c, false)) b.out = c;
      }
      buckets.push(b.out);
    }
    const { chain, inner } = dispatchChains(dir, present, level);
    const keep = (c: Chain): Chain => {
      const prev = prevByName.get(c.name);
      return prev && sameRules(prev, c, false) ? prev : c;
    };
    return { chain: keep(chain), inner: inner.map(keep), buckets };
  }
}

function newBuckets(level: DispatchLevel, dir: PolicyType): Bucket[] {
  return Array.from({ length: BUCKETS }, (_, k) => ({ level, dir, k, groups: new SortedList<Group>(nameOf), out: undefined }));
}

function sameChains(a: readonly ChainContent[], b: readonly ChainContent[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!sameContent(a[i]!, b[i]!)) return false;
  return true;
}

/**
 * Same name and rules: rule objects compared by identity, or (`byContent`) by their content when
 * they differ (memoized per rule object: cheap for the shared ones).
 */
function sameRules(a: Chain, b: Chain, byContent: boolean): boolean {
  if (a.name !== b.name || a.rules.length !== b.rules.length) return false;
  for (let i = 0; i < a.rules.length; i++) {
    const [x, y] = [a.rules[i]!, b.rules[i]!];
    if (x !== y && (!byContent || ruleText(x) !== ruleText(y))) return false;
  }
  return true;
}

/** A rule's content as text, memoized per rule object (rules are immutable). */
function ruleText(r: Rule): string {
  let t = ruleTexts.get(r);
  if (t === undefined) ruleTexts.set(r, (t = JSON.stringify(r)));
  return t;
}
const ruleTexts = new WeakMap<Rule, string>();
