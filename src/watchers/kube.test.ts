// KubeSource against the API server double (test/support/apiserver.ts): the initial sync gate,
// propagation, every fault the double can make (cut watches, 410 relists, refusal, stalls),
// UID keying, bursts, invalid policies and throwing handlers.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, type RequestOptions } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type ApiServerDouble, type ApiServerOptions, type KubeObject, startApiServer, waitUntil } from '../../test/support/apiserver.ts';
import { normalize } from '../model/normalize.ts';
import { allowed, podFlow } from '../semantics/evaluate.ts';
import { listRaw, loadKubeConfig, serverOf } from './kube-client.ts';
import { KubeSource, type KubeSourceOptions } from './kube.ts';

let api: ApiServerDouble;
const sources: KubeSource[] = [];
let logLines: Record<string, unknown>[] = [];
const rejections: unknown[] = [];
const onRejection = (e: unknown) => void rejections.push(e);

async function restartApi(o: ApiServerOptions): Promise<void> {
  await api.close();
  api = await startApiServer(o);
}

beforeEach(async () => {
  api = await startApiServer();
  logLines = [];
  rejections.length = 0;
  process.on('unhandledRejection', onRejection);
});

afterEach(async () => {
  for (const s of sources.splice(0)) await s.stop();
  await api.close();
  process.off('unhandledRejection', onRejection);
  expect(rejections, 'no unhandled promise rejection').toEqual([]);
});

function source(o: Partial<KubeSourceOptions> = {}): KubeSource {
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig());
  const logger = pino({ level: 'debug' }, { write: (s: string) => void logLines.push(JSON.parse(s) as Record<string, unknown>) });
  const s = new KubeSource({ kubeConfig: kc, logger, backoffMinMs: 20, backoffMaxMs: 200, ...o });
  sources.push(s);
  return s;
}

function pod(ns: string, name: string, ip: string, labels: Record<string, string> = {}, node = 'node-1'): KubeObject {
  return {
    kind: 'Pod',
    metadata: { namespace: ns, name, labels },
    spec: { nodeName: node, containers: [{ name: 'c', image: 'x', ports: [{ containerPort: 80, name: 'http' }] }] },
    status: { phase: 'Running', podIP: ip },
  };
}

function seed(): void {
  api.create({ kind: 'Namespace', metadata: { name: 'app', labels: { team: 'a' } } });
  api.create({ kind: 'Node', metadata: { name: 'node-1' }, spec: { podCIDR: '10.244.1.0/24' }, status: { addresses: [{ type: 'InternalIP', address: '192.168.0.1' }] } });
  api.create({ kind: 'Node', metadata: { name: 'node-2' }, spec: { podCIDR: '10.244.2.0/24' } });
  api.create(pod('app', 'web', '10.244.1.10', { app: 'web' }));
  api.create(pod('app', 'client', '10.244.2.10', { app: 'client' }, 'node-2'));
  api.create({ kind: 'NetworkPolicy', metadata: { namespace: 'app', name: 'deny' }, spec: { podSelector: {} } });
}

/** start(), then wait for the four watches to be open (start() resolves after the lists). */
async function watching(s: KubeSource, n = 4): Promise<void> {
  await s.start();
  await api.waitForWatchers(n);
}

const podNames = (s: KubeSource) => [...s.model.allPods()].map((p) => `${p.namespace}/${p.name}`).sort();
const uidOf = (s: KubeSource, ns: string, name: string) => s.model.findPod(ns, name)?.uid;

