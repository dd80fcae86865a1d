// Checks over the deployment files in deploy/: the canal-style manifest and the Dockerfile.
// Each check takes parsed objects (never reads files itself, so a test can hand it a mutated
// copy) and returns a list of problems, empty when the check passes. Problems name the object
// or field and the value received.

import { posix } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { PREBUILT_SHIM } from '../../src/cni/shim.ts';

// ---------------------------------------------------------------------------------------------
// The slice of the Kubernetes API these checks read. Every field is optional: the input is
// whatever the YAML said.

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface K8sObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  [field: string]: unknown;
}

export interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  verbs?: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}

export interface ClusterRole extends K8sObject {
  rules?: PolicyRule[];
  aggregationRule?: unknown;
}

export interface ClusterRoleBinding extends K8sObject {
  roleRef?: { apiGroup?: string; kind?: string; name?: string };
  subjects?: { kind?: string; name?: string; namespace?: string; apiGroup?: string }[];
}

export interface ConfigMap extends K8sObject {
  data?: Record<string, string>;
}

export interface EnvVar {
  name?: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath?: string; apiVersion?: string } } & Record<string, unknown>;
}

export interface VolumeMount {
  name?: string;
  mountPath?: string;
  readOnly?: boolean;
}

export interface Probe {
  httpGet?: { path?: string; port?: number | string; host?: string; scheme?: string };
  [field: string]: unknown;
}

export interface Container {
  name?: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  ports?: { name?: string; containerPort?: number; protocol?: string }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: {
    privileged?: boolean;
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    capabilities?: { add?: string[]; drop?: string[] };
  };
  volumeMounts?: VolumeMount[];
}

export interface Volume {
  name?: string;
  hostPath?: { path?: string; type?: string };
  configMap?: { name?: string };
  [source: string]: unknown;
}

export interface Toleration {
  key?: string;
  operator?: string;
  value?: string;
  effect?: string;
}

export interface PodSpec {
  hostNetwork?: boolean;
  priorityClassName?: string;
  serviceAccountName?: string;
  tolerations?: Toleration[];
  terminationGracePeriodSeconds?: number;
  initContainers?: Container[];
  containers?: Container[];
  volumes?: Volume[];
}

export interface DaemonSet extends K8sObject {
  spec?: {
    selector?: { matchLabels?: Record<string, string> };
    updateStrategy?: { type?: string; rollingUpdate?: { maxUnavailable?: number | string } };
    template?: { metadata?: ObjectMeta; spec?: PodSpec };
  };
}

// ---------------------------------------------------------------------------------------------
// Names this deployment uses.

export const NAMESPACE = 'kube-system';
export const AGENT_CONTAINER = 'policyctl';
export const FLANNEL_CONTAINER = 'kube-flannel';
export const FLANNEL_CONFIGMAP = 'policyctl-flannel-cfg';

/** What each object kind's apiVersion must be (the current, served versions). */
export const API_VERSIONS: Record<string, string> = {
  ServiceAccount: 'v1',
  ConfigMap: 'v1',
  ClusterRole: 'rbac.authorization.k8s.io/v1',
  ClusterRoleBinding: 'rbac.authorization.k8s.io/v1',
  DaemonSet: 'apps/v1',
};
const CLUSTER_SCOPED = new Set(['ClusterRole', 'ClusterRoleBinding']);

/**
 * The API access the DaemonSet's service account needs, as "apiGroup/resource" -> verbs ("" is
 * the core group). The agent reads its five sources; flannel with --kube-subnet-mgr gets pods,
 * watches nodes and patches its node's status. The role must grant exactly the union.
 */
export const AGENT_NEEDS: Record<string, string[]> = {
  '/pods': ['get', 'list', 'watch'],
  '/namespaces': ['get', 'list', 'watch'],
  '/nodes': ['get', 'list', 'watch'],
  'networking.k8s.io/networkpolicies': ['get', 'list', 'watch'],
  'policy.networking.k8s.io/clusternetworkpolicies': ['get', 'list', 'watch'],
};
export const FLANNEL_NEEDS: Record<string, string[]> = {
  '/pods': ['get'],
  '/nodes': ['get', 'list', 'watch'],
  '/nodes/status': ['patch'],
};

// ---------------------------------------------------------------------------------------------
// Loading.

export interface LoadedDoc {
  file: string;
  object: K8sObject;
}

/**
 * Parses every YAML document of a file. Syntax errors and warnings are returned as problems;
 * empty documents (a leading `---`) are skipped; a document that is not a mapping is a problem.
 */
export function parseManifestFile(file: string, text: string): { docs: LoadedDoc[]; problems: string[] } {
  const docs: LoadedDoc[] = [];
  const problems: string[] = [];
  parseAllDocuments(text).forEach((doc, i) => {
    for (const e of [...doc.errors, ...doc.warnings]) problems.push(`${file} document ${i + 1}: ${e.message}`);
    if (doc.errors.length > 0) return;
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) return;
    if (typeof value !== 'object' || Array.isArray(value)) {
      problems.push(`${file} document ${i + 1}: expected a mapping, got ${JSON.stringify(value)}`);
      return;
    }
    docs.push({ file, object: value as K8sObject });
  });
  return { docs, problems };
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

const label = (o: K8sObject) => `${o.kind ?? '?'}/${o.metadata?.name ?? '?'}`;

export function objectsOfKind<T extends K8sObject>(objects: K8sObject[], kind: string): T[] {
  return objects.filter((o) => o.kind === kind) as T[];
}

/** The single object of a kind, or undefined (and then the kinds check reports it). */
export function only<T extends K8sObject>(objects: K8sObject[], kind: string): T | undefined {
  const found = objectsOfKind<T>(objects, kind);
  return found.length === 1 ? found[0] : undefined;
}

export function podSpecOf(objects: K8sObject[]): PodSpec | undefined {
  return only<DaemonSet>(objects, 'DaemonSet')?.spec?.template?.spec;
}

export function containerOf(objects: K8sObject[], name: string): Container | undefined {
  return podSpecOf(objects)?.containers?.find((c) => c.name === name);
}

