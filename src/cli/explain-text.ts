// Text rendering of an ExplainReport. Pure formatting: every fact comes from the report.
//
// Invariant: one entry, one line. Names and labels come from manifests and may hold anything
// (a pod named "x\n-A FORWARD -j ACCEPT" is refused by validation but still shown): they are
// printed through `pr` (printable: quoted when not plain), and every line is escaped once more
// at the end, so no text a manifest holds can start a line of its own.

import { escapeLine, printable as pr } from '../model/issues.ts';
import type { ClusterRuleResult, DirectionResult, RuleResult } from '../semantics/evaluate.ts';
import { clusterPolicyRef, type ClusterPolicyView, type ClusterRuleView, type ExplainReport, type PolicyView, type RuleView } from '../semantics/explain.ts';

const labelsText = (l: Readonly<Record<string, string>>) =>
  Object.keys(l).length ? Object.entries(l).map(([k, v]) => `${pr(k)}=${v === '' ? '' : pr(v)}`).join(', ') : '<none>';

export function formatExplain(r: ExplainReport): string {
  const L: string[] = [];
  const p = r.pod;
  L.push(`Pod:         ${pr(`${p.namespace}/${p.name}`)}`);
  L.push(`Node:        ${p.node !== undefined ? pr(p.node) : '<unscheduled>'}`);
  L.push(`IPs:         ${p.ips.length ? p.ips.join(', ') : '<none>'}`);
  L.push(`Labels:      ${labelsText(p.labels)}`);
  L.push(`Namespace:   ${pr(p.namespace)} (labels: ${labelsText(p.namespaceLabels)})${p.namespaceImplicit ? ' [no Namespace object seen; API server labels assumed]' : ''}`);
  L.push(`Named ports: ${p.namedPorts.length ? p.namedPorts.map((n) => `${pr(n.name)}=${n.port}/${n.protocol}`).join(', ') : '<none>'}`);
  if (!p.enforced) L.push(`Enforcement: none: the pod ${p.notEnforcedReason}; policies neither isolate it nor select it as a peer`);
  L.push('');
  for (const iso of r.isolation) {
    const cnps = r.clusterPolicies.some((c) => (iso.direction === 'Ingress' ? c.ingress : c.egress).length > 0);
    const open = cnps ? 'not isolated by a NetworkPolicy (none of that type selects the pod); the ClusterNetworkPolicies below decide' : 'not isolated (no policy of that type selects the pod): all allowed';
    L.push(`${iso.direction.padEnd(8)} ${iso.isolated ? `isolated by ${iso.by.map(pr).join(', ')}` : open}`);
  }
  const admin = r.clusterPolicies.filter((c) => c.tier === 'Admin');
  const baseline = r.clusterPolicies.filter((c) => c.tier === 'Baseline');
  for (const [list, title] of [
    [admin, 'Admin tier (decides before NetworkPolicies)'],
    [baseline, 'Baseline tier (decides after NetworkPolicies, for directions no NetworkPolicy isolates)'],
  ] as const) {
    if (list.length === 0) continue;
    L.push('');
    L.push(`ClusterNetworkPolicies selecting this pod, ${title}:`);
    for (const c of list) L.push(...formatClusterPolicy(c));
  }
  const selecting = r.policies.filter((x) => x.selects);
  const others = r.policies.filter((x) => !x.selects);
  for (const pol of selecting) {
    L.push('');
    L.push(...formatPolicy(pol));
  }
  if (others.length) {
    L.push('');
    L.push(`Policies in ${pr(p.namespace)} that do not select this pod:`);
    for (const pol of others) {
      const failed = pol.requirements.filter((q) => !q.matched).map((q) => `wants ${q.requirement}, has ${q.actual}`);
      L.push(`  ${pr(pol.name)}: podSelector ${pol.podSelector} (${failed.join('; ')})`);
    }
  }
  for (const f of r.flows ?? []) {
    L.push('');
    L.push(`Flow ${pr(f.from)} -> ${pr(f.to)} ${f.port}/${f.protocol}: ${f.verdict.allowed ? 'ALLOWED' : 'DENIED'}`);
    if (f.verdict.fact) {
      L.push(`  ${f.verdict.fact}`);
      continue;
    }
    L.push(...formatDirection(f.verdict.egress), ...formatDirection(f.verdict.ingress));
  }
  return L.map(escapeLine).join('\n') + '\n';
}

function formatPolicy(pol: PolicyView): string[] {
  const L: string[] = [];
  L.push(`Policy ${pr(pol.name)}${pol.issues.length ? '  [INVALID: isolates the pods it selects and allows nothing]' : ''}`);
  for (const i of pol.issues) L.push(`  error: ${pr(i.field)}: ${i.message}${i.value !== '' ? ` (got ${i.value})` : ''}`);
  L.push(`  podSelector: ${pol.podSelector}${pol.requirements.length === 0 ? ' (empty: selects every pod of the namespace)' : ''}`);
  for (const q of pol.requirements) L.push(`    ${q.matched ? 'match   ' : 'no match'} ${q.requirement} (${q.origin}; pod has ${q.actual})`);
  L.push(`  policyTypes: ${pol.policyTypes.join(', ')}${pol.policyTypesDefaulted ? ' (defaulted: policyTypes absent)' : ''}`);
  for (const ig of pol.ignored) L.push(`  ignored: ${ig} (its direction is not in policyTypes)`);
  const dir = (name: string, rules: readonly RuleView[], type: string) => {
    if (!pol.policyTypes.includes(type as 'Ingress' | 'Egress')) return;
    if (rules.length === 0) {
      L.push(`  ${name}: no rules: allows nothing (deny all ${name})`);
      return;
    }
    for (const rv of rules) L.push(...formatRule(name, rv));
  };
  dir('ingress', pol.ingress, 'Ingress');
  dir('egress', pol.egress, 'Egress');
  return L;
}

