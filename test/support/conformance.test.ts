import { describe, expect, it } from 'vitest';
import { cidrContainsIp, parseCidr } from '../../src/model/cidr.ts';
import { normalize } from '../../src/model/normalize.ts';
import type { IpBlockPeer, NodeRecord, PodRecord } from '../../src/model/types.ts';
import {
  CaseRunner,
  STANDARD_PODS,
  cellKey,
  listCaseFiles,
  listCnpCaseFiles,
  loadCase,
  parseCase,
  parseMatrix,
  podIpsOf,
  standardCluster,
  substituteInObject,
  substitutePlaceholders,
} from './conformance.ts';

const files = listCaseFiles();
const caseById = (id: string) => loadCase(files.find((f) => f.includes(`/${id}-`))!);

describe('conformance corpus', () => {
  it('holds the fixture files', () => {
    expect(files.length).toBeGreaterThanOrEqual(16);
  });

  it.each(files.map((f) => [f.split('/').pop()!, f]))('%s loads; every matrix is 9x9 in the standard order; the runner applies it without issues', (_name, file) => {
    const c = loadCase(file);
    expect(c.id).toMatch(/^[0-9]{3}$/);
    expect(c.name.length).toBeGreaterThan(0);
    for (const step of c.steps) {
      expect(step.probes.length).toBeGreaterThan(0);
      for (const probe of step.probes) {
        expect(probe.pods).toEqual(STANDARD_PODS);
        expect(probe.matrix.size).toBe(81);
        for (const from of STANDARD_PODS) for (const to of STANDARD_PODS) expect(probe.matrix.has(cellKey(from, to))).toBe(true);
      }
    }
    const states = [...new CaseRunner(c).steps()];
    expect(states).toHaveLength(c.steps.length);
    for (const s of states) {
      expect(s.issues).toEqual([]);
      expect([...s.model.allPods()]).toHaveLength(9);
      expect(JSON.stringify(s.objects)).not.toContain('${');
    }
  });

  it('reads cells: rows are clients, columns servers', () => {
    const probe = caseById('014').steps[0]!.probes[0]!;
    expect(probe).toMatchObject({ port: 81, protocol: 'TCP' });
    expect(probe.matrix.get(cellKey('x/b', 'x/a'))).toBe(false);
    expect(probe.matrix.get(cellKey('y/b', 'x/a'))).toBe(true);
    expect(probe.matrix.get(cellKey('x/a', 'x/b'))).toBe(true);
  });
});

describe('parseMatrix and parseCase reject malformed input', () => {
  it.each([
    ['a row short of marks', '  x/a x/b\nx/a . .\nx/b .\n', '1 marks for 2 columns'],
    ['a bad mark', '  x/a x/b\nx/a . .\nx/b . o\n', 'neither'],
    ['a missing row', '  x/a x/b\nx/a . .\n', '1 rows for 2 columns'],
    ['a repeated row', '  x/a x/b\nx/a . .\nx/a . .\n', 'repeats'],
  ])('%s', (_name, text, message) => {
    expect(() => parseMatrix(text)).toThrow(message);
  });

  it('names file and field for an unknown change', () => {
    const text = `name: t\nsteps:\n  - changes: [{op: relabel-everything}]\n    probes: [{port: 80, protocol: TCP, matrix: "a\\na ."}]\n`;
    expect(() => parseCase(text, 'case.yaml')).toThrow('case.yaml: steps[0].changes[0].op: unknown change "relabel-everything"');
  });

  it('rejects a bad protocol', () => {
    const text = `name: t\nsteps:\n  - probes: [{port: 80, protocol: ICMP, matrix: "a\\na ."}]\n`;
    expect(() => parseCase(text, 'case.yaml')).toThrow('steps[0].probes[0].protocol');
  });
});

