import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PolicyRecord } from '../model/types.ts';
import { refOf } from '../model/types.ts';
import { STDIN_NAME, buildModel, fieldPathSegments, formatDiagnostic, loadManifests, parseManifests } from './load.ts';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'policyctl-load-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function write(rel: string, text: string): Promise<string> {
  const full = join(dir, rel);
  await mkdir(join(full, '..'), { recursive: true });
  await writeFile(full, text);
  return full;
}

const ns = (name: string) => `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "${name}"\n`;
const pod = (namespace: string, name: string, ip: string) =>
  `apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${name}\n  namespace: "${namespace}"\n  labels:\n    pod: ${name}\nstatus:\n  podIP: ${ip}\n`;

const BAD_POLICY = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: bad
  namespace: "x"
spec:
  podSelector:
    matchLabels:
      app: db
  ingress:
    - ports:
        - endPort: 90
`;

describe('loadManifests', () => {
  it('reads folders recursively, in name order, only manifest extensions, skipping hidden entries', async () => {
    const root = join(dir, 'tree');
    await write('tree/b.yaml', ns('b'));
    await write('tree/a.yml', ns('a'));
    await write('tree/sub/c.json', JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'c' } }));
    await write('tree/sub/deeper/d.yaml', ns('d'));
    await write('tree/notes.txt', ns('ignored'));
    await write('tree/.hidden.yaml', ns('hidden'));
    await write('tree/..2024_01_01/e.yaml', ns('configmap-twin'));
    const r = await loadManifests([root]);
    expect(r.diagnostics).toEqual([]);
    expect(r.objects.map((o) => refOf(o.record))).toEqual(['namespace/a', 'namespace/b', 'namespace/c', 'namespace/d']);
    expect(r.objects[2]!.file).toBe(join(root, 'sub', 'c.json'));
  });

  it('follows symlinked folders without looping', async () => {
    await write('loop/a.yaml', ns('a'));
    await symlink(join(dir, 'loop'), join(dir, 'loop', 'self'));
    const r = await loadManifests([join(dir, 'loop')]);
    expect(r.objects.map((o) => refOf(o.record))).toEqual(['namespace/a']);
  });

  it('reads a named file whatever its extension', async () => {
    const f = await write('named.txt', ns('n'));
    const r = await loadManifests([f]);
    expect(r.objects.map((o) => refOf(o.record))).toEqual(['namespace/n']);
  });

  it('reads stdin for "-", once even when named twice', async () => {
    let calls = 0;
    const stdin = async () => {
      calls++;
      return `${ns('s')}---\n${pod('s', 'a', '10.0.0.1')}`;
    };
    const r = await loadManifests(['-'], { stdin });
    expect(r.objects.map((o) => [o.file, o.index, refOf(o.record)])).toEqual([
      [STDIN_NAME, 0, 'namespace/s'],
      [STDIN_NAME, 1, 'pod/s/a'],
    ]);
    await loadManifests(['-', '-'], { stdin });
    expect(calls).toBe(2);
  });

  it('expands List and *List documents from items', async () => {
    const f = await write(
      'list.yaml',
      `apiVersion: v1
kind: List
items:
  - ${JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'x' } })}
  - ${JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'x' } })}
---
apiVersion: v1
kind: PodList
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: a, namespace: "x"}
  - apiVersion: v1
    kind: Pod
    metadata: {name: b, namespace: "x"}
