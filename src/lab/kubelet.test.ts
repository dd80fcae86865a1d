// The lab kubelet's source, without the kernel: what the agents see of a folder before any pod
// is started. (Starting and stopping pods in order is tested on the real kernel:
// test/e2e/pod-start.test.ts, test/e2e/lab-coexistence.test.ts.)

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildModel, loadManifests } from '../manifests/load.ts';
import { LabKubelet } from './kubelet.ts';
import type { addPod, removePod } from './lab.ts';
import { saveState, type LabPod, type LabState } from './state.ts';

const root = mkdtempSync(join(tmpdir(), 'pctl-kubelet-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const lab = (dir: string): LabState => ({
  version: 1,
  name: 'k',
  dir,
  createdAt: '',
  clusterCIDR: '10.244.0.0/16',
  underlayCIDR: '192.168.50.0/24',
  switch: { netns: 'pl-k.sw', bridge: 'br0' },
  external: { ip: '192.168.50.1', ports: [] },
  nodes: [{ name: 'n1', podCIDR: '10.244.1.0/24', ip: '192.168.50.11', gateway: '10.244.1.1', netns: 'pl-k.n.n1' }],
  pods: [],
  services: [],
});

const POD = (name: string, ip: string, node = 'n1') => `{apiVersion: v1, kind: Pod, metadata: {name: ${name}, namespace: x, labels: {app: ${name}}}, spec: {nodeName: ${node}}, status: {phase: Running, podIP: ${ip}}}`;
const POLICY = '{apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: deny, namespace: x}, spec: {podSelector: {}}}';

describe('LabKubelet source', () => {
  it('serves every object, lab pods pending without an IP; keeps a broken file; drops a deleted one', async () => {
    const dir = mkdtempSync(join(root, 'd-'));
    const manifests = join(dir, 'in');
    const source = join(dir, 'src');
    mkdirSync(manifests);
    writeFileSync(join(manifests, 'a.yaml'), `${POD('a', '10.244.1.10')}\n---\n${POLICY}\n`);
    writeFileSync(join(manifests, 'list.yaml'), `{apiVersion: v1, kind: List, items: [${POD('b', '10.244.1.11')}, ${POD('gone', '10.244.9.9', 'n9')}]}\n`);
    const k = new LabKubelet({ lab: lab(dir), manifests, source, statusFile: join(dir, 'status.json') });
    await k.publishObjects();
    const model = buildModel(await loadManifests([source]));
    // The pods the lab will start are there, scheduled, without their IP yet.
    expect(model.findPod('x', 'a')).toMatchObject({ nodeName: 'n1', ips: [], phase: 'Pending', labels: { app: 'a' } });
    expect(model.findPod('x', 'b')).toMatchObject({ ips: [], phase: 'Pending' });
    // A pod the lab does not run (on a node it does not have) is served as the folder has it.
    expect(model.findPod('x', 'gone')).toMatchObject({ ips: ['10.244.9.9'] });
    expect(model.findPolicy('x', 'deny')).toBeDefined();
    expect(readFileSync(join(source, '_lab-pods', 'pods.yaml'), 'utf8')).not.toContain('podIP');

    // A file that stops parsing keeps its last good content; a deleted one leaves the source.
    writeFileSync(join(manifests, 'a.yaml'), 'kind: [unclosed\n');
    unlinkSync(join(manifests, 'list.yaml'));
    await k.publishObjects();
    const again = buildModel(await loadManifests([source]));
    expect(again.findPolicy('x', 'deny')).toBeDefined();
    expect(again.findPod('x', 'a')).toBeDefined();
    expect(again.findPod('x', 'b')).toBeUndefined();
    expect(existsSync(join(source, 'list.yaml'))).toBe(false);

    // Another kubelet (a restarted watcher) removes what the folder no longer has, too.
    writeFileSync(join(source, 'stale.yaml'), POLICY.replace('deny', 'stale'));
    await new LabKubelet({ lab: lab(dir), manifests, source, statusFile: join(dir, 'status.json') }).publishObjects();
    expect(existsSync(join(source, 'stale.yaml'))).toBe(false);
  });
});