describe('standardCluster', () => {
  const objects = standardCluster();
  const results = objects.map(normalize);

  it('normalizes without issues: 2 nodes, 3 namespaces, 9 pods', () => {
    expect(results.flatMap((r) => r.issues)).toEqual([]);
    expect(results.map((r) => r.ref)).toEqual(['node/node-1', 'node/node-2', 'namespace/x', 'namespace/y', 'namespace/z', ...STANDARD_PODS.map((p) => `pod/${p}`)]);
  });

  it('namespaces carry exactly the corpus labels', () => {
    const ns = results.find((r) => r.ref === 'namespace/y')!.record!;
    expect(ns).toMatchObject({ labels: { 'kubernetes.io/metadata.name': 'y', ns: 'y' } });
  });

  it('pods: label pod=<name>, Running, serve-<port>-<proto> on 80/81 for TCP, UDP, SCTP', () => {
    const pod = results.find((r) => r.ref === 'pod/y/c')!.record as PodRecord;
    expect(pod.labels).toEqual({ pod: 'c' });
    expect(pod.phase).toBe('Running');
    expect(pod.ports).toHaveLength(6);
    expect(pod.ports).toContainEqual({ name: 'serve-81-sctp', containerPort: 81, protocol: 'SCTP' });
    expect(pod.ports).toContainEqual({ name: 'serve-80-udp', containerPort: 80, protocol: 'UDP' });
  });

  it('options restrict protocols and ports', () => {
    const pod = normalize(standardCluster({ protocols: ['TCP', 'UDP'], ports: [80] }).find((o) => o['kind'] === 'Pod')).record as PodRecord;
    expect(pod.ports.map((p) => p.name)).toEqual(['serve-80-tcp', 'serve-80-udp']);
  });

  it('every namespace has pods on both nodes; IPs unique, inside their node podCIDR, deterministic', () => {
    const pods = results.map((r) => r.record).filter((r): r is PodRecord => r?.kind === 'Pod');
    const nodes = new Map(results.map((r) => r.record).filter((r): r is NodeRecord => r?.kind === 'Node').map((n) => [n.name, n]));
    for (const ns of ['x', 'y', 'z']) expect(new Set(pods.filter((p) => p.namespace === ns).map((p) => p.nodeName))).toEqual(new Set(['node-1', 'node-2']));
    const ips = pods.map((p) => p.ips[0]!);
    expect(new Set(ips).size).toBe(9);
    for (const p of pods) expect(cidrContainsIp(parseCidr(nodes.get(p.nodeName!)!.podCIDRs[0]!), p.ips[0]!)).toBe(true);
    expect([...nodes.values()].map((n) => n.internalIPs)).toEqual([['192.168.50.11'], ['192.168.50.12']]);
    expect(podIpsOf(standardCluster())).toEqual(podIpsOf(objects));
    expect(podIpsOf(objects).get('x/a')).toBe('10.244.1.10');
  });
});

