// Fuzz: mutated objects of every kind (Pod, Namespace, Node, NetworkPolicy, and Lists of them),
// written as YAML or JSON, through the loader, the model, the compiler and the renderer.
// Properties:
// 1. nothing throws past the loader's diagnostics (parse, buildModel, compile, render);
// 2. reading item by item gives exactly what one whole parse gives (load.ts);
// 3. every payload is one the kernel's tools accept: strict patterns of what `ipset restore`
//    and `iptables-restore` take (names, entries, comments), and the test tracer parses it;
// 4. every object accepted without a diagnostic satisfies the API server's validation rules
//    (names, labels, pod addresses) that the enforcer relies on.
//
// CI runs a small fixed-seed sample; a nightly run sets FUZZ_RUNS=10000. A failure prints the
// seed and the path: replay with FUZZ_SEED=<seed> (and FUZZ_PATH=<path> for the one case).

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { compile } from '../../src/compiler/compile.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../../src/sync/render.ts';
import { buildModel, formatDiagnostic, parseManifests } from '../../src/manifests/load.ts';
import { nonUnicastIPv4 } from '../../src/model/normalize.ts';
import type { ObjectRecord } from '../../src/model/types.ts';
import { refOf } from '../../src/model/types.ts';
import { dns1123LabelErrors, dns1123SubdomainErrors, labelKeyErrors, labelValueErrors } from '../../src/model/validation.ts';
import { parseIpsetRestore, parseIptablesRestore } from '../support/tracer.ts';

const RUNS = Number(process.env.FUZZ_RUNS ?? 400);
const SEED = Number(process.env.FUZZ_SEED ?? 20261130);
const PATH = process.env.FUZZ_PATH;

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const BASE: Record<string, Json> = {
  namespace: { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { team: 'a' } } },
  node: { apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1' }, spec: { podCIDR: '10.244.1.0/24' }, status: { addresses: [{ type: 'InternalIP', address: '192.168.1.1' }] } },
  pod: {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web', namespace: 'shop', uid: 'u-web', labels: { app: 'web' } },
    spec: { nodeName: 'n1', containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }] }] },
    status: { phase: 'Running', podIP: '10.244.1.10', podIPs: [{ ip: '10.244.1.10' }] },
  },
  client: {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'client', namespace: 'shop', uid: 'u-client', labels: { app: 'client' } },
    spec: { nodeName: 'n1' },
    status: { phase: 'Running', podIP: '10.244.1.11' },
  },
  policy: {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: 'allow', namespace: 'shop' },
    spec: {
      podSelector: { matchLabels: { app: 'web' } },
      policyTypes: ['Ingress', 'Egress'],
      ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['client'] }] } }, { ipBlock: { cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] } }], ports: [{ port: 'http' }, { port: 1000, endPort: 2000, protocol: 'UDP' }] }],
      egress: [{ to: [{ namespaceSelector: { matchLabels: { team: 'a' } } }], ports: [{ port: 'http', protocol: 'TCP' }] }],
    },
  },
};

/** Values a hostile or careless author writes. */
const hostile: fc.Arbitrary<Json> = fc.oneof(
  fc.constantFrom<Json>(
    '',
    '0.0.0.0',
    '255.255.255.255',
    '127.0.0.1',
    '224.0.0.1',
    '10.244.1.300',
    '10.244.1.10',
    'fd00::1',
    '0.0.0.0/0',
    '10.0.0.0/33',
    'x\n-A FORWARD -j ACCEPT',
    'a"b\\c',
    'é\u2028\u202e',
    'v1',
    'networking.k8s.io',
    'Networking.k8s.io/v1',
    'networkpolicy',
    'NetworkPolicy',
    'Pod',
    'List',
    'Ingress',
    'Egress',
    'In',
    'NotIn',
    'Exists',
    'SCTP',
    'http',
    'a'.repeat(300),
    -1,
    0,
    65536,
    1e300,
    1.5,
    true,
    null,
    [],
    {},
  ),
  fc.string({ maxLength: 12 }),
  fc.integer({ min: -2, max: 70000 }),
);

/** A mutation: at a path (chosen by index among the object's paths), replace, delete, or re-case. */
interface Mutation {
  readonly at: number;
  readonly op: 'set' | 'delete' | 'upper' | 'wrap';
  readonly value: Json;
}
const mutationArb: fc.Arbitrary<Mutation> = fc.record({ at: fc.nat(), op: fc.constantFrom('set', 'set', 'delete', 'upper', 'wrap'), value: hostile });

