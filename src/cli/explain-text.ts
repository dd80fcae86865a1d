// Text rendering of an ExplainReport. Pure formatting: every fact comes from the report.

import type { DirectionResult, RuleResult } from '../semantics/evaluate.ts';
import type { ExplainReport, PolicyView, RuleView } from '../semantics/explain.ts';

const labelsText = (l: Readonly<Record<string, string>>) =>
  Object.keys(l).length ? Object.entries(l).map(([k, v]) => `${k}=${v}`).join(', ') : '<none>';

export function formatExplain(r: ExplainReport): string {
  const L: string[] = [];
  const p = r.pod;
  L.push(`Pod:         ${p.namespace}/${p.name}`);
  L.push(`Node:        ${p.node ?? '<unscheduled>'}`);
  L.push(`IPs:         ${p.ips.length ? p.ips.join(', ') : '<none>'}`);
  L.push(`Labels:      ${labelsText(p.labels)}`);
  L.push(`Namespace:   ${p.namespace} (labels: ${labelsText(p.namespaceLabels)})${p.namespaceImplicit ? ' [no Namespace object seen; API server labels assumed]' : ''}`);
  L.push(`Named ports: ${p.namedPorts.length ? p.namedPorts.map((n) => `${n.name}=${n.port}/${n.protocol}`).join(', ') : '<none>'}`);
  if (!p.enforced) L.push(`Enforcement: none: the pod ${p.notEnforcedReason}; policies neither isolate it nor select it as a peer`);
  L.push('');
  for (const iso of r.isolation) {
    L.push(`${iso.direction.padEnd(8)} ${iso.isolated ? `isolated by ${iso.by.join(', ')}` : 'not isolated (no policy of that type selects the pod): all allowed'}`);
  }
  const selecting = r.policies.filter((x) => x.selects);
  const others = r.policies.filter((x) => !x.selects);
  for (const pol of selecting) {
    L.push('');
    L.push(...formatPolicy(pol));
  }
  if (others.length) {
    L.push('');
    L.push(`Policies in ${p.namespace} that do not select this pod:`);
    for (const pol of others) {
      const failed = pol.requirements.filter((q) => !q.matched).map((q) => `wants ${q.requirement}, has ${q.actual}`);
      L.push(`  ${pol.name}: podSelector ${pol.podSelector} (${failed.join('; ')})`);
    }
  }
  for (const f of r.flows ?? []) {
    L.push('');
    L.push(`Flow ${f.from} -> ${f.to} ${f.port}/${f.protocol}: ${f.verdict.allowed ? 'ALLOWED' : 'DENIED'}`);
    if (f.verdict.fact) {
      L.push(`  ${f.verdict.fact}`);
      continue;
    }
    L.push(...formatDirection(f.verdict.egress), ...formatDirection(f.verdict.ingress));
  }
  return L.join('\n') + '\n';
}

function formatPolicy(pol: PolicyView): string[] {
  const L: string[] = [];
  L.push(`Policy ${pol.name}${pol.issues.length ? '  [INVALID: isolates the pods it selects and allows nothing]' : ''}`);
  for (const i of pol.issues) L.push(`  error: ${i.field}: ${i.message} (got ${i.value})`);
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
    const pods = peer.pods ? (peer.pods.length ? ` -> ${peer.pods.join(', ')}` : ' -> no pods now') : '';
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

function formatDirection(d: DirectionResult): string[] {
  const L = [`  ${d.direction.toLowerCase()}: ${d.allowed ? 'allowed' : 'DENIED'}: ${d.enforced && d.isolatedBy.length ? (d.allowedBy ? `by ${d.allowedBy.policy} ${d.direction.toLowerCase()} rule ${d.allowedBy.ruleIndex}` : `isolated by ${d.isolatedBy.join(', ')}, no rule matches`) : d.summary}`];
  for (const r of d.rules) L.push(...formatRuleResult(r));
  return L;
}

function formatRuleResult(r: RuleResult): string[] {
  const L = [`    ${r.matched ? 'matches       ' : 'does not match'} ${r.policy} rule ${r.ruleIndex}`];
  for (const p of r.peers) L.push(`      ${p.matched ? '+' : '-'} ${p.why}`);
  for (const p of r.ports) L.push(`      ${p.matched ? '+' : '-'} ${p.why}`);
  return L;
}
