// Every case of the upstream NetworkPolicy conformance corpus (test/fixtures/conformance),
// step by step, through both statements of the meaning: the semantics (`reach`, what
// `policyctl reach` prints) and the compiled rules of both nodes executed by the tracer.
// Pods are spread over two nodes, so same-node and cross-node paths are both exercised.
// Diagonal cells are informational upstream (a pod probing itself through its Service):
// they are reported, not asserted.

import { describe, expect, it } from 'vitest';
import { reachTable } from '../../src/semantics/reach.ts';
import { CaseRunner, STANDARD_NODES, cellKey, listCaseFiles, loadCase } from '../support/conformance.ts';
import { Dataplane } from '../support/dataplane.ts';

describe.each(listCaseFiles().map((f) => [f.split('/').pop()!, f] as const))('%s', (_name, file) => {
  const c = loadCase(file);
  const runner = new CaseRunner(c);
  const steps = [...runner.steps()];

  it.each(steps.map((s) => [s.index, s] as const))('step %i', (_i, s) => {
    expect(s.issues, 'the case policies are valid').toEqual([]);
    const plane = new Dataplane(s.model, STANDARD_NODES.map((n) => n.name));
    for (const probe of s.probes) {
      const results = reachTable(s.model, { ports: [{ port: probe.port, protocol: probe.protocol }] });
      const bySemantics = new Map(results.map((r) => [cellKey(r.from, r.to), r.allowed]));
      const wrong: string[] = [];
      for (const [cell, expected] of probe.matrix) {
        const [from, to] = cell.split('|') as [string, string];
        if (from === to) continue;
        const sem = bySemantics.get(cell);
        const src = s.model.findPod(...(from.split('/') as [string, string]))!;
        const dst = s.model.findPod(...(to.split('/') as [string, string]))!;
        const kernel = plane.traverse({ src: { kind: 'pod', pod: src }, dst: { kind: 'pod', pod: dst }, port: probe.port, protocol: probe.protocol }).allowed;
        if (sem !== expected) wrong.push(`semantics ${from} -> ${to} ${probe.port}/${probe.protocol}: got ${sem}, expected ${expected}`);
        if (kernel !== expected) wrong.push(`compiled rules ${from} -> ${to} ${probe.port}/${probe.protocol}: got ${kernel}, expected ${expected}`);
      }
      expect(wrong).toEqual([]);
      // 81 cells per probe, all pods present: nothing silently skipped.
      expect(probe.matrix.size).toBe(81);
    }
  });
});