function paths(v: Json, prefix: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  if (Array.isArray(v)) v.forEach((x, i) => (out.push([...prefix, i]), paths(x, [...prefix, i], out)));
  else if (v && typeof v === 'object') for (const k of Object.keys(v)) (out.push([...prefix, k]), paths(v[k]!, [...prefix, k], out));
  return out;
}

function mutate(obj: Json, m: Mutation): Json {
  const copy = structuredClone(obj);
  const all = paths(copy);
  if (all.length === 0) return copy;
  const path = all[m.at % all.length]!;
  let parent = copy as Record<string | number, Json>;
  for (const seg of path.slice(0, -1)) parent = parent[seg] as Record<string | number, Json>;
  const last = path[path.length - 1]!;
  const cur = parent[last];
  if (m.op === 'delete') {
    if (Array.isArray(parent)) parent.splice(last as number, 1);
    else delete parent[last];
  } else if (m.op === 'upper') parent[last] = typeof cur === 'string' ? cur.toUpperCase() : m.value;
  else if (m.op === 'wrap') parent[last] = [cur ?? null];
  else parent[last] = m.value;
  return copy;
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  objects: fc.array(fc.tuple(fc.constantFrom(...Object.keys(BASE)), fc.array(mutationArb, { maxLength: 4 })), { minLength: 1, maxLength: 6 }),
  asList: fc.boolean(),
  json: fc.boolean(),
});

