// The compiled tiers (tiers.ts, layout.ts): what a node gets for ClusterNetworkPolicies, in both
// compilers, and what a change to one costs in the incremental compiler. The meaning is checked
// by the tracer against the semantics in test/properties and test/conformance; here the shape.

import { describe, expect, it } from 'vitest';
import { modelOf, node, ns, pod, policy, port, rule, sel } from '../../test/support/builders.ts';
import { FOREIGN_FILTER } from '../../test/support/dataplane.ts';
import { parseIpsetRestore, parseIptablesRestore, trace } from '../../test/support/tracer.ts';
import { normalize } from '../model/normalize.ts';
import type { Model } from '../model/store.ts';
import type { ClusterPolicyRecord } from '../model/types.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../sync/render.ts';
import { compile, type CompileOptions } from './compile.ts';
import { dropChain, dropLogPrefix } from './drop-log.ts';
import { IncrementalCompiler } from './incremental.ts';
import type { Ruleset } from './ruleset.ts';

function cnp(name: string, spec: Record<string, unknown>): ClusterPolicyRecord {
  return normalize({ apiVersion: 'policy.networking.k8s.io/v1alpha2', kind: 'ClusterNetworkPolicy', metadata: { name }, spec }).record as ClusterPolicyRecord;
}

const N1 = node('n1', '10.244.1.0/24', '192.168.50.11');
const web = pod('x', 'web', { app: 'web' }, { ip: '10.244.1.10', node: 'n1', ports: [port(80, 'http'), port(9100, 'metrics')] });
const db = pod('x', 'db', { app: 'db' }, { ip: '10.244.1.11', node: 'n1', ports: [port(5432, 'pg'), port(9187, 'metrics')] });
const other = pod('y', 'other', { app: 'web' }, { ip: '10.244.1.12', node: 'n1', ports: [port(80, 'http')] });
const remote = pod('z', 'client', { app: 'client' }, { ip: '10.244.2.10', node: 'n2' });
const denyX = policy('x', 'deny', sel(), { types: ['Ingress'], ingress: [] });
const allowWeb = policy('x', 'allow-web', sel({ app: 'web' }), { ingress: [rule()] });

/**
 * Admin, the pods of x and y (every local pod, but not every pod: its rules are the pods' own,
 * not the shared prefix's): monitoring on `metrics` accepted, 5432 from z denied, the rest passed on.
 */
const XY = { namespaces: { matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'In', values: ['x', 'y'] }] } };
const guard = cnp('guard', {
  tier: 'Admin',
  priority: 10,
  subject: XY,
  ingress: [
    { name: 'scrape', action: 'Accept', from: [{ namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'z' } } }], protocols: [{ destinationNamedPort: 'metrics' }] },
    { name: 'no-db', action: 'Deny', from: [{ namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'z' } } }], protocols: [{ tcp: { destinationPort: { number: 5432 } } }] },
  ],
});
const baselineDeny = cnp('baseline-deny', { tier: 'Baseline', priority: 100, subject: { namespaces: {} }, ingress: [{ name: 'all', action: 'Deny', from: [{ namespaces: {} }] }] });

function cluster(): Model {
  return modelOf(ns('x'), ns('y'), ns('z'), N1, web, db, other, remote, denyX, allowWeb);
}

function verdict(rs: Ruleset, dst: string, dport: number): 'ACCEPT' | 'DROP' {
  const table = parseIptablesRestore(renderIptablesRestore(rs), { base: parseIptablesRestore(FOREIGN_FILTER), noflush: true });
  return trace(table, parseIpsetRestore(renderIpsetRestore(rs.sets)), 'FORWARD', { src: remote.ips[0]!, dst, protocol: 'tcp', dport, sport: 40000 }).verdict;
}

/**
 * The verdicts of `guard` from the remote pod, walked by the tracer: Accept opens what the
 * NetworkPolicies close (db's metrics), Deny closes what they open (5432), the rest is left to
 * them, and a pod without NetworkPolicies is allowed.
 */
function expectGuardVerdicts(rs: Ruleset): void {
  expect(verdict(rs, db.ips[0]!, 9187)).toBe('ACCEPT');
  expect(verdict(rs, db.ips[0]!, 5432)).toBe('DROP');
  expect(verdict(rs, db.ips[0]!, 80)).toBe('DROP');
  expect(verdict(rs, web.ips[0]!, 80)).toBe('ACCEPT');
  expect(verdict(rs, other.ips[0]!, 80)).toBe('ACCEPT');
}

const names = (rs: Ruleset) => rs.chains.map((c) => c.name);
/** Admin chains shared by the pods under the same Admin policies (`--shared-admin-chains`). */
const SHARED: CompileOptions = { tiers: { continuation: { Admin: 'dispatch' } } };

