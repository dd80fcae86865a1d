// Living next to flannel and kube-proxy on the real kernel: their rules survive our writes,
// an external flush of our chains and another agent inserting above our jump are repaired
// within the resync interval, a ClusterIP Service is policed at its backend pod, and an agent
// restart opens no flow that must stay closed.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labUp, readClusterInfo, startAgent, stopWatcher, waitApplied, type ClusterInfo } from '../../src/lab/cluster.ts';
import { netnsPids, signalPids } from '../../src/lab/exec.ts';
import { addService, destroyLab, execInNode, findNode, openLab } from '../../src/lab/lab.ts';
import { probeMany } from '../../src/lab/probe.ts';
import type { LabState } from '../../src/lab/state.ts';
import { kernelTestsEnabled } from '../support/netns.ts';
import { until } from '../support/until.ts';

const CLUSTER = `
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Node, metadata: {name: n1}, spec: {podCIDR: 10.244.1.0/24}, status: {addresses: [{type: InternalIP, address: 192.168.50.11}]}}
- {apiVersion: v1, kind: Node, metadata: {name: n2}, spec: {podCIDR: 10.244.2.0/24}, status: {addresses: [{type: InternalIP, address: 192.168.50.12}]}}
- {apiVersion: v1, kind: Namespace, metadata: {name: app}}
- apiVersion: v1
  kind: Pod
  metadata: {name: web, namespace: app, labels: {app: web}}
  spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}]}]}
  status: {phase: Running, podIP: 10.244.1.10}
- apiVersion: v1
  kind: Pod
  metadata: {name: client, namespace: app, labels: {app: client}}
  spec: {nodeName: n2, containers: [{name: c, ports: [{containerPort: 80}]}]}
  status: {phase: Running, podIP: 10.244.2.10}
- apiVersion: v1
  kind: Pod
  metadata: {name: intruder, namespace: app, labels: {app: intruder}}
  spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}]}]}
  status: {phase: Running, podIP: 10.244.1.11}
`;
const POLICY = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: app}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]
`;

const WEB = { ip: '10.244.1.10', port: 80, protocol: 'TCP' as const };
const CLUSTER_IP = '10.96.0.10';


describe.runIf(kernelTestsEnabled())('coexistence on the real kernel', () => {
  const name = `cx${process.pid % 100000}`;
  const stateDir = mkdtempSync(join(tmpdir(), 'pctl-lab-state-'));
  const dir = mkdtempSync(join(tmpdir(), 'pctl-lab-cx-'));
  let lab: LabState;
  let info: ClusterInfo;
  const n1 = (argv: string[]) => execInNode(lab, 'n1', argv).then((r) => r.stdout);
  const reach = async (from: string, to = WEB) => (await probeMany(lab, [{ from, to }], { timeoutMs: 700 }))[0]!.allowed;
  /** Everything in n1's filter and nat tables that is not ours, counters stripped. */
  const foreign = async () =>
    (await n1(['iptables-save']))
      .split('\n')
      .filter((l) => l && !l.startsWith('#') && !l.includes('PCTL'))
      .map((l) => l.replace(/\[\d+:\d+\]/, ''))
      .join('\n');

  beforeAll(async () => {
    writeFileSync(join(dir, 'cluster.yaml'), CLUSTER);
    lab = (await labUp({ name, manifests: dir, stateDir, resyncInterval: '1s' })).lab;
    info = await readClusterInfo(lab);
  }, 120_000);

  afterAll(async () => {
    stopWatcher(info);
    await destroyLab(name, { stateDir });
    rmSync(dir, { recursive: true, force: true });
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("keeps flannel's and kube-proxy's rules untouched while applying policies", async () => {
    const before = await foreign();
    expect(before).toContain('-A FLANNEL-FWD -s 10.244.0.0/16');
    expect(before).toContain(':KUBE-FORWARD');
    expect(before).toMatch(/\*nat[\s\S]*FLANNEL-POSTRTG/);
    expect(await reach('app/intruder')).toBe(true);
    writeFileSync(join(dir, 'policy.yaml'), POLICY);
    await waitApplied(lab, info, 30_000);
    expect(await reach('app/intruder')).toBe(false);
    expect(await reach('app/client')).toBe(true);
    expect(await foreign()).toBe(before);
    // Our jump is first in FORWARD, above kube-proxy's and flannel's.
    expect((await n1(['iptables', '-S', 'FORWARD'])).split('\n')[1]).toContain('-j PCTL-FORWARD');
  });

  it('repairs an external flush of our chains within the resync interval', async () => {
    const chains = (await n1(['iptables-save', '-t', 'filter'])).split('\n').filter((l) => /^:PCTL-I-/.test(l)).map((l) => l.slice(1).split(' ')[0]!);
    expect(chains.length).toBeGreaterThan(0);
    for (const c of chains) await n1(['iptables', '-F', c]);
    await n1(['iptables', '-F', 'PCTL-FORWARD']);
    const ms = await until(async () => !(await reach('app/intruder')), 'the flushed chains to be repaired', 10_000);
    expect(ms).toBeLessThan(5_000); // resync interval 1 s, plus the probe's own time
    expect(await reach('app/client')).toBe(true);
  });

  it('puts our jump back in first place after another agent inserts above it', async () => {
    await n1(['iptables', '-I', 'FORWARD', '1', '-m', 'comment', '--comment', 'kube-proxy style re-prepend', '-j', 'KUBE-FORWARD']);
    await until(async () => (await n1(['iptables', '-S', 'FORWARD'])).split('\n')[1]!.includes('-j PCTL-FORWARD'), 'our jump to be first again', 5_000);
    const forward = (await n1(['iptables', '-S', 'FORWARD'])).split('\n');
    expect(forward.filter((l) => l.includes('PCTL-FORWARD'))).toHaveLength(1);
    expect(forward.some((l) => l.includes('kube-proxy style re-prepend'))).toBe(true); // theirs is left alone
  });

  it('polices a ClusterIP Service at its backend pod (after DNAT)', async () => {
    await addService(lab, { clusterIP: CLUSTER_IP, port: 8080, protocol: 'TCP', backend: { ip: WEB.ip, port: 80 } });
    const svc = { ip: CLUSTER_IP, port: 8080, protocol: 'TCP' as const };
    const r = await probeMany(lab, [{ from: 'app/client', to: svc }, { from: 'app/intruder', to: svc }], { timeoutMs: 700 });
    expect(r.map((x) => x.allowed)).toEqual([true, false]);
    expect(r[0]!.server).toBe('app/web');
  });

  it('follows the folder: a pod added, relabelled and removed there changes the lab', async () => {
    const extra = `apiVersion: v1
