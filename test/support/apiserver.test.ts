// Proves the API server double speaks the protocol @kubernetes/client-node 2.0.1 expects, and
// pins what client-node's informer (ListWatch) and Watch actually do on drops, 410s, errors,
// timeouts and bookmarks. The watcher design rests on these facts; if a client-node upgrade
// changes one, the test named after it fails.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ApiException,
  CoreV1Api,
  KubeConfig,
  ListWatch,
  NetworkingV1Api,
  Watch,
  makeInformer,
  type KubernetesObject,
  type V1Node,
  type V1Pod,
} from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type ApiServerDouble, type KubeObject, startApiServer, waitUntil } from './apiserver.ts';

let api: ApiServerDouble;
const cleanups: (() => Promise<unknown> | unknown)[] = [];

beforeEach(async () => {
  api = await startApiServer();
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await api.close();
});

function kubeConfig(server = api): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromString(server.kubeconfig());
  return kc;
}

function pod(ns: string, name: string, labels: Record<string, string> = {}, extra: Partial<KubeObject> = {}): KubeObject {
  return {
    kind: 'Pod',
    apiVersion: 'v1',
    metadata: { namespace: ns, name, labels },
    spec: { nodeName: 'node-1', containers: [{ name: 'c', image: 'x', ports: [{ containerPort: 80, name: 'http' }] }] },
    status: { phase: 'Running', podIP: '10.244.1.2' },
    ...extra,
  };
}

const nameOf = (o: KubernetesObject): string => `${o.metadata?.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata?.name}`;

interface Recorder<T extends KubernetesObject> {
  log: string[];
  errors: unknown[];
  connects: number;
  informer: ListWatch<T>;
}

/** Record add/update/delete/error/connect of an informer; stops it after the test. */
function record<T extends KubernetesObject>(informer: ListWatch<T>): Recorder<T> {
  const r: Recorder<T> = { log: [], errors: [], connects: 0, informer };
  informer.on('add', (o) => r.log.push(`add ${nameOf(o)}@${o.metadata?.resourceVersion}`));
  informer.on('update', (o) => r.log.push(`update ${nameOf(o)}@${o.metadata?.resourceVersion}`));
  informer.on('delete', (o) => r.log.push(`delete ${nameOf(o)}@${o.metadata?.resourceVersion}`));
  informer.on('error', (e) => r.errors.push(e));
  informer.on('connect', () => r.connects++);
  cleanups.push(() => informer.stop());
  return r;
}

function podInformer(kc = kubeConfig()): Recorder<V1Pod> {
  const core = kc.makeApiClient(CoreV1Api);
  return record(makeInformer(kc, '/api/v1/pods', () => core.listPodForAllNamespaces()) as ListWatch<V1Pod>);
}

interface RawWatch {
  events: { type: string; object: KubeObject }[];
  done: { err: unknown } | undefined;
  controller: AbortController;
}

async function rawWatch(path: string, params: Record<string, string | number | boolean | undefined>, kc = kubeConfig()): Promise<RawWatch> {
  const w: RawWatch = { events: [], done: undefined, controller: new AbortController() };
  w.controller = await new Watch(kc).watch(
    path,
    params,
    (type, object: KubeObject) => w.events.push({ type, object }),
    (err) => {
      w.done ??= { err };
    },
  );
  cleanups.push(() => w.controller.abort());
  return w;
}

const watchRequests = (): string[] => api.requests.filter((r) => r.watch).map((r) => `watch rv=${r.query.resourceVersion ?? ''}`);
const listRequests = (): number => api.requests.filter((r) => !r.watch && r.resource === 'pods').length;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// -------------------------------------------------------------------------------------------

