// docs/design.md, invariant two-statements: two independent statements of the meaning must agree. On random
// clusters, every flow between pods (and to and from outside addresses) gets the same verdict
// from the semantics and from the tracer executing the compiled, rendered rules of each node
// on the flow's path. The seed is printed on failure; replay with PROPERTY_SEED=<seed>.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { allowed, podKey, type Endpoint, type Flow } from '../../src/semantics/evaluate.ts';
import { EXTERNAL_IPS, FLOW_PORTS, NODES, clusterArb, type Cluster } from '../support/arbitraries.ts';
import { Dataplane, type Mutator } from '../support/dataplane.ts';
import { formatTrace } from '../support/tracer.ts';

const RUNS = Number(process.env.PROPERTY_RUNS ?? 400);
const SEED = process.env.PROPERTY_SEED ? Number(process.env.PROPERTY_SEED) : undefined;

/** Every flow of interest in a cluster: all ordered pairs of sending pods, plus the outside. */
function flowsOf(c: Cluster): Flow[] {
  // Pods that can send or receive: running, with an address (hostNetwork pods use the node's).
  const live = c.pods.filter((p) => p.ips.length > 0 && p.phase !== 'Failed');
  const eps: Endpoint[] = live.map((pod) => ({ kind: 'pod', pod }));
  const out: Flow[] = [];
  for (const src of eps) {
    for (const dst of eps) for (const q of FLOW_PORTS) out.push({ src, dst, ...q });
    for (const ip of EXTERNAL_IPS) {
      const ext: Endpoint = { kind: 'ip', ip };
      for (const q of FLOW_PORTS) out.push({ src, dst: ext, ...q }, { src: ext, dst: src, ...q });
    }
  }
  return out;
}

const name = (e: Endpoint) => (e.kind === 'pod' ? `${podKey(e.pod)}${e.pod.hostNetwork ? '(host)' : ''}` : e.ip);

/** Throws with a full account (verdict, traces, rules) on the first disagreement. */
function checkAgreement(c: Cluster, mutate?: Mutator): void {
  const plane = new Dataplane(c.model, NODES.map((n) => n.name), mutate);
  for (const flow of flowsOf(c)) {
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
  }
}

function params(runs: number): fc.Parameters<[Cluster]> {
  return { numRuns: runs, ...(SEED !== undefined ? { seed: SEED } : {}) };
}

describe('compiled rules agree with the semantics', () => {
  it(`on ${RUNS} random clusters, every flow`, () => {
    const result = fc.check(fc.property(clusterArb, (c) => checkAgreement(c)), params(RUNS));
    if (result.failed) {
      throw new Error(`property failed with seed ${result.seed} (replay: PROPERTY_SEED=${result.seed}), path ${result.counterexamplePath}\n${result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance)}`);
    }
    expect(result.numRuns).toBe(RUNS);
  });

  // A suite that could not fail would prove nothing: break one compiled rule in each of these
  // ways and the same property must find a flow that disagrees.
  const mutations: Record<string, Mutator> = {
    'a default deny becomes RETURN (opens traffic)': (t) => t.replace(/(-A PCTL-I-\S+ .*default deny[^\n]*)-j DROP/, '$1-j RETURN'),
    'the first allow rule of an ingress chain is deleted (closes traffic)': (t) => t.replace(/\n-A PCTL-I-\S+ (?!.*default deny)[^\n]*-j RETURN/, ''),
    'a peer set is matched on the wrong side': (t) => t.replace(/(-A PCTL-[IE]-\S+ [^\n]*--match-set PCTL-p-\S+ )src/, '$1dst'),
    'an egress dispatch rule matches the destination': (t) => t.replace(/-A (PCTL-EB-\d+) -m set --match-set (\S+) src/, '-A $1 -m set --match-set $2 dst'),
    'an ingress bucket rule tests the source address': (t) => t.replace(/-A PCTL-INGRESS -d (0\.0\.0\.\d+\/0\.0\.0\.15)/, '-A PCTL-INGRESS -s $1'),
  };
  for (const [what, mutate] of Object.entries(mutations)) {
    it(`fails when ${what}`, () => {
      let mutated = false;
      const spy: Mutator = (t, n) => {
        const m = mutate(t, n);
        if (m !== t) mutated = true;
        return m;
      };
      const result = fc.check(fc.property(clusterArb, (c) => checkAgreement(c, spy)), { numRuns: RUNS, seed: 42 });
      expect(mutated, 'the mutation never applied: it tests nothing').toBe(true);
      expect(result.failed, `the property did not notice: ${what}`).toBe(true);
    });
  }
});