describe('LabKubelet order', () => {
  it('ADD sees the pod pending without its IP, the IP comes a status delay later, DEL runs before the pod leaves', async () => {
    const dir = join(mkdtempSync(join(root, 'o-')), 'k'); // <state root>/<lab name>, as openLab finds it
    mkdirSync(dir);
    const manifests = join(dir, 'in');
    const source = join(dir, 'src');
    mkdirSync(manifests);
    await saveState(lab(dir));
    const seen: string[] = [];
    const served = async () => buildModel(await loadManifests([source])).findPod('x', 'a');
    // Stand-ins for the kernel's part: record what the agents' source held when each step ran.
    const ops = {
      addPod: (async (l: LabState, spec) => {
        const p = await served();
        seen.push(`ADD: source has ${p ? `the pod with IPs [${p.ips.join(',')}]` : 'no pod'}`);
        const pod = { key: 'x/a', namespace: 'x', name: 'a', node: spec.node, ip: spec.ip!, ports: [], unserved: [], netns: 'n', containerId: 'c' } satisfies LabPod;
        l.pods.push(pod);
        await saveState(l);
        return pod;
      }) as typeof addPod,
      removePod: (async (l: LabState, key: string) => {
        const p = await served();
        seen.push(`DEL: source has ${p ? `the pod with IPs [${p.ips.join(',')}]` : 'no pod'}`);
        l.pods = l.pods.filter((x) => x.key !== key);
        await saveState(l);
      }) as typeof removePod,
    };
    const k = new LabKubelet({ lab: lab(dir), manifests, source, statusFile: join(dir, 'status.json'), statusDelayMs: 200, ops });
    writeFileSync(join(manifests, 'a.yaml'), POD('a', '10.244.1.10'));
    await k.reconcile();
    expect((await served())?.ips).toEqual([]);
    expect(JSON.parse(readFileSync(join(dir, 'status.json'), 'utf8'))).toMatchObject({ settled: false });
    await new Promise((r) => setTimeout(r, 400));
    expect((await served())?.ips).toEqual(['10.244.1.10']);
    expect(JSON.parse(readFileSync(join(dir, 'status.json'), 'utf8'))).toMatchObject({ settled: true });
    unlinkSync(join(manifests, 'a.yaml'));
    await k.reconcile();
    expect(await served()).toBeUndefined();
    expect(seen).toEqual(['ADD: source has the pod with IPs []', 'DEL: source has the pod with IPs [10.244.1.10]']);
  });
});

describe('LabKubelet status reports', () => {
  it('many pods reporting at once: every IP published, the status settles, no write fails', async () => {
    // Twenty pods added in one reconcile report their IPs at the same instant: each report writes
    // the source and the status. Concurrent status writes once shared one temporary file, and the
    // loser's rename failed inside a timer: an unhandled rejection that ended the watcher process
    // and left the lab "not settled" for good.
    const dir = join(mkdtempSync(join(root, 's-')), 'k');
    mkdirSync(dir);
    const manifests = join(dir, 'in');
    const source = join(dir, 'src');
    mkdirSync(manifests);
    await saveState(lab(dir));
    const rejections: unknown[] = [];
    const onRejection = (e: unknown) => rejections.push(e);
    process.on('unhandledRejection', onRejection);
    try {
      const ops = {
        addPod: (async (l: LabState, spec) => {
          const pod = { key: `${spec.namespace}/${spec.name}`, namespace: spec.namespace, name: spec.name, node: spec.node, ip: spec.ip!, ports: [], unserved: [], netns: 'n', containerId: 'c' } satisfies LabPod;
          l.pods.push(pod);
          return pod;
        }) as typeof addPod,
        removePod: (async () => {}) as typeof removePod,
      };
      const names = Array.from({ length: 20 }, (_, i) => `p${i}`);
      writeFileSync(join(manifests, 'pods.yaml'), names.map((n, i) => POD(n, `10.244.1.${10 + i}`)).join('\n---\n'));
      const statusFile = join(dir, 'status.json');
      const k = new LabKubelet({ lab: lab(dir), manifests, source, statusFile, statusDelayMs: 0, ops });
      await k.reconcile();
      const end = Date.now() + 5_000;
      let status: { settled?: boolean; error?: string } = {};
      while (Date.now() < end) {
        status = JSON.parse(readFileSync(statusFile, 'utf8'));
        if (status.settled) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(status).toMatchObject({ settled: true });
      expect(status.error).toBeUndefined();
      const model = buildModel(await loadManifests([source]));
      expect(names.map((n) => model.findPod('x', n)?.ips[0])).toEqual(names.map((_n, i) => `10.244.1.${10 + i}`));
      await new Promise((r) => setTimeout(r, 50));
      expect(rejections).toEqual([]);
    } finally {
      process.off('unhandledRejection', onRejection);
    }
  });
});
