import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { EVERYTHING } from '../model/selector.ts';
import type { PolicyRecord } from '../model/types.ts';
import { refOf } from '../model/types.ts';
import { STDIN_NAME, buildModel, fieldPathSegments, formatDiagnostic, loadManifests, parseManifests, readManifestFile } from './load.ts';

// A way to make reading one object throw (a bug, in the field): normalize throws for a
// Namespace named `throws`, and behaves as written for everything else.
vi.mock('../model/normalize.ts', async (importOriginal) => {
  const real = await importOriginal<typeof import('../model/normalize.ts')>();
  return {
    ...real,
    normalize: (obj: unknown) => {
      const meta = (obj as { metadata?: { name?: unknown } } | null)?.metadata;
      if (meta?.name === 'throws') throw new RangeError('Maximum call stack size exceeded');
      return real.normalize(obj);
    },
  };
});

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

  it('a pod with a bad field is kept with a warning; a refused address is an error and leaves it without one', () => {
    const bad = parseManifests(`apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec:\n  hostNetwork: maybe\n`, 'p.yaml');
    expect(bad.objects).toHaveLength(1);
    expect(bad.diagnostics.map(formatDiagnostic)).toEqual(['p.yaml:5: warning: pod/x/a: spec.hostNetwork: must be true or false; read as false (got "maybe")']);
    const r = parseManifests(pod('x', 'a', '10.0.0.300'), 'p.yaml');
    expect(r.objects).toHaveLength(1);
    expect(r.objects[0]!.record).toMatchObject({ ips: [] });
    expect(r.diagnostics.map(formatDiagnostic)).toEqual(['p.yaml:9: pod/x/a: status.podIP: not a valid IPv4 address; the pod gets no address (in no allow set) until it is fixed (got "10.0.0.300")']);
  });

  it('label keys with dots and slashes resolve to their line', () => {
    const r = parseManifests(`apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels:\n    app.kubernetes.io/name: "bad value"\n`, 'p.yaml');
    expect(r.diagnostics[0]).toMatchObject({ line: 6, field: 'metadata.labels[app.kubernetes.io/name]' });
  });
});