kind: Pod
metadata: {name: late, namespace: app, labels: {app: late}}
spec: {nodeName: n2, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIP: 10.244.2.20}
`;
    writeFileSync(join(dir, 'late.yaml'), extra);
    await waitApplied(lab, info, 30_000);
    lab = await openLab(name, { stateDir });
    expect(lab.pods.map((p) => p.key)).toContain('app/late');
    expect(await reach('app/late')).toBe(false); // not a client: web's policy keeps it out
    writeFileSync(join(dir, 'late.yaml'), extra.replace('app: late', 'app: client'));
    await waitApplied(lab, info, 30_000);
    expect(await reach('app/late')).toBe(true); // relabelled into the allowed peers
    rmSync(join(dir, 'late.yaml'));
    await waitApplied(lab, info, 30_000);
    lab = await openLab(name, { stateDir });
    expect(lab.pods.map((p) => p.key)).not.toContain('app/late');
  });

  it('an agent restart opens no flow that must stay closed, and writes nothing when nothing changed', async () => {
    const netns = findNode(lab, 'n1').netns;
    const pids = await netnsPids(netns);
    expect(pids.length).toBeGreaterThan(0);
    signalPids(pids, 'SIGKILL');
    // Without its agent the node keeps its rules: still isolated.
    expect(await reach('app/intruder')).toBe(false);
    const agent = info.agents.find((a) => a.node === 'n1')!;
    const logBefore = readFileSync(agent.logFile, 'utf8').length;
    await startAgent(lab, agent);
    // Probe the closed flow over and over while the new agent starts and syncs.
    const t0 = Date.now();
    let opened = 0;
    let probes = 0;
    while (Date.now() - t0 < 3_000 || probes < 3) {
      probes++;
      if (await reach('app/intruder')) opened++;
    }
    expect(probes).toBeGreaterThan(2);
    expect(opened).toBe(0);
    await waitApplied(lab, info, 30_000);
    const newLog = readFileSync(agent.logFile, 'utf8').slice(logBefore);
    expect(newLog).toContain('starting');
    expect(newLog).not.toContain('"msg":"applied"'); // the kernel already matched: nothing written
    expect(await reach('app/client')).toBe(true);
  });
});


