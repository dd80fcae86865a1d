import { describe, expect, it } from 'vitest';
import { UNREADABLE, formatIssue, normalize, normalizeUnreadable } from './normalize.ts';
import type { IpBlockPeer, NamespaceRecord, NodeRecord, PodRecord, PodsPeer, PolicyRecord, ValidationIssue } from './types.ts';
import { EVERYTHING } from './selector.ts';

function policy(spec: unknown, metadata: Record<string, unknown> = { name: 'p', namespace: 'x' }): unknown {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata, ...(spec !== undefined && { spec }) };
}

function policyRecord(obj: unknown): PolicyRecord {
  const r = normalize(obj);
  expect(r.record?.kind).toBe('NetworkPolicy');
  return r.record as PolicyRecord;
}

const fields = (issues: readonly ValidationIssue[]): string[] => issues.map((i) => i.field);

/** Fail-closed shape (docs/design.md, invariant fail-closed): rules gone, the selected pods stay isolated. */
function expectFailClosed(r: PolicyRecord): void {
  expect(r.issues.length).toBeGreaterThan(0);
  expect(r.ingress).toEqual([]);
  expect(r.egress).toEqual([]);
}

describe('normalize: NetworkPolicy validation', () => {
  // Each case: a spec, the fields that must carry an issue (empty = valid), and optionally a
  // fragment of the message and the value received as JSON text.
  const cases: Array<{ name: string; spec: unknown; issues: string[]; message?: string; value?: string }> = [
    // podSelector
    { name: 'empty podSelector is valid', spec: { podSelector: {} }, issues: [] },
    { name: 'absent podSelector', spec: { ingress: [] }, issues: ['spec.podSelector'], message: 'required' },
    { name: 'null podSelector', spec: { podSelector: null }, issues: ['spec.podSelector'], message: 'required' },
    { name: 'podSelector not an object', spec: { podSelector: 'app=x' }, issues: ['spec.podSelector'], value: '"app=x"' },
    // matchLabels keys
    { name: 'plain key', spec: { podSelector: { matchLabels: { app: 'web' } } }, issues: [] },
    { name: 'prefixed key', spec: { podSelector: { matchLabels: { 'app.kubernetes.io/name': 'web' } } }, issues: [] },
    { name: 'key with two slashes', spec: { podSelector: { matchLabels: { 'a/b/c': 'x' } } }, issues: ['spec.podSelector.matchLabels'], value: '"a/b/c"' },
    { name: 'key with uppercase prefix', spec: { podSelector: { matchLabels: { 'Example.com/a': 'x' } } }, issues: ['spec.podSelector.matchLabels'], message: 'prefix part' },
    { name: 'key with empty prefix', spec: { podSelector: { matchLabels: { '/a': 'x' } } }, issues: ['spec.podSelector.matchLabels'], message: 'prefix part must be non-empty' },
    { name: 'key name part too long', spec: { podSelector: { matchLabels: { ['k'.repeat(64)]: 'x' } } }, issues: ['spec.podSelector.matchLabels'], message: 'no more than 63' },
    { name: 'key name part 63 chars', spec: { podSelector: { matchLabels: { ['k'.repeat(63)]: 'x' } } }, issues: [] },
    { name: 'key starting with dash', spec: { podSelector: { matchLabels: { '-a': 'x' } } }, issues: ['spec.podSelector.matchLabels'] },
    { name: 'key with space', spec: { podSelector: { matchLabels: { 'a b': 'x' } } }, issues: ['spec.podSelector.matchLabels'] },
    // matchLabels values
    { name: 'empty value', spec: { podSelector: { matchLabels: { app: '' } } }, issues: [] },
    { name: 'value with dots, dashes, underscores', spec: { podSelector: { matchLabels: { app: 'A.b-c_9' } } }, issues: [] },
    { name: 'value 64 chars', spec: { podSelector: { matchLabels: { app: 'v'.repeat(64) } } }, issues: ['spec.podSelector.matchLabels[app]'], message: 'no more than 63' },
    { name: 'value ending in dash', spec: { podSelector: { matchLabels: { app: 'web-' } } }, issues: ['spec.podSelector.matchLabels[app]'], value: '"web-"' },
    { name: 'value with slash', spec: { podSelector: { matchLabels: { app: 'a/b' } } }, issues: ['spec.podSelector.matchLabels[app]'] },
    { name: 'value not a string', spec: { podSelector: { matchLabels: { tier: 1 } } }, issues: ['spec.podSelector.matchLabels[tier]'], message: 'must be a string', value: '1' },
    { name: 'matchLabels not a map', spec: { podSelector: { matchLabels: ['a'] } }, issues: ['spec.podSelector.matchLabels'] },
    // matchExpressions
    { name: 'In with values', spec: { podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['a', 'b'] }] } }, issues: [] },
    { name: 'NotIn with values', spec: { podSelector: { matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['a'] }] } }, issues: [] },
    { name: 'Exists without values', spec: { podSelector: { matchExpressions: [{ key: 'app', operator: 'Exists' }] } }, issues: [] },
    { name: 'DoesNotExist with empty values', spec: { podSelector: { matchExpressions: [{ key: 'app', operator: 'DoesNotExist', values: [] }] } }, issues: [] },
    { name: 'In without values', spec: { podSelector: { matchExpressions: [{ key: 'app', operator: 'In' }] } }, issues: ['spec.podSelector.matchExpressions[0].values'], message: 'operator is In' },
    { name: 'NotIn with empty values', spec: { podSelector: { matchExpressions: [{ key: 'app', operator: 'NotIn', values: [] }] } }, issues: ['spec.podSelector.matchExpressions[0].values'], value: '[]' },
    { name: 'Exists with values', spec: { podSelector: { matchExpressions: [{ key: 'app', operator: 'Exists', values: ['a'] }] } }, issues: ['spec.podSelector.matchExpressions[0].values'], message: 'may not be specified' },
    { name: 'DoesNotExist with values', spec: { podSelector: { matchExpressions: [{ key: 'app', operator: 'DoesNotExist', values: ['a'] }] } }, issues: ['spec.podSelector.matchExpressions[0].values'] },
    { name: 'unknown operator', spec: { podSelector: { matchExpressions: [{ key: 'app', operator: 'in', values: ['a'] }] } }, issues: ['spec.podSelector.matchExpressions[0].operator'], value: '"in"' },
    { name: 'missing operator', spec: { podSelector: { matchExpressions: [{ key: 'app', values: ['a'] }] } }, issues: ['spec.podSelector.matchExpressions[0].operator'] },
    { name: 'bad key in expression', spec: { podSelector: { matchExpressions: [{ key: 'a b', operator: 'Exists' }] } }, issues: ['spec.podSelector.matchExpressions[0].key'] },
    { name: 'missing key in expression', spec: { podSelector: { matchExpressions: [{ operator: 'Exists' }] } }, issues: ['spec.podSelector.matchExpressions[0].key'] },
    { name: 'bad value in expression', spec: { podSelector: { matchExpressions: [{ key: 'a', operator: 'In', values: ['ok', 'not ok'] }] } }, issues: ['spec.podSelector.matchExpressions[0].values[1]'], value: '"not ok"' },
    { name: 'unknown selector field (typo)', spec: { podSelector: { matchlabels: { app: 'x' } } }, issues: ['spec.podSelector.matchlabels'], message: 'unknown field' },
    // policyTypes
    { name: 'policyTypes Ingress', spec: { podSelector: {}, policyTypes: ['Ingress'] }, issues: [] },
    { name: 'policyTypes both', spec: { podSelector: {}, policyTypes: ['Egress', 'Ingress'] }, issues: [] },
    { name: 'policyTypes lowercase', spec: { podSelector: {}, policyTypes: ['ingress'] }, issues: ['spec.policyTypes[0]'], value: '"ingress"' },
    { name: 'policyTypes three', spec: { podSelector: {}, policyTypes: ['Ingress', 'Egress', 'Ingress'] }, issues: ['spec.policyTypes'], message: 'more than two' },
    { name: 'policyTypes duplicate', spec: { podSelector: {}, policyTypes: ['Egress', 'Egress'] }, issues: ['spec.policyTypes[1]'], message: 'duplicate' },
    { name: 'policyTypes not a list', spec: { podSelector: {}, policyTypes: 'Ingress' }, issues: ['spec.policyTypes'] },
    // ports
    { name: 'port 1', spec: { podSelector: {}, ingress: [{ ports: [{ port: 1 }] }] }, issues: [] },
    { name: 'port 65535', spec: { podSelector: {}, ingress: [{ ports: [{ port: 65535 }] }] }, issues: [] },
    { name: 'port 0', spec: { podSelector: {}, ingress: [{ ports: [{ port: 0 }] }] }, issues: ['spec.ingress[0].ports[0].port'], message: 'between 1 and 65535' },
    { name: 'port 65536', spec: { podSelector: {}, ingress: [{ ports: [{ port: 65536 }] }] }, issues: ['spec.ingress[0].ports[0].port'], value: '65536' },
    { name: 'port 80.5', spec: { podSelector: {}, ingress: [{ ports: [{ port: 80.5 }] }] }, issues: ['spec.ingress[0].ports[0].port'], message: 'integer' },
    { name: 'named port', spec: { podSelector: {}, ingress: [{ ports: [{ port: 'http-alt' }] }] }, issues: [] },
    { name: 'named port 15 chars', spec: { podSelector: {}, ingress: [{ ports: [{ port: 'a'.repeat(15) }] }] }, issues: [] },
    { name: 'named port 16 chars', spec: { podSelector: {}, ingress: [{ ports: [{ port: 'a'.repeat(16) }] }] }, issues: ['spec.ingress[0].ports[0].port'], message: '15' },
    { name: 'quoted digits are a name without a letter', spec: { podSelector: {}, ingress: [{ ports: [{ port: '80' }] }] }, issues: ['spec.ingress[0].ports[0].port'], message: 'at least one letter', value: '"80"' },
    { name: 'named port uppercase', spec: { podSelector: {}, ingress: [{ ports: [{ port: 'HTTP' }] }] }, issues: ['spec.ingress[0].ports[0].port', 'spec.ingress[0].ports[0].port'] },
    { name: 'named port leading dash', spec: { podSelector: {}, ingress: [{ ports: [{ port: '-http' }] }] }, issues: ['spec.ingress[0].ports[0].port'], message: 'begin or end' },
    { name: 'named port double dash', spec: { podSelector: {}, ingress: [{ ports: [{ port: 'a--b' }] }] }, issues: ['spec.ingress[0].ports[0].port'], message: 'consecutive' },
    { name: 'port of wrong type', spec: { podSelector: {}, ingress: [{ ports: [{ port: true }] }] }, issues: ['spec.ingress[0].ports[0].port'] },
    { name: 'protocol UDP', spec: { podSelector: {}, ingress: [{ ports: [{ protocol: 'UDP', port: 53 }] }] }, issues: [] },
    { name: 'protocol SCTP', spec: { podSelector: {}, ingress: [{ ports: [{ protocol: 'SCTP' }] }] }, issues: [] },
    { name: 'protocol ICMP', spec: { podSelector: {}, ingress: [{ ports: [{ protocol: 'ICMP' }] }] }, issues: ['spec.ingress[0].ports[0].protocol'], value: '"ICMP"' },
    { name: 'protocol lowercase', spec: { podSelector: {}, egress: [{ ports: [{ protocol: 'tcp' }] }] }, issues: ['spec.egress[0].ports[0].protocol'] },
    // endPort
    { name: 'endPort range', spec: { podSelector: {}, ingress: [{ ports: [{ port: 32000, endPort: 32768 }] }] }, issues: [] },
    { name: 'endPort equal to port', spec: { podSelector: {}, ingress: [{ ports: [{ port: 80, endPort: 80 }] }] }, issues: [] },
    { name: 'endPort without port', spec: { podSelector: {}, ingress: [{ ports: [{ endPort: 90 }] }] }, issues: ['spec.ingress[0].ports[0].endPort'], message: 'endPort requires a numeric port', value: '90' },
    { name: 'endPort < port', spec: { podSelector: {}, ingress: [{ ports: [{ port: 90, endPort: 80 }] }] }, issues: ['spec.ingress[0].ports[0].endPort'], message: 'greater than or equal to port (90)', value: '80' },
    { name: 'endPort with named port', spec: { podSelector: {}, ingress: [{ ports: [{ port: 'http', endPort: 90 }] }] }, issues: ['spec.ingress[0].ports[0].endPort'], message: 'not the port name "http"' },
    { name: 'endPort above 65535', spec: { podSelector: {}, ingress: [{ ports: [{ port: 80, endPort: 70000 }] }] }, issues: ['spec.ingress[0].ports[0].endPort'], message: 'between 1 and 65535' },
    { name: 'endPort as string', spec: { podSelector: {}, ingress: [{ ports: [{ port: 80, endPort: '90' }] }] }, issues: ['spec.ingress[0].ports[0].endPort'], message: 'integer' },
    // peers
    { name: 'podSelector peer', spec: { podSelector: {}, ingress: [{ from: [{ podSelector: {} }] }] }, issues: [] },
    { name: 'namespaceSelector peer', spec: { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {} }] }] }, issues: [] },
    { name: 'both selectors peer', spec: { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {}, podSelector: {} }] }] }, issues: [] },
    { name: 'empty peer {}', spec: { podSelector: {}, ingress: [{ from: [{}] }] }, issues: ['spec.ingress[0].from[0]'], message: 'must specify a peer', value: '{}' },
    { name: 'peer with only nulls', spec: { podSelector: {}, egress: [{ to: [{ podSelector: null }] }] }, issues: ['spec.egress[0].to[0]'] },
    { name: 'mixed ipBlock + podSelector peer', spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8' }, podSelector: {} }] }] }, issues: ['spec.ingress[0].from[0]'], message: 'may not specify both ipBlock and another peer' },
    { name: 'mixed ipBlock + namespaceSelector peer', spec: { podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/8' }, namespaceSelector: {} }] }] }, issues: ['spec.egress[0].to[0]'] },
    { name: 'bad selector inside a peer', spec: { podSelector: {}, ingress: [{ from: [{ podSelector: {}, namespaceSelector: { matchLabels: { ns: 'a b' } } }] }] }, issues: ['spec.ingress[0].from[0].namespaceSelector.matchLabels[ns]'] },
    { name: 'unknown peer field', spec: { podSelector: {}, ingress: [{ from: [{ podselector: {} }] }] }, issues: ['spec.ingress[0].from[0].podselector', 'spec.ingress[0].from[0]'] },
    { name: 'egress peer under from', spec: { podSelector: {}, egress: [{ from: [{ podSelector: {} }] }] }, issues: ['spec.egress[0].from'], message: 'unknown field' },
    // ipBlock
    { name: 'ipBlock', spec: { podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] } }] }] }, issues: [] },
    { name: 'ipBlock IPv6', spec: { podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: 'fd00::/8', except: ['fd00::/16'] } }] }] }, issues: [] },
    { name: 'ipBlock /0', spec: { podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['10.0.0.0/8'] } }] }] }, issues: [] },
    { name: 'ipBlock leading zeros and host bits accepted', spec: { podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: '010.001.2.3/8' } }] }] }, issues: [] },
    { name: 'ipBlock without cidr', spec: { podSelector: {}, egress: [{ to: [{ ipBlock: {} }] }] }, issues: ['spec.egress[0].to[0].ipBlock.cidr'], message: 'required' },
    { name: 'ipBlock empty cidr', spec: { podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: '' } }] }] }, issues: ['spec.egress[0].to[0].ipBlock.cidr'] },
    { name: 'ipBlock cidr without prefix', spec: { podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: '10.0.0.1' } }] }] }, issues: ['spec.egress[0].to[0].ipBlock.cidr'], value: '"10.0.0.1"' },
    { name: 'ipBlock cidr /33', spec: { podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/33' } }] }] }, issues: ['spec.egress[0].to[0].ipBlock.cidr'], message: 'more than 32' },
    { name: 'ipBlock cidr bad octet', spec: { podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: '10.0.0.256/32' } }] }] }, issues: ['spec.egress[0].to[0].ipBlock.cidr'] },
    { name: 'except equal to cidr', spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.0.0.0/8'] } }] }] }, issues: ['spec.ingress[0].from[0].ipBlock.except[0]'], message: 'must be a strict subset of 10.0.0.0/8', value: '"10.0.0.0/8"' },
    { name: 'except equal after masking', spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.9.9.9/8'] } }] }] }, issues: ['spec.ingress[0].from[0].ipBlock.except[0]'] },
    { name: 'except outside cidr', spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.1.0.0/16', '192.168.0.0/16'] } }] }] }, issues: ['spec.ingress[0].from[0].ipBlock.except[1]'], message: 'must be a strict subset of 10.0.0.0/8 (it lies outside)' },
    { name: 'except wider than cidr', spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.1.0.0/16', except: ['10.0.0.0/8'] } }] }] }, issues: ['spec.ingress[0].from[0].ipBlock.except[0]'] },
    { name: 'except of other family', spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['fd00::/64'] } }] }] }, issues: ['spec.ingress[0].from[0].ipBlock.except[0]'], message: 'IPv6 inside an IPv4 block' },
    { name: 'except not a CIDR', spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.1.0.0'] } }] }] }, issues: ['spec.ingress[0].from[0].ipBlock.except[0]'] },
    // structure
    { name: 'spec missing', spec: undefined, issues: ['spec'] },
    { name: 'ingress not a list', spec: { podSelector: {}, ingress: {} }, issues: ['spec.ingress'] },
    { name: 'rule not an object', spec: { podSelector: {}, ingress: ['all'] }, issues: ['spec.ingress[0]'] },
    { name: 'unknown spec field', spec: { podSelector: {}, ingres: [] }, issues: ['spec.ingres'], message: 'unknown field "ingres"' },
    { name: 'invalid egress with policyTypes [Ingress] still invalid', spec: { podSelector: {}, policyTypes: ['Ingress'], egress: [{ to: [{}] }] }, issues: ['spec.egress[0].to[0]'] },
  ];

  for (const c of cases) {
    it(c.name, () => {
      const r = policyRecord(policy(c.spec));
      expect(fields(r.issues)).toEqual(c.issues);
      if (c.message) expect(r.issues[0]!.message).toContain(c.message);
      if (c.value !== undefined) expect(r.issues[0]!.value).toBe(c.value);
      if (c.issues.length > 0) expectFailClosed(r);
    });
  }

  it('reports every issue of a policy, not just the first', () => {
    const r = policyRecord(policy({ podSelector: { matchLabels: { 'a b': 'x' } }, policyTypes: ['Foo'], ingress: [{ from: [{}], ports: [{ port: 0 }] }] }));
    expect(fields(r.issues)).toEqual(['spec.podSelector.matchLabels', 'spec.policyTypes[0]', 'spec.ingress[0].from[0]', 'spec.ingress[0].ports[0].port']);
  });
});

