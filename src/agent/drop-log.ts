// The agent's drop log (issue 11): reads the records of the node's log rules (src/compiler/drop-log.ts
// writes their prefixes, src/sync/render.ts the rate-limited NFLOG rules) from a small reader
// process (src/sync/nflog.ts: Node has no netlink sockets), names the pods and the policies behind
// each denied flow through the model, aggregates per flow ("N packets in T"), logs each denied flow
// once per interval as a JSON line, keeps the recent ones for `/drops`, and counts them per policy
// and direction for /metrics.
//
// What decided comes from the kernel (the prefix of the log rule that matched: the direction, a
// NetworkPolicy default deny or a ClusterNetworkPolicy Deny rule, an unprogrammed address, a
// mid-stream TCP pickup or a revoked UDP flow's answer under --revoke-established); the
// names come from the model, matched against the prefix's digests. When they do not match (the
// policies changed since the packet was dropped), the drop says so instead of guessing.

import type { Logger } from 'pino';
import type { Counter } from 'prom-client';
import { clusterPolicyDigest, parseDropLogPrefix, policiesDigest, type DropPrefix } from '../compiler/drop-log.ts';
import { REVOKED_TIMEOUT_S } from '../compiler/layout.ts';
import { policyCommentRef } from '../compiler/names.ts';
import type { Model } from '../model/store.ts';
import { isEnforceable, type PodRecord, type PolicyType } from '../model/types.ts';
import { isolatingPolicies } from '../semantics/evaluate.ts';
import { nflogReaderCommand, NflogReader, type LogRecord } from '../sync/nflog.ts';
import { DROP_LOG } from '../sync/render.ts';

export type { LogRecord };
import type { AgentMetrics } from './metrics.ts';

/** The labels of a series of `policyctl_policy_denied_packets_logged_total`. */
type DeniedLabels = { policy: string; tier: string; direction: string };

/** What decided a drop, in the words `policyctl explain` uses. */
export type DropDecision =
  | {
      readonly tier: 'NetworkPolicy';
      /** `namespace/name` of the NetworkPolicies isolating the pod in this direction. */
      readonly policies: readonly string[];
      readonly reason: string;
    }
  | {
      readonly tier: 'Admin' | 'Baseline';
      /** The ClusterNetworkPolicy's name, as `cnp/NAME`. */
      readonly policy: string;
      readonly ruleIndex: number;
      /** The rule's `name` ('' when it has none). */
      readonly rule: string;
      readonly reason: string;
    }
  | { readonly tier: 'none'; readonly reason: string };

/** A denied flow, aggregated over one interval. */
export interface Drop {
  /** Increases with every update of any drop: `/drops?since=SEQ` returns the drops updated after SEQ. */
  seq: number;
  readonly node: string;
  /** `namespace/pod`, or the address when it is no pod's. */
  readonly from: string;
  readonly to: string;
  readonly src: string;
  readonly dst: string;
  /** TCP, UDP, SCTP, ICMP (or the protocol number). */
  readonly protocol: string;
  readonly port?: number;
  readonly direction: PolicyType;
  readonly decision: DropDecision;
  /** Packets logged in this interval (the log is rate-limited per node: a flood logs fewer). */
  packets: number;
  readonly first: string;
  last: string;
  /** The namespaces of the pods involved, for `policyctl drops -n`. */
  readonly namespaces: readonly string[];
}

export interface DropLogOptions {
  readonly node: string;
  readonly model: Model;
  readonly logger: Logger;
  /** The agent's metrics: the per-policy counters of logged drops go there. */
  readonly metrics?: Pick<AgentMetrics, 'dropsLogged' | 'dropLogLost'>;
  /** How long a flow's packets are aggregated into one log line (default 10 s). */
  readonly intervalMs?: number;
  /** How many recent drops `/drops` keeps (default 1000). */
  readonly capacity?: number;
  /** The NFLOG group (default DROP_LOG.group, the one our rules send to). */
  readonly group?: number;
  /** The reader's command (default: src/sync/nflog.ts nflogReaderCommand). */
  readonly command?: readonly string[];
  readonly now?: () => number;
}

const PROTOCOL_NAMES: Record<string, string> = { tcp: 'TCP', udp: 'UDP', sctp: 'SCTP', icmp: 'ICMP' };

