// Issue 11 on the real kernel: the denied flows of conformance cases (ingress and egress, TCP and
// UDP, same node and across nodes) appear within a second in `policyctl lab drops -o json` with
// the right pods, port, protocol, direction and policies; allowed flows never appear. A two-node
// lab (real CNI bridge, one agent process per node reading its drop log), each case's steps
// written to the folder and probed with real connections.

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { Drop } from '../../src/agent/drop-log.ts';
import { main as runCli } from '../../src/cli/main.ts';
import { labAgentDrops, probeLab } from '../../src/cli/lab.ts';
import { labUp, readClusterInfo, waitApplied, type ClusterInfo } from '../../src/lab/cluster.ts';
import type { LabState } from '../../src/lab/state.ts';
import type { Model } from '../../src/model/store.ts';
import { allowed } from '../../src/semantics/evaluate.ts';
import { CaseRunner, listCaseFiles, loadCase, standardCluster } from '../support/conformance.ts';
import { forgetTrackedFlows } from '../support/lab-conntrack.ts';
import { tearDownLab } from '../support/lab-teardown.ts';
import { kernelTestsEnabled } from '../support/netns.ts';

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

  /** The latest sequence number of each agent's drops: later reads return only what came after. */
  async function marks(): Promise<Map<string, number>> {
    const agents = await labAgentDrops(info);
    for (const a of agents) expect(a.error, `node ${a.node}`).toBeUndefined();
    return new Map(agents.map((a) => [a.node, Math.max(0, ...a.drops.map((d) => d.seq))]));
  }

  for (const file of listCaseFiles().filter((f) => CASES.some((c) => f.endsWith(c)))) {
    it(file.split('/').pop()!, async () => {
      const c = loadCase(file);
      const podNode = new Map(lab.pods.map((p) => [p.key, p.node]));
      const seen = { ingress: 0, egress: 0, sameNode: 0, crossNode: 0 };
      for (const step of new CaseRunner(c, { cluster }).steps()) {
        writeObjects(step.objects);
        await waitApplied(lab, info, 30_000);
        await forgetTrackedFlows(lab);
        for (const probe of step.probes) {
          if (probe.protocol === 'SCTP') continue;
          const since = await marks();
          const { results } = await probeLab(lab, { port: probe.port, protocol: probe.protocol });
          const probed = Date.now();
          const denied = results.filter((r) => r.from !== r.to && !r.allowed);
          expect(denied.length, 'the case denies something').toBeGreaterThan(0);
          const key = (from: string, to: string, port: number, protocol: string) => `${from}>${to}>${port}/${protocol}`;
          let drops: Drop[] = [];
          // Every denied flow is there within a second of the probes.
          for (;;) {
            drops = (await labAgentDrops(info, since)).flatMap((a) => a.drops);
            const got = new Set(drops.map((d) => key(d.from, d.to, d.port ?? 0, d.protocol)));
            if (denied.every((r) => got.has(key(r.from, r.to, r.port, r.protocol)))) break;
            if (Date.now() - probed > 1000) {
              const missing = denied.filter((r) => !got.has(key(r.from, r.to, r.port, r.protocol))).map((r) => key(r.from, r.to, r.port, r.protocol));
              throw new Error(`step ${step.index}: not in lab drops within 1 s: ${missing.join(', ')}`);
            }
            await new Promise((r) => setTimeout(r, 50));
          }
          for (const r of results) {
            if (r.from === r.to) continue;
            const mine = drops.filter((d) => d.from === r.from && d.to === r.to && d.port === r.port && d.protocol === r.protocol);
            if (r.allowed) {
              expect(mine, `allowed ${key(r.from, r.to, r.port, r.protocol)} is in the drops`).toEqual([]);
              continue;
            }
            // What decided, as the semantics says: the denying direction and the policies isolating its pod.
            const v = verdictOf(step.model, r.from, r.to, r.port, r.protocol);
            const dir = !v.egress.allowed ? v.egress : v.ingress;
            expect(mine.length).toBeGreaterThan(0);
            for (const d of mine) {
              expect(d.direction).toBe(dir.direction);
              expect(d.node).toBe(podNode.get(dir.direction === 'Egress' ? r.from : r.to));
              expect(d.decision).toMatchObject({ tier: 'NetworkPolicy', policies: [...dir.isolatedBy] });
            }
            seen[dir.direction === 'Egress' ? 'egress' : 'ingress']++;
            seen[podNode.get(r.from) === podNode.get(r.to) ? 'sameNode' : 'crossNode']++;
          }
        }
      }
      expect(seen.sameNode).toBeGreaterThan(0);
      expect(seen.crossNode).toBeGreaterThan(0);
      expect(seen.ingress + seen.egress).toBeGreaterThan(0);
    }, 120_000);
  }

  it('policyctl lab drops prints them, as JSON and as text grouped by destination', async () => {
    const out: string[] = [];
    const io = { out: (s: string) => void out.push(s), err: () => {}, readStdin: async () => '' };
    expect(await runCli(['lab', 'drops', '--name', name, '--state-dir', stateDir, '-o', 'json'], io)).toBe(0);
    const json = JSON.parse(out.join('')) as { drops: Drop[] };
    expect(json.drops.length).toBeGreaterThan(0);
    const d = json.drops.find((x) => x.protocol === 'UDP')!;
    expect(d).toBeDefined();
    out.length = 0;
    expect(await runCli(['lab', 'drops', '--name', name, '--state-dir', stateDir, '-n', d.to.split('/')[0]!], io)).toBe(0);
    const text = out.join('');
    expect(text).toContain(`${d.to}:\n`);
    const sentence = `  ${d.from} -> port ${d.port}/UDP: ingress denied on ${d.node}, ${d.packets} packet${d.packets === 1 ? '' : 's'} in `;
    expect(text).toContain(sentence);
    expect(text.split('\n').find((l) => l.startsWith(sentence))).toMatch(/ in [0-9.]+s \(last [^)]+\): \[NetworkPolicy\] isolated by \S+, no rule matches$/);
  });
});

function verdictOf(model: Model, from: string, to: string, port: number, protocol: 'TCP' | 'UDP' | 'SCTP') {
  const pod = (key: string) => {
    const [ns, n] = key.split('/') as [string, string];
    const p = model.findPod(ns, n);
    if (!p) throw new Error(`no pod ${key} in the step's model`);
    return p;
  };
  return allowed(model, { src: { kind: 'pod', pod: pod(from) }, dst: { kind: 'pod', pod: pod(to) }, port, protocol });
}
