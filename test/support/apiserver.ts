// A test double of the Kubernetes API server: the real list/watch protocol over plain HTTP on
// 127.0.0.1, good enough that @kubernetes/client-node's `makeInformer`/`ListWatch`, `Watch` and
// the generated `CoreV1Api`/`NetworkingV1Api` list and read calls work against it unchanged.
//
// What is modelled faithfully (checked against the apiserver sources and client-node 2.0.1):
// - one global resourceVersion counter (the etcd revision) shared by every resource;
// - LIST: `{kind: PodList, apiVersion, metadata: {resourceVersion}, items}` with items WITHOUT
//   kind/apiVersion, ordered by etcd key (namespace/name); labelSelector (equality and set-based),
//   fieldSelector (the fields the real server supports per resource, 400 otherwise),
//   limit/continue (continue pages are consistent snapshots at the first page's revision;
//   a token older than the compaction point gets HTTP 410 Expired), resourceVersion +
//   resourceVersionMatch (Exact serves the historical state; NotOlderThan a future RV -> 504);
// - WATCH (`watch=true|1`): HTTP 200, `Content-Type: application/json`, one JSON event per line;
//   objects carry kind/apiVersion; RV unset/"0" starts with synthetic ADDED events for the
//   current state; RV older than the compaction point -> an ERROR event (Status 410 Expired,
//   "too old resource version: X (Y)") and the stream ends; selector transitions are turned into
//   ADDED/DELETED like the watch cache does; BOOKMARKs only when allowWatchBookmarks=true;
//   timeoutSeconds ends the stream cleanly; sendInitialEvents=true ends the initial state with a
//   BOOKMARK annotated `k8s.io/initial-events-end: "true"`;
// - defaulting on write: NetworkPolicy policyTypes and port protocols, Pod container port
//   protocols, the namespace's `kubernetes.io/metadata.name` label and `status.phase: Active`;
// - ClusterNetworkPolicies (`policy.networking.k8s.io/v1alpha2`, cluster-scoped) as the custom
//   resource they are: served only while their CRD is installed (`clusterNetworkPolicyCrd`,
//   `setCrdInstalled`); without it their paths answer 404 and discovery omits the group. Removing
//   the CRD deletes every instance (DELETED events, as the CRD's cleanup finalizer does) and ends
//   the open watches; field selectors: metadata.name only, as for every custom resource;
// - a BOOKMARK 2 s before a watch's timeoutSeconds runs out (watches that asked for bookmarks),
//   besides the periodic ones, as the watch cache does.
//
// Not modelled: writes over HTTP (mutate through the methods below), validation, admission,
// graceful deletion (use `modify` to set deletionTimestamp yourself), namespace cascade,
// a watch from a future RV waiting for it (it simply starts).

import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { join } from 'node:path';

// ---------------------------------------------------------------------------------------------
// Public types

export type ResourceName = 'pods' | 'namespaces' | 'nodes' | 'networkpolicies' | 'clusternetworkpolicies';

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string | null;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [key: string]: unknown;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  [key: string]: unknown;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface RequestRecord {
  method: string;
  /** URL path without the query string. */
  path: string;
  query: Record<string, string>;
  /** The request asked for a watch (`watch=true|1`). */
  watch: boolean;
  resource?: ResourceName;
  authorization?: string;
  at: number;
}

export interface ApiServerOptions {
  /** When set, requests without `Authorization: Bearer <token>` get 401. Default: accept any. */
  token?: string;
  /** Period of BOOKMARK events on watches that ask for them. Default 60 000 ms (the real server: ~1 min). */
  bookmarkIntervalMs?: number;
  /** The first resourceVersion handed out is this + 1. Default 1000. */
  initialResourceVersion?: number;
  /** Keep at most this many events; older ones are compacted away. Default: unlimited. */
  retainEvents?: number;
  /** Close every watch after this many seconds when the client gave no timeoutSeconds (fractions
   *  allowed, also for timeoutSeconds itself). Default: never. */
  defaultWatchTimeoutSeconds?: number;
  /** Apply API-server defaulting on create/update. Default true. */
  defaulting?: boolean;
  /** Address to listen on. Default 127.0.0.1 (a lab's switch namespace uses its underlay address). */
  host?: string;
  /** Port to listen on. Default: a free one. */
  port?: number;
  /** Start with the ClusterNetworkPolicy CRD installed. Default false (as on most clusters). */
  clusterNetworkPolicyCrd?: boolean;
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
}

