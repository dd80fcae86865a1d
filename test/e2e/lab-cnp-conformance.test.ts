// Every ClusterNetworkPolicy case (test/fixtures/conformance-cnp) on the real kernel, TCP and
// UDP: one two-node flannel host-gw lab (real CNI bridge, servers, one policyctl agent process
// per node watching a folder) for all of them. Each step's objects (the case's cluster and its
// policies) are written to the folder; every ordered pod pair is probed with real connections on
// every port the destination serves, in one round per step, and compared with the case's matrix
// (off-diagonal) and with `policyctl reach` on every cell, the diagonal included (docs/design.md,
// invariant two-statements).
//
// Cases are run in file order; those sharing a cluster follow each other, so the lab's pods are
// replaced only when the cluster changes (twice: the upstream transcriptions share one).

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { compareWithModel, probeLab } from '../../src/cli/lab.ts';
import { labUp, readClusterInfo, waitApplied } from '../../src/lab/cluster.ts';
import { openLab } from '../../src/lab/lab.ts';
import { reachTable } from '../../src/semantics/reach.ts';
import { CaseRunner, cellKey, listCnpCaseFiles, loadCase } from '../support/conformance.ts';
import { kernelTestsEnabled } from '../support/netns.ts';
import { forgetTrackedFlows } from '../support/lab-conntrack.ts';
import { tearDownLab } from '../support/lab-teardown.ts';

const started = Date.now();

describe.runIf(kernelTestsEnabled())('ClusterNetworkPolicy conformance on the real kernel', () => {
  const name = `cn${process.pid % 100000}`;
  const stateDir = mkdtempSync(join(tmpdir(), 'pctl-lab-state-'));
  const dir = mkdtempSync(join(tmpdir(), 'pctl-lab-cnp-'));
  const files = listCnpCaseFiles();

  const writeObjects = (objects: readonly unknown[]) => writeFileSync(join(dir, 'objects.yaml'), objects.map((o) => stringify(o)).join('---\n'));

  beforeAll(async () => {
    // The first case's cluster, no policies yet.
    const [first] = new CaseRunner(loadCase(files[0]!)).steps();
    writeObjects(first!.objects.filter((o) => o['kind'] !== 'NetworkPolicy' && o['kind'] !== 'ClusterNetworkPolicy'));
    await labUp({ name, manifests: dir, stateDir, resyncInterval: '2s' });
  }, 120_000);

  afterAll(() => tearDownLab(name, stateDir, [dir], { what: 'ClusterNetworkPolicy conformance', started }));

  for (const file of files) {
    const c = loadCase(file);
    it(file.split('/').pop()!, async () => {
      for (const step of new CaseRunner(c).steps()) {
        writeObjects(step.objects);
        let lab = await openLab(name, { stateDir });
        await waitApplied(lab, await readClusterInfo(lab), 60_000);
        lab = await openLab(name, { stateDir }); // the pods of this case's cluster
        // One round of probes per step: every pod to every port it serves (TCP and UDP), then
        // each of the case's probes read from it.
        const pods = [...step.model.allPods()];
        await forgetTrackedFlows(lab);
        const { results: all } = await probeLab(lab);
        for (const probe of step.probes) {
          if (probe.protocol === 'SCTP') continue; // this kernel has no SCTP; the tracer covers it
          const results = all.filter((r) => r.port === probe.port && r.protocol === probe.protocol);
          expect(results).toHaveLength(pods.length * pods.length);
          const wrong: string[] = [];
          for (const r of results) {
            if (r.from === r.to) continue; // informational upstream
            const want = probe.matrix.get(cellKey(r.from, r.to));
            if (want !== r.allowed) wrong.push(`${r.from} -> ${r.to} ${r.port}/${r.protocol}: kernel ${r.allowed ? 'allowed' : 'denied'}, case expects ${want ? 'allowed' : 'denied'}`);
          }
          for (const a of step.step.asserts) {
            if (a.port !== probe.port || a.protocol !== probe.protocol) continue;
            const got = results.find((r) => r.from === a.from && r.to === a.to)?.allowed;
            if (got !== a.allowed) wrong.push(`upstream assert ${JSON.stringify(a.text)}: kernel ${got}`);
          }
          expect(wrong, `step ${step.index}: ${step.step.description}`).toEqual([]);
        }
        expect(compareWithModel(all, reachTable(step.model)), `step ${step.index}: the kernel against policyctl reach`).toEqual([]);
      }
    }, 180_000);
  }
});
