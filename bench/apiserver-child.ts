// The API server of the agent memory benchmark (bench/parts/agent.ts): the double of
// test/support/apiserver.ts serving one synthetic cluster (bench/synthetic.ts) as a real API
// server would hold it, in a process of its own so that nothing it holds is counted in the
// agent's RSS. Run inside the benchmark's network namespace:
//
//   node bench/apiserver-child.ts --pods 10000 --policies 2000 --seed 1 --port 6443 --kubeconfig FILE
//
// Pods carry what a real cluster's pods carry besides what the agent reads (managedFields,
// owner references, annotations, volumes, resources, tolerations, conditions, container
// statuses: about 5 KB of JSON each, the size `kubectl get pod -o json` shows for a plain
// Deployment replica), so the benchmark measures an agent that drops that bulk as it arrives.
// Prints one JSON line (`{"ready":true,...}`) once it serves, then runs until stdin closes.

import { writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { ApiServerDouble } from '../test/support/apiserver.ts';
import { clusterList } from './manifests.ts';
import { generateCluster } from './synthetic.ts';

type Obj = Record<string, unknown>;

const { values } = parseArgs({
  options: {
    pods: { type: 'string' },
    policies: { type: 'string' },
    seed: { type: 'string', default: '1' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    kubeconfig: { type: 'string' },
  },
});
if (!values.pods || !values.policies || !values.kubeconfig) {
  process.stderr.write('usage: apiserver-child.ts --pods N --policies M --kubeconfig FILE [--seed S] [--host IP] [--port P]\n');
  process.exit(2);
}

/** What a Deployment replica's Pod holds besides the fields the agent reads. */
function realisticPod(o: Obj, i: number): Obj {
  const meta = o['metadata'] as Obj;
  const spec = o['spec'] as Obj;
  const status = o['status'] as Obj;
  const name = String(meta['name']);
  const rs = name.slice(0, name.lastIndexOf('-'));
  const t = '2026-01-01T00:00:00Z';
  const container = (spec['containers'] as Obj[])[0]!;
  Object.assign(meta, {
    generateName: `${rs}-`,
    annotations: { 'kubectl.kubernetes.io/restartedAt': t, 'prometheus.io/scrape': 'true' },
    ownerReferences: [{ apiVersion: 'apps/v1', blockOwnerDeletion: true, controller: true, kind: 'ReplicaSet', name: rs, uid: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}` }],
    managedFields: [
      {
        apiVersion: 'v1',
        fieldsType: 'FieldsV1',
        fieldsV1: {
          'f:metadata': { 'f:annotations': { '.': {}, 'f:kubectl.kubernetes.io/restartedAt': {}, 'f:prometheus.io/scrape': {} }, 'f:generateName': {}, 'f:labels': { '.': {}, 'f:app': {}, 'f:pod-template-hash': {}, 'f:tier': {}, 'f:version': {} }, 'f:ownerReferences': { '.': {}, [`k:{"uid":"${i}"}`]: {} } },
          'f:spec': {
            'f:containers': { 'k:{"name":"main"}': { '.': {}, 'f:env': { '.': {}, 'k:{"name":"LOG_LEVEL"}': { '.': {}, 'f:name': {}, 'f:value': {} } }, 'f:image': {}, 'f:imagePullPolicy': {}, 'f:name': {}, 'f:ports': {}, 'f:resources': { '.': {}, 'f:limits': {}, 'f:requests': {} }, 'f:terminationMessagePath': {}, 'f:terminationMessagePolicy': {} } },
            'f:dnsPolicy': {}, 'f:enableServiceLinks': {}, 'f:restartPolicy': {}, 'f:schedulerName': {}, 'f:securityContext': {}, 'f:terminationGracePeriodSeconds': {},
          },
        },
        manager: 'kube-controller-manager',
        operation: 'Update',
        time: t,
      },
      {
        apiVersion: 'v1',
        fieldsType: 'FieldsV1',
        fieldsV1: { 'f:status': { 'f:conditions': { 'k:{"type":"ContainersReady"}': { '.': {}, 'f:lastProbeTime': {}, 'f:lastTransitionTime': {}, 'f:status': {}, 'f:type': {} }, 'k:{"type":"Initialized"}': { '.': {}, 'f:lastProbeTime': {}, 'f:lastTransitionTime': {}, 'f:status': {}, 'f:type': {} }, 'k:{"type":"Ready"}': { '.': {}, 'f:lastProbeTime': {}, 'f:lastTransitionTime': {}, 'f:status': {}, 'f:type': {} } }, 'f:containerStatuses': {}, 'f:hostIP': {}, 'f:hostIPs': {}, 'f:phase': {}, 'f:podIP': {}, 'f:podIPs': { '.': {}, 'k:{"ip":"10.0.0.1"}': { '.': {}, 'f:ip': {} } }, 'f:startTime': {} } },
        manager: 'kubelet',
        operation: 'Update',
        subresource: 'status',
        time: t,
      },
    ],
  });
  Object.assign(container, {
    env: [{ name: 'LOG_LEVEL', value: 'info' }],
    imagePullPolicy: 'IfNotPresent',
    resources: { limits: { cpu: '500m', memory: '256Mi' }, requests: { cpu: '100m', memory: '128Mi' } },
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
    volumeMounts: [{ mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', name: 'kube-api-access-x', readOnly: true }],
  });
  Object.assign(spec, {
    dnsPolicy: 'ClusterFirst',
    enableServiceLinks: true,
    preemptionPolicy: 'PreemptLowerPriority',
    priority: 0,
    restartPolicy: 'Always',
    schedulerName: 'default-scheduler',
    securityContext: {},
    serviceAccount: 'default',
    serviceAccountName: 'default',
    terminationGracePeriodSeconds: 30,
    tolerations: [
      { effect: 'NoExecute', key: 'node.kubernetes.io/not-ready', operator: 'Exists', tolerationSeconds: 300 },
      { effect: 'NoExecute', key: 'node.kubernetes.io/unreachable', operator: 'Exists', tolerationSeconds: 300 },
    ],
    volumes: [
      {
        name: 'kube-api-access-x',
        projected: {
          defaultMode: 420,
          sources: [
            { serviceAccountToken: { expirationSeconds: 3607, path: 'token' } },
            { configMap: { items: [{ key: 'ca.crt', path: 'ca.crt' }], name: 'kube-root-ca.crt' } },
            { downwardAPI: { items: [{ fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' }, path: 'namespace' }] } },
          ],
        },
      },
    ],
  });
  const cond = (type: string) => ({ lastProbeTime: null, lastTransitionTime: t, status: 'True', type });
  Object.assign(status, {
    conditions: [cond('PodReadyToStartContainers'), cond('Initialized'), cond('Ready'), cond('ContainersReady'), cond('PodScheduled')],
    containerStatuses: [
      {
        containerID: `containerd://${String(i).padStart(64, '0')}`,
        image: String(container['image']),
        imageID: `${String(container['image'])}@sha256:${'ab'.repeat(32)}`,
        lastState: {},
        name: 'main',
        ready: true,
        restartCount: 0,
        started: true,
        state: { running: { startedAt: t } },
        volumeMounts: [{ mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', name: 'kube-api-access-x', readOnly: true, recursiveReadOnly: 'Disabled' }],
      },
    ],
    hostIP: '192.168.0.1',
    hostIPs: [{ ip: '192.168.0.1' }],
    qosClass: 'Burstable',
    startTime: t,
  });
  return o;
}

const cluster = generateCluster({ pods: Number(values.pods), policies: Number(values.policies), seed: Number(values.seed) });
const server = await ApiServerDouble.start({ host: values.host, port: Number(values.port) });
let i = 0;
for (const item of clusterList(cluster).items as Obj[]) {
  const o = item['kind'] === 'Pod' ? realisticPod(item, i++) : item;
  delete (o['metadata'] as Obj)['resourceVersion'];
  server.create(o);
}
writeFileSync(values.kubeconfig, server.kubeconfig());
process.stdout.write(JSON.stringify({ ready: true, url: server.url, objects: server.resourceVersion() }) + '\n');
createInterface({ input: process.stdin }).on('close', () => void server.close().then(() => process.exit(0)));