/** Poll `cond` until it returns true; rejects after `timeoutMs` (default 5000) naming `what`. */
export async function waitUntil(cond: () => boolean, what = 'condition', o: WaitOptions = {}): Promise<void> {
  const timeoutMs = o.timeoutMs ?? 5000;
  const intervalMs = o.intervalMs ?? 5;
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

// ---------------------------------------------------------------------------------------------
// Resources

interface ResourceInfo {
  resource: ResourceName;
  kind: string;
  listKind: string;
  singular: string;
  group: Group;
  apiVersion: string;
  namespaced: boolean;
  shortNames: string[];
  fields: Record<string, (o: KubeObject) => string>;
  /** A custom resource: served only while its CRD is installed. */
  crd?: boolean;
}

type Group = '' | 'networking.k8s.io' | 'policy.networking.k8s.io';
/** The version each group serves. */
const GROUP_VERSIONS: Record<Group, string> = { '': 'v1', 'networking.k8s.io': 'v1', 'policy.networking.k8s.io': 'v1alpha2' };

const str = (v: unknown): string => (v === undefined || v === null ? '' : String(v));
const at = (o: KubeObject, ...path: string[]): unknown => {
  let cur: unknown = o;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
};
const metaName = (o: KubeObject): string => str(o.metadata?.name);
const metaNamespace = (o: KubeObject): string => str(o.metadata?.namespace);

// Field selectors each resource supports in the real API server (others get 400).
const RESOURCES: Record<ResourceName, ResourceInfo> = {
  pods: {
    resource: 'pods', kind: 'Pod', listKind: 'PodList', singular: 'pod', group: '', apiVersion: 'v1', namespaced: true,
    shortNames: ['po'],
    fields: {
      'metadata.name': metaName,
      'metadata.namespace': metaNamespace,
      'spec.nodeName': (o) => str(at(o, 'spec', 'nodeName')),
      'spec.restartPolicy': (o) => str(at(o, 'spec', 'restartPolicy')),
      'spec.schedulerName': (o) => str(at(o, 'spec', 'schedulerName')),
      'spec.serviceAccountName': (o) => str(at(o, 'spec', 'serviceAccountName')),
      'spec.hostNetwork': (o) => String(at(o, 'spec', 'hostNetwork') === true),
      'status.phase': (o) => str(at(o, 'status', 'phase')),
      'status.podIP': (o) => str(at(o, 'status', 'podIP')),
      'status.nominatedNodeName': (o) => str(at(o, 'status', 'nominatedNodeName')),
    },
  },
  namespaces: {
    resource: 'namespaces', kind: 'Namespace', listKind: 'NamespaceList', singular: 'namespace', group: '', apiVersion: 'v1',
    namespaced: false, shortNames: ['ns'],
    fields: { 'metadata.name': metaName, 'status.phase': (o) => str(at(o, 'status', 'phase')) },
  },
  nodes: {
    resource: 'nodes', kind: 'Node', listKind: 'NodeList', singular: 'node', group: '', apiVersion: 'v1', namespaced: false,
    shortNames: ['no'],
    fields: { 'metadata.name': metaName, 'spec.unschedulable': (o) => String(at(o, 'spec', 'unschedulable') === true) },
  },
  networkpolicies: {
    resource: 'networkpolicies', kind: 'NetworkPolicy', listKind: 'NetworkPolicyList', singular: 'networkpolicy',
    group: 'networking.k8s.io', apiVersion: 'networking.k8s.io/v1', namespaced: true, shortNames: ['netpol'],
    fields: { 'metadata.name': metaName, 'metadata.namespace': metaNamespace },
  },
  clusternetworkpolicies: {
    resource: 'clusternetworkpolicies', kind: 'ClusterNetworkPolicy', listKind: 'ClusterNetworkPolicyList', singular: 'clusternetworkpolicy',
    group: 'policy.networking.k8s.io', apiVersion: 'policy.networking.k8s.io/v1alpha2', namespaced: false, shortNames: ['cnp'],
    fields: { 'metadata.name': metaName },
    crd: true,
  },
};

/** Resolve 'Pod', 'pod', 'pods', 'po', 'NetworkPolicy', 'netpol', ... to the resource. */
export function resolveResource(kindOrResource: string): ResourceName {
  const k = kindOrResource.toLowerCase();
  for (const r of Object.values(RESOURCES)) {
    if (k === r.resource || k === r.kind.toLowerCase() || k === r.singular || r.shortNames.includes(k)) return r.resource;
  }
  throw new Error(`apiserver double: unknown kind or resource ${JSON.stringify(kindOrResource)} (known: ${Object.keys(RESOURCES).join(', ')})`);
}

interface ResourcePath {
  info: ResourceInfo;
  namespace?: string;
  name?: string;
}

/** Parse `/api/v1[/namespaces/{ns}]/{resource}[/{name}]` and the `/apis/{group}/{version}`
 *  equivalents; undefined when the path names no resource of the double (404). */
function parseResourcePath(pathname: string): ResourcePath | undefined {
  const segs = pathname.split('/').filter((s) => s !== '');
  let group: Group;
  let rest: string[];
  if (segs[0] === 'api' && segs[1] === 'v1') {
    group = '';
    rest = segs.slice(2);
  } else if (segs[0] === 'apis' && segs[1] !== undefined && segs[1] !== '' && segs[1] in GROUP_VERSIONS && GROUP_VERSIONS[segs[1] as Group] === segs[2]) {
    group = segs[1] as Group;
    rest = segs.slice(3);
  } else return undefined;
  let namespace: string | undefined;
  let resName: string | undefined;
  let name: string | undefined;
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    [, namespace, resName, name] = rest;
    if (rest.length > 4) return undefined;
  } else {
    [resName, name] = rest;
    if (rest.length > 2 || rest.length === 0) return undefined;
  }
  if (resName === undefined || !(resName in RESOURCES)) return undefined;
  const info = RESOURCES[resName as ResourceName];
  if (info.group !== group) return undefined;
  if (namespace !== undefined && !info.namespaced) return undefined;
  if (name !== undefined && info.namespaced && namespace === undefined) return undefined;
  const out: ResourcePath = { info };
  if (namespace !== undefined) out.namespace = namespace;
  if (name !== undefined) out.name = name;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Selectors

export type LabelRequirement =
  | { key: string; op: 'exists' | '!exists' }
  | { key: string; op: 'in' | 'notin'; values: string[] }
  | { key: string; op: 'gt' | 'lt'; value: number };

/** Parse a label selector the way k8s.io/apimachinery/pkg/labels.Parse does (the common forms). */
export function parseLabelSelector(s: string): LabelRequirement[] {
  const toks: string[] = [];
  const re = /\s*(==|!=|=|!|\(|\)|,|>|<|[^\s=!(),<>]+)/gy;
  let m: RegExpExecArray | null;
  let consumed = 0;
  while ((m = re.exec(s)) !== null) {
    toks.push(m[1]!);
    consumed = re.lastIndex;
  }
  if (s.slice(consumed).trim() !== '') throw new Error(`unable to parse requirement: unexpected ${JSON.stringify(s.slice(consumed))}`);
  const isIdent = (t: string | undefined): t is string => t !== undefined && /^[^=!(),<>]+$/.test(t);
  const keyRe = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?(\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
  const valRe = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
  const checkKey = (k: string): string => {
    if (!keyRe.test(k)) throw new Error(`unable to parse requirement: invalid label key ${JSON.stringify(k)}`);
    return k;
  };
  const checkVal = (v: string): string => {
    if (v.length > 63 || !valRe.test(v)) throw new Error(`unable to parse requirement: invalid label value ${JSON.stringify(v)}`);
    return v;
  };
  const out: LabelRequirement[] = [];
  let i = 0;
  if (toks.length === 0) return out;
  for (;;) {
    const t = toks[i];
    if (t === '!') {
      const k = toks[i + 1];
      if (!isIdent(k)) throw new Error(`unable to parse requirement: expected key after '!' in ${JSON.stringify(s)}`);
      out.push({ key: checkKey(k), op: '!exists' });
      i += 2;
    } else if (isIdent(t)) {
      const key = checkKey(t);
      const op = toks[i + 1];
      if (op === undefined || op === ',') {
        out.push({ key, op: 'exists' });
        i += 1;
      } else if (op === '=' || op === '==' || op === '!=') {
        const v = toks[i + 2];
        if (v === undefined || v === ',') {
          out.push({ key, op: op === '!=' ? 'notin' : 'in', values: [''] });
          i += 2;
        } else if (isIdent(v)) {
          out.push({ key, op: op === '!=' ? 'notin' : 'in', values: [checkVal(v)] });
          i += 3;
        } else throw new Error(`unable to parse requirement: unexpected ${JSON.stringify(v)} in ${JSON.stringify(s)}`);
      } else if (op === 'in' || op === 'notin') {
        if (toks[i + 2] !== '(') throw new Error(`unable to parse requirement: expected '(' after ${op} in ${JSON.stringify(s)}`);
        const values: string[] = [];
        let j = i + 3;
        for (;;) {
          const v = toks[j];
          if (v === ')') break;
          if (v === ',') {
            values.push('');
            j += 1;
            continue;
          }
          if (!isIdent(v)) throw new Error(`unable to parse requirement: unterminated value list in ${JSON.stringify(s)}`);
          values.push(checkVal(v));
          j += 1;
          if (toks[j] === ',') j += 1;
          else if (toks[j] !== ')') throw new Error(`unable to parse requirement: expected ',' or ')' in ${JSON.stringify(s)}`);
        }
        if (values.length === 0) throw new Error(`for 'in', 'notin' operators, values set can't be empty`);
        out.push({ key, op, values });
        i = j + 1;
      } else if (op === '>' || op === '<') {
        const v = toks[i + 2];
        if (v === undefined || !/^-?\d+$/.test(v)) throw new Error(`unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer`);
        out.push({ key, op: op === '>' ? 'gt' : 'lt', value: Number(v) });
        i += 3;
      } else throw new Error(`unable to parse requirement: unexpected ${JSON.stringify(op)} after key ${JSON.stringify(key)}`);
    } else throw new Error(`unable to parse requirement: unexpected ${JSON.stringify(t)} in ${JSON.stringify(s)}`);
    if (i >= toks.length) break;
    if (toks[i] !== ',') throw new Error(`unable to parse requirement: expected ',' but found ${JSON.stringify(toks[i])}`);
    i += 1;
    if (i >= toks.length) throw new Error(`unable to parse requirement: trailing ',' in ${JSON.stringify(s)}`);
  }
  return out;
}

function labelsMatch(reqs: LabelRequirement[], labels: Record<string, string> | undefined): boolean {
  const l = labels ?? {};
  return reqs.every((r) => {
    const has = Object.prototype.hasOwnProperty.call(l, r.key);
    const v = l[r.key];
    switch (r.op) {
      case 'exists': return has;
      case '!exists': return !has;
      case 'in': return has && r.values.includes(v!);
      case 'notin': return !has || !r.values.includes(v!);
      case 'gt':
      case 'lt': {
        if (!has || !/^-?\d+$/.test(v!)) return false;
        return r.op === 'gt' ? Number(v) > r.value : Number(v) < r.value;
      }
    }
  });
}

interface FieldRequirement { field: string; op: '=' | '!='; value: string }

function parseFieldSelector(s: string, info: ResourceInfo): FieldRequirement[] {
  const out: FieldRequirement[] = [];
  if (s.trim() === '') return out;
  // Split on unescaped commas; values may escape ',', '=' and '\' with a backslash.
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\' && i + 1 < s.length) {
      cur += c + s[i + 1]!;
      i++;
    } else if (c === ',') {
      parts.push(cur);
      cur = '';
    } else cur += c;
  }
  parts.push(cur);
  for (const p of parts) {
    const m = /^([^=!]+?)\s*(==|!=|=)\s*(.*)$/s.exec(p.trim());
    if (!m) throw new Error(`invalid selector: '${p}'; can't understand '${p}'`);
    const field = m[1]!.trim();
    if (!(field in info.fields)) throw new Error(`field label not supported: ${field}`);
    out.push({ field, op: m[2] === '!=' ? '!=' : '=', value: m[3]!.replace(/\\(.)/g, '$1') });
  }
  return out;
}