describe('buildModel and duplicates', () => {
  it('upserts every record; the same object read twice: the later wins, with a warning', async () => {
    const a = await write('dup/a.yaml', `${pod('x', 'a', '10.0.0.1')}---\n${ns('x')}`);
    const b = await write('dup/b.yaml', pod('x', 'a', '10.0.0.2'));
    const r = await loadManifests([a, b]);
    expect(r.diagnostics.map(formatDiagnostic)).toEqual([`${b}:1: warning: pod/x/a: defined again (same UID "x/a") after ${a}:1; this later object replaces it`]);
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

describe('big Lists, read item by item', () => {
  // Every way a List can be written: the item-by-item reading (splitAbove 0) must give exactly
  // what one parse of the whole document gives, objects and diagnostics alike.
  const item = (name: string, extra = '') => `- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: ${name}\n    namespace: x\n${extra}  status:\n    podIP: 10.0.0.${name.length}\n`;
  const cases: Record<string, string> = {
    'kubectl yaml': `apiVersion: v1\nitems:\n${item('a')}${item('bb')}kind: List\nmetadata:\n  resourceVersion: ""\n`,
    'indented entries and comments': `apiVersion: v1\nkind: List\nitems:\n  # first\n  - {apiVersion: v1, kind: Namespace, metadata: {name: x}}\n\n  - apiVersion: v1\n    kind: Namespace\n    metadata:\n      name: "y"\n# a comment at column 0\n  - apiVersion: v1\n    kind: Pod\n    metadata: {name: p, namespace: x, labels: {"bad key!": v}}\n`,
    'crlf': `apiVersion: v1\r\nkind: List\r\nitems:\r\n- apiVersion: v1\r\n  kind: Namespace\r\n  metadata:\r\n    name: x\r\n`,
    'explicit document and block scalars': `---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: x\n    annotations:\n      note: |\n        - not an item\n        items:\n- kind: Namespace\n  apiVersion: v1\n  metadata: {name: z}\n...\n`,
    'an alias across items (read whole)': `apiVersion: v1\nkind: List\nitems:\n- &ns {apiVersion: v1, kind: Namespace, metadata: {name: x}}\n- *ns\n`,
    'a syntax error in one item (read whole: the document is skipped)': `apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: x\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: y}\n`,
    'duplicate keys (read whole)': `apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  kind: Namespace\n  metadata: {name: x}\n`,
    'an invalid policy item: field lines': `apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.k8s.io/v1\n  kind: NetworkPolicy\n  metadata: {name: p, namespace: x}\n  spec:\n    podSelector: {}\n    ingress:\n    - ports:\n      - endPort: 90\n`,
    'the API list format: items without kind': `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicyList\nitems:\n- metadata: {name: p, namespace: x}\n  spec: {podSelector: {}}\n`,
    'a misspelled List kind and apiVersion': `apiVersion: v2\nkind: list\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: x}}\n`,
    'no items key at column 0': `{apiVersion: v1, kind: List, items: [{apiVersion: v1, kind: Namespace, metadata: {name: x}}]}\n`,
    'two documents': `apiVersion: v1\nkind: List\nitems:\n${item('a')}---\napiVersion: v1\nkind: List\nitems:\n${item('c')}`,
    'kubectl json': JSON.stringify({ apiVersion: 'v1', items: [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'x' } }, { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'x' }, status: { podIP: '0.0.0.0' } }], kind: 'List', metadata: { resourceVersion: '' } }, null, 4),
    'json with escapes and a duplicate key (read whole)': `{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x\\u0041", "name": "y"}}]}`,
    'json with escaped key equal to another': `{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "n\\u0061me": "y"}}]}`,
    'json nested deeper than the scanner goes': `{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "labels": ${'['.repeat(100)}${']'.repeat(100)}}}]}`,
  };
  it.each(Object.entries(cases))('%s', (_name, text) => {
    const whole = parseManifests(text, 'f.yaml', { splitAbove: Infinity });
    const split = parseManifests(text, 'f.yaml', { splitAbove: 0 });
    expect(split).toEqual(whole);
    expect(whole.objects.length + whole.diagnostics.length).toBeGreaterThan(0);
  });

  it('finds the fields of an invalid item on their own lines', () => {
    const r = parseManifests(cases['an invalid policy item: field lines']!, 'f.yaml', { splitAbove: 0 });
    expect(r.diagnostics.map(formatDiagnostic)).toEqual(['f.yaml:11: networkpolicy/x/p: spec.ingress[0].ports[0].endPort: endPort requires a numeric port (got 90)']);
    const j = parseManifests(cases['kubectl json']!, 'f.json', { splitAbove: 0 });
    expect(j.diagnostics.map(formatDiagnostic)).toEqual([expect.stringMatching(/^f\.json:19: pod\/x\/p: status\.podIP: the unspecified address, not a pod address/)]);
    expect(j.objects.map((o) => o.line)).toEqual([4, 11]);
  });
});

describe('nothing disappears unseen', () => {
  it('a NetworkPolicy with apiVersion v1 or kind networkpolicy: an error naming file, line and value, and it isolates (--strict material)', () => {
    const text = `apiVersion: v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec: {podSelector: {}}\n---\napiVersion: networking.k8s.io/v1\nkind: networkpolicy\nmetadata: {name: deny2, namespace: x}\nspec: {podSelector: {}}\n`;
    const r = parseManifests(text, 'p.yaml');
    expect(r.diagnostics.map(formatDiagnostic)).toEqual([
      'p.yaml:1: networkpolicy/x/deny: apiVersion: unknown apiVersion for NetworkPolicy: expected networking.k8s.io/v1 (got "v1")',
      'p.yaml:7: networkpolicy/x/deny2: kind: not a kind: kinds are singular and case-sensitive (expected NetworkPolicy); read as NetworkPolicy (got "networkpolicy")',
    ]);
    expect(r.diagnostics.every((d) => d.severity === 'error')).toBe(true);
    expect(r.objects.map((o) => (o.record as PolicyRecord).issues.length)).toEqual([1, 1]);
    expect(r.skipped).toEqual([]);
  });

  it('a misspelled List kind is an error; its items still load', () => {
    const r = parseManifests(`apiVersion: v1\nkind: list\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: x}}\n`, 'l.yaml');
    expect(r.objects.map((o) => refOf(o.record))).toEqual(['namespace/x']);
    expect(r.diagnostics.map(formatDiagnostic)).toEqual(['l.yaml:2: list: kind: not a kind: kinds are case-sensitive (expected List); its items are read (got "list")']);
  });

  it('objects sharing a UID are all kept, the shared UID reported', async () => {
    const f = await write('uids.yaml', `apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, uid: u1}\nstatus: {podIP: 10.0.0.1}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: x, uid: u1}\nstatus: {podIP: 10.0.0.2}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a, namespace: x, uid: u1}\nspec: {podSelector: {}}\n`);
    const r = await loadManifests([f]);
    expect(r.diagnostics.map(formatDiagnostic)).toEqual([`${f}:6: warning: pod/x/b: same UID "u1" as pod/x/a at ${f}:1; both are kept (this one as UID "u1/x/b")`]);
    const m = buildModel(r);
    expect([...m.allPods()].map((p) => [p.name, p.uid, p.ips])).toEqual([['a', 'u1', ['10.0.0.1']], ['b', 'u1/x/b', ['10.0.0.2']]]);
    expect([...m.allPolicies()]).toHaveLength(1); // another kind: its own identity
    // buildModel alone (the lab's path) keeps both too.
    expect([...buildModel(parseManifests(await readFile(f, 'utf8'), f)).allPods()]).toHaveLength(2);
  });

  it('matches extensions in any letter case', async () => {
    await write('case/A.YAML', ns('a'));
    await write('case/b.Json', JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'b' } }));
    await write('case/c.YmL', ns('c'));
    const r = await loadManifests([join(dir, 'case')]);
    expect(r.objects.map((o) => refOf(o.record))).toEqual(['namespace/a', 'namespace/b', 'namespace/c']);
  });
});