describe('normalize: NetworkPolicy fail-closed shape', () => {
  it('keeps a valid podSelector and valid policyTypes, drops all rules', () => {
    const r = policyRecord(
      policy({ podSelector: { matchLabels: { app: 'db' } }, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.0.0.0/8'] } }] }, { to: [{ podSelector: {} }] }] }),
    );
    expectFailClosed(r);
    expect(r.podSelector).toEqual({ requirements: [{ key: 'app', operator: 'In', values: ['db'], origin: 'matchLabels' }] });
    expect(r.policyTypes).toEqual(['Egress']);
  });

  it('uses the empty selector (whole namespace) when the podSelector is invalid', () => {
    const r = policyRecord(policy({ podSelector: { matchExpressions: [{ key: 'app', operator: 'In' }] }, ingress: [{}] }));
    expectFailClosed(r);
    expect(r.podSelector).toEqual(EVERYTHING);
    expect(r.policyTypes).toEqual(['Ingress']);
  });

  it('uses the empty selector when the podSelector is absent', () => {
    const r = policyRecord(policy({ policyTypes: ['Ingress'], ingress: [{}] }));
    expectFailClosed(r);
    expect(r.podSelector).toEqual(EVERYTHING);
  });

  it('isolates both directions when policyTypes is unreadable', () => {
    const r = policyRecord(policy({ podSelector: {}, policyTypes: ['Ingress', 'Sideways'], ingress: [{}] }));
    expectFailClosed(r);
    expect(r.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(r.policyTypesDefaulted).toBe(false);
  });

  it('isolates both directions when spec is unreadable', () => {
    const r = policyRecord(policy('deny-all'));
    expectFailClosed(r);
    expect(r.podSelector).toEqual(EVERYTHING);
    expect(r.policyTypes).toEqual(['Ingress', 'Egress']);
  });

  it('a malformed egress section counts for defaulting', () => {
    const r = policyRecord(policy({ podSelector: {}, egress: { to: [] } }));
    expectFailClosed(r);
    expect(r.policyTypes).toEqual(['Ingress', 'Egress']);
  });

  it('keeps defaulted policyTypes of an invalid policy', () => {
    const r = policyRecord(policy({ podSelector: {}, egress: [{ to: [{}] }] }));
    expectFailClosed(r);
    expect(r.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(r.policyTypesDefaulted).toBe(true);
  });

  it('an unnamed policy isolates its whole namespace (its UID is not unique)', () => {
    const res = normalize(policy({ podSelector: { matchLabels: { app: 'db' } } }, { namespace: 'x' }));
    expect(res.ref).toBe('networkpolicy/x/<unnamed>');
    const r = res.record as PolicyRecord;
    expectFailClosed(r);
    expect(fields(r.issues)).toEqual(['metadata.name']);
    expect(r.podSelector).toEqual(EVERYTHING);
  });

  it('a rule, or a policy, that expands to more iptables rules than a policy may take fails closed, naming the rule and the count', () => {
    const blocks = (n: number) => Array.from({ length: n }, (_, i) => ({ ipBlock: { cidr: `10.0.${i >> 8}.${i & 255}/32` } }));
    const odd = (n: number) => Array.from({ length: n }, (_, i) => ({ port: 2 * i + 1 }));
    // A tenant's 66 KB policy: 1000 peers x 134 port matches.
    const big = policyRecord(policy({ podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ podSelector: {} }] }, { from: blocks(1000), ports: odd(2000) }] }));
    expectFailClosed(big);
    expect(big.issues).toEqual([{ field: 'spec.ingress[1]', value: '"1000 peers, 2000 ports"', message: expect.stringMatching(/^expands to 134000 iptables rules \(1000 peers x 134 port matches of at most 15 ports each\), more than the 5000 a policy may take: split/) }]);
    expect(big.podSelector).toEqual({ requirements: [{ key: 'app', operator: 'In', values: ['db'], origin: 'matchLabels' }] });
    // Each rule within the limit, the policy over it: the issue is on spec.
    const many = policyRecord(policy({ podSelector: {}, ingress: [{ from: blocks(100), ports: odd(450) }, { from: blocks(100), ports: odd(450) }] }));
    expectFailClosed(many);
    expect(many.issues.map((i) => [i.field, i.message.slice(0, 40)])).toEqual([['spec', 'expand to 6000 iptables rules together, ']]);
    // At the limit: valid.
    expect(policyRecord(policy({ podSelector: {}, ingress: [{ from: blocks(100), ports: odd(750) }] })).issues).toEqual([]);
  });

  it('an old apiVersion of NetworkPolicy is reported and fails closed', () => {
    const r = policyRecord({ apiVersion: 'extensions/v1beta1', kind: 'NetworkPolicy', metadata: { name: 'p', namespace: 'x' }, spec: { podSelector: {}, ingress: [{}] } });
    expect(fields(r.issues)).toEqual(['apiVersion']);
    expectFailClosed(r);
  });
});

