// Containment: when the kernel refuses an apply, find the objects responsible, quarantine them
// fail-closed, apply everything else, and report them.
//
// The agent calls `contain(desired, error)` after a sync failed with an ApplyError. It applies
// the plan to `desired` piece by piece (Syncer.applyInPieces: every piece the kernel accepts is
// in force afterwards, removals withheld, so the node is never less isolated than before),
// maps each refused piece to the model objects that produced it (Provenance), and quarantines
// them (Quarantine: their records become fail-closed in the model). The agent then compiles
// and syncs again, now without them; that sync does the withheld removals.
//
// Reported three ways: a log line per object naming the object, the field and the value
// (quoted) with the kernel's words; `policyctl_quarantined_objects` and
// `policyctl_kernel_rejections_total`; and a /readyz reason per object (not ready while any
// object is quarantined: the node does not enforce what the cluster asked for that object).
//
// Not contained (the agent retries with backoff, as for any failure): a transient failure (a
// lock, a timeout), and a refusal no single object explains (a top chain, the hooks, the
// programmed set): then only the pieces the kernel accepted are in force.

import type { Logger } from 'pino';
import type { CompileOptions } from '../compiler/compile.ts';
import type { Ruleset } from '../compiler/ruleset.ts';
import type { Model } from '../model/store.ts';
import { ApplyError } from '../sync/apply-error.ts';
import type { Piece, Rejection } from '../sync/pieces.ts';
import type { Syncer } from '../sync/syncer.ts';
import type { AgentMetrics } from './metrics.ts';
import { culpritKey, Provenance, type Culprit } from './provenance.ts';
import { Quarantine, type QuarantineEntry, type QuarantineOptions } from './quarantine.ts';
import { errorText } from '../util/error-text.ts';

export interface ContainmentOptions extends QuarantineOptions {
  readonly model: Model;
  readonly node: string;
  readonly syncer: Syncer;
  readonly logger: Logger;
  readonly metrics: AgentMetrics;
  /** What the Rulesets are compiled with (provenance names chains as the compiler does); a function when it can change (the detected service proxy). */
  readonly compileOptions?: CompileOptions | (() => CompileOptions);
}

/** A quarantined object as /readyz and the status file show it. */
export interface QuarantineReport {
  readonly object: string;
  readonly field: string;
  readonly value: string;
  readonly reason: string;
  readonly since: string;
  readonly retryAt: string;
}

export class Containment {
  readonly quarantine: Quarantine;
  private readonly o: ContainmentOptions;
  private detach: (() => void) | undefined;

  constructor(o: ContainmentOptions) {
    this.o = o;
    this.quarantine = new Quarantine(o.model, o);
  }

  /** Start holding quarantined objects fail-closed in the model. */
  attach(): void {
    this.detach ??= this.quarantine.attach();
    this.gauge();
  }

  /** Stop: every quarantined record goes back to its source form. */
  dispose(): void {
    this.detach?.();
    this.detach = undefined;
  }

  /** Before each sync: objects that changed, went, or are due for a retry leave the quarantine. */
  review(): void {
    const lifted = this.quarantine.review();
    for (const { entry: e, why } of lifted) {
      const what = why === 'changed' ? 'changed: trying it as it is now' : why === 'deleted' ? 'is gone' : `retrying it (refused ${e.strikes} time(s) so far)`;
      this.o.logger.info({ object: e.ref, field: e.field, value: e.value, why }, `quarantine of ${e.ref} lifted: it ${what}`);
    }
    if (lifted.length > 0) this.gauge();
  }