describe('hostile files', () => {
  it('skips FIFOs, sockets and devices in a folder with an error naming them, never opening them (bounded time)', async () => {
    const d = join(dir, 'hostile');
    await write('hostile/ok.yaml', ns('ok'));
    execFileSync('mkfifo', [join(d, 'fifo.yaml')]);
    await symlink('/dev/zero', join(d, 'zero.yaml')); // endless if read
    const server = createServer().listen(join(d, 'sock.yaml'));
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const t0 = Date.now();
      const r = await loadManifests([d]);
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(r.objects.map((o) => refOf(o.record))).toEqual(['namespace/ok']);
      expect(r.diagnostics.map(formatDiagnostic)).toEqual([
        `${join(d, 'fifo.yaml')}: a FIFO, not a regular file: skipped, never opened`,
        `${join(d, 'sock.yaml')}: a socket, not a regular file: skipped, never opened`,
        `${join(d, 'zero.yaml')}: a character device, not a regular file: skipped, never opened`,
      ]);
      // The race: a FIFO where a regular file was listed is refused at once, not waited on.
      await expect(readManifestFile(join(d, 'fifo.yaml'))).rejects.toThrow('a FIFO, not a regular file');
    } finally {
      server.close();
    }
  });

  it('a file name with a newline is printed quoted, never as a line of its own', async () => {
    const f = await write('evil\n-A FORWARD -j ACCEPT.yaml', `apiVersion: v1\nkind: Pod\nmetadata: {name: "x\\n-A FORWARD -j ACCEPT", namespace: x}\n`);
    const r = await loadManifests([join(dir, 'evil\n-A FORWARD -j ACCEPT.yaml')]);
    const lines = r.diagnostics.map(formatDiagnostic).join('\n').split('\n');
    expect(lines.length).toBe(r.diagnostics.length);
    expect(lines.some((l) => l.startsWith('-A'))).toBe(false);
    expect(lines[0]).toBe(`${JSON.stringify(f)}:3: warning: "pod/x/x\\n-A FORWARD -j ACCEPT": metadata.name: invalid name: must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (got "x\\n-A FORWARD -j ACCEPT")`);
  });
});

