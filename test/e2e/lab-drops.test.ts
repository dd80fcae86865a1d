// Issue 11 on the real kernel: the denied flows of conformance cases (ingress and egress, TCP and
// UDP, same node and across nodes) appear within a second in the lab agents' /drops (what
// `policyctl lab drops -o json` prints) with the right pods, port, protocol, direction and
// policies; allowed flows never appear. A two-node lab (real CNI bridge, one agent process per
// node reading its drop log), each case's steps written to the folder and probed with real
// connections. Then `policyctl drops --kube` reads the same agents through the API server
// double's pod proxy.

import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { Drop } from '../../src/agent/drop-log.ts';
import { getFromSocket } from '../../src/cli/drops.ts';
import { labUp, readClusterInfo, waitApplied, type ClusterInfo } from '../../src/lab/cluster.ts';
import type { LabState } from '../../src/lab/state.ts';
import { startApiServer } from '../support/apiserver.ts';
import { runCli } from '../support/cli.ts';
import { CaseRunner, listCaseFiles, loadCase, standardCluster } from '../support/conformance.ts';
import { forgetTrackedFlows } from '../support/lab-conntrack.ts';
import { newCoverage, probeAndCheckDrops } from '../support/lab-drops.ts';
import { tearDownLab } from '../support/lab-teardown.ts';
import { kernelTestsEnabled } from '../support/netns.ts';
import { until } from '../support/until.ts';

const started = Date.now();

/** Ingress TCP, egress TCP, ingress UDP: pairs on one node and across nodes in each. */
const CASES = ['001-default-deny-ingress.yaml', '025-deny-egress-podselector.yaml', '043-udp-default-deny-ingress.yaml'];