describe('protocol (raw HTTP)', () => {
  it('lists omit kind/apiVersion on items; GET and watch objects carry them; one global RV', async () => {
    api.create({ kind: 'Namespace', metadata: { name: 'ns1' } });
    const p = api.create(pod('ns1', 'a'));
    api.create({ kind: 'Node', metadata: { name: 'node-1' } });
    expect(Number(p.metadata!.resourceVersion)).toBe(Number(api.resourceVersion()) - 1);
    expect(p.metadata!.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(p.metadata!.creationTimestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    const list = (await (await fetch(`${api.url}/api/v1/pods`)).json()) as { kind: string; apiVersion: string; metadata: { resourceVersion: string }; items: KubeObject[] };
    expect(list.kind).toBe('PodList');
    expect(list.apiVersion).toBe('v1');
    expect(list.metadata.resourceVersion).toBe(api.resourceVersion()); // global, not the newest pod's
    expect(list.items).toHaveLength(1);
    expect(list.items[0]!.kind).toBeUndefined();
    expect(list.items[0]!.apiVersion).toBeUndefined();

    const one = (await (await fetch(`${api.url}/api/v1/namespaces/ns1/pods/a`)).json()) as KubeObject;
    expect([one.kind, one.apiVersion]).toEqual(['Pod', 'v1']);

    const res = await fetch(`${api.url}/api/v1/namespaces/ns1/pods?watch=1`);
    expect(res.headers.get('content-type')).toBe('application/json');
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(JSON.parse(first.split('\n')[0]!)).toMatchObject({ type: 'ADDED', object: { kind: 'Pod', apiVersion: 'v1', metadata: { name: 'a' } } });
    await reader.cancel();
  });

  it('answers errors with Status objects the way the real server does', async () => {
    const get = async (path: string) => {
      const r = await fetch(`${api.url}${path}`);
      return { code: r.status, body: (await r.json()) as KubeObject };
    };
    const nf = await get('/api/v1/namespaces/ns1/pods/missing');
    expect(nf.code).toBe(404);
    expect(nf.body).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'NotFound', code: 404, message: 'pods "missing" not found' });
    expect((await get('/api/v1/networkpolicies')).code).toBe(404); // wrong group
    expect((await get('/api/v1/pods?labelSelector=a%20in%20(')).body).toMatchObject({ code: 400, reason: 'BadRequest' });
    expect((await get('/api/v1/pods?fieldSelector=spec.foo%3Dx')).body).toMatchObject({ code: 400, message: 'field label not supported: spec.foo' });
    expect((await get('/api/v1/nodes?fieldSelector=spec.nodeName%3Dx')).code).toBe(400); // nodes do not support it
  });

  it('serves the discovery documents and /version', async () => {
    const json = async (path: string) => (await (await fetch(`${api.url}${path}`)).json()) as Record<string, unknown>;
    expect(await json('/api')).toMatchObject({ kind: 'APIVersions', versions: ['v1'] });
    expect(await json('/apis')).toMatchObject({ kind: 'APIGroupList', groups: [{ name: 'networking.k8s.io' }] });
    expect(((await json('/api/v1')).resources as { name: string }[]).map((r) => r.name).sort()).toEqual(['namespaces', 'nodes', 'pods']);
    expect(await json('/apis/networking.k8s.io/v1')).toMatchObject({ resources: [{ name: 'networkpolicies', namespaced: true, kind: 'NetworkPolicy' }] });
    expect(await json('/version')).toMatchObject({ major: '1' });
  });

  it('applies API-server defaulting (netpol policyTypes and protocols, namespace name label)', () => {
    const np = api.create({
      kind: 'NetworkPolicy',
      metadata: { name: 'p', namespace: 'ns1' },
      spec: { podSelector: {}, egress: [{ ports: [{ port: 53 }] }] },
    });
    expect(np.spec).toMatchObject({ policyTypes: ['Ingress', 'Egress'], egress: [{ ports: [{ port: 53, protocol: 'TCP' }] }] });
    expect(api.create({ kind: 'NetworkPolicy', metadata: { name: 'q', namespace: 'ns1' }, spec: { podSelector: {} } }).spec).toMatchObject({ policyTypes: ['Ingress'] });
    expect(api.create({ kind: 'Namespace', metadata: { name: 'prod' } }).metadata!.labels).toEqual({ 'kubernetes.io/metadata.name': 'prod' });
    expect(api.create(pod('ns1', 'a')).spec).toMatchObject({ containers: [{ ports: [{ protocol: 'TCP' }] }] });
  });

  it('update keeps uid/creationTimestamp, rejects a stale resourceVersion, bumps generation on spec change', () => {
    const a = api.create(pod('ns1', 'a'));
    const b = api.patchLabels('Pod', 'ns1', 'a', { app: 'web' });
    expect(b.metadata).toMatchObject({ uid: a.metadata!.uid, creationTimestamp: a.metadata!.creationTimestamp, generation: 1, labels: { app: 'web' } });
    expect(() => api.update(a)).toThrow(/the object has been modified/);
    const c = api.modify('Pod', 'ns1', 'a', (o) => ((o.spec as { nodeName: string }).nodeName = 'node-2'));
    expect(c.metadata!.generation).toBe(2);
    expect(api.patchLabels('Pod', 'ns1', 'a', { app: null }).metadata!.labels).toEqual({});
  });
});