describe('normalize: NetworkPolicy defaulting and shape', () => {
  it('policyTypes absent: Ingress only without egress rules', () => {
    const r = policyRecord(policy({ podSelector: {}, ingress: [{}] }));
    expect(r.policyTypes).toEqual(['Ingress']);
    expect(r.policyTypesDefaulted).toBe(true);
    expect(r.ingress).toEqual([{}]);
  });

  it('policyTypes absent: Egress added when egress is non-empty', () => {
    const r = policyRecord(policy({ podSelector: {}, egress: [{}] }));
    expect(r.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(r.egress).toEqual([{}]);
  });

  it('policyTypes absent and egress: [] means Ingress only', () => {
    const r = policyRecord(policy({ podSelector: {}, egress: [] }));
    expect(r.policyTypes).toEqual(['Ingress']);
  });

  it('policyTypes: [] is defaulted like absent', () => {
    const r = policyRecord(policy({ podSelector: {}, policyTypes: [], egress: [{}] }));
    expect(r.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(r.policyTypesDefaulted).toBe(true);
  });

  it('explicit policyTypes are not marked defaulted', () => {
    const r = policyRecord(policy({ podSelector: {}, policyTypes: ['Egress'] }));
    expect(r.policyTypes).toEqual(['Egress']);
    expect(r.policyTypesDefaulted).toBe(false);
    expect(r.ignored).toEqual([]);
  });

  it('ingress rules with policyTypes [Egress] are ignored and recorded', () => {
    const r = policyRecord(policy({ podSelector: {}, policyTypes: ['Egress'], ingress: [{}], egress: [] }));
    expect(r.issues).toEqual([]);
    expect(r.ingress).toEqual([]);
    expect(r.egress).toEqual([]);
    expect(r.ignored).toEqual(['spec.ingress']);
  });

  it('egress rules with policyTypes [Ingress] are ignored and recorded', () => {
    const r = policyRecord(policy({ podSelector: {}, policyTypes: ['Ingress'], egress: [{ to: [{ podSelector: {} }] }] }));
    expect(r.egress).toEqual([]);
    expect(r.ignored).toEqual(['spec.egress']);
  });

  it('an empty ignored section is not recorded', () => {
    const r = policyRecord(policy({ podSelector: {}, policyTypes: ['Egress'], ingress: [] }));
    expect(r.ignored).toEqual([]);
  });

  it('ingress: [] and absent ingress mean no rules', () => {
    expect(policyRecord(policy({ podSelector: {}, ingress: [] })).ingress).toEqual([]);
    expect(policyRecord(policy({ podSelector: {} })).ingress).toEqual([]);
    expect(policyRecord(policy({ podSelector: {}, ingress: null })).ingress).toEqual([]);
  });

  it('from/ports absent, null or [] mean every peer / every port', () => {
    const r = policyRecord(policy({ podSelector: {}, ingress: [{}, { from: [], ports: [] }, { from: null, ports: null }] }));
    expect(r.ingress).toEqual([{}, {}, {}]);
    expect(r.ingress[0]!.peers).toBeUndefined();
    expect(r.ingress[0]!.ports).toBeUndefined();
  });

  it('protocol defaults to TCP; port and endPort kept', () => {
    const r = policyRecord(policy({ podSelector: {}, ingress: [{ ports: [{ port: 80 }, { protocol: 'UDP' }, { port: 'dns', protocol: 'UDP' }, { port: 1000, endPort: 2000 }] }] }));
    expect(r.ingress[0]!.ports).toEqual([
      { protocol: 'TCP', port: 80 },
      { protocol: 'UDP' },
      { protocol: 'UDP', port: 'dns' },
      { protocol: 'TCP', port: 1000, endPort: 2000 },
    ]);
  });

  it('selectors: matchLabels become In with one value, expressions keep their index', () => {
    const r = policyRecord(
      policy({
        podSelector: {
          matchLabels: { app: 'web', tier: 'front' },
          matchExpressions: [
            { key: 'env', operator: 'NotIn', values: ['dev', 'test'] },
            { key: 'canary', operator: 'DoesNotExist' },
          ],
        },
      }),
    );
    expect(r.podSelector.requirements).toEqual([
      { key: 'app', operator: 'In', values: ['web'], origin: 'matchLabels' },
      { key: 'tier', operator: 'In', values: ['front'], origin: 'matchLabels' },
      { key: 'env', operator: 'NotIn', values: ['dev', 'test'], origin: 'matchExpressions[0]' },
      { key: 'canary', operator: 'DoesNotExist', values: [], origin: 'matchExpressions[1]' },
    ]);
  });

  it('peers: podSelector alone is the own namespace, namespaceSelector alone every pod, both AND', () => {
    const sel = (v: string) => ({ matchLabels: { k: v } });
    const req = (v: string) => ({ requirements: [{ key: 'k', operator: 'In', values: [v], origin: 'matchLabels' }] });
    const r = policyRecord(policy({ podSelector: {}, ingress: [{ from: [{ podSelector: sel('p') }, { namespaceSelector: sel('n') }, { namespaceSelector: sel('n'), podSelector: sel('p') }] }] }));
    const peers = r.ingress[0]!.peers as PodsPeer[];
    expect(peers[0]).toEqual({ kind: 'pods', namespaces: { kind: 'own', name: 'x' }, pods: req('p') });
    expect(peers[1]).toEqual({ kind: 'pods', namespaces: { kind: 'selector', selector: req('n') } });
    expect(peers[1]!.pods).toBeUndefined();
    expect(peers[2]).toEqual({ kind: 'pods', namespaces: { kind: 'selector', selector: req('n') }, pods: req('p') });
  });

  it('ipBlock: CIDRs normalized (leading zeros read as decimal, host bits cleared), written form kept', () => {
    const r = policyRecord(policy({ podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: '010.001.2.3/8', except: ['10.08.0.1/16'] } }] }] }));
    const peer = r.egress[0]!.peers![0] as IpBlockPeer;
    expect(peer.kind).toBe('ipBlock');
    expect(peer.cidr.text).toBe('10.0.0.0/8');
    expect(peer.cidr.written).toBe('010.001.2.3/8');
    expect(peer.except.map((c) => c.text)).toEqual(['10.8.0.0/16']);
  });

  it('uid defaults to namespace/name; namespace defaults to default', () => {
    expect(policyRecord(policy({ podSelector: {} }, { name: 'p' }))).toMatchObject({ uid: 'default/p', namespace: 'default', name: 'p' });
    expect(policyRecord(policy({ podSelector: {} }, { name: 'p', namespace: 'x', uid: 'u-1' })).uid).toBe('u-1');
  });
});

