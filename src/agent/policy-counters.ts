// Packets allowed and denied per policy and direction, from the kernel's rule counters (issue 11):
// `policyctl_policy_packets_total{policy, tier, direction, verdict}`. No pod labels, so the
// cardinality is bounded by the policies. Read at scrape time (at most once per `minIntervalMs`).
//
// A rule's counter starts at zero whenever its chain is rewritten, so the metric adds what each
// rule counted since the last read (its whole count when it is new or was reset): a counter
// that only grows, as Prometheus expects.
//
// Which policy a rule is, comes from its comment (src/compiler/rules.ts writes them):
//   `NS/NAME ingress[i]` (RETURN)                  allowed by that NetworkPolicy
//   `cnp/NAME TIER Accept|Deny ingress[i]`         allowed (RETURN) or denied (DROP, or -g to its drop
//                                                  chain PCTL-L-...) by that ClusterNetworkPolicy
//   `default deny ingress: isolated by A,B`        denied: counted for each isolating NetworkPolicy
//   `from|to an address of pod CIDR ...` (DROP)    denied, tier none (an unprogrammed address)
//   `cnp/NAME TIER Deny|Pass ingress[i]: from|to an address no known pod has`
//                                                  denied by that ClusterNetworkPolicy: an address
//                                                  no known pod has, which it may name
// The log rules before drops (`log: ...`), the drop chains' own rules (`drop: ...`, counted by the
// rule that went there) and Pass rules are not counted. The verdict cache's hit rules
// (`verdict cache: tcp|udp ...`, RETURN) go to `policyctl_verdict_cache_hits_total` instead: a
// connection allowed from the cache walks no policy's rule. A comment longer than
// the kernel keeps (255 characters) can name fewer isolating policies than there are.

import type { Counter } from 'prom-client';
import type { AgentMetrics } from './metrics.ts';
import type { Logger } from 'pino';
import type { PolicyType } from '../model/types.ts';
import type { RuleCounter } from '../sync/rule-counters.ts';
import { errorText } from '../util/error-text.ts';
import { DROP_CHAIN_PREFIX } from '../compiler/drop-log.ts';

export interface Attribution {
  readonly verdict: 'allowed' | 'denied';
  readonly tier: 'NetworkPolicy' | 'Admin' | 'Baseline' | 'none';
  readonly direction: PolicyType;
  readonly policies: readonly string[];
}

const dirOf = (d: string): PolicyType => (d === 'ingress' ? 'Ingress' : 'Egress');

/** What a rule counts, by its comment and target; undefined for rules that decide nothing (dispatch, log, Pass). */
export function attribute(c: Pick<RuleCounter, 'comment' | 'target'>): Attribution | undefined {
  const { comment, target } = c;
  let m = /^(cnp\/\S+) (Admin|Baseline) (Accept|Deny) (ingress|egress)\[\d+\]$/.exec(comment);
  if (m) {
    // A Deny drops in place or goes to its drop chain (drop-log.ts chainedDrop), which drops every packet.
    if ((m[3] === 'Accept' && target !== 'RETURN') || (m[3] === 'Deny' && target !== 'DROP' && !target.startsWith(DROP_CHAIN_PREFIX))) return undefined;
    return { verdict: m[3] === 'Accept' ? 'allowed' : 'denied', tier: m[2] as 'Admin' | 'Baseline', direction: dirOf(m[4]!), policies: [m[1]!] };
  }
  // A Deny or Pass that names pods drops an address of the pod CIDRs no known pod has (it may be one it names).
  m = /^(cnp\/\S+) (Admin|Baseline) (Deny|Pass) (ingress|egress)\[\d+\]: (from|to) an address no known pod has$/.exec(comment);
  if (m) {
    if (target !== 'DROP' && !target.startsWith(DROP_CHAIN_PREFIX)) return undefined;
    return { verdict: 'denied', tier: m[2] as 'Admin' | 'Baseline', direction: dirOf(m[4]!), policies: [m[1]!] };
  }
  m = /^default deny (ingress|egress): isolated by (.+)$/.exec(comment);
  if (m && target === 'DROP') {
    // A comment cut short (render.ts sanitizeComment: `...` at the end) ends in part of a name:
    // left out, so no policy that does not exist (or another whose name is that prefix) is named.
    const names = m[2]!.split(',');
    if (m[2]!.endsWith('...')) names.pop();
    const policies = names.filter((p) => p.includes('/') || p.startsWith('invalid-name-'));
    return { verdict: 'denied', tier: 'NetworkPolicy', direction: dirOf(m[1]!), policies };
  }
  m = /^(from|to) an address of pod CIDR \S+ that is not a programmed pod$/.exec(comment);
  if (m && target === 'DROP') return { verdict: 'denied', tier: 'none', direction: m[1] === 'from' ? 'Egress' : 'Ingress', policies: [''] };
  m = /^(\S+) (ingress|egress)\[\d+\]$/.exec(comment);
  if (m && target === 'RETURN' && !m[1]!.startsWith('cnp/')) return { verdict: 'allowed', tier: 'NetworkPolicy', direction: dirOf(m[2]!), policies: [m[1]!] };
  return undefined;
}

