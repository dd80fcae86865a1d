// The tiered evaluation: Admin ClusterNetworkPolicies -> NetworkPolicies -> Baseline
// ClusterNetworkPolicies -> default allow, per direction. CNPs are written as manifests and read
// through normalize(), as every source reads them.

import { describe, expect, it } from 'vitest';
import { node, ns, nsPeer, pod, policy, port, rule, sel } from '../../test/support/builders.ts';
import { normalize } from '../model/normalize.ts';
import { Model } from '../model/store.ts';
import type { ClusterPolicyRecord, ObjectRecord, PodRecord, Protocol } from '../model/types.ts';
import { clusterPriorityTies } from './cluster-ties.ts';
import { allowed, podFlow } from './evaluate.ts';
import { explainPod } from './explain.ts';
import { reachTable } from './reach.ts';

const X = ns('x', { tenant: 'a' });
const Y = ns('y', { tenant: 'b' });
const Z = ns('z', { tenant: 'a', monitoring: 'yes' });
const xa = pod('x', 'a', { app: 'web' }, { ip: '10.244.1.10', node: 'n1', ports: [port(80, 'http'), port(53, 'dns', 'UDP')] });
const xb = pod('x', 'b', { app: 'db' }, { ip: '10.244.2.10', node: 'n2', ports: [port(5432, 'pg')] });
const ya = pod('y', 'a', { app: 'web' }, { ip: '10.244.1.11', node: 'n1', ports: [port(8080, 'http')] });
const za = pod('z', 'a', { app: 'prom' }, { ip: '10.244.2.11', node: 'n2', ports: [port(9090, 'metrics')] });
const host = pod('z', 'host', { app: 'prom' }, { ip: '192.168.50.12', node: 'n2', hostNetwork: true });
const N1 = node('n1', '10.244.1.0/24', '192.168.50.11');
const N2 = node('n2', '10.244.2.0/24', '192.168.50.12');

type Raw = Record<string, unknown>;

function cnp(name: string, spec: Raw): ClusterPolicyRecord {
  const r = normalize({ apiVersion: 'policy.networking.k8s.io/v1alpha2', kind: 'ClusterNetworkPolicy', metadata: { name }, spec });
  return r.record as ClusterPolicyRecord;
}

const nsNamed = (n: string): Raw => ({ namespaces: { matchLabels: { 'kubernetes.io/metadata.name': n } } });

function model(...extra: ObjectRecord[]): Model {
  const m = new Model();
  for (const r of [X, Y, Z, N1, N2, xa, xb, ya, za, host, ...extra]) m.upsert(r);
  return m;
}

const can = (m: Model, from: PodRecord, to: PodRecord, p: number, proto: Protocol = 'TCP') => allowed(m, podFlow(from, to, p, proto));