describe('initial sync', () => {
  it('start() resolves with the whole cluster in the model, and only then reports synced', async () => {
    seed();
    const s = source();
    const seenUnsynced: number[] = [];
    s.onChange(() => {
      if (!s.status().synced) seenUnsynced.push(s.model.generation);
    });
    await s.start();
    expect(s.status()).toMatchObject({ synced: true, healthy: true });
    expect(podNames(s)).toEqual(['app/client', 'app/web']);
    expect([...s.model.allNodes()].map((n) => n.name).sort()).toEqual(['node-1', 'node-2']);
    expect(s.model.namespace('app').labels).toMatchObject({ team: 'a', 'kubernetes.io/metadata.name': 'app' });
    expect(s.model.findPolicy('app', 'deny')?.policyTypes).toEqual(['Ingress']);
    expect(s.model.findPod('app', 'web')?.uid).toBe(api.get('Pod', 'app', 'web')!.metadata!.uid);
    // The last list completes the model and flips synced in one step: while any list was
    // missing, nothing claimed to be synced.
    expect(seenUnsynced.length).toBeGreaterThan(0);
    expect(s.revision()).toMatch(/^namespaces=\d+,nodes=\d+,pods=\d+,networkpolicies=\d+$/);
  });

  it('is not synced while a list is outstanding', async () => {
    seed();
    api.stall({ requests: true });
    const s = source();
    let resolved = false;
    const started = s.start().then(() => (resolved = true));
    await api.waitForRequest((r) => r.resource === 'pods' && !r.watch);
    await new Promise((r) => setTimeout(r, 50));
    expect(resolved).toBe(false);
    expect(s.status()).toMatchObject({ synced: false, healthy: true });
    expect(s.status().detail).toMatch(/^listing .*pods/);
    api.resume();
    await started;
    expect(podNames(s)).toEqual(['app/client', 'app/web']);
  });

  it('API server down at start: not synced, unhealthy with the reason, retrying; synced once it answers', async () => {
    seed();
    await api.setUnavailable(true, 'refuse');
    const s = source();
    let resolved = false;
    const started = s.start().then(() => (resolved = true));
    await waitUntil(() => /ECONNREFUSED/.test(s.status().detail), 'the refusal to be reported');
    expect(s.status()).toMatchObject({ synced: false, healthy: false });
    expect(s.status().detail).toMatch(/cannot list from the API server .*nothing is enforced/);
    const refused = api.requests.length;
    await waitUntil(() => s.stats().errors.pods >= 3, 'retries');
    expect(resolved).toBe(false);
    expect(s.model.generation).toBe(0);
    expect(logLines.some((l) => l.level === 50 && /pods: list failed/.test(String(l.msg)))).toBe(true);

    await api.setUnavailable(true, '503'); // listening again, answering 503
    await waitUntil(() => api.requests.length > refused && /HTTP 503/.test(s.status().detail), 'the 503 to be reported');
    expect(resolved).toBe(false);
    await api.setUnavailable(false);
    await started;
    expect(s.status()).toMatchObject({ synced: true, healthy: true });
    expect(podNames(s)).toEqual(['app/client', 'app/web']);
  });

  it('with nodeName, lists and watches only that Node', async () => {
    seed();
    const s = source({ nodeName: 'node-2' });
    await s.start();
    expect([...s.model.allNodes()].map((n) => n.name)).toEqual(['node-2']);
    expect(api.requests.filter((r) => r.resource === 'nodes').every((r) => r.query.fieldSelector === 'metadata.name=node-2')).toBe(true);
    api.patchLabels('Node', undefined, 'node-1', { x: '1' });
    api.modify('Node', undefined, 'node-2', (o) => ((o.spec as Record<string, unknown>).podCIDR = '10.244.9.0/24'));
    await waitUntil(() => s.model.findNode('node-2')?.podCIDRs[0] === '10.244.9.0/24', 'node-2 update');
    expect([...s.model.allNodes()].map((n) => n.name)).toEqual(['node-2']);
  });
});

describe('events', () => {
  it('create, update and delete of every kind reach the model, each followed by a notification', async () => {
    seed();
    const s = source();
    await s.start();
    let changes = 0;
    s.onChange(() => changes++);
    const rev0 = s.revision();
    api.create(pod('app', 'db', '10.244.1.11', { app: 'db' }));
    api.patchLabels('Pod', 'app', 'web', { app: 'web', v: '2' });
    api.patchLabels('Namespace', undefined, 'app', { team: 'b' });
    api.create({ kind: 'NetworkPolicy', metadata: { namespace: 'app', name: 'allow' }, spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [{}] } });
    api.delete('Pod', 'app', 'client');
    api.delete('Node', undefined, 'node-2');
    await waitUntil(
      () => podNames(s).join() === 'app/db,app/web' && s.model.findPod('app', 'web')?.labels.v === '2' && s.model.namespace('app').labels.team === 'b' && !!s.model.findPolicy('app', 'allow') && !s.model.findNode('node-2'),
      'all six changes',
    );
    expect(changes).toBeGreaterThanOrEqual(6);
    expect(s.revision()).not.toBe(rev0);
    api.delete('NetworkPolicy', 'app', 'allow');
    await waitUntil(() => !s.model.findPolicy('app', 'allow'), 'policy delete');
    expect(s.stats().events.pods).toBeGreaterThanOrEqual(3);
    // Besides the model, the source keeps one entry per object (memory): its identity, its
    // record and its issues; no raw object (no spec, no status, no managedFields), and no
    // informer cache.
    const watched = (s as unknown as { watched: { entries: Map<string, object>; informer?: unknown }[] }).watched;
    const entries = watched.flatMap((w) => [...w.entries.values()]);
    expect(entries.length).toBe(5); // namespace app, node-1, pods db and web, policy deny
    for (const e of entries) expect(Object.keys(e).sort()).toEqual(['issues', 'record', 'rv', 'uid']);
    // Pods of one workload share their labels and ports (one instance each).
    api.create(pod('app', 'web-2', '10.244.1.12', { app: 'web', v: '2' }));
    await waitUntil(() => !!s.model.findPod('app', 'web-2'), 'a second replica');
    expect(s.model.findPod('app', 'web-2')!.labels).toBe(s.model.findPod('app', 'web')!.labels);
    expect(s.model.findPod('app', 'web-2')!.ports).toBe(s.model.findPod('app', 'web')!.ports);
    expect(watched.every((w) => w.informer === undefined)).toBe(true);
  });

  it('an update that changes no record leaves the model alone (no notification)', async () => {
    seed();
    const s = source();
    await s.start();
    let changes = 0;
    s.onChange(() => changes++);
    const gen = s.model.generation;
    api.modify('Pod', 'app', 'web', (o) => ((o.status as Record<string, unknown>).conditions = [{ type: 'Ready', status: 'True' }]));
    api.patchLabels('Pod', 'app', 'client', { x: 'y' }); // a real change after it, to know the first was processed
    await waitUntil(() => s.model.findPod('app', 'client')?.labels.x === 'y', 'the second update');
    expect(changes).toBe(1);
    expect(s.model.generation).toBe(gen + 1);
  });

  it('a pod deleted and recreated under the same name is a removal plus an insertion, by UID', async () => {
    seed();
    const s = source();
    await s.start();
    const oldUid = uidOf(s, 'app', 'web')!;
    api.delete('Pod', 'app', 'web');
    const fresh = api.create(pod('app', 'web', '10.244.1.99', { app: 'web' }));
    await waitUntil(() => uidOf(s, 'app', 'web') === fresh.metadata!.uid, 'the new incarnation');
    expect(s.model.getPod(oldUid)).toBeUndefined();
    expect([...s.model.allPods()].filter((p) => p.name === 'web')).toHaveLength(1);
  });

  it('a burst of 1000 pod events reaches the model and notifies', async () => {
    seed();
    const s = source();
    await s.start();
    let changes = 0;
    s.onChange(() => changes++);
    for (let i = 0; i < 500; i++) api.create(pod('burst', `p${i}`, `10.244.${3 + Math.floor(i / 250)}.${i % 250}`, { i: String(i) }));
    for (let i = 0; i < 500; i++) api.patchLabels('Pod', 'burst', `p${i}`, { i: null, done: 'yes' });
    await waitUntil(() => s.model.enforceablePodsIn('burst', { requirements: [{ key: 'done', operator: 'Exists', values: [], origin: 't' }] }).length === 500, '1000 events', { timeoutMs: 10_000 });
    expect(changes).toBe(1000);
    expect(s.stats().events.pods).toBe(1000);
  });
});

