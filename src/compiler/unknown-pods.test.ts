// Addresses a node does not know yet (rules.ts, "addresses a node does not know yet"; docs/design.md,
// invariant fail-closed-in-time): a pod that started on another node is programmed there at once,
// but this node learns its address only from the API. Until then a ClusterNetworkPolicy Deny (or
// Pass) that names it must not let it through: such a rule also drops an address of any node's
// pod CIDR that no pod the node knows has. Walked by the tracer on node n1's compiled rules, for
// both compilers; the real kernel's side is test/e2e/pod-start.test.ts.

import { describe, expect, it } from 'vitest';
import { modelOf, node, ns, nsPeer, pod, policy, port, rule, sel } from '../../test/support/builders.ts';
import { FOREIGN_FILTER } from '../../test/support/dataplane.ts';
import { parseIpsetRestore, parseIptablesRestore, trace, type TraceResult } from '../../test/support/tracer.ts';
import { normalize } from '../model/normalize.ts';
import type { Model } from '../model/store.ts';
import type { ClusterPolicyRecord } from '../model/types.ts';
import { allowed } from '../semantics/evaluate.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../sync/render.ts';
import { attribute } from '../agent/policy-counters.ts';
import { compile } from './compile.ts';
import { dropLogPrefix } from './drop-log.ts';
import { IncrementalCompiler } from './incremental.ts';
import { KNOWN_PODS_SPEC, POD_CIDRS_SET } from './layout.ts';
import type { Ruleset } from './ruleset.ts';

function cnp(name: string, spec: Record<string, unknown>): ClusterPolicyRecord {
  return normalize({ apiVersion: 'policy.networking.k8s.io/v1alpha2', kind: 'ClusterNetworkPolicy', metadata: { name }, spec }).record as ClusterPolicyRecord;
}
const nsNamed = (name: string) => ({ namespaces: { matchLabels: { 'kubernetes.io/metadata.name': name } } });

const N1 = node('n1', '10.244.1.0/24', '192.168.50.11');
const N2 = node('n2', '10.244.2.0/24', '192.168.50.12');
const web = pod('x', 'web', { app: 'web' }, { ip: '10.244.1.10', node: 'n1', ports: [port(80, 'http')] });
/** A pod of the walled-off tenant on n2: started there, not reported to n1 yet in most cases. */
const NEW_IP = '10.244.2.20';
const tenantPod = pod('t', 'new', { app: 'new' }, { ip: NEW_IP, node: 'n2' });
const friendPod = pod('y', 'new', { app: 'new' }, { ip: NEW_IP, node: 'n2' });

/** x's pods refuse tenant t both ways. */
const wall = cnp('wall', {
  tier: 'Admin',
  priority: 10,
  subject: nsNamed('x'),
  ingress: [{ name: 'no-t-in', action: 'Deny', from: [nsNamed('t')] }],
  egress: [{ name: 'no-t-out', action: 'Deny', to: [nsNamed('t')] }],
});

function cluster(...extra: Parameters<typeof modelOf>): Model {
  return modelOf(ns('x'), ns('y'), ns('t'), N1, N2, web, ...extra);
}

/** The rules that matched on the way, one per line (a drop chain's rule says less than the rule that went there). */
const matched = (t: TraceResult) => t.steps.filter((s) => s.matched).map((s) => s.rule).join('\n');

function walk(rs: Ruleset, src: string, dst: string, dport = 80): TraceResult {
  const table = parseIptablesRestore(renderIptablesRestore(rs), { base: parseIptablesRestore(FOREIGN_FILTER), noflush: true });
  return trace(table, parseIpsetRestore(renderIpsetRestore(rs.sets)), 'FORWARD', { src, dst, protocol: 'tcp', dport, sport: 40000 });
}

/** Both compilers' Rulesets for n1 (the incremental one after `change`, if given, from `m` as it was). */
function both(m: Model, change?: (m: Model) => void): Ruleset[] {
  const ic = new IncrementalCompiler(m, 'n1');
  ic.ruleset();
  change?.(m);
  const inc = ic.ruleset();
  const full = compile(m, 'n1');
  expect(inc).toEqual(full);
  return [full, inc];
}

/** x's pods, in `tier`, take `action` on ingress from tenant t. */
const fromT = (name: string, tier: 'Admin' | 'Baseline', action: 'Accept' | 'Deny' | 'Pass') => cnp(name, { tier, priority: 10, subject: nsNamed('x'), ingress: [{ name: 't', action, from: [nsNamed('t')] }] });

/**
 * The new pod's connection to web on n1 before n1 learns it, in both compilers; n1 has the set of
 * known pods exactly when some rule drops unknown addresses.
 */
