// docs/design.md, invariant two-statements: two independent statements of the meaning must agree. On random
// clusters, every flow between pods (and to and from outside addresses) gets the same verdict
// from the semantics and from the tracer executing the compiled, rendered rules of each node
// on the flow's path. The seed is printed on failure; replay with PROPERTY_SEED=<seed>.

import fc from 'fast-check';
import { describe, it } from 'vitest';
import { allowed, podKey, type Endpoint } from '../../src/semantics/evaluate.ts';
import type { CompileOptions } from '../../src/compiler/compile.ts';
import { NODES, clusterArb, flowsAmong, tieredClusterArb, canTalk, type Cluster } from '../support/arbitraries.ts';
import { checkProperty, expectMutationCaught, propertyRuns } from '../support/property.ts';
import { Dataplane, type Mutator } from '../support/dataplane.ts';
import { dropLogMismatch } from '../support/drop-log-check.ts';
import { formatTrace } from '../support/tracer.ts';

const RUNS = propertyRuns(400);

/** Every flow of interest in a cluster: pods that can send or receive (running, with an address; hostNetwork pods use the node's), and the outside. */
const flowsOf = (c: Cluster) => flowsAmong(c.pods.filter(canTalk));

const name = (e: Endpoint) => (e.kind === 'pod' ? `${podKey(e.pod)}${e.pod.hostNetwork ? '(host)' : ''}` : e.ip);

/** Admin chains shared by the pods under the same Admin policies, a second dispatch after them. */
const SHARED: CompileOptions = { tiers: { continuation: { Admin: 'dispatch' } } };

/** Revoke mode (--revoke-established): mid-stream TCP pickups of the pod CIDRs are dropped. */
const REVOKE: CompileOptions = { dropMidstream: true };

/**
 * Revoke mode, a TCP packet that conntrack takes up mid-stream (NEW, no SYN) on each flow's
 * path: the first node whose pod CIDRs hold either end drops it (unless a node before it dropped
 * it by policy), logged `midstream` as egress when the source is in them, else as ingress; where
 * no node's pod CIDRs hold an end, the policy judges it as it judges the connection's SYN. A
 * bridge's address is in its pod CIDR but is the node's own: it is no end of a pod CIDR (its
 * packet to a pod is dropped as that pod's ingress, to anything else it is the node's traffic).
 */
function checkMidstream(c: Cluster): void {
  const plane = new Dataplane(c.model, NODES.map((n) => n.name), undefined, REVOKE);
  for (const flow of flowsOf(c)) {
    if (flow.protocol !== 'TCP') continue;
    const got = plane.traverse(flow, { tcpFlags: ['ACK'] });
    if (got.traces.length === 0) continue; // a pod to itself never leaves it
    const src = flow.src.kind === 'pod' ? flow.src.pod.ips[0]! : flow.src.ip;
    const dst = flow.dst.kind === 'pod' ? flow.dst.pod.ips[0]! : flow.dst.ip;
    const account = () => `${name(flow.src)} -> ${name(flow.dst)} ${flow.port}/TCP mid-stream\n${got.traces.map((t) => `--- ${t.node} ${t.hook}\n${formatTrace(t.result)}`).join('\n')}`;
    const at = got.traces.findIndex((t) => plane.podSideOf(t.node, src) || plane.podSideOf(t.node, dst));
    // A hop is only traced after the ones before it passed, so the first such hop is traced
    // unless an earlier one dropped the packet by policy.
    if (at < 0) {
      if (got.allowed !== allowed(c.model, flow).allowed) throw new Error(`no pod CIDR end, yet not judged as the connection: ${account()}`);
      continue;
    }
    const hop = got.traces[at]!;
    const matched = hop.result.steps.filter((s) => s.matched);
    const drop = matched[matched.length - 1];
    const log = /--nflog-prefix "([^"]*)"/.exec(matched[matched.length - 2]?.rule ?? '')?.[1];
    const want = `PCTL ${plane.podSideOf(hop.node, src) ? 'E' : 'I'} midstream`;
    if (hop.result.verdict !== 'DROP' || drop?.chain !== 'PCTL-MIDSTREAM' || log !== want) throw new Error(`not dropped as ${want} on ${hop.node}: ${account()}`);
  }
}

/** The verdict cache (the agent's default; layout.ts VERDICT_CACHE_SET). */
const CACHE: CompileOptions = { verdictCache: true };

/**
 * Throws with a full account (verdict, traces, rules) on the first disagreement. `twice`: the
 * kernel's sets remember what the rules add to them (the verdict cache), and every flow is
 * traversed a second time after all were once, so each meets what all the others left.
 */
