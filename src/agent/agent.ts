// The node agent: source -> model -> compile -> sync, with coalescing, periodic verification,
// retry with backoff, and the readiness it reports.
//
// Compiling follows the model incrementally (IncrementalCompiler) and the Syncer applies its
// delta (`syncDelta`), so an event costs in proportion to the change (DESIGN invariant 5). If
// the incremental compiler throws, it is reset and that sync compiles in full and diffs the
// whole Ruleset against a fresh read of the kernel; the next sync, with no delta to start
// from (the reset compiler rebuilds), reads and diffs in full once more; then the fast path
// resumes. Periodic verification always diffs the whole Ruleset against a fresh read.
//
// Invariants:
// - Nothing is written before the source is synced (DESIGN invariant 6).
// - One sync at a time; changes during a sync cause exactly one more sync after it.
// - A failed apply is retried with exponential backoff, and the retry re-reads the kernel.
// - The kernel is re-read periodically and shortly after each write; drift is repaired.
// - On stop, rules stay in place: pods stay isolated while the agent is away (fail closed).
// - After each successful sync (metrics and status recorded), and on stop, the Syncer's pending
//   garbage collection runs (stale rules, chains and sets deleted): the event-to-kernel time is
//   the sync's; a failed collection makes the Syncer re-read the kernel on its next sync.