/** command + args, the way the kubelet runs them (command falls back to the image's). */
export function argvOf(c: Container, imageEntrypoint: string[] = []): string[] {
  return [...(c.command ?? imageEntrypoint), ...(c.args ?? [])];
}

/** The value of a long flag, given as `--flag value` or `--flag=value`; undefined if absent. */
export function flagValue(argv: string[], flag: string): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === flag) return argv[i + 1];
    if (a.startsWith(`${flag}=`)) return a.slice(flag.length + 1);
  }
  return undefined;
}

/** A probe's port as a number, resolving a named port against the container's ports. */
export function probePort(c: Container, probe: Probe | undefined): number | undefined {
  const port = probe?.httpGet?.port;
  if (typeof port === 'number') return port;
  if (typeof port === 'string') {
    if (/^\d+$/.test(port)) return Number(port);
    return c.ports?.find((p) => p.name === port)?.containerPort;
  }
  return undefined;
}

/** Splits HOST:PORT (HOST may be empty or a bracketed IPv6 address). */
export function splitHostPort(addr: string): { host: string; port: number } | undefined {
  const m = /^(\[[^\]]*\]|[^:]*):(\d{1,5})$/.exec(addr);
  if (!m) return undefined;
  const port = Number(m[2]);
  return port >= 1 && port <= 65535 ? { host: m[1]!, port } : undefined;
}

const WILDCARD_HOSTS = new Set(['', '0.0.0.0', '[::]']);

function isIPv4Cidr(s: unknown): boolean {
  if (typeof s !== 'string') return false;
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(s);
  return !!m && m.slice(1, 5).every((o) => Number(o) <= 255) && Number(m[5]) <= 32;
}