describe('faults', () => {
  it('a cut watch is restarted from its resourceVersion; changes made meanwhile arrive', async () => {
    seed();
    const s = source({ backoffMinMs: 150 });
    await watching(s);
    const lists = api.requests.filter((r) => r.resource === 'pods' && !r.watch).length;
    api.dropWatches();
    await waitUntil(() => !s.status().healthy, 'the drop to be noticed');
    expect(s.status().detail).toMatch(/lost, enforcing the last known state: .*watch failed: terminated/);
    api.create(pod('app', 'during', '10.244.1.20'));
    api.delete('Pod', 'app', 'client');
    await waitUntil(() => podNames(s).join() === 'app/during,app/web', 'convergence');
    await waitUntil(() => s.status().healthy, 'healthy again');
    expect(api.requests.filter((r) => r.resource === 'pods' && !r.watch).length).toBe(lists); // resumed, no relist
    expect(logLines.some((l) => /the API server answers again/.test(String(l.msg)))).toBe(true);
  });

  it('410 after a drop: the informer relists and the model converges, deletes and same-name recreations included', async () => {
    seed();
    const s = source({ backoffMinMs: 100 });
    await watching(s);
    const oldWeb = uidOf(s, 'app', 'web')!;
    api.dropWatches();
    api.delete('Pod', 'app', 'client');
    api.delete('Pod', 'app', 'web');
    const web = api.create(pod('app', 'web', '10.244.1.50', { app: 'web', v: '2' }));
    api.create(pod('app', 'new', '10.244.1.51'));
    api.delete('NetworkPolicy', 'app', 'deny');
    api.expire();
    await waitUntil(() => podNames(s).join() === 'app/new,app/web' && !s.model.findPolicy('app', 'deny'), 'relist convergence');
    expect(uidOf(s, 'app', 'web')).toBe(web.metadata!.uid);
    expect(s.model.getPod(oldWeb)).toBeUndefined();
    expect(api.requests.filter((r) => r.resource === 'pods' && !r.watch).length).toBe(2); // the 410 relist
    expect(s.stats().lists.pods).toBe(2);
    await waitUntil(() => s.status().healthy, 'healthy');
  });

  it('API server lost later: the model is kept, status unhealthy with the reason; recovers and catches up', async () => {
    seed();
    const s = source();
    await watching(s);
    const gen = s.model.generation;
    await api.setUnavailable(true, 'refuse');
    await waitUntil(() => /ECONNREFUSED/.test(s.status().detail), 'refusal reported');
    expect(s.status()).toMatchObject({ synced: true, healthy: false });
    expect(s.status().detail).toMatch(/API server .* lost, enforcing the last known state/);
    api.delete('Pod', 'app', 'client');
    api.create(pod('app', 'later', '10.244.1.30'));
    await waitUntil(() => s.stats().errors.pods >= 3, 'several retries');
    expect(s.model.generation).toBe(gen);
    expect(podNames(s)).toEqual(['app/client', 'app/web']);
    await api.setUnavailable(false);
    await waitUntil(() => podNames(s).join() === 'app/later,app/web', 'catch up');
    await waitUntil(() => s.status().healthy, 'healthy again');
  });

  it('a stalled watch is restarted by the watchdog with a fresh list', async () => {
    seed();
    const s = source({ watchdogMs: 300 });
    await watching(s);
    api.stall();
    api.create(pod('app', 'unseen', '10.244.1.40'));
    await waitUntil(() => !!s.model.findPod('app', 'unseen'), 'the watchdog relist', { timeoutMs: 3000 });
    expect(s.stats().restarts.watchdog).toBeGreaterThan(0);
    expect(logLines.some((l) => /no event or bookmark for/.test(String(l.msg)))).toBe(true);
    api.resume();
  });

  it('bookmarks keep a quiet watch alive: no watchdog restart', async () => {
    await restartApi({ bookmarkIntervalMs: 50 });
    seed();
    const s = source({ watchdogMs: 300 });
    await s.start();
    await new Promise((r) => setTimeout(r, 800));
    expect(s.stats().restarts.watchdog).toBe(0);
    expect(api.requests.filter((r) => r.watch).every((r) => r.query.allowWatchBookmarks === 'true')).toBe(true);
  });

  it('the periodic resync repairs a missed event', async () => {
    seed();
    const s = source({ resyncMs: 300 });
    await watching(s);
    // A stall mutes the open watches for good; resume() serves new ones only: the events
    // below are never delivered on the old streams.
    api.stall();
    api.delete('Pod', 'app', 'client');
    api.patchLabels('Pod', 'app', 'web', { app: 'web', v: 'missed' });
    api.resume();
    await waitUntil(() => podNames(s).join() === 'app/web' && s.model.findPod('app', 'web')?.labels.v === 'missed', 'resync', { timeoutMs: 3000 });
    expect(s.stats().restarts.resync).toBeGreaterThan(0);
  });

  it('authentication failing on an informer reconnect of its own is an error to retry, not an unhandled rejection', async () => {
    seed();
    let authFails = false;
    const s = source();
    (s as unknown as { kc: KubeConfig }).kc.addAuthenticator({
      isAuthProvider: () => true,
      applyAuthentication: async () => {
        if (authFails) throw new Error('exec plugin failed');
      },
    });
    await watching(s);
    authFails = true;
    api.endWatches(); // a clean end: client-node reconnects by itself, and authentication throws
    await waitUntil(() => /exec plugin failed/.test(s.status().detail), 'the failure reported');
    expect(s.status().healthy).toBe(false);
    authFails = false;
    api.create(pod('app', 'after', '10.244.1.70'));
    await waitUntil(() => !!s.model.findPod('app', 'after') && s.status().healthy, 'recovery');
  });

  it('stop() leaves no watch and no retry behind', async () => {
    seed();
    const s = source();
    await watching(s);
    await s.stop();
    await waitUntil(() => api.openWatches() === 0, 'watches closed');
    // Stop during a retry loop: nothing more is requested afterwards.
    const t = source({ backoffMinMs: 10, backoffMaxMs: 20 });
    await api.setUnavailable(true, '503');
    const started = t.start();
    await waitUntil(() => t.stats().errors.pods >= 2, 'retries');
    await t.stop();
    await started; // resolves at stop (not synced)
    expect(t.status().synced).toBe(false);
    await new Promise((r) => setTimeout(r, 50)); // a request already on the wire at stop() may still land
    const n = api.requests.length;
    await new Promise((r) => setTimeout(r, 200));
    expect(api.requests.slice(n)).toEqual([]);
  });
});