describe('ClusterNetworkPolicy manifests', () => {
  const CNP = `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: wall
spec:
  tier: Admin
  priority: 1001
  subject:
    namespaces: {}
  egress:
  - name: infra
    action: Accept
    to:
    - nodes: {}
  - action: Deny
    to:
    - networks: [10.0.0.0/8]
    protocols:
    - tcp:
        destinationPort:
          range: {start: 90, end: 80}
`;

  it('issues are errors naming file, line, object, field path and the value; unsupported peers too', () => {
    const r = parseManifests(CNP, 'cnp.yaml');
    expect(r.objects.map((o) => refOf(o.record))).toEqual(['clusternetworkpolicy/wall']);
    expect(r.diagnostics.map(formatDiagnostic)).toEqual([
      'cnp.yaml:7: clusternetworkpolicy/wall: spec.priority: must be between 0 and 1000, inclusive (got 1001)',
      'cnp.yaml:21: clusternetworkpolicy/wall: spec.egress[1].protocols[0].tcp.destinationPort.range: start (90) must be less than end (80) (got {"start":90,"end":80})',
      'cnp.yaml:14: clusternetworkpolicy/wall: spec.egress[0].to[0]: nodes peers are experimental and not supported by policyctl: its rule fails closed (got {"nodes":{}})',
    ]);
    expect(r.diagnostics.every((d) => d.severity === 'error')).toBe(true);
  });

  it('a ClusterNetworkPolicyList of the right apiVersion loads its items without an envelope error', () => {
    const list = `apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicyList\nitems:\n- metadata: {name: a}\n  spec: {tier: Baseline, priority: 5, subject: {namespaces: {}}}\n`;
    const r = parseManifests(list, 'l.yaml');
    expect(r.diagnostics).toEqual([]);
    expect(buildModel(r).findClusterPolicy('a')).toMatchObject({ tier: 'Baseline', priority: 5 });
  });
});

