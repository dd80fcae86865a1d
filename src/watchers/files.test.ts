import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { EVERYTHING } from '../model/selector.ts';
import { FileSource, folderRevision } from './files.ts';

// A way to make loading one file throw (a bug, in the field): parseManifests throws for a file
// whose name ends with `hooks.throwFor`, and behaves as written for every other file.
const hooks = vi.hoisted(() => ({ throwFor: undefined as string | undefined }));
vi.mock('../manifests/load.ts', async (importOriginal) => {
  const real = await importOriginal<typeof import('../manifests/load.ts')>();
  return {
    ...real,
    parseManifests: (text: string, file: string, opts?: Parameters<typeof real.parseManifests>[2]) => {
      if (hooks.throwFor !== undefined && file.endsWith(hooks.throwFor)) throw new RangeError('Maximum call stack size exceeded');
      return real.parseManifests(text, file, opts);
    },
  };
});

/** A logger that keeps what it is given (messages by level). */
function captureLogger(): { logger: Logger; lines: Record<'error' | 'warn' | 'info', string[]> } {
  const lines = { error: [] as string[], warn: [] as string[], info: [] as string[] };
  const at = (level: keyof typeof lines) => (obj: unknown, msg?: string) => lines[level].push(typeof obj === 'string' ? obj : (msg ?? ''));
  return { logger: { error: at('error'), warn: at('warn'), info: at('info'), debug: () => {} } as unknown as Logger, lines };
}