describe('stale watches', () => {
  it('a silent watch (open, no events, no bookmarks) is unhealthy within half the bound, named with its age; the restart relists and the state converges', async () => {
    await restartApi({ bookmarkIntervalMs: 50 }); // a healthy watch says something every 50 ms
    seed();
    const bound = 3000;
    const s = source({ watchdogMs: bound });
    await watching(s);
    await new Promise((r) => setTimeout(r, 300));
    expect(s.status()).toMatchObject({ synced: true, healthy: true });
    const lists = s.stats().lists.pods;
    // Every open watch stays connected and says nothing more (a wedged watch cache); LISTs work.
    api.stall();
    const stalledAt = Date.now();
    api.patchLabels('Pod', 'app', 'web', { app: 'web', v: 'stale' }); // never delivered on the muted watch
    await waitUntil(() => !s.status().healthy, 'the silence to be reported', { timeoutMs: bound, intervalMs: 10 });
    const reportedAfter = Date.now() - stalledAt;
    expect(reportedAfter).toBeLessThanOrEqual(bound / 2 + 500); // the poll and a loaded machine's timers
    expect(s.status().detail).toMatch(/^watch silent past half the stale-watch bound of 3\.0 s \(it is relisted at the bound\), enforcing what it last said: (namespaces|nodes|pods|networkpolicies): no event or bookmark for \d\.\d s/);
    expect(s.stats().restarts.watchdog).toBe(0); // reported, not restarted yet
    expect(s.model.findPod('app', 'web')?.labels.v).toBeUndefined();
    // At the bound: restarted with a fresh list, and the model has what the watch missed.
    await waitUntil(() => s.model.findPod('app', 'web')?.labels.v === 'stale', 'the relist', { timeoutMs: 3 * bound });
    expect(Date.now() - stalledAt).toBeGreaterThanOrEqual(bound - 100);
    expect(s.stats().restarts.watchdog).toBeGreaterThan(0);
    expect(s.stats().lists.pods).toBeGreaterThan(lists);
    expect(s.status().healthy).toBe(true); // the LIST is fresh
    expect(logLines.some((l) => /pods: no event or bookmark for \d\.\d s; restarting the watch with a fresh list/.test(String(l.msg)))).toBe(true);
    api.resume();
  });

  it('each watch asks for a deadline of a quarter of the bound, and a watch ended by the server is resumed at once from its resourceVersion', async () => {
    await restartApi({ bookmarkIntervalMs: 60_000 }); // only the bookmark before each deadline
    seed();
    const s = source({ watchdogMs: 16_000 });
    await watching(s);
    const podWatches = () => api.requests.filter((r) => r.resource === 'pods' && r.watch);
    expect(podWatches()[0]!.query).toMatchObject({ timeoutSeconds: '4', allowWatchBookmarks: 'true' });
    // The server ends it after 4 s (a bookmark 2 s before): the watch resumes, no relist, still healthy.
    await waitUntil(() => podWatches().length >= 2, 'the resumed watch', { timeoutMs: 6000 });
    expect(Number(podWatches()[1]!.query.resourceVersion)).toBeGreaterThan(0);
    expect(s.stats().lists.pods).toBe(1);
    expect(s.status().healthy).toBe(true);
    api.create(pod('app', 'late', '10.244.1.77'));
    await waitUntil(() => !!s.model.findPod('app', 'late'), 'an event on the resumed watch');
  }, 15_000);
});