describe('values that contain themselves (YAML aliases to a parent)', () => {
  const LOOP = `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: loop}\ndata: &a {x: *a}\n`;
  const DENY = `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: prod}\nspec: {podSelector: {}}\n`;

  it('a cyclic value is an error naming file, line, object and field; the document is skipped, the others and later files load', async () => {
    const f = await write('cyclic/a.yaml', `${LOOP}---\n${ns('after')}`);
    const later = await write('cyclic/b.yaml', DENY);
    const r = await loadManifests([join(dir, 'cyclic')]);
    expect(r.diagnostics.map(formatDiagnostic)).toEqual([`${f}:4: configmap/loop: data.x: an alias refers to its own parent: cyclic values are not supported; document skipped (got "*a")`]);
    expect(r.diagnostics[0]).toMatchObject({ severity: 'error', ref: 'configmap/loop', field: 'data.x' });
    expect(r.objects.map((o) => [o.file, refOf(o.record)])).toEqual([
      [f, 'namespace/after'],
      [later, 'networkpolicy/prod/deny-all'],
    ]);
    expect(r.skipped).toEqual([{ file: f, line: 1, ref: 'configmap/loop', kind: 'ConfigMap' }]);
    expect(r.unread).toEqual([{ file: f, index: 0, line: 1, ref: 'configmap/loop', unknown: false }]);
  });

  it('a NetworkPolicy with a cyclic value fails closed for its whole namespace, both directions', () => {
    const r = parseManifests(`apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: cyc, namespace: shop}\nspec: &s\n  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [*s]}]\n`, 'p.yaml');
    expect(r.objects).toHaveLength(1);
    const rec = r.objects[0]!.record as PolicyRecord;
    expect(rec).toMatchObject({ namespace: 'shop', name: 'cyc', podSelector: EVERYTHING, policyTypes: ['Ingress', 'Egress'], ingress: [], egress: [] });
    expect(r.diagnostics.map(formatDiagnostic)).toEqual([
      'p.yaml:6: networkpolicy/shop/cyc: spec.ingress[0].from[0]: an alias refers to its own parent: cyclic values are not supported; enforced fail-closed: isolates every pod of namespace "shop" in both directions and allows nothing (the document\'s podSelector and policyTypes cannot be trusted) (got "*s")',
    ]);
    expect(buildModel(r).findPolicy('shop', 'cyc')).toBeDefined();
  });

  it('a cycle inside a List item, also when the List is read item by item; aliases shared without a cycle still load', () => {
    const list = `apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: &m {name: a, labels: {self: *m}}\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: b}\n`;
    for (const splitAbove of [0, undefined]) {
      const r = parseManifests(list, 'l.yaml', splitAbove === undefined ? {} : { splitAbove });
      expect(r.objects.map((o) => refOf(o.record))).toEqual(['namespace/b']);
      expect(r.diagnostics.map(formatDiagnostic)).toEqual(['l.yaml:6: namespace/a: metadata.labels.self: an alias refers to its own parent: cyclic values are not supported; document skipped (got "*m")']);
      expect(r.unread).toMatchObject([{ index: 0, item: 0, ref: 'namespace/a', unknown: true }]);
    }
    const shared = parseManifests(`apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: &l {app: a}, annotations: {copy: *l}}\nspec: {containers: [&c {name: c, ports: [{containerPort: 80}]}, *c, *c]}\n`, 's.yaml');
    expect(shared.diagnostics).toEqual([]);
    expect(shared.objects[0]!.record).toMatchObject({ labels: { app: 'a' }, ports: [{ containerPort: 80 }, { containerPort: 80 }, { containerPort: 80 }] });
  });
});

describe('documents that cannot be parsed', () => {
  const DUP = `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: dup, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: a}}\n  podSelector: {}\n  ingress: [{}]\n`;

  it('a NetworkPolicy with a duplicate key: the syntax error, and a fail-closed record isolating its namespace, saying so', () => {
    const r = parseManifests(`${DUP}---\n${ns('after')}`, 'p.yaml');
    expect(r.diagnostics.map(formatDiagnostic)).toEqual([
      'p.yaml:6: YAML syntax error in document 1, document skipped: Map keys must be unique',
      'p.yaml:1: networkpolicy/shop/dup: YAML syntax error in document 1 (line 6): Map keys must be unique; enforced fail-closed: isolates every pod of namespace "shop" in both directions and allows nothing (the document\'s podSelector and policyTypes cannot be trusted)',
    ]);
    expect(r.diagnostics.every((d) => d.severity === 'error')).toBe(true);
    expect(r.objects.map((o) => [refOf(o.record), o.unreadable])).toEqual([
      ['networkpolicy/shop/dup', true],
      ['namespace/after', undefined],
    ]);
    expect(r.objects[0]!.record).toMatchObject({ podSelector: EVERYTHING, policyTypes: ['Ingress', 'Egress'], ingress: [], egress: [] });
    expect(r.unread).toEqual([{ file: 'p.yaml', index: 0, line: 1, ref: 'networkpolicy/shop/dup', unknown: false }]);
  });

  it('a NetworkPolicy whose metadata is what broke, or a broken List: nothing made up, listed as unknown', () => {
    const r = parseManifests(`apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n   namespace: x\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: [}}\n`, 'p.yaml');
    expect(r.objects).toEqual([]);
    expect(r.unread.map((u) => [u.index, u.ref, u.unknown])).toEqual([
      [0, 'networkpolicy/<unknown>/<unnamed>', true],
      [1, 'list', true],
    ]);
    expect(r.diagnostics.filter((d) => d.ref !== undefined).map(formatDiagnostic)).toEqual([
      'p.yaml:1: networkpolicy/<unknown>/<unnamed>: YAML syntax error in document 1 (line 4): Nested mappings are not allowed in compact mappings; not enforced: its namespace cannot be read',
    ]);
  });

  it('a broken document of another kind is skipped with its syntax error alone', () => {
    const r = parseManifests(`apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: 1, a: 2}\n`, 'c.yaml');
    expect(r.diagnostics.map(formatDiagnostic)).toEqual(['c.yaml:4: YAML syntax error in document 1, document skipped: Map keys must be unique']);
    expect(r.unread).toMatchObject([{ ref: 'configmap/c', unknown: false }]);
  });

  it('a throw while reading one document skips that document alone, naming file and line', async () => {
    const f = await write('throws.yaml', `${ns('before')}---\n${ns('throws')}---\n${ns('after')}`);
    const r = await loadManifests([f]);
    expect(r.objects.map((o) => refOf(o.record))).toEqual(['namespace/before', 'namespace/after']);
    expect(r.diagnostics.map(formatDiagnostic)).toEqual([`${f}:5: cannot read document 2, document skipped: Maximum call stack size exceeded`]);
    expect(r.unread).toEqual([{ file: f, index: 1, line: 5, ref: '<unknown>', unknown: true }]);
  });
});