function expectUnknown(policy: ClusterPolicyRecord, verdict: 'ACCEPT' | 'DROP'): void {
  for (const rs of both(cluster(policy))) {
    expect(walk(rs, NEW_IP, web.ips[0]!).verdict).toBe(verdict);
    expect(rs.sets.some((s) => s.name === KNOWN_PODS_SPEC.name)).toBe(verdict === 'DROP');
  }
}

describe('addresses of the pod CIDRs this node does not know yet', () => {
  it('an Admin Deny that names a tenant drops a pod of another node it does not know, both ways', () => {
    for (const rs of both(cluster(wall))) {
      const inbound = walk(rs, NEW_IP, web.ips[0]!);
      expect(inbound.verdict).toBe('DROP');
      expect(matched(inbound)).toContain('cnp/wall Admin Deny ingress[0]: from an address no known pod has');
      // Logged as what it is: an address no known pod has, by its side (a source: egress), so
      // the drop log names the address.
      expect(inbound.finalRule).toContain(`drop: ${dropLogPrefix({ kind: 'unknown', dir: 'Egress' })}`);
      expect(walk(rs, web.ips[0]!, NEW_IP).verdict).toBe('DROP');
    }
  });

  it('once the pod is known its labels decide: the tenant stays out, another namespace gets in', () => {
    for (const rs of both(cluster(wall, tenantPod))) {
      const t = walk(rs, NEW_IP, web.ips[0]!);
      expect(t.verdict).toBe('DROP');
      expect(matched(t)).toContain('cnp/wall Admin Deny ingress[0]"');
      expect(matched(t)).not.toContain('no known pod');
    }
    for (const rs of both(cluster(wall, friendPod))) {
      expect(walk(rs, NEW_IP, web.ips[0]!).verdict).toBe('ACCEPT');
      expect(walk(rs, web.ips[0]!, NEW_IP).verdict).toBe('ACCEPT');
    }
  });

  it("what no Deny could name passes: a node's bridge address, a node's InternalIP in a pod CIDR, an address outside the pod CIDRs", () => {
    const inside = node('n3', '10.244.3.0/24', '10.244.2.250'); // a node whose InternalIP lies in n2's pod CIDR
    for (const rs of both(cluster(wall, inside))) {
      expect(walk(rs, '10.244.2.1', web.ips[0]!).verdict).toBe('ACCEPT');
      expect(walk(rs, '10.244.3.1', web.ips[0]!).verdict).toBe('ACCEPT');
      expect(walk(rs, '10.244.2.250', web.ips[0]!).verdict).toBe('ACCEPT');
      expect(walk(rs, '192.168.7.7', web.ips[0]!).verdict).toBe('ACCEPT');
      expect(walk(rs, web.ips[0]!, '192.168.7.7').verdict).toBe('ACCEPT');
    }
  });

  it("only with the rule's ports: a Deny of 5432 leaves port 80 to the unknown address", () => {
    const db = cnp('no-db', { tier: 'Admin', priority: 10, subject: nsNamed('x'), ingress: [{ name: 'db', action: 'Deny', from: [nsNamed('t')], protocols: [{ tcp: { destinationPort: { number: 5432 } } }] }] });
    for (const rs of both(cluster(db))) {
      expect(walk(rs, NEW_IP, web.ips[0]!, 80).verdict).toBe('ACCEPT');
      expect(walk(rs, NEW_IP, web.ips[0]!, 5432).verdict).toBe('DROP');
    }
  });

  it('an Admin Pass that names pods drops the unknown address too; an Accept leaves it to the next tier', () => {
    expectUnknown(fromT('delegate', 'Admin', 'Pass'), 'DROP');
    expectUnknown(fromT('welcome', 'Admin', 'Accept'), 'ACCEPT');
    // A NetworkPolicy allow list needs none of it: the unknown address matches no peer, so the isolated pod refuses it.
    const allowT = policy('x', 'from-t', sel(), { ingress: [rule([nsPeer(sel({ 'kubernetes.io/metadata.name': 't' }))])] });
    for (const rs of both(cluster(allowT))) {
      expect(walk(rs, NEW_IP, web.ips[0]!).verdict).toBe('DROP');
      expect(rs.sets.map((s) => s.name)).not.toContain(POD_CIDRS_SET);
    }
  });

  it('why a Pass drops it: after the Pass a NetworkPolicy may deny what a later Accept of the networks would let through', () => {
    // web's egress: tenant t is passed to the NetworkPolicies (which allow web nothing), the
    // rest of the cluster's addresses accepted. The new pod is in t: the complete model denies.
    const delegate = cnp('delegate', {
      tier: 'Admin',
      priority: 10,
      subject: nsNamed('x'),
      egress: [
        { name: 't-to-np', action: 'Pass', to: [nsNamed('t')] },
        { name: 'cluster', action: 'Accept', to: [{ networks: ['10.244.0.0/16'] }] },
      ],
    });
    const isolated = policy('x', 'no-egress', sel(), { types: ['Egress'], egress: [] });
    const complete = cluster(delegate, isolated, tenantPod);
    expect(allowed(complete, { src: { kind: 'pod', pod: web }, dst: { kind: 'pod', pod: complete.getPod(tenantPod.uid)! }, port: 80, protocol: 'TCP' }).allowed).toBe(false);
    // n1 has not learned it yet: taken for no pod, the Accept would let it through; dropped instead.
    for (const rs of both(cluster(delegate, isolated))) {
      const t = walk(rs, web.ips[0]!, NEW_IP);
      expect(t.verdict).toBe('DROP');
      expect(matched(t)).toContain('cnp/delegate Admin Pass egress[0]: to an address no known pod has');
    }
  });

  it('a Baseline Deny that names pods drops it as well; a Baseline Pass, which allows, does not', () => {
    expectUnknown(fromT('base', 'Baseline', 'Deny'), 'DROP');
    // Whatever pod it turns out to be, the complete model allows it: passed, or past every Baseline rule.
    expectUnknown(fromT('base-pass', 'Baseline', 'Pass'), 'ACCEPT');
  });

  it('its drops count for the policy in policyctl_policy_packets_total', () => {
    const [rs] = both(cluster(wall));
    const rules = rs!.chains.flatMap((c) => c.rules).filter((r) => r.comment.includes('no known pod'));
    expect(rules.map((r) => r.action.kind).sort()).toEqual(['logdrop', 'logdrop']);
    for (const r of rules) {
      const target = r.action.kind === 'logdrop' ? r.action.chain : 'DROP';
      expect(attribute({ comment: r.comment, target })).toMatchObject({ verdict: 'denied', tier: 'Admin', policies: ['cnp/wall'] });
    }
  });

  it('the sets: every known pod of any node in a gate set, every pod CIDR with the bridges as exceptions', () => {
    const [rs] = both(cluster(wall, friendPod));
    const known = rs!.sets.find((s) => s.name === KNOWN_PODS_SPEC.name)!;
    expect(known.gate).toBe(true);
    expect(known.members.map((m) => m.entry)).toEqual([web.ips[0]!, NEW_IP]);
    const cidrs = rs!.sets.find((s) => s.name === POD_CIDRS_SET)!;
    expect(cidrs.type).toBe('hash:net');
    expect(cidrs.members).toEqual([{ entry: '10.244.1.0/24' }, { entry: '10.244.2.0/24' }, { entry: '10.244.1.1', nomatch: true }, { entry: '10.244.2.1', nomatch: true }].sort((a, b) => a.entry.localeCompare(b.entry)));
    // A Node's pod CIDR wider than a /8 is refused by the model: it would make every address in it a pod's.
    const wide = normalize({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n9' }, spec: { podCIDR: '0.0.0.0/0' } });
    expect(wide.record).toMatchObject({ kind: 'Node', podCIDRs: [] });
    expect(wide.issues.map((i) => `${i.field} ${i.value}: ${i.message}`)).toEqual([expect.stringMatching(/^spec\.podCIDR "0\.0\.0\.0\/0": a node's pod CIDR must be \/8 or narrower/)]);
  });

  it('incrementally: the pod reported, then gone; a new node; each equal to a full compile', () => {
    const m = cluster(wall);
    const ic = new IncrementalCompiler(m, 'n1');
    expect(walk(ic.ruleset(), NEW_IP, web.ips[0]!).verdict).toBe('DROP');
    m.upsert(friendPod);
    let rs = ic.ruleset();
    expect(rs).toEqual(compile(m, 'n1'));
    expect(walk(rs, NEW_IP, web.ips[0]!).verdict).toBe('ACCEPT');
    // The pod's IP came in as a member change of the gate set, not a rebuild.
    expect(ic.stats()?.full).toBe(false);
    expect(ic.delta().memberChanges).toContainEqual({ set: KNOWN_PODS_SPEC.name, added: [NEW_IP], removed: [], gate: true });
    m.remove(friendPod.uid, 'Pod');
    rs = ic.ruleset();
    expect(rs).toEqual(compile(m, 'n1'));
    expect(walk(rs, NEW_IP, web.ips[0]!).verdict).toBe('DROP');
    // A third node: its pod CIDR is in the set from the next Ruleset on.
    m.upsert(node('n3', '10.244.3.0/24', '192.168.50.13'));
    rs = ic.ruleset();
    expect(rs).toEqual(compile(m, 'n1'));
    expect(walk(rs, '10.244.3.20', web.ips[0]!).verdict).toBe('DROP');
  });
});
