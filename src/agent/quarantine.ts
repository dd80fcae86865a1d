// Objects the kernel refused, held fail-closed until they change or a retry is due.
//
// The quarantine is a model adjuster (Model.addAdjuster): every record a source stores passes
// through it, and a quarantined object is stored in its fail-closed form, so the compilers, the
// semantics and every later sync see it that way:
// - a pod gets no address: it is in no allow set, no dispatch set and, when local, it is not a
//   programmed address, so the node's gate drops its new connections (it stays isolated);
// - a policy keeps its selector and policy types and loses its rules: it isolates what it
//   selects and allows nothing, as an invalid policy does;
// - a ClusterNetworkPolicy keeps its tier, priority and subject, and each direction it has rules
//   for holds one rule denying everything, as an invalid one does (invariant fail-closed: a CNP
//   never isolates by selecting, so dropping its rules would open what its Deny rules closed).
//
// Invariants:
// - The adjuster is pure: it reads only the set of quarantined keys, never the record's history.
//   Whether the object changed since it was quarantined is decided by `review()` (the agent runs
//   it before each sync), which compares the source's record with the one quarantined and lifts
//   the quarantine (Model.readjust) when they differ: a changed object is tried again as it is.
// - An object gone from the source leaves the quarantine.
// - A quarantined object is tried again periodically (the kernel may have changed: a module
//   loaded, a bug fixed): after `retryMs`, doubling with each refusal of the same content, up to
//   `maxRetryMs`. A retry that is refused again costs one failed apply and a piecewise one.

import { recordJson, type CnpRule, type ObjectRecord } from '../model/types.ts';
import type { Model } from '../model/store.ts';
import { culpritKey, type Culprit } from './provenance.ts';

export interface QuarantineEntry extends Culprit {
  /** Why: the tool's words (`ipset restore (create and add): ipset v7.17: Error in line 3: ...`). */
  readonly reason: string;
  readonly since: Date;
  /** When it is tried again (epoch ms). */
  readonly retryAt: number;
  /** Refusals of this content so far (the retry delay doubles with each). */
  readonly strikes: number;
  /** The source's record when quarantined: a different one lifts the quarantine. */
  readonly fingerprint: string;
}

export interface Lifted {
  readonly entry: QuarantineEntry;
  readonly why: 'changed' | 'deleted' | 'retry';
}

export interface QuarantineOptions {
  /** First retry after this long (default 60 s). */
  readonly retryMs?: number;
  /** Retries never wait longer than this (default 30 min). */
  readonly maxRetryMs?: number;
  readonly now?: () => number;
}

/** The fail-closed form of a record (see the file comment). */
export function failClosed(r: ObjectRecord): ObjectRecord {
  switch (r.kind) {
    case 'Pod':
      return r.ips.length === 0 ? r : { ...r, ips: [] };
    case 'NetworkPolicy':
      return r.ingress.length === 0 && r.egress.length === 0 ? r : { ...r, ingress: [], egress: [] };
    case 'ClusterNetworkPolicy': {
      const closed = (rules: readonly CnpRule[], dir: string): CnpRule[] =>
        rules.length === 0 ? [] : [{ name: '', action: 'Deny', peers: [{ kind: 'any' }], failClosed: `quarantined: the kernel refused it; fails closed, denying all ${dir} traffic` }];
      const failed = (rules: readonly CnpRule[]) => rules.length === 1 && rules[0]!.failClosed?.startsWith('quarantined:') === true;
      if ((r.ingress.length === 0 || failed(r.ingress)) && (r.egress.length === 0 || failed(r.egress))) return r;
      return { ...r, ingress: closed(r.ingress, 'ingress'), egress: closed(r.egress, 'egress') };
    }
    default:
      return r; // namespaces and nodes are never held responsible
  }
}

export class Quarantine {
  private readonly model: Model;
  private readonly entries = new Map<string, QuarantineEntry>();
  /** `key|fingerprint` -> refusals, kept across retries so a repeat offender waits longer. */
  private readonly strikes = new Map<string, number>();
  private readonly retryMs: number;
  private readonly maxRetryMs: number;
  private readonly now: () => number;

  constructor(model: Model, o: QuarantineOptions = {}) {
    this.model = model;
    this.retryMs = o.retryMs ?? 60_000;
    this.maxRetryMs = o.maxRetryMs ?? 30 * 60_000;
    this.now = o.now ?? Date.now;
  }

  /** The adjuster (pure: it reads the quarantined keys only). */
  readonly adjust = (r: ObjectRecord): ObjectRecord => (this.entries.has(`${r.kind}|${r.uid}`) ? failClosed(r) : r);

  /** Start adjusting the model's records; returns the function that stops it. */
  attach(): () => void {
    return this.model.addAdjuster(this.adjust);
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  list(): QuarantineEntry[] {
    return [...this.entries.values()].sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0));
  }

  /**
   * Quarantine an object (its record in the model becomes fail-closed at once). Undefined when
   * the source no longer has it.
   */
  add(c: Culprit, reason: string): QuarantineEntry | undefined {
    const src = this.model.sourceRecord(c.uid, c.kind);
    if (!src) return undefined;
    const key = culpritKey(c);
    const fingerprint = recordJson(src);
    const sk = `${key}|${fingerprint}`;
    const strikes = (this.strikes.get(sk) ?? 0) + 1;
    this.strikes.set(sk, strikes);
    if (this.strikes.size > 4096) this.strikes.delete(this.strikes.keys().next().value!);
    const delay = Math.min(this.maxRetryMs, this.retryMs * 2 ** (strikes - 1));
    const now = this.now();
    const entry: QuarantineEntry = { ...c, reason, since: new Date(now), retryAt: now + delay, strikes, fingerprint };
    this.entries.set(key, entry);
    this.model.readjust(c.uid, c.kind);
    return entry;
  }

  /**
   * Lift the quarantine of objects that changed in the source (tried again as they are now),
   * that the source no longer has, or whose retry is due. Returns what was lifted.
   */
  review(): Lifted[] {
    const out: Lifted[] = [];
    const now = this.now();
    for (const [key, e] of this.entries) {
      const src = this.model.sourceRecord(e.uid, e.kind);
      const why = !src ? 'deleted' : recordJson(src) !== e.fingerprint ? 'changed' : e.retryAt <= now ? 'retry' : undefined;
      if (!why) continue;
      this.entries.delete(key);
      if (why !== 'retry') this.strikes.delete(`${key}|${e.fingerprint}`);
      if (src) this.model.readjust(e.uid, e.kind);
      out.push({ entry: e, why });
    }
    return out;
  }
}