function checkAgreement(c: Cluster, mutate?: Mutator, opts: CompileOptions = {}, twice = false): void {
  const plane = new Dataplane(c.model, NODES.map((n) => n.name), mutate, opts);
  plane.rememberVerdicts = twice;
  const flows = flowsOf(c);
  for (const flow of twice ? [...flows, ...flows] : flows) {
    const expected = allowed(c.model, flow);
    const got = plane.traverse(flow);
    if (got.allowed !== expected.allowed) {
      const traces = got.traces.map((t) => `--- ${t.node} ${t.hook}\n${formatTrace(t.result)}`).join('\n');
      const rules = [...plane.nodes].map(([n, p]) => `=== ${n}\n${p.ipsetText}${p.iptablesText}`).join('\n');
      throw new Error(
        `${name(flow.src)} -> ${name(flow.dst)} ${flow.port}/${flow.protocol}: semantics says ${expected.allowed ? 'allowed' : 'denied'} ` +
          `(${expected.summary}) but the compiled rules ${got.allowed ? 'allow' : 'deny'} it\n${traces}\n${rules}`,
      );
    }
    // Issue 11: the drop is logged, naming what the semantics says decided (drop-log-check.ts).
    const last = got.traces[got.traces.length - 1];
    const why = last && !mutate ? dropLogMismatch(expected, last.result) : undefined;
    if (why) throw new Error(`${name(flow.src)} -> ${name(flow.dst)} ${flow.port}/${flow.protocol}: ${why}\n--- ${last!.node} ${last!.hook}\n${formatTrace(last!.result)}`);
  }
}




/**
 * The rules of each Admin tier chain (PCTL-A-* egress, PCTL-D-* ingress) but its last in reverse
 * order: later priorities before earlier ones.
 */
function reverseAdminRules(t: string): string {
  const lines = t.split('\n');
  const byChain = new Map<string, number[]>();
  lines.forEach((l, i) => {
    const m = /^-A (PCTL-[AD]-\S+) /.exec(l);
    if (m) byChain.set(m[1]!, [...(byChain.get(m[1]!) ?? []), i]);
  });
  for (const idx of byChain.values()) {
    if (idx.length < 3) continue;
    const body = idx.slice(0, -1).map((i) => lines[i]!);
    body.reverse().forEach((l, j) => (lines[idx[j]!] = l));
  }
  return lines.join('\n');
}