function fieldsMatch(reqs: FieldRequirement[], info: ResourceInfo, o: KubeObject): boolean {
  return reqs.every((r) => {
    const v = info.fields[r.field]!(o);
    return r.op === '=' ? v === r.value : v !== r.value;
  });
}

// ---------------------------------------------------------------------------------------------
// Internals

interface StoredEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  resource: ResourceName;
  key: string;
  /** State after the change (for DELETED: the last state, stamped with the deletion RV). */
  object: KubeObject;
  /** State before the change (absent for ADDED). */
  prev?: KubeObject;
}

interface OpenWatch {
  id: number;
  info: ResourceInfo;
  namespace?: string;
  labels: LabelRequirement[];
  fields: FieldRequirement[];
  res: ServerResponse;
  socket: Socket;
  bookmarks: boolean;
  muted: boolean;
  dead: boolean;
  cutBudget?: number;
  timers: NodeJS.Timeout[];
}

interface Parked {
  req: IncomingMessage;
  res: ServerResponse;
}

class HttpError extends Error {
  code: number;
  reason: string;
  details?: Record<string, unknown>;
  constructor(code: number, reason: string, message: string, details?: Record<string, unknown>) {
    super(message);
    this.code = code;
    this.reason = reason;
    if (details !== undefined) this.details = details;
  }
}

function statusObject(code: number, reason: string, message: string, details?: Record<string, unknown>): KubeObject {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  };
}

const clone = <T>(o: T): T => JSON.parse(JSON.stringify(o)) as T;
const keyOf = (ns: string | undefined, name: string): string => (ns ? `${ns}/${name}` : name);
const rfc3339 = (d: Date): string => d.toISOString().replace(/\.\d{3}Z$/, 'Z');
const parseBool = (v: string | null): boolean => v !== null && ['1', 't', 'T', 'true', 'TRUE', 'True'].includes(v);

function stripTypeMeta(o: KubeObject): KubeObject {
  const { kind: _k, apiVersion: _a, ...rest } = o;
  return rest;
}

function withRV(o: KubeObject, rv: number): KubeObject {
  const c = clone(o);
  c.metadata = { ...(c.metadata ?? {}), resourceVersion: String(rv) };
  return c;
}

function defaultPorts(ports: unknown): void {
  if (!Array.isArray(ports)) return;
  for (const p of ports) if (p && typeof p === 'object' && (p as Record<string, unknown>).protocol === undefined) (p as Record<string, unknown>).protocol = 'TCP';
}

/** API-server defaulting for the fields the enforcer reads. */
function applyDefaults(info: ResourceInfo, o: KubeObject): void {
  if (info.resource === 'networkpolicies') {
    const spec = (o.spec ??= {}) as Record<string, unknown>;
    spec.podSelector ??= {};
    const egress = spec.egress;
    if (!Array.isArray(spec.policyTypes) || spec.policyTypes.length === 0) {
      spec.policyTypes = Array.isArray(egress) && egress.length > 0 ? ['Ingress', 'Egress'] : ['Ingress'];
    }
    for (const dir of ['ingress', 'egress']) {
      const rules = spec[dir];
      if (Array.isArray(rules)) for (const r of rules) if (r && typeof r === 'object') defaultPorts((r as Record<string, unknown>).ports);
    }
  } else if (info.resource === 'pods') {
    const spec = at(o, 'spec') as Record<string, unknown> | undefined;
    for (const list of ['containers', 'initContainers']) {
      const cs = spec?.[list];
      if (Array.isArray(cs)) for (const c of cs) if (c && typeof c === 'object') defaultPorts((c as Record<string, unknown>).ports);
    }
  } else if (info.resource === 'namespaces') {
    const name = o.metadata!.name!;
    o.metadata!.labels = { ...(o.metadata!.labels ?? {}), 'kubernetes.io/metadata.name': name };
    const status = (o.status ??= {}) as Record<string, unknown>;
    status.phase ??= 'Active';
  }
}

function bookmarkObject(info: ResourceInfo, rv: number, annotations?: Record<string, string>): KubeObject {
  // The shape the real server sends: an empty object of the kind, only the RV set
  // (creationTimestamp null and Go zero values included, as the Go serializer emits them).
  const metadata: ObjectMeta = { resourceVersion: String(rv), creationTimestamp: null };
  if (annotations) metadata.annotations = annotations;
  const o: KubeObject = { kind: info.kind, apiVersion: info.apiVersion, metadata };
  if (info.resource === 'pods') Object.assign(o, { spec: { containers: null }, status: {} });
  else if (info.resource === 'networkpolicies') Object.assign(o, { spec: { podSelector: {} } });
  else if (!info.crd) Object.assign(o, { spec: {}, status: {} }); // a custom resource's is unstructured: metadata only
  return o;
}

