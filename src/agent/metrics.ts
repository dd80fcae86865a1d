// The agent's Prometheus metrics, in a registry of its own (several agents can share a process
// in tests).

import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export class AgentMetrics {
  readonly registry = new Registry();
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
  readonly driftRepairs = new Counter({ name: 'policyctl_drift_repairs_total', help: 'Verifications that found the kernel differing from what we wrote, and repaired it.', registers: [this.registry] });
  readonly generation = new Gauge({ name: 'policyctl_last_applied_generation', help: 'Model generation of the last successful sync.', registers: [this.registry] });
  readonly invalidPolicies = new Gauge({ name: 'policyctl_invalid_policies', help: 'Invalid NetworkPolicies in the model (enforced fail-closed).', registers: [this.registry] });
  readonly sourceHealthy = new Gauge({ name: 'policyctl_source_healthy', help: '1 when the source of objects is connected and current.', registers: [this.registry] });
  readonly chains = new Gauge({ name: 'policyctl_chains', help: 'Chains in the desired ruleset.', registers: [this.registry] });
  readonly setEntries = new Gauge({ name: 'policyctl_set_entries', help: 'Set entries in the desired ruleset.', registers: [this.registry] });
}