describe('normalize: envelope', () => {
  it('skips other kinds, saying which', () => {
    const r = normalize({ apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'x' } });
    expect(r).toEqual({ issues: [], ref: 'service/x/s', skipped: 'Service' });
  });

  it('skips a NetworkPolicy of another API group (Calico)', () => {
    const r = normalize({ apiVersion: 'projectcalico.org/v3', kind: 'NetworkPolicy', metadata: { name: 's', namespace: 'x' }, spec: {} });
    expect(r.record).toBeUndefined();
    expect(r.skipped).toBe('NetworkPolicy (projectcalico.org/v3)');
  });

  it('reports non-objects and objects without kind', () => {
    expect(normalize('hello').issues[0]!.message).toContain('not a Kubernetes object');
    expect(normalize(['a']).record).toBeUndefined();
    const r = normalize({ apiVersion: 'v1', metadata: { name: 'a' } });
    expect(fields(r.issues)).toEqual(['kind']);
    expect(r.record).toBeUndefined();
  });

  it.each([
    ['v1', 'unknown apiVersion'],
    ['networking.k8s.io', 'unknown apiVersion'],
    ['Networking.k8s.io/v1', 'unknown apiVersion'],
    ['NETWORKING.K8S.IO/V1', 'unknown apiVersion'],
    ['networking.k8s.io/V1', 'unsupported apiVersion'],
    ['networking.k8s.io/v1beta1', 'unsupported apiVersion'],
    ['policy/v1', 'unknown apiVersion'],
    ['policy.networking.k8s.io/v1alpha1', 'unknown apiVersion'],
  ])('a NetworkPolicy with apiVersion %s is read fail-closed, with an issue naming the value', (apiVersion, message) => {
    const r = normalize({ apiVersion, kind: 'NetworkPolicy', metadata: { name: 'deny', namespace: 'x' }, spec: { podSelector: { matchLabels: { app: 'db' } }, ingress: [{}] } });
    const rec = r.record as PolicyRecord;
    expectFailClosed(rec);
    expect(rec.podSelector.requirements.map((q) => q.key)).toEqual(['app']); // isolates what it selects
    expect(r.issues).toEqual([{ field: 'apiVersion', value: JSON.stringify(apiVersion), message: expect.stringContaining(message) }]);
    expect(r.skipped).toBeUndefined();
  });

  it.each(['networkpolicy', 'Networkpolicy', 'NETWORKPOLICY', 'NetworkPolicies', 'networkpolicies'])('kind %s is read as a NetworkPolicy, fail-closed, with an issue', (kind) => {
    const r = normalize({ apiVersion: 'networking.k8s.io/v1', kind, metadata: { name: 'deny', namespace: 'x' }, spec: { podSelector: {} } });
    expectFailClosed(r.record as PolicyRecord);
    expect(r.issues).toEqual([{ field: 'kind', value: JSON.stringify(kind), message: expect.stringContaining('expected NetworkPolicy') }]);
    expect(r.ref).toBe('networkpolicy/x/deny');
  });

  it.each([['pod', 'Pod'], ['Pods', 'Pod'], ['namespace', 'Namespace'], ['NODE', 'Node']])('kind %s is read as a %s with an issue', (kind, as) => {
    const r = normalize({ apiVersion: 'v1', kind, metadata: { name: 'a', namespace: 'x' } });
    expect(r.record?.kind).toBe(as);
    expect(fields(r.issues)).toEqual(['kind']);
  });

  it('other APIs with a kind of the same name stay skipped, whatever the case of the kind', () => {
    for (const apiVersion of ['projectcalico.org/v3', 'crd.projectcalico.org/v1', 'cilium.io/v2']) {
      for (const kind of ['NetworkPolicy', 'networkpolicy']) expect(normalize({ apiVersion, kind, metadata: { name: 'p', namespace: 'x' } }).skipped).toBeDefined();
    }
  });

  it.each([
    ['policy.networking.k8s.io/v1alpha1', 'AdminNetworkPolicy'],
    ['policy.networking.k8s.io/v1alpha1', 'BaselineAdminNetworkPolicy'],
    ['policy.networking.k8s.io/v1alpha2', 'AdminNetworkPolicy'],
  ])('%s %s: skipped (not enforced) with an issue saying ClusterNetworkPolicy replaces it', (apiVersion, kind) => {
    const r = normalize({ apiVersion, kind, metadata: { name: 'p' }, spec: { priority: 1, subject: { namespaces: {} } } });
    expect(r.record).toBeUndefined();
    expect(r.skipped).toBe(kind);
    expect(r.ref).toBe(`${kind.toLowerCase()}/p`);
    expect(r.issues).toEqual([
      {
        field: 'kind',
        value: JSON.stringify(kind),
        message: `unknown kind in apiVersion ${JSON.stringify(apiVersion)}: ${kind} is the older API (v1alpha1) that ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) replaces; it is not enforced: rewrite it as a ClusterNetworkPolicy`,
      },
    ]);
  });

  it.each([
    ['networking.k8s.io/v1', 'NetworkPolicyy'],
    ['networking.k8s.io/v1', 'Network Policy Rule'],
    ['policy.networking.k8s.io/v1alpha2', 'ClusterNetworkPolicyRule'],
    ['Networking.k8s.io/v1', 'Foo'],
  ])('an unknown kind of our API groups (%s %s) is skipped with an issue naming kind and apiVersion', (apiVersion, kind) => {
    const r = normalize({ apiVersion, kind, metadata: { name: 'p', namespace: 'x' } });
    expect(r.skipped).toBe(kind);
    expect(r.issues).toEqual([{ field: 'kind', value: JSON.stringify(kind), message: expect.stringContaining(`unknown kind in apiVersion ${JSON.stringify(apiVersion)}: not enforced`) }]);
  });

  it.each([
    ['networking.k8s.io/v1', 'Ingress'],
    ['networking.k8s.io/v1', 'IngressClass'],
    ['v1', 'ConfigMap'],
    ['apps/v1', 'Deployment'],
    ['example.com/v1', 'Widget'],
    ['projectcalico.org/v3', 'GlobalNetworkPolicy'],
  ])('kinds our groups serve, and kinds of other groups (%s %s), stay skipped without an issue', (apiVersion, kind) => {
    expect(normalize({ apiVersion, kind, metadata: { name: 'p', namespace: 'x' } })).toEqual({ issues: [], ref: `${kind.toLowerCase()}/x/p`, skipped: kind });
  });

  it.each(['NetworkPolicy ', ' NetworkPolicy', 'Network Policy', 'Network\u200bPolicy', 'NetworkPolicy\t'])('kind %j (spaces, invisible characters) is read as a NetworkPolicy, fail-closed, with an issue naming the apiVersion', (kind) => {
    const r = normalize({ apiVersion: 'networking.k8s.io/v1', kind, metadata: { name: 'deny', namespace: 'x' }, spec: { podSelector: { matchLabels: { app: 'db' } }, ingress: [{}] } });
    const rec = r.record as PolicyRecord;
    expectFailClosed(rec);
    expect(rec.podSelector.requirements.map((q) => q.key)).toEqual(['app']);
    expect(r.issues).toEqual([
      { field: 'kind', value: JSON.stringify(kind), message: 'not a kind: kinds hold no spaces or invisible characters (expected NetworkPolicy, in apiVersion "networking.k8s.io/v1"); read as NetworkPolicy' },
    ]);
  });

  it('reports a wrong core apiVersion but keeps the record', () => {
    const r = normalize({ apiVersion: 'v2', kind: 'Pod', metadata: { name: 'a' } });
    expect(fields(r.issues)).toEqual(['apiVersion']);
    expect(r.record?.kind).toBe('Pod');
  });

  it('formats an issue as field: message (got value)', () => {
    expect(formatIssue({ field: 'spec.ingress[0].ports[0].endPort', value: '90', message: 'endPort requires a numeric port' })).toBe(
      'spec.ingress[0].ports[0].endPort: endPort requires a numeric port (got 90)',
    );
    expect(formatIssue({ field: 'spec', value: '', message: 'required field is missing' })).toBe('spec: required field is missing');
  });
});

