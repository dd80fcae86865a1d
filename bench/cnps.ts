// ClusterNetworkPolicies for the synthetic cluster (bench/synthetic.ts): what a cluster admin
// writes, in the shapes the API's user stories describe, from their own seeded PRNG (so adding
// them leaves the cluster's own records as they were).
//
// Of `count` (default 100), about 60% Admin, 40% Baseline:
// - Admin, every namespace: DNS always allowed (egress Accept to kube-dns, UDP and TCP 53), the
//   cloud metadata address denied (egress Deny to 169.254.169.254/32), monitoring always allowed
//   (ingress Accept from the monitoring namespace on the named port `metrics`);
// - Admin, per team: a tenant wall (ingress Pass from the team's own namespaces, Deny from the
//   other teams' namespaces), the ingress controller allowed on `http`, a database port closed
//   to dev namespaces;
// - Baseline, per team: egress kept inside the team (Accept to the team's namespaces and to
//   kube-dns, Deny to every other address) and ingress from outside the team denied, both only
//   where no NetworkPolicy isolates the pod;
// priorities spread over 0-1000 with some ties (name order decides, as the semantics do).

import { parseCidr } from '../src/model/cidr.ts';
import type { ClusterPolicyRecord, CnpRule, CnpTier, PodsPeer, Requirement, Selector } from '../src/model/types.ts';
import { NS_NAME, Rng, type SyntheticCluster } from './synthetic.ts';

const req = (key: string, operator: Requirement['operator'], values: string[] = []): Requirement => ({ key, operator, values, origin: 'matchExpressions[0]' });
const sel = (...reqs: Requirement[]): Selector => ({ requirements: reqs });
const label = (key: string, value: string) => sel(req(key, 'In', [value]));
const namespaces = (s: Selector): PodsPeer => ({ kind: 'pods', namespaces: { kind: 'selector', selector: s } });
const pods = (ns: Selector, p: Selector): PodsPeer => ({ kind: 'pods', namespaces: { kind: 'selector', selector: ns }, pods: p });
const EVERY_NAMESPACE = sel();

function record(rng: Rng, name: string, tier: CnpTier, priority: number, subject: PodsPeer, ingress: CnpRule[], egress: CnpRule[]): ClusterPolicyRecord {
  return { kind: 'ClusterNetworkPolicy', uid: rng.uid(), name, tier, priority, subject, ingress, egress, issues: [], unsupported: [] };
}

/** `count` ClusterNetworkPolicies for the cluster's teams and system namespaces. */
export function clusterPolicies(c: SyntheticCluster, count = 100, seed = c.spec.seed): ClusterPolicyRecord[] {
  const rng = new Rng(seed * 7919 + 17);
  const teams = [...new Set(c.namespaces.map((n) => n.labels.team).filter((t): t is string => t !== undefined))].sort();
  const kubeDns = pods(label(NS_NAME, 'kube-system'), label('k8s-app', 'kube-dns'));
  const dns: CnpRule['protocols'] = [
    { kind: 'port', protocol: 'UDP', port: 53 },
    { kind: 'port', protocol: 'TCP', port: 53 },
  ];
  const out: ClusterPolicyRecord[] = [
    record(rng, 'dns-always', 'Admin', 5, namespaces(EVERY_NAMESPACE), [], [{ name: 'dns', action: 'Accept', peers: [kubeDns], protocols: dns }]),
    record(rng, 'no-cloud-metadata', 'Admin', 10, namespaces(EVERY_NAMESPACE), [], [{ name: 'metadata', action: 'Deny', peers: [{ kind: 'networks', cidrs: [parseCidr('169.254.169.254/32')] }] }]),
    record(rng, 'monitoring-always', 'Admin', 20, namespaces(EVERY_NAMESPACE), [{ name: 'scrape', action: 'Accept', peers: [namespaces(label('purpose', 'monitoring'))], protocols: [{ kind: 'namedPort', name: 'metrics' }] }], []),
  ];
  const admin = Math.round(count * 0.6);
  for (let i = 0; out.length < admin; i++) {
    const team = teams[i % teams.length]!;
    const subject = namespaces(label('team', team));
    const shape = Math.floor(i / teams.length) % 3;
    const priority = rng.int(100, 900);
    if (shape === 0) {
      out.push(
        record(rng, `tenant-wall-${team}`, 'Admin', priority, subject, [
          { name: 'own-team', action: 'Pass', peers: [namespaces(label('team', team))] },
          { name: 'system', action: 'Pass', peers: [namespaces(sel(req('purpose', 'Exists')))] },
          { name: 'other-teams', action: 'Deny', peers: [namespaces(sel(req('team', 'Exists')))] },
        ], []),
      );
    } else if (shape === 1) {
      out.push(
        record(rng, `ingress-controller-${team}`, 'Admin', priority, subject, [
          { name: 'nginx', action: 'Accept', peers: [pods(label('purpose', 'ingress'), label('app.kubernetes.io/name', 'ingress-nginx'))], protocols: [{ kind: 'namedPort', name: 'http' }] },
        ], []),
      );
    } else {
      out.push(
        record(rng, `no-dev-to-db-${team}`, 'Admin', priority, subject, [
          { name: 'dev', action: 'Deny', peers: [namespaces(label('env', 'dev'))], protocols: [{ kind: 'port', protocol: 'TCP', port: 5432 }, { kind: 'port', protocol: 'TCP', port: 6379 }] },
        ], []),
      );
    }
  }
  for (let i = 0; out.length < count; i++) {
    const team = teams[i % teams.length]!;
    const subject = namespaces(label('team', team));
    const priority = rng.int(0, 1000);
    out.push(
      i < teams.length
        ? record(rng, `team-egress-${team}`, 'Baseline', priority, subject, [], [
            { name: 'own-team', action: 'Accept', peers: [namespaces(label('team', team))] },
            { name: 'dns', action: 'Accept', peers: [kubeDns], protocols: dns },
            { name: 'rest', action: 'Deny', peers: [{ kind: 'networks', cidrs: [parseCidr('0.0.0.0/0')] }] },
          ])
        : record(rng, `team-ingress-${team}`, 'Baseline', priority, subject, [
            { name: 'own-team', action: 'Accept', peers: [namespaces(label('team', team))] },
            { name: 'rest', action: 'Deny', peers: [namespaces(EVERY_NAMESPACE)] },
          ], []),
    );
  }
  return out;
}

/** Add `count` ClusterNetworkPolicies to the cluster's model; returns them. */
export function addClusterPolicies(c: SyntheticCluster, count = 100): ClusterPolicyRecord[] {
  const list = clusterPolicies(c, count);
  for (const r of list) c.model.upsert(r);
  return list;
}