function encodeContinue(rv: number, startKey: string): string {
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv, start: startKey })).toString('base64');
}

function decodeContinue(token: string): { rv: number; start: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, 'base64').toString('utf8'));
  } catch {
    throw new HttpError(400, 'BadRequest', `continue key is not valid: ${token}`);
  }
  const p = parsed as { v?: unknown; rv?: unknown; start?: unknown };
  if (p.v !== 'meta.k8s.io/v1' || typeof p.rv !== 'number' || typeof p.start !== 'string') {
    throw new HttpError(400, 'BadRequest', `continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)`);
  }
  return { rv: p.rv, start: p.start };
}

const CONTINUE_EXPIRED =
  'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.';

// ---------------------------------------------------------------------------------------------
// The double

/** A pod's answer through the proxy subresource. */
export type PodProxyHandler = (port: number | undefined, path: string) => Promise<{ status: number; body: string; contentType?: string }>;

export class ApiServerDouble {
  /** `http://127.0.0.1:<port>` */
  url = '';
  port = 0;
  /** Every request received, in order (also while unavailable in '503' mode). */
  readonly requests: RequestRecord[] = [];
  /** Requests to a pod's proxy subresource that reached a handler, in order. */
  readonly podProxyRequests: { namespace: string; pod: string; port?: number; path: string }[] = [];
  private readonly podProxies = new Map<string, PodProxyHandler>();

  /**
   * What the pod `namespace/name` answers through `pods/NAME[:PORT]/proxy/PATH` (the API server
   * forwards such a request to the pod's port): `handler(port, pathWithQuery)`. Without one, the
   * double answers 503 as the API server does for a pod that refuses the connection.
   */
  setPodProxy(namespace: string, name: string, handler: PodProxyHandler | undefined): void {
    if (handler) this.podProxies.set(`${namespace}/${name}`, handler);
    else this.podProxies.delete(`${namespace}/${name}`);
  }

  private readonly opts: Required<Omit<ApiServerOptions, 'token' | 'retainEvents' | 'defaultWatchTimeoutSeconds' | 'host' | 'port' | 'clusterNetworkPolicyCrd'>> &
    Pick<ApiServerOptions, 'token' | 'retainEvents' | 'defaultWatchTimeoutSeconds' | 'port'>;
  private readonly host: string;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly store = new Map<ResourceName, Map<string, KubeObject>>();
  private events: StoredEvent[] = [];
  private rv: number;
  private compactedRV: number;
  private readonly watches = new Set<OpenWatch>();
  private nextWatchId = 1;
  private unavailable: false | 'refuse' | '503' = false;
  private stalledWatches = false;
  private stalledRequests = false;
  private readonly parked: Parked[] = [];
  private closed = false;
  /** Whether the ClusterNetworkPolicy CRD is installed (its resource served). */
  private crdInstalled: boolean;
  /** Each resource's objects in key order at `rv` (no write since): what LIST pages cut from. */
  private readonly sorted = new Map<ResourceName, { rv: number; keys: string[]; objects: KubeObject[] }>();

  private constructor(opts: ApiServerOptions) {
    this.opts = {
      bookmarkIntervalMs: 60_000,
      initialResourceVersion: 1000,
      defaulting: true,
      ...opts,
    };
    this.host = opts.host ?? '127.0.0.1';
    this.rv = this.opts.initialResourceVersion;
    this.compactedRV = this.rv;
    this.crdInstalled = opts.clusterNetworkPolicyCrd ?? false;
    for (const r of Object.keys(RESOURCES) as ResourceName[]) this.store.set(r, new Map());
  }

  /** Start a double listening on 127.0.0.1 at a random port. */
  static async start(opts: ApiServerOptions = {}): Promise<ApiServerDouble> {
    const s = new ApiServerDouble(opts);
    await s.listen(opts.port ?? 0);
    return s;
  }

  // ------------------------------------------------------------------ kubeconfig

  /** A kubeconfig (YAML) for this server: http, `insecure-skip-tls-verify: true` (client-node 2.x
   *  refuses an http server without it), a token user, context namespace `default`. */
  kubeconfig(o: { token?: string; namespace?: string; skipTLSVerify?: boolean } = {}): string {
    const token = o.token ?? this.opts.token ?? 'test-token';
    const lines = [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: apiserver-double',
      '  cluster:',
      `    server: ${this.url}`,
      ...(o.skipTLSVerify === false ? [] : ['    insecure-skip-tls-verify: true']),
      'users:',
      '- name: test',
      '  user:',
      `    token: ${JSON.stringify(token)}`,
      'contexts:',
      '- name: apiserver-double',
      '  context:',
      '    cluster: apiserver-double',
      '    user: test',
      `    namespace: ${o.namespace ?? 'default'}`,
      'current-context: apiserver-double',
      '',
    ];
    return lines.join('\n');
  }

  /** Write `kubeconfig()` to `<dir>/kubeconfig` and return the path. */
  writeKubeconfig(dir: string, o: { token?: string; namespace?: string } = {}): string {
    const path = join(dir, 'kubeconfig');
    writeFileSync(path, this.kubeconfig(o), { mode: 0o600 });
    return path;
  }

  // ------------------------------------------------------------------ store API for tests

  /** The current global resourceVersion (the etcd revision). */
  resourceVersion(): string {
    return String(this.rv);
  }

  /** Create an object; `kind` selects the resource. Fills uid, resourceVersion, creationTimestamp
   *  (kept when given), generation; applies defaulting. Throws when it exists. Returns a copy. */
  create(obj: object): KubeObject {
    const o = clone(obj) as KubeObject;
    if (typeof o.kind !== 'string') throw new Error(`apiserver double: create needs a kind, received ${JSON.stringify(o.kind)}`);
    const info = RESOURCES[resolveResource(o.kind)];
    this.mustServe(info);
    const meta = (o.metadata ??= {});
    if (!meta.name) throw new Error(`apiserver double: create ${info.kind} needs metadata.name`);
    if (info.namespaced) meta.namespace ||= 'default';
    else delete meta.namespace;
    const key = keyOf(meta.namespace, meta.name);
    const bucket = this.store.get(info.resource)!;
    if (bucket.has(key)) throw new Error(`apiserver double: ${info.resource} "${meta.name}" already exists`);
    o.kind = info.kind;
    o.apiVersion = info.apiVersion;
    meta.uid ||= randomUUID();
    meta.creationTimestamp ||= rfc3339(new Date());
    meta.generation = 1;
    if (this.opts.defaulting) applyDefaults(info, o);
    const rv = this.bump();
    meta.resourceVersion = String(rv);
    bucket.set(key, o);
    this.record({ rv, type: 'ADDED', resource: info.resource, key, object: o });
    return clone(o);
  }