describe('ClusterNetworkPolicies', () => {
  const cnp = (name: string, priority: number, tier = 'Admin'): KubeObject => ({
    kind: 'ClusterNetworkPolicy',
    metadata: { name },
    spec: { tier, priority, subject: { namespaces: {} }, ingress: [{ name: 'deny-all', action: 'Deny', from: [{ namespaces: {} }] }] },
  });
  const cnpNames = (s: KubeSource) => [...s.model.allClusterPolicies()].map((c) => `${c.name}:${c.tier}:${c.priority}`).sort();

  it('with their CRD: listed, then added, updated (priority) and deleted through the watch', async () => {
    await restartApi({ clusterNetworkPolicyCrd: true });
    seed();
    api.create(cnp('listed', 10));
    api.create(cnp('baseline', 100, 'Baseline'));
    const s = source();
    await watching(s, 5);
    expect(cnpNames(s)).toEqual(['baseline:Baseline:100', 'listed:Admin:10']);
    expect(s.model.findClusterPolicy('listed')?.uid).toBe(api.get('ClusterNetworkPolicy', undefined, 'listed')!.metadata!.uid);
    expect(s.revision()).toMatch(/,clusternetworkpolicies=\d+$/);
    expect(s.status()).toMatchObject({ synced: true, healthy: true });
    expect(s.status().detail).not.toMatch(/not enforced/);
    let changes = 0;
    s.onChange(() => changes++);
    api.create(cnp('added', 20));
    await waitUntil(() => cnpNames(s).includes('added:Admin:20'), 'the added CNP');
    api.modify('ClusterNetworkPolicy', undefined, 'added', (o) => ((o.spec as { priority: number }).priority = 5));
    await waitUntil(() => cnpNames(s).includes('added:Admin:5'), 'the priority change');
    api.delete('ClusterNetworkPolicy', undefined, 'listed');
    await waitUntil(() => !s.model.findClusterPolicy('listed'), 'the deletion');
    expect(cnpNames(s)).toEqual(['added:Admin:5', 'baseline:Baseline:100']);
    expect(changes).toBeGreaterThanOrEqual(3);
    expect(s.stats().events.clusternetworkpolicies).toBe(3);
    // An invalid one is kept fail-closed and reported once.
    api.create({ kind: 'ClusterNetworkPolicy', metadata: { name: 'bad' }, spec: { tier: 'Admin', priority: 5000, subject: { namespaces: {} }, ingress: [] } });
    await waitUntil(() => !!s.model.findClusterPolicy('bad'), 'the invalid CNP');
    expect(s.model.findClusterPolicy('bad')!.issues).toContainEqual(expect.objectContaining({ field: 'spec.priority', value: '5000' }));
    expect(s.stats().objectsWithIssues.ClusterNetworkPolicy).toBe(1);
    expect(logLines.filter((l) => l.level === 50 && /invalid ClusterNetworkPolicy clusternetworkpolicy\/bad: spec\.priority/.test(String(l.msg)))).toHaveLength(1);
  });

  it('without their CRD: synced, says once that they are not enforced, picks them up when the CRD appears, and drops them when it goes', async () => {
    seed();
    const s = source();
    await s.start(); // no CRD: the source syncs all the same
    expect(s.status()).toMatchObject({ synced: true, healthy: true });
    expect(s.status().detail).toMatch(/clusternetworkpolicies not served \(CRD not installed\): ClusterNetworkPolicies are not enforced/);
    expect(s.status().notes).toEqual(['clusternetworkpolicies not served (CRD not installed): ClusterNetworkPolicies are not enforced']);
    expect(s.revision()).toMatch(/^namespaces=\d+,nodes=\d+,pods=\d+,networkpolicies=\d+$/);
    await waitUntil(() => s.stats().absent.clusternetworkpolicies >= 3, 'the list retried with backoff');
    const notEnforced = () => logLines.filter((l) => /ClusterNetworkPolicies are not enforced/.test(String(l.msg)));
    expect(notEnforced()).toHaveLength(1);
    expect(s.stats().errors.clusternetworkpolicies).toBe(0);

    api.setCrdInstalled(true);
    api.create(cnp('late', 7));
    await waitUntil(() => cnpNames(s).join() === 'late:Admin:7', 'the CNPs once the CRD is installed', { timeoutMs: 3000 });
    expect(logLines.some((l) => /serves policy\.networking\.k8s\.io\/v1alpha2 clusternetworkpolicies now \(its CRD is installed\): 1 listed/.test(String(l.msg)))).toBe(true);
    expect(s.status().detail).not.toMatch(/not enforced/);
    expect(s.status().notes).toBeUndefined();
    expect(s.revision()).toMatch(/,clusternetworkpolicies=\d+$/);
    await api.waitForWatchers(1, { resource: 'clusternetworkpolicies' });
    api.create(cnp('watched', 8, 'Baseline'));
    await waitUntil(() => cnpNames(s).includes('watched:Baseline:8'), 'a CNP through the watch');

    // The CRD removed: its instances go (DELETED events, then a 404), and so do they from the model.
    api.setCrdInstalled(false);
    await waitUntil(() => cnpNames(s).length === 0 && /ClusterNetworkPolicies are not enforced/.test(s.status().detail), 'the CNPs gone with their CRD');
    expect(notEnforced()).toHaveLength(2); // once per absence
    expect(s.status().healthy).toBe(true);
  });

  it('one-shot: a cluster without the CRD lists no CNP and no error; with it, lists them', async () => {
    seed();
    const a = source({ once: true });
    await a.start();
    expect(cnpNames(a)).toEqual([]);
    api.setCrdInstalled(true);
    api.create(cnp('guard', 1));
    const b = source({ once: true });
    await b.start();
    expect(cnpNames(b)).toEqual(['guard:Admin:1']);
  });
});

