// The node agent: source -> model -> compile -> sync, with coalescing, periodic verification,
// retry with backoff, and the readiness it reports.
//
// Compiling follows the model incrementally (IncrementalCompiler) and the Syncer applies its
// delta (`syncDelta`), so an event costs in proportion to the change (docs/design.md, invariant cost-proportional). If
// the incremental compiler throws, it is reset and that sync compiles in full and diffs the
// whole Ruleset against a fresh read of the kernel; the next sync, with no delta to start
// from (the reset compiler rebuilds), reads and diffs in full once more; then the fast path
// resumes. Periodic verification always diffs the whole Ruleset against a fresh read.
//
// Invariants:
// - Nothing is written before the source is synced (docs/design.md, invariant synced-before-write).
// - One sync at a time; changes during a sync cause exactly one more sync after it.
// - A failed apply is retried with exponential backoff, and the retry re-reads the kernel.
// - An apply the kernel refuses is contained first (src/agent/containment.ts): applied piece by
//   piece (never less isolated than before), the objects behind the refused pieces quarantined
//   fail-closed in the model, then compiled and applied again without them. Only what cannot be
//   contained (a transient failure, a refusal no object explains) is retried with backoff.
// - The kernel is re-read periodically and shortly after each write; drift is repaired.
// - On stop, rules stay in place: pods stay isolated while the agent is away (fail closed).
// - After each successful sync (metrics and status recorded), and on stop, the Syncer's pending
//   garbage collection runs (stale rules, chains and sets deleted): the event-to-kernel time is
//   the sync's; a failed collection makes the Syncer re-read the kernel on its next sync.

