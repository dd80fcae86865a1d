// ClusterNetworkPolicy manifests -> records: what the CRD accepts, what it refuses (with the
// field path and the value), and the fail-closed forms.

import { describe, expect, it } from 'vitest';
import { normalize } from './normalize.ts';
import type { ClusterPolicyRecord } from './types.ts';

type Raw = Record<string, unknown>;
const API = 'policy.networking.k8s.io/v1alpha2';

function read(spec: unknown, extra: Raw = {}) {
  const r = normalize({ apiVersion: API, kind: 'ClusterNetworkPolicy', metadata: { name: 'p' }, spec, ...extra });
  return { ...r, cnp: r.record as ClusterPolicyRecord };
}

const subject = { namespaces: {} };
const from = [{ namespaces: {} }];
const valid = (rule: Raw, dir: 'ingress' | 'egress' = 'ingress'): Raw => ({ tier: 'Admin', priority: 1, subject, [dir]: [{ action: 'Deny', [dir === 'ingress' ? 'from' : 'to']: from, ...rule }] });
const issues = (spec: unknown) => read(spec).issues.map((i) => `${i.field}: ${i.message} (got ${i.value})`);

describe('ClusterNetworkPolicy: reading a valid policy', () => {
  it('is a known, cluster-scoped kind; its reference is clusternetworkpolicy/NAME', () => {
    const r = read({ tier: 'Baseline', priority: 1000, subject: { pods: { podSelector: { matchLabels: { app: 'x' } } } } }, { metadata: { name: 'p', namespace: 'ignored' } });
    expect(r.ref).toBe('clusternetworkpolicy/p');
    expect(r.issues).toEqual([]);
    expect(r.cnp).toMatchObject({ kind: 'ClusterNetworkPolicy', uid: 'p', name: 'p', tier: 'Baseline', priority: 1000, ingress: [], egress: [], issues: [], unsupported: [] });
    // pods.namespaceSelector absent: every namespace.
    expect(r.cnp.subject).toEqual({
      kind: 'pods',
      namespaces: { kind: 'selector', selector: { requirements: [] } },
      pods: { requirements: [{ key: 'app', operator: 'In', values: ['x'], origin: 'matchLabels' }] },
    });
  });

  it('reads rules in order with names, actions, peers and protocols', () => {
    const r = read({
      tier: 'Admin',
      priority: 0,
      subject: { namespaces: { matchLabels: { team: 'a' } } },
      ingress: [
        { name: 'dns', action: 'Accept', from: [{ namespaces: {} }, { pods: { namespaceSelector: { matchLabels: { a: 'b' } }, podSelector: {} } }], protocols: [{ udp: { destinationPort: { number: 53 } } }, { destinationNamedPort: 'dns-tcp' }] },
        { action: 'Pass', from: [{ namespaces: {} }] },
      ],
      egress: [{ name: 'out', action: 'Deny', to: [{ networks: ['10.0.0.1/8', 'fd00::/8'] }], protocols: [{ sctp: { destinationPort: { range: { start: 1, end: 65535 } } } }] }],
    });
    expect(r.issues).toEqual([]);
    expect(r.cnp.ingress.map((x) => [x.name, x.action, x.peers.length, x.protocols])).toEqual([
      [
        'dns',
        'Accept',
        2,
        [
          { kind: 'port', protocol: 'UDP', port: 53 },
          { kind: 'namedPort', name: 'dns-tcp' },
        ],
      ],
      ['', 'Pass', 1, undefined],
    ]);
    const nets = r.cnp.egress[0]!.peers[0]!;
    expect(nets.kind === 'networks' && nets.cidrs.map((c) => c.text)).toEqual(['10.0.0.0/8', 'fd00::/8']);
    expect(r.cnp.egress[0]!.protocols).toEqual([{ kind: 'port', protocol: 'SCTP', port: 1, endPort: 65535 }]);
  });

  it('an empty rule list affects nothing; 25 rules of 25 peers and 25 protocols are accepted', () => {
    expect(read({ tier: 'Admin', priority: 1, subject, ingress: [], egress: [] }).issues).toEqual([]);
    const peers = Array.from({ length: 25 }, () => ({ namespaces: {} }));
    const protocols = Array.from({ length: 25 }, (_, i) => ({ tcp: { destinationPort: { number: i + 1 } } }));
    const rules = Array.from({ length: 25 }, () => ({ action: 'Deny', from: peers, protocols }));
    expect(read({ tier: 'Admin', priority: 1, subject, ingress: rules }).issues).toEqual([]);
  });
});

