// The agent's Prometheus metrics, in a registry of its own (several agents can share a process
// in tests).

import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ModelSource, SourceStats } from '../watchers/source.ts';

export class AgentMetrics {
  readonly registry = new Registry();
  /** The source whose state the `policyctl_source_*` metrics (and the two gauges below) read at scrape time. */
  private source: ModelSource | undefined;
  private statsCache: { at: number; stats: SourceStats | undefined } | undefined;
  readonly syncs = new Counter({ name: 'policyctl_syncs_total', help: 'Syncs by result: applied, noop (nothing differed), error.', labelNames: ['result', 'kind'], registers: [this.registry] });
  readonly failures = new Counter({ name: 'policyctl_sync_failures_total', help: 'Syncs that failed to apply (each forces a full resync with backoff).', registers: [this.registry] });
  readonly duration = new Histogram({
    name: 'policyctl_sync_duration_seconds',
    help: 'Time from compile start to the kernel write returning.',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly rulesWritten = new Counter({ name: 'policyctl_rules_written_total', help: 'iptables rules written (appended or inserted).', registers: [this.registry] });
  readonly setEntriesWritten = new Counter({ name: 'policyctl_set_entries_written_total', help: 'ipset entries added or deleted.', registers: [this.registry] });
  readonly plans = new Counter({
    name: 'policyctl_sync_plans_total',
    help: "Where each sync's plan came from: delta (the incremental compiler's delta, the fast path), known (a diff against what we last wrote), kernel (a diff against a fresh read of the kernel).",
    labelNames: ['from'],
    registers: [this.registry],
  });
  readonly compilerResets = new Counter({ name: 'policyctl_compiler_resets_total', help: 'Exceptions from the incremental compiler (each resets it and falls back to a full compile and a kernel read).', registers: [this.registry] });
  readonly driftRepairs = new Counter({ name: 'policyctl_drift_repairs_total', help: 'Verifications that found the kernel differing from what we wrote, and repaired it.', registers: [this.registry] });
  readonly generation = new Gauge({ name: 'policyctl_last_applied_generation', help: 'Model generation of the last successful sync.', registers: [this.registry] });
  readonly invalidPolicies = new Gauge({
    name: 'policyctl_invalid_policies',
    help: 'Invalid NetworkPolicies in the model (enforced fail-closed).',
    registers: [this.registry],
    collect: () => {
      if (this.source) this.invalidPolicies.set(this.source.invalidPolicies());
    },
  });
  readonly sourceHealthy = new Gauge({
    name: 'policyctl_source_healthy',
    help: '1 when the source of objects is connected and current.',
    registers: [this.registry],
    collect: () => {
      if (this.source) this.sourceHealthy.set(this.source.status().healthy ? 1 : 0);
    },
  });
  readonly sourceObjectsWithIssues = this.fromStats(Gauge, 'policyctl_source_objects_with_issues', 'Objects in the model read with validation issues, by kind.', 'kind', (s) => s.objectsWithIssues);
  readonly sourceErrors = this.fromStats(Counter, 'policyctl_source_errors_total', 'Errors that interrupted reading the source (each followed by a retry with backoff), by resource.', 'resource', (s) => s.errors);
  readonly sourceRestarts = this.fromStats(Counter, 'policyctl_source_restarts_total', 'Restarts of a watch with a fresh list, by reason (watchdog, resync, handler-error).', 'reason', (s) => s.restarts);
  readonly sourceEvents = this.fromStats(Counter, 'policyctl_source_events_total', 'Watch events received, by resource.', 'resource', (s) => s.events);
  readonly sourceHandlerErrors = this.fromStats(Counter, 'policyctl_source_handler_errors_total', 'Exceptions caught in the source (logged; the resource is relisted).', undefined, (s) => ({ '': s.handlerErrors }));
  readonly bridgeNf = new Gauge({ name: 'policyctl_bridge_nf_call_iptables', help: 'net.bridge.bridge-nf-call-iptables as last read (1: same-node pod traffic passes iptables; 0: it bypasses every policy).', registers: [this.registry] });
  readonly serviceProxy = new Gauge({
    name: 'policyctl_service_proxy',
    help: "kube-proxy's mode the node is programmed for (1 on the mode in force; ipvs adds the OUTPUT hook), and how it was chosen: flag (--service-proxy), detected (its traces on the node), assumed (no trace: iptables).",
    labelNames: ['mode', 'how'],
    registers: [this.registry],
  });
  readonly nameCollisions = new Gauge({ name: 'policyctl_name_collisions', help: 'Hashed chain names that stood for two contents: their pods are isolated by a drop-all chain.', registers: [this.registry] });
  readonly addressConflicts = new Gauge({ name: 'policyctl_address_conflicts', help: 'Addresses claimed by more than one pod: each is in no allow set and gets no connection until resolved.', registers: [this.registry] });
  readonly conntrackDeleted = new Counter({
    name: 'policyctl_conntrack_entries_deleted_total',
    help: 'Connection tracking entries deleted, by reason: address-released (a pod address left the cluster or is claimed twice), revoked (--revoke-established: a change denies the connection).',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly chains = new Gauge({ name: 'policyctl_chains', help: 'Chains in the desired ruleset.', registers: [this.registry] });
  readonly setEntries = new Gauge({ name: 'policyctl_set_entries', help: 'Set entries in the desired ruleset.', registers: [this.registry] });
  readonly quarantined = new Gauge({
    name: 'policyctl_quarantined_objects',
    help: 'Objects the kernel refused, held fail-closed until they change or a retry is due, by kind (Pod: no address; NetworkPolicy: isolates, allows nothing).',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  readonly kernelRejections = new Counter({ name: 'policyctl_kernel_rejections_total', help: 'Objects quarantined because the kernel refused what they produced (a set entry, a rule), by kind.', labelNames: ['kind'], registers: [this.registry] });
  readonly piecewiseApplies = new Counter({
    name: 'policyctl_piecewise_applies_total',
    help: 'Applies the kernel refused and that were then applied piece by piece, by result: complete (every piece decided), incomplete (a bound stopped it), failed (a transient error aborted it).',
    labelNames: ['result'],
    registers: [this.registry],
  });
  /**
   * Set by the wiring (src/cli/agent.ts, PolicyCounters): reads the kernel's rule counters into
   * `policyPackets` before a scrape.
   */
  policyPacketsRefresh: (() => Promise<void>) | undefined;
  readonly policyPackets = new Counter({
    name: 'policyctl_policy_packets_total',
    help:
      "New-connection packets each policy decided, from the kernel's rule counters: verdict allowed (a NetworkPolicy rule or a ClusterNetworkPolicy Accept rule matched) or denied (a ClusterNetworkPolicy Deny rule, or the default deny of the NetworkPolicies isolating the pod: each of them counts), by tier and direction. tier none: an address of the node's pod CIDRs that is no programmed pod (policy empty); an address no known pod has, dropped by a Deny or Admin Pass that names pods, counts for that ClusterNetworkPolicy. With the verdict cache (the default), a TCP or UDP connection allowed by a verdict the kernel remembered walks no policy rule and is not counted here: policyctl_verdict_cache_hits_total counts those.",
    labelNames: ['policy', 'tier', 'direction', 'verdict'],
    registers: [this.registry],
    collect: async () => {
      await this.policyPacketsRefresh?.();
    },
  });
  /** Filled by PolicyCounters from the same read as `policyPackets`. */
  readonly verdictCacheHits = new Counter({
    name: 'policyctl_verdict_cache_hits_total',
    help: "New TCP and UDP connection packets allowed by a verdict the kernel remembered (the verdict cache, ipset PCTL-verdicts: the same client, server and port allowed by every rule within the last 10 s and no write that may deny since), without walking the policy rules, so counted by no policy in policyctl_policy_packets_total. From the kernel's rule counters, refreshed with it.",
    labelNames: ['protocol'],
    registers: [this.registry],
    collect: async () => {
      await this.policyPacketsRefresh?.();
    },
  });
  readonly dropsLogged = new Counter({
    name: 'policyctl_policy_denied_packets_logged_total',
    help:
      'Denied packets the drop log recorded, by the policy that denied them, its tier (NetworkPolicy: each policy isolating the pod counts; Admin, Baseline: the ClusterNetworkPolicy whose Deny rule matched; none: an address of the pod CIDRs that is no programmed pod, or that no known pod has at a Deny or Admin Pass that names pods) and direction. The log is rate-limited per node, so under a flood this counts fewer packets than were dropped (policyctl_policy_packets_total counts them all).',
    labelNames: ['policy', 'tier', 'direction'],
    registers: [this.registry],
  });
  readonly dropLogLost = new Counter({ name: 'policyctl_drop_log_lost_total', help: 'Times the kernel dropped drop-log records the reader did not read in time (ENOBUFS), and reader restarts.', registers: [this.registry] });

  /** Read the source's state (health, invalid policies, its counters) at every scrape. */
  followSource(source: ModelSource): void {
    this.source = source;
  }

  /** The source's stats, read once per scrape (every source metric's collect asks for them). */
  private sourceStats(): SourceStats | undefined {
    const now = Date.now();
    if (!this.statsCache || now - this.statsCache.at > 250) this.statsCache = { at: now, stats: this.source?.stats?.() };
    return this.statsCache.stats;
  }

  /** A metric that copies one field of the source's stats at scrape time (one label, or none). */
  private fromStats<M extends Gauge | Counter>(
    Type: new (c: { name: string; help: string; labelNames: string[]; registers: Registry[]; collect: () => void }) => M,
    name: string,
    help: string,
    label: string | undefined,
    pick: (s: SourceStats) => Readonly<Record<string, number>>,
  ): M {
    const metric: M = new Type({
      name,
      help,
      labelNames: label ? [label] : [],
      registers: [this.registry],
      collect: () => {
        const stats = this.sourceStats();
        if (!stats) return;
        metric.reset();
        for (const [k, v] of Object.entries(pick(stats))) {
          const labels = label ? { [label]: k } : {};
          if (metric instanceof Gauge) metric.set(labels, v);
          else if (v > 0) (metric as Counter).inc(labels, v);
        }
      },
    });
    return metric;
  }
}
