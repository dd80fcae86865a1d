// Conformance cases (test/fixtures/conformance, format in UPSTREAM-README.md; and the
// ClusterNetworkPolicy cases of test/fixtures/conformance-cnp, format additions in its README) as
// test data: parsing a case, the standard cluster every case starts from, placeholder
// substitution, and a runner that yields the model after each step.
//
// Invariants:
// - Every case starts from `standardCluster()` (or the cluster of its own `model:`) with no
//   policy; state carries over between the steps of one case and never between cases (each
//   runner copies the cluster objects).
// - `apply` creates or replaces by kind/namespace/name, in the listed order (cases 020, 036).
// - Matrices are keyed `from|to` with names `ns/pod`; true = the connection must succeed. The
//   diagonal is upstream's value but informational only (README: ignoreLoopback).

import { readFileSync, readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { parseCidr } from '../../src/model/cidr.ts';
import { normalize } from '../../src/model/normalize.ts';
import { Model } from '../../src/model/store.ts';
import type { Protocol, ValidationIssue } from '../../src/model/types.ts';
import { PROTOCOLS } from '../../src/model/types.ts';

export const CONFORMANCE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'conformance');
export const CNP_CONFORMANCE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'conformance-cnp');

export const STANDARD_NAMESPACES = ['x', 'y', 'z'] as const;
export const STANDARD_POD_NAMES = ['a', 'b', 'c'] as const;
/** `x/a` ... `z/c`: the row and column order of every matrix. */
export const STANDARD_PODS: readonly string[] = STANDARD_NAMESPACES.flatMap((ns) => STANDARD_POD_NAMES.map((p) => `${ns}/${p}`));

export interface Probe {
  readonly port: number;
  readonly protocol: Protocol;
  /** Column order of the matrix as written (always STANDARD_PODS in the corpus). */
  readonly pods: readonly string[];
  /** `from|to` -> whether the connection must succeed. */
  readonly matrix: ReadonlyMap<string, boolean>;
}

export type Change =
  | { readonly op: 'label-namespace'; readonly namespace: string; readonly labels: Readonly<Record<string, string>> }
  | { readonly op: 'label-pod'; readonly pod: string; readonly labels: Readonly<Record<string, string>> }
  /** `namespace/name`: a NetworkPolicy; a bare name: a ClusterNetworkPolicy. */
  | { readonly op: 'delete-policy'; readonly name: string }
  /** Every NetworkPolicy and every ClusterNetworkPolicy. */
  | { readonly op: 'delete-all-policies' };

/** One connection upstream checks after a step: `"SRC -> DST PROTO/PORT allow|deny"`. */
export interface Assert {
  readonly from: string;
  readonly to: string;
  readonly protocol: Protocol;
  readonly port: number;
  readonly allowed: boolean;
  /** As written. */
  readonly text: string;
}

export interface CaseStep {
  readonly description: string;
  readonly changes: readonly Change[];
  /** Raw objects as written, placeholders still in place. */
  readonly apply: readonly unknown[];
  readonly probes: readonly Probe[];
  /** Upstream's own checks after this step (ClusterNetworkPolicy cases); empty elsewhere. */
  readonly asserts: readonly Assert[];
}

export interface ConformanceCase {
  readonly file: string;
  /** The number prefix of the file name, e.g. `020`. */
  readonly id: string;
  readonly name: string;
  readonly notes: string;
  /** `origin:` as written ('' when absent). */
  readonly origin: string;
  /** The cluster of the case's own `model:` (Nodes, Namespaces, Pods); absent: the standard model. */
  readonly cluster?: readonly RawObject[];
  readonly steps: readonly CaseStep[];
}

export function cellKey(from: string, to: string): string {
  return `${from}|${to}`;
}

/** Every case file, sorted. */
export function listCaseFiles(dir: string = CONFORMANCE_DIR): string[] {
  return readdirSync(dir)
    .filter((f) => /^[0-9]+-.*\.yaml$/.test(f))
    .sort()
    .map((f) => join(dir, f));
}

/** Every ClusterNetworkPolicy case file (`cNN-*`: upstream transcriptions, `oNN-*`: our own), sorted. */
export function listCnpCaseFiles(dir: string = CNP_CONFORMANCE_DIR): string[] {
  return readdirSync(dir)
    .filter((f) => /^[a-z][0-9]+-.*\.yaml$/.test(f))
    .sort()
    .map((f) => join(dir, f));
}

export function loadCase(file: string): ConformanceCase {
  return parseCase(readFileSync(file, 'utf8'), file);
}