/** Whether a promise settles within `ms`. */
async function settles(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([p.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)))]);
  clearTimeout(timer);
  return r;
}

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
    hooks.throwFor = undefined;
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

  const DENY_ALL = `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: prod}\nspec: {podSelector: {}}\n`;
  const LOOP = `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: loop}\ndata: &a {x: *a}\n`;
  const DUP = `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: dup, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: a}}\n  podSelector: {}\n  ingress: [{}]\n`;

  it('a cyclic value in one file: that document is reported and skipped; later files (a new deny-all) still load, at start and later', async () => {
    writeFileSync(join(dir, 'a.yaml'), LOOP);
    writeFileSync(join(dir, 'b.yaml'), POD);
    src = new FileSource({ dir, pollMs: 60_000 });
    await src.start();
    expect(src.status()).toMatchObject({ synced: true, healthy: false });
    expect(src.status().detail).toContain(`${join(dir, 'a.yaml')}:4: configmap/loop: data.x: an alias refers to its own parent: cyclic values are not supported`);
    expect([...src.model.allPods()].map((p) => p.name)).toEqual(['web']);
    writeFileSync(join(dir, 'c.yaml'), DENY_ALL);
    await src.rescan();
    expect([...src.model.allPolicies()].map((p) => p.name)).toEqual(['deny-all']);
  });

  it('a file whose loading throws never stops the scan: the other files still apply, it keeps its last good objects, the source says why', async () => {
    writeFileSync(join(dir, 'a.yaml'), POLICY);
    writeFileSync(join(dir, 'b.yaml'), POD);
    src = new FileSource({ dir, pollMs: 60_000 });
    await src.start();
    hooks.throwFor = 'a.yaml';
    writeFileSync(join(dir, 'a.yaml'), POLICY.replace('10.1.0.0/16', '10.2.0.0/16'));
    writeFileSync(join(dir, 'c.yaml'), DENY_ALL);
    await src.rescan();
    expect([...src.model.allPolicies()].map((p) => p.name).sort()).toEqual(['deny-all', 'web']);
    expect(src.status()).toMatchObject({ synced: true, healthy: false, detail: `${join(dir, 'a.yaml')}: cannot load (Maximum call stack size exceeded); keeping its last good objects` });
    hooks.throwFor = undefined;
    writeFileSync(join(dir, 'a.yaml'), POLICY);
    await src.rescan();
    expect(src.status()).toMatchObject({ healthy: true });
  });

  it('start-up: a file that could not be loaded keeps the source unsynced (nothing may be written) until it loads', async () => {
    writeFileSync(join(dir, 'a.yaml'), DENY_ALL);
    writeFileSync(join(dir, 'b.yaml'), POD);
    hooks.throwFor = 'a.yaml';
    const { logger, lines } = captureLogger();
    src = new FileSource({ dir, pollMs: 20, settleMs: 5, logger });
    const started = src.start();
    expect(await settles(started, 200)).toBe(false);
    expect(src.status()).toMatchObject({ synced: false, healthy: false });
    expect(src.status().detail).toBe(`${join(dir, 'a.yaml')}: cannot load (Maximum call stack size exceeded); its objects are unknown; nothing is written until every manifest file was read once`);
    expect(lines.error.some((l) => l.includes('nothing is written until each was read once'))).toBe(true);
    hooks.throwFor = undefined; // fixed: the next poll reads it
    expect(await settles(started, 5000)).toBe(true);
    expect(src.status()).toMatchObject({ synced: true, healthy: true });
    expect([...src.model.allPolicies()].map((p) => p.name)).toEqual(['deny-all']);
  });

  it('start-up: a document whose content cannot be told keeps the source unsynced; stop() ends the wait', async () => {
    writeFileSync(join(dir, 'a.yaml'), `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n   namespace: x\n`);
    src = new FileSource({ dir, pollMs: 20, settleMs: 5 });
    const started = src.start();
    expect(await settles(started, 200)).toBe(false);
    expect(src.status()).toMatchObject({ synced: false, healthy: false });
    expect(src.status().detail).toContain(`${join(dir, 'a.yaml')}: 1 unreadable document(s) (${join(dir, 'a.yaml')}:4: YAML syntax error in document 1`);
    await src.stop();
    expect(await settles(started, 1000)).toBe(true);
    src = new FileSource({ dir, pollMs: 20, settleMs: 5 });
    const again = src.start();
    writeFileSync(join(dir, 'a.yaml'), DENY_ALL);
    expect(await settles(again, 5000)).toBe(true);
    expect(src.status()).toMatchObject({ synced: true, healthy: true });
  });

  it('once (a one-shot command such as agent --dry-run): a document whose content cannot be told is an error naming it, not a wait', async () => {
    writeFileSync(join(dir, 'a.yaml'), `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n   namespace: x\n`);
    src = new FileSource({ dir, pollMs: 20, settleMs: 5, once: true });
    await expect(src.start()).rejects.toThrow(new RegExp(`not every manifest file could be read.*${join(dir, 'a.yaml').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: 1 unreadable document`));
    writeFileSync(join(dir, 'a.yaml'), DENY_ALL);
    src = new FileSource({ dir, pollMs: 20, settleMs: 5, once: true });
    await src.start();
    expect(src.status()).toMatchObject({ synced: true, healthy: true });
  });

  it('an unparseable NetworkPolicy in a new file, at start (a restart) or later, fails closed for its namespace and the source says where', async () => {
    writeFileSync(join(dir, 'dup.yaml'), DUP);
    writeFileSync(join(dir, 'pod.yaml'), POD);
    const failClosed = (s: FileSource) => {
      const p = s.model.findPolicy('shop', 'dup');
      expect(p).toMatchObject({ podSelector: EVERYTHING, policyTypes: ['Ingress', 'Egress'], ingress: [], egress: [] });
      expect(s.status()).toMatchObject({ synced: true, healthy: false });
      expect(s.status().detail).toContain(`${join(dir, 'dup.yaml')}: 1 unreadable document(s) (${join(dir, 'dup.yaml')}:6: YAML syntax error in document 1, document skipped: Map keys must be unique)`);
      expect(s.invalidPolicies()).toBe(1);
    };
    src = new FileSource({ dir, pollMs: 60_000 });
    await src.start();
    failClosed(src);
    await src.rescan(); // unchanged: still reported
    failClosed(src);
    await src.stop();
    // Added after the start.
    rmSync(join(dir, 'dup.yaml'));
    src = new FileSource({ dir, pollMs: 60_000 });
    await src.start();
    expect([...src.model.allPolicies()]).toHaveLength(0);
    writeFileSync(join(dir, 'dup.yaml'), DUP);
    await src.rescan();
    failClosed(src);
  });

  it('a file that had a good version keeps it, plus the fail-closed stand-in of a NetworkPolicy new in the broken version', async () => {
    writeFileSync(join(dir, 'policy.yaml'), POLICY);
    src = new FileSource({ dir, pollMs: 60_000 });
    await src.start();
    writeFileSync(join(dir, 'policy.yaml'), `${POLICY}---\n${DUP}`);
    await src.rescan();
    expect([...src.model.allPolicies()].map((p) => `${p.namespace}/${p.name}`).sort()).toEqual(['app/web', 'shop/dup']);
    expect(src.model.findPolicy('app', 'web')!.issues).toEqual([]); // the last good version, as it was
    expect(src.model.findPolicy('shop', 'dup')).toMatchObject({ podSelector: EVERYTHING, ingress: [], egress: [] });
    expect(src.status().detail).toContain('keeping its last good objects');
  });

  it('logs unknown kinds of our API groups (AdminNetworkPolicy) as errors, and stays healthy (nothing was unreadable)', async () => {
    writeFileSync(join(dir, 'anp.yaml'), `apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: anp}\nspec: {priority: 1}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: x}\n`);
    const { logger, lines } = captureLogger();
    src = new FileSource({ dir, pollMs: 60_000, logger });
    await src.start();
    expect(lines.error).toEqual([
      `${join(dir, 'anp.yaml')}:2: adminnetworkpolicy/anp: kind: unknown kind in apiVersion "policy.networking.k8s.io/v1alpha1": AdminNetworkPolicy is the older API (v1alpha1) that ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) replaces; it is not enforced: rewrite it as a ClusterNetworkPolicy (got "AdminNetworkPolicy")`,
    ]);
    expect(src.status()).toMatchObject({ synced: true, healthy: true });
  });
});