`,
    );
    const r = await loadManifests([f]);
    expect(r.diagnostics).toEqual([]);
    expect(r.objects.map((o) => [o.index, o.item, o.line, refOf(o.record)])).toEqual([
      [0, 0, 4, 'namespace/x'],
      [1, 0, 10, 'pod/x/a'],
      [1, 1, 13, 'pod/x/b'],
    ]);
    expect(r.skipped).toEqual([{ file: f, line: 5, ref: 'service/x/s', kind: 'Service' }]);
  });

  it('reports a broken document with file and line and loads the others', async () => {
    const f = await write('multi.yaml', `${ns('one')}---\napiVersion: v1\nkind: Namespace\nmetadata: {name: two\n---\n---\n# comment only\n---\n${ns('three')}`);
    const other = await write('other.yaml', ns('four'));
    const r = await loadManifests([f, other]);
    expect(r.objects.map((o) => refOf(o.record))).toEqual(['namespace/one', 'namespace/three', 'namespace/four']);
    expect(r.objects.map((o) => o.index)).toEqual([0, 4, 0]);
    expect(r.diagnostics).toHaveLength(1);
    expect(r.diagnostics[0]).toMatchObject({ severity: 'error', file: f, line: 9 });
    expect(r.diagnostics[0]!.message).toContain('YAML syntax error in document 2');
  });

  it('reads JSON, including tab-indented JSON, with line numbers', async () => {
    const f = await write('pol.json', `{\n\t"apiVersion": "networking.k8s.io/v1",\n\t"kind": "NetworkPolicy",\n\t"metadata": {"name": "p", "namespace": "x"},\n\t"spec": {\n\t\t"podSelector": {},\n\t\t"ingress": [{"ports": [{"port": 0}]}]\n\t}\n}\n`);
    const r = await loadManifests([f]);
    expect(r.objects).toHaveLength(1);
    expect(r.diagnostics.map(formatDiagnostic)).toEqual([`${f}:7: networkpolicy/x/p: spec.ingress[0].ports[0].port: must be between 1 and 65535, inclusive (got 0)`]);
  });

  it('uses YAML 1.2: y, yes, no and on stay strings', () => {
    const r = parseManifests(`apiVersion: v1\nkind: Namespace\nmetadata:\n  name: y\n  labels: {a: yes, b: no, c: on, d: y}\n`, 'f.yaml');
    expect(r.diagnostics).toEqual([]);
    expect(r.objects[0]!.record).toMatchObject({ name: 'y', labels: { a: 'yes', b: 'no', c: 'on', d: 'y' } });
  });

  it('lists skipped kinds and reports objects without kind', async () => {
    const f = await write('mixed.yaml', `apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: "x"}\n---\napiVersion: v1\nmetadata: {name: nokind}\n---\njust a string\n`);
    const r = await loadManifests([f]);
    expect(r.objects).toEqual([]);
    expect(r.skipped).toEqual([{ file: f, line: 1, ref: 'deployment/x/d', kind: 'Deployment' }]);
    expect(r.diagnostics.map(formatDiagnostic)).toEqual([
      `${f}:5: <unknown>/nokind: kind: required field is missing or not a string`,
      `${f}:8: <unknown>: not a Kubernetes object: expected a mapping with apiVersion, kind and metadata (got "just a string")`,
    ]);
  });

  it('an unreadable path is a diagnostic naming it; the other paths still load', async () => {
    const missing = join(dir, 'does-not-exist.yaml');
    const ok = await write('ok.yaml', ns('ok'));
    const r = await loadManifests([missing, ok]);
    expect(r.objects.map((o) => refOf(o.record))).toEqual(['namespace/ok']);
    expect(r.diagnostics).toHaveLength(1);
    expect(r.diagnostics[0]!.file).toBe(missing);
    expect(formatDiagnostic(r.diagnostics[0]!)).toMatch(/^.*does-not-exist\.yaml: cannot read path: ENOENT/);
  });

  it('an empty folder is a warning', async () => {
    await mkdir(join(dir, 'empty'), { recursive: true });
    const r = await loadManifests([join(dir, 'empty')]);
    expect(r.diagnostics.map((d) => d.severity)).toEqual(['warning']);
  });

  it('an invalid policy: one diagnostic per issue with line, and its fail-closed record is kept', async () => {
    const f = await write('policies.yaml', `${ns('x')}---\n${BAD_POLICY}`);
    const r = await loadManifests([f]);
    const pol = r.objects.find((o) => o.record.kind === 'NetworkPolicy')!.record as PolicyRecord;
    expect(pol.issues).toHaveLength(1);
    expect(pol.ingress).toEqual([]);
    expect(pol.podSelector.requirements).toHaveLength(1);
    expect(r.diagnostics.map(formatDiagnostic)).toEqual([`${f}:17: networkpolicy/x/bad: spec.ingress[0].ports[0].endPort: endPort requires a numeric port (got 90)`]);
    expect(r.diagnostics[0]).toMatchObject({ severity: 'error', ref: 'networkpolicy/x/bad', field: 'spec.ingress[0].ports[0].endPort', value: '90' });
  });

  it('a missing field points at the deepest part that exists', () => {
    const r = parseManifests(`apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\nspec:\n  policyTypes: [Ingress]\n`, 'f.yaml');
    expect(r.diagnostics.map(formatDiagnostic)).toEqual(['f.yaml:5: networkpolicy/default/p: spec.podSelector: required field is missing (use {} to select every pod of the namespace)']);
  });

  it('a pod with a bad field is kept with a warning', () => {
    const r = parseManifests(pod('x', 'a', '10.0.0.300'), 'p.yaml');
    expect(r.objects).toHaveLength(1);
    expect(r.diagnostics.map(formatDiagnostic)).toEqual(['p.yaml:9: warning: pod/x/a: status.podIP: not a valid IPv4 address; ignored (got "10.0.0.300")']);
  });

  it('label keys with dots and slashes resolve to their line', () => {
    const r = parseManifests(`apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels:\n    app.kubernetes.io/name: "bad value"\n`, 'p.yaml');
    expect(r.diagnostics[0]).toMatchObject({ line: 6, field: 'metadata.labels[app.kubernetes.io/name]' });
  });
});