export function parseCase(text: string, file: string): ConformanceCase {
  const fail = (where: string, what: string): never => {
    throw new Error(`${file}: ${where}: ${what}`);
  };
  const doc: unknown = parse(text);
  if (!isObj(doc)) return fail('top level', 'expected a mapping');
  const cluster = doc['model'] === undefined ? undefined : parseModel(doc['model'], fail);
  if (typeof doc['name'] !== 'string') fail('name', `expected a string, got ${JSON.stringify(doc['name'])}`);
  const rawSteps = doc['steps'];
  if (!Array.isArray(rawSteps) || rawSteps.length === 0) return fail('steps', 'expected a non-empty list');
  const steps = rawSteps.map((s: unknown, i): CaseStep => {
    const where = `steps[${i}]`;
    if (!isObj(s)) return fail(where, 'expected a mapping');
    const changes = optionalList(s['changes'], `${where}.changes`, fail).map((c, j) => parseChange(c, `${where}.changes[${j}]`, fail));
    const apply = optionalList(s['apply'], `${where}.apply`, fail);
    const probes = optionalList(s['probes'], `${where}.probes`, fail).map((p, j) => parseProbe(p, `${where}.probes[${j}]`, fail));
    if (probes.length === 0) fail(`${where}.probes`, 'a step without probes checks nothing');
    const asserts = optionalList(s['asserts'], `${where}.asserts`, fail).map((a, j) => parseAssert(a, `${where}.asserts[${j}]`, fail));
    return { description: typeof s['description'] === 'string' ? s['description'] : '', changes, apply, probes, asserts };
  });
  return {
    file,
    id: /^([a-z]?[0-9]+)/.exec(basename(file))?.[1] ?? basename(file),
    name: doc['name'] as string,
    notes: typeof doc['notes'] === 'string' ? doc['notes'] : '',
    origin: typeof doc['origin'] === 'string' ? doc['origin'] : '',
    ...(cluster && { cluster }),
    steps,
  };
}

type Fail = (where: string, what: string) => never;

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function optionalList(v: unknown, where: string, fail: Fail): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) return fail(where, `expected a list, got ${JSON.stringify(v)}`);
  return v;
}

function labelMap(v: unknown, where: string, fail: Fail): Record<string, string> {
  if (!isObj(v) || !Object.values(v).every((x) => typeof x === 'string')) return fail(where, `expected a map of strings, got ${JSON.stringify(v)}`);
  return v as Record<string, string>;
}

function parseChange(c: unknown, where: string, fail: Fail): Change {
  if (!isObj(c)) return fail(where, 'expected a mapping');
  const str = (k: string): string => (typeof c[k] === 'string' ? (c[k] as string) : fail(`${where}.${k}`, `expected a string, got ${JSON.stringify(c[k])}`));
  switch (c['op']) {
    case 'label-namespace':
      return { op: 'label-namespace', namespace: str('namespace'), labels: labelMap(c['labels'], `${where}.labels`, fail) };
    case 'label-pod':
      return { op: 'label-pod', pod: str('pod'), labels: labelMap(c['labels'], `${where}.labels`, fail) };
    case 'delete-policy':
      return { op: 'delete-policy', name: str('name') };
    case 'delete-all-policies':
      return { op: 'delete-all-policies' };
    default:
      return fail(`${where}.op`, `unknown change ${JSON.stringify(c['op'])}`);
  }
}

function parseAssert(a: unknown, where: string, fail: Fail): Assert {
  const m = typeof a === 'string' ? /^\s*(\S+)\s*->\s*(\S+)\s+(TCP|UDP|SCTP)\/([0-9]+)\s+(allow|deny)\s*$/.exec(a) : null;
  if (!m) return fail(where, `expected "SRC -> DST PROTO/PORT allow|deny", got ${JSON.stringify(a)}`);
  return { from: m[1]!, to: m[2]!, protocol: m[3] as Protocol, port: Number(m[4]), allowed: m[5] === 'allow', text: (a as string).trim() };
}

/**
 * A case's own cluster: `nodes` (name -> podCIDR), `namespaces` (name -> complete label map),
 * `pods` (`name: ns/pod`, `node`, `ip`, `labels`, `ports` as container ports), as raw objects in
 * the order Nodes, Namespaces, Pods (the standard cluster's order).
 */