describe('compiled rules agree with the semantics', () => {
  it(`on ${RUNS} random clusters, every flow`, () => {
    checkProperty(fc.property(clusterArb, (c) => checkAgreement(c)), RUNS);
  });

  it(`on ${RUNS} random clusters with random ClusterNetworkPolicies (Admin and Baseline tiers), every flow`, () => {
    checkProperty(fc.property(tieredClusterArb, (c) => checkAgreement(c)), RUNS);
  });

  it(`on ${RUNS} random clusters with random ClusterNetworkPolicies, Admin chains shared (--shared-admin-chains), every flow`, () => {
    checkProperty(fc.property(tieredClusterArb, (c) => checkAgreement(c, undefined, SHARED)), RUNS);
  });

  it(`on ${RUNS} random clusters with random ClusterNetworkPolicies, mid-stream drops on (--revoke-established), every flow`, () => {
    checkProperty(fc.property(tieredClusterArb, (c) => checkAgreement(c, undefined, REVOKE)), RUNS);
  });

  it(`on ${RUNS} random clusters with random ClusterNetworkPolicies, the verdict cache on, every flow twice (the second time after every flow left its verdict)`, () => {
    checkProperty(fc.property(tieredClusterArb, (c) => checkAgreement(c, undefined, CACHE, true)), RUNS);
  });

  it(`on ${Math.ceil(RUNS / 2)} random clusters, mid-stream drops on: a TCP packet conntrack takes up mid-stream is dropped and logged where a pod CIDR holds an end`, () => {
    checkProperty(fc.property(tieredClusterArb, (c) => checkMidstream(c)), Math.ceil(RUNS / 2));
  });

  // A suite that could not fail would prove nothing: break one compiled rule in each of these
  // ways and the same property must find a flow that disagrees.
  const mutations: Record<string, Mutator> = {
    'a default deny becomes RETURN (opens traffic)': (t) => t.replace(/(-A PCTL-I-\S+ .*default deny[^\n]*)-j DROP/, '$1-j RETURN'),
    'the first allow rule of an ingress chain is deleted (closes traffic)': (t) => t.replace(/\n-A PCTL-I-\S+ (?!.*default deny)[^\n]*-j RETURN/, ''),
    'a peer set is matched on the wrong side': (t) => t.replace(/(-A PCTL-[IE]-\S+ [^\n]*--match-set PCTL-p-\S+ )src/, '$1dst'),
    'an egress dispatch rule matches the destination': (t) => t.replace(/-A (PCTL-EB-\d+) -m set --match-set (\S+) src/, '-A $1 -m set --match-set $2 dst'),
    'an ingress dispatch rule tests the source address': (t) => t.replace(/-A PCTL-INGRESS -d (0\.0\.0\.\d+\/0\.0\.0\.48)/, '-A PCTL-INGRESS -s $1'),
    'an ingress inner tree rule tests the source address': (t) => t.replace(/-A (PCTL-IQ-\d+) -d (0\.0\.0\.\d+\/0\.0\.0\.12)/, '-A $1 -s $2'),
    'an egress bucket rule tests the destination address': (t) => t.replace(/-A (PCTL-ES-\d+) -s (0\.0\.0\.\d\/0\.0\.0\.3)/, '-A $1 -d $2'),
  };
  // The tiers: the order they are walked in, and Pass.
  const tierMutations: Record<string, Mutator> = {
    'an Admin Pass allows instead of going on to the next tier': (t) => t.replace(/(-A PCTL-[AD]-\S+ [^\n]* Pass (?:ingress|egress)\[\d+\]" )-g PCTL-\S+/g, '$1-j RETURN'),
    'the Admin tier falls through to allow instead of to the next tier': (t) => t.replace(/(-A PCTL-[AD]-\S+ [^\n]*next tier" )-g PCTL-\S+/g, '$1-j RETURN'),
    'the Admin tier walks its policies and rules in reverse order': reverseAdminRules,
    'a Baseline Deny allows (RETURN)': (t) => t.replace(/(-A PCTL-[FJ]-\S+ [^\n]* Deny (?:ingress|egress)\[\d+\]" )-j DROP/g, '$1-j RETURN'),
    // The shared Admin prefix (layout.ts WIDE_CHAINS): skipped, gated on the wrong side, or its undecided packets allowed.
    'the shared Admin prefix is skipped: local pods go straight to the dispatch': (t) => t.replace(/(-A PCTL-(?:EGRESS|INGRESS)-WIDE -[sd] \S+ [^\n]*)-g PCTL-(EGRESS|INGRESS)-WIDE-R/g, '$1-g PCTL-$2'),
    'the shared Admin prefix gates on the wrong side of the packet': (t) => t.replace(/-A (PCTL-(?:EGRESS|INGRESS)-WIDE) -([sd]) /g, (_m, c: string, side: string) => `-A ${c} -${side === 's' ? 'd' : 's'} `),
    'the shared Admin prefix allows what it leaves undecided': (t) => t.replace(/(-A PCTL-(?:EGRESS|INGRESS)-WIDE-R [^\n]*next tier" )-g PCTL-\S+/g, '$1-j RETURN'),
  };
  const sharedMutations: Record<string, Mutator> = {
    'an Admin Pass allows instead of going on to the next tier': tierMutations['an Admin Pass allows instead of going on to the next tier']!,
    'the dispatch to the tier after the Admin tier tests the wrong side of the packet': (t) => t.replace(/(-A PCTL-[EI]NB-\d+ -m set --match-set \S+ )(src|dst)/g, (_m, a: string, side: string) => `${a}${side === 'src' ? 'dst' : 'src'}`),
  };
  // The verdict cache: what it remembers must be what both sides allowed, keyed by all it depends on.
  const cacheMutations: Record<string, Mutator> = {
    'the verdict cache remembers before the ingress side is judged': (t) => {
      const remember = t.match(/\n-A PCTL-FORWARD [^\n]*-j SET --add-set [^\n]*/g) ?? [];
      const rest = remember.reduce((x, r) => x.replace(r, ''), t);
      return rest.replace(/(\n-A PCTL-FORWARD [^\n]*ingress of local pods[^\n]*)/, `${remember.join('')}$1`);
    },
    'the verdict cache is keyed by the client and the port alone (the server left out)': (t) => t.replace(/(-A PCTL-FORWARD [^\n]*PCTL-verdicts )src,dst,dst/g, '$1src,dst,src'),
  };
  type Case = [string, Mutator, fc.Arbitrary<Cluster>, CompileOptions, boolean?];
  const all: Case[] = [
    ...Object.entries(mutations).map(([w, m]): Case => [w, m, clusterArb, {}]),
    ...Object.entries(tierMutations).map(([w, m]): Case => [w, m, tieredClusterArb, {}]),
    ...Object.entries(sharedMutations).map(([w, m]): Case => [`${w} (shared Admin chains)`, m, tieredClusterArb, SHARED]),
    ...Object.entries(cacheMutations).map(([w, m]): Case => [w, m, tieredClusterArb, CACHE, true]),
  ];
  for (const [what, mutate, arb, opts, twice] of all) {
    it(`fails when ${what}`, () => expectMutationCaught(what, mutate, (spy) => fc.property(arb, (c) => checkAgreement(c, spy, opts, twice)), RUNS));
  }
});