describe('placeholders', () => {
  const ips = new Map([
    ['x/b', '10.244.2.10'],
    ['y/b', '172.17.0.5'],
  ]);

  it('replaces ${ip:...} and ${net4:...}', () => {
    expect(substitutePlaceholders('cidr: "${ip:y/b}/32" net: ${net4:x/b} other: ${net4:y/b}', ips)).toBe('cidr: "172.17.0.5/32" net: 0.0.0.0/4 other: 160.0.0.0/4');
    expect(substitutePlaceholders('no placeholder', { 'x/a': '1.2.3.4' })).toBe('no placeholder');
  });

  it('handles IPv6 pod IPs', () => {
    expect(substitutePlaceholders('${net4:v/a}', { 'v/a': 'fd00::1' })).toBe('f000::/4');
  });

  it('throws on an unknown pod or placeholder kind', () => {
    expect(() => substitutePlaceholders('${ip:q/q}', ips)).toThrow('no IP for pod "q/q"');
    expect(() => substitutePlaceholders('${net24:x/b}', ips)).toThrow('unknown kind "net24"');
  });

  it('substitutes inside objects without touching the input', () => {
    const input = { spec: { cidr: '${ip:x/b}/32', list: ['${net4:x/b}', 3] } };
    expect(substituteInObject(input, ips)).toEqual({ spec: { cidr: '10.244.2.10/32', list: ['0.0.0.0/4', 3] } });
    expect(input.spec.cidr).toBe('${ip:x/b}/32');
  });

  it('case 034 and 035: the runner applies the pod IPs of the cluster', () => {
    const runner34 = new CaseRunner(caseById('034'));
    const [s34] = [...runner34.steps()];
    const peer34 = s34!.model.findPolicy('x', 'allow-client-a-via-cidr-egress-rule')!.egress[0]!.peers![0] as IpBlockPeer;
    expect(peer34.cidr.text).toBe(`${runner34.podIps.get('y/b')}/32`);

    const runner35 = new CaseRunner(caseById('035'));
    const [s35] = [...runner35.steps()];
    const peer35 = s35!.model.findPolicy('x', 'allow-client-a-via-cidr-egress-rule')!.egress[0]!.peers![0] as IpBlockPeer;
    expect(peer35.cidr.text).toBe('0.0.0.0/4');
    expect(peer35.except.map((c) => c.text)).toEqual([`${runner35.podIps.get('x/b')}/32`]);
    // The case's expectations assume every pod IP lies inside ${net4:x/b}.
    for (const ip of runner35.podIps.values()) expect(cidrContainsIp(peer35.cidr, ip)).toBe(true);
    expect(JSON.stringify(s35!.applied)).not.toContain('${');
  });
});

describe('CaseRunner: state carries over between steps', () => {
  it('case 020: step 2 replaces the step-1 policy of the same namespace/name', () => {
    const [s1, s2] = [...new CaseRunner(caseById('020')).steps()];
    expect([...s1!.model.allPolicies()].map((p) => [p.name, p.ingress])).toEqual([['allow-all-mutate-to-deny-all', [{}]]]);
    expect([...s2!.model.allPolicies()].map((p) => [p.name, p.ingress, p.policyTypes])).toEqual([['allow-all-mutate-to-deny-all', [], ['Ingress']]]);
    expect(s2!.objects.filter((o) => o['kind'] === 'NetworkPolicy')).toHaveLength(1);
  });

  it('case 022: the policy of step 1 stays, the pod label change of step 2 applies', () => {
    const [s1, s2] = [...new CaseRunner(caseById('022')).steps()];
    expect(s1!.model.findPod('x', 'b')!.labels).toEqual({ pod: 'b' });
    expect(s2!.step.apply).toEqual([]);
    expect(s2!.model.findPolicy('x', 'allow-client-a-via-pod-selector')).toBeDefined();
    expect(s2!.model.findPod('x', 'b')!.labels).toEqual({ pod: 'b', pod2: 'updated' });
    // Models are per step: the step-1 model still shows the old labels.
    expect(s1!.model.findPod('x', 'b')!.labels).toEqual({ pod: 'b' });
  });

  it('runs are independent: the cluster objects are never mutated', () => {
    const cluster = standardCluster();
    const before = JSON.stringify(cluster);
    const c = caseById('022');
    const first = [...new CaseRunner(c, { cluster }).steps()].map((s) => s.model.findPod('x', 'b')!.labels);
    const second = [...new CaseRunner(c, { cluster }).steps()].map((s) => s.model.findPod('x', 'b')!.labels);
    expect(second).toEqual(first);
    expect(JSON.stringify(cluster)).toBe(before);
  });

  it('label-namespace, delete-policy and delete-all-policies', () => {
    const policy = (name: string) => `      - apiVersion: networking.k8s.io/v1\n        kind: NetworkPolicy\n        metadata: {name: ${name}, namespace: "x"}\n        spec: {podSelector: {}}\n`;
    const probes = `    probes: [{port: 80, protocol: TCP, matrix: "x/a\\nx/a ."}]\n`;
    const text =
      `name: t\nsteps:\n` +
      `  - apply:\n${policy('p1')}${policy('p2')}${probes}` +
      `  - changes:\n      - {op: delete-policy, name: x/p1}\n      - {op: label-namespace, namespace: "y", labels: {kubernetes.io/metadata.name: "y", team: blue}}\n${probes}` +
      `  - changes: [{op: delete-all-policies}]\n${probes}`;
    const [s1, s2, s3] = [...new CaseRunner(parseCase(text, 't.yaml')).steps()];
    expect([...s1!.model.allPolicies()].map((p) => p.name).sort()).toEqual(['p1', 'p2']);
    expect([...s2!.model.allPolicies()].map((p) => p.name)).toEqual(['p2']);
    expect(s2!.model.namespace('y').labels).toEqual({ 'kubernetes.io/metadata.name': 'y', team: 'blue' });
    expect([...s3!.model.allPolicies()]).toEqual([]);
    expect(s3!.model.namespace('y').labels).toEqual({ 'kubernetes.io/metadata.name': 'y', team: 'blue' });
  });

  it('a change naming an unknown object throws with the step', () => {
    const text = `name: t\nsteps:\n  - changes: [{op: label-pod, pod: q/q, labels: {}}]\n    probes: [{port: 80, protocol: TCP, matrix: "x/a\\nx/a ."}]\n`;
    expect(() => [...new CaseRunner(parseCase(text, 't.yaml')).steps()]).toThrow('t.yaml: steps[0]: label-pod: no pod "q/q"');
  });
});