  /** Replace an existing object (by kind/namespace/name). uid and creationTimestamp are kept; a
   *  given metadata.resourceVersion must equal the stored one (optimistic concurrency, as the real
   *  server); generation is bumped when spec changes. Returns a copy. */
  update(obj: object): KubeObject {
    const o = clone(obj) as KubeObject;
    if (typeof o.kind !== 'string') throw new Error(`apiserver double: update needs a kind, received ${JSON.stringify(o.kind)}`);
    const info = RESOURCES[resolveResource(o.kind)];
    const meta = (o.metadata ??= {});
    if (info.namespaced) meta.namespace ||= 'default';
    else delete meta.namespace;
    const key = keyOf(meta.namespace, meta.name ?? '');
    const bucket = this.store.get(info.resource)!;
    const prev = bucket.get(key);
    if (!prev) throw new Error(`apiserver double: ${info.resource} "${meta.name}" not found`);
    if (meta.resourceVersion && meta.resourceVersion !== prev.metadata!.resourceVersion) {
      throw new Error(
        `apiserver double: Operation cannot be fulfilled on ${info.resource} "${meta.name}": the object has been modified; please apply your changes to the latest version and try again (sent resourceVersion ${meta.resourceVersion}, stored ${prev.metadata!.resourceVersion})`,
      );
    }
    o.kind = info.kind;
    o.apiVersion = info.apiVersion;
    meta.uid = prev.metadata!.uid;
    meta.creationTimestamp = prev.metadata!.creationTimestamp;
    if (this.opts.defaulting) applyDefaults(info, o);
    const prevGen = prev.metadata!.generation ?? 1;
    meta.generation = JSON.stringify(o.spec) === JSON.stringify(prev.spec) ? prevGen : prevGen + 1;
    const rv = this.bump();
    meta.resourceVersion = String(rv);
    bucket.set(key, o);
    this.record({ rv, type: 'MODIFIED', resource: info.resource, key, object: o, prev });
    return clone(o);
  }

  /** Apply `mutate` to a copy of the stored object and store it as an update. */
  modify(kind: string, namespace: string | undefined, name: string, mutate: (o: KubeObject) => void): KubeObject {
    const cur = this.get(kind, namespace, name);
    if (!cur) throw new Error(`apiserver double: ${resolveResource(kind)} "${namespace ? `${namespace}/` : ''}${name}" not found`);
    mutate(cur);
    return this.update(cur);
  }

  /** Merge-patch metadata.labels: a null value removes the label. */
  patchLabels(kind: string, namespace: string | undefined, name: string, labels: Record<string, string | null>): KubeObject {
    return this.modify(kind, namespace, name, (o) => {
      const l: Record<string, string> = { ...(o.metadata!.labels ?? {}) };
      for (const [k, v] of Object.entries(labels)) {
        if (v === null) delete l[k];
        else l[k] = v;
      }
      o.metadata!.labels = l;
    });
  }

  /** Delete immediately (no graceful phase). The DELETED event carries the last state with a new
   *  resourceVersion. Returns that state; throws when absent. */
  delete(kind: string, namespace: string | undefined, name: string): KubeObject {
    const info = RESOURCES[resolveResource(kind)];
    const key = keyOf(info.namespaced ? namespace || 'default' : undefined, name);
    const bucket = this.store.get(info.resource)!;
    const prev = bucket.get(key);
    if (!prev) throw new Error(`apiserver double: ${info.resource} "${key}" not found`);
    bucket.delete(key);
    const rv = this.bump();
    const last = withRV(prev, rv);
    this.record({ rv, type: 'DELETED', resource: info.resource, key, object: last, prev });
    return clone(last);
  }

  /** A copy of the stored object (with kind/apiVersion), or undefined. */
  get(kind: string, namespace: string | undefined, name: string): KubeObject | undefined {
    const info = RESOURCES[resolveResource(kind)];
    const o = this.store.get(info.resource)!.get(keyOf(info.namespaced ? namespace || 'default' : undefined, name));
    return o ? clone(o) : undefined;
  }

  /** Copies of the stored objects of a kind (optionally one namespace), in etcd key order. */
  list(kind: string, namespace?: string): KubeObject[] {
    const info = RESOURCES[resolveResource(kind)];
    return this.snapshot(info.resource, this.rv)
      .filter((o) => !namespace || o.metadata?.namespace === namespace)
      .map(clone);
  }

  /**
   * Install or remove the ClusterNetworkPolicy CRD. Removing it deletes every instance first (a
   * DELETED event each, as the CRD's cleanup finalizer does), then ends the open watches of the
   * resource cleanly; from then on its paths answer 404 until it is installed again.
   */
  setCrdInstalled(on: boolean): void {
    if (on === this.crdInstalled) return;
    if (!on) {
      for (const o of this.list('ClusterNetworkPolicy')) this.delete('ClusterNetworkPolicy', undefined, o.metadata!.name!);
      this.crdInstalled = false;
      this.endWatches({ resource: 'clusternetworkpolicies' });
      return;
    }
    this.crdInstalled = true;
  }

  /** Whether a resource is served now (a custom resource only while its CRD is installed). */
  private served(info: ResourceInfo): boolean {
    return !info.crd || this.crdInstalled;
  }

  private mustServe(info: ResourceInfo): void {
    if (!this.served(info)) throw new Error(`apiserver double: no matches for kind "${info.kind}" in version "${info.apiVersion}": install the CRD first (setCrdInstalled)`);
  }

  // ------------------------------------------------------------------ history and faults

  /** Drop the event history up to now (etcd compaction): a watch or continue token from an RV
   *  older than the current one gets 410 Expired. A watch from exactly the current RV still works. */
  compact(): void {
    this.compactedRV = this.rv;
    this.events = [];
  }

  /** Advance the revision (as an unrelated write would) and compact, so a watch from ANY RV
   *  handed out so far (list RVs, event RVs) gets 410 Expired. Open watches are not touched. */
  expire(): void {
    this.bump();
    this.compact();
  }

  /** Send a BOOKMARK (current RV) now on every open watch that asked for bookmarks. */
  sendBookmark(): void {
    for (const w of this.watches) if (w.bookmarks) this.send(w, { type: 'BOOKMARK', object: bookmarkObject(w.info, this.rv) });
  }

  /** Destroy every open watch connection abruptly, mid-stream (no terminating chunk). `reset`
   *  sends a TCP RST instead of a FIN. Returns how many were dropped. */
  dropWatches(o: { reset?: boolean; resource?: string } = {}): number {
    const only = o.resource ? resolveResource(o.resource) : undefined;
    let n = 0;
    for (const w of [...this.watches]) {
      if (only && w.info.resource !== only) continue;
      n++;
      this.killWatch(w, o.reset ?? false);
    }
    return n;
  }

  /** End every open watch cleanly (terminating chunk), as the real server does when a watch's
   *  timeout (timeoutSeconds or its own 30-60 min default) runs out. Returns how many. */
  endWatches(o: { resource?: string } = {}): number {
    const only = o.resource ? resolveResource(o.resource) : undefined;
    let n = 0;
    for (const w of [...this.watches]) {
      if (only && w.info.resource !== only) continue;
      n++;
      this.endWatch(w);
    }
    return n;
  }

  /** Every currently open watch sends at most `n` more bytes, then its connection is destroyed
   *  (an event may be cut in the middle of its JSON line). */
  cutAfterBytes(n: number): void {
    for (const w of this.watches) w.cutBudget = n;
  }

