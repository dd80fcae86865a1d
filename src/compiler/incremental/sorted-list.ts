// An array kept sorted by a unique string key (binary search): the incremental compiler keeps
// its sets, groups and chains in the order the Ruleset lists them, so an output needs no sort.

export class SortedList<T> {
  readonly items: T[] = [];
  private readonly key: (x: T) => string;
  constructor(key: (x: T) => string) {
    this.key = key;
  }
  private find(k: string): number {
    let lo = 0;
    let hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.key(this.items[mid]!) < k) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
  insert(x: T): void {
    this.items.splice(this.find(this.key(x)), 0, x);
  }
  remove(x: T): void {
    const i = this.find(this.key(x));
    if (this.items[i] !== x) throw new Error(`incremental compiler: ${this.key(x)} is not in its sorted list (bookkeeping bug)`);
    this.items.splice(i, 1);
  }
  clear(): void {
    this.items.length = 0;
  }
}

/** Add to a set-valued map. */
export function addTo<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(v);
}

/** Remove from a set-valued map (the key goes with its last value). */
export function removeFrom<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  const s = m.get(k);
  if (!s) return;
  s.delete(v);
  if (s.size === 0) m.delete(k);
}