function parseModel(v: unknown, fail: Fail): RawObject[] {
  if (!isObj(v)) return fail('model', 'expected a mapping with nodes, namespaces and pods');
  const out: RawObject[] = [];
  const nodes = isObj(v['nodes']) ? v['nodes'] : fail('model.nodes', 'expected a map of node name to podCIDR');
  Object.entries(nodes).forEach(([name, cidr], i) => {
    if (typeof cidr !== 'string') fail(`model.nodes.${name}`, `expected a CIDR, got ${JSON.stringify(cidr)}`);
    const internalIP = STANDARD_NODES.find((n) => n.name === name)?.internalIP ?? `192.168.50.${11 + i}`;
    out.push({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name, labels: { 'kubernetes.io/hostname': name } },
      spec: { podCIDR: cidr, podCIDRs: [cidr] },
      status: { addresses: [{ type: 'InternalIP', address: internalIP }, { type: 'Hostname', address: name }] },
    });
  });
  const namespaces = isObj(v['namespaces']) ? v['namespaces'] : fail('model.namespaces', 'expected a map of namespace name to labels');
  for (const [name, labels] of Object.entries(namespaces)) {
    out.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: labelMap(labels, `model.namespaces.${name}`, fail) } });
  }
  optionalList(v['pods'], 'model.pods', fail).forEach((p, i) => {
    const where = `model.pods[${i}]`;
    if (!isObj(p) || typeof p['name'] !== 'string' || !p['name'].includes('/')) return fail(where, 'expected a pod with name ns/pod, node, ip, labels and ports');
    const [namespace, name] = p['name'].split('/') as [string, string];
    const node = typeof p['node'] === 'string' ? p['node'] : fail(`${where}.node`, 'expected a node name');
    const ip = typeof p['ip'] === 'string' ? p['ip'] : fail(`${where}.ip`, 'expected an IP address');
    const ports = optionalList(p['ports'], `${where}.ports`, fail);
    out.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace, labels: labelMap(p['labels'] ?? {}, `${where}.labels`, fail) },
      spec: { nodeName: node, containers: ports.map((port, j) => ({ name: `serve-${j}`, image: 'registry.k8s.io/e2e-test-images/agnhost:2.53', ports: [port] })) },
      status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] },
    });
  });
  return out;
}

function parseProbe(p: unknown, where: string, fail: Fail): Probe {
  if (!isObj(p)) return fail(where, 'expected a mapping');
  const port = p['port'];
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) fail(`${where}.port`, `expected a port number, got ${JSON.stringify(port)}`);
  const protocol = PROTOCOLS.find((x) => x === p['protocol']) ?? fail(`${where}.protocol`, `expected one of ${PROTOCOLS.join(', ')}, got ${JSON.stringify(p['protocol'])}`);
  if (typeof p['matrix'] !== 'string') fail(`${where}.matrix`, 'expected a block of text');
  return { port: port as number, protocol, ...parseMatrix(p['matrix'] as string, `${where}.matrix`, fail) };
}

/**
 * A matrix block: a header of server names, then one row per client, `.` = succeeds,
 * `X` = fails. Rows must name every column exactly once.
 */
export function parseMatrix(text: string, where = 'matrix', fail: Fail = (w, m) => { throw new Error(`${w}: ${m}`); }): { pods: string[]; matrix: Map<string, boolean> } {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const [header, ...rows] = lines;
  if (header === undefined) return fail(where, 'empty matrix');
  const pods = header.split(/\s+/);
  if (new Set(pods).size !== pods.length) fail(where, `duplicate column in header ${JSON.stringify(header)}`);
  if (rows.length !== pods.length) fail(where, `${rows.length} rows for ${pods.length} columns`);
  const matrix = new Map<string, boolean>();
  const seen = new Set<string>();
  for (const row of rows) {
    const [from, ...marks] = row.split(/\s+/);
    if (!from || !pods.includes(from) || seen.has(from)) fail(where, `row ${JSON.stringify(row)}: client ${JSON.stringify(from)} is not a column or repeats`);
    seen.add(from!);
    if (marks.length !== pods.length) fail(where, `row ${JSON.stringify(row)}: ${marks.length} marks for ${pods.length} columns`);
    marks.forEach((m, i) => {
      if (m !== '.' && m !== 'X') fail(where, `row ${JSON.stringify(row)}: mark ${JSON.stringify(m)} is neither '.' nor 'X'`);
      matrix.set(cellKey(from!, pods[i]!), m === '.');
    });
  }
  return { pods, matrix };
}

// ---------------------------------------------------------------------------------------------
// The standard cluster

export const STANDARD_PORTS: readonly number[] = [80, 81];

export interface StandardNode {
  readonly name: string;
  readonly podCIDR: string;
  readonly internalIP: string;
}

export const STANDARD_NODES: readonly StandardNode[] = [
  { name: 'node-1', podCIDR: '10.244.1.0/24', internalIP: '192.168.50.11' },
  { name: 'node-2', podCIDR: '10.244.2.0/24', internalIP: '192.168.50.12' },
];