  /**
   * Make the server unavailable or available again.
   * - `'503'`: every new request gets HTTP 503 with a Status body (open watches keep running;
   *   combine with `dropWatches()` to cut them).
   * - `'refuse'`: stop listening and destroy every connection (watches included), so connects
   *   fail with ECONNREFUSED; `setUnavailable(false)` listens again on the same port.
   */
  async setUnavailable(on: boolean, mode: 'refuse' | '503' = '503'): Promise<void> {
    if (!on) {
      const was = this.unavailable;
      this.unavailable = false;
      if (was === 'refuse') await this.listen(this.port);
      return;
    }
    if (this.unavailable === 'refuse' && mode === '503') {
      await this.listen(this.port);
    }
    this.unavailable = mode;
    if (mode === 'refuse') await this.stopListening();
  }

  /**
   * Stall: open watches, and watches opened while stalled, stay connected but receive nothing
   * more (no events, no bookmarks, no timeout close) — a silent half-dead connection for
   * watchdog tests. Those connections stay mute for good; `resume()` only affects new watches.
   * With `requests: true` non-watch requests (lists, gets) also hang until `resume()`.
   */
  stall(o: { requests?: boolean } = {}): void {
    this.stalledWatches = true;
    this.stalledRequests = o.requests ?? false;
    for (const w of this.watches) this.mute(w);
  }

  /** End a stall: new watches work normally, parked requests are served. */
  resume(): void {
    this.stalledWatches = false;
    this.stalledRequests = false;
    for (const p of this.parked.splice(0)) this.serve(p.req, p.res);
  }

  /** Number of open watch streams, optionally for one resource. */
  openWatches(resource?: string): number {
    if (!resource) return this.watches.size;
    const r = resolveResource(resource);
    return [...this.watches].filter((w) => w.info.resource === r).length;
  }

  /** Resolve once at least `n` watch streams (optionally of one resource) are open. */
  async waitForWatchers(n: number, o: WaitOptions & { resource?: string } = {}): Promise<void> {
    await waitUntil(() => this.openWatches(o.resource) >= n, `${n} open watch(es)${o.resource ? ` on ${o.resource}` : ''} (have ${this.openWatches(o.resource)})`, o);
  }

  /** Resolve with the first logged request (from index `from`) that satisfies `pred`. */
  async waitForRequest(pred: (r: RequestRecord) => boolean, o: WaitOptions & { from?: number } = {}): Promise<RequestRecord> {
    let found: RequestRecord | undefined;
    await waitUntil(() => (found = this.requests.slice(o.from ?? 0).find(pred)) !== undefined, 'a matching request', o);
    return found!;
  }

  clearRequests(): void {
    this.requests.length = 0;
  }

  /** End everything: watches, parked requests, timers, connections, the listening socket. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of [...this.watches]) this.killWatch(w, false);
    for (const p of this.parked.splice(0)) p.res.socket?.destroy();
    await this.stopListening();
  }

  // ------------------------------------------------------------------ internals: server

  private async listen(port: number): Promise<void> {
    const server = createServer((req, res) => this.onRequest(req, res));
    server.keepAliveTimeout = 5000;
    server.on('connection', (sock: Socket) => {
      this.sockets.add(sock);
      sock.on('close', () => this.sockets.delete(sock));
      sock.on('error', () => {});
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, this.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const addr = server.address();
    if (addr === null || typeof addr === 'string') throw new Error('apiserver double: no TCP address');
    this.server = server;
    this.port = addr.port;
    this.url = `http://${this.host}:${this.port}`;
  }

  private async stopListening(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const w of [...this.watches]) this.killWatch(w, false);
    for (const s of this.sockets) s.destroy();
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    res.on('error', () => {});
    const url = new URL(req.url ?? '/', 'http://x');
    const query: Record<string, string> = {};
    for (const [k, v] of url.searchParams) query[k] = v;
    const rec: RequestRecord = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query,
      watch: parseBool(url.searchParams.get('watch')),
      at: Date.now(),
    };
    const target = parseResourcePath(url.pathname);
    if (target) rec.resource = target.info.resource;
    if (req.headers.authorization) rec.authorization = req.headers.authorization;
    this.requests.push(rec);
    if (this.unavailable === '503') {
      this.sendStatus(res, new HttpError(503, 'ServiceUnavailable', 'apiserver double is unavailable (setUnavailable)'));
      return;
    }
    if (this.stalledRequests && !rec.watch) {
      this.parked.push({ req, res });
      return;
    }
    this.serve(req, res);
  }

  private serve(req: IncomingMessage, res: ServerResponse): void {
    try {
      this.route(req, res);
    } catch (e) {
      if (e instanceof HttpError) this.sendStatus(res, e);
      else this.sendStatus(res, new HttpError(500, 'InternalError', `apiserver double: ${(e as Error).message}`));
    }
  }

  private sendJSON(res: ServerResponse, code: number, body: unknown): void {
    if (res.headersSent) {
      res.end();
      return;
    }
    const text = JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-cache, private' });
    res.end(text);
  }

  private sendStatus(res: ServerResponse, e: HttpError): void {
    this.sendJSON(res, e.code, statusObject(e.code, e.reason, e.message, e.details));
  }

  private route(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const q = url.searchParams;
    if (this.opts.token !== undefined && req.headers.authorization !== `Bearer ${this.opts.token}`) {
      throw new HttpError(401, 'Unauthorized', 'Unauthorized');
    }
    const notFound = (): never => {
      throw new HttpError(404, 'NotFound', 'the server could not find the requested resource', {});
    };
    if (req.method !== 'GET') {
      throw new HttpError(405, 'MethodNotAllowed', `the apiserver double serves reads only; ${req.method} is not supported (mutate through the test API)`);
    }
    // Discovery and health.
    const p = url.pathname.replace(/\/+$/, '') || '/';
    if (p === '/version') return this.sendJSON(res, 200, { major: '1', minor: '34', gitVersion: 'v1.34.0-apiserver-double', platform: 'linux/amd64' });
    if (p === '/healthz' || p === '/readyz' || p === '/livez') {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('ok');
      return;
    }
    if (p === '/api') {
      return this.sendJSON(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `${this.host}:${this.port}` }] });
    }
    const groups = (Object.keys(GROUP_VERSIONS) as Group[]).filter((g) => g !== '' && Object.values(RESOURCES).some((r) => r.group === g && this.served(r)));
    const groupObject = (g: Group) => ({ name: g, versions: [{ groupVersion: `${g}/${GROUP_VERSIONS[g]}`, version: GROUP_VERSIONS[g] }], preferredVersion: { groupVersion: `${g}/${GROUP_VERSIONS[g]}`, version: GROUP_VERSIONS[g] } });
    if (p === '/apis') return this.sendJSON(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: groups.map(groupObject) });
    const resourceList = (group: Group) => ({
      kind: 'APIResourceList',
      apiVersion: 'v1',
      groupVersion: group === '' ? 'v1' : `${group}/${GROUP_VERSIONS[group]}`,
      resources: Object.values(RESOURCES)
        .filter((r) => r.group === group)
        .map((r) => ({ name: r.resource, singularName: r.singular, namespaced: r.namespaced, kind: r.kind, verbs: ['get', 'list', 'watch'], shortNames: r.shortNames })),
    });
    if (p === '/api/v1') return this.sendJSON(res, 200, resourceList(''));
    for (const g of groups) {
      if (p === `/apis/${g}`) return this.sendJSON(res, 200, { kind: 'APIGroup', apiVersion: 'v1', ...groupObject(g) });
      if (p === `/apis/${g}/${GROUP_VERSIONS[g]}`) return this.sendJSON(res, 200, resourceList(g));
    }

    // A pod's proxy subresource: `/api/v1/namespaces/NS/pods/NAME[:PORT]/proxy/PATH`, answered by
    // the handler a test gave for the pod (setPodProxy), as the API server forwards to the pod.
    const proxy = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/:]+)(?::([0-9]+))?\/proxy(\/.*)?$/.exec(url.pathname);
    if (proxy) {
      const [, ns, pod, port, rest] = proxy as unknown as [string, string, string, string | undefined, string | undefined];
      if (!this.store.get('pods')!.get(keyOf(ns, pod))) throw new HttpError(404, 'NotFound', `pods "${pod}" not found`, { name: pod, kind: 'pods' });
      const handler = this.podProxies.get(`${ns}/${pod}`);
      if (!handler) throw new HttpError(503, 'ServiceUnavailable', `error trying to reach service: dial tcp: connect: connection refused (no proxy handler for pod ${ns}/${pod})`);
      this.podProxyRequests.push({ namespace: ns, pod, ...(port !== undefined ? { port: Number(port) } : {}), path: (rest ?? '/') + url.search });
      void handler(port !== undefined ? Number(port) : undefined, (rest ?? '/') + url.search).then(
        (r) => {
          res.writeHead(r.status, { 'Content-Type': r.contentType ?? 'application/json' });
          res.end(r.body);
        },
        (e: unknown) => this.sendStatus(res, new HttpError(503, 'ServiceUnavailable', `error trying to reach service: ${(e as Error).message}`)),
      );
      return;
    }

    // Resources.
    const target = parseResourcePath(url.pathname);
    if (!target || !this.served(target.info)) return notFound();
    const { info, namespace, name } = target;

    const watch = parseBool(q.get('watch'));
    if (name !== undefined && !watch) {
      const o = this.store.get(info.resource)!.get(keyOf(namespace, name));
      if (!o) throw new HttpError(404, 'NotFound', `${info.resource} "${name}" not found`, { name, kind: info.resource });
      return this.sendJSON(res, 200, o);
    }
    let labels: LabelRequirement[];
    let fields: FieldRequirement[];
    try {
      labels = parseLabelSelector(q.get('labelSelector') ?? '');
      fields = parseFieldSelector(q.get('fieldSelector') ?? '', info);
    } catch (e) {
      throw new HttpError(400, 'BadRequest', (e as Error).message);
    }
    if (name !== undefined) fields.push({ field: 'metadata.name', op: '=', value: name });
    if (watch) this.startWatch(req, res, info, namespace, labels, fields, q);
    else this.serveList(res, info, namespace, labels, fields, q);
  }

  // ------------------------------------------------------------------ internals: store

  private bump(): number {
    this.rv += 1;
    return this.rv;
  }

  private record(ev: StoredEvent): void {
    this.events.push(ev);
    const limit = this.opts.retainEvents;
    if (limit !== undefined && this.events.length > limit) {
      const dropped = this.events.splice(0, this.events.length - limit);
      this.compactedRV = dropped[dropped.length - 1]!.rv;
    }
    for (const w of this.watches) if (w.info.resource === ev.resource) this.deliver(w, ev);
  }

  /** The objects of a resource as they were at revision `rv` (>= compactedRV), in key order. */
  private snapshot(resource: ResourceName, rv: number): KubeObject[] {
    return this.sortedSnapshot(resource, rv).objects;
  }