describe('compiled tiers', () => {
  it('without ClusterNetworkPolicies: no tier chains, no second dispatch', () => {
    const rs = compile(cluster(), 'n1');
    expect(names(rs).filter((n) => /^PCTL-([ADFJ]-|EGRESS-NEXT|INGRESS-NEXT|[EI]NB-)/.test(n))).toEqual([]);
  });

  it('an Admin policy (default): an Admin chain per next chain, going on to it by goto; no second dispatch', () => {
    const m = cluster();
    m.upsert(guard);
    const rs = compile(m, 'n1');
    // web: allow-web + deny, db: deny, other: no NetworkPolicy (its Admin chain ends in allow).
    const admin = rs.chains.filter((c) => c.name.startsWith('PCTL-D-'));
    expect(admin).toHaveLength(3);
    const tails = admin.map((c) => c.rules[c.rules.length - 1]!.action).map((a) => (a.kind === 'goto' ? a.chain.slice(0, 7) : a.kind));
    // other's ends with the guard's Deny: one rule to its drop chain (drop-log.ts chainedDrop).
    expect(tails.sort()).toEqual(['PCTL-I-', 'PCTL-I-', 'logdrop']);
    expect(names(rs).filter((n) => /NEXT|^PCTL-[EI]N[QB]-/.test(n))).toEqual([]);
    expectGuardVerdicts(rs);
  });

  it('an Admin policy, shared chains: one Admin chain, then the second dispatch to each pod\'s NetworkPolicy chain', () => {
    const m = cluster();
    m.upsert(guard);
    const rs = compile(m, 'n1', SHARED);
    // Three local pods, three different next tiers (web: allow-web + deny, db: deny, other: none), one Admin chain.
    const admin = rs.chains.filter((c) => c.name.startsWith('PCTL-D-'));
    expect(admin).toHaveLength(1);
    const prefix = dropLogPrefix({ kind: 'cnp', dir: 'Ingress', tier: 'Admin', index: 1, name: 'guard' });
    const drops = dropChain(prefix);
    // Accept, Deny, the Deny's drop of an address of the pod CIDRs no known pod has (rules.ts), then on.
    const unknown = dropChain(dropLogPrefix({ kind: 'unknown', dir: 'Egress' })); // by the unknown source's side
    expect(admin[0]!.rules.map((r) => r.action)).toEqual([
      { kind: 'return' },
      { kind: 'logdrop', chain: drops.name, prefix },
      { kind: 'logdrop', chain: unknown.name, prefix: unknown.prefix },
      { kind: 'goto', chain: 'PCTL-INGRESS-NEXT' },
    ]);
    // The drop chain is programmed once, with the log rule and the drop.
    expect(rs.chains.filter((c) => c.name === drops.name).map((c) => c.rules.map((r) => r.action))).toEqual([[{ kind: 'log', prefix }, { kind: 'drop' }]]);
    expect(names(rs)).toContain('PCTL-INGRESS-NEXT');
    expect(names(rs)).not.toContain('PCTL-EGRESS-NEXT'); // no egress rules
    // Every local pod's entry is the Admin chain; web and db go on to their NetworkPolicy chains.
    const entry = rs.sets.find((s) => s.name === `PCTL-d${admin[0]!.name.slice(6)}`)!;
    expect(entry.members.map((x) => x.entry)).toEqual(['10.244.1.10', '10.244.1.11', '10.244.1.12']);
    const next = rs.sets.filter((s) => s.name.startsWith('PCTL-iN-')).flatMap((s) => s.members.map((x) => x.entry)).sort();
    expect(next).toEqual(['10.244.1.10', '10.244.1.11']);
    expectGuardVerdicts(rs);
  });

  it('a Baseline policy applies to the pods no NetworkPolicy isolates; without a Deny it has no chain', () => {
    const m = cluster();
    m.upsert(baselineDeny);
    let rs = compile(m, 'n1');
    expect(rs.chains.filter((c) => c.name.startsWith('PCTL-J-'))).toHaveLength(1);
    expect(verdict(rs, other.ips[0]!, 80)).toBe('DROP'); // y/other: no NetworkPolicy, the Baseline denies
    expect(verdict(rs, web.ips[0]!, 80)).toBe('ACCEPT'); // x/web: its NetworkPolicies decide
    m.upsert(cnp('baseline-deny', { tier: 'Baseline', priority: 100, subject: { namespaces: {} }, ingress: [{ name: 'all', action: 'Accept', from: [{ namespaces: {} }] }] }));
    rs = compile(m, 'n1');
    expect(rs.chains.filter((c) => c.name.startsWith('PCTL-J-'))).toEqual([]);
    expect(verdict(rs, other.ips[0]!, 80)).toBe('ACCEPT');
  });

  it('an invalid policy fails closed: it denies all traffic in the direction it has rules for', () => {
    const m = cluster();
    m.upsert(cnp('broken', { tier: 'Admin', priority: 'high', subject: { namespaces: {} }, ingress: [{ action: 'Accept', from: [{ namespaces: {} }] }] }));
    const rs = compile(m, 'n1');
    expect(verdict(rs, web.ips[0]!, 80)).toBe('DROP');
    expect(verdict(rs, other.ips[0]!, 80)).toBe('DROP');
  });
});