describe('typed client calls', () => {
  it('kubeconfig: http works only with insecure-skip-tls-verify (client-node refuses plain http otherwise)', async () => {
    api.create(pod('ns1', 'a'));
    const bad = new KubeConfig();
    bad.loadFromString(api.kubeconfig({ skipTLSVerify: false }));
    await expect(bad.makeApiClient(CoreV1Api).listPodForAllNamespaces()).rejects.toThrow('HTTP protocol is not allowed when skipTLSVerify is not set or false');

    const dir = mkdtempSync(join(tmpdir(), 'apiserver-double-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const kc = new KubeConfig();
    kc.loadFromFile(api.writeKubeconfig(dir));
    const list = await kc.makeApiClient(CoreV1Api).listPodForAllNamespaces();
    expect(list.items.map((p) => p.metadata?.name)).toEqual(['a']);
    expect(api.requests.at(-1)!.authorization).toBe('Bearer test-token');
    expect(readFileSync(join(dir, 'kubeconfig'), 'utf8')).toContain('insecure-skip-tls-verify: true');
  });

  it('listPodForAllNamespaces returns typed items and the list resourceVersion; namespaced lists scope', async () => {
    api.create(pod('ns1', 'b'));
    api.create(pod('ns2', 'a'));
    api.create(pod('ns1', 'a'));
    const core = kubeConfig().makeApiClient(CoreV1Api);
    const all = await core.listPodForAllNamespaces();
    expect(all.items.map(nameOf)).toEqual(['ns1/a', 'ns1/b', 'ns2/a']); // etcd key order
    expect(all.metadata?.resourceVersion).toBe(api.resourceVersion());
    expect(all.items[0]!.metadata?.creationTimestamp).toBeInstanceOf(Date);
    expect((await core.listNamespacedPod({ namespace: 'ns2' })).items.map(nameOf)).toEqual(['ns2/a']);
    expect(api.requests.at(-1)).toMatchObject({ path: '/api/v1/namespaces/ns2/pods', resource: 'pods', watch: false });
    const np = kubeConfig().makeApiClient(NetworkingV1Api);
    api.create({ kind: 'NetworkPolicy', metadata: { name: 'deny', namespace: 'ns1' }, spec: { podSelector: {} } });
    expect((await np.listNetworkPolicyForAllNamespaces()).items.map(nameOf)).toEqual(['ns1/deny']);
    expect((await np.listNamespacedNetworkPolicy({ namespace: 'ns2' })).items).toEqual([]);
  });

  it('labelSelector: equality and set-based forms', async () => {
    api.create(pod('ns1', 'web', { app: 'web', tier: 'front' }));
    api.create(pod('ns1', 'db', { app: 'db', tier: 'back' }));
    api.create(pod('ns1', 'bare'));
    const core = kubeConfig().makeApiClient(CoreV1Api);
    const names = async (labelSelector: string) => (await core.listPodForAllNamespaces({ labelSelector })).items.map((p) => p.metadata?.name);
    expect(await names('app=web')).toEqual(['web']);
    expect(await names('app==web')).toEqual(['web']);
    expect(await names('app!=web')).toEqual(['bare', 'db']); // != matches objects without the key
    expect(await names('app in (web, db)')).toEqual(['db', 'web']);
    expect(await names('app notin (web)')).toEqual(['bare', 'db']);
    expect(await names('tier')).toEqual(['db', 'web']);
    expect(await names('!tier')).toEqual(['bare']);
    expect(await names('app=web,tier=back')).toEqual([]);
  });

  it('fieldSelector metadata.name and readNode (single-node informer path)', async () => {
    api.create({ kind: 'Node', metadata: { name: 'node-1' }, spec: { podCIDR: '10.244.1.0/24' } });
    api.create({ kind: 'Node', metadata: { name: 'node-2' }, spec: { podCIDR: '10.244.2.0/24' } });
    api.create(pod('ns1', 'on-2', {}, { spec: { nodeName: 'node-2', containers: [] } }));
    api.create(pod('ns1', 'on-1'));
    const kc = kubeConfig();
    const core = kc.makeApiClient(CoreV1Api);
    expect((await core.listNode({ fieldSelector: 'metadata.name=node-2' })).items.map((n) => n.spec?.podCIDR)).toEqual(['10.244.2.0/24']);
    expect((await core.readNode({ name: 'node-1' })).spec?.podCIDR).toBe('10.244.1.0/24');
    await expect(core.readNode({ name: 'nope' })).rejects.toMatchObject({ code: 404 });
    expect((await core.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=node-1' })).items.map(nameOf)).toEqual(['ns1/on-1']);

    // An informer on one Node: ListWatch takes a fieldSelector (makeInformer does not).
    const inf = record(new ListWatch<V1Node>('/api/v1/nodes', new Watch(kc), () => core.listNode({ fieldSelector: 'metadata.name=node-1' }), false, undefined, 'metadata.name=node-1'));
    await inf.informer.start();
    api.patchLabels('Node', undefined, 'node-2', { x: 'y' });
    api.patchLabels('Node', undefined, 'node-1', { x: 'y' });
    await waitUntil(() => inf.log.length === 2, 'node update');
    expect(inf.log.map((l) => l.replace(/@\d+/, ''))).toEqual(['add node-1', 'update node-1']);
    expect(api.requests.at(-1)!.query).toMatchObject({ watch: 'true', fieldSelector: 'metadata.name=node-1' });
  });

  it('pagination: limit/continue pages form a consistent snapshot; an expired token gets HTTP 410', async () => {
    for (const n of ['a', 'b', 'c', 'd', 'e']) api.create(pod('ns1', n));
    const core = kubeConfig().makeApiClient(CoreV1Api);
    const p1 = await core.listPodForAllNamespaces({ limit: 2 });
    expect(p1.items.map((p) => p.metadata?.name)).toEqual(['a', 'b']);
    expect(p1.metadata?.remainingItemCount).toBe(3);
    expect(p1.metadata?._continue).toBeTruthy();
    // Changes after the first page do not show in later pages (etcd reads at the first page's revision).
    api.delete('Pod', 'ns1', 'c');
    api.create(pod('ns1', 'bb'));
    const p2 = await core.listPodForAllNamespaces({ limit: 2, _continue: p1.metadata!._continue! });
    expect(p2.items.map((p) => p.metadata?.name)).toEqual(['c', 'd']);
    expect(p2.metadata?.resourceVersion).toBe(p1.metadata?.resourceVersion);
    const p3 = await core.listPodForAllNamespaces({ limit: 2, _continue: p2.metadata!._continue! });
    expect(p3.items.map((p) => p.metadata?.name)).toEqual(['e']);
    expect(p3.metadata?._continue).toBeUndefined();

    api.compact();
    const err = await core.listPodForAllNamespaces({ limit: 2, _continue: p1.metadata!._continue! }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiException);
    expect((err as ApiException<string>).code).toBe(410);
    expect(JSON.parse((err as ApiException<string>).body)).toMatchObject({ kind: 'Status', reason: 'Expired', code: 410 });
  });

  it('resourceVersionMatch=Exact serves history; too old -> 410, too new -> 504', async () => {
    api.create(pod('ns1', 'a'));
    const rv = api.resourceVersion();
    api.create(pod('ns1', 'b'));
    const core = kubeConfig().makeApiClient(CoreV1Api);
    const old = await core.listPodForAllNamespaces({ resourceVersion: rv, resourceVersionMatch: 'Exact' });
    expect(old.items.map((p) => p.metadata?.name)).toEqual(['a']);
    expect(old.metadata?.resourceVersion).toBe(rv);
    await expect(core.listPodForAllNamespaces({ resourceVersion: '999999', resourceVersionMatch: 'NotOlderThan' })).rejects.toMatchObject({ code: 504 });
    api.compact();
    await expect(core.listPodForAllNamespaces({ resourceVersion: rv, resourceVersionMatch: 'Exact' })).rejects.toMatchObject({ code: 410 });
  });
});

describe('raw Watch', () => {
  it('without resourceVersion starts with synthetic ADDED events for the current state', async () => {
    api.create(pod('ns1', 'a'));
    api.create(pod('ns1', 'b'));
    const w = await rawWatch('/api/v1/pods', {});
    await waitUntil(() => w.events.length === 2, 'initial events');
    expect(w.events.map((e) => `${e.type} ${e.object.metadata!.name}`)).toEqual(['ADDED a', 'ADDED b']);
  });

  it('sendInitialEvents=true (streaming list) ends the initial ADDED events with an annotated BOOKMARK', async () => {
    api.create(pod('ns1', 'a'));
    const w = await rawWatch('/api/v1/pods', { sendInitialEvents: true, resourceVersionMatch: 'NotOlderThan', allowWatchBookmarks: true });
    await waitUntil(() => w.events.length === 2, 'initial events');
    expect(w.events[0]!.type).toBe('ADDED');
    expect(w.events[1]).toMatchObject({ type: 'BOOKMARK', object: { metadata: { resourceVersion: api.resourceVersion(), annotations: { 'k8s.io/initial-events-end': 'true' } } } });
  });

  it('from an RV replays later events; DELETED carries the last state with a new RV', async () => {
    const rv = api.resourceVersion();
    api.create(pod('ns1', 'a'));
    api.patchLabels('Pod', 'ns1', 'a', { v: '2' });
    const del = api.delete('Pod', 'ns1', 'a');
    const w = await rawWatch('/api/v1/pods', { resourceVersion: rv });
    await waitUntil(() => w.events.length === 3, 'replayed events');
    expect(w.events.map((e) => e.type)).toEqual(['ADDED', 'MODIFIED', 'DELETED']);
    expect(w.events[2]!.object.metadata).toMatchObject({ labels: { v: '2' }, resourceVersion: del.metadata!.resourceVersion });
    expect(del.metadata!.resourceVersion).toBe(api.resourceVersion());
  });

  it('label-selector watches see objects entering and leaving the selection as ADDED/DELETED', async () => {
    api.create(pod('ns1', 'a', { app: 'web' }));
    const w = await rawWatch('/api/v1/pods', { resourceVersion: api.resourceVersion(), labelSelector: 'app=web' });
    api.patchLabels('Pod', 'ns1', 'a', { app: 'db' });
    api.patchLabels('Pod', 'ns1', 'a', { app: 'web' });
    api.patchLabels('Pod', 'ns1', 'a', { v: '1' });
    await waitUntil(() => w.events.length === 3, 'transition events');
    expect(w.events.map((e) => `${e.type} ${e.object.metadata!.labels!.app}`)).toEqual(['DELETED web', 'ADDED web', 'MODIFIED web']);
  });

  it('a watch from a compacted RV gets one ERROR event (Status 410 Expired) and the stream ends cleanly', async () => {
    api.create(pod('ns1', 'a'));
    const rv = api.resourceVersion();
    api.expire();
    const w = await rawWatch('/api/v1/pods', { resourceVersion: rv });
    await waitUntil(() => w.done !== undefined, 'watch end');
    expect(w.events).toEqual([
      {
        type: 'ERROR',
        object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${rv} (${api.resourceVersion()})`, reason: 'Expired', code: 410 },
      },
    ]);
    expect(w.done!.err).toBeNull(); // Watch reports a clean end, not an error
  });

  it('BOOKMARK events arrive only when asked for (allowWatchBookmarks), periodically and on demand', async () => {
    await api.close();
    api = await startApiServer({ bookmarkIntervalMs: 50 });
    api.create(pod('ns1', 'a'));
    const w = await rawWatch('/api/v1/pods', { resourceVersion: api.resourceVersion(), allowWatchBookmarks: true });
    const plain = await rawWatch('/api/v1/pods', { resourceVersion: api.resourceVersion() });
    await waitUntil(() => w.events.length >= 2, 'periodic bookmarks');
    api.create(pod('ns1', 'b'));
    api.sendBookmark();
    await waitUntil(() => w.events.some((e) => e.type === 'BOOKMARK' && e.object.metadata!.resourceVersion === api.resourceVersion()), 'bookmark at new RV');
    const bm = w.events.find((e) => e.type === 'BOOKMARK')!.object;
    expect(bm).toMatchObject({ kind: 'Pod', apiVersion: 'v1', metadata: { resourceVersion: expect.any(String) } });
    expect(bm.metadata!.name).toBeUndefined();
    expect(plain.events.map((e) => e.type)).toEqual(['ADDED']);
  });

  it('timeoutSeconds: the server ends the stream cleanly and Watch calls done(null)', async () => {
    const w = await rawWatch('/api/v1/pods', { resourceVersion: api.resourceVersion(), timeoutSeconds: 0.2 });
    const t0 = Date.now();
    await waitUntil(() => w.done !== undefined, 'timeout end');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
    expect(w.done!.err).toBeNull();
    expect(api.openWatches()).toBe(0);
  });

  it('dropWatches and cutAfterBytes end the Watch with an error (undici "terminated")', async () => {
    const w1 = await rawWatch('/api/v1/pods', { resourceVersion: api.resourceVersion() });
    await api.waitForWatchers(1);
    expect(api.dropWatches()).toBe(1);
    await waitUntil(() => w1.done !== undefined, 'drop');
    expect(w1.done!.err).toMatchObject({ name: 'TypeError', message: 'terminated' });

    const w2 = await rawWatch('/api/v1/pods', { resourceVersion: api.resourceVersion() });
    await api.waitForWatchers(1);
    api.cutAfterBytes(30);
    api.create(pod('ns1', 'a'));
    await waitUntil(() => w2.done !== undefined, 'cut');
    expect(w2.events).toEqual([]); // the half line is dropped (JSON parse errors are ignored)
    expect(w2.done!.err).toMatchObject({ message: 'terminated' });
  });
});

describe('client-node informer against the double (pins client-node 2.0.1 behaviour)', () => {
  it('start() resolves after the initial list (one add per item) with the watch open', async () => {
    api.create(pod('ns1', 'a'));
    api.create(pod('ns2', 'b'));
    const r = podInformer();
    await r.informer.start();
    expect(r.log).toEqual([`add ns1/a@${Number(api.resourceVersion()) - 1}`, `add ns2/b@${api.resourceVersion()}`]);
    expect(api.openWatches('pods')).toBe(1); // start() awaited the watch's response headers
    expect(watchRequests()).toEqual([`watch rv=${api.resourceVersion()}`]);
    expect(api.requests.at(-1)!.query.allowWatchBookmarks).toBeUndefined(); // the informer never asks for bookmarks
    expect(r.informer.list().map(nameOf)).toEqual(['ns1/a', 'ns2/b']);
    expect(r.connects).toBe(1);
  });

  it('create, update and delete after start reach the handlers', async () => {
    const r = podInformer();
    await r.informer.start();
    api.create(pod('ns1', 'a'));
    api.patchLabels('Pod', 'ns1', 'a', { app: 'web' });
    api.delete('Pod', 'ns1', 'a');
    await waitUntil(() => r.log.length === 3, 'three events');
    expect(r.log.map((l) => l.replace(/@\d+/, ''))).toEqual(['add ns1/a', 'update ns1/a', 'delete ns1/a']);
    expect(r.errors).toEqual([]);
  });

  it('dropped watch (socket destroyed mid-stream): error handlers get TypeError "terminated" and the informer STOPS', async () => {
    const r = podInformer();
    await r.informer.start();
    api.dropWatches();
    await waitUntil(() => r.errors.length === 1, 'error handler');
    const e = r.errors[0] as TypeError & { cause?: { code?: string } };
    expect(e.name).toBe('TypeError');
    expect(e.message).toBe('terminated');
    expect(e.cause?.code).toBe('UND_ERR_SOCKET');
    api.create(pod('ns1', 'late'));
    await sleep(150);
    expect(api.openWatches()).toBe(0); // no reconnect of its own
    expect(r.log).toEqual([]);
    expect(watchRequests()).toHaveLength(1);
  });

  it('dropped with RST: same, the cause is ECONNRESET', async () => {
    const r = podInformer();
    await r.informer.start();
    api.dropWatches({ reset: true });
    await waitUntil(() => r.errors.length === 1, 'error handler');
    expect(r.errors[0]).toMatchObject({ message: 'terminated', cause: { code: 'ECONNRESET' } });
  });

  it('start() after an error resumes the watch from the last RV, without a relist', async () => {
    api.create(pod('ns1', 'a'));
    const r = podInformer();
    await r.informer.start();
    const rv = api.resourceVersion();
    api.dropWatches();
    await waitUntil(() => r.errors.length === 1, 'error');
    api.create(pod('ns1', 'missed'));
    await r.informer.start();
    await waitUntil(() => r.log.length === 2, 'missed event');
    expect(r.log[1]).toMatch(/^add ns1\/missed@/);
    expect(listRequests()).toBe(1);
    expect(watchRequests()).toEqual([`watch rv=${rv}`, `watch rv=${rv}`]);
  });

  it('410: expire() + drop + start() -> ERROR 410 on the watch -> the informer relists by itself; a pod deleted and recreated under the same name arrives as UPDATE', async () => {
    api.create(pod('ns1', 'a', { v: '1' }));
    api.create(pod('ns1', 'gone'));
    const r = podInformer();
    await r.informer.start();
    const rv = api.resourceVersion();
    api.dropWatches();
    await waitUntil(() => r.errors.length === 1, 'error');
    api.delete('Pod', 'ns1', 'gone');
    api.delete('Pod', 'ns1', 'a');
    const recreated = api.create(pod('ns1', 'a', { v: '2' }));
    api.create(pod('ns1', 'new'));
    api.expire();
    r.log.length = 0;
    await r.informer.start();
    await waitUntil(() => r.log.length === 3 && api.openWatches() === 1, 'relist');
    expect(r.log).toEqual([`delete ns1/gone@${Number(rv)}`, `update ns1/a@${recreated.metadata!.resourceVersion}`, expect.stringMatching(/^add ns1\/new@/)]);
    expect(r.informer.get('a', 'ns1')?.metadata?.uid).toBe(recreated.metadata!.uid);
    expect(listRequests()).toBe(2);
    expect(watchRequests()).toEqual([`watch rv=${rv}`, `watch rv=${rv}`, `watch rv=${api.resourceVersion()}`]);
    expect(r.errors).toHaveLength(1); // the 410 itself is not reported
  });

  it('clean end of a watch (server timeout): reconnect from the last RV, no relist, no error; 410 on that reconnect relists, then waits the backoff before watching', async () => {
    const kc = kubeConfig();
    const core = kc.makeApiClient(CoreV1Api);
    const delays: number[] = [];
    const r = record(
      new ListWatch<V1Pod>('/api/v1/pods', new Watch(kc), () => core.listPodForAllNamespaces(), false, undefined, undefined, {
        delayFn: async (ms) => {
          delays.push(ms);
        },
      }),
    );
    await r.informer.start();
    const rv = api.resourceVersion();
    expect(api.endWatches()).toBe(1);
    await waitUntil(() => watchRequests().length === 2 && api.openWatches() === 1, 'reconnect');
    expect(watchRequests()).toEqual([`watch rv=${rv}`, `watch rv=${rv}`]);
    expect(listRequests()).toBe(1);
    api.create(pod('ns1', 'a'));
    await waitUntil(() => r.log.length === 1, 'event after reconnect');

    api.expire();
    api.endWatches(); // the event reset the backoff: this reconnect is immediate
    await waitUntil(() => listRequests() === 2 && api.openWatches() === 1, 'relist after 410');
    expect(r.errors).toEqual([]);
    expect(r.connects).toBe(4); // start, reconnect, reconnect (gets 410), relist
    // The ERROR event does not reset the backoff, so the watch after the relist waited 1 s.
    expect(delays).toEqual([1000]);
  });

  it('consecutive clean ends with no event in between back off 1 s, 2 s, 4 s ... (30 s cap); any event resets it', async () => {
    const kc = kubeConfig();
    const core = kc.makeApiClient(CoreV1Api);
    const delays: number[] = [];
    const lw = new ListWatch<V1Pod>('/api/v1/pods', new Watch(kc), () => core.listPodForAllNamespaces(), false, undefined, undefined, {
      delayFn: async (ms) => {
        delays.push(ms);
      },
    });
    record(lw);
    await lw.start();
    for (let i = 1; i <= 3; i++) {
      api.endWatches();
      await waitUntil(() => watchRequests().length === i + 1 && api.openWatches() === 1, `reconnect ${i}`);
    }
    expect(delays).toEqual([1000, 2000]); // the first reconnect is immediate
    api.create(pod('ns1', 'a'));
    await waitUntil(() => lw.list().length === 1, 'event');
    api.endWatches();
    await waitUntil(() => watchRequests().length === 5 && api.openWatches() === 1, 'reconnect after event');
    expect(delays).toEqual([1000, 2000]);
  });

  it('stalled watch: Watch has a 30 s inactivity timeout (private requestTimeoutMs) -> TimeoutError -> silent reconnect from the last RV', async () => {
    const kc = kubeConfig();
    const core = kc.makeApiClient(CoreV1Api);
    const watch = new Watch(kc);
    expect((watch as unknown as { requestTimeoutMs: number }).requestTimeoutMs).toBe(30_000);
    (watch as unknown as { requestTimeoutMs: number }).requestTimeoutMs = 200;
    const r = record(new ListWatch<V1Pod>('/api/v1/pods', watch, () => core.listPodForAllNamespaces(), false));
    await r.informer.start();
    api.stall();
    api.create(pod('ns1', 'during-stall'));
    await sleep(50);
    expect(r.log).toEqual([]);
    api.resume();
    await waitUntil(() => r.log.length === 1, 'event via the reconnected watch', { timeoutMs: 3000 });
    expect(r.errors).toEqual([]);
    expect(listRequests()).toBe(1);
  });

  it('503 on a reconnect: error handlers get Error("Service Unavailable") with statusCode 503, the informer stops', async () => {
    const r = podInformer();
    await r.informer.start();
    await api.setUnavailable(true, '503');
    api.endWatches();
    await waitUntil(() => r.errors.length === 1, 'error');
    expect(r.errors[0]).toMatchObject({ message: 'Service Unavailable', statusCode: 503 });
    await sleep(100);
    expect(api.requests.filter((q) => q.watch)).toHaveLength(2);
  });

  it('connection refused: error handlers get TypeError "fetch failed" (cause ECONNREFUSED); the same port serves again after setUnavailable(false)', async () => {
    const r = podInformer();
    await r.informer.start();
    const port = api.port;
    await api.setUnavailable(true, 'refuse'); // destroys the open watch too
    await waitUntil(() => r.errors.length === 1, 'drop error');
    expect(r.errors[0]).toMatchObject({ message: 'terminated' });
    await r.informer.start();
    await waitUntil(() => r.errors.length === 2, 'refused error');
    expect(r.errors[1]).toMatchObject({ name: 'TypeError', message: 'fetch failed', cause: { code: 'ECONNREFUSED' } });
    await api.setUnavailable(false);
    expect(api.port).toBe(port);
    api.create(pod('ns1', 'back'));
    await r.informer.start();
    await waitUntil(() => r.log.length === 1, 'event after recovery');
  });

  it('a failing initial list: start() RESOLVES (does not reject); the error goes to the error handlers as ApiException', async () => {
    await api.setUnavailable(true, '503');
    const r = podInformer();
    await expect(r.informer.start()).resolves.toBeUndefined();
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toBeInstanceOf(ApiException);
    expect((r.errors[0] as ApiException<unknown>).code).toBe(503);
    expect(api.openWatches()).toBe(0);
  });

  it('stop() with a watch open calls the error handlers with an AbortError', async () => {
    const r = podInformer();
    await r.informer.start();
    await r.informer.stop();
    await waitUntil(() => r.errors.length === 1, 'abort error');
    expect(r.errors[0]).toMatchObject({ name: 'AbortError' });
    await waitUntil(() => api.openWatches() === 0, 'server sees the close');
  });

  it('a handler that throws during the initial list makes start() reject, with the cache already filled', async () => {
    api.create(pod('ns1', 'a'));
    api.create(pod('ns1', 'boom'));
    const r = podInformer();
    r.informer.on('add', (o) => {
      if (o.metadata?.name === 'boom') throw new Error('handler threw');
    });
    await expect(r.informer.start()).rejects.toThrow('handler threw');
    expect(r.informer.list().map(nameOf)).toEqual(['ns1/a', 'ns1/boom']);
    expect(api.openWatches()).toBe(0); // and it never starts watching
  });

  it('a handler that throws on a watch event is an unhandled promise rejection (checked in a child process)', () => {
    const script = `
      import { KubeConfig, CoreV1Api, makeInformer } from '@kubernetes/client-node';
      import { startApiServer, waitUntil } from ${JSON.stringify(new URL('./apiserver.ts', import.meta.url).pathname)};
      const seen = [];
      process.on('unhandledRejection', (e) => seen.push(e.message));
      const api = await startApiServer();
      const kc = new KubeConfig(); kc.loadFromString(api.kubeconfig());
      const core = kc.makeApiClient(CoreV1Api);
      const inf = makeInformer(kc, '/api/v1/pods', () => core.listPodForAllNamespaces());
      inf.on('add', (o) => { if (o.metadata.name === 'boom') throw new Error('handler threw'); });
      await inf.start();
      api.create({ kind: 'Pod', metadata: { name: 'boom', namespace: 'ns1' } });
      await waitUntil(() => seen.length > 0);
      console.log(JSON.stringify({ seen, cached: inf.list().map((o) => o.metadata.name), watching: api.openWatches() }));
      await inf.stop(); await api.close();
    `;
    const out = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: new URL('../../', import.meta.url).pathname, encoding: 'utf8', timeout: 10_000 });
    expect(out.status, out.stderr).toBe(0);
    expect(JSON.parse(out.stdout.trim().split('\n').at(-1)!)).toEqual({ seen: ['handler threw'], cached: ['boom'], watching: 1 });
  });
});

describe('test helpers of the double', () => {
  it('logs requests, counts and awaits watchers, and close() leaves nothing listening', async () => {
    const kc = kubeConfig();
    const core = kc.makeApiClient(CoreV1Api);
    const a = podInformer(kc);
    const b = record(makeInformer(kc, '/api/v1/namespaces', () => core.listNamespace()) as ListWatch<KubernetesObject>);
    void a.informer.start();
    void b.informer.start();
    await api.waitForWatchers(2);
    expect(api.openWatches('pods')).toBe(1);
    expect(api.openWatches('Namespace')).toBe(1);
    const req = await api.waitForRequest((q) => q.watch && q.resource === 'namespaces');
    expect(req).toMatchObject({ method: 'GET', path: '/api/v1/namespaces', query: { watch: 'true' } });
    const url = api.url;
    await api.close();
    await expect(fetch(`${url}/version`)).rejects.toThrow('fetch failed');
    expect(api.openWatches()).toBe(0);
  });

  it('stall({requests: true}) parks lists until resume()', async () => {
    api.create(pod('ns1', 'a'));
    api.stall({ requests: true });
    const core = kubeConfig().makeApiClient(CoreV1Api);
    let done = false;
    const p = core.listPodForAllNamespaces().then((l) => {
      done = true;
      return l;
    });
    await api.waitForRequest((q) => q.resource === 'pods');
    await sleep(50);
    expect(done).toBe(false);
    api.resume();
    expect((await p).items).toHaveLength(1);
  });

  it('retainEvents compacts automatically', async () => {
    await api.close();
    api = await startApiServer({ retainEvents: 2 });
    const rv = api.resourceVersion();
    for (const n of ['a', 'b', 'c']) api.create(pod('ns1', n));
    const w = await rawWatch('/api/v1/pods', { resourceVersion: rv });
    await waitUntil(() => w.done !== undefined, 'expired');
    expect(w.events[0]).toMatchObject({ type: 'ERROR', object: { code: 410 } });
    const ok = await rawWatch('/api/v1/pods', { resourceVersion: String(Number(rv) + 1) });
    await waitUntil(() => ok.events.length === 2, 'retained');
  });
});