import { rename, writeFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { compile } from '../compiler/compile.ts';
import { IncrementalCompiler, type RulesetDelta } from '../compiler/incremental.ts';
import type { Ruleset } from '../compiler/ruleset.ts';
import { isEmpty } from '../sync/plan.ts';
import type { Syncer, SyncResult } from '../sync/syncer.ts';
import { BRIDGE_NF_CALL_IPTABLES, bridgeNfCallIptables } from '../sync/sysctl.ts';
import type { ModelSource } from '../watchers/source.ts';
import { AgentMetrics } from './metrics.ts';

export interface AgentOptions {
  readonly node: string;
  readonly source: ModelSource;
  readonly syncer: Syncer;
  readonly logger: Logger;
  readonly metrics?: AgentMetrics;
  /** Quiet time that ends a burst of changes. */
  readonly coalesceMs?: number;
  /** A burst never delays a sync longer than this. */
  readonly maxDelayMs?: number;
  /** Period of kernel re-reads (drift repair). */
  readonly resyncMs?: number;
  /** A kernel re-read this long after each write. */
  readonly verifyAfterWriteMs?: number;
  readonly backoffMinMs?: number;
  readonly backoffMaxMs?: number;
  /** A JSON file rewritten after every sync: what was applied, for `lab probe` and humans. */
  readonly statusFile?: string;
  /** Where to read bridge-nf-call-iptables (tests point it elsewhere). */
  readonly bridgeNfPath?: string;
}

export interface AgentStatus {
  readonly node: string;
  readonly ready: boolean;
  readonly reasons: readonly string[];
  readonly revision: string;
  readonly generation: number;
  readonly lastSyncAt?: string;
  readonly lastError?: string;
  readonly syncs: number;
}

export class Agent {
  readonly metrics: AgentMetrics;
  private readonly o: Required<Omit<AgentOptions, 'statusFile' | 'metrics'>> & Pick<AgentOptions, 'statusFile'>;
  private timer: NodeJS.Timeout | undefined;
  private burstStart = 0;
  private running: Promise<void> | undefined;
  private pending = false;
  private pendingVerify = false;
  private resyncTimer: NodeJS.Timeout | undefined;
  private verifyTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private stopped = false;
  private applied: { revision: string; generation: number; at: Date } | undefined;
  private lastError: string | undefined;
  private syncCount = 0;
  private bridgeNf: boolean | undefined;
  private readonly waiters: (() => void)[] = [];
  /** Created on the first sync (the source is synced by then); disposed on stop. */
  private compiler: IncrementalCompiler | undefined;
  /** The Ruleset the compiler returned before the last one: where its delta starts. */
  private compiled: Ruleset | undefined;

  constructor(o: AgentOptions) {
    this.metrics = o.metrics ?? new AgentMetrics();
    this.metrics.followSource(o.source);
    this.o = {
      coalesceMs: 20,
      maxDelayMs: 250,
      resyncMs: 10_000,
      verifyAfterWriteMs: 1_000,
      backoffMinMs: 500,
      backoffMaxMs: 30_000,
      bridgeNfPath: BRIDGE_NF_CALL_IPTABLES,
      ...o,
    };
  }

  async start(): Promise<void> {
    const log = this.o.logger;
    this.o.source.onChange(() => this.changed());
    log.info({ node: this.o.node }, 'starting: waiting for the initial content of the source before any write');
    await this.o.source.start();
    if (this.stopped) return; // stopped while waiting for the source: nothing to do
    this.bridgeNf = await bridgeNfCallIptables(this.o.bridgeNfPath);
    if (!this.bridgeNf) log.error({ path: this.o.bridgeNfPath }, 'net.bridge.bridge-nf-call-iptables is not 1: same-node pod traffic bypasses iptables; reporting not ready');
    const backend = await this.o.syncer.backend();
    log.info({ backend: backend.name, reason: backend.reason }, 'iptables backend');
    await this.syncNow('initial');
    this.resyncTimer = setInterval(() => this.verifySoon(), this.o.resyncMs);
    this.resyncTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of [this.timer, this.verifyTimer, this.retryTimer]) clearTimeout(t);
    clearInterval(this.resyncTimer);
    await this.running;
    await this.collectGarbage();
    this.compiler?.dispose();
    this.compiler = undefined;
    this.compiled = undefined;
    await this.o.source.stop();
  }

  /** The source changed: sync after the burst settles (or maxDelay after it began). */
  private changed(): void {
    if (this.stopped) return;
    const now = Date.now();
    if (!this.timer) this.burstStart = now;
    clearTimeout(this.timer);
    const wait = Math.max(0, Math.min(this.o.coalesceMs, this.burstStart + this.o.maxDelayMs - now));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.syncNow('event');
    }, wait);
  }

  private verifySoon(): void {
    if (this.stopped) return;
    this.pendingVerify = true;
    void this.syncNow('verify');
  }

  /** Run a sync now, or once more after the running one. */
  syncNow(kind: 'initial' | 'event' | 'verify' | 'retry'): Promise<void> {
    if (this.running) {
      this.pending = true;
      if (kind === 'verify') this.pendingVerify = true;
      return this.running;
    }
    this.running = this.runSync(kind).finally(() => {
      this.running = undefined;
      if (this.pending && !this.stopped) {
        this.pending = false;
        void this.syncNow(this.pendingVerify ? 'verify' : 'event');
      }
    });
    return this.running;
  }

  private async runSync(kind: 'initial' | 'event' | 'verify' | 'retry'): Promise<void> {
    const log = this.o.logger;
    const src = this.o.source;
    if (this.stopped) return;
    if (!src.status().synced) {
      log.warn('source not synced yet: nothing is written');
      return;
    }
    const verify = kind === 'verify' || this.pendingVerify;
    this.pendingVerify = false;
    const generation = src.model.generation;
    const revision = src.revision();
    const t0 = performance.now();
    let desired: Ruleset;
    let res: SyncResult;
    try {
      const c = this.compileIncremental();
      desired = c.desired;
      if (verify || !c.delta) res = await this.o.syncer.verify(desired);
      else res = await this.o.syncer.syncDelta(desired, c.delta.delta, c.delta.from);
    } catch (e) {
      this.failures++;
      this.lastError = e instanceof Error ? e.message : String(e);
      this.metrics.failures.inc();
      this.metrics.syncs.inc({ result: 'error', kind });
      const delay = Math.min(this.o.backoffMaxMs, this.o.backoffMinMs * 2 ** (this.failures - 1));
      log.error({ err: this.lastError, attempt: this.failures, retryInMs: delay }, 'sync failed; previous rules stay in place; retrying with a full resync');
      await this.writeStatus();
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => void this.syncNow('retry'), delay);
      this.retryTimer.unref();
      return;
    }
    const seconds = (performance.now() - t0) / 1000;
    this.failures = 0;
    this.lastError = undefined;
    this.syncCount++;
    this.metrics.duration.observe(seconds);
    this.metrics.syncs.inc({ result: res.wrote ? 'applied' : 'noop', kind });
    this.metrics.plans.inc({ from: res.planFrom });
    this.metrics.rulesWritten.inc(res.counts.rules);
    this.metrics.setEntriesWritten.inc(res.counts.setEntries);
    this.metrics.generation.set(generation);
    this.metrics.invalidPolicies.set(src.invalidPolicies());
    this.metrics.sourceHealthy.set(src.status().healthy ? 1 : 0);
    this.metrics.chains.set(desired.chains.length);
    this.metrics.setEntries.set(desired.sets.reduce((n, s) => n + s.members.length, 0));
    if (verify && !isEmpty(res.plan) && kind !== 'initial') {
      this.metrics.driftRepairs.inc();
      log.warn({ chains: res.plan.writeChains.map((c) => c.name), hooks: res.plan.insertHooks.map((h) => h.chain), sets: res.plan.createSets.length + res.plan.addMembers.length + res.plan.delMembers.length }, 'kernel drifted from what we wrote: repaired');
    }
    if (res.wrote) {
      log.info({ kind, generation, revision, ms: Math.round(seconds * 1000), rules: res.counts.rules, setEntries: res.counts.setEntries, chains: res.plan.writeChains.length }, 'applied');
      clearTimeout(this.verifyTimer);
      this.verifyTimer = setTimeout(() => this.verifySoon(), this.o.verifyAfterWriteMs);
      this.verifyTimer.unref();
    }
    this.applied = { revision, generation, at: new Date() };
    await this.writeStatus();
    for (const w of this.waiters.splice(0)) w();
    await this.collectGarbage();
  }

  /** The Syncer's pending garbage collection; a failure is logged (the Syncer re-reads next time). */
  private async collectGarbage(): Promise<void> {
    try {
      await this.o.syncer.collectGarbage();
    } catch (e) {
      this.metrics.failures.inc();
      this.o.logger.error({ err: e instanceof Error ? e.message : String(e) }, 'garbage collection failed (stale rules, chains or sets of ours left in place); the next sync re-reads the kernel');
      if (!this.stopped) {
        clearTimeout(this.verifyTimer);
        this.verifyTimer = setTimeout(() => this.verifySoon(), this.o.verifyAfterWriteMs);
        this.verifyTimer.unref();
      }
    }
  }

  /**
   * The desired Ruleset, and the delta from the previous one when the incremental compiler
   * produced it. On an exception from the compiler: reset it and compile in full (no delta).
   */
  private compileIncremental(): { desired: Ruleset; delta?: { delta: RulesetDelta; from: Ruleset } } {
    const model = this.o.source.model;
    this.compiler ??= new IncrementalCompiler(model, this.o.node);
    const from = this.compiled;
    try {
      const desired = this.compiler.ruleset();
      const delta = this.compiler.delta();
      this.compiled = desired;
      return { desired, ...(from ? { delta: { delta, from } } : {}) };
    } catch (e) {
      this.compiled = undefined;
      this.compiler.reset();
      this.metrics.compilerResets.inc();
      this.o.logger.error({ err: e instanceof Error ? e.message : String(e) }, 'incremental compiler failed: reset; compiling in full and diffing against the kernel');
      return { desired: compile(model, this.o.node) };
    }
  }

  status(): AgentStatus {
    const reasons: string[] = [];
    const s = this.o.source.status();
    if (!s.synced) reasons.push('source not synced yet');
    if (!s.healthy) reasons.push(`source unhealthy, enforcing the last known state: ${s.detail}`);
    if (!this.applied) reasons.push('nothing applied yet');
    if (this.lastError) reasons.push(`last sync failed: ${this.lastError}`);
    if (this.bridgeNf === false) reasons.push('net.bridge.bridge-nf-call-iptables is not 1');
    return {
      node: this.o.node,
      ready: reasons.length === 0,
      reasons,
      revision: this.applied?.revision ?? '',
      generation: this.applied?.generation ?? -1,
      ...(this.applied ? { lastSyncAt: this.applied.at.toISOString() } : {}),
      ...(this.lastError ? { lastError: this.lastError } : {}),
      syncs: this.syncCount,
    };
  }

  /** Resolves after the next successful sync (tests, lab). */
  nextSync(): Promise<void> {
    return new Promise((r) => this.waiters.push(r));
  }

  /**
   * Resolves true once a successful sync has applied model generation `generation` or a later
   * one (what the CNI server waits for before it says a pod is enforced), false after
   * `timeoutMs` or when the agent stops. Asks for a sync at once (no coalescing delay) while the
   * applied generation is behind.
   */
  async waitApplied(generation: number, timeoutMs: number): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    while ((this.applied?.generation ?? -1) < generation) {
      const left = end - Date.now();
      if (this.stopped || left <= 0) return false;
      const next = this.nextSync();
      if (this.o.source.status().synced) void this.syncNow('event');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([next, new Promise<void>((r) => (timer = setTimeout(r, Math.min(left, 1_000))))]);
      clearTimeout(timer);
    }
    return true;
  }

  private async writeStatus(): Promise<void> {
    if (!this.o.statusFile) return;
    const tmp = `${this.o.statusFile}.tmp`;
    try {
      await writeFile(tmp, JSON.stringify(this.status(), null, 2) + '\n');
      await rename(tmp, this.o.statusFile);
    } catch (e) {
      this.o.logger.warn({ err: e, file: this.o.statusFile }, 'cannot write the status file');
    }
  }
}