export class DropLog {
  private readonly o: DropLogOptions;
  private readonly intervalMs: number;
  private readonly capacity: number;
  private readonly now: () => number;
  /** The flows of the current interval, by key. */
  private current = new Map<string, Drop>();
  /** Recent drops, oldest first (the current interval's included). */
  private readonly recent: Drop[] = [];
  private seq = 0;
  private reader: NflogReader | undefined;
  private timer: NodeJS.Timeout | undefined;
  private podsByIp: { generation: number; map: Map<string, PodRecord> } | undefined;
  readonly denied: Counter<'policy' | 'tier' | 'direction'> | undefined;
  /** The label sets `denied` has a series for. */
  private readonly series = new Map<string, DeniedLabels>();
  readonly lost: Counter | undefined;

  constructor(o: DropLogOptions) {
    this.o = o;
    this.intervalMs = o.intervalMs ?? 10_000;
    this.capacity = o.capacity ?? 1000;
    this.now = o.now ?? Date.now;
    this.denied = o.metrics?.dropsLogged;
    this.lost = o.metrics?.dropLogLost;
  }

  /** Starts the reader and the interval timer; resolves when the reader has bound the group (or failed to). */
  start(): Promise<void> {
    this.timer = setInterval(() => this.flush(), this.intervalMs);
    this.timer.unref();
    this.reader = new NflogReader({
      command: this.o.command ?? nflogReaderCommand(this.o.group ?? DROP_LOG.group),
      logger: this.o.logger,
      onRecord: (r) => this.record(r),
      onLost: () => this.lost?.inc(),
    });
    return this.reader.start();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.flush();
    await this.reader?.stop();
  }

  /** The recent drops, oldest first; with `since`, only those updated after that sequence number. */
  drops(since = 0): Drop[] {
    return this.recent.filter((d) => d.seq > since);
  }

  /** One logged packet: attributed, aggregated into its flow of the current interval. */
  record(r: LogRecord): void {
    const prefix = parseDropLogPrefix(r.prefix);
    if (!prefix) return; // not one of ours: another listener's rule on the same group
    const protocol = PROTOCOL_NAMES[r.protocol] ?? r.protocol.toUpperCase();
    const key = `${r.prefix}|${r.src}|${r.dst}|${protocol}|${r.dport ?? ''}`;
    const at = new Date(this.now()).toISOString();
    let d = this.current.get(key);
    if (!d) {
      d = this.describe(prefix, r, protocol, at);
      this.current.set(key, d);
      this.recent.push(d);
      if (this.recent.length > this.capacity) this.recent.splice(0, this.recent.length - this.capacity);
      this.count(d);
    } else {
      d.packets++;
      d.last = at;
      this.count(d);
    }
    d.seq = ++this.seq;
  }

  /** Ends the interval: one log line per flow denied in it. */
  flush(): void {
    if (this.current.size === 0) return;
    for (const d of this.current.values()) {
      const seconds = Math.max(0, (Date.parse(d.last) - Date.parse(d.first)) / 1000);
      this.o.logger.info(
        { from: d.from, to: d.to, port: d.port, protocol: d.protocol, direction: d.direction, node: d.node, decision: d.decision, packets: d.packets, seconds, first: d.first },
        `denied: ${d.from} -> ${d.to}${d.port !== undefined ? ` ${d.port}` : ''}/${d.protocol} (${d.direction.toLowerCase()}), ${d.packets} packet${d.packets === 1 ? '' : 's'} in ${seconds.toFixed(1)}s: ${d.decision.reason}`,
      );
    }
    this.current = new Map();
  }

  private count(d: Drop): void {
    if (!this.denied) return;
    const dec = d.decision;
    const direction = d.direction;
    if (dec.tier === 'NetworkPolicy') for (const policy of dec.policies) this.inc({ policy, tier: dec.tier, direction });
    else if (dec.tier === 'none') this.inc({ policy: '', tier: 'none', direction });
    else this.inc({ policy: dec.policy, tier: dec.tier, direction });
  }

  /**
   * One more denied packet for these labels. Before a series is created, the series of policies
   * no longer in the model are removed: the names tenants create and delete do not pile up.
   */
  private inc(labels: DeniedLabels): void {
    const key = `${labels.policy}|${labels.tier}|${labels.direction}`;
    if (!this.series.has(key)) {
      const m = this.o.model;
      for (const [k, l] of this.series) {
        const [ns, name] = l.policy.split('/') as [string, string | undefined];
        const gone = l.tier === 'NetworkPolicy' ? name === undefined || !m.findPolicy(ns, name) : l.tier !== 'none' && (name === undefined || !m.findClusterPolicy(name));
        if (!gone) continue;
        this.denied!.remove(l);
        this.series.delete(k);
      }
      this.series.set(key, labels);
    }
    this.denied!.inc(labels);
  }

