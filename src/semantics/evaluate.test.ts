import { describe, expect, it } from 'vitest';
import type { PodRecord, PolicyRecord, Protocol } from '../model/types.ts';
import { block, modelOf, node, ns, nsPeer, pod, podsPeer, policy, port, ports, rule, sel } from '../../test/support/builders.ts';
import { allowed, type Endpoint } from './evaluate.ts';

// The standard cluster of these tables: two namespaces, pods with named ports on two nodes.
const X = ns('x', { team: 'a' });
const Y = ns('y', { team: 'b' });
const xa = pod('x', 'a', { app: 'web' }, { ip: '10.244.1.10', node: 'n1', ports: [port(80, 'http'), port(53, 'dns', 'UDP')] });
const xb = pod('x', 'b', { app: 'db' }, { ip: '10.244.1.11', node: 'n1' });
const xn = pod('x', 'nolabel', {}, { ip: '10.244.2.12', node: 'n2' });
const yc = pod('y', 'c', { app: 'web' }, { ip: '10.244.2.10', node: 'n2', ports: [port(8080, 'http'), port(81, 'sctp-port', 'SCTP')] });
const yd = pod('y', 'd', { app: 'db' }, { ip: '10.244.2.11', node: 'n2' });
const host = pod('x', 'host', { app: 'db' }, { ip: '192.168.50.12', node: 'n2', hostNetwork: true });
const N1 = node('n1', '10.244.1.0/24', '192.168.50.11');

const P = (p: PodRecord): Endpoint => ({ kind: 'pod', pod: p });
const IP = (ip: string): Endpoint => ({ kind: 'ip', ip });

interface Case {
  name: string;
  policies: PolicyRecord[];
  from: Endpoint;
  to: Endpoint;
  port: number;
  protocol?: Protocol;
  allowed: boolean;
  /** A substring the verdict's summary must contain: the reason, not only the bit. */
  why?: string;
}

const denyIngressX = policy('x', 'deny', sel(), { types: ['Ingress'], ingress: [] });