describe('normalize: Pod', () => {
  const pod = (extra: Record<string, unknown>, metadata: Record<string, unknown> = { name: 'a', namespace: 'x', labels: { pod: 'a' } }) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata,
    ...extra,
  });

  it('reads labels, node, IPs, phase, hostNetwork, ports (sidecars included, protocol defaulted)', () => {
    const r = normalize(
      pod({
        spec: {
          nodeName: 'node-1',
          containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 80 }, { containerPort: 53, protocol: 'UDP' }] }],
          initContainers: [
            { name: 'init', ports: [{ name: 'init-port', containerPort: 9 }] },
            { name: 'sidecar', restartPolicy: 'Always', ports: [{ name: 'metrics', containerPort: 9090 }] },
          ],
        },
        status: { phase: 'Running', podIP: '10.244.1.5', podIPs: [{ ip: '10.244.1.5' }, { ip: 'fd00::5' }] },
      }),
    );
    expect(r.issues).toEqual([]);
    expect(r.ref).toBe('pod/x/a');
    expect(r.record).toEqual({
      kind: 'Pod',
      uid: 'x/a',
      namespace: 'x',
      name: 'a',
      labels: { pod: 'a' },
      nodeName: 'node-1',
      ips: ['10.244.1.5'],
      hostNetwork: false,
      phase: 'Running',
      ports: [
        { name: 'http', containerPort: 80, protocol: 'TCP' },
        { containerPort: 53, protocol: 'UDP' },
        { name: 'metrics', containerPort: 9090, protocol: 'TCP' },
      ],
    } satisfies PodRecord);
  });

  it('falls back to status.podIP and normalizes leading zeros', () => {
    const r = normalize(pod({ status: { podIP: '10.244.001.007' } })).record as PodRecord;
    expect(r.ips).toEqual(['10.244.1.7']);
  });

  it('a bad pod IP is reported and the pod keeps no address at all (fail closed), but stays', () => {
    const r = normalize(pod({ status: { podIPs: [{ ip: '10.244.1.300' }, { ip: '10.244.1.8' }] } }));
    expect(fields(r.issues)).toEqual(['status.podIPs[0].ip']);
    expect((r.record as PodRecord).ips).toEqual([]);
  });

  it.each([
    ['0.0.0.0', 'the unspecified address'],
    ['0.1.2.3', '0.0.0.0/8'],
    ['127.0.0.1', 'loopback'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['240.0.0.1', 'reserved'],
  ])('a pod IP that is not a unicast host address (%s) is reported with field and value; no address', (ip, what) => {
    for (const status of [{ podIP: ip }, { podIP: ip, podIPs: [{ ip }] }]) {
      const r = normalize(pod({ status }));
      expect(r.issues).toContainEqual({ field: status.podIPs ? 'status.podIPs[0].ip' : 'status.podIP', value: JSON.stringify(ip), message: expect.stringContaining(what) });
      expect((r.record as PodRecord).ips).toEqual([]);
    }
  });

  it('podIPs[0] must equal podIP: reported with both values, and the pod gets no address', () => {
    const r = normalize(pod({ status: { podIP: '10.244.1.5', podIPs: [{ ip: '10.244.1.6' }] } }));
    expect(r.issues).toEqual([{ field: 'status.podIPs[0].ip', value: '"10.244.1.6"', message: expect.stringContaining('must equal status.podIP ("10.244.1.5")') }]);
    expect((r.record as PodRecord).ips).toEqual([]);
  });

  it('two IPv4 addresses in podIPs (one per family at most) leave the pod without address', () => {
    const r = normalize(pod({ status: { podIP: '10.244.1.5', podIPs: [{ ip: '10.244.1.5' }, { ip: '10.244.2.9' }] } }));
    expect(fields(r.issues)).toEqual(['status.podIPs[1].ip']);
    expect((r.record as PodRecord).ips).toEqual([]);
    // Dual stack is fine; link-local and shared-address space are unicast.
    for (const ip of ['169.254.3.4', '100.64.0.1', '10.0.0.0']) {
      const ok = normalize(pod({ status: { podIP: ip, podIPs: [{ ip }, { ip: 'fd00::1' }] } }));
      expect(ok.issues).toEqual([]);
      expect((ok.record as PodRecord).ips).toEqual([ip]);
    }
  });

  it('an IPv6-only pod has no IPs and no issue', () => {
    const r = normalize(pod({ status: { podIP: 'fd00::1' } }));
    expect(r.issues).toEqual([]);
    expect((r.record as PodRecord).ips).toEqual([]);
  });

  it('reads hostNetwork and defaults the namespace', () => {
    const r = normalize(pod({ spec: { hostNetwork: true } }, { name: 'h' })).record as PodRecord;
    expect(r).toMatchObject({ namespace: 'default', uid: 'default/h', hostNetwork: true, labels: {} });
  });

  it('drops bad container ports and bad port names with issues', () => {
    const r = normalize(
      pod({
        spec: {
          containers: [
            {
              ports: [
                { containerPort: 0 },
                { containerPort: 80, protocol: 'ICMP' },
                { name: 'Bad_Name', containerPort: 81 },
                { name: 'ok', containerPort: '82' },
                { name: 'fine', containerPort: 83, protocol: 'SCTP' },
              ],
            },
          ],
        },
      }),
    );
    expect(fields(r.issues)).toEqual([
      'spec.containers[0].ports[0].containerPort',
      'spec.containers[0].ports[1].protocol',
      'spec.containers[0].ports[2].name',
      'spec.containers[0].ports[3].containerPort',
    ]);
    expect((r.record as PodRecord).ports).toEqual([
      { containerPort: 81, protocol: 'TCP' },
      { name: 'fine', containerPort: 83, protocol: 'SCTP' },
    ]);
  });

  it('keeps a numeric label value as text, with an issue', () => {
    const r = normalize(pod({}, { name: 'a', labels: { tier: 1 } }));
    expect(fields(r.issues)).toEqual(['metadata.labels[tier]']);
    expect((r.record as PodRecord).labels).toEqual({ tier: '1' });
  });

  it('produces no record without a name', () => {
    const r = normalize(pod({}, { namespace: 'x' }));
    expect(r.record).toBeUndefined();
    expect(r.ref).toBe('pod/x/<unnamed>');
    expect(fields(r.issues)).toEqual(['metadata.name']);
  });

  it('produces no record with an unusable namespace', () => {
    const r = normalize(pod({}, { name: 'a', namespace: 7 }));
    expect(r.record).toBeUndefined();
    expect(fields(r.issues)).toEqual(['metadata.namespace']);
  });
});