import { rename, writeFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { compile, type CompileOptions } from '../compiler/compile.ts';
import { IncrementalCompiler, type RulesetDelta } from '../compiler/incremental.ts';
import type { Ruleset } from '../compiler/ruleset.ts';
import { Containment, type QuarantineReport } from './containment.ts';
import { isEmpty } from '../sync/plan.ts';
import type { Syncer, SyncResult } from '../sync/syncer.ts';
import { BRIDGE_NF_CALL_IPTABLES, bridgeNfCallIptables, enableBridgeNfCallIptables } from '../sync/sysctl.ts';
import { ReleasedAddresses, deleteOrphanFlows, revokeDenied } from './flows.ts';
import type { ModelSource } from '../watchers/source.ts';
import { AgentMetrics } from './metrics.ts';
import { detectProxyMode } from '../sync/proxy-mode.ts';
import type { PortRange, ProxyMode } from '../compiler/ruleset.ts';
import { errorText } from '../util/error-text.ts';
import type { IdleWork } from './idle-gc.ts';

export interface AgentOptions {
  readonly node: string;
  readonly source: ModelSource;
  readonly syncer: Syncer;
  readonly logger: Logger;
  readonly metrics?: AgentMetrics;
  /**
   * Told when the agent is busy (a change arrived, a sync runs) and idle again (idle-gc.ts: the
   * CLI's agent collects V8's young generation then, off the next event's path).
   */
  readonly idleWork?: IdleWork;
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
  /** First retry of an object the kernel refused (quarantined fail-closed); doubles with each refusal, up to 30 min. */
  readonly quarantineRetryMs?: number;
  /** A JSON file rewritten after every sync: what was applied, for `lab probe` and humans. */
  readonly statusFile?: string;
  /** Where to read bridge-nf-call-iptables (tests point it elsewhere). */
  readonly bridgeNfPath?: string;
  /** Set bridge-nf-call-iptables back to 1 when it is found at 0 (`--set-bridge-nf`). */
  readonly setBridgeNf?: boolean;
  /** Pod CIDRs of this node besides its Node object's (`--pod-cidr`): their unprogrammed addresses get nothing. */
  readonly podCidrs?: readonly string[];
  /** End established connections that a change denies (`--revoke-established`). */
  readonly revokeEstablished?: boolean;
  /** Admin chains shared by the pods under the same Admin policies (`--shared-admin-chains`, tiers.ts). */
  readonly sharedAdminChains?: boolean;
  /**
   * The verdict cache (layout.ts VERDICT_CACHE_SET): `policyctl agent` turns it on unless
   * `--no-verdict-cache`; off when absent here.
   */
  readonly verdictCache?: boolean;
  /**
   * kube-proxy's mode (`--service-proxy`): `auto` detects it (src/sync/proxy-mode.ts) at start
   * and again at each periodic verification; default iptables, without detecting (the layout of
   * every mode but IPVS).
   */
  readonly serviceProxy?: ProxyMode | 'auto';
  /** Under IPVS: the Service ClusterIP ranges (`--service-cidr`), which pass PCTL-INPUT to be judged in PCTL-OUTPUT. */
  readonly serviceCidrs?: readonly string[];
  /** Under IPVS: the node port range (`--node-port-range`, default 30000-32767). */
  readonly nodePorts?: PortRange;
  /** Not ready when the last good sync is older than this (default: 3 resync intervals plus 5 s). */
  readonly staleAfterMs?: number;
}

export interface AgentStatus {
  readonly node: string;
  readonly ready: boolean;
  /** Why it is not ready, then what it reports without being unready (objects quarantined fail-closed). */
  readonly reasons: readonly string[];
  readonly revision: string;
  readonly generation: number;
  readonly lastSyncAt?: string;
  readonly lastError?: string;
  /** Objects the kernel refused, enforced fail-closed (each also a reason). */
  readonly quarantined?: readonly QuarantineReport[];
  readonly syncs: number;
  /** When this status was computed: a status file that stops being rewritten is stale. */
  readonly updatedAt: string;
  /** The agent's resync interval: its status is rewritten at least this often while it runs. */
  readonly resyncMs: number;
  /** kube-proxy's mode the node is programmed for, and how it was chosen (`--service-proxy`). */
  readonly serviceProxy: { readonly mode: ProxyMode; readonly how: 'flag' | 'detected' | 'assumed' };
}

/**
 * Containment rounds per sync: each quarantines at least one new object, so a few suffice for a
 * few bad objects (one round finds every refused piece it can); more means something no object
 * explains, and the sync fails and is retried with backoff (the quarantine stays).
 */
const CONTAINMENT_ROUNDS = 4;

/** What decides how an agent lays out its node (AgentOptions, and kube-proxy's mode in use). */
export interface AgentLayout {
  readonly podCidrs?: readonly string[];
  readonly sharedAdminChains?: boolean;
  readonly revokeEstablished?: boolean;
  readonly verdictCache?: boolean;
  readonly proxyMode: ProxyMode;
  readonly serviceCidrs?: readonly string[];
  readonly nodePorts?: PortRange;
}

/**
 * The compile options of an agent with these settings: one place for the agent, its `--dry-run`
 * and `policyctl compile`, so that what they print is what the agent programs.
 */
export function agentCompileOptions(l: AgentLayout): CompileOptions {
  return {
    ...(l.podCidrs && { podCidrs: l.podCidrs }),
    ...(l.sharedAdminChains && { tiers: { continuation: { Admin: 'dispatch' } } }),
    // A connection whose entry endFlows deletes must not be taken up again mid-stream
    // (layout.ts MIDSTREAM_CHAIN).
    ...(l.revokeEstablished && { dropMidstream: true }),
    ...(l.verdictCache && { verdictCache: true }),
    // Only IPVS changes the layout; the other modes compile exactly as without the option.
    ...(l.proxyMode === 'ipvs' && { proxy: { mode: 'ipvs', serviceCidrs: l.serviceCidrs ?? [], ...(l.nodePorts && { nodePorts: l.nodePorts }) } }),
  };
}

export class Agent {
  readonly metrics: AgentMetrics;
  private readonly o: Required<Omit<AgentOptions, 'statusFile' | 'metrics' | 'staleAfterMs' | 'nodePorts' | 'idleWork'>> & Pick<AgentOptions, 'statusFile' | 'nodePorts' | 'idleWork'> & { staleAfterMs: number };
  /** The service proxy the node is programmed for, and how it was chosen. */
  private proxy: { mode: ProxyMode; how: 'flag' | 'detected' | 'assumed' };
  /** IPVS kept although its traces went (checkServiceProxy), said once. */
  private keptIpvs = false;
  /** The service proxy has been logged and put in the gauge once. */
  private reportedProxy = false;
  /** Addresses that left the model: their conntrack entries go once the sync removing them is in force. */
  private released: ReleasedAddresses | undefined;
  /**
   * With `revokeEstablished`: a sync wrote and the tracked connections have not been judged
   * again since (the judging failed): the next sync does it even if it writes nothing.
   */
  private revokeOwed = false;
  /** Name collisions already logged. */
  private collisions = new Set<string>();
  /** Address conflicts already logged (`address|uids`). */
  private conflicts = new Set<string>();
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
  /** Objects the kernel refuses: found by a piecewise apply, quarantined fail-closed in the model. */
  private readonly containment: Containment;

  constructor(o: AgentOptions) {
    this.metrics = o.metrics ?? new AgentMetrics();
    this.metrics.followSource(o.source);
    this.o = {
      quarantineRetryMs: 60_000,
      coalesceMs: 20,
      maxDelayMs: 250,
      resyncMs: 10_000,
      verifyAfterWriteMs: 1_000,
      backoffMinMs: 500,
      backoffMaxMs: 30_000,
      bridgeNfPath: BRIDGE_NF_CALL_IPTABLES,
      setBridgeNf: false,
      podCidrs: [],
      revokeEstablished: false,
      sharedAdminChains: false,
      verdictCache: false,
      serviceProxy: 'iptables',
      serviceCidrs: [],
      ...o,
      staleAfterMs: o.staleAfterMs ?? 3 * (o.resyncMs ?? 10_000) + 5_000,
    };
    this.proxy = this.o.serviceProxy === 'auto' ? { mode: 'iptables', how: 'assumed' } : { mode: this.o.serviceProxy, how: 'flag' };
    this.containment = new Containment({ model: o.source.model, node: o.node, syncer: o.syncer, logger: o.logger, metrics: this.metrics, retryMs: this.o.quarantineRetryMs, compileOptions: () => this.compileOptions() });
  }

  /** What the node's Rulesets are compiled with. */
  private compileOptions(): CompileOptions {
    return agentCompileOptions({ ...this.o, proxyMode: this.proxy.mode });
  }

  /**
   * With `--service-proxy auto`: read kube-proxy's traces; a new mode is logged, shown in the
   * `policyctl_service_proxy` gauge, and the compiler starts over for it (the next sync diffs the
   * whole Ruleset against the kernel: the OUTPUT hook comes or goes). A mode given by flag is
   * only reported.
   */
  private async checkServiceProxy(): Promise<void> {
    const before = this.proxy;
    if (this.o.serviceProxy === 'auto') {
      const d = await detectProxyMode(this.o.syncer.runner);
      // No trace at all after IPVS was seen (a failed read, kube-proxy restarting) keeps IPVS:
      // leaving it would take the OUTPUT hook away, and IPVS-forwarded Service traffic would
      // reach backends unjudged (invariant fail-closed). Another mode is taken on its own trace.
      if (!d.mode && before.mode === 'ipvs' && before.how === 'detected') {
        if (!this.keptIpvs) this.o.logger.warn({}, 'service proxy: kube-proxy\'s IPVS traces are gone but no other mode shows; keeping the IPVS layout until one does');
        this.keptIpvs = true;
        return;
      }
      this.keptIpvs = false;
      this.proxy = d.mode ? { mode: d.mode, how: 'detected' } : { mode: 'iptables', how: 'assumed' };
      if (this.reportedProxy && before.mode === this.proxy.mode && before.how === this.proxy.how) return;
      this.o.logger.info({ mode: this.proxy.mode, how: this.proxy.how, evidence: d.evidence }, d.mode ? `service proxy: kube-proxy in ${d.mode} mode` : 'service proxy: no trace of kube-proxy on this node; assuming iptables mode (detected again at each verification)');
    } else if (!this.reportedProxy) {
      this.o.logger.info({ mode: this.proxy.mode, how: this.proxy.how }, `service proxy: ${this.proxy.mode} mode (--service-proxy)`);
    } else return;
    this.reportedProxy = true;
    if (this.proxy.mode === 'ipvs' && this.o.serviceCidrs.length === 0) {
      this.o.logger.warn({}, 'IPVS mode without --service-cidr: a pod\'s packets to Service VIPs are judged at INPUT against the VIP, so pods with egress policies cannot reach Services by ClusterIP (node ports still work)');
    }
    this.metrics.serviceProxy.reset();
    this.metrics.serviceProxy.set({ mode: this.proxy.mode, how: this.proxy.how }, 1);
    if (before.mode !== this.proxy.mode && this.compiler) {
      this.compiler.dispose();
      this.compiler = undefined;
      this.compiled = undefined;
    }
  }

  async start(): Promise<void> {
    const log = this.o.logger;
    // The quarantine's adjuster is added here, after those added since the agent was made (the
    // CNI overlay), so it runs last: a quarantined record stays fail-closed whatever they give it.
    this.containment.attach();
    this.o.source.onChange(() => this.changed());
    this.released = new ReleasedAddresses(this.o.source.model);
    log.info({ node: this.o.node, podCidrs: this.o.podCidrs, revokeEstablished: this.o.revokeEstablished }, 'starting: waiting for the initial content of the source before any write');
    await this.o.source.start();
    if (this.stopped) return; // stopped while waiting for the source: nothing to do
    await this.checkBridgeNf();
    await this.checkServiceProxy();
    const backend = await this.o.syncer.backend();
    log.info({ backend: backend.name, reason: backend.reason }, 'iptables backend');
    await this.syncNow('initial');
    await this.sweepOrphanFlows();
    this.resyncTimer = setInterval(() => this.verifySoon(), this.o.resyncMs);
    this.resyncTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.o.idleWork?.busy();
    for (const t of [this.timer, this.verifyTimer, this.retryTimer]) clearTimeout(t);
    clearInterval(this.resyncTimer);
    await this.running;
    await this.collectGarbage();
    this.released?.dispose();
    this.compiler?.dispose();
    this.compiler = undefined;
    this.compiled = undefined;
    this.containment.dispose();
    await this.o.source.stop();
  }

  /** The source changed: sync after the burst settles (or maxDelay after it began). */
  private changed(): void {
    if (this.stopped) return;
    this.o.idleWork?.busy();
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
    this.o.idleWork?.busy();
    // Whatever a sync throws outside its apply (a bug, a status file that cannot be written) is a
    // failed sync like any other, never a rejection nobody handles: that would end the agent.
    this.running = this.runSync(kind)
      .catch((e: unknown) => this.syncFailed(e, kind).catch(() => {}))
      .finally(() => {
        this.running = undefined;
        if (this.pending && !this.stopped) {
          this.pending = false;
          void this.syncNow(this.pendingVerify ? 'verify' : 'event');
        } else if (!this.stopped && !this.timer) {
          this.o.idleWork?.idle();
        }
      });
    return this.running;
  }

  /** A sync that failed: counted, logged, reported, retried with backoff (a full resync). */
  private async syncFailed(e: unknown, kind: 'initial' | 'event' | 'verify' | 'retry'): Promise<void> {
    this.failures++;
    this.lastError = errorText(e);
    this.metrics.failures.inc();
    this.metrics.syncs.inc({ result: 'error', kind });
    const delay = Math.min(this.o.backoffMaxMs, this.o.backoffMinMs * 2 ** (this.failures - 1));
    this.o.logger.error({ err: this.lastError, attempt: this.failures, retryInMs: delay }, 'sync failed; previous rules stay in place; retrying with a full resync');
    await this.writeStatus();
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.syncNow('retry'), delay);
    this.retryTimer.unref();
  }

  private async runSync(requested: 'initial' | 'event' | 'verify' | 'retry'): Promise<void> {
    const log = this.o.logger;
    const src = this.o.source;
    if (this.stopped) return;
    // Until one sync has applied, any event sync is the initial one: a change seen while start()
    // was still reading the kernel (or an early CNI ADD) may run it before start() asks for it.
    const kind = requested === 'event' && !this.applied ? 'initial' : requested;
    if (!src.status().synced) {
      log.warn('source not synced yet: nothing is written');
      return;
    }
    const verify = kind === 'verify' || this.pendingVerify;
    this.pendingVerify = false;
    await this.checkBridgeNf();
    // Not on every event: a verification is periodic, and kube-proxy changes mode by a restart.
    if (verify && this.o.serviceProxy === 'auto') await this.checkServiceProxy();
    const generation = src.model.generation;
    const revision = src.revision();
    const t0 = performance.now();
    let desired: Ruleset;
    let res: SyncResult;
    try {
      ({ desired, res } = await this.syncContained(verify));
    } catch (e) {
      // What failed may have landed in part, or whole (a flush of the verdict cache that failed
      // after every step): the retry may find nothing left to write, yet the connections the
      // change denies must still be judged (--revoke-established).
      if (this.o.revokeEstablished) this.revokeOwed = true;
      await this.syncFailed(e, kind);
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
    // Drift is measured against the Ruleset last applied, not against the plan: a verification
    // that runs right after a model change also applies that change, which is not drift.
    const drift = res.drift;
    if (verify && drift && !isEmpty(drift) && kind !== 'initial') {
      this.metrics.driftRepairs.inc();
      log.warn(
        {
          chains: drift.writeChains.map((c) => c.name),
          hooks: drift.insertHooks.map((h) => h.chain),
          sets: drift.createSets.length + drift.addMembers.length + drift.delMembers.length,
          entries: [...drift.addMembers, ...drift.delMembers].slice(0, 5).map((m) => `${m.set} ${m.entry}`),
        },
        'kernel drifted from what we wrote: repaired',
      );
    }
    if (res.wrote) {
      log.info({ kind, generation, revision, ms: Math.round(seconds * 1000), rules: res.counts.rules, setEntries: res.counts.setEntries, chains: res.plan.writeChains.length }, 'applied');
      clearTimeout(this.verifyTimer);
      this.verifyTimer = setTimeout(() => this.verifySoon(), this.o.verifyAfterWriteMs);
      this.verifyTimer.unref();
    }
    this.reportConflicts();
    this.reportCollisions(desired);
    await this.endFlows(res.wrote);
    this.applied = { revision, generation, at: new Date() };
    await this.writeStatus();
    for (const w of this.waiters.splice(0)) w();
    await this.collectGarbage();
  }

  /**
   * A chain name that stood for two contents (invariant own-only-ours: the guard sent their pods
   * to a drop-all chain, so they are isolated and allow nothing): logged once per collision, and
   * the gauge says how many there are now.
   */
  private reportCollisions(rs: Ruleset): void {
    const now = new Set((rs.collisions ?? []).map((c) => `${c.direction}|${c.name}|${c.chain}`));
    for (const c of rs.collisions ?? []) {
      if (this.collisions.has(`${c.direction}|${c.name}|${c.chain}`)) continue;
      this.o.logger.error({ direction: c.direction, name: c.name, chain: c.chain }, 'two different chain contents got one hashed name: their pods are isolated by a drop-all chain until it changes');
    }
    this.collisions = now;
    this.metrics.nameCollisions.set(now.size);
  }

  /**
   * Log each address two pods claim once when it appears and once when it is resolved (the
   * model keeps such an address out of every set and of the programmed addresses meanwhile).
   */
  private reportConflicts(): void {
    const model = this.o.source.model;
    const now = model.addressConflicts();
    const ref = (uid: string) => {
      const p = model.getPod(uid);
      return p ? `pod/${p.namespace}/${p.name}` : uid;
    };
    for (const [ip, uids] of now) {
      const key = `${ip}|${uids.join(',')}`;
      if (this.conflicts.has(key)) continue;
      this.o.logger.error({ address: ip, pods: uids.map(ref) }, 'one address claimed by several pods: it is in no allow set and gets no connection until one of them goes (fail closed)');
    }
    const keys = new Set([...now].map(([ip, uids]) => `${ip}|${uids.join(',')}`));
    for (const key of this.conflicts) if (!keys.has(key)) this.o.logger.info({ address: key.split('|')[0] }, 'address conflict resolved');
    this.conflicts = keys;
    this.metrics.addressConflicts.set(now.size);
  }

  /**
   * Read bridge-nf-call-iptables again (every sync: someone may turn it off at any time, and back
   * on): without it same-node pod traffic bypasses iptables, so the agent reports not ready.
   * With `setBridgeNf`, a 0 is set back to 1 (logged).
   */
  private async checkBridgeNf(): Promise<void> {
    const log = this.o.logger;
    const path = this.o.bridgeNfPath;
    let on = await bridgeNfCallIptables(path);
    if (!on && this.o.setBridgeNf && !this.o.syncer.dryRun) {
      try {
        await enableBridgeNfCallIptables(path);
        on = await bridgeNfCallIptables(path);
        if (on) log.warn({ path }, 'net.bridge.bridge-nf-call-iptables was 0: set it back to 1 (same-node pod traffic is policed again)');
      } catch (e) {
        log.error({ err: errorText(e) }, 'net.bridge.bridge-nf-call-iptables is 0 and could not be set back to 1');
      }
    }
    if (on !== this.bridgeNf) {
      if (!on) log.error({ path }, 'net.bridge.bridge-nf-call-iptables is not 1: same-node pod traffic bypasses iptables; reporting not ready');
      else if (this.bridgeNf === false) log.info({ path }, 'net.bridge.bridge-nf-call-iptables is 1 again: ready as far as it is concerned');
    }
    this.bridgeNf = on;
    this.metrics.bridgeNf.set(on ? 1 : 0);
  }

  /**
   * Once, after the first sync: conntrack entries of pod-CIDR addresses no pod holds (released
   * while the agent was away) are deleted, so a pod that gets such an address inherits nothing.
   * A failure is logged and counted; the next start tries again.
   */
  private async sweepOrphanFlows(): Promise<void> {
    if (this.o.syncer.dryRun || !this.applied || this.stopped) return;
    try {
      const gone = await deleteOrphanFlows(this.o.source.model, this.o.syncer.runner);
      if (gone.length > 0) {
        this.metrics.conntrackDeleted.inc({ reason: 'address-released' }, gone.length);
        this.o.logger.info({ count: gone.length }, 'connections of pod addresses no pod holds (released while the agent was away) deleted from conntrack');
      }
    } catch (e) {
      this.metrics.failures.inc();
      this.o.logger.error({ err: errorText(e) }, 'deleting conntrack entries of released addresses failed');
    }
  }

  /**
   * After an apply is in force: delete the conntrack entries of addresses that left the model,
   * and with `revokeEstablished`, those of connections the change now denies. A failure is
   * logged and counted; the addresses stay pending, and the judging stays owed (revokeOwed),
   * both retried after the next sync.
   */
  private async endFlows(wrote: boolean): Promise<void> {
    if (this.o.syncer.dryRun) return;
    const log = this.o.logger;
    const runner = this.o.syncer.runner;
    try {
      const r = (await this.released?.flush(runner)) ?? { addresses: [], entries: 0 };
      if (r.addresses.length > 0) {
        this.metrics.conntrackDeleted.inc({ reason: 'address-released' }, r.entries);
        log.info({ addresses: r.addresses, entries: r.entries }, 'connections of addresses that left the cluster deleted from conntrack');
      }
    } catch (e) {
      this.metrics.failures.inc();
      log.error({ err: errorText(e), pending: this.released?.size() }, 'deleting conntrack entries of released addresses failed; retrying after the next sync');
    }
    // Apart from the released addresses: one failing never keeps the other from running.
    if (!this.o.revokeEstablished || !(wrote || this.revokeOwed)) return;
    this.revokeOwed = true;
    try {
      const { denied, holdError } = await revokeDenied(this.o.source.model, this.o.node, runner);
      if (holdError !== undefined) {
        this.metrics.failures.inc();
        log.error({ err: holdError }, 'answers of revoked UDP flows could not be held back: an answer on its way may take such a flow up again');
      }
      if (denied.length > 0) {
        this.metrics.conntrackDeleted.inc({ reason: 'revoked' }, denied.length);
        log.info({ flows: denied.slice(0, 20).map((f) => `${f.protocol} ${f.src}:${f.sport ?? ''} -> ${f.dst}:${f.dport ?? ''}`), count: denied.length }, 'established connections now denied by policy: ended');
      }
      this.revokeOwed = false;
    } catch (e) {
      this.metrics.failures.inc();
      log.error({ err: errorText(e) }, 'judging established connections again failed (--revoke-established); retrying after the next sync, even one that writes nothing');
    }
  }

  /**
   * Compile and apply. When the kernel refuses the apply, contain it: apply piece by piece,
   * quarantine the objects behind the refused pieces (fail-closed in the model), then compile and
   * apply again without them, a few rounds at most (each round must quarantine something new).
   * Throws what the last apply threw when nothing more can be contained.
   */
  private async syncContained(verify: boolean): Promise<{ desired: Ruleset; res: SyncResult }> {
    this.containment.review();
    for (let round = 1; ; round++) {
      const c = this.compileIncremental();
      try {
        const res = verify || !c.delta ? await this.o.syncer.verify(c.desired) : await this.o.syncer.syncDelta(c.desired, c.delta.delta, c.delta.from);
        return { desired: c.desired, res };
      } catch (e) {
        if (round >= CONTAINMENT_ROUNDS || !(await this.containment.contain(c.desired, e))) throw e;
      }
    }
  }

  /** The Syncer's pending garbage collection; a failure is logged (the Syncer re-reads next time). */
  private async collectGarbage(): Promise<void> {
    try {
      await this.o.syncer.collectGarbage();
    } catch (e) {
      this.metrics.failures.inc();
      this.o.logger.error({ err: errorText(e) }, 'garbage collection failed (stale rules, chains or sets of ours left in place); the next sync re-reads the kernel');
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
    this.compiler ??= new IncrementalCompiler(model, this.o.node, this.compileOptions());
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
      this.o.logger.error({ err: errorText(e) }, 'incremental compiler failed: reset; compiling in full and diffing against the kernel');
      return { desired: compile(model, this.o.node, this.compileOptions()) };
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
    if (this.applied && !this.stopped) {
      const age = Date.now() - this.applied.at.getTime();
      if (age > this.o.staleAfterMs) reasons.push(`last good sync ${Math.round(age / 1000)} s ago (more than ${Math.round(this.o.staleAfterMs / 1000)} s): the kernel may no longer follow the cluster`);
    }
    // A quarantined object is reported (a reason on /readyz) without making the node unready:
    // everything else is enforced and the object itself fails closed, and one tenant's object
    // must not be able to take every node's agent out of service.
    // So is what the source cannot read on this cluster (ClusterNetworkPolicies without their
    // CRD: none exist to enforce, and the node is as isolated as the cluster asks).
    const warnings = [...(s.notes ?? []), ...this.containment.reasons()];
    return {
      node: this.o.node,
      ready: reasons.length === 0,
      reasons: [...reasons, ...warnings],
      revision: this.applied?.revision ?? '',
      generation: this.applied?.generation ?? -1,
      ...(this.applied ? { lastSyncAt: this.applied.at.toISOString() } : {}),
      ...(this.lastError ? { lastError: this.lastError } : {}),
      ...(this.containment.quarantine.list().length > 0 ? { quarantined: this.containment.report() } : {}),
      syncs: this.syncCount,
      updatedAt: new Date().toISOString(),
      resyncMs: this.o.resyncMs,
      serviceProxy: { ...this.proxy },
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