export interface StandardClusterOptions {
  /** Protocols served (default all three); leave SCTP out where the kernel lacks it. */
  readonly protocols?: readonly Protocol[];
  readonly ports?: readonly number[];
}

export type RawObject = Record<string, unknown>;

/**
 * The standard model as raw objects (Nodes, Namespaces, Pods, in that order). Pods alternate
 * between the nodes in x/a ... z/c order, so every namespace has pods on both nodes and
 * both the bridged and the routed path are exercised; each node hands out addresses from .10
 * of its podCIDR in that order. Every call returns fresh objects.
 */
export function standardCluster(opts: StandardClusterOptions = {}): RawObject[] {
  const protocols = opts.protocols ?? PROTOCOLS;
  const ports = opts.ports ?? STANDARD_PORTS;
  const out: RawObject[] = [];
  for (const n of STANDARD_NODES) {
    out.push({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: n.name, labels: { 'kubernetes.io/hostname': n.name } },
      spec: { podCIDR: n.podCIDR, podCIDRs: [n.podCIDR] },
      status: { addresses: [{ type: 'InternalIP', address: n.internalIP }, { type: 'Hostname', address: n.name }] },
    });
  }
  for (const ns of STANDARD_NAMESPACES) {
    out.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, labels: { 'kubernetes.io/metadata.name': ns, ns } } });
  }
  const nextHost = STANDARD_NODES.map(() => 10);
  STANDARD_PODS.forEach((ref, i) => {
    const [ns, name] = ref.split('/') as [string, string];
    const nodeIndex = i % STANDARD_NODES.length;
    const node = STANDARD_NODES[nodeIndex]!;
    const ip = hostIn(node.podCIDR, nextHost[nodeIndex]!++);
    const containers = ports.flatMap((port) =>
      protocols.map((proto) => ({
        name: `cont-${port}-${proto.toLowerCase()}`,
        image: 'registry.k8s.io/e2e-test-images/agnhost:2.53',
        ports: [{ name: `serve-${port}-${proto.toLowerCase()}`, containerPort: port, protocol: proto }],
      })),
    );
    out.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: ns, labels: { pod: name } },
      spec: { nodeName: node.name, containers },
      status: { phase: 'Running', hostIP: node.internalIP, podIP: ip, podIPs: [{ ip }] },
    });
  });
  return out;
}

function hostIn(cidr: string, host: number): string {
  const [net] = cidr.split('/') as [string];
  const octets = net.split('.');
  octets[3] = String(Number(octets[3]) + host);
  return octets.join('.');
}

/** `ns/pod` -> status.podIP of the Pod objects among `objects`. */
export function podIpsOf(objects: readonly unknown[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const o of objects) {
    if (!isObj(o) || o['kind'] !== 'Pod' || !isObj(o['metadata']) || !isObj(o['status'])) continue;
    const ip = o['status']['podIP'];
    if (typeof ip === 'string') out.set(`${String(o['metadata']['namespace'] ?? 'default')}/${String(o['metadata']['name'])}`, ip);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Placeholders

export type PodIps = ReadonlyMap<string, string> | Readonly<Record<string, string>>;

function lookupIp(podIps: PodIps, pod: string): string | undefined {
  return podIps instanceof Map ? podIps.get(pod) : (podIps as Readonly<Record<string, string>>)[pod];
}

/**
 * Replace `${ip:NS/POD}` (the pod IP) and `${net4:NS/POD}` (the /4 network holding it, host
 * bits cleared). An unknown placeholder or pod throws: a half-substituted policy would be
 * invalid and silently change what the case tests.
 */
export function substitutePlaceholders(text: string, podIps: PodIps): string {
  return text.replace(/\$\{([^:}]*):([^}]*)\}/g, (whole, kind: string, pod: string) => {
    const ip = lookupIp(podIps, pod);
    if (ip === undefined) throw new Error(`placeholder ${whole}: no IP for pod ${JSON.stringify(pod)}`);
    if (kind === 'ip') return ip;
    if (kind === 'net4') return parseCidr(`${ip}/4`).text;
    throw new Error(`placeholder ${whole}: unknown kind ${JSON.stringify(kind)} (known: ip, net4)`);
  });
}

/** Substitute in every string of a raw object (keys included); returns a new object. */
export function substituteInObject<T>(v: T, podIps: PodIps): T {
  const walk = (x: unknown): unknown => {
    if (typeof x === 'string') return substitutePlaceholders(x, podIps);
    if (Array.isArray(x)) return x.map(walk);
    if (isObj(x)) return Object.fromEntries(Object.entries(x).map(([k, val]) => [substitutePlaceholders(k, podIps), walk(val)]));
    return x;
  };
  return walk(v) as T;
}