const SET_NAME = /^PCTL-[A-Za-z0-9-]{1,26}$/;
const IP = /(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/.source;
const ENTRY: Record<string, RegExp> = {
  'hash:ip': new RegExp(`^${IP}$`),
  'hash:net': new RegExp(`^${IP}/(?:[1-9]|[12][0-9]|3[0-2])$`),
  'hash:ip,port': new RegExp(`^${IP},(?:tcp|udp|sctp):[0-9]{1,5}$`),
  'hash:net,net': new RegExp(`^${IP}(?:/[0-9]{1,2})?,${IP}(?:/[0-9]{1,2})?$`),
};
const CHAIN = /^PCTL-[A-Za-z0-9-]{1,23}$/;
/** A rule line: only our tokens; the comment and a drop log prefix printable ASCII without quote or backslash. */
const RULE = /^-A (PCTL-[A-Za-z0-9-]{1,23}) (?:[-!A-Za-z0-9.,/:]+ )*?-m comment --comment "([ !#-[\]-~]{1,255})" (?:-[jg] (?:RETURN|DROP|PCTL-[A-Za-z0-9-]{1,23})|-j NFLOG --nflog-prefix "PCTL [EI] [ !#-[\]-~]{1,59}" --nflog-group [0-9]{1,5} --nflog-size [0-9]{1,4})$/;

function checkPayload(ipset: string, iptables: string): void {
  const types = new Map<string, string>();
  for (const line of ipset.split('\n').filter(Boolean)) {
    const c = /^create (\S+) (hash:ip|hash:net|hash:ip,port|hash:net,net) family inet hashsize 1024 maxelem [0-9]+$/.exec(line);
    if (c) {
      if (!SET_NAME.test(c[1]!) || c[1]!.length > 31) throw new Error(`bad set name: ${JSON.stringify(line)}`);
      types.set(c[1]!, c[2]!);
      continue;
    }
    const a = /^add (\S+) (\S+)( nomatch)?$/.exec(line);
    if (!a || !types.has(a[1]!) || !ENTRY[types.get(a[1]!)!]!.test(a[2]!)) throw new Error(`ipset restore would refuse: ${JSON.stringify(line)}`);
    const ip = a[2]!.split(/[,/]/)[0]!;
    if (types.get(a[1]!) === 'hash:ip' && nonUnicastIPv4(ip)) throw new Error(`a non-unicast address in a set: ${JSON.stringify(line)}`);
  }
  for (const line of iptables.split('\n').filter(Boolean)) {
    if (line === '*filter' || line === 'COMMIT') continue;
    if (line.startsWith(':')) {
      if (!/^:(\S+) - \[0:0\]$/.test(line) || !CHAIN.test(line.slice(1).split(' ')[0]!)) throw new Error(`bad chain: ${JSON.stringify(line)}`);
      continue;
    }
    if (line.startsWith('-I ')) {
      if (!/^-I (FORWARD|INPUT) 1 -m comment --comment "[ -!#-[\]-~]+" -j PCTL-[A-Z]+$/.test(line)) throw new Error(`bad hook: ${JSON.stringify(line)}`);
      continue;
    }
    if (!RULE.test(line)) throw new Error(`iptables-restore would refuse or misread: ${JSON.stringify(line)}`);
  }
  // And the tracer, which refuses what the real tools refuse, parses both.
  parseIptablesRestore(`*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n`);
  parseIptablesRestore(iptables, { base: parseIptablesRestore(`*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n`), noflush: true });
  parseIpsetRestore(ipset);
}

/** The validation rules an object accepted without any diagnostic must satisfy. */
function validationErrors(r: ObjectRecord): string[] {
  const errs: string[] = [];
  const labels = (l: Readonly<Record<string, string>>) => {
    for (const [k, v] of Object.entries(l)) errs.push(...labelKeyErrors(k), ...labelValueErrors(v));
  };
  if (r.kind === 'Namespace') {
    errs.push(...dns1123LabelErrors(r.name));
    labels(r.labels);
  } else if (r.kind === 'Node') errs.push(...dns1123SubdomainErrors(r.name));
  else if (r.kind === 'Pod') {
    errs.push(...dns1123SubdomainErrors(r.name), ...dns1123LabelErrors(r.namespace));
    labels(r.labels);
    for (const ip of r.ips) if (nonUnicastIPv4(ip)) errs.push(`pod address ${ip}`);
    if (r.ips.length > 1) errs.push('two IPv4 addresses');
  } else if (r.kind === 'NetworkPolicy') {
    errs.push(...dns1123SubdomainErrors(r.name), ...dns1123LabelErrors(r.namespace));
    if (r.issues.length) errs.push('issues on a policy without diagnostics');
    for (const q of r.podSelector.requirements) errs.push(...labelKeyErrors(q.key), ...q.values.flatMap(labelValueErrors));
  }
  return errs;
}

interface Case {
  readonly objects: [string, Mutation[]][];
  readonly asList: boolean;
  readonly json: boolean;
}

function runCase(c: Case): void {
  const objs = c.objects.map(([k, ms]) => ms.reduce<Json>((o, m) => mutate(o, m), BASE[k]!));
  const docs = c.asList ? [{ apiVersion: 'v1', kind: 'List', items: objs }] : objs;
  const text = c.json ? docs.map((d) => JSON.stringify(d, null, 4)).join('\n---\n') : docs.map((d) => stringify(d)).join('---\n');
  const whole = parseManifests(text, 'f.yaml', { splitAbove: Infinity });
  const split = parseManifests(text, 'f.yaml', { splitAbove: 0 });
  expect(split).toEqual(whole);
  const lines = whole.diagnostics.map(formatDiagnostic);
  for (const l of lines) if (l.includes('\n') || l.includes('\u2028')) throw new Error(`a diagnostic spans lines: ${JSON.stringify(l)}`);
  const flagged = new Set(whole.diagnostics.map((d) => d.ref));
  for (const o of whole.objects) {
    if (flagged.has(refOf(o.record))) continue;
    const errs = validationErrors(o.record);
    if (errs.length) throw new Error(`accepted without a diagnostic but invalid: ${refOf(o.record)}: ${errs.join('; ')}`);
  }
  const model = buildModel(whole);
  for (const node of ['n1', 'n2']) {
    const rs = compile(model, node);
    checkPayload(renderIpsetRestore(rs.sets), renderIptablesRestore(rs));
  }
}

describe('fuzz: mutated manifests through loader, normalizer, compiler and renderer', () => {
  it(`never throws, never emits a payload the kernel refuses, accepts only valid objects (${RUNS} cases, seed ${SEED})`, () => {
    const result = fc.check(fc.property(caseArb, (c) => runCase(c)), { numRuns: RUNS, seed: SEED, ...(PATH ? { path: PATH } : {}) });
    if (result.failed) {
      throw new Error(
        `fuzz failed with seed ${result.seed} (replay: FUZZ_SEED=${result.seed} FUZZ_PATH=${result.counterexamplePath})\ncounterexample: ${JSON.stringify(result.counterexample)}\n${result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance)}`,
      );
    }
    expect(result.numRuns).toBe(PATH ? 1 : RUNS);
  });
});