function parseJson(text: unknown, what: string, problems: string[]): unknown {
  if (typeof text !== 'string') {
    problems.push(`${what} is missing`);
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    problems.push(`${what} is not JSON: ${(e as Error).message}`);
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Checks over the manifest objects.

/** The kinds the deployment needs are each present once, with current apiVersions and names. */
export function checkKinds(objects: K8sObject[]): string[] {
  const problems: string[] = [];
  for (const kind of Object.keys(API_VERSIONS)) {
    const n = objectsOfKind(objects, kind).length;
    if (n !== 1) problems.push(`expected one ${kind}, found ${n}`);
  }
  const seen = new Set<string>();
  for (const o of objects) {
    if (!o.kind || !(o.kind in API_VERSIONS)) {
      problems.push(`unexpected kind ${JSON.stringify(o.kind)} (${label(o)})`);
      continue;
    }
    if (o.apiVersion !== API_VERSIONS[o.kind]) problems.push(`${label(o)}: apiVersion must be ${API_VERSIONS[o.kind]}, got ${JSON.stringify(o.apiVersion)}`);
    if (!o.metadata?.name) problems.push(`${label(o)}: metadata.name is missing`);
    const ns = o.metadata?.namespace;
    if (CLUSTER_SCOPED.has(o.kind)) {
      if (ns !== undefined) problems.push(`${label(o)} is cluster-scoped but sets namespace ${JSON.stringify(ns)}`);
    } else if (ns !== NAMESPACE) {
      problems.push(`${label(o)}: metadata.namespace must be ${NAMESPACE}, got ${JSON.stringify(ns)}`);
    }
    const key = `${o.kind}/${ns ?? ''}/${o.metadata?.name ?? ''}`;
    if (seen.has(key)) problems.push(`${label(o)} is defined twice`);
    seen.add(key);
  }
  return problems;
}

/** The binding ties the ClusterRole to the service account the DaemonSet runs as. */
export function checkBinding(objects: K8sObject[]): string[] {
  const problems: string[] = [];
  const role = only<ClusterRole>(objects, 'ClusterRole');
  const binding = only<ClusterRoleBinding>(objects, 'ClusterRoleBinding');
  const ds = only<DaemonSet>(objects, 'DaemonSet');
  if (!role || !binding || !ds) return ['the ClusterRole, ClusterRoleBinding and DaemonSet must each be present once'];

  const ref = binding.roleRef;
  if (ref?.apiGroup !== 'rbac.authorization.k8s.io' || ref.kind !== 'ClusterRole' || ref.name !== role.metadata?.name) {
    problems.push(`ClusterRoleBinding roleRef must be ClusterRole ${JSON.stringify(role.metadata?.name)} in rbac.authorization.k8s.io, got ${JSON.stringify(ref)}`);
  }
  const sa = ds.spec?.template?.spec?.serviceAccountName;
  const saNamespace = ds.metadata?.namespace;
  if (!sa) problems.push('DaemonSet pod template sets no serviceAccountName (it would run as "default", which the binding does not name)');
  const accounts = objectsOfKind(objects, 'ServiceAccount');
  if (sa && !accounts.some((a) => a.metadata?.name === sa && a.metadata?.namespace === saNamespace)) {
    problems.push(`DaemonSet uses ServiceAccount ${saNamespace}/${sa}, which the manifest does not define`);
  }
  const subjects = binding.subjects ?? [];
  if (!subjects.some((s) => s.kind === 'ServiceAccount' && s.name === sa && s.namespace === saNamespace)) {
    problems.push(`ClusterRoleBinding subjects do not include ServiceAccount ${saNamespace}/${sa}: got ${JSON.stringify(subjects)}`);
  }
  return problems;
}

/**
 * The ClusterRole grants exactly AGENT_NEEDS plus FLANNEL_NEEDS: no wildcard, no secrets, no
 * extra resource or verb, nothing missing.
 */
export function checkRbac(objects: K8sObject[]): string[] {
  const role = only<ClusterRole>(objects, 'ClusterRole');
  if (!role) return ['expected one ClusterRole'];
  const problems: string[] = [];
  if (role.aggregationRule !== undefined) problems.push('ClusterRole must not aggregate other roles');

  const granted = new Map<string, Set<string>>();
  (role.rules ?? []).forEach((rule, i) => {
    const at = `ClusterRole rules[${i}]`;
    for (const [field, values] of Object.entries({ apiGroups: rule.apiGroups, resources: rule.resources, verbs: rule.verbs })) {
      if (!Array.isArray(values) || values.length === 0) problems.push(`${at}.${field} is empty or missing`);
      else if (values.some((v) => v.includes('*'))) problems.push(`${at}.${field} uses a wildcard: ${JSON.stringify(values)}`);
    }
    if (rule.nonResourceURLs !== undefined) problems.push(`${at} grants nonResourceURLs ${JSON.stringify(rule.nonResourceURLs)}`);
    if (rule.resourceNames !== undefined) problems.push(`${at} sets resourceNames ${JSON.stringify(rule.resourceNames)} (not expected here)`);
    if ((rule.resources ?? []).some((r) => r === 'secrets' || r.startsWith('secrets/'))) problems.push(`${at} grants access to secrets`);
    for (const g of rule.apiGroups ?? []) {
      for (const r of rule.resources ?? []) {
        const key = `${g}/${r}`;
        const verbs = granted.get(key) ?? new Set<string>();
        for (const v of rule.verbs ?? []) verbs.add(v);
        granted.set(key, verbs);
      }
    }
  });

  const needed = new Map<string, Set<string>>();
  for (const needs of [AGENT_NEEDS, FLANNEL_NEEDS]) {
    for (const [key, verbs] of Object.entries(needs)) {
      const set = needed.get(key) ?? new Set<string>();
      for (const v of verbs) set.add(v);
      needed.set(key, set);
    }
  }
  for (const [key, verbs] of needed) {
    const have = granted.get(key) ?? new Set<string>();
    const missing = [...verbs].filter((v) => !have.has(v));
    if (missing.length > 0) problems.push(`ClusterRole is missing ${missing.join(', ')} on ${key}`);
  }
  for (const [key, verbs] of granted) {
    const want = needed.get(key) ?? new Set<string>();
    const extra = [...verbs].filter((v) => !want.has(v));
    if (extra.length > 0) problems.push(`ClusterRole grants more than needed: ${extra.join(', ')} on ${key}`);
  }
  return problems;
}

/**
 * Pod-level settings of the DaemonSet: scheduling on every node, host network, critical
 * priority, a rolling update, and volumes that every mount can find.
 */
export function checkDaemonSet(objects: K8sObject[]): string[] {
  const ds = only<DaemonSet>(objects, 'DaemonSet');
  if (!ds) return ['expected one DaemonSet'];
  const problems: string[] = [];
  const spec = ds.spec?.template?.spec;
  if (!spec) return ['DaemonSet has no spec.template.spec'];

  const selector = ds.spec?.selector?.matchLabels ?? {};
  const labels = ds.spec?.template?.metadata?.labels ?? {};
  if (Object.keys(selector).length === 0) problems.push('DaemonSet spec.selector.matchLabels is empty');
  for (const [k, v] of Object.entries(selector)) {
    if (labels[k] !== v) problems.push(`DaemonSet selector ${k}=${v} does not match the pod template's labels ${JSON.stringify(labels)}`);
  }
  if (labels['app'] !== 'policyctl') problems.push(`pod template label app must be policyctl, got ${JSON.stringify(labels['app'])}`);

  if (spec.hostNetwork !== true) problems.push(`hostNetwork must be true, got ${JSON.stringify(spec.hostNetwork)}`);
  if (spec.priorityClassName !== 'system-node-critical') problems.push(`priorityClassName must be system-node-critical, got ${JSON.stringify(spec.priorityClassName)}`);
  if (typeof spec.terminationGracePeriodSeconds !== 'number') problems.push('terminationGracePeriodSeconds is not set');

  const tolerations = spec.tolerations ?? [];
  for (const effect of ['NoSchedule', 'NoExecute']) {
    // Only a key-less Exists toleration tolerates every taint of an effect.
    if (!tolerations.some((t) => t.operator === 'Exists' && !t.key && (!t.effect || t.effect === effect))) {
      problems.push(`tolerations do not cover every ${effect} taint (need {operator: Exists, effect: ${effect}}): ${JSON.stringify(tolerations)}`);
    }
  }
  if (!tolerations.some((t) => t.key === 'CriticalAddonsOnly' && t.operator === 'Exists')) problems.push('tolerations lack CriticalAddonsOnly');

  const strategy = ds.spec?.updateStrategy;
  if (strategy?.type !== 'RollingUpdate' || strategy.rollingUpdate?.maxUnavailable !== 1) {
    problems.push(`updateStrategy must be RollingUpdate with maxUnavailable 1, got ${JSON.stringify(strategy)}`);
  }

  const volumes = spec.volumes ?? [];
  const volumeNames = new Set<string>();
  for (const v of volumes) {
    if (!v.name) problems.push(`a volume has no name: ${JSON.stringify(v)}`);
    else if (volumeNames.has(v.name)) problems.push(`volume ${v.name} is defined twice`);
    else volumeNames.add(v.name);
  }
  const used = new Set<string>();
  const all = [...(spec.initContainers ?? []), ...(spec.containers ?? [])];
  for (const c of all) {
    if (!c.image) problems.push(`container ${c.name} has no image`);
    else if (!/:[\w][\w.-]*$/.test(c.image.split('/').pop() ?? '') || c.image.endsWith(':latest')) {
      problems.push(`container ${c.name} image ${c.image} has no pinned tag`);
    }
    for (const m of c.volumeMounts ?? []) {
      if (!m.name || !volumeNames.has(m.name)) problems.push(`container ${c.name} mounts ${JSON.stringify(m.name)} at ${m.mountPath}, which is not a defined volume`);
      else used.add(m.name);
    }
  }
  for (const name of volumeNames) if (!used.has(name)) problems.push(`volume ${name} is defined but never mounted`);

  const annotations = ds.spec?.template?.metadata?.annotations ?? {};
  const agent = spec.containers?.find((c) => c.name === AGENT_CONTAINER);
  const metricsPort = agent?.ports?.find((p) => p.name === 'metrics')?.containerPort;
  if (annotations['prometheus.io/port'] !== undefined && annotations['prometheus.io/port'] !== String(metricsPort)) {
    problems.push(`annotation prometheus.io/port ${annotations['prometheus.io/port']} is not the metrics port ${metricsPort}`);
  }
  return problems;
}

/** A mount at `path` backed by a hostPath volume of the same path (and type, if given). */
function checkHostPathMount(
  spec: PodSpec,
  c: Container,
  path: string,
  want: { readOnly?: boolean; type?: string },
): string[] {
  const problems: string[] = [];
  const norm = (p: string | undefined) => p?.replace(/\/+$/, '');
  const mount = (c.volumeMounts ?? []).find((m) => norm(m.mountPath) === norm(path));
  if (!mount) return [`container ${c.name} does not mount ${path}`];
  if (want.readOnly !== undefined && (mount.readOnly === true) !== want.readOnly) {
    problems.push(`container ${c.name} must mount ${path} ${want.readOnly ? 'read-only' : 'read-write'}, got readOnly ${JSON.stringify(mount.readOnly)}`);
  }
  const volume = (spec.volumes ?? []).find((v) => v.name === mount.name);
  if (!volume) return [...problems, `container ${c.name} mounts ${path} from ${JSON.stringify(mount.name)}, which is not a defined volume`];
  if (norm(volume.hostPath?.path) !== norm(path)) {
    problems.push(`volume ${volume.name} mounted at ${path} must be hostPath ${path}, got ${JSON.stringify(volume.hostPath ?? volume)}`);
  } else if (want.type !== undefined && volume.hostPath?.type !== want.type) {
    problems.push(`volume ${volume.name} (hostPath ${path}) must have type ${want.type}, got ${JSON.stringify(volume.hostPath?.type)}`);
  }
  return problems;
}

/** `$(VAR)` references in command and args that name no env var stay literal in Kubernetes. */
function checkVarRefs(c: Container): string[] {
  const defined = new Set((c.env ?? []).map((e) => e.name));
  const problems: string[] = [];
  for (const a of [...(c.command ?? []), ...(c.args ?? [])]) {
    for (const m of a.matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) {
      if (!defined.has(m[1])) problems.push(`container ${c.name} argument ${JSON.stringify(a)} refers to $(${m[1]}), which its env does not define (it would be passed literally)`);
    }
  }
  return problems;
}

function fieldRefOf(c: Container, name: string): string | undefined {
  return c.env?.find((e) => e.name === name)?.valueFrom?.fieldRef?.fieldPath;
}

/**
 * The policyctl container: capabilities, mounts, the node name from the downward API, and
 * probes on the port that --health-addr binds and the container declares. `imageEntrypoint`
 * is the Dockerfile's ENTRYPOINT; when the container sets a command it must repeat it.
 */
export function checkAgentContainer(objects: K8sObject[], imageEntrypoint: string[]): string[] {
  const spec = podSpecOf(objects);
  const c = containerOf(objects, AGENT_CONTAINER);
  if (!spec || !c) return [`DaemonSet has no container named ${AGENT_CONTAINER}`];
  const problems: string[] = [];

  const sc = c.securityContext ?? {};
  if (sc.privileged === true) problems.push('policyctl container must not be privileged');
  const add = sc.capabilities?.add ?? [];
  for (const cap of ['NET_ADMIN', 'NET_RAW']) if (!add.includes(cap)) problems.push(`policyctl container lacks capability ${cap}: add is ${JSON.stringify(add)}`);
  const extra = add.filter((cap) => cap !== 'NET_ADMIN' && cap !== 'NET_RAW');
  if (extra.length > 0) problems.push(`policyctl container adds capabilities beyond NET_ADMIN and NET_RAW: ${JSON.stringify(extra)}`);
  // The image test (test/e2e/image.test.ts) runs it that way, so the manifest can promise it.
  if (sc.readOnlyRootFilesystem !== true) problems.push(`policyctl container must set readOnlyRootFilesystem: true, got ${JSON.stringify(sc.readOnlyRootFilesystem)}`);
  if (sc.allowPrivilegeEscalation !== false) problems.push(`policyctl container must set allowPrivilegeEscalation: false, got ${JSON.stringify(sc.allowPrivilegeEscalation)}`);

  problems.push(...checkHostPathMount(spec, c, '/run/xtables.lock', { readOnly: false, type: 'FileOrCreate' }));
  problems.push(...checkHostPathMount(spec, c, '/lib/modules', { readOnly: true }));

  if (c.command !== undefined && JSON.stringify(c.command) !== JSON.stringify(imageEntrypoint)) {
    problems.push(`policyctl command ${JSON.stringify(c.command)} differs from the image's ENTRYPOINT ${JSON.stringify(imageEntrypoint)}`);
  }
  const argv = argvOf(c, imageEntrypoint);
  if (!argv.includes('agent')) problems.push(`policyctl does not run the agent subcommand: ${JSON.stringify(argv)}`);
  if (!argv.includes('--kube')) problems.push(`policyctl agent is not given --kube (the cluster as its source): ${JSON.stringify(argv)}`);
  problems.push(...checkVarRefs(c));

  const node = flagValue(argv, '--node');
  const nodeVar = node === undefined ? undefined : /^\$\(([A-Za-z_][A-Za-z0-9_]*)\)$/.exec(node)?.[1];
  if (!nodeVar) problems.push(`--node must be $(NODE_NAME) from the downward API, got ${JSON.stringify(node)}`);
  else if (fieldRefOf(c, nodeVar) !== 'spec.nodeName') {
    problems.push(`--node uses $(${nodeVar}), which must come from fieldRef spec.nodeName, got ${JSON.stringify(fieldRefOf(c, nodeVar))}`);
  }

  const healthAddr = flagValue(argv, '--health-addr');
  const hp = healthAddr === undefined ? undefined : splitHostPort(healthAddr);
  if (!hp) problems.push(`--health-addr must be HOST:PORT, got ${JSON.stringify(healthAddr)}`);
  else {
    if (!WILDCARD_HOSTS.has(hp.host)) {
      problems.push(`--health-addr ${healthAddr} does not listen on all addresses; under hostNetwork the kubelet probes the node's IP`);
    }
    if (!(c.ports ?? []).some((p) => p.containerPort === hp.port && (p.protocol ?? 'TCP') === 'TCP')) {
      problems.push(`container declares no TCP port ${hp.port} (the --health-addr port): ${JSON.stringify(c.ports)}`);
    }
    for (const [probeName, path] of [['readinessProbe', '/readyz'], ['livenessProbe', '/healthz']] as const) {
      const probe = c[probeName];
      if (!probe?.httpGet) {
        problems.push(`policyctl has no httpGet ${probeName}`);
        continue;
      }
      if (probe.httpGet.path !== path) problems.push(`${probeName} path must be ${path}, got ${JSON.stringify(probe.httpGet.path)}`);
      const port = probePort(c, probe);
      if (port !== hp.port) problems.push(`${probeName} port ${JSON.stringify(probe.httpGet.port)} is not the --health-addr port ${hp.port}`);
      if (probe.httpGet.host !== undefined) problems.push(`${probeName} sets host ${probe.httpGet.host}; leave it to the pod IP`);
      if ((probe.httpGet.scheme ?? 'HTTP') !== 'HTTP') problems.push(`${probeName} scheme must be HTTP, got ${probe.httpGet.scheme}`);
    }
  }

  const req = c.resources?.requests ?? {};
  if (req['cpu'] === undefined || req['memory'] === undefined) problems.push(`policyctl must request cpu and memory, got ${JSON.stringify(req)}`);
  if (c.resources?.limits?.['memory'] === undefined) problems.push('policyctl has no memory limit');
  return problems;
}

/**
 * flannel: runs --kube-subnet-mgr with host-gw, and its init containers install the CNI
 * plugin and a conflist that parses, with hairpinMode and isDefaultGateway on.
 */
export function checkFlannel(objects: K8sObject[]): string[] {
  const spec = podSpecOf(objects);
  const c = containerOf(objects, FLANNEL_CONTAINER);
  if (!spec || !c) return [`DaemonSet has no container named ${FLANNEL_CONTAINER}`];
  const problems: string[] = [];

  const argv = argvOf(c);
  if (argv[0] !== '/opt/bin/flanneld') problems.push(`flannel must run /opt/bin/flanneld, got ${JSON.stringify(argv)}`);
  for (const flag of ['--kube-subnet-mgr', '--ip-masq']) if (!argv.includes(flag)) problems.push(`flanneld is not run with ${flag}: ${JSON.stringify(argv)}`);
  if (fieldRefOf(c, 'POD_NAME') !== 'metadata.name') problems.push('flannel env POD_NAME must come from fieldRef metadata.name');
  if (fieldRefOf(c, 'POD_NAMESPACE') !== 'metadata.namespace') problems.push('flannel env POD_NAMESPACE must come from fieldRef metadata.namespace');
  const sc = c.securityContext ?? {};
  if (sc.privileged !== false) problems.push(`flannel container must set privileged: false, got ${JSON.stringify(sc.privileged)}`);
  for (const cap of ['NET_ADMIN', 'NET_RAW']) if (!(sc.capabilities?.add ?? []).includes(cap)) problems.push(`flannel container lacks capability ${cap}`);
  problems.push(...checkHostPathMount(spec, c, '/run/flannel', {}));
  problems.push(...checkHostPathMount(spec, c, '/run/xtables.lock', { readOnly: false, type: 'FileOrCreate' }));

  // The ConfigMap, mounted where flanneld reads net-conf.json.
  const cfgMount = (c.volumeMounts ?? []).find((m) => m.mountPath?.replace(/\/+$/, '') === '/etc/kube-flannel');
  const cfgVolume = (spec.volumes ?? []).find((v) => v.name === cfgMount?.name);
  if (!cfgMount) problems.push('flannel does not mount its configuration at /etc/kube-flannel/');
  else if (cfgVolume?.configMap?.name !== FLANNEL_CONFIGMAP) {
    problems.push(`/etc/kube-flannel/ must come from ConfigMap ${FLANNEL_CONFIGMAP}, got ${JSON.stringify(cfgVolume)}`);
  }
  const cm = objectsOfKind<ConfigMap>(objects, 'ConfigMap').find((o) => o.metadata?.name === FLANNEL_CONFIGMAP);
  if (!cm) return [...problems, `ConfigMap ${FLANNEL_CONFIGMAP} is not defined`];

  const net = parseJson(cm.data?.['net-conf.json'], 'net-conf.json', problems) as { Network?: unknown; Backend?: { Type?: unknown } } | undefined;
  if (net) {
    if (net.Backend?.Type !== 'host-gw') problems.push(`net-conf.json Backend.Type must be host-gw, got ${JSON.stringify(net.Backend?.Type)}`);
    if (!isIPv4Cidr(net.Network)) problems.push(`net-conf.json Network must be an IPv4 CIDR, got ${JSON.stringify(net.Network)}`);
  }

  type Plugin = { type?: unknown; delegate?: { hairpinMode?: unknown; isDefaultGateway?: unknown }; capabilities?: { portMappings?: unknown } };
  const cni = parseJson(cm.data?.['cni-conf.json'], 'cni-conf.json', problems) as { name?: unknown; cniVersion?: unknown; plugins?: Plugin[] } | undefined;
  if (cni) {
    if (typeof cni.name !== 'string' || typeof cni.cniVersion !== 'string') problems.push('cni-conf.json needs a name and a cniVersion');
    if (!Array.isArray(cni.plugins)) problems.push('cni-conf.json is not a conflist (no plugins array)');
    else {
      const flannel = cni.plugins.find((p) => p.type === 'flannel');
      if (cni.plugins[0] !== flannel || !flannel) problems.push('cni-conf.json: the first plugin must be flannel');
      if (flannel?.delegate?.hairpinMode !== true) problems.push(`cni-conf.json flannel delegate.hairpinMode must be true, got ${JSON.stringify(flannel?.delegate?.hairpinMode)}`);
      if (flannel?.delegate?.isDefaultGateway !== true) problems.push(`cni-conf.json flannel delegate.isDefaultGateway must be true, got ${JSON.stringify(flannel?.delegate?.isDefaultGateway)}`);
      if (!cni.plugins.some((p) => p.type === 'portmap' && p.capabilities?.portMappings === true)) problems.push('cni-conf.json lacks portmap with capabilities.portMappings');
    }
  }

  // Init containers: copy the plugin binary to the host's /opt/cni/bin and the conflist into
  // /etc/cni/net.d (a .conflist name, since the content is a plugin list).
  const inits = spec.initContainers ?? [];
  const plugin = inits.find((i) => i.name === 'install-cni-plugin');
  const conf = inits.find((i) => i.name === 'install-cni');
  if (!plugin) problems.push('no install-cni-plugin init container');
  else {
    const argvP = argvOf(plugin);
    if (argvP[0] !== 'cp' || argvP.at(-1) !== '/opt/cni/bin/flannel') problems.push(`install-cni-plugin must copy the plugin to /opt/cni/bin/flannel, got ${JSON.stringify(argvP)}`);
    problems.push(...checkHostPathMount(spec, plugin, '/opt/cni/bin', {}));
  }
  if (!conf) problems.push('no install-cni init container');
  else {
    const argvC = argvOf(conf);
    if (argvC[0] !== 'cp' || argvC.at(-2) !== '/etc/kube-flannel/cni-conf.json' || argvC.at(-1) !== '/etc/cni/net.d/10-flannel.conflist') {
      problems.push(`install-cni must copy /etc/kube-flannel/cni-conf.json to /etc/cni/net.d/10-flannel.conflist, got ${JSON.stringify(argvC)}`);
    }
    problems.push(...checkHostPathMount(spec, conf, '/etc/cni/net.d', {}));
    const m = (conf.volumeMounts ?? []).find((vm) => vm.mountPath?.replace(/\/+$/, '') === '/etc/kube-flannel');
    if ((spec.volumes ?? []).find((v) => v.name === m?.name)?.configMap?.name !== FLANNEL_CONFIGMAP) {
      problems.push(`install-cni must mount ConfigMap ${FLANNEL_CONFIGMAP} at /etc/kube-flannel/`);
    }
  }
  return problems;
}

/**
 * policyctl-cni: the conflist ends with it (so DEL reaches the agent before host-local releases
 * the address) with a timeout, at a cniVersion whose DEL carries the ADD's result; an init
 * container installs it from the policyctl image before the conflist is written; the agent
 * serves the conflist's socket from a host folder the runtime's plugins see.
 */
export function checkPolicyCni(objects: K8sObject[]): string[] {
  const spec = podSpecOf(objects);
  const agent = containerOf(objects, AGENT_CONTAINER);
  if (!spec || !agent) return [`DaemonSet has no container named ${AGENT_CONTAINER}`];
  const problems: string[] = [];
  const cm = objectsOfKind<ConfigMap>(objects, 'ConfigMap').find((o) => o.metadata?.name === FLANNEL_CONFIGMAP);
  type Plugin = { type?: unknown; socket?: unknown; timeoutSeconds?: unknown };
  const cni = parseJson(cm?.data?.['cni-conf.json'], 'cni-conf.json', problems) as { cniVersion?: unknown; plugins?: Plugin[] } | undefined;
  let socket: unknown = '/run/policyctl/cni.sock';
  if (cni && Array.isArray(cni.plugins)) {
    const last = cni.plugins.at(-1);
    if (last?.type !== 'policyctl-cni') problems.push(`cni-conf.json: the last plugin must be policyctl-cni (DEL runs in reverse: it must come before host-local's release), got ${JSON.stringify(last?.type)}`);
    else {
      socket = last.socket ?? socket;
      if (typeof last.timeoutSeconds !== 'number' || !(last.timeoutSeconds > 0)) problems.push(`cni-conf.json policyctl-cni timeoutSeconds must be a positive number, got ${JSON.stringify(last.timeoutSeconds)}`);
    }
    const [major = 0, minor = 0] = String(cni.cniVersion).split('.').map(Number);
    if (major === 0 && minor < 4) problems.push(`cni-conf.json cniVersion must be 0.4.0 or later (DEL then carries the ADD's result), got ${JSON.stringify(cni.cniVersion)}`);
  }
  const argv = argvOf(agent);
  const served = flagValue(argv, '--cni-socket');
  if (served !== socket) problems.push(`policyctl --cni-socket ${JSON.stringify(served)} is not the conflist's socket ${JSON.stringify(socket)}`);
  if (typeof served === 'string') problems.push(...checkHostPathMount(spec, agent, served.slice(0, served.lastIndexOf('/')), { type: 'DirectoryOrCreate' }));

  const inits = spec.initContainers ?? [];
  const i = inits.findIndex((c) => c.name === 'install-policyctl-cni');
  const install = inits[i];
  if (!install) problems.push('no install-policyctl-cni init container');
  else {
    if (install.image !== agent.image) problems.push(`install-policyctl-cni must run the policyctl image ${JSON.stringify(agent.image)}, got ${JSON.stringify(install.image)}`);
    const a = argvOf(install);
    if (!a.includes('install-cni') || flagValue(a, '--bin-dir') !== '/opt/cni/bin') problems.push(`install-policyctl-cni must run policyctl install-cni --bin-dir /opt/cni/bin, got ${JSON.stringify(a)}`);
    problems.push(...checkHostPathMount(spec, install, '/opt/cni/bin', {}));
    const conf = inits.findIndex((c) => c.name === 'install-cni');
    if (conf >= 0 && conf < i) problems.push('install-policyctl-cni must run before install-cni (the conflist must never name a missing plugin)');
  }
  return problems;
}

/** The policyctl image's tag follows package.json's version (placeholder registry or not). */
export function checkImageVersion(objects: K8sObject[], version: string): string[] {
  const image = containerOf(objects, AGENT_CONTAINER)?.image ?? '';
  return image.endsWith(`:${version}`) ? [] : [`policyctl image ${JSON.stringify(image)} is not tagged with package.json's version ${version}`];
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile.

export interface Instruction {
  keyword: string;
  args: string;
}

/** Instructions of a Dockerfile: comments dropped, backslash continuations joined. */
export function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (current === '' && (line === '' || line.startsWith('#'))) continue;
    if (current !== '' && line.startsWith('#')) continue; // comment lines inside a continuation
    if (line.endsWith('\\')) {
      current += `${line.slice(0, -1)} `;
      continue;
    }
    current += line;
    const m = /^(\S+)\s*(.*)$/s.exec(current);
    if (m) out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!.trim() });
    current = '';
  }
  if (current.trim() !== '') {
    const m = /^(\S+)\s*(.*)$/s.exec(current.trim());
    if (m) out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!.trim() });
  }
  return out;
}