describe('invalid objects and failing handlers', () => {
  it('an invalid NetworkPolicy is upserted fail-closed, reported once per resourceVersion, and isolates its pods', async () => {
    seed();
    api.delete('NetworkPolicy', 'app', 'deny');
    const bad = api.create({
      kind: 'NetworkPolicy',
      metadata: { namespace: 'app', name: 'bad' },
      spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['192.168.0.0/16'] } }] }] },
    });
    const s = source();
    await watching(s);
    const rec = s.model.findPolicy('app', 'bad')!;
    expect(rec.issues).toEqual([expect.objectContaining({ field: 'spec.ingress[0].from[0].ipBlock.except[0]', value: '"192.168.0.0/16"' })]);
    expect(rec.ingress).toEqual([]);
    expect(rec.policyTypes).toEqual(['Ingress']);
    expect(s.invalidPolicies()).toBe(1);
    expect(s.issues()).toEqual([{ ref: 'networkpolicy/app/bad', kind: 'NetworkPolicy', resourceVersion: bad.metadata!.resourceVersion, issues: rec.issues }]);
    expect(s.stats().objectsWithIssues.NetworkPolicy).toBe(1);
    const web = s.model.findPod('app', 'web')!;
    const client = s.model.findPod('app', 'client')!;
    expect(allowed(s.model, podFlow(client, web, 80)).allowed).toBe(false);
    expect(allowed(s.model, podFlow(web, client, 80)).allowed).toBe(true);

    const reports = () => logLines.filter((l) => l.level === 50 && /invalid NetworkPolicy/.test(String(l.msg)));
    expect(reports()).toHaveLength(1);
    expect(reports()[0]).toMatchObject({ namespace: 'app', name: 'bad', field: 'spec.ingress[0].from[0].ipBlock.except[0]', value: '"192.168.0.0/16"', resourceVersion: bad.metadata!.resourceVersion });
    s.resyncAll(); // the same resourceVersion again: not reported again
    await waitUntil(() => s.stats().lists.networkpolicies === 2, 'resync');
    expect(reports()).toHaveLength(1);
    api.patchLabels('NetworkPolicy', 'app', 'bad', { touched: 'yes' }); // a new resourceVersion: reported again
    await waitUntil(() => reports().length === 2, 'second report');
    // Fixed: valid again, and the count follows.
    api.modify('NetworkPolicy', 'app', 'bad', (o) => ((o.spec as { ingress: unknown[] }).ingress = [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] } }] }]));
    await waitUntil(() => s.invalidPolicies() === 0, 'fixed policy');
    expect(s.issues()).toEqual([]);
  });

  it('objects are read as the server sent them: a malformed field is an issue, not "allow everything"', async () => {
    // client-node's typed list would turn `ingress: "ab"` into [{}, {}] (two allow-all rules)
    // and drop the misspelt `exceptt`; the raw list and watch keep them for normalize to reject.
    seed();
    api.create({ kind: 'NetworkPolicy', metadata: { namespace: 'app', name: 'listed' }, spec: { podSelector: {}, ingress: 'ab' } });
    const s = source();
    await watching(s);
    api.create({ kind: 'NetworkPolicy', metadata: { namespace: 'app', name: 'watched' }, spec: { podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/8', exceptt: ['10.1.0.0/16'] } }] }] } });
    await waitUntil(() => !!s.model.findPolicy('app', 'watched'), 'the watched policy');
    expect(s.model.findPolicy('app', 'listed')).toMatchObject({ ingress: [], issues: [expect.objectContaining({ field: 'spec.ingress', value: '"ab"' })] });
    expect(s.model.findPolicy('app', 'watched')).toMatchObject({ egress: [], issues: [expect.objectContaining({ field: expect.stringContaining('exceptt') })] });
    expect(s.invalidPolicies()).toBe(2);
  });

  it('handlers that throw never reach client-node: counted, logged, the rest applied, the resource relisted', async () => {
    seed();
    let failFor = 'boom';
    const s = source({
      normalize: (o) => {
        if ((o as KubeObject).metadata?.name === failFor) throw new Error('normalize exploded');
        return normalize(o);
      },
    });
    s.onChange(() => {
      throw new Error('listener exploded');
    });
    api.create(pod('app', 'boom', '10.244.1.66'));
    await s.start(); // one object failing in the initial list does not hold up the rest
    expect(podNames(s)).toEqual(['app/client', 'app/web']);
    expect(s.stats().handlerErrors).toBeGreaterThanOrEqual(2); // the object and the listener
    api.modify('Pod', 'app', 'boom', (o) => ((o.metadata!.labels ??= {}).x = '1')); // fails on the watch: relist
    api.create(pod('app', 'after', '10.244.1.67'));
    await waitUntil(() => s.stats().restarts['handler-error'] > 0 && !!s.model.findPod('app', 'after'), 'the relist after the failure');
    failFor = 'nothing';
    s.resyncAll();
    await waitUntil(() => !!s.model.findPod('app', 'boom'), 'the object once it can be applied');
    expect(logLines.some((l) => /normalize exploded/.test(String(l.msg)))).toBe(true);
    expect(logLines.some((l) => /listener exploded/.test(String(l.msg)))).toBe(true);
  });
});

describe('one-shot', () => {
  it('lists everything once, opens no watch, and fails fast', async () => {
    seed();
    const s = source({ once: true });
    await s.start();
    expect(podNames(s)).toEqual(['app/client', 'app/web']);
    expect(api.requests.some((r) => r.watch)).toBe(false);
    await api.setUnavailable(true, '503');
    await expect(source({ once: true }).start()).rejects.toThrow(/cannot list .* from the API server .*HTTP 503/);
  });
});

describe('loadKubeConfig', () => {
  it('reads a file and a context, and names what is missing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kubeconfig-'));
    try {
      const path = api.writeKubeconfig(dir);
      expect(serverOf(loadKubeConfig({ kubeconfig: path }))).toBe(api.url);
      expect(loadKubeConfig({ kubeconfig: path, context: 'apiserver-double' }).getCurrentContext()).toBe('apiserver-double');
      expect(() => loadKubeConfig({ kubeconfig: path, context: 'other' })).toThrow('context "other" is not in the kubeconfig (it has: apiserver-double)');
      expect(() => loadKubeConfig({ kubeconfig: join(dir, 'missing') })).toThrow(/^cannot read kubeconfig .*missing/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('kubeconfig paths are relative to its file; tokens from token files; client certificates; merged KUBECONFIG files; proxy-url refused', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kubeconfig-'));
    const saved = process.env.KUBECONFIG;
    try {
      writeFileSync(join(dir, 'ca.crt'), 'CA');
      writeFileSync(join(dir, 'token'), 'from-file\n');
      writeFileSync(
        join(dir, 'a'),
        ['apiVersion: v1', 'kind: Config', 'current-context: b-ctx', 'clusters:', '- name: c', '  cluster: {server: "https://api.example:6443", certificate-authority: ca.crt, tls-server-name: kubernetes}', 'users:', '- name: u', '  user: {tokenFile: token}', '- name: cert', `  user: {client-certificate-data: ${Buffer.from('CERT').toString('base64')}, client-key-data: ${Buffer.from('KEY').toString('base64')}}`, 'contexts:', '- name: a-ctx', '  context: {cluster: c, user: cert}', ''].join('\n'),
      );
      writeFileSync(join(dir, 'b'), ['apiVersion: v1', 'kind: Config', 'contexts:', '- name: b-ctx', '  context: {cluster: c, user: u}', ''].join('\n'));
      process.env.KUBECONFIG = `${join(dir, 'a')}:${join(dir, 'b')}`;
      const kc = loadKubeConfig();
      expect(kc.getCurrentContext()).toBe('b-ctx');
      expect(kc.getCurrentCluster()).toMatchObject({ server: 'https://api.example:6443', caFile: join(dir, 'ca.crt'), tlsServerName: 'kubernetes' });
      const opts: RequestOptions = {};
      await kc.applyToHTTPSOptions(opts);
      expect(opts).toMatchObject({ headers: { Authorization: 'Bearer from-file' }, ca: Buffer.from('CA'), servername: 'kubernetes' });
      const certOpts: RequestOptions = {};
      await loadKubeConfig({ context: 'a-ctx' }).applyToHTTPSOptions(certOpts);
      expect(certOpts).toMatchObject({ cert: Buffer.from('CERT'), key: Buffer.from('KEY') });
      expect((certOpts.headers as Record<string, string>).Authorization).toBeUndefined();
      writeFileSync(join(dir, 'p'), ['apiVersion: v1', 'kind: Config', 'current-context: x', 'clusters:', '- name: c', '  cluster: {server: "https://a:6443", proxy-url: "http://proxy:3128"}', 'contexts:', '- name: x', '  context: {cluster: c}', ''].join('\n'));
      expect(() => loadKubeConfig({ kubeconfig: join(dir, 'p') })).toThrow('cluster "c" of the kubeconfig sets proxy-url, which policyctl does not support (got "http://proxy:3128")');
    } finally {
      if (saved === undefined) delete process.env.KUBECONFIG;
      else process.env.KUBECONFIG = saved;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a user with an exec plugin is authenticated through client-node (loaded then), and lists work with it', async () => {
    seed();
    const dir = mkdtempSync(join(tmpdir(), 'kubeconfig-'));
    try {
      const credential = JSON.stringify({ apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential', status: { token: 'from-exec' } });
      writeFileSync(
        join(dir, 'config'),
        ['apiVersion: v1', 'kind: Config', 'current-context: x', 'clusters:', '- name: c', `  cluster: {server: "${api.url}", insecure-skip-tls-verify: true}`, 'users:', '- name: u', '  user:', '    exec:', '      apiVersion: client.authentication.k8s.io/v1', '      command: sh', `      args: ["-c", ${JSON.stringify(`echo '${credential}'`)}]`, '      interactiveMode: Never', 'contexts:', '- name: x', '  context: {cluster: c, user: u}', ''].join('\n'),
      );
      const s = new KubeSource({ kubeConfig: loadKubeConfig({ kubeconfig: join(dir, 'config') }), once: true });
      await s.start();
      expect(podNames(s)).toEqual(['app/client', 'app/web']);
      expect(api.requests.at(-1)!.authorization).toBe('Bearer from-exec');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('TLS: the API server certificate is checked against the kubeconfig CA (and refused without it)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kubeconfig-tls-'));
    const server = createHttpsServer();
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=apiserver', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
      server.setSecureContext({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) });
      server.on('request', (req, res) => {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ kind: 'NamespaceList', apiVersion: 'v1', metadata: { resourceVersion: '7' }, items: [{ metadata: { name: 'tls', uid: 'u1', resourceVersion: '7' } }], auth: req.headers.authorization }));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      const url = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
      const config = (ca: string) => ['apiVersion: v1', 'kind: Config', 'current-context: x', 'clusters:', '- name: c', `  cluster: {server: "${url}"${ca}}`, 'users:', '- name: u', '  user: {token: t0k3n}', 'contexts:', '- name: x', '  context: {cluster: c, user: u}', ''].join('\n');
      writeFileSync(join(dir, 'with-ca'), config(', certificate-authority: cert.pem'));
      writeFileSync(join(dir, 'without-ca'), config(''));
      const list = await listRaw(loadKubeConfig({ kubeconfig: join(dir, 'with-ca') }), '/api/v1/namespaces', { kind: 'Namespace', apiVersion: 'v1' });
      expect(list).toMatchObject({ resourceVersion: '7', items: [{ kind: 'Namespace', metadata: { name: 'tls' } }] });
      await expect(listRaw(loadKubeConfig({ kubeconfig: join(dir, 'without-ca') }), '/api/v1/namespaces', { kind: 'Namespace', apiVersion: 'v1' })).rejects.toThrow(/list \/api\/v1\/namespaces: .*SELF_SIGNED/i);
    } finally {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('in a pod (KUBERNETES_SERVICE_HOST set), inCluster uses the service account', () => {
    const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
    process.env.KUBERNETES_SERVICE_HOST = '10.96.0.1';
    process.env.KUBERNETES_SERVICE_PORT = '443';
    try {
      const kc = loadKubeConfig({ inCluster: true });
      expect(serverOf(kc)).toBe('https://10.96.0.1:443');
      expect(kc.getCurrentCluster()?.caFile).toBe('/var/run/secrets/kubernetes.io/serviceaccount/ca.crt');
    } finally {
      for (const [k, v] of [['KUBERNETES_SERVICE_HOST', saved.host], ['KUBERNETES_SERVICE_PORT', saved.port]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});