function formatRule(dir: string, rv: RuleView): string[] {
  const L = [`  ${dir} rule ${rv.index}:`];
  const word = dir === 'ingress' ? 'from' : 'to';
  for (const peer of rv.peers) {
    const pods = peer.pods ? (peer.pods.length ? ` -> ${peer.pods.map(pr).join(', ')}` : ' -> no pods now') : '';
    L.push(`    ${word}: ${peer.description}${pods}`);
  }
  if (rv.ports === 'all') L.push('    ports: every port and protocol');
  else {
    for (const port of rv.ports) {
      L.push(`    port: ${port.description}${port.resolved ? ` -> ${port.resolved.length ? port.resolved.join(', ') : 'no pod has it: matches nothing'}` : ''}`);
    }
  }
  return L;
}

function formatClusterPolicy(c: ClusterPolicyView): string[] {
  const L = [`  ${c.tier} ${c.priority} ${clusterPolicyRef(c)}${c.issues.length ? '  [INVALID: fails closed, denying all traffic of each direction it has rules for]' : ''}`];
  for (const i of c.issues) L.push(`    error: ${i.field}: ${i.message} (got ${i.value})`);
  for (const i of c.unsupported) L.push(`    unsupported: ${i.field}: ${i.message} (got ${i.value})`);
  L.push(`    subject: ${c.subject}`);
  for (const [dir, rules] of [
    ['ingress', c.ingress],
    ['egress', c.egress],
  ] as const) {
    for (const rv of rules) L.push(...formatClusterRule(dir, rv));
  }
  return L;
}

function formatClusterRule(dir: 'ingress' | 'egress', rv: ClusterRuleView): string[] {
  const L = [`    ${dir} rule ${rv.index}${rv.name ? ` ${JSON.stringify(rv.name)}` : ''}: ${rv.action}`];
  if (rv.failClosed) L.push(`      fails closed: ${rv.failClosed}`);
  const word = dir === 'ingress' ? 'from' : 'to';
  if (rv.peers.length === 0) L.push(`      ${word}: nothing (matches no traffic)`);
  for (const peer of rv.peers) {
    const pods = peer.pods ? (peer.pods.length ? ` -> ${peer.pods.map(pr).join(', ')}` : ' -> no pods now') : '';
    L.push(`      ${word}: ${peer.description}${pods}`);
  }
  if (rv.ports === 'all') L.push('      protocols: every protocol and port');
  else {
    for (const port of rv.ports) {
      L.push(`      protocol: ${port.description}${port.resolved ? ` -> ${port.resolved.length ? port.resolved.join(', ') : 'no pod has it: matches nothing'}` : ''}`);
    }
  }
  return L;
}

function formatDirection(d: DirectionResult): string[] {
  // Enforced: the tier path, e.g. `[Admin 10 cnp/wall rule "x"] Pass -> [NetworkPolicy] ... -> DENIED`.
  const L = [`  ${d.direction.toLowerCase()}: ${d.enforced ? d.pathText : `${d.allowed ? 'allowed' : 'DENIED'}: ${d.summary}`}`];
  for (const w of d.warnings) L.push(`    warning: ${w}`);
  for (const r of d.clusterRules) L.push(...formatClusterRuleResult(r));
  for (const r of d.rules) L.push(...formatRuleResult(r));
  return L;
}

function formatClusterRuleResult(r: ClusterRuleResult): string[] {
  const name = r.ruleName ? ` ${JSON.stringify(r.ruleName)}` : '';
  const L = [`    ${r.matched ? 'matches       ' : 'does not match'} ${r.tier} ${r.priority} cnp/${r.policy} rule ${r.ruleIndex}${name} (${r.action})`];
  if (r.failClosed) L.push(`      ! fails closed: ${r.failClosed}`);
  for (const p of r.peers) L.push(`      ${p.matched ? '+' : '-'} ${p.why}`);
  for (const p of r.ports) L.push(`      ${p.matched ? '+' : '-'} ${p.why}`);
  return L;
}

function formatRuleResult(r: RuleResult): string[] {
  const L = [`    ${r.matched ? 'matches       ' : 'does not match'} ${pr(r.policy)} rule ${r.ruleIndex}`];
  for (const p of r.peers) L.push(`      ${p.matched ? '+' : '-'} ${p.why}`);
  for (const p of r.ports) L.push(`      ${p.matched ? '+' : '-'} ${p.why}`);
  return L;
}