/** A build stage: `FROM <base> [AS <name>]` and the instructions up to the next FROM. */
export interface Stage {
  /** Its name (`AS name`), if any; later stages refer to it by name or by its index. */
  name?: string;
  index: number;
  /** The base as written (may be a build argument, or an earlier stage's name). */
  base: string;
  /** The stage's own instructions, FROM excluded. */
  instructions: Instruction[];
}

/** The ARGs before the first FROM (usable in every FROM line) and the stages, in order. */
export function dockerStages(instructions: Instruction[]): { globalArgs: Instruction[]; stages: Stage[] } {
  const first = instructions.findIndex((i) => i.keyword === 'FROM');
  const globalArgs = (first < 0 ? instructions : instructions.slice(0, first)).filter((i) => i.keyword === 'ARG');
  const stages: Stage[] = [];
  for (const i of first < 0 ? [] : instructions.slice(first)) {
    if (i.keyword === 'FROM') {
      const words = i.args.split(/\s+/).filter((w) => !w.startsWith('--'));
      const as = words.findIndex((w) => w.toLowerCase() === 'as');
      stages.push({ index: stages.length, base: words[0] ?? '', instructions: [], ...(as > 0 && words[as + 1] ? { name: words[as + 1]! } : {}) });
    } else stages.at(-1)!.instructions.push(i);
  }
  return { globalArgs, stages };
}

