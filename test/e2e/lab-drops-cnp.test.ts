// Issue 11 on the real kernel, ClusterNetworkPolicies: the denied flows of an Admin tier egress
// UDP case appear within a second in the lab agents' /drops naming the tier, the policy and the
// rule (or, where a NetworkPolicy decides, the isolating policies); allowed flows never appear.

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { labUp, readClusterInfo, waitApplied } from '../../src/lab/cluster.ts';
import { openLab } from '../../src/lab/lab.ts';
import { CaseRunner, listCnpCaseFiles, loadCase } from '../support/conformance.ts';
import { forgetTrackedFlows } from '../support/lab-conntrack.ts';
import { newCoverage, probeAndCheckDrops } from '../support/lab-drops.ts';
import { tearDownLab } from '../support/lab-teardown.ts';
import { kernelTestsEnabled } from '../support/netns.ts';

const started = Date.now();
const CASE = 'c04-admin-egress-udp.yaml';

describe.runIf(kernelTestsEnabled())('lab drops of ClusterNetworkPolicy denials on the real kernel', () => {
  const name = `dc${process.pid % 100000}`;
  const stateDir = mkdtempSync(join(tmpdir(), 'pctl-lab-state-'));
  const dir = mkdtempSync(join(tmpdir(), 'pctl-lab-dc-'));
  const file = listCnpCaseFiles().find((f) => f.endsWith(CASE))!;
  const writeObjects = (objects: readonly unknown[]) => writeFileSync(join(dir, 'objects.yaml'), objects.map((o) => stringify(o)).join('---\n'));

  beforeAll(async () => {
    const [first] = new CaseRunner(loadCase(file)).steps();
    writeObjects(first!.objects.filter((o) => o['kind'] !== 'NetworkPolicy' && o['kind'] !== 'ClusterNetworkPolicy'));
    await labUp({ name, manifests: dir, stateDir, resyncInterval: '2s' });
  }, 120_000);

  afterAll(() => tearDownLab(name, stateDir, [dir], { what: 'drops of ClusterNetworkPolicies', started }));

  it(CASE, async () => {
    const seen = newCoverage();
    for (const step of new CaseRunner(loadCase(file)).steps()) {
      writeObjects(step.objects);
      let lab = await openLab(name, { stateDir });
      const info = await readClusterInfo(lab);
      await waitApplied(lab, info, 60_000);
      lab = await openLab(name, { stateDir });
      await forgetTrackedFlows(lab);
      for (const probe of step.probes) {
        if (probe.protocol === 'SCTP') continue;
        await probeAndCheckDrops(lab, info, step.model, probe, seen, `step ${step.index}`);
      }
    }
    expect(seen.egress).toBeGreaterThan(0);
    expect(seen.tiers.has('Admin')).toBe(true);
    expect(seen.sameNode + seen.crossNode).toBeGreaterThan(0);
  }, 300_000);
});
