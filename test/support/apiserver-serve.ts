// The API server double as a process of its own, for agents in a lab's node namespaces (they
// cannot reach 127.0.0.1 of the test's namespace). Run inside the lab's switch namespace:
//
//   node test/support/apiserver-serve.ts --host 192.168.50.1 --port 6443 --objects DIR --kubeconfig FILE
//
// It serves the Namespaces, Nodes, Pods and NetworkPolicies of the manifests in DIR (created
// through the double, so they get UIDs and resourceVersions), writes a kubeconfig for itself,
// prints `ready`, and runs until signalled.

import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiServerDouble } from './apiserver.ts';

const { values } = parseArgs({ options: { host: { type: 'string' }, port: { type: 'string' }, objects: { type: 'string' }, kubeconfig: { type: 'string' } } });
if (!values.host || !values.port || !values.objects || !values.kubeconfig) {
  process.stderr.write('usage: apiserver-serve.ts --host IP --port N --objects DIR --kubeconfig FILE\n');
  process.exit(2);
}
const server = await ApiServerDouble.start({ host: values.host, port: Number(values.port), bookmarkIntervalMs: 5_000 });
const KINDS = ['Namespace', 'Node', 'Pod', 'NetworkPolicy'];
const objects: Record<string, unknown>[] = [];
for (const f of readdirSync(values.objects).filter((n) => /\.(ya?ml|json)$/.test(n)).sort()) {
  for (const doc of parseAllDocuments(readFileSync(join(values.objects, f), 'utf8'))) {
    const o = doc.toJS() as Record<string, unknown> | null;
    if (!o) continue;
    const items = o['kind'] === 'List' ? (o['items'] as Record<string, unknown>[]) : [o];
    objects.push(...items.filter((i) => KINDS.includes(String(i['kind']))));
  }
}
// Namespaces and Nodes first, as a cluster would have them before its pods.
objects.sort((a, b) => KINDS.indexOf(String(a['kind'])) - KINDS.indexOf(String(b['kind'])));
for (const o of objects) server.create(o);
writeFileSync(values.kubeconfig, server.kubeconfig());
process.stdout.write('ready\n');
process.once('SIGTERM', () => void server.close().then(() => process.exit(0)));