describe('buildModel and duplicates', () => {
  it('upserts every record; of two objects with one UID the later wins, with a warning', async () => {
    const a = await write('dup/a.yaml', `${pod('x', 'a', '10.0.0.1')}---\n${ns('x')}`);
    const b = await write('dup/b.yaml', pod('x', 'a', '10.0.0.2'));
    const r = await loadManifests([a, b]);
    expect(r.diagnostics.map(formatDiagnostic)).toEqual([`${b}:1: warning: pod/x/a: same UID "x/a" as pod/x/a at ${a}:1; this later object replaces it`]);
    const m = buildModel(r);
    expect(m.findPod('x', 'a')!.ips).toEqual(['10.0.0.2']);
    expect([...m.allPods()]).toHaveLength(1);
    expect(m.namespace('x').implicit).toBeUndefined();
  });

  it('parseManifests alone does not look across objects', () => {
    const r = parseManifests(`${ns('x')}---\napiVersion: v1\nkind: Namespace\nmetadata: {name: "x", uid: u-1}\n`, 'n.yaml');
    expect(r.diagnostics).toEqual([]);
  });

  it('loadManifests warns when one name has two UIDs', async () => {
    const f = await write('two-uids.yaml', `${ns('x')}---\napiVersion: v1\nkind: Namespace\nmetadata: {name: "x", uid: u-1}\n`);
    const r = await loadManifests([f]);
    expect(r.diagnostics.map((d) => d.message)).toEqual([`also defined at ${f}:1 with another UID; both are kept`]);
  });
});

describe('fieldPathSegments', () => {
  it.each([
    ['spec.ingress[0].from[1].ipBlock.except[0]', ['spec', 'ingress', 0, 'from', 1, 'ipBlock', 'except', 0]],
    ['spec.podSelector.matchLabels[app.kubernetes.io/name]', ['spec', 'podSelector', 'matchLabels', 'app.kubernetes.io/name']],
    ['', []],
  ])('%s', (field, segs) => {
    expect(fieldPathSegments(field)).toEqual(segs);
  });
});