/** The protocol of a verdict cache hit rule (layout.ts VERDICT_CACHE_SET), else undefined. */
export function cacheHitProtocol(c: Pick<RuleCounter, 'comment' | 'target'>): string | undefined {
  const m = /^verdict cache: (tcp|udp) client, port and server /.exec(c.comment);
  return m && c.target === 'RETURN' ? m[1] : undefined;
}

type Labels = { policy: string; tier: Attribution['tier']; direction: PolicyType; verdict: Attribution['verdict'] };
const labelKey = (l: Labels) => `${l.policy}|${l.tier}|${l.direction}|${l.verdict}`;

export class PolicyCounters {
  readonly packets: Counter<'policy' | 'tier' | 'direction' | 'verdict'>;
  private readonly hits: Counter<'protocol'>;
  private last = new Map<string, number>();
  /** The label sets of the rules of the last read (their series may exist). */
  private series = new Map<string, Labels>();
  private readAt = 0;
  private reading: Promise<void> | undefined;

  private readonly read: () => Promise<readonly RuleCounter[]>;
  private readonly logger: Logger;
  private readonly minIntervalMs: number;

  /** Fills `metrics.policyPackets`, refreshed before each scrape. */
  constructor(metrics: AgentMetrics, read: () => Promise<readonly RuleCounter[]>, logger: Logger, minIntervalMs = 5000) {
    this.read = read;
    this.logger = logger;
    this.minIntervalMs = minIntervalMs;
    this.packets = metrics.policyPackets;
    this.hits = metrics.verdictCacheHits;
    metrics.policyPacketsRefresh = () => this.refresh();
  }

  /** Reads the kernel's counters (at most once per interval) and adds what each rule counted since. */
  refresh(): Promise<void> {
    if (Date.now() - this.readAt < this.minIntervalMs) return Promise.resolve();
    this.reading ??= this.update().finally(() => (this.reading = undefined));
    return this.reading;
  }

  private async update(): Promise<void> {
    let rules: readonly RuleCounter[];
    try {
      rules = await this.read();
    } catch (e) {
      this.logger.warn({ err: errorText(e) }, 'policy counters: cannot read the kernel rule counters');
      return;
    }
    this.readAt = Date.now();
    this.add(rules);
  }

  /**
   * Adds the rules' counts since the last call (exposed for tests). A series whose policy has no
   * rule left in the kernel (the policy was deleted) is removed, so policy names tenants come and
   * go with do not pile up in the agent or in Prometheus.
   */
  add(rules: readonly RuleCounter[]): void {
    const next = new Map<string, number>();
    const seen = new Map<string, number>();
    const live = new Map<string, Labels>();
    for (const r of rules) {
      const a = attribute(r);
      const hit = a ? undefined : cacheHitProtocol(r);
      if (!a && !hit) continue;
      const base = `${r.chain}|${r.id}`;
      const n = (seen.get(base) ?? 0) + 1;
      seen.set(base, n);
      const key = `${base}|${n}`;
      next.set(key, r.packets);
      const before = this.last.get(key);
      const delta = before === undefined || r.packets < before ? r.packets : r.packets - before;
      if (!a) {
        if (delta > 0) this.hits.inc({ protocol: hit! }, delta);
        continue;
      }
      for (const policy of a.policies) {
        const labels: Labels = { policy, tier: a.tier, direction: a.direction, verdict: a.verdict };
        live.set(labelKey(labels), labels);
        if (delta > 0) this.packets.inc(labels, delta);
      }
    }
    for (const [k, labels] of this.series) if (!live.has(k)) this.packets.remove(labels);
    this.series = live;
    this.last = next;
  }
}