const cases: Case[] = [
  { name: 'no policy: allowed', policies: [], from: P(yc), to: P(xa), port: 80, allowed: true, why: 'not isolated' },
  { name: 'default deny ingress', policies: [denyIngressX], from: P(yc), to: P(xa), port: 80, allowed: false, why: 'isolated for ingress by x/deny' },
  { name: 'default deny ingress leaves egress open', policies: [denyIngressX], from: P(xa), to: P(yc), port: 8080, allowed: true },
  {
    name: 'podSelector alone means the policy namespace',
    policies: [policy('x', 'p', sel({ app: 'web' }), { ingress: [rule([podsPeer('x', sel({ app: 'db' }))])] })],
    from: P(yd),
    to: P(xa),
    port: 80,
    allowed: false,
    why: 'applies only in namespace x',
  },
  {
    name: 'podSelector allows the matching pod',
    policies: [policy('x', 'p', sel({ app: 'web' }), { ingress: [rule([podsPeer('x', sel({ app: 'db' }))])] })],
    from: P(xb),
    to: P(xa),
    port: 80,
    allowed: true,
    why: 'allowed by x/p ingress rule 0',
  },
  {
    name: 'namespaceSelector',
    policies: [policy('x', 'p', sel(), { ingress: [rule([nsPeer(sel({ team: 'b' }))])] })],
    from: P(yc),
    to: P(xa),
    port: 80,
    allowed: true,
  },
  {
    name: 'namespaceSelector does not match own namespace',
    policies: [policy('x', 'p', sel(), { ingress: [rule([nsPeer(sel({ team: 'b' }))])] })],
    from: P(xb),
    to: P(xa),
    port: 80,
    allowed: false,
    why: 'wants team=b, has team=a',
  },
  {
    name: 'namespaceSelector AND podSelector in one peer',
    policies: [policy('x', 'p', sel(), { ingress: [rule([nsPeer(sel({ team: 'b' }), sel({ app: 'db' }))])] })],
    from: P(yc),
    to: P(xa),
    port: 80,
    allowed: false,
    why: 'wants app=db, has app=web',
  },
  {
    name: 'namespaceSelector OR podSelector as two peers',
    policies: [policy('x', 'p', sel(), { ingress: [rule([nsPeer(sel({ team: 'b' })), podsPeer('x', sel({ app: 'db' }))])] })],
    from: P(yc),
    to: P(xa),
    port: 80,
    allowed: true,
  },
  {
    name: 'NotIn matches a pod lacking the key',
    policies: [policy('x', 'p', sel(), { ingress: [rule([podsPeer('x', sel({}, [{ key: 'app', operator: 'NotIn', values: ['web'] }]))])] })],
    from: P(xn),
    to: P(xa),
    port: 80,
    allowed: true,
  },
  {
    name: 'DoesNotExist matches a pod lacking the key, not one having it',
    policies: [policy('x', 'p', sel(), { ingress: [rule([podsPeer('x', sel({}, [{ key: 'app', operator: 'DoesNotExist', values: [] }]))])] })],
    from: P(xb),
    to: P(xa),
    port: 80,
    allowed: false,
    why: 'wants !app, has app=db',
  },
  { name: 'ingress [{}] allows everything', policies: [policy('x', 'p', sel(), { ingress: [rule()] })], from: IP('8.8.8.8'), to: P(xa), port: 1, allowed: true },
  {
    name: 'policyTypes [Egress] does not isolate ingress',
    policies: [policy('x', 'p', sel(), { types: ['Egress'], egress: [] })],
    from: P(yc),
    to: P(xa),
    port: 80,
    allowed: true,
  },
  {
    name: 'ingress named port resolves on the selected pod',
    policies: [policy('x', 'p', sel(), { ingress: [rule(undefined, ports('http'))] })],
    from: P(yc),
    to: P(xa),
    port: 80,
    allowed: true,
    why: 'resolves to 80 on x/a',
  },
  {
    name: 'ingress named port: other number denied',
    policies: [policy('x', 'p', sel(), { ingress: [rule(undefined, ports('http'))] })],
    from: P(yc),
    to: P(xa),
    port: 81,
    allowed: false,
    why: 'not 81',
  },
  {
    name: 'named port includes protocol',
    policies: [policy('x', 'p', sel(), { ingress: [rule(undefined, ports({ protocol: 'TCP', port: 'dns' }))] })],
    from: P(yc),
    to: P(xa),
    port: 53,
    allowed: false,
    why: 'has no TCP port named dns',
  },
  {
    name: 'egress named port resolves on the destination pod',
    policies: [policy('x', 'p', sel({ app: 'db' }), { types: ['Egress'], egress: [rule([nsPeer(sel())], ports('http'))] })],
    from: P(xb),
    to: P(yc),
    port: 8080,
    allowed: true,
    why: 'resolves to 8080 on y/c',
  },
  {
    name: 'egress named port never matches an ipBlock destination',
    policies: [policy('x', 'p', sel({ app: 'db' }), { types: ['Egress'], egress: [rule([block('10.0.0.0/8')], ports('http'))] })],
    from: P(xb),
    to: P(yc),
    port: 8080,
    allowed: false,
    why: 'never matches a destination matched only by an ipBlock',
  },
  { name: 'endPort range includes', policies: [policy('x', 'p', sel(), { ingress: [rule(undefined, ports([80, 90]))] })], from: P(yc), to: P(xa), port: 90, allowed: true },
  { name: 'endPort range excludes', policies: [policy('x', 'p', sel(), { ingress: [rule(undefined, ports([80, 90]))] })], from: P(yc), to: P(xa), port: 91, allowed: false },
  {
    name: 'protocol mismatch',
    policies: [policy('x', 'p', sel(), { ingress: [rule(undefined, ports({ protocol: 'UDP', port: 80 }))] })],
    from: P(yc),
    to: P(xa),
    port: 80,
    allowed: false,
    why: 'protocol TCP is not UDP',
  },
  {
    name: 'SCTP port',
    policies: [policy('y', 'p', sel(), { ingress: [rule(undefined, ports({ protocol: 'SCTP', port: 'sctp-port' }))] })],
    from: P(xa),
    to: P(yc),
    port: 81,
    protocol: 'SCTP',
    allowed: true,
  },
  {
    name: 'ipBlock with except: inside',
    policies: [policy('x', 'p', sel(), { types: ['Egress'], egress: [rule([block('10.0.0.0/8', ['10.244.0.0/16'])])] })],
    from: P(xa),
    to: IP('10.1.2.3'),
    port: 443,
    allowed: true,
  },
  {
    name: 'ipBlock with except: in the hole',
    policies: [policy('x', 'p', sel(), { types: ['Egress'], egress: [rule([block('10.0.0.0/8', ['10.244.0.0/16'])])] })],
    from: P(xa),
    to: P(yc),
    port: 8080,
    allowed: false,
    why: 'is in except 10.244.0.0/16',
  },
  {
    name: '0.0.0.0/0 except one /1',
    policies: [policy('x', 'p', sel(), { types: ['Egress'], egress: [rule([block('0.0.0.0/0', ['128.0.0.0/1'])])] })],
    from: P(xa),
    to: IP('200.1.1.1'),
    port: 443,
    allowed: false,
  },
  { name: 'a pod can always reach itself', policies: [denyIngressX, policy('x', 'e', sel(), { types: ['Egress'], egress: [] })], from: P(xa), to: P(xa), port: 80, allowed: true, why: 'itself' },
  { name: 'the node reaches its own pods', policies: [denyIngressX], from: IP('192.168.50.11'), to: P(xa), port: 80, allowed: true, why: 'own node' },
  {
    name: 'a hostNetwork pod reaches pods of its own node',
    policies: [denyIngressX],
    from: P(pod('x', 'host1', {}, { ip: '192.168.50.11', node: 'n1', hostNetwork: true })),
    to: P(xa),
    port: 80,
    allowed: true,
    why: 'own node n1',
  },
  { name: 'hostNetwork destination is not enforced', policies: [denyIngressX], from: P(yc), to: P(host), port: 80, allowed: true, why: 'uses the host network' },
  {
    name: 'hostNetwork source does not match pod selectors',
    policies: [policy('x', 'p', sel(), { ingress: [rule([podsPeer('x', sel({ app: 'db' }))])] })],
    from: P(host),
    to: P(xa),
    port: 80,
    allowed: false,
    why: 'uses the host network',
  },
  {
    name: 'invalid policy isolates and allows nothing',
    policies: [policy('x', 'bad', sel(), { ingress: [rule()], invalid: true })],
    from: P(yc),
    to: P(xa),
    port: 80,
    allowed: false,
    why: 'isolated for ingress by x/bad',
  },
  {
    name: 'several policies: union of their rules',
    policies: [denyIngressX, policy('x', 'allow-db', sel(), { ingress: [rule([podsPeer('x', sel({ app: 'db' }))])] })],
    from: P(xb),
    to: P(xa),
    port: 80,
    allowed: true,
    why: 'allowed by x/allow-db ingress rule 0',
  },
  {
    name: 'egress of the source and ingress of the destination both count',
    policies: [policy('y', 'e', sel(), { types: ['Egress'], egress: [rule([nsPeer(sel({ team: 'a' }))])] }), denyIngressX],
    from: P(yc),
    to: P(xa),
    port: 80,
    allowed: false,
    why: 'isolated for ingress',
  },
  // The node's bridge holds its pod CIDR's first address: the node's, not an unknown pod address.
  { name: "a pod to its node's bridge address: its egress only (not isolated)", policies: [], from: P(xa), to: IP('10.244.1.1'), port: 53, allowed: true, why: 'ingress not enforced: the destination is not a pod' },
  {
    name: "a pod to its node's bridge address under egress isolation: denied by its egress",
    policies: [policy('x', 'no-egress', sel(), { types: ['Egress'] })],
    from: P(xa),
    to: IP('10.244.1.1'),
    port: 53,
    allowed: false,
    why: 'isolated for egress by x/no-egress',
  },
  {
    name: "a pod to its node's bridge address allowed by an ipBlock",
    policies: [policy('x', 'node-only', sel(), { types: ['Egress'], egress: [rule([block('10.244.1.1/32')])] })],
    from: P(xa),
    to: IP('10.244.1.1'),
    port: 53,
    allowed: true,
  },
  { name: "the bridge's address to a pod of its node: the node's own traffic (kubelet probes)", policies: [denyIngressX], from: IP('10.244.1.1'), to: P(xa), port: 80, allowed: true, why: "the pod's own node n1" },
  { name: 'another unprogrammed address of the pod CIDR still gets nothing', policies: [], from: P(xa), to: IP('10.244.1.2'), port: 80, allowed: false, why: 'not a pod that node enforces' },
];