/** The stage a `FROM` or `COPY --from=` reference names, among those before `before`. */
function stageNamed(stages: Stage[], ref: string, before: number): Stage | undefined {
  return stages.slice(0, before).find((s) => s.name?.toLowerCase() === ref.toLowerCase() || String(s.index) === ref);
}

/**
 * The image's instructions: those of the last stage, after those of the earlier stages it is
 * built FROM (a stage built on another inherits its filesystem and settings).
 */
export function imageInstructions(instructions: Instruction[]): Instruction[] {
  const { stages } = dockerStages(instructions);
  if (stages.length === 0) return instructions;
  const chain = (s: Stage): Instruction[] => {
    const parent = stageNamed(stages, s.base, s.index);
    return [...(parent ? chain(parent) : []), ...s.instructions];
  };
  return chain(stages.at(-1)!);
}

/** ENTRYPOINT in exec form (a JSON array) of the image (the last stage); undefined when absent or in shell form. */
export function entrypointOf(instructions: Instruction[]): string[] | undefined {
  const last = imageInstructions(instructions).filter((i) => i.keyword === 'ENTRYPOINT').at(-1);
  if (!last) return undefined;
  try {
    const v: unknown = JSON.parse(last.args);
    return Array.isArray(v) && v.every((s) => typeof s === 'string') ? (v as string[]) : undefined;
  } catch {
    return undefined;
  }
}

