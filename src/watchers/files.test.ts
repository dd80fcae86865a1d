import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileSource, folderRevision } from './files.ts';

const POD = `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: app, labels: {app: web}}
spec: {nodeName: n1}
status: {phase: Running, podIP: 10.244.1.10}
`;
// Same namespace/name as the pod: without UIDs both fall back to the key "app/web".
const POLICY = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: app}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]}]
`;

describe('FileSource', () => {
  let dir: string;
  let src: FileSource;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'pctl-files-'));
  });
  afterEach(async () => {
    await src?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps a pod and a policy that share a namespace/name (no UIDs in files)', async () => {
    writeFileSync(join(dir, 'all.yaml'), `${POD}---\n${POLICY}`);
    src = new FileSource({ dir });
    await src.start();
    expect([...src.model.allPods()].map((p) => p.name)).toEqual(['web']);
    expect([...src.model.allPolicies()].map((p) => p.name)).toEqual(['web']);
    expect(src.revision()).toBe(await folderRevision(dir));
    // A re-read compares records holding CIDRs (bigints): it must neither throw nor see a change.
    const gen = src.model.generation;
    writeFileSync(join(dir, 'all.yaml'), `${POD}---\n${POLICY}\n`);
    await src.rescan();
    expect(src.status()).toMatchObject({ healthy: true });
    expect(src.model.generation).toBe(gen);
  });

  it('keeps the last good objects of a broken or emptied file, and drops them when the file is deleted', async () => {
    writeFileSync(join(dir, 'pod.yaml'), POD);
    writeFileSync(join(dir, 'policy.yaml'), POLICY);
    src = new FileSource({ dir, pollMs: 60_000 });
    await src.start();
    const gen = src.model.generation;
    writeFileSync(join(dir, 'policy.yaml'), 'kind: NetworkPolicy\nmetadata: {name: [\n');
    await src.rescan();
    expect([...src.model.allPolicies()]).toHaveLength(1);
    expect(src.status().healthy).toBe(false);
    expect(src.status().detail).toContain('keeping its last good objects');
    await src.rescan(); // the unchanged broken file is still reported
    expect(src.status().detail).toContain('keeping its last good objects');
    writeFileSync(join(dir, 'policy.yaml'), '');
    await src.rescan();
    expect([...src.model.allPolicies()]).toHaveLength(1);
    expect(src.model.generation).toBe(gen);
    rmSync(join(dir, 'policy.yaml'));
    await src.rescan();
    expect([...src.model.allPolicies()]).toHaveLength(0);
    expect(src.status().healthy).toBe(true);
    expect(src.revision()).toBe(await folderRevision(dir));
  });

  it('removes a ClusterNetworkPolicy that leaves the folder, and replaces one that changes', async () => {
    const cnp = (name: string, priority: number) =>
      `apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: ${name}}\nspec: {tier: Admin, priority: ${priority}, subject: {namespaces: {}}, ingress: [{action: Deny, from: [{namespaces: {}}]}]}\n`;
    writeFileSync(join(dir, 'cnp.yaml'), `${cnp('a', 1)}---\n${cnp('b', 2)}`);
    src = new FileSource({ dir, pollMs: 60_000 });
    await src.start();
    expect([...src.model.allClusterPolicies()].map((c) => c.name).sort()).toEqual(['a', 'b']);
    writeFileSync(join(dir, 'cnp.yaml'), cnp('b', 3));
    await src.rescan();
    expect([...src.model.allClusterPolicies()].map((c) => [c.name, c.priority])).toEqual([['b', 3]]);
  });

  it('keeps the model when the folder itself disappears, and refuses to start without it', async () => {
    writeFileSync(join(dir, 'policy.yaml'), POLICY);
    src = new FileSource({ dir, pollMs: 60_000 });
    await src.start();
    rmSync(dir, { recursive: true, force: true });
    await src.rescan();
    expect([...src.model.allPolicies()]).toHaveLength(1); // not "every object deleted"
    expect(src.status()).toMatchObject({ healthy: false });
    expect(src.status().detail).toContain('cannot read the manifest folder');
    const missing = new FileSource({ dir: join(dir, 'nope') });
    await expect(missing.start()).rejects.toThrow(/cannot read the manifest folder/);
    await missing.stop();
  });

  it('notifies on change only', async () => {
    writeFileSync(join(dir, 'pod.yaml'), POD);
    src = new FileSource({ dir, pollMs: 60_000 });
    let changes = 0;
    src.onChange(() => changes++);
    await src.start();
    await src.rescan();
    expect(changes).toBe(1); // the initial load
    writeFileSync(join(dir, 'pod.yaml'), POD.replace('app: web', 'app: api'));
    await src.rescan();
    expect(changes).toBe(2);
    expect(src.model.findPod('app', 'web')!.labels).toEqual({ app: 'api' });
  });

  it('never opens a FIFO named like a manifest: starts at once, reports it, loads the rest', async () => {
    writeFileSync(join(dir, 'pod.yaml'), POD);
    execFileSync('mkfifo', [join(dir, 'x.yaml')]);
    src = new FileSource({ dir, pollMs: 60_000 });
    const t0 = Date.now();
    await src.start();
    await src.rescan();
    expect(Date.now() - t0).toBeLessThan(5000);
    expect([...src.model.allPods()].map((p) => p.name)).toEqual(['web']);
    expect(src.status()).toMatchObject({ healthy: false, detail: `${join(dir, 'x.yaml')}: a FIFO, not a regular file: skipped, never opened` });
    expect(src.revision()).toBe(await folderRevision(dir)); // the revision never reads it either
  });

  it('keeps both objects of a copied manifest that kept the UID', async () => {
    writeFileSync(join(dir, 'a.yaml'), POD.replace('metadata: {', 'metadata: {uid: u-1, '));
    writeFileSync(join(dir, 'b.yaml'), POD.replace('metadata: {', 'metadata: {uid: u-1, ').replace('name: web', 'name: copy'));
    src = new FileSource({ dir, pollMs: 60_000 });
    await src.start();
    expect([...src.model.allPods()].map((p) => [p.name, p.uid]).sort()).toEqual([['copy', 'u-1/app/copy'], ['web', 'u-1']]);
    const gen = src.model.generation;
    await src.rescan(); // stable: nothing changes on a re-read
    expect(src.model.generation).toBe(gen);
    rmSync(join(dir, 'a.yaml'));
    await src.rescan();
    expect([...src.model.allPods()].map((p) => [p.name, p.uid])).toEqual([['copy', 'u-1']]);
  });
});