describe('ClusterNetworkPolicy corpus (test/fixtures/conformance-cnp)', () => {
  const cnpFiles = listCnpCaseFiles();

  it('holds the shared cases and our transcriptions', () => {
    const names = cnpFiles.map((f) => f.split('/').pop());
    for (const shared of ['c01-admin-ingress-tcp.yaml', 'c05-admin-np-baseline-integration.yaml', 'c08-baseline-ingress-tcp.yaml', 'o09-egress-accept-does-not-open-ingress.yaml']) expect(names).toContain(shared);
    expect(cnpFiles.length).toBeGreaterThanOrEqual(4);
  });

  it.each(cnpFiles.map((f) => [f.split('/').pop()!, f]))('%s loads; matrices are complete; every assert is a cell its matrix agrees with; no issues', (_name, file) => {
    const c = loadCase(file);
    expect(c.id).toMatch(/^[a-z][0-9]{2}$/);
    const states = [...new CaseRunner(c).steps()];
    const pods = [...states[0]!.model.allPods()].map((p) => `${p.namespace}/${p.name}`).sort();
    for (const s of states) {
      expect(s.issues).toEqual([]);
      expect(JSON.stringify(s.objects)).not.toContain('${');
      for (const probe of s.probes) {
        expect([...probe.pods].sort()).toEqual(pods);
        expect(probe.matrix.size).toBe(pods.length * pods.length);
      }
      for (const a of s.step.asserts) {
        expect(a.from, a.text).not.toBe(a.to);
        const probe = s.probes.find((p) => p.port === a.port && p.protocol === a.protocol);
        expect(probe, `${file}: steps[${s.index}]: no probe for ${a.text}`).toBeDefined();
        expect(probe!.matrix.get(cellKey(a.from, a.to)), `${file}: steps[${s.index}]: ${a.text}`).toBe(a.allowed);
      }
    }
  });

  it('a case with its own model: nodes, namespaces with their labels, pods with ports', () => {
    const c = loadCase(cnpFiles.find((f) => f.includes('/c01-'))!);
    const [s] = [...new CaseRunner(c).steps()];
    expect([...s!.model.allNodes()].map((n) => [n.name, n.podCIDRs, n.internalIPs])).toEqual([
      ['node-1', ['10.244.1.0/24'], ['192.168.50.11']],
      ['node-2', ['10.244.2.0/24'], ['192.168.50.12']],
    ]);
    expect(s!.model.namespace('g').labels).toEqual({ 'conformance-house': 'gryffindor', 'kubernetes.io/metadata.name': 'g' });
    const ga = s!.model.findPod('g', 'a')!;
    expect([ga.nodeName, ga.ips, ga.labels]).toEqual(['node-1', ['10.244.1.10'], { 'conformance-house': 'gryffindor' }]);
    expect(ga.ports).toContainEqual({ name: 'web', containerPort: 80, protocol: 'TCP' });
    expect(ga.ports).toContainEqual({ containerPort: 5353, protocol: 'UDP' });
    expect(s!.model.findClusterPolicy('ingress-tcp')).toMatchObject({ tier: 'Admin', priority: 3 });
    expect(s!.step.asserts[0]).toEqual({ from: 'r/a', to: 'g/a', protocol: 'TCP', port: 80, allowed: true, text: 'r/a -> g/a TCP/80 allow' });
  });

  it('apply replaces a ClusterNetworkPolicy by name; delete-policy takes a bare name for it, namespace/name for a NetworkPolicy', () => {
    const cnp = (name: string, priority: number) =>
      `      - apiVersion: policy.networking.k8s.io/v1alpha2\n        kind: ClusterNetworkPolicy\n        metadata: {name: ${name}}\n        spec: {tier: Admin, priority: ${priority}, subject: {namespaces: {}}, ingress: [{action: Deny, from: [{namespaces: {}}]}]}\n`;
    const np = `      - apiVersion: networking.k8s.io/v1\n        kind: NetworkPolicy\n        metadata: {name: p, namespace: "x"}\n        spec: {podSelector: {}}\n`;
    const probes = `    probes: [{port: 80, protocol: TCP, matrix: "x/a\\nx/a ."}]\n`;
    const text =
      `name: t\nsteps:\n` +
      `  - apply:\n${cnp('wall', 5)}${cnp('other', 6)}${np}${probes}    asserts: ["x/a -> x/b TCP/80 deny"]\n` +
      `  - apply:\n${cnp('wall', 40)}${probes}` +
      `  - changes: [{op: delete-policy, name: wall}, {op: delete-policy, name: x/p}]\n${probes}` +
      `  - changes: [{op: delete-all-policies}]\n${probes}`;
    const [s1, s2, s3, s4] = [...new CaseRunner(parseCase(text, 't.yaml')).steps()];
    expect(s1!.step.asserts.map((a) => [a.from, a.to, a.allowed])).toEqual([['x/a', 'x/b', false]]);
    expect([...s1!.model.allClusterPolicies()].map((c) => c.name).sort()).toEqual(['other', 'wall']);
    expect(s2!.model.findClusterPolicy('wall')!.priority).toBe(40);
    expect(s2!.objects.filter((o) => o['kind'] === 'ClusterNetworkPolicy')).toHaveLength(2);
    expect([...s3!.model.allClusterPolicies()].map((c) => c.name)).toEqual(['other']);
    expect([...s3!.model.allPolicies()]).toEqual([]);
    expect([...s4!.model.allClusterPolicies()]).toEqual([]);
    const bad = `name: t\nsteps:\n  - changes: [{op: delete-policy, name: nope}]\n${probes}`;
    expect(() => [...new CaseRunner(parseCase(bad, 't.yaml')).steps()]).toThrow('delete-policy: no policy "nope"');
  });

  it('rejects a malformed assert, naming the field', () => {
    const text = `name: t\nsteps:\n  - probes: [{port: 80, protocol: TCP, matrix: "a\\na ."}]\n    asserts: ["a to b allowed"]\n`;
    expect(() => parseCase(text, 'case.yaml')).toThrow('case.yaml: steps[0].asserts[0]: expected "SRC -> DST PROTO/PORT allow|deny"');
  });
});