describe('ClusterNetworkPolicy: validated like the CRD, field by field', () => {
  it.each<[string, unknown, string[]]>([
    ['spec missing', undefined, ['spec: required field is missing (got )']],
    ['tier, priority, subject missing', {}, ['spec.tier: required field is missing (Admin or Baseline) (got )', 'spec.priority: required field is missing (0 to 1000, lower first) (got )', 'spec.subject: required field is missing (namespaces or pods) (got )']],
    ['tier in the wrong case', { tier: 'admin', priority: 1, subject }, ['spec.tier: unsupported value: must be Admin or Baseline (got "admin")']],
    ['priority above 1000', { tier: 'Admin', priority: 1001, subject }, ['spec.priority: must be between 0 and 1000, inclusive (got 1001)']],
    ['priority negative', { tier: 'Admin', priority: -1, subject }, ['spec.priority: must be between 0 and 1000, inclusive (got -1)']],
    ['priority quoted', { tier: 'Admin', priority: '5', subject }, ['spec.priority: must be an integer from 0 to 1000 (unquoted in YAML) (got "5")']],
    ['both subject fields', { tier: 'Admin', priority: 1, subject: { namespaces: {}, pods: { podSelector: {} } } }, ['spec.subject: must set exactly one of namespaces or pods (got {"namespaces":{},"pods":{"podSelector":{}}})']],
    ['subject pods without podSelector', { tier: 'Admin', priority: 1, subject: { pods: { namespaceSelector: {} } } }, ['spec.subject.pods.podSelector: required field is missing (use {} to select every pod) (got )']],
    ['an unknown spec field', { tier: 'Admin', priority: 1, subject, ports: [] }, ['spec.ports: unknown field "ports" (known: tier, priority, subject, ingress, egress) (got [])']],
    ['a bad selector', { tier: 'Admin', priority: 1, subject: { namespaces: { matchLabels: { 'a b': 'c' } } } }, ["spec.subject.namespaces.matchLabels: invalid label key: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (got \"a b\")"]],
    ['action Allow (v1alpha1)', valid({ action: 'Allow' }), ['spec.ingress[0].action: unsupported value: must be one of Accept, Deny, Pass (got "Allow")']],
    ['action missing', valid({ action: undefined }), ['spec.ingress[0].action: required field is missing (Accept, Deny, Pass) (got )']],
    ['from empty', valid({ from: [] }), ['spec.ingress[0].from: must have at least 1 item (got [])']],
    ['from missing', valid({ from: undefined }), ['spec.ingress[0].from: required field is missing (at least one peer) (got )']],
    ['to on an ingress rule', valid({ to: from }), ['spec.ingress[0].to: unknown field "to" (known: name, action, from, protocols) (got [{"namespaces":{}}])']],
    ['a peer with two fields', valid({ from: [{ namespaces: {}, pods: { podSelector: {} } }] }), ['spec.ingress[0].from[0]: must set exactly one of namespaces, pods (got namespaces, pods) (got {"namespaces":{},"pods":{"podSelector":{}}})']],
    ['networks on ingress', valid({ from: [{ namespaces: {}, networks: ['10.0.0.0/8'] }] }), ['spec.ingress[0].from[0].networks: unknown field "networks" (known: namespaces, pods) (got ["10.0.0.0/8"])']],
    ['a rule name of 101 characters', valid({ name: 'n'.repeat(101) }), [`spec.ingress[0].name: must be no more than 100 characters (got "${'n'.repeat(101)}")`]],
    ['26 peers', valid({ from: Array.from({ length: 26 }, () => ({ namespaces: {} })) }), ['spec.ingress[0].from: must have at most 25 peers (got 26)']],
    ['protocols empty', valid({ protocols: [] }), ['spec.ingress[0].protocols: must have at least 1 item (leave protocols out to match all traffic) (got [])']],
    ['two protocol fields', valid({ protocols: [{ tcp: { destinationPort: { number: 1 } }, udp: { destinationPort: { number: 1 } } }] }), ['spec.ingress[0].protocols[0]: must set exactly one of tcp, udp, sctp, destinationNamedPort (got tcp, udp) (got {"tcp":{"destinationPort":{"number":1}},"udp":{"destinationPort":{"number":1}}})']],
    ['tcp without destinationPort', valid({ protocols: [{ tcp: {} }] }), ['spec.ingress[0].protocols[0].tcp.destinationPort: required field is missing: give number or range (range 1-65535 for every TCP port) (got )']],
    ['port 0', valid({ protocols: [{ udp: { destinationPort: { number: 0 } } }] }), ['spec.ingress[0].protocols[0].udp.destinationPort.number: must be between 1 and 65535, inclusive (got 0)']],
    ['number and range', valid({ protocols: [{ udp: { destinationPort: { number: 1, range: { start: 1, end: 2 } } } }] }), ['spec.ingress[0].protocols[0].udp.destinationPort: must set exactly one of number or range (got both) (got {"number":1,"range":{"start":1,"end":2}})']],
    ['range start = end', valid({ protocols: [{ tcp: { destinationPort: { range: { start: 80, end: 80 } } } }] }), ['spec.ingress[0].protocols[0].tcp.destinationPort.range: start (80) must be less than end (80) (got {"start":80,"end":80})']],
    ['range end missing', valid({ protocols: [{ tcp: { destinationPort: { range: { start: 80 } } } }] }), ['spec.ingress[0].protocols[0].tcp.destinationPort.range.end: required field is missing (got )']],
    ['an empty named port', valid({ protocols: [{ destinationNamedPort: '' }] }), ['spec.ingress[0].protocols[0].destinationNamedPort: must be a non-empty container port name (got "")']],
    ['a bad CIDR', valid({ to: [{ networks: ['10.0.0.0/33'] }] }, 'egress'), ['spec.egress[0].to[0].networks[0]: invalid CIDR format: prefix length 33 is more than 32 in "10.0.0.0/33" (got "10.0.0.0/33")']],
    ['an address without a prefix', valid({ to: [{ networks: ['10.0.0.1'] }] }, 'egress'), ['spec.egress[0].to[0].networks[0]: invalid CIDR format: a prefix length is required (e.g. 10.0.0.1/32) (got "10.0.0.1")']],
    ['a repeated CIDR', valid({ to: [{ networks: ['10.0.0.0/8', '10.0.0.0/8'] }] }, 'egress'), ['spec.egress[0].to[0].networks[1]: duplicate value: networks is a set (got "10.0.0.0/8")']],
    ['networks with a named port', valid({ to: [{ networks: ['10.0.0.0/8'] }], protocols: [{ destinationNamedPort: 'http' }] }, 'egress'), ['spec.egress[0].protocols: destinationNamedPort cannot be used with a networks peer: addresses outside pods have no named ports (got [{"destinationNamedPort":"http"}])']],
    ['a bad domain name', valid({ to: [{ domainNames: ['-bad-'] }] }, 'egress'), ['spec.egress[0].to[0].domainNames[0]: must be a domain name such as example.com or *.example.com (got "-bad-")']],
  ])('%s', (_name, spec, want) => {
    expect(issues(spec)).toEqual(want);
  });

  it('26 rules', () => {
    const rules = Array.from({ length: 26 }, () => ({ action: 'Deny', to: from }));
    expect(issues({ tier: 'Admin', priority: 1, subject, egress: rules })).toEqual(['spec.egress: must have at most 25 rules (got 26)']);
  });

  it('a wrong apiVersion is read as the kind, with an issue, and fails closed', () => {
    const r = normalize({ apiVersion: 'policy.networking.k8s.io/v1alpha1', kind: 'ClusterNetworkPolicy', metadata: { name: 'p' }, spec: valid({}) });
    expect(r.issues.map((i) => `${i.field}: ${i.message}`)).toEqual(['apiVersion: unsupported apiVersion for ClusterNetworkPolicy: expected policy.networking.k8s.io/v1alpha2']);
    expect((r.record as ClusterPolicyRecord).ingress[0]).toMatchObject({ action: 'Deny', peers: [{ kind: 'any' }] });
  });

  it('kind spelled another way is read as the kind, with an issue', () => {
    const r = normalize({ apiVersion: API, kind: 'clusternetworkpolicies', metadata: { name: 'p' }, spec: valid({}) });
    expect(r.ref).toBe('clusternetworkpolicy/p');
    expect(r.issues.map((i) => i.field)).toEqual(['kind']);
  });

  it('v1alpha1 AdminNetworkPolicy is another kind: skipped, not read, with an issue saying so', () => {
    const r = normalize({ apiVersion: 'policy.networking.k8s.io/v1alpha1', kind: 'AdminNetworkPolicy', metadata: { name: 'p' }, spec: {} });
    expect(r.skipped).toBe('AdminNetworkPolicy');
    expect(r.record).toBeUndefined();
    expect(r.issues.map((i) => `${i.field}: ${i.message}`)).toEqual([
      'kind: unknown kind in apiVersion "policy.networking.k8s.io/v1alpha1": AdminNetworkPolicy is the older API (v1alpha1) that ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) replaces; it is not enforced: rewrite it as a ClusterNetworkPolicy',
    ]);
  });
});