/** `COPY [--from=X] src... dest`: its stage reference and its paths. */
function copyOf(i: Instruction): { from?: string; sources: string[]; dest: string } {
  const words = i.args.split(/\s+/);
  const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
  const paths = words.filter((w) => !w.startsWith('--'));
  return { ...(from !== undefined ? { from } : {}), sources: paths.slice(0, -1), dest: paths.at(-1) ?? '' };
}

/** The package list of a RUN's `apt-get install`: the words after it up to the next shell operator. */
function aptPackages(run: string): string[] {
  return (/\bapt-get\s+install\s+([^;&|]*)/.exec(run)?.[1] ?? '').split(/\s+/).filter((w) => w !== '');
}

/** Packages that build native code: they belong in a build stage, never in the image. */
const TOOLCHAIN = /^(gcc|gcc-\d+|g\+\+|g\+\+-\d+|clang|clang-\d+|cpp|build-essential|libc6-dev|make|binutils)$/;

/**
 * The image: a Node 24 base, iptables (both backends), ipset and conntrack from apt without
 * recommends and with the lists removed, production dependencies from the lockfile, the
 * sources, policyctl-cni's native front end where install-cni looks for it (src/cni/shim.ts),
 * built by src/cni/shim/build.sh in a build stage (no compiler in the image), and an exec-form
 * ENTRYPOINT that runs the agent. All of it is checked on the last stage, the image; build
 * stages only hand files over with COPY --from.
 */
