// Checks that a denied flow's trace logged the drop (issue 11, src/compiler/drop-log.ts): the
// drop that ended it follows a matched NFLOG rule whose prefix names what the semantics says
// decided: the direction, and for a NetworkPolicy default deny the policies isolating the pod,
// for a ClusterNetworkPolicy Deny its tier, rule index and name, for an unprogrammed address
// `unknown`. Shared by the compiler's unit test and the property tests.

import { clusterPolicyDigest, parseDropLogPrefix, policiesDigest } from '../../src/compiler/drop-log.ts';
import type { Verdict } from '../../src/semantics/evaluate.ts';
import type { TraceResult } from './tracer.ts';

/** Why the trace's drop was not logged as the semantics decided, or undefined when it was. */
export function dropLogMismatch(expected: Verdict, result: TraceResult): string | undefined {
  if (expected.allowed || result.verdict !== 'DROP') return undefined;
  const matched = result.steps.filter((s) => s.matched);
  const drop = matched[matched.length - 1];
  // A drop by a rule that is not ours (another agent's, a built-in policy) is not ours to log.
  if (!drop || !/ -j DROP$/.test(drop.rule) || !drop.chain.startsWith('PCTL-')) return undefined;
  const log = matched[matched.length - 2];
  const m = log && / -j NFLOG --nflog-prefix "([^"]*)"/.exec(log.rule);
  if (!log || !m || log.chain !== drop.chain) return `the drop ${drop.rule} is not logged right before it`;
  const p = parseDropLogPrefix(m[1]!);
  if (!p) return `log prefix "${m[1]}" does not parse`;
  // An unprogrammed destination on another node: the sender's node may deny its egress first.
  if (expected.fact) return p.kind === 'unknown' || p.dir === 'Egress' ? undefined : `an unprogrammed address was logged as ${m[1]}`;
  const dir = !expected.egress.allowed ? expected.egress : expected.ingress;
  if (p.dir !== dir.direction) return `${dir.direction} denied, logged as ${p.dir} (${m[1]})`;
  const d = dir.decidedBy;
  if (!d) return `no decision for ${dir.direction}, logged as ${m[1]}`;
  if (d.tier === 'NetworkPolicy') {
    if (p.kind !== 'np' || p.policiesDigest !== policiesDigest(dir.isolatedBy)) return `a default deny by ${dir.isolatedBy.join(',')} logged as ${m[1]}`;
    return undefined;
  }
  if (p.kind !== 'cnp' || p.tier !== d.tier || p.index !== d.ruleIndex || p.nameDigest !== clusterPolicyDigest(d.policy ?? '')) {
    return `a ${d.tier} Deny by ${d.policy} rule ${d.ruleIndex} logged as ${m[1]}`;
  }
  return undefined;
}