describe('normalize: Namespace and Node', () => {
  it('Namespace always carries kubernetes.io/metadata.name', () => {
    const r = normalize({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'y', labels: { ns: 'y', 'kubernetes.io/metadata.name': 'wrong' } } });
    expect(r.ref).toBe('namespace/y');
    expect(r.record).toEqual({ kind: 'Namespace', uid: 'y', name: 'y', labels: { ns: 'y', 'kubernetes.io/metadata.name': 'y' } } satisfies NamespaceRecord);
  });

  it('Namespace names are DNS labels', () => {
    const r = normalize({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'a.b' } });
    expect(fields(r.issues)).toEqual(['metadata.name']);
  });

  it('Node: podCIDRs (host bits cleared), InternalIPs only, IPv6 left out', () => {
    const r = normalize({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: 'node-1', uid: 'n1' },
      spec: { podCIDR: '10.244.9.0/24', podCIDRs: ['10.244.1.1/24', 'fd00:1::/64'] },
      status: { addresses: [{ type: 'Hostname', address: 'node-1' }, { type: 'InternalIP', address: '192.168.50.011' }, { type: 'InternalIP', address: 'fd00::11' }] },
    });
    expect(r.issues).toEqual([]);
    expect(r.record).toEqual({ kind: 'Node', uid: 'n1', name: 'node-1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['192.168.50.11'] } satisfies NodeRecord);
  });

  it('Node: spec.podCIDR when podCIDRs is absent; bad values dropped with issues', () => {
    const r = normalize({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n' }, spec: { podCIDR: '10.244.2.0/24' }, status: { addresses: [{ type: 'InternalIP', address: 'nope' }] } });
    expect((r.record as NodeRecord).podCIDRs).toEqual(['10.244.2.0/24']);
    expect(fields(r.issues)).toEqual(['status.addresses[0].address']);
    const bad = normalize({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n' }, spec: { podCIDR: '10.244.2.0' } });
    expect(fields(bad.issues)).toEqual(['spec.podCIDR']);
    expect((bad.record as NodeRecord).podCIDRs).toEqual([]);
  });
});

describe('normalizeUnreadable: a document that could not be read whole', () => {
  const NP = { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy' };
  const why = 'YAML syntax error in document 1 (line 6): Map keys must be unique';

  it('a NetworkPolicy whose namespace shows: fail-closed for the whole namespace, both directions, saying so', () => {
    const r = normalizeUnreadable({ ...NP, name: 'p', namespace: 'shop', metadataRead: true }, why);
    const rec = r.record as PolicyRecord;
    expect(rec).toMatchObject({ kind: 'NetworkPolicy', uid: 'shop/p', namespace: 'shop', name: 'p', podSelector: EVERYTHING, policyTypes: ['Ingress', 'Egress'], ingress: [], egress: [] });
    expect(r.issues).toEqual([{ field: '', value: '', message: `${why}; enforced fail-closed: isolates every pod of namespace "shop" in both directions and allows nothing (the document's podSelector and policyTypes cannot be trusted)` }]);
    expect(rec.issues).toEqual(r.issues);
    expect(r).toMatchObject({ ref: 'networkpolicy/shop/p', unknown: false });
  });

  it('the field and value of the problem, and the uid, are kept; no name still isolates the namespace', () => {
    const r = normalizeUnreadable({ ...NP, namespace: 'shop', uid: 'u-1', metadataRead: true }, 'an alias refers to its own parent', { field: 'spec.ingress[0]', value: '"*a"' });
    expect(r.record).toMatchObject({ uid: 'u-1', name: '<unnamed>', podSelector: EVERYTHING });
    expect(r.issues[0]).toMatchObject({ field: 'spec.ingress[0]', value: '"*a"' });
  });

  it('no namespace in metadata read whole: default, as kubectl applies it; metadata not read whole: unknown, nothing made up', () => {
    expect(normalizeUnreadable({ ...NP, name: 'p', metadataRead: true }, why).record).toMatchObject({ namespace: 'default' });
    for (const env of [{ ...NP, name: 'p', metadataRead: false }, { ...NP, name: 'p', namespace: UNREADABLE, metadataRead: true }, { ...NP, name: 'p', namespace: 5, metadataRead: true }]) {
      const r = normalizeUnreadable(env, why);
      expect(r.record).toBeUndefined();
      expect(r.unknown).toBe(true);
      expect(r.issues[0]!.message).toBe(`${why}; not enforced: its namespace cannot be read`);
    }
  });

  it('a ClusterNetworkPolicy, Pod, List or a document without a readable kind is left out as unknown; other kinds stay skipped', () => {
    const cnp = normalizeUnreadable({ apiVersion: 'policy.networking.k8s.io/v1alpha2', kind: 'ClusterNetworkPolicy', name: 'c', metadataRead: true }, why);
    expect(cnp).toMatchObject({ ref: 'clusternetworkpolicy/c', unknown: true, kind: 'ClusterNetworkPolicy' });
    expect(cnp.record).toBeUndefined();
    expect(cnp.issues[0]!.message).toContain('not enforced');
    expect(normalizeUnreadable({ apiVersion: 'v1', kind: 'Pod', name: 'a', namespace: 'x', metadataRead: true }, why)).toMatchObject({ ref: 'pod/x/a', unknown: true });
    expect(normalizeUnreadable({ apiVersion: 'v1', kind: 'List', metadataRead: true }, why)).toMatchObject({ unknown: true });
    expect(normalizeUnreadable({ kind: UNREADABLE, metadataRead: false }, why)).toMatchObject({ ref: '<unknown>', unknown: true });
    const cm = normalizeUnreadable({ apiVersion: 'v1', kind: 'ConfigMap', name: 'loop', metadataRead: true }, why);
    expect(cm).toMatchObject({ ref: 'configmap/loop', skipped: 'ConfigMap', unknown: false });
    expect(cm.record).toBeUndefined();
    expect(normalizeUnreadable({ apiVersion: 'projectcalico.org/v3', kind: 'NetworkPolicy', name: 'p', namespace: 'x', metadataRead: true }, why)).toMatchObject({ skipped: 'NetworkPolicy (projectcalico.org/v3)', unknown: false });
  });
});