// ---------------------------------------------------------------------------------------------
// Running a case

export interface StepState {
  /** 0-based step index. */
  readonly index: number;
  readonly step: CaseStep;
  /** Every raw object after the step (cluster and policies), placeholders substituted. */
  readonly objects: readonly RawObject[];
  /** This step's `apply` objects, placeholders substituted. */
  readonly applied: readonly RawObject[];
  /** A fresh model of `objects`, built through normalize (as the file source would). */
  readonly model: Model;
  readonly probes: readonly Probe[];
  /** Validation issues of any object; the corpus has none, so tests expect this empty. */
  readonly issues: ReadonlyArray<{ readonly ref: string; readonly issue: ValidationIssue }>;
}

export interface CaseRunnerOptions {
  /** Starting objects; defaults to `standardCluster()`. Copied, never mutated. */
  readonly cluster?: readonly RawObject[];
}

export class CaseRunner {
  readonly case: ConformanceCase;
  readonly podIps: ReadonlyMap<string, string>;
  private readonly cluster: readonly RawObject[];

  constructor(c: ConformanceCase, opts: CaseRunnerOptions = {}) {
    this.case = c;
    this.cluster = opts.cluster ?? c.cluster ?? standardCluster();
    this.podIps = podIpsOf(this.cluster);
  }

  /** Each step's state, in order; the state of one step carries into the next. */
  *steps(): Generator<StepState> {
    const state = new Map<string, RawObject>();
    for (const o of this.cluster) state.set(objectKey(o), structuredClone(o));
    for (const [index, step] of this.case.steps.entries()) {
      const where = `${this.case.file}: steps[${index}]`;
      for (const change of step.changes) applyChange(state, change, where);
      const applied = step.apply.map((o) => {
        if (!isObj(o)) throw new Error(`${where}.apply: expected objects, got ${JSON.stringify(o)}`);
        return substituteInObject(structuredClone(o), this.podIps);
      });
      for (const o of applied) state.set(objectKey(o), o); // create, or replace the same kind/namespace/name
      const objects = [...state.values()].map((o) => structuredClone(o));
      const model = new Model();
      const issues: Array<{ ref: string; issue: ValidationIssue }> = [];
      for (const o of objects) {
        const r = normalize(o);
        for (const issue of r.issues) issues.push({ ref: r.ref, issue });
        if (r.record) model.upsert(r.record);
      }
      yield { index, step, objects, applied, model, probes: step.probes, issues };
    }
  }
}

function metaOf(o: RawObject): Record<string, unknown> {
  return isObj(o['metadata']) ? o['metadata'] : {};
}

const CLUSTER_SCOPED = new Set(['Namespace', 'Node', 'ClusterNetworkPolicy']);

function objectKey(o: RawObject): string {
  const m = metaOf(o);
  const namespaced = !CLUSTER_SCOPED.has(String(o['kind']));
  return `${String(o['kind'])}/${namespaced ? String(m['namespace'] ?? 'default') : ''}/${String(m['name'])}`;
}

function applyChange(state: Map<string, RawObject>, change: Change, where: string): void {
  const relabel = (key: string, labels: Readonly<Record<string, string>>, what: string): void => {
    const o = state.get(key);
    if (!o) throw new Error(`${where}: ${change.op}: no ${what}`);
    // Label maps in the corpus are complete: labels not listed are removed.
    state.set(key, { ...o, metadata: { ...metaOf(o), labels: { ...labels } } });
  };
  switch (change.op) {
    case 'label-namespace':
      relabel(`Namespace//${change.namespace}`, change.labels, `namespace ${JSON.stringify(change.namespace)}`);
      return;
    case 'label-pod': {
      const [ns, name] = change.pod.split('/');
      relabel(`Pod/${ns}/${name}`, change.labels, `pod ${JSON.stringify(change.pod)}`);
      return;
    }
    case 'delete-policy': {
      // `namespace/name` names a NetworkPolicy; a bare name a (cluster-scoped) ClusterNetworkPolicy.
      const key = change.name.includes('/') ? `NetworkPolicy/${change.name}` : `ClusterNetworkPolicy//${change.name}`;
      if (!state.delete(key)) throw new Error(`${where}: delete-policy: no policy ${JSON.stringify(change.name)}`);
      return;
    }
    case 'delete-all-policies':
      for (const [k, o] of state) if (o['kind'] === 'NetworkPolicy' || o['kind'] === 'ClusterNetworkPolicy') state.delete(k);
      return;
  }
}