describe('tiers: Admin -> NetworkPolicy -> Baseline -> default', () => {
  it('without any policy everything is allowed by default, and the verdict says so', () => {
    const v = can(model(), ya, xa, 80);
    expect(v.allowed).toBe(true);
    expect(v.ingress.decidedBy).toEqual({ tier: 'Default' });
    expect(v.ingress.pathText).toBe('[NetworkPolicy] not isolated for ingress -> [default] allowed -> ALLOWED');
    // Existing callers read the same summary as before ClusterNetworkPolicies existed.
    expect(v.ingress.summary).toBe('x/a is not isolated for ingress');
  });

  it('an Admin Deny is final: a NetworkPolicy allowing the flow does not matter', () => {
    const wall = cnp('tenant-wall', { tier: 'Admin', priority: 10, subject: { namespaces: { matchLabels: { tenant: 'a' } } }, ingress: [{ name: 'no-b', action: 'Deny', from: [{ namespaces: { matchLabels: { tenant: 'b' } } }] }] });
    const allowAll = policy('x', 'allow-all', sel(), { ingress: [rule()] });
    const m = model(wall, allowAll);
    const v = can(m, ya, xa, 80);
    expect(v.allowed).toBe(false);
    expect(v.ingress.decidedBy).toEqual({ tier: 'Admin', policy: 'tenant-wall', priority: 10, ruleIndex: 0, ruleName: 'no-b', action: 'Deny' });
    expect(v.ingress.pathText).toBe('[Admin 10 cnp/tenant-wall rule "no-b"] Deny -> DENIED');
    expect(v.summary).toContain('cnp/tenant-wall');
    // The NetworkPolicy tier was not reached: no NetworkPolicy rule was evaluated, but isolation is still reported.
    expect(v.ingress.rules).toEqual([]);
    expect(v.ingress.isolatedBy).toEqual(['x/allow-all']);
    // Another tenant-a pod still reaches x/a.
    expect(can(m, za, xa, 80).allowed).toBe(true);
  });

  it('an Admin Accept is final for its direction: it overrides a NetworkPolicy deny', () => {
    const monitoring = cnp('monitoring', { tier: 'Admin', priority: 5, subject: { namespaces: {} }, ingress: [{ action: 'Accept', from: [{ namespaces: { matchLabels: { monitoring: 'yes' } } }] }] });
    const deny = policy('x', 'deny-all', sel(), { types: ['Ingress'] });
    const m = model(monitoring, deny);
    expect(can(m, za, xa, 80).allowed).toBe(true);
    expect(can(m, za, xa, 80).ingress.pathText).toBe('[Admin 5 cnp/monitoring rule 0] Accept -> ALLOWED');
    expect(can(m, ya, xa, 80).allowed).toBe(false);
    expect(can(m, ya, xa, 80).ingress.pathText).toBe('[Admin] cnp/monitoring selects the pod, no rule matches -> [NetworkPolicy] isolated by x/deny-all, no rule matches -> DENIED');
  });

  it('an Admin Pass lands on the NetworkPolicy tier; without NetworkPolicies on the Baseline tier', () => {
    const pass = cnp('tenant-wall', { tier: 'Admin', priority: 10, subject: { namespaces: {} }, ingress: [{ name: 'no-cross', action: 'Pass', from: [{ namespaces: {} }] }, { action: 'Deny', from: [{ namespaces: {} }] }] });
    const baseline = cnp('default-deny', { tier: 'Baseline', priority: 1, subject: { namespaces: {} }, ingress: [{ name: 'deny', action: 'Deny', from: [{ namespaces: {} }] }] });
    const denyX = policy('x', 'deny-all', sel(), { types: ['Ingress'] });
    const allowY = policy('y', 'allow-all', sel(), { ingress: [rule()] });
    const m = model(pass, baseline, denyX, allowY);
    // x: the NetworkPolicy decides (deny), the Admin Deny after the Pass is never reached.
    const toX = can(m, za, xa, 80);
    expect(toX.allowed).toBe(false);
    expect(toX.ingress.pathText).toBe('[Admin 10 cnp/tenant-wall rule "no-cross"] Pass -> [NetworkPolicy] isolated by x/deny-all, no rule matches -> DENIED');
    expect(toX.ingress.decidedBy).toEqual({ tier: 'NetworkPolicy' });
    // y: the NetworkPolicy allows, and the Baseline Deny does not matter.
    const toY = can(m, za, ya, 8080);
    expect(toY.allowed).toBe(true);
    expect(toY.ingress.allowedBy).toEqual({ policy: 'y/allow-all', ruleIndex: 0 });
    // z: no NetworkPolicy, so the Baseline Deny decides.
    const toZ = can(m, xa, za, 9090);
    expect(toZ.allowed).toBe(false);
    expect(toZ.ingress.pathText).toBe('[Admin 10 cnp/tenant-wall rule "no-cross"] Pass -> [NetworkPolicy] not isolated for ingress -> [Baseline 1 cnp/default-deny rule "deny"] Deny -> DENIED');
    expect(toZ.ingress.decidedBy).toMatchObject({ tier: 'Baseline', policy: 'default-deny', action: 'Deny' });
  });

  it('a Pass skips the rest of the Admin tier, later priorities included', () => {
    const pass = cnp('a-pass', { tier: 'Admin', priority: 1, subject: { namespaces: {} }, egress: [{ action: 'Pass', to: [{ namespaces: {} }] }] });
    const deny = cnp('b-deny', { tier: 'Admin', priority: 2, subject: { namespaces: {} }, egress: [{ action: 'Deny', to: [{ namespaces: {} }] }] });
    expect(can(model(pass, deny), xa, ya, 8080).allowed).toBe(true);
    expect(can(model(deny), xa, ya, 8080).allowed).toBe(false);
  });

  it('lower priority first; within a policy, rules in written order', () => {
    const accept = cnp('z-accept', { tier: 'Admin', priority: 1, subject: { namespaces: {} }, ingress: [{ action: 'Accept', from: [{ namespaces: {} }] }] });
    const deny = cnp('a-deny', { tier: 'Admin', priority: 2, subject: { namespaces: {} }, ingress: [{ action: 'Deny', from: [{ namespaces: {} }] }] });
    expect(can(model(accept, deny), ya, xa, 80).allowed).toBe(true);
    const reordered = cnp('z-accept', { tier: 'Admin', priority: 3, subject: { namespaces: {} }, ingress: [{ action: 'Accept', from: [{ namespaces: {} }] }] });
    expect(can(model(reordered, deny), ya, xa, 80).allowed).toBe(false);
    const ordered = cnp('one', { tier: 'Admin', priority: 1, subject: { namespaces: {} }, ingress: [{ action: 'Deny', from: [{ namespaces: {} }], protocols: [{ tcp: { destinationPort: { number: 80 } } }] }, { action: 'Accept', from: [{ namespaces: {} }] }] });
    expect(can(model(ordered), ya, xa, 80).allowed).toBe(false);
    expect(can(model(ordered), ya, xa, 81).allowed).toBe(true);
    expect(can(model(ordered), ya, xa, 81).ingress.clusterRules.map((r) => [r.ruleIndex, r.matched])).toEqual([
      [0, false],
      [1, true],
    ]);
  });

  it('a ClusterNetworkPolicy never isolates a pod by selecting it', () => {
    const onlyX = cnp('only-x', { tier: 'Admin', priority: 1, subject: { namespaces: {} }, ingress: [{ action: 'Accept', from: [nsNamed('x')] }] });
    const base = cnp('only-x-base', { tier: 'Baseline', priority: 1, subject: { namespaces: {} }, ingress: [{ action: 'Accept', from: [nsNamed('x')] }] });
    const m = model(onlyX, base);
    expect(can(m, ya, za, 9090).allowed).toBe(true);
    expect(can(m, ya, za, 9090).ingress.pathText).toBe('[Admin] cnp/only-x selects the pod, no rule matches -> [NetworkPolicy] not isolated for ingress -> [Baseline] cnp/only-x-base selects the pod, no rule matches -> [default] allowed -> ALLOWED');
  });

  it('an egress Accept at the client does not override ingress rules at the server', () => {
    const out = cnp('x-out', { tier: 'Admin', priority: 1, subject: nsNamed('x'), egress: [{ action: 'Accept', to: [{ namespaces: {} }] }] });
    const denyIn = policy('y', 'deny-in', sel(), { types: ['Ingress'] });
    const guard = cnp('z-guard', { tier: 'Baseline', priority: 1, subject: nsNamed('z'), ingress: [{ action: 'Deny', from: [nsNamed('x')] }] });
    const m = model(out, denyIn, guard);
    const toY = can(m, xa, ya, 8080);
    expect(toY.egress.allowed).toBe(true);
    expect(toY.ingress.allowed).toBe(false);
    expect(toY.allowed).toBe(false);
    expect(can(m, xa, za, 9090).allowed).toBe(false);
    expect(can(m, xa, xb, 5432).allowed).toBe(true);
  });

  it('an egress Deny blocks the flow even when the server accepts it', () => {
    const out = cnp('x-out', { tier: 'Admin', priority: 1, subject: nsNamed('x'), egress: [{ action: 'Deny', to: [nsNamed('y')] }] });
    const inY = cnp('y-in', { tier: 'Admin', priority: 0, subject: nsNamed('y'), ingress: [{ action: 'Accept', from: [nsNamed('x')] }] });
    const v = can(model(out, inY), xa, ya, 8080);
    expect([v.allowed, v.egress.allowed, v.ingress.allowed]).toEqual([false, false, true]);
    expect(v.summary).toBe('denied: [Admin 1 cnp/x-out rule 0] Deny -> DENIED');
  });

  it('a networks peer matches any address, pod IPs included, and only IPv4 CIDRs match IPv4', () => {
    const nets = cnp('nets', { tier: 'Admin', priority: 1, subject: nsNamed('x'), egress: [{ action: 'Deny', to: [{ networks: ['10.244.1.0/24', 'fd00::/8'] }] }] });
    const m = model(nets);
    expect(can(m, xb, ya, 8080).allowed).toBe(false); // ya is 10.244.1.11
    expect(can(m, xb, za, 9090).allowed).toBe(true); // za is 10.244.2.11
    expect(allowed(m, { src: { kind: 'pod', pod: xb }, dst: { kind: 'ip', ip: '10.244.1.200' }, port: 443, protocol: 'TCP' }).allowed).toBe(false);
    expect(allowed(m, { src: { kind: 'pod', pod: xb }, dst: { kind: 'ip', ip: '8.8.8.8' }, port: 443, protocol: 'TCP' }).allowed).toBe(true);
    // A host-network pod is no pod peer, but its address is an address.
    const toHost = cnp('to-host', { tier: 'Admin', priority: 1, subject: nsNamed('x'), egress: [{ action: 'Deny', to: [{ networks: ['192.168.50.12/32'] }] }, { action: 'Accept', to: [{ namespaces: {} }] }] });
    expect(can(model(toHost), xb, host, 9100).egress.allowed).toBe(false);
  });

  it('pods and namespaces peers never match host-network pods; subjects never select them', () => {
    const deny = cnp('deny-from-z', { tier: 'Admin', priority: 1, subject: { namespaces: {} }, ingress: [{ action: 'Deny', from: [nsNamed('z')] }] });
    const v = can(model(deny), host, xa, 80);
    expect(v.ingress.allowed).toBe(true);
    const subjectAll = cnp('everything', { tier: 'Admin', priority: 1, subject: { namespaces: {} }, egress: [{ action: 'Deny', to: [{ networks: ['0.0.0.0/0'] }] }] });
    expect(can(model(subjectAll), host, xa, 80).egress.enforced).toBe(false);
  });

  it('protocols: absent matches all traffic; ports and ranges per protocol', () => {
    const all = cnp('all', { tier: 'Admin', priority: 1, subject: nsNamed('x'), ingress: [{ action: 'Deny', from: [nsNamed('y')] }] });
    for (const [p, proto] of [
      [80, 'TCP'],
      [53, 'UDP'],
      [9, 'SCTP'],
    ] as const)
      expect(can(model(all), ya, xa, p, proto).allowed).toBe(false);
    const some = cnp('some', {
      tier: 'Admin',
      priority: 1,
      subject: nsNamed('x'),
      ingress: [{ action: 'Deny', from: [nsNamed('y')], protocols: [{ udp: { destinationPort: { number: 53 } } }, { tcp: { destinationPort: { range: { start: 5000, end: 5432 } } } }] }],
    });
    const m = model(some);
    expect(can(m, ya, xa, 53, 'UDP').allowed).toBe(false);
    expect(can(m, ya, xa, 53, 'TCP').allowed).toBe(true);
    expect(can(m, ya, xb, 5432).allowed).toBe(false);
    expect(can(m, ya, xb, 5000).allowed).toBe(false);
    expect(can(m, ya, xb, 5433).allowed).toBe(true);
  });

  it('destinationNamedPort resolves on the destination pod, with the port\'s own protocol', () => {
    const named = cnp('named', { tier: 'Admin', priority: 1, subject: { namespaces: {} }, egress: [{ action: 'Deny', to: [{ namespaces: {} }], protocols: [{ destinationNamedPort: 'http' }] }] });
    const m = model(named);
    expect(can(m, za, xa, 80).allowed).toBe(false); // x/a: http = 80/TCP
    expect(can(m, za, ya, 8080).allowed).toBe(false); // y/a: http = 8080/TCP
    expect(can(m, za, ya, 80).allowed).toBe(true);
    expect(can(m, za, xa, 80, 'UDP').allowed).toBe(true);
    expect(can(m, za, xb, 5432).allowed).toBe(true); // no port named http
    const ingress = cnp('named-in', { tier: 'Admin', priority: 1, subject: nsNamed('x'), ingress: [{ action: 'Deny', from: [{ namespaces: {} }], protocols: [{ destinationNamedPort: 'dns' }] }] });
    expect(can(model(ingress), za, xa, 53, 'UDP').allowed).toBe(false);
    expect(can(model(ingress), za, xa, 53, 'TCP').allowed).toBe(true);
    // Never on an address that is not a pod.
    expect(allowed(m, { src: { kind: 'pod', pod: za }, dst: { kind: 'ip', ip: '1.2.3.4' }, port: 80, protocol: 'TCP' }).allowed).toBe(true);
  });

  it('pods peers: namespace selector and pod selector both apply', () => {
    const p = cnp('p', { tier: 'Baseline', priority: 1, subject: { pods: { namespaceSelector: {}, podSelector: { matchLabels: { app: 'web' } } } }, ingress: [{ action: 'Deny', from: [{ pods: { namespaceSelector: { matchLabels: { tenant: 'a' } }, podSelector: { matchLabels: { app: 'prom' } } } }] }] });
    const m = model(p);
    expect(can(m, za, xa, 80).allowed).toBe(false);
    expect(can(m, za, ya, 8080).allowed).toBe(false);
    expect(can(m, xb, xa, 80).allowed).toBe(true); // db is no prom
    expect(can(m, za, xb, 5432).allowed).toBe(true); // x/b is not in the subject
  });

  it('unsupported peers fail closed: an Accept rule matches nothing, a Deny or Pass rule denies all', () => {
    const accept = cnp('dns-only', { tier: 'Admin', priority: 1, subject: nsNamed('x'), egress: [{ action: 'Accept', to: [{ domainNames: ['*.example.com'] }, { namespaces: {} }] }, { action: 'Deny', to: [{ networks: ['0.0.0.0/0'] }] }] });
    expect(accept.unsupported.map((i) => i.field)).toEqual(['spec.egress[0].to[0]']);
    expect(accept.egress[0]).toMatchObject({ action: 'Accept', peers: [] });
    expect(can(model(accept), xa, ya, 8080).allowed).toBe(false); // the Accept matches nothing; the Deny after it decides
    const pass = cnp('nodes', { tier: 'Admin', priority: 1, subject: nsNamed('x'), egress: [{ action: 'Pass', to: [{ nodes: { matchLabels: { role: 'infra' } } }] }] });
    expect(pass.egress[0]).toMatchObject({ action: 'Deny', peers: [{ kind: 'any' }] });
    const v = can(model(pass), xa, ya, 8080);
    expect(v.allowed).toBe(false);
    expect(v.egress.clusterRules[0]!.failClosed).toContain('nodes');
    const unknown = cnp('future', { tier: 'Baseline', priority: 1, subject: nsNamed('x'), ingress: [{ action: 'Deny', from: [{ serviceAccounts: {} }] }] });
    expect(can(model(unknown), za, xa, 80).allowed).toBe(false);
  });

  it('a subject with no known field selects every pod, each rule failing closed', () => {
    const future = cnp('future', { tier: 'Admin', priority: 1, subject: { serviceAccounts: { name: 'x' } }, ingress: [{ action: 'Accept', from: [{ namespaces: {} }] }], egress: [{ action: 'Pass', to: [{ namespaces: {} }] }] });
    expect(future.issues).toEqual([]);
    expect(future.unsupported.map((i) => i.field)).toEqual(['spec.subject']);
    const m = model(future);
    expect(can(m, ya, za, 9090).egress.allowed).toBe(false);
    expect(can(m, ya, za, 9090).ingress.allowed).toBe(true); // the Accept matches nothing
  });

  it('an invalid ClusterNetworkPolicy denies all traffic of the directions it has rules for', () => {
    const bad = cnp('bad', { tier: 'Baseline', priority: 1, subject: nsNamed('x'), ingress: [{ action: 'Allow', from: [{ namespaces: {} }] }] });
    expect(bad.issues.map((i) => i.field)).toEqual(['spec.ingress[0].action']);
    const m = model(bad);
    expect(can(m, ya, xa, 80).allowed).toBe(false);
    expect(can(m, ya, xa, 80).ingress.clusterRules[0]!.failClosed).toContain('invalid');
    expect(can(m, xa, ya, 8080).allowed).toBe(true); // no egress rules: egress untouched
    // A NetworkPolicy still decides before a Baseline policy, invalid or not.
    expect(can(model(bad, policy('x', 'allow', sel(), { ingress: [rule()] })), ya, xa, 80).allowed).toBe(true);
  });

  it('two policies of one tier and priority that both match: name order, and a warning', () => {
    const b = cnp('b-deny', { tier: 'Admin', priority: 7, subject: { namespaces: {} }, ingress: [{ action: 'Deny', from: [nsNamed('y')] }] });
    const a = cnp('a-accept', { tier: 'Admin', priority: 7, subject: { namespaces: {} }, ingress: [{ action: 'Accept', from: [{ namespaces: {} }] }] });
    const m = model(b, a);
    const v = can(m, ya, xa, 80);
    expect(v.allowed).toBe(true);
    expect(v.ingress.decidedBy?.policy).toBe('a-accept');
    expect(v.ingress.warnings).toEqual([
      'cnp/a-accept and cnp/b-deny are both Admin priority 7 and both match this ingress flow; the API leaves their order undefined: policyctl applies them in name order (cnp/a-accept first)',
    ]);
    expect(can(m, za, xa, 80).ingress.warnings).toEqual([]); // b-deny does not match from z
    expect(clusterPriorityTies(m).map((t) => [t.tier, t.priority, t.policies, t.pod])).toEqual([['Admin', 7, ['a-accept', 'b-deny'], 'x/a']]);
    const other = cnp('b-deny', { tier: 'Admin', priority: 8, subject: { namespaces: {} }, ingress: [{ action: 'Deny', from: [nsNamed('y')] }] });
    expect(clusterPriorityTies(model(other, a))).toEqual([]);
  });

  it('fixed facts come before every tier: an unknown address of a pod CIDR gets nothing', () => {
    const accept = cnp('accept-all', { tier: 'Admin', priority: 0, subject: { namespaces: {} }, egress: [{ action: 'Accept', to: [{ networks: ['0.0.0.0/0'] }] }] });
    const v = allowed(model(accept), { src: { kind: 'pod', pod: xa }, dst: { kind: 'ip', ip: '10.244.2.99' }, port: 80, protocol: 'TCP' });
    expect(v.allowed).toBe(false);
    expect(v.fact).toContain('not a pod that node enforces');
    const deny = cnp('deny-all', { tier: 'Admin', priority: 0, subject: { namespaces: {} }, ingress: [{ action: 'Deny', from: [{ namespaces: {} }] }] });
    expect(can(model(deny), xa, xa, 80).allowed).toBe(true); // a pod reaches itself
  });

  it('reach covers ClusterNetworkPolicies; its rows keep their shape', () => {
    const wall = cnp('wall', { tier: 'Admin', priority: 1, subject: { namespaces: { matchLabels: { tenant: 'a' } } }, ingress: [{ action: 'Deny', from: [{ namespaces: { matchLabels: { tenant: 'b' } } }] }] });
    const rows = reachTable(model(wall), { ports: [{ port: 80, protocol: 'TCP' }] });
    expect(Object.keys(rows[0]!)).toEqual(['from', 'to', 'port', 'protocol', 'allowed']);
    const denied = rows.filter((r) => !r.allowed).map((r) => `${r.from}->${r.to}`);
    expect(denied).toEqual(['y/a->x/a', 'y/a->x/b', 'y/a->z/a']);
  });

  it('explain lists the ClusterNetworkPolicies selecting the pod in evaluation order', () => {
    const base = cnp('base', { tier: 'Baseline', priority: 0, subject: { namespaces: {} }, ingress: [{ action: 'Deny', from: [{ namespaces: {} }] }] });
    const second = cnp('second', { tier: 'Admin', priority: 9, subject: nsNamed('x'), egress: [{ action: 'Pass', to: [{ networks: ['10.0.0.0/8'] }], protocols: [{ destinationNamedPort: 'http' }] }] });
    const first = cnp('first', { tier: 'Admin', priority: 3, subject: nsNamed('y'), egress: [{ action: 'Pass', to: [{ namespaces: {} }] }] });
    const r = explainPod(model(base, second, first), xa);
    expect(r.clusterPolicies.map((c) => [c.tier, c.priority, c.name])).toEqual([
      ['Admin', 9, 'second'],
      ['Baseline', 0, 'base'],
    ]);
    // destinationNamedPort with a networks peer is refused (no named ports outside pods): fail closed.
    expect(second.issues.map((i) => i.field)).toEqual(['spec.egress[0].protocols']);
    expect(r.clusterPolicies[0]!.egress[0]).toMatchObject({ action: 'Deny', peers: [{ kind: 'any' }] });
    expect(r.clusterPolicies[1]!.ingress[0]!.peers[0]).toMatchObject({ kind: 'pods', pods: ['x/a', 'x/b', 'y/a', 'z/a'] });
  });

  it('NetworkPolicies alone read exactly as before (fields and summaries)', () => {
    const np = policy('x', 'allow-web', sel(), { ingress: [rule([nsPeer(sel({ tenant: 'b' }))])] });
    const v = can(model(np), ya, xa, 80);
    expect(v.ingress).toMatchObject({ enforced: true, isolatedBy: ['x/allow-web'], allowed: true, allowedBy: { policy: 'x/allow-web', ruleIndex: 0 }, decidedBy: { tier: 'NetworkPolicy', policy: 'x/allow-web', ruleIndex: 0 } });
    expect(v.ingress.summary).toMatch(/^ingress of x\/a allowed by x\/allow-web ingress rule 0/);
    expect(v.ingress.pathText).toBe('[NetworkPolicy] allowed by x/allow-web ingress rule 0 -> ALLOWED');
  });
});