  /**
   * After a sync failed with `err`: apply `desired` piece by piece and quarantine the objects
   * behind the refused pieces. Resolves to true when some object was newly quarantined (the
   * caller compiles and syncs again), false when nothing can be contained (the caller reports
   * `err` and retries with backoff).
   */
  async contain(desired: Ruleset, err: unknown): Promise<boolean> {
    const log = this.o.logger;
    if (!(err instanceof ApplyError) || err.transient) return false;
    const prov = new Provenance(this.o.model, this.o.node, desired, typeof this.o.compileOptions === 'function' ? this.o.compileOptions() : this.o.compileOptions);
    const found = new Map<string, { culprit: Culprit; rejection: Rejection }>();
    const unexplained: Rejection[] = [];
    const quarantined = (key: string) => found.has(key) || this.quarantine.has(key);
    // A piece whose every object is already found bad is not tried: its object leaves the
    // Ruleset with the quarantine anyway (a pod in 40 peer sets costs one refusal, not 40).
    const skip = (p: Piece) => {
      if (found.size === 0) return false;
      const owners = p.kind === 'hooks' || p.kind === 'set' ? [] : prov.owners(p);
      return owners.length > 0 && owners.every((c) => found.has(culpritKey(c)));
    };
    let res;
    try {
      res = await this.o.syncer.applyInPieces(desired, {
        skip,
        onRejected: (r) => {
          // An object already quarantined that still produces a refused piece (an adjuster after
          // ours gave it back?) is no progress: that refusal is reported as unexplained.
          const owners = prov.owners(r.piece, r.line, quarantined).filter((c) => !this.quarantine.has(culpritKey(c)));
          if (owners.length === 0) unexplained.push(r);
          for (const c of owners) if (!found.has(culpritKey(c))) found.set(culpritKey(c), { culprit: c, rejection: r });
        },
      });
    } catch (e) {
      this.o.metrics.piecewiseApplies.inc({ result: 'failed' });
      log.error({ err: errorText(e) }, 'applying piece by piece failed: nothing quarantined; retrying with backoff');
      return false;
    }
    this.o.metrics.piecewiseApplies.inc({ result: res.complete ? 'complete' : 'incomplete' });
    log.warn(
      { applied: res.applied, refused: res.rejected.length, blocked: res.blocked, skipped: res.skipped, withheld: res.withheld, attempts: res.attempts, complete: res.complete },
      'the kernel refused an apply: applied it piece by piece (everything accepted is in force; removals wait for the next sync)',
    );
    for (const r of unexplained) {
      log.error({ piece: describe(r.piece), line: r.line, kernel: r.error.kernelMessage() }, `the kernel refused ${describe(r.piece)}, which no single object explains: not quarantined; retrying with backoff`);
    }
    let added = 0;
    for (const { culprit: c, rejection: r } of found.values()) {
      const reason = `${r.error.step}: ${r.error.kernelMessage()}`;
      const e = this.quarantine.add(c, reason);
      if (!e) continue;
      added++;
      this.o.metrics.kernelRejections.inc({ kind: c.kind });
      log.error(
        { object: c.ref, field: c.field, value: c.value, kernel: reason, line: r.line, retryInS: Math.round((e.retryAt - e.since.getTime()) / 1000) },
        `the kernel refused ${c.ref} ${c.field} ${JSON.stringify(c.value)} (${reason}): quarantined, ${enforcedAs(c.kind)}, until it changes or the retry in ${Math.round((e.retryAt - e.since.getTime()) / 1000)} s`,
      );
    }
    this.gauge();
    return added > 0;
  }

  /** One /readyz reason per quarantined object. */
  reasons(): string[] {
    const now = Date.now();
    return this.quarantine
      .list()
      .map((e) => `quarantined ${e.ref}: the kernel refused ${e.field} ${JSON.stringify(e.value)} (${e.reason}); ${enforcedAs(e.kind)} until it changes or the retry in ${Math.max(0, Math.round((e.retryAt - now) / 1000))} s`);
  }

  report(): QuarantineReport[] {
    return this.quarantine.list().map((e: QuarantineEntry) => ({ object: e.ref, field: e.field, value: e.value, reason: e.reason, since: e.since.toISOString(), retryAt: new Date(e.retryAt).toISOString() }));
  }

  private gauge(): void {
    const n: Record<Culprit['kind'], number> = { Pod: 0, NetworkPolicy: 0, ClusterNetworkPolicy: 0 };
    for (const e of this.quarantine.list()) n[e.kind]++;
    for (const [kind, v] of Object.entries(n)) this.o.metrics.quarantined.set({ kind }, v);
  }
}

function enforcedAs(kind: Culprit['kind']): string {
  switch (kind) {
    case 'Pod':
      return 'enforced fail-closed (in no allow set; if local, isolated: not a programmed address)';
    case 'NetworkPolicy':
      return 'enforced fail-closed (isolates the pods it selects, allows nothing)';
    case 'ClusterNetworkPolicy':
      return 'enforced fail-closed (denies all traffic of each direction it has rules for, for the pods its subject selects)';
  }
}

function describe(p: Piece): string {
  switch (p.kind) {
    case 'set':
      return `set ${p.set}`;
    case 'member':
      return `entry ${JSON.stringify(p.entry)} of set ${p.set}`;
    case 'chain':
      return `chain ${p.chain.name}`;
    case 'append':
      return `a rule appended to ${p.chain}`;
    case 'hooks':
      return 'the jumps from FORWARD and INPUT';
  }
}