  private pod(ip: string): PodRecord | undefined {
    const m = this.o.model;
    if (!this.podsByIp || this.podsByIp.generation !== m.generation) {
      const map = new Map<string, PodRecord>();
      for (const p of m.allPods()) if (isEnforceable(p)) for (const a of p.ips) map.set(a, p);
      this.podsByIp = { generation: m.generation, map };
    }
    return this.podsByIp.map.get(ip);
  }

  private describe(prefix: DropPrefix, r: LogRecord, protocol: string, at: string): Drop {
    const srcPod = this.pod(r.src);
    const dstPod = this.pod(r.dst);
    const name = (p: PodRecord | undefined, ip: string) => (p ? `${p.namespace}/${p.name}` : ip);
    const subject = prefix.dir === 'Egress' ? srcPod : dstPod;
    return {
      seq: 0,
      node: this.o.node,
      from: name(srcPod, r.src),
      to: name(dstPod, r.dst),
      src: r.src,
      dst: r.dst,
      protocol,
      ...(r.dport !== undefined ? { port: r.dport } : {}),
      direction: prefix.dir,
      decision: this.decision(prefix, subject, prefix.dir === 'Egress' ? r.src : r.dst, protocol),
      packets: 1,
      first: at,
      last: at,
      namespaces: [...new Set([srcPod?.namespace, dstPod?.namespace].filter((n): n is string => n !== undefined))],
    };
  }

  private decision(p: DropPrefix, pod: PodRecord | undefined, ip: string, protocol: string): DropDecision {
    const m = this.o.model;
    switch (p.kind) {
      case 'unknown':
        return { tier: 'none', reason: `${ip} is in the pod CIDRs but is not a pod this node knows or enforces (IP not reported yet, pod finished, or the address claimed by two pods): new connections from and to it are dropped where it could be a pod kept out` };
      case 'midstream':
        if (protocol === 'UDP') return { tier: 'none', reason: `a UDP datagram to the port of a flow --revoke-established ended, from its server (an answer still on its way): new to conntrack, dropped so the flow is not taken up again in reverse (for ${REVOKED_TIMEOUT_S} s after it was ended)` };
        return { tier: 'none', reason: `a TCP packet in the middle of a connection conntrack does not track (ended by --revoke-established, or its entry lost): taken for a new connection without SYN, dropped; the connection must be opened again` };
      case 'collision':
        return { tier: 'none', reason: `the ${p.dir.toLowerCase()} chain of ${pod ? `${pod.namespace}/${pod.name}` : ip} shares its hashed name with another content: isolated, allows nothing until it changes` };
      case 'np': {
        const pols = pod ? isolatingPolicies(m, pod, p.dir) : [];
        const refs = pols.map((x) => policyCommentRef(x.namespace, x.name));
        const names = pols.map((x) => `${x.namespace}/${x.name}`);
        if (pols.length > 0 && policiesDigest(refs) === p.policiesDigest) {
          return { tier: 'NetworkPolicy', policies: names, reason: `[NetworkPolicy] isolated by ${names.join(', ')}, no rule matches` };
        }
        return {
          tier: 'NetworkPolicy',
          policies: names,
          reason: `[NetworkPolicy] default deny ${p.dir.toLowerCase()}, no rule matches; the policies isolating ${pod ? `${pod.namespace}/${pod.name}` : ip} changed since (now: ${names.join(', ') || 'none'})`,
        };
      }
      case 'cnp': {
        const cnp = m.clusterPoliciesInTier(p.tier).find((c) => clusterPolicyDigest(c.name) === p.nameDigest);
        const rule = cnp ? (p.dir === 'Ingress' ? cnp.ingress : cnp.egress)[p.index] : undefined;
        if (!cnp || !rule) return { tier: p.tier, policy: '', ruleIndex: p.index, rule: '', reason: `[${p.tier}] a ClusterNetworkPolicy Deny rule (${p.dir.toLowerCase()}[${p.index}]) of a policy no longer in the cluster` };
        const label = rule.name ? `rule "${rule.name}"` : `rule ${p.index}`;
        return { tier: p.tier, policy: `cnp/${cnp.name}`, ruleIndex: p.index, rule: rule.name, reason: `[${p.tier} ${cnp.priority} cnp/${cnp.name} ${label}] Deny` };
      }
    }
  }
}
