// fast-check generators of ClusterNetworkPolicy records for the clusters of arbitraries.ts: both
// tiers, few priorities (so ties happen), subjects and peers from the same small label
// vocabularies, networks over the pods' CIDRs and addresses, ports, ranges and named ports that
// collide with the pods' (`http` is 80 on some pods and 8080 on others), and now and then a rule
// in its fail-closed form.

import fc from 'fast-check';
import { parseCidr } from '../../src/model/cidr.ts';
import { EVERYTHING } from '../../src/model/selector.ts';
import type { ClusterPolicyRecord, CnpAction, CnpPeer, CnpProtocolMatch, CnpRule, CnpTier, PodsPeer, Requirement, Selector } from '../../src/model/types.ts';

const reqArb = (keys: readonly string[], values: readonly string[]): fc.Arbitrary<Omit<Requirement, 'origin'>> =>
  fc.oneof(
    fc.record({ key: fc.constantFrom(...keys), operator: fc.constantFrom('In' as const, 'NotIn' as const), values: fc.uniqueArray(fc.constantFrom(...values), { minLength: 1, maxLength: 2 }) }),
    fc.record({ key: fc.constantFrom(...keys), operator: fc.constantFrom('Exists' as const, 'DoesNotExist' as const), values: fc.constant([] as string[]) }),
  );

const selArb = (keys: readonly string[], values: readonly string[]): fc.Arbitrary<Selector> =>
  fc.array(reqArb(keys, values), { maxLength: 2 }).map((reqs) => ({ requirements: reqs.map((r, i) => ({ ...r, origin: `matchExpressions[${i}]` })) }));

const podSel = selArb(['app', 'tier'], ['web', 'db', 'api', 'fe', 'be']);
const nsSel = selArb(['team', 'env', 'kubernetes.io/metadata.name'], ['a', 'b', 'prod', 'dev', 'x', 'y']);

export const podsPeerArb: fc.Arbitrary<PodsPeer> = fc.oneof(
  nsSel.map((selector): PodsPeer => ({ kind: 'pods', namespaces: { kind: 'selector', selector } })),
  fc.tuple(nsSel, podSel).map(([selector, pods]): PodsPeer => ({ kind: 'pods', namespaces: { kind: 'selector', selector }, pods })),
);

const NETWORKS = [['0.0.0.0/0'], ['10.244.1.0/24'], ['10.244.2.10/32', '192.168.0.0/16'], ['fd00::/8'], ['10.244.0.0/16', '8.8.8.8/32']].map((l) => l.map(parseCidr));

const PROTOCOLS: CnpProtocolMatch[] = [
  { kind: 'port', protocol: 'TCP', port: 80 },
  { kind: 'port', protocol: 'TCP', port: 8000, endPort: 8100 },
  { kind: 'port', protocol: 'UDP', port: 53 },
  { kind: 'port', protocol: 'SCTP', port: 9000 },
  { kind: 'namedPort', name: 'http' },
  { kind: 'namedPort', name: 'dns' },
];

function ruleArb(egress: boolean): fc.Arbitrary<CnpRule> {
  const peer: fc.Arbitrary<CnpPeer> = egress ? fc.oneof({ weight: 3, arbitrary: podsPeerArb }, { weight: 1, arbitrary: fc.constantFrom(...NETWORKS).map((cidrs): CnpPeer => ({ kind: 'networks', cidrs })) }) : podsPeerArb;
  return fc
    .record({
      name: fc.constantFrom('', 'r'),
      action: fc.constantFrom<CnpAction>('Accept', 'Deny', 'Pass'),
      peers: fc.array(peer, { minLength: 1, maxLength: 2 }),
      protocols: fc.option(fc.uniqueArray(fc.constantFrom(...PROTOCOLS), { minLength: 1, maxLength: 2 }), { nil: undefined }),
      // One rule in fifteen in a fail-closed form (as an unsupported peer leaves it).
      closed: fc.integer({ min: 0, max: 14 }),
    })
    .map((r): CnpRule => {
      if (r.closed === 0) return { name: r.name, action: 'Accept', peers: [], failClosed: 'generated: an Accept rule that matches nothing' };
      if (r.closed === 1) return { name: r.name, action: 'Deny', peers: [{ kind: 'any' }], failClosed: 'generated: a rule that denies all' };
      // Named ports never come with a networks peer (the API refuses that).
      const protocols = r.protocols && r.peers.some((p) => p.kind === 'networks') ? r.protocols.filter((p) => p.kind === 'port') : r.protocols;
      return { name: r.name, action: r.action, peers: r.peers, ...(protocols && protocols.length ? { protocols } : {}) };
    });
}

export function clusterPolicyArb(index: number, tier?: CnpTier): fc.Arbitrary<ClusterPolicyRecord> {
  return fc
    .record({
      tier: tier ? fc.constant(tier) : fc.constantFrom<CnpTier>('Admin', 'Baseline'),
      priority: fc.constantFrom(0, 1, 5),
      subject: fc.oneof({ weight: 1, arbitrary: fc.constant<PodsPeer>({ kind: 'pods', namespaces: { kind: 'selector', selector: EVERYTHING } }) }, { weight: 3, arbitrary: podsPeerArb }),
      ingress: fc.array(ruleArb(false), { maxLength: 3 }),
      egress: fc.array(ruleArb(true), { maxLength: 3 }),
    })
    .map((r): ClusterPolicyRecord => ({ kind: 'ClusterNetworkPolicy', uid: `cnp-${index}`, name: `cnp-${index}`, ...r, issues: [], unsupported: [] }));
}

/** Between `min` and `max` policies named `cnp-<first>`, `cnp-<first+1>`, ... */
export const clusterPoliciesArb = (min = 0, max = 4, tier?: CnpTier, first = 0): fc.Arbitrary<ClusterPolicyRecord[]> =>
  fc.integer({ min, max }).chain((n) => (n === 0 ? fc.constant([]) : fc.tuple(...Array.from({ length: n }, (_, i) => clusterPolicyArb(first + i, tier)))));