  /** `snapshot` with the keys beside the objects; the current state's is kept until the next
   *  write, so that the pages of a big LIST do not sort the whole resource each. */
  private sortedSnapshot(resource: ResourceName, rv: number): { keys: string[]; objects: KubeObject[] } {
    const cached = this.sorted.get(resource);
    if (cached && cached.rv === rv && rv === this.rv) return cached;
    const state = new Map(this.store.get(resource)!);
    for (let i = this.events.length - 1; i >= 0; i--) {
      const ev = this.events[i]!;
      if (ev.rv <= rv) break;
      if (ev.resource !== resource) continue;
      if (ev.type === 'ADDED') state.delete(ev.key);
      else state.set(ev.key, ev.prev!);
    }
    const entries = [...state.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const out = { rv, keys: entries.map(([k]) => k), objects: entries.map(([, o]) => o) };
    if (rv === this.rv) this.sorted.set(resource, out);
    return out;
  }

  private matches(w: { info: ResourceInfo; namespace?: string | undefined; labels: LabelRequirement[]; fields: FieldRequirement[] }, o: KubeObject): boolean {
    if (w.namespace !== undefined && o.metadata?.namespace !== w.namespace) return false;
    return labelsMatch(w.labels, o.metadata?.labels) && fieldsMatch(w.fields, w.info, o);
  }

  // ------------------------------------------------------------------ internals: list

  private serveList(res: ServerResponse, info: ResourceInfo, namespace: string | undefined, labels: LabelRequirement[], fields: FieldRequirement[], q: URLSearchParams): void {
    const limitRaw = q.get('limit');
    const limit = limitRaw === null || limitRaw === '' ? 0 : Number(limitRaw);
    if (!Number.isInteger(limit) || limit < 0) throw new HttpError(400, 'BadRequest', `invalid limit: ${limitRaw}`);
    const cont = q.get('continue') ?? '';
    const rvParam = q.get('resourceVersion') ?? '';
    const match = q.get('resourceVersionMatch') ?? '';
    let atRV = this.rv;
    let startKey = '';
    if (cont) {
      if (rvParam !== '' && rvParam !== '0') {
        throw new HttpError(400, 'BadRequest', 'specifying resource version is not allowed when using continue');
      }
      const t = decodeContinue(cont);
      if (t.rv < this.compactedRV) throw new HttpError(410, 'Expired', CONTINUE_EXPIRED);
      atRV = t.rv;
      startKey = t.start;
    } else if (rvParam !== '' && rvParam !== '0') {
      const n = Number(rvParam);
      if (!/^\d+$/.test(rvParam)) throw new HttpError(400, 'BadRequest', `invalid resource version: ${rvParam}`);
      const exact = match === 'Exact' || (match === '' && limit > 0);
      if (exact) {
        if (n < this.compactedRV) throw new HttpError(410, 'Expired', `too old resource version: ${n} (${this.compactedRV})`);
        if (n > this.rv) throw new HttpError(504, 'Timeout', `Too large resource version: ${n}, current: ${this.rv}`, { causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }], retryAfterSeconds: 1 });
        atRV = n;
      } else if (n > this.rv) {
        throw new HttpError(504, 'Timeout', `Too large resource version: ${n}, current: ${this.rv}`, { causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }], retryAfterSeconds: 1 });
      }
    }
    const w = { info, namespace, labels, fields };
    const snap = this.sortedSnapshot(info.resource, atRV);
    // The first key >= startKey (binary search), then matching objects up to the limit; past
    // it, only counted (remainingItemCount).
    let lo = 0;
    let hi = snap.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (snap.keys[mid]! < startKey) lo = mid + 1;
      else hi = mid;
    }
    const page: KubeObject[] = [];
    let remaining = 0;
    for (let i = lo; i < snap.objects.length; i++) {
      const o = snap.objects[i]!;
      if (!this.matches(w, o)) continue;
      if (limit > 0 && page.length === limit) remaining++;
      else page.push(o);
    }
    const metadata: Record<string, unknown> = { resourceVersion: String(atRV) };
    if (limit > 0 && remaining > 0) {
      const last = page[page.length - 1]!;
      metadata.continue = encodeContinue(atRV, keyOf(last.metadata?.namespace, last.metadata?.name ?? '') + '\u0000');
      if (labels.length === 0 && fields.length === 0) metadata.remainingItemCount = remaining;
    }
    this.sendJSON(res, 200, { kind: info.listKind, apiVersion: info.apiVersion, metadata, items: page.map(stripTypeMeta) });
  }

  // ------------------------------------------------------------------ internals: watch

  private startWatch(req: IncomingMessage, res: ServerResponse, info: ResourceInfo, namespace: string | undefined, labels: LabelRequirement[], fields: FieldRequirement[], q: URLSearchParams): void {
    const rvParam = q.get('resourceVersion') ?? '';
    const bookmarks = parseBool(q.get('allowWatchBookmarks'));
    const initialEvents = q.get('sendInitialEvents');
    if (initialEvents !== null && parseBool(initialEvents) && (q.get('resourceVersionMatch') !== 'NotOlderThan' || !bookmarks)) {
      throw new HttpError(422, 'Invalid', 'ListOptions is invalid: sendInitialEvents requires resourceVersionMatch=NotOlderThan and allowWatchBookmarks=true');
    }
    if (rvParam !== '' && !/^\d+$/.test(rvParam)) throw new HttpError(400, 'BadRequest', `invalid resource version: ${rvParam}`);
    const socket = req.socket;
    const w: OpenWatch = { id: this.nextWatchId++, info, labels, fields, res, socket, bookmarks, muted: false, dead: false, timers: [] };
    if (namespace !== undefined) w.namespace = namespace;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    this.watches.add(w);
    res.on('close', () => this.unregister(w));

    const fromRV = rvParam === '' ? 0 : Number(rvParam);
    const timeoutRaw = q.get('timeoutSeconds');
    const timeoutSeconds = timeoutRaw !== null && timeoutRaw !== '' ? Number(timeoutRaw) : this.opts.defaultWatchTimeoutSeconds;

    if (this.stalledWatches) {
      this.mute(w);
      return;
    }
    if (fromRV !== 0 && fromRV < this.compactedRV) {
      // What the watch cache does: 200, one ERROR event with a 410 Status, end of stream.
      this.send(w, { type: 'ERROR', object: statusObject(410, 'Expired', `too old resource version: ${fromRV} (${this.compactedRV})`) });
      this.endWatch(w);
      return;
    }
    if (fromRV === 0 || (initialEvents !== null && parseBool(initialEvents))) {
      // RV unset or "0": synthetic ADDED events for the current state, then live events.
      for (const o of this.snapshot(info.resource, this.rv)) if (this.matches(w, o)) this.send(w, { type: 'ADDED', object: o });
      if (initialEvents !== null && parseBool(initialEvents)) {
        this.send(w, { type: 'BOOKMARK', object: bookmarkObject(info, this.rv, { 'k8s.io/initial-events-end': 'true' }) });
      }
    } else {
      for (const ev of this.events) if (ev.rv > fromRV && ev.resource === info.resource) this.deliver(w, ev);
    }
    if (timeoutSeconds !== undefined && Number.isFinite(timeoutSeconds) && timeoutSeconds > 0) {
      const t = setTimeout(() => this.endWatch(w), timeoutSeconds * 1000);
      t.unref();
      w.timers.push(t);
    }
    if (bookmarks && timeoutSeconds !== undefined && Number.isFinite(timeoutSeconds) && timeoutSeconds > 2) {
      // The watch cache's last bookmark, 2 s before the deadline: the client resumes from as
      // recent a resourceVersion as possible.
      const t = setTimeout(() => this.send(w, { type: 'BOOKMARK', object: bookmarkObject(info, this.rv) }), (timeoutSeconds - 2) * 1000);
      t.unref();
      w.timers.push(t);
    }
    if (bookmarks && this.opts.bookmarkIntervalMs > 0) {
      const t = setInterval(() => this.send(w, { type: 'BOOKMARK', object: bookmarkObject(info, this.rv) }), this.opts.bookmarkIntervalMs);
      t.unref();
      w.timers.push(t);
    }
  }

  /** Translate a stored event for one watch, as the watch cache does with selectors. */
  private deliver(w: OpenWatch, ev: StoredEvent): void {
    const cur = ev.type !== 'DELETED' && this.matches(w, ev.object);
    const prev = ev.prev !== undefined && this.matches(w, ev.prev);
    if (ev.type === 'ADDED') {
      if (cur) this.send(w, { type: 'ADDED', object: ev.object });
    } else if (ev.type === 'DELETED') {
      if (prev) this.send(w, { type: 'DELETED', object: ev.object });
    } else if (cur && prev) this.send(w, { type: 'MODIFIED', object: ev.object });
    else if (cur) this.send(w, { type: 'ADDED', object: ev.object });
    else if (prev) this.send(w, { type: 'DELETED', object: withRV(ev.prev!, ev.rv) });
  }

  private send(w: OpenWatch, event: { type: WatchEventType; object: KubeObject }): void {
    if (w.dead || w.muted) return;
    const buf = Buffer.from(JSON.stringify(event) + '\n');
    if (w.cutBudget !== undefined) {
      if (buf.length > w.cutBudget) {
        const part = buf.subarray(0, w.cutBudget);
        w.dead = true;
        const destroy = (): void => {
          w.socket.destroy();
        };
        if (part.length > 0) w.res.write(part, destroy);
        else destroy();
        return;
      }
      w.cutBudget -= buf.length;
    }
    w.res.write(buf);
  }

  private mute(w: OpenWatch): void {
    w.muted = true;
    for (const t of w.timers) clearTimeout(t);
    w.timers = [];
  }

  private endWatch(w: OpenWatch): void {
    if (w.dead) return;
    w.dead = true;
    w.res.end();
  }

  private killWatch(w: OpenWatch, reset: boolean): void {
    w.dead = true;
    if (reset && typeof w.socket.resetAndDestroy === 'function') w.socket.resetAndDestroy();
    else w.socket.destroy();
    this.unregister(w);
  }

  private unregister(w: OpenWatch): void {
    w.dead = true;
    for (const t of w.timers) clearTimeout(t);
    w.timers = [];
    this.watches.delete(w);
  }
}

/** Start a double listening on 127.0.0.1 at a random port. */
export function startApiServer(opts: ApiServerOptions = {}): Promise<ApiServerDouble> {
  return ApiServerDouble.start(opts);
}