describe('allowed(flow)', () => {
  it.each(cases)('$name', (c) => {
    const m = modelOf(X, Y, N1, xa, xb, xn, yc, yd, host, ...c.policies);
    const v = allowed(m, { src: c.from, dst: c.to, port: c.port, protocol: c.protocol ?? 'TCP' });
    expect(v.allowed, v.summary).toBe(c.allowed);
    if (c.why) expect(v.summary).toContain(c.why);
  });

  it('names the rule that allowed and why each other rule did not match', () => {
    const m = modelOf(
      X,
      Y,
      xa,
      xb,
      yc,
      denyIngressX,
      policy('x', 'allow', sel({ app: 'web' }), { ingress: [rule([nsPeer(sel({ team: 'b' }))], ports(81)), rule([podsPeer('x', sel({ app: 'db' }))])] }),
    );
    const v = allowed(m, { src: P(xb), dst: P(xa), port: 80, protocol: 'TCP' });
    expect(v.allowed).toBe(true);
    expect(v.ingress.isolatedBy).toEqual(['x/allow', 'x/deny']);
    expect(v.ingress.allowedBy).toEqual({ policy: 'x/allow', ruleIndex: 1 });
    const r0 = v.ingress.rules.find((r) => r.ruleIndex === 0)!;
    expect(r0.matched).toBe(false);
    expect(r0.summary).toContain('wants team=b, has team=a');
    const denied = allowed(m, { src: P(yc), dst: P(xa), port: 80, protocol: 'TCP' });
    expect(denied.allowed).toBe(false);
    expect(denied.ingress.rules.map((r) => r.summary).join('\n')).toContain('does not include 80');
  });
});