export function checkDockerfile(text: string): string[] {
  const problems: string[] = [];
  const all = parseDockerfile(text);
  const { globalArgs, stages } = dockerStages(all);
  if (stages.length === 0) return ['no FROM'];
  const names = stages.flatMap((s) => (s.name ? [s.name.toLowerCase()] : []));
  for (const n of new Set(names)) if (names.filter((m) => m === n).length > 1) problems.push(`two stages are named ${n}`);

  // Each stage's base: a build argument (scripts/build-image.sh passes a local equivalent where
  // no registry serves it; only ARGs before the first FROM reach a FROM line), an earlier stage,
  // or an image. What must be Node 24 is the default a user's plain build gets for the image.
  const argDefault = (name: string) =>
    globalArgs.map((i) => /^(\w+)=(\S*)$/.exec(i.args)).find((m) => m?.[1] === name)?.[2];
  const baseImage = (s: Stage): string => {
    const parent = stageNamed(stages, s.base, s.index);
    if (parent) return baseImage(parent);
    const argRef = /^\$\{?(\w+)\}?$/.exec(s.base)?.[1];
    return argRef ? (argDefault(argRef) ?? '') : s.base;
  };
  for (const s of stages) {
    const argRef = /^\$\{?(\w+)\}?$/.exec(s.base)?.[1];
    if (argRef && !argDefault(argRef)) problems.push(`FROM uses build argument ${argRef}, which has no default (ARG ${argRef}=... before the first FROM)`);
  }
  const image = stages.at(-1)!;
  const base = baseImage(image);
  if (!/^(docker\.io\/(library\/)?)?node:24([.-][\w.-]*)?(@sha256:[0-9a-f]{64})?$/.test(base)) {
    problems.push(`base image must be Node 24 (node:24-...), got ${JSON.stringify(base)}`);
  }

  // Every stage's apt-get: fresh lists, no recommends.
  for (const s of stages) {
    for (const r of s.instructions.filter((i) => i.keyword === 'RUN' && /\bapt-get\b.*\binstall\b/.test(i.args)).map((i) => i.args)) {
      const where = s.index === image.index ? '' : ` (stage ${s.name ?? s.index})`;
      if (!aptPackages(r).includes('--no-install-recommends')) problems.push(`apt-get install must use --no-install-recommends${where}`);
      if (!/\bapt-get update\b/.test(r)) problems.push(`apt-get update must run in the same RUN as install (else a cached, stale list)${where}`);
    }
  }
  // Every COPY --from names an earlier stage (else a builder pulls an image by that name).
  for (const s of stages) {
    for (const c of s.instructions.filter((i) => i.keyword === 'COPY').map(copyOf)) {
      if (c.from !== undefined && !stageNamed(stages, c.from, s.index)) problems.push(`COPY --from=${c.from} names no earlier stage`);
    }
  }

  const ins = imageInstructions(all);
  const runs = ins.filter((i) => i.keyword === 'RUN').map((i) => i.args);
  const install = runs.find((r) => /\bapt-get\b.*\binstall\b/.test(r));
  if (!install) problems.push('no RUN apt-get install in the image');
  else {
    const words = aptPackages(install);
    for (const pkg of ['iptables', 'ipset', 'conntrack']) if (!words.includes(pkg)) problems.push(`apt-get install does not install ${pkg}`);
    if (!/rm -rf \/var\/lib\/apt\/lists/.test(install)) problems.push('the apt RUN must remove /var/lib/apt/lists');
  }
  for (const r of runs) {
    const tools = aptPackages(r).filter((w) => TOOLCHAIN.test(w));
    if (tools.length > 0) problems.push(`the image installs ${tools.join(', ')}: build native code in a build stage and COPY --from it`);
  }
  const npmCi = runs.find((r) => /\bnpm ci\b/.test(r));
  if (!npmCi || !/--omit=dev\b/.test(npmCi)) problems.push('dependencies must be installed with npm ci --omit=dev');

  const copies = ins.filter((i) => i.keyword === 'COPY').map(copyOf);
  const sources = new Set(copies.filter((c) => c.from === undefined).flatMap((c) => c.sources).map((s) => s.replace(/\/+$/, '')));
  for (const need of ['package.json', 'package-lock.json', 'bin', 'src']) if (!sources.has(need)) problems.push(`the image does not COPY ${need}`);
  const copyLockIdx = ins.findIndex((i) => i.keyword === 'COPY' && /package-lock\.json/.test(i.args));
  const npmIdx = ins.findIndex((i) => i.keyword === 'RUN' && /\bnpm ci\b/.test(i.args));
  if (copyLockIdx < 0 || npmIdx < copyLockIdx) problems.push('npm ci must run after package-lock.json is copied');

  const ep = entrypointOf(all);
  if (!ep) problems.push('ENTRYPOINT must be in exec form (a JSON array), so signals reach node');
  else if (ep[0] !== 'node' || !/(^|\/)bin\/policyctl\.js$/.test(ep[1] ?? '') || ep[2] !== 'agent') {
    problems.push(`ENTRYPOINT must run node bin/policyctl.js agent, got ${JSON.stringify(ep)}`);
  }

  // policyctl-cni's front end, at the path install-cni takes it from: the app folder (the one
  // holding bin/policyctl.js) joined with PREBUILT_SHIM; from a build stage that runs
  // src/cni/shim/build.sh (static, the flags a checkout's install uses).
  if (ep?.[1]?.startsWith('/')) {
    const want = posix.join(posix.dirname(posix.dirname(ep[1])), PREBUILT_SHIM);
    const workdir = (at: number) => ins.slice(0, at).filter((i) => i.keyword === 'WORKDIR').reduce((d, i) => posix.resolve(d, i.args), '/');
    const shim = ins.map((i, at) => ({ i, at })).filter(({ i }) => i.keyword === 'COPY').find(({ i, at }) => posix.resolve(workdir(at), copyOf(i).dest) === want);
    if (!shim) problems.push(`the image has no COPY to ${want}, where install-cni takes policyctl-cni's front end from (without it, the node gets the slower Node plugin alone)`);
    else {
      const from = copyOf(shim.i).from;
      const stage = from === undefined ? undefined : stageNamed(stages, from, image.index);
      if (!stage) problems.push(`${want} must come from a build stage (COPY --from=<stage>), which builds it with src/cni/shim/build.sh`);
      else if (!stage.instructions.some((i) => i.keyword === 'RUN' && /\bsrc\/cni\/shim\/build\.sh\b/.test(i.args))) problems.push(`stage ${stage.name ?? stage.index} must build the front end with src/cni/shim/build.sh`);
    }
  }
  return problems;
}

