// Every ClusterNetworkPolicy case (test/fixtures/conformance-cnp), step by step, through the
// semantics (`reach` as data), through `policyctl reach -o json` on manifests written to disk,
// and through the compiled rules of both nodes executed by the packet tracer: every
// off-diagonal cell of every matrix, and every connection upstream itself checks (`asserts`).
// Diagonal cells are informational, as in the NetworkPolicy corpus. The lab on the real kernel
// runs the same cases (test/e2e/lab-cnp-conformance.test.ts); together they are the statements
// of the meaning docs/design.md's invariant two-statements asks to agree.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from '../support/cli.ts';
import { reachTable, type ReachResult } from '../../src/semantics/reach.ts';
import { CaseRunner, cellKey, listCnpCaseFiles, loadCase, type StepState } from '../support/conformance.ts';
import { Dataplane } from '../support/dataplane.ts';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

async function reachJson(s: StepState, port: number, protocol: string): Promise<ReachResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'policyctl-cnp-cf-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'objects.yaml'), s.objects.map((o) => stringify(o)).join('---\n'));
  const { code, out, err } = await runCli(['reach', '-f', dir, '--port', String(port), '--protocol', protocol, '-o', 'json']);
  expect(code, err).toBe(0);
  return (JSON.parse(out) as { results: ReachResult[] }).results;
}

/** The cells of a step that differ from what `results` says, as readable lines. */
function differences(s: StepState, results: Map<string, boolean>, port: number, protocol: string, what: string): string[] {
  const wrong: string[] = [];
  const probe = s.probes.find((p) => p.port === port && p.protocol === protocol)!;
  for (const [cell, expected] of probe.matrix) {
    const [from, to] = cell.split('|') as [string, string];
    if (from === to) continue;
    if (results.get(cell) !== expected) wrong.push(`${what} ${from} -> ${to} ${port}/${protocol}: got ${results.get(cell)}, expected ${expected}`);
  }
  for (const a of s.step.asserts) {
    if (a.port !== port || a.protocol !== protocol) continue;
    if (results.get(cellKey(a.from, a.to)) !== a.allowed) wrong.push(`${what} upstream assert ${JSON.stringify(a.text)}: got ${results.get(cellKey(a.from, a.to))}`);
  }
  return wrong;
}

describe.each(listCnpCaseFiles().map((f) => [f.split('/').pop()!, f] as const))('%s', (_name, file) => {
  const c = loadCase(file);
  const steps = [...new CaseRunner(c).steps()];

  it.each(steps.map((s) => [s.index, s] as const))('step %i: semantics', (_i, s) => {
    expect(s.issues, 'the case policies are valid').toEqual([]);
    const wrong: string[] = [];
    for (const probe of s.probes) {
      const results = reachTable(s.model, { ports: [{ port: probe.port, protocol: probe.protocol }] });
      wrong.push(...differences(s, new Map(results.map((r) => [cellKey(r.from, r.to), r.allowed])), probe.port, probe.protocol, 'semantics'));
    }
    expect(wrong).toEqual([]);
  });

  it.each(steps.map((s) => [s.index, s] as const))('step %i: policyctl reach -o json', async (_i, s) => {
    const wrong: string[] = [];
    for (const probe of s.probes) {
      const results = await reachJson(s, probe.port, probe.protocol);
      const pods = [...s.model.allPods()].length;
      expect(results).toHaveLength(pods * pods); // every ordered pair, self included
      expect(results.every((x) => x.port === probe.port && x.protocol === probe.protocol)).toBe(true);
      wrong.push(...differences(s, new Map(results.map((r) => [cellKey(r.from, r.to), r.allowed])), probe.port, probe.protocol, 'reach -o json'));
    }
    expect(wrong).toEqual([]);
  });

  it.each(steps.flatMap((s) => [[s.index, 'goto', s] as const, [s.index, 'shared Admin chains', s] as const]))('step %i: compiled rules through the packet tracer (%s)', (_i, how, s) => {
    const opts = how === 'goto' ? {} : { tiers: { continuation: { Admin: 'dispatch' as const } } };
    const plane = new Dataplane(s.model, [...s.model.allNodes()].map((n) => n.name), undefined, opts);
    const wrong: string[] = [];
    for (const probe of s.probes) {
      const results = new Map<string, boolean>();
      for (const cell of probe.matrix.keys()) {
        const [from, to] = cell.split('|') as [string, string];
        const src = s.model.findPod(...(from.split('/') as [string, string]))!;
        const dst = s.model.findPod(...(to.split('/') as [string, string]))!;
        results.set(cell, plane.traverse({ src: { kind: 'pod', pod: src }, dst: { kind: 'pod', pod: dst }, port: probe.port, protocol: probe.protocol }).allowed);
      }
      wrong.push(...differences(s, results, probe.port, probe.protocol, 'compiled rules'));
    }
    expect(wrong).toEqual([]);
  });
});