describe('incremental compiler and ClusterNetworkPolicies', () => {
  const text = (rs: Ruleset) => renderIpsetRestore(rs.sets) + renderIptablesRestore(rs);

  it('follows adds, changes and deletes, equal to compile()', () => {
    const m = cluster();
    const ic = new IncrementalCompiler(m, 'n1');
    ic.ruleset();
    for (const change of [
      () => m.upsert(guard),
      () => m.upsert(baselineDeny),
      () => m.upsert({ ...guard, priority: 500 }),
      () => m.upsert(ns('y', { team: 'a' })),
      () => m.remove(guard.uid, 'ClusterNetworkPolicy'),
      () => m.remove(baselineDeny.uid, 'ClusterNetworkPolicy'),
    ]) {
      change();
      expect(text(ic.ruleset())).toBe(text(compile(m, 'n1')));
    }
    ic.dispose();
  });

  it('a priority change that keeps the order writes nothing; one that selects no local pod looks at none', () => {
    const m = cluster();
    m.upsert(guard);
    const ic = new IncrementalCompiler(m, 'n1');
    const before = ic.ruleset();
    m.upsert({ ...guard, priority: 20 });
    expect(ic.ruleset().chains).toBe(before.chains);
    expect(ic.delta().writtenChains).toEqual([]);
    expect(ic.delta().memberChanges).toEqual([]);
    // Nor is any chain built again: the record differs from the last in its priority only.
    expect(ic.stats()?.chainsRecomputed).toBe(0);
    // A change to its rules is built, of course.
    m.upsert({ ...guard, priority: 20, ingress: guard.ingress.slice(1) });
    expect(text(ic.ruleset())).toBe(text(compile(m, 'n1')));
    expect(ic.stats()?.chainsRecomputed).toBeGreaterThan(0);
    // A policy for namespace z only (no local pod there): nothing is rebuilt.
    m.upsert(cnp('z-only', { tier: 'Admin', priority: 1, subject: { namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'z' } } }, ingress: [{ action: 'Deny', from: [{ namespaces: {} }] }] }));
    ic.ruleset();
    expect(ic.stats()?.chainsRecomputed).toBe(0);
    expect(ic.delta().writtenChains).toEqual([]);
    ic.dispose();
  });

  it('shared chains: a change to an Admin policy selecting every local pod rewrites its shared chain, not the NetworkPolicy chains', () => {
    const m = cluster();
    m.upsert(guard);
    const ic = new IncrementalCompiler(m, 'n1', SHARED);
    const before = ic.ruleset();
    m.upsert(cnp('guard', { tier: 'Admin', priority: 10, subject: XY, ingress: [{ name: 'no-db', action: 'Deny', from: [{ namespaces: {} }], protocols: [{ tcp: { destinationPort: { number: 5432 } } }] }] }));
    const after = ic.ruleset();
    expect(text(after)).toBe(text(compile(m, 'n1', SHARED)));
    const written = ic.delta().writtenChains.map((c) => c.name);
    expect(written.filter((n) => n.startsWith('PCTL-D-'))).toHaveLength(1);
    expect(written.filter((n) => /^PCTL-[EI]-/.test(n))).toEqual([]);
    // The NetworkPolicy chains are the same objects.
    for (const c of after.chains.filter((x) => x.name.startsWith('PCTL-I-'))) expect(before.chains).toContain(c);
    ic.dispose();
  });

  describe('the shared Admin prefix (Admin policies selecting every pod, first in the tier)', () => {
    const wideGuard = { ...guard, subject: cnp('w', { tier: 'Admin', priority: 10, subject: { namespaces: {} }, ingress: [] }).subject };
    const outside = pod('y', 'outside', { app: 'web' }, { ip: '10.99.0.5', node: 'n1', ports: [port(80, 'http')] });

    for (const [mode, opts] of [['default', {}], ['shared chains', SHARED]] as const) {
      it(`${mode}: its rules once, in PCTL-INGRESS-WIDE-R behind the pod-CIDR gate, none in the pods' chains; the same verdicts`, () => {
        const m = cluster();
        m.upsert(wideGuard);
        const rs = compile(m, 'n1', opts);
        const wideRules = rs.chains.find((c) => c.name === 'PCTL-INGRESS-WIDE-R')!;
        expect(wideRules.rules.map((r) => r.action)).toEqual([
          { kind: 'return' },
          { kind: 'log', prefix: dropLogPrefix({ kind: 'cnp', dir: 'Ingress', tier: 'Admin', index: 1, name: 'guard' }) },
          { kind: 'drop' },
          { kind: 'log', prefix: dropLogPrefix({ kind: 'unknown', dir: 'Egress' }) },
          { kind: 'drop' },
          { kind: 'goto', chain: 'PCTL-INGRESS' },
        ]);
        const gate = rs.chains.find((c) => c.name === 'PCTL-INGRESS-WIDE')!;
        expect(gate.rules.map((r) => [r.match, r.action])).toEqual([
          [{ dstNet: '10.244.1.0/24' }, { kind: 'goto', chain: 'PCTL-INGRESS-WIDE-R' }],
          [{}, { kind: 'goto', chain: 'PCTL-INGRESS' }],
        ]);
        expect(rs.chains.find((c) => c.name === 'PCTL-FORWARD')!.rules.map((r) => r.action)).toContainEqual({ kind: 'jump', chain: 'PCTL-INGRESS-WIDE' });
        // No egress rules: no egress prefix, and no pod has an Admin chain of its own.
        expect(names(rs)).not.toContain('PCTL-EGRESS-WIDE');
        expect(names(rs).filter((n) => /^PCTL-[AD]-/.test(n))).toEqual([]);
        expectGuardVerdicts(rs);
      });
    }

    it('a pod with an address outside the pod CIDRs misses the gate: it keeps the rules in its own Admin chain', () => {
      const m = cluster();
      m.upsert(wideGuard);
      m.upsert(outside);
      const rs = compile(m, 'n1');
      const own = rs.chains.filter((c) => c.name.startsWith('PCTL-D-'));
      expect(own).toHaveLength(1);
      expect(own[0]!.rules.map((r) => r.comment)).toContain('cnp/guard Admin Accept ingress[0]');
      expect(verdict(rs, outside.ips[0]!, 5432)).toBe('DROP');
      expect(verdict(rs, outside.ips[0]!, 80)).toBe('ACCEPT');
    });

    it('ends at a Pass, and at the first Admin policy that does not select every pod', () => {
      const m = cluster();
      m.upsert(wideGuard);
      m.upsert(cnp('narrow-first', { tier: 'Admin', priority: 5, subject: XY, egress: [{ action: 'Deny', to: [{ networks: ['169.254.169.254/32'] }] }] }));
      // narrow-first has no ingress rules: the ingress prefix still holds guard.
      expect(names(compile(m, 'n1'))).toContain('PCTL-INGRESS-WIDE-R');
      m.upsert(cnp('narrow-first', { tier: 'Admin', priority: 5, subject: XY, ingress: [{ action: 'Deny', from: [{ namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'q' } } }] }] }));
      expect(names(compile(m, 'n1'))).not.toContain('PCTL-INGRESS-WIDE-R');
      m.remove(m.findClusterPolicy('narrow-first')!.uid, 'ClusterNetworkPolicy');
      m.upsert(cnp('pass-first', { tier: 'Admin', priority: 5, subject: { namespaces: {} }, ingress: [{ action: 'Pass', from: [{ namespaces: {} }] }] }));
      const rs = compile(m, 'n1');
      expect(names(rs)).not.toContain('PCTL-INGRESS-WIDE-R');
      expect(rs.chains.filter((c) => c.name.startsWith('PCTL-D-')).length).toBeGreaterThan(0);
    });

    it('incremental: a change to such a policy rewrites the prefix chain alone, and looks at no pod chain', () => {
      const m = cluster();
      m.upsert(wideGuard);
      const ic = new IncrementalCompiler(m, 'n1');
      const before = ic.ruleset();
      m.upsert(cnp('guard', { tier: 'Admin', priority: 10, subject: { namespaces: {} }, ingress: [{ name: 'no-db', action: 'Deny', from: [{ namespaces: {} }], protocols: [{ tcp: { destinationPort: { number: 5432 } } }] }] }));
      const after = ic.ruleset();
      expect(text(after)).toBe(text(compile(m, 'n1')));
      expect(ic.delta().writtenChains.map((c) => c.name)).toEqual(['PCTL-INGRESS-WIDE-R']);
      expect(ic.stats()?.chainsRecomputed).toBe(0);
      for (const c of after.chains.filter((x) => x.name.startsWith('PCTL-I-'))) expect(before.chains).toContain(c);
      // Deleted: the prefix chains and the gate go, the top chain jumps to the dispatch again.
      m.remove(m.findClusterPolicy('guard')!.uid, 'ClusterNetworkPolicy');
      expect(text(ic.ruleset())).toBe(text(compile(m, 'n1')));
      expect([...ic.delta().removedChains].sort()).toEqual(['PCTL-INGRESS-WIDE', 'PCTL-INGRESS-WIDE-R']);
      ic.dispose();
    });
  });
});