/**
 * The Dockerfile-specific ignore file is an allow-list: it starts by excluding everything and
 * re-includes exactly what the Dockerfile copies (so node_modules and .git never enter the
 * build context).
 */
export function checkDockerignore(ignoreText: string, dockerfileText: string): string[] {
  const patterns = ignoreText.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const problems: string[] = [];
  if (patterns[0] !== '*') problems.push(`the ignore file must start with "*" (allow-list), got ${JSON.stringify(patterns[0])}`);
  const included = new Set(patterns.filter((p) => p.startsWith('!')).map((p) => p.slice(1).replace(/\/+$/, '')));
  // COPY --from copies from a stage, not from the context. A path is in when it or a folder
  // holding it is re-included.
  const copied = parseDockerfile(dockerfileText)
    .filter((i) => i.keyword === 'COPY')
    .map(copyOf)
    .filter((c) => c.from === undefined)
    .flatMap((c) => c.sources)
    .map((s) => s.replace(/\/+$/, ''));
  const within = (src: string) => src.split('/').some((_, n, parts) => included.has(parts.slice(0, n + 1).join('/')));
  for (const src of copied) if (!within(src)) problems.push(`the Dockerfile copies ${src}, which the ignore file does not re-include`);
  for (const inc of included) if (/node_modules|^\.git$/.test(inc)) problems.push(`the ignore file re-includes ${inc}`);
  return problems;
}
