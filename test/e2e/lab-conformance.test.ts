// Every TCP and UDP conformance case on the real kernel: a two-node flannel host-gw lab in
// network namespaces (real CNI bridge, servers, one policyctl agent process per node watching
// a folder), each step written to the folder, every ordered pod pair probed with real
// connections and compared with the case's matrix (off-diagonal) and with `policyctl reach`.

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { compareWithModel, probeLab } from '../../src/cli/lab.ts';
import { labUp, readClusterInfo, waitApplied } from '../../src/lab/cluster.ts';
import type { LabState } from '../../src/lab/state.ts';
import { reachTable } from '../../src/semantics/reach.ts';
import { CaseRunner, cellKey, listCaseFiles, loadCase, standardCluster } from '../support/conformance.ts';
import { kernelTestsEnabled } from '../support/netns.ts';
import { forgetTrackedFlows } from '../support/lab-conntrack.ts';
import { tearDownLab } from '../support/lab-teardown.ts';

const started = Date.now();

describe.runIf(kernelTestsEnabled())('conformance on the real kernel', () => {
  const name = `cf${process.pid % 100000}`;
  const stateDir = mkdtempSync(join(tmpdir(), 'pctl-lab-state-'));
  const dir = mkdtempSync(join(tmpdir(), 'pctl-lab-cf-'));
  const cluster = standardCluster({ protocols: ['TCP', 'UDP'] });
  let lab: LabState;

  const writeObjects = (objects: readonly unknown[]) => writeFileSync(join(dir, 'objects.yaml'), objects.map((o) => stringify(o)).join('---\n'));

  beforeAll(async () => {
    writeObjects(cluster);
    lab = (await labUp({ name, manifests: dir, stateDir, resyncInterval: '2s' })).lab;
  }, 120_000);

  afterAll(() => tearDownLab(name, stateDir, [dir], { what: 'conformance', started }));

  for (const file of listCaseFiles()) {
    const c = loadCase(file);
    const kernelProbes = c.steps.flatMap((s) => s.probes).filter((p) => p.protocol !== 'SCTP');
    // SCTP cases are checked by the tracer only (test/conformance): this kernel has no SCTP.
    it.runIf(kernelProbes.length > 0)(file.split('/').pop()!, async () => {
      const info = await readClusterInfo(lab);
      for (const step of new CaseRunner(c, { cluster }).steps()) {
        writeObjects(step.objects);
        await waitApplied(lab, info, 30_000);
        await forgetTrackedFlows(lab);
        for (const probe of step.probes) {
          if (probe.protocol === 'SCTP') continue;
          const { results } = await probeLab(lab, { port: probe.port, protocol: probe.protocol });
          expect(results).toHaveLength(81);
          const wrong: string[] = [];
          for (const r of results) {
            if (r.from === r.to) continue; // informational upstream
            const want = probe.matrix.get(cellKey(r.from, r.to));
            if (want !== r.allowed) wrong.push(`${r.from} -> ${r.to} ${r.port}/${r.protocol}: kernel ${r.allowed ? 'allowed' : 'denied'}, case expects ${want ? 'allowed' : 'denied'}`);
          }
          expect(wrong, `step ${step.index}: ${step.step.description}`).toEqual([]);
          // And the kernel agrees with policyctl reach on every cell, the diagonal included.
          expect(compareWithModel(results, reachTable(step.model, { ports: [{ port: probe.port, protocol: probe.protocol }] }))).toEqual([]);
        }
      }
    }, 120_000);
  }
});