describe('ClusterNetworkPolicy: failing closed', () => {
  it('invalid: keeps what it could read, each direction with rules denies all', () => {
    const r = read({ tier: 'Baseline', priority: 3, subject: { namespaces: { matchLabels: { a: 'b' } } }, ingress: [{ action: 'Accept', from }, { action: 'Nope', from }], egress: [] });
    expect(r.cnp.issues).toHaveLength(1);
    expect(r.cnp).toMatchObject({ tier: 'Baseline', priority: 3, egress: [] });
    expect(r.cnp.subject.namespaces).toEqual({ kind: 'selector', selector: { requirements: [{ key: 'a', operator: 'In', values: ['b'], origin: 'matchLabels' }] } });
    expect(r.cnp.ingress).toEqual([{ name: '', action: 'Deny', peers: [{ kind: 'any' }], failClosed: 'the policy is invalid (1 issue): fails closed, denying all ingress traffic' }]);
  });

  it('invalid with an unreadable tier, priority and subject: Admin, priority 0, every pod', () => {
    const r = read({ tier: 'Top', priority: 'high', subject: { pods: {} }, egress: 'all' });
    expect(r.cnp).toMatchObject({ tier: 'Admin', priority: 0, subject: { kind: 'pods', namespaces: { kind: 'selector', selector: { requirements: [] } } }, ingress: [] });
    expect(r.cnp.subject.pods).toBeUndefined();
    expect(r.cnp.egress).toHaveLength(1);
    expect(r.cnp.egress[0]!.action).toBe('Deny');
  });

  it('a missing spec denies all in both directions for every pod', () => {
    const r = read(undefined);
    expect(r.cnp.ingress).toHaveLength(1);
    expect(r.cnp.egress).toHaveLength(1);
  });

  it('an unnamed policy applies to every pod (which of several unnamed ones survives is unknown)', () => {
    const r = normalize({ apiVersion: API, kind: 'ClusterNetworkPolicy', metadata: {}, spec: valid({}, 'egress') });
    const c = r.record as ClusterPolicyRecord;
    expect(r.ref).toBe('clusternetworkpolicy/<unnamed>');
    expect(c.subject.namespaces).toEqual({ kind: 'selector', selector: { requirements: [] } });
    expect(c.egress[0]).toMatchObject({ action: 'Deny', peers: [{ kind: 'any' }] });
  });

  it('unsupported peers: reported, the policy stays valid, only their rules fail closed', () => {
    const r = read({
      tier: 'Admin',
      priority: 1,
      subject,
      egress: [
        { name: 'infra', action: 'Accept', to: [{ nodes: { matchLabels: { role: 'infra' } } }, { namespaces: {} }] },
        { name: 'web', action: 'Pass', to: [{ domainNames: ['*.example.com'] }] },
        { name: 'future', action: 'Deny', to: [{}] },
        { name: 'kept', action: 'Accept', to: [{ namespaces: {} }] },
      ],
    });
    expect(r.cnp.issues).toEqual([]);
    expect(r.issues.map((i) => `${i.field}: ${i.message}`)).toEqual([
      'spec.egress[0].to[0]: nodes peers are experimental and not supported by policyctl: its rule fails closed',
      'spec.egress[1].to[0]: domainNames peers are experimental and not supported by policyctl: its rule fails closed',
      'spec.egress[2].to[0]: peer sets no field (a newer API whose field was dropped?): its rule fails closed',
    ]);
    expect(r.cnp.unsupported).toEqual(r.issues);
    expect(r.cnp.egress.map((x) => [x.name, x.action, x.peers.map((p) => p.kind), x.failClosed])).toEqual([
      ['infra', 'Accept', [], 'to[0] uses nodes (unsupported): an Accept rule fails closed, matching nothing'],
      ['web', 'Deny', ['any'], 'to[0] uses domainNames (unsupported): a Pass rule fails closed, denying all traffic'],
      ['future', 'Deny', ['any'], 'to[0] sets no field: a Deny rule fails closed, denying all traffic'],
      ['kept', 'Accept', ['pods'], undefined],
    ]);
  });

  it('a bad experimental peer is invalid, not merely unsupported', () => {
    expect(issues(valid({ to: [{ nodes: { matchLabels: { 'a b': 'c' } } }] }, 'egress'))[0]).toMatch(/^spec\.egress\[0\]\.to\[0\]\.nodes\.matchLabels: invalid label key/);
  });

  it('a subject naming nothing known: every pod, every rule fails closed', () => {
    const r = read({ tier: 'Admin', priority: 1, subject: {}, ingress: [{ action: 'Accept', from }, { action: 'Deny', from }] });
    expect(r.cnp.issues).toEqual([]);
    expect(r.issues.map((i) => `${i.field}: ${i.message}`)).toEqual(['spec.subject: subject names no pods (no namespaces or pods field; a newer API?); it is read as every pod']);
    expect(r.cnp.ingress.map((x) => [x.action, x.peers.length])).toEqual([
      ['Accept', 0],
      ['Deny', 1],
    ]);
  });
});
