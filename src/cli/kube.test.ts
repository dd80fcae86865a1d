// policyctl explain / reach / compile against a live cluster (the API server double): the same
// objects give the same output as from manifest files.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import { type ApiServerDouble, type KubeObject, startApiServer } from '../../test/support/apiserver.ts';
import { runCli } from '../../test/support/cli.ts';

const root = new URL('../../', import.meta.url).pathname;
const EXAMPLES = [join(root, 'examples/workloads/cluster.yaml'), join(root, 'examples/policies/shop.yaml')];

let api: ApiServerDouble;
let dir: string;
let kubeconfig: string;
const savedEnv = { KUBECONFIG: process.env.KUBECONFIG, HOME: process.env.HOME };

/** Every object of a manifest file, List items flattened. */
function objectsOf(file: string): KubeObject[] {
  return parseAllDocuments(readFileSync(file, 'utf8')).flatMap((d) => {
    const o = d.toJS() as KubeObject | null;
    if (!o) return [];
    return o.kind === 'List' ? (o.items as KubeObject[]) : [o];
  });
}

beforeEach(async () => {
  api = await startApiServer();
  dir = mkdtempSync(join(tmpdir(), 'policyctl-kube-cli-'));
  kubeconfig = api.writeKubeconfig(dir);
  // No ambient kubeconfig: the tests say where the cluster is.
  delete process.env.KUBECONFIG;
  process.env.HOME = dir;
  for (const f of EXAMPLES) for (const o of objectsOf(f)) api.create(o);
});

afterEach(async () => {
  await api.close();
  rmSync(dir, { recursive: true, force: true });
  for (const [k, v] of Object.entries(savedEnv)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

const run = (argv: string[]) => runCli(argv);

const COMMANDS: [string, string[]][] = [
  ['reach', ['reach']],
  ['reach --port 5432 -o json', ['reach', '--port', '5432', '-o', 'json']],
  ['reach -n shop', ['reach', '-n', 'shop']],
  ['explain', ['explain', 'pod/shop/db']],
  ['explain --from', ['explain', 'pod/shop/db', '--from', 'pod/shop/api']],
  ['explain -o json', ['explain', '-n', 'shop', 'frontend', '--to', 'pod/shop/api', '-o', 'json']],
  ['compile node-1', ['compile', '--node', 'node-1']],
  ['compile node-2 -o json', ['compile', '--node', 'node-2', '-o', 'json']],
];

describe('policyctl against a cluster', () => {
  it.each(COMMANDS)('%s: the cluster gives the output of the same objects as files', async (_name, argv) => {
    // The files: what `kubectl get -A -o yaml` prints for the cluster (uids, defaults and all).
    const dump = join(dir, 'dump.yaml');
    const kinds = ['Namespace', 'Node', 'Pod', 'NetworkPolicy'];
    writeFileSync(dump, stringify({ apiVersion: 'v1', kind: 'List', items: kinds.flatMap((k) => api.list(k)) }));
    const fromFiles = await run([...argv, '-f', dump]);
    const fromCluster = await run([...argv, '--kubeconfig', kubeconfig]);
    expect(fromFiles.code, fromFiles.err).toBe(0);
    expect(fromCluster.code, fromCluster.err).toBe(0);
    expect(fromCluster.out).toBe(fromFiles.out);
    expect(fromCluster.out.length).toBeGreaterThan(50);
    // The hand-written examples (no uids, no server defaults) give the same verdicts. (explain
    // notes policyTypes left to defaulting, and compile orders per-pod rules by uid.)
    if (argv[0] === 'reach') expect(fromCluster.out).toBe((await run([...argv, ...EXAMPLES.flatMap((f) => ['-f', f])])).out);
  });

  it('without -f and without flags, reads the default kubeconfig (KUBECONFIG, then ~/.kube/config)', async () => {
    const byFlag = await run(['reach', '--kubeconfig', kubeconfig]);
    process.env.KUBECONFIG = kubeconfig;
    const byEnv = await run(['reach']);
    expect(byEnv).toEqual(byFlag);
    delete process.env.KUBECONFIG;
    const { mkdirSync, copyFileSync } = await import('node:fs');
    mkdirSync(join(dir, '.kube'));
    copyFileSync(kubeconfig, join(dir, '.kube', 'config'));
    expect(await run(['reach', '-A'])).toEqual(byFlag);
  });

  it('no -f and no kubeconfig anywhere: a usage error naming both ways', async () => {
    const r = await run(['reach']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/give -f FILE.*--kubeconfig/);
  });

  it('--context picks a context; an unknown one is an error naming the known ones', async () => {
    expect((await run(['reach', '--kubeconfig', kubeconfig, '--context', 'apiserver-double'])).code).toBe(0);
    const r = await run(['reach', '--kubeconfig', kubeconfig, '--context', 'nope']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/context "nope" is not in the kubeconfig \(it has: apiserver-double\)/);
  });

  it('-A and -n together are a usage error; -f with --kubeconfig too', async () => {
    expect((await run(['reach', '-A', '-n', 'shop', '--kubeconfig', kubeconfig])).code).toBe(2);
    expect((await run(['reach', '-f', EXAMPLES[0]!, '--kubeconfig', kubeconfig])).code).toBe(2);
  });

  it('an unreachable API server fails the command with the reason', async () => {
    await api.setUnavailable(true, 'refuse');
    const r = await run(['reach', '--kubeconfig', kubeconfig]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/cannot list \w+ from the API server http:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/);
  });

  it('invalid policies in the cluster are reported like invalid files, and --strict exits 3', async () => {
    api.create({
      kind: 'NetworkPolicy',
      metadata: { namespace: 'shop', name: 'bad' },
      spec: { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['192.168.0.0/16'] } }] }] },
    });
    const r = await run(['explain', 'pod/shop/db', '--kubeconfig', kubeconfig, '--strict']);
    expect(r.code).toBe(3);
    expect(r.err).toContain('error: networkpolicy/shop/bad: spec.ingress[0].from[0].ipBlock.except[0]: must be a strict subset of 10.0.0.0/8 (it lies outside) (got "192.168.0.0/16")');
    expect(r.err).toContain('note: invalid NetworkPolicies shop/bad are enforced fail-closed');
    expect(r.out).toContain('shop/bad');
  });
});