describe('unknown kinds of our API groups', () => {
  it('AdminNetworkPolicy, BaselineAdminNetworkPolicy and unknown kinds are errors naming file, line, kind and apiVersion; kinds of other groups stay silent', () => {
    const text = [
      `apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: anp}\nspec: {priority: 1, subject: {namespaces: {}}}\n`,
      `apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: default}\n`,
      `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicyy\nmetadata: {name: typo, namespace: x}\n`,
      `apiVersion: networking.k8s.io/v1\nkind: "NetworkPolicy "\nmetadata: {name: space, namespace: x}\nspec: {podSelector: {}}\n`,
      `apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: ing, namespace: x}\n`,
      `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: x}\n`,
      `apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: x}\n`,
      `apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n`,
    ].join('---\n');
    const r = parseManifests(text, 'k.yaml');
    expect(r.diagnostics.map(formatDiagnostic)).toEqual([
      'k.yaml:2: adminnetworkpolicy/anp: kind: unknown kind in apiVersion "policy.networking.k8s.io/v1alpha1": AdminNetworkPolicy is the older API (v1alpha1) that ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) replaces; it is not enforced: rewrite it as a ClusterNetworkPolicy (got "AdminNetworkPolicy")',
      'k.yaml:7: baselineadminnetworkpolicy/default: kind: unknown kind in apiVersion "policy.networking.k8s.io/v1alpha1": BaselineAdminNetworkPolicy is the older API (v1alpha1) that ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) replaces; it is not enforced: rewrite it as a ClusterNetworkPolicy (got "BaselineAdminNetworkPolicy")',
      'k.yaml:11: networkpolicyy/x/typo: kind: unknown kind in apiVersion "networking.k8s.io/v1": not enforced (the kinds enforced are NetworkPolicy (networking.k8s.io/v1) and ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2)) (got "NetworkPolicyy")',
      'k.yaml:15: networkpolicy/x/space: kind: not a kind: kinds hold no spaces or invisible characters (expected NetworkPolicy, in apiVersion "networking.k8s.io/v1"); read as NetworkPolicy (got "NetworkPolicy ")',
    ]);
    expect(r.diagnostics.every((d) => d.severity === 'error')).toBe(true);
    // The one with a space is read as a NetworkPolicy, fail-closed; the others enforce nothing.
    expect(r.objects.map((o) => [refOf(o.record), (o.record as PolicyRecord).issues.length])).toEqual([['networkpolicy/x/space', 1]]);
    expect(r.skipped.map((x) => x.kind)).toEqual(['AdminNetworkPolicy', 'BaselineAdminNetworkPolicy', 'NetworkPolicyy', 'Ingress', 'ConfigMap', 'Deployment', 'Widget']);
  });
});