describe.runIf(kernelTestsEnabled())('lab drops on the real kernel', () => {
  const name = `dl${process.pid % 100000}`;
  const stateDir = mkdtempSync(join(tmpdir(), 'pctl-lab-state-'));
  const dir = mkdtempSync(join(tmpdir(), 'pctl-lab-dl-'));
  const cluster = standardCluster({ protocols: ['TCP', 'UDP'] });
  let lab: LabState;
  let info: ClusterInfo;

  const writeObjects = (objects: readonly unknown[]) => writeFileSync(join(dir, 'objects.yaml'), objects.map((o) => stringify(o)).join('---\n'));

  beforeAll(async () => {
    writeObjects(cluster);
    lab = (await labUp({ name, manifests: dir, stateDir, resyncInterval: '2s' })).lab;
    info = await readClusterInfo(lab);
  }, 120_000);

  afterAll(() => tearDownLab(name, stateDir, [dir], { what: 'drops', started }));

  for (const file of listCaseFiles().filter((f) => CASES.some((c) => f.endsWith(c)))) {
    it(file.split('/').pop()!, async () => {
      const seen = newCoverage();
      for (const step of new CaseRunner(loadCase(file), { cluster }).steps()) {
        writeObjects(step.objects);
        await waitApplied(lab, info, 30_000);
        await forgetTrackedFlows(lab);
        for (const probe of step.probes) {
          if (probe.protocol === 'SCTP') continue;
          await probeAndCheckDrops(lab, info, step.model, probe, seen, `step ${step.index}`);
        }
      }
      expect(seen.sameNode).toBeGreaterThan(0);
      expect(seen.crossNode).toBeGreaterThan(0);
      expect([...seen.tiers]).toEqual(['NetworkPolicy']);
    }, 120_000);
  }

  it('policyctl lab drops prints them, as JSON and as text grouped by destination', async () => {
    const json = await runCli(['lab', 'drops', '--name', name, '--state-dir', stateDir, '-o', 'json']);
    expect(json.code).toBe(0);
    const drops = (JSON.parse(json.out) as { drops: Drop[] }).drops;
    expect(drops.length).toBeGreaterThan(0);
    expect(new Set(drops.map((d) => d.direction))).toEqual(new Set(['Ingress', 'Egress']));
    const d = drops.find((x) => x.protocol === 'UDP')!;
    expect(d).toBeDefined();
    const text = await runCli(['lab', 'drops', '--name', name, '--state-dir', stateDir, '-n', d.to.split('/')[0]!]);
    expect(text.code).toBe(0);
    expect(text.out).toContain(`${d.to}:\n`);
    const sentence = `  ${d.from} -> port ${d.port}/UDP: ingress denied on ${d.node}, ${d.packets} packet${d.packets === 1 ? '' : 's'} in `;
    expect(text.out.split('\n').find((l) => l.startsWith(sentence))).toMatch(/ in [0-9.]+s \(last [^)]+\): \[NetworkPolicy\] isolated by \S+, no rule matches$/);
  });

  it("the agents log each denied flow once per interval as a JSON line (from, to, port, protocol, direction, node, decision)", async () => {
    // The lab's agents aggregate over 2 s (--drop-log-interval): the flows probed above are logged by now or within one interval.
    const denied = (): Record<string, unknown>[] =>
      info.agents.flatMap((a) =>
        readFileSync(a.logFile, 'utf8')
          .split('\n')
          .filter((l) => l.includes('"msg":"denied: '))
          .map((l) => JSON.parse(l) as Record<string, unknown>),
      );
    await until(() => denied().length > 0, 'a denied flow in the agents\' logs', 5000);
    const line = denied()[0]!;
    expect(Object.keys(line)).toEqual(expect.arrayContaining(['from', 'to', 'port', 'protocol', 'direction', 'node', 'decision', 'packets', 'seconds']));
    expect(line.msg).toMatch(/^denied: \S+ -> \S+ \d+\/(TCP|UDP) \((ingress|egress)\), \d+ packets? in [0-9.]+s: \[NetworkPolicy\] isolated by /);
    expect((line.decision as { tier: string; policies: string[] }).policies.length).toBeGreaterThan(0);
  });

  it("the agents' /metrics count the packets each policy denied and allowed, from the kernel's rule counters", async () => {
    const texts = await Promise.all(info.agents.map((a) => getFromSocket(a.healthSocket!, '/metrics')));
    const series = texts.flatMap((t) => t.split('\n').filter((l) => l.startsWith('policyctl_policy_packets_total{')));
    const value = (verdict: string) => series.filter((l) => l.includes(`verdict="${verdict}"`)).reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
    // The cases above were denied by NetworkPolicy default denies and allowed by their rules.
    expect(value('denied')).toBeGreaterThan(0);
    expect(series.some((l) => /tier="NetworkPolicy",direction="(Ingress|Egress)",verdict="denied"/.test(l))).toBe(true);
    expect(series.every((l) => !/pod=/.test(l))).toBe(true);
    const logged = texts.flatMap((t) => t.split('\n').filter((l) => l.startsWith('policyctl_policy_denied_packets_logged_total{')));
    expect(logged.length).toBeGreaterThan(0);
  });

  it('policyctl drops --kube reads the same agents through the API server\'s pod proxy', async () => {
    const api = await startApiServer();
    const kdir = mkdtempSync(join(tmpdir(), 'pctl-lab-dl-kube-'));
    try {
      const kubeconfig = api.writeKubeconfig(kdir);
      // The agent pods of the lab's nodes; the double forwards their proxy requests to the agents' health sockets.
      for (const a of info.agents) {
        api.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name: `policyctl-${a.node}`, namespace: 'kube-system', labels: { app: 'policyctl' } }, spec: { nodeName: a.node, hostNetwork: true, containers: [{ name: 'agent', image: 'policyctl' }] } });
        api.setPodProxy('kube-system', `policyctl-${a.node}`, async (port, path) => (port === 9102 ? { status: 200, body: await getFromSocket(a.healthSocket!, path) } : { status: 503, body: `port ${port}` }));
      }
      const kube = await runCli(['drops', '--kube', '--kubeconfig', kubeconfig, '-o', 'json']);
      expect(kube.err).toBe('');
      expect(kube.code).toBe(0);
      const lab = await runCli(['lab', 'drops', '--name', name, '--state-dir', stateDir, '-o', 'json']);
      const flows = (out: string) => (JSON.parse(out) as { drops: Drop[] }).drops.map((d) => `${d.node} ${d.from} ${d.to} ${d.port}/${d.protocol} ${d.direction}`).sort();
      expect(flows(kube.out).length).toBeGreaterThan(0);
      expect(flows(kube.out)).toEqual(flows(lab.out));
      expect(api.podProxyRequests).toHaveLength(info.agents.length);
    } finally {
      await api.close();
    }
  });
});
