// One Kubernetes object as read from a manifest or the API -> one validated, defaulted record.
//
// Pure (no I/O): sources call `normalize` and decide what to do with the issues. Rules:
// - Known kinds: Pod, Namespace, Node (core v1), NetworkPolicy (networking.k8s.io/v1) and
//   ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2, cluster-scoped).
//   Other kinds, and same-named kinds of other API groups (e.g. Calico's
//   projectcalico.org/v3 NetworkPolicy), are `skipped`, not errors. A known kind spelled
//   another way (`networkpolicy`, `Pods`) or with a wrong apiVersion (`v1` for a
//   NetworkPolicy, `networking.k8s.io` without a version, wrong case) is read as that kind
//   with an issue on `kind` / `apiVersion`: it never vanishes silently, and a NetworkPolicy
//   read that way fails closed like any invalid policy. So is a kind with spaces or invisible
//   characters in it (`"NetworkPolicy "`).
// - Nothing of our API groups vanishes unseen: a kind networking.k8s.io or
//   policy.networking.k8s.io does not serve (the v1alpha1 AdminNetworkPolicy and
//   BaselineAdminNetworkPolicy, which ClusterNetworkPolicy replaces; a misspelled kind) is
//   skipped with an issue on `kind` naming kind and apiVersion; the loader makes it an error.
//   Kinds of other groups are skipped without one.
// - A document that could not be read whole (a YAML syntax error, a cyclic value) is read by
//   `normalizeUnreadable` from what its envelope still shows: a NetworkPolicy whose namespace
//   is known fails closed for that whole namespace, in both directions.
// - Pod addresses are validated as the API server does (unicast, podIPs[0] = podIP); a pod
//   with a bad one gets no address at all (fail closed: in no allow set).
// - Defaults as the API server / kubectl apply would set them: namespace `default`, the
//   `kubernetes.io/metadata.name` namespace label, protocol TCP, policyTypes.
// - Fail closed (docs/design.md, invariant fail-closed): an invalid NetworkPolicy still yields a record that isolates
//   (see normalize-policy.ts), and so does an invalid ClusterNetworkPolicy: it denies what its rules
//   would have decided (see normalize-cluster-policy.ts). Pods, Namespaces and Nodes with bad fields yield a record
//   without the unusable fields, as long as name (and namespace) are usable.
// - The enforcer programs IPv4 only: IPv6 pod IPs, node addresses and podCIDRs are left out
//   without an issue (they are valid, just not ours).

import { CidrError, normalizeIPv4, parseCidr } from './cidr.ts';
import { IssueList, type Obj, childPath, indexPath, isAbsent, isObject, keyPath } from './issues.ts';
import { normalizeClusterPolicy } from './normalize-cluster-policy.ts';
import { normalizePolicy, unreadablePolicy } from './normalize-policy.ts';
import { NAMESPACE_NAME_LABEL } from './store.ts';
import type { ContainerPort, NamespaceRecord, NodeRecord, ObjectRecord, PodRecord, Protocol, ValidationIssue } from './types.ts';
import { PROTOCOLS } from './types.ts';
import { dns1123LabelErrors, dns1123SubdomainErrors, labelKeyErrors, labelValueErrors, portNameErrors, portNumberErrors } from './validation.ts';

export interface NormalizeResult {
  /** Absent when the object is skipped or too broken to identify. */
  readonly record?: ObjectRecord;
  /**
   * Everything wrong with the object; a NetworkPolicy record carries the same list. For a
   * ClusterNetworkPolicy: its `issues`, then its `unsupported` constructs (both fail closed).
   */
  readonly issues: ValidationIssue[];
  /** kubectl-style reference, e.g. `networkpolicy/ns/name`; `<unnamed>` stands in for a missing name. */
  readonly ref: string;
  /** Set when the kind is not one the enforcer reads: the kind (with apiVersion when the group differs). */
  readonly skipped?: string;
}

export const UNNAMED = '<unnamed>';

interface KindSpec {
  readonly group: string;
  readonly version: string;
  readonly namespaced: boolean;
}

const KINDS: Readonly<Record<string, KindSpec>> = {
  Pod: { group: '', version: 'v1', namespaced: true },
  Namespace: { group: '', version: 'v1', namespaced: false },
  Node: { group: '', version: 'v1', namespaced: false },
  NetworkPolicy: { group: 'networking.k8s.io', version: 'v1', namespaced: true },
  ClusterNetworkPolicy: { group: 'policy.networking.k8s.io', version: 'v1alpha2', namespaced: false },
};

/** Groups that once served a kind under another version: still that kind, with an issue. */
const FORMER_GROUPS: Readonly<Record<string, readonly string[]>> = { NetworkPolicy: ['extensions'] };

/**
 * A known kind written another way (`networkpolicy`, `Networkpolicy`, `pods`): the API server
 * would refuse it, and skipping it would silently drop what it enforces. Case-insensitive,
 * with the plural kubectl accepts.
 */
const KIND_SPELLINGS: ReadonlyMap<string, string> = new Map(
  Object.keys(KINDS).flatMap((k) => {
    const lower = k.toLowerCase();
    return [lower, lower.endsWith('y') ? `${lower.slice(0, -1)}ies` : `${lower}s`].map((s) => [s, k] as const);
  }),
);

/**
 * Spaces and characters that show as nothing (zero-width, word joiner, byte order mark): a kind
 * holding one (`"NetworkPolicy "`, a paste from a web page) is still the kind it shows.
 */
const INVISIBLE = /[\s\u200b-\u200f\u2060\ufeff]/g;

/** The kind as it shows, without spaces or invisible characters. */
function visibleKind(kind: string): string {
  return kind.replace(INVISIBLE, '');
}

/** The known kind a `kind` value means, exactly or spelled another way; undefined for other kinds. */
export function knownKind(kind: string): { readonly kind: string; readonly exact: boolean } | undefined {
  if (KINDS[kind]) return { kind, exact: true };
  const k = KIND_SPELLINGS.get(visibleKind(kind).toLowerCase());
  return k ? { kind: k, exact: false } : undefined;
}

/**
 * Our API groups and the kinds they serve that the enforcer does not read (an Ingress next to
 * its app's policies is no mistake). Any other kind of these groups is one: it is reported, not
 * skipped silently, since its author meant a policy and it enforces nothing.
 */
const OUR_GROUPS: ReadonlyMap<string, readonly string[]> = new Map([
  ['networking.k8s.io', ['Ingress', 'IngressClass', 'IPAddress', 'ServiceCIDR']],
  ['policy.networking.k8s.io', []],
]);

/** The v1alpha1 kinds ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) replaces. */
const FORMER_POLICY_KINDS = ['AdminNetworkPolicy', 'BaselineAdminNetworkPolicy'];

/**
 * The issue of a kind that is not ours written with one of our API groups; undefined for a kind
 * that group serves, or another group. The group is matched in any letter case (`Networking.k8s.io`
 * is a mistake in our group, not another API).
 */
function unknownKindOfOurGroup(kind: string, apiVersion: unknown): string | undefined {
  if (typeof apiVersion !== 'string') return undefined;
  const slash = apiVersion.indexOf('/');
  const group = (slash < 0 ? apiVersion : apiVersion.slice(0, slash)).toLowerCase();
  const served = OUR_GROUPS.get(group);
  if (!served || served.includes(kind)) return undefined;
  const what = `unknown kind in apiVersion ${JSON.stringify(apiVersion)}`;
  const former = FORMER_POLICY_KINDS.find((k) => k === visibleKind(kind));
  if (former !== undefined) {
    return `${what}: ${former} is the older API (v1alpha1) that ClusterNetworkPolicy (${apiVersionOf(KINDS['ClusterNetworkPolicy']!)}) replaces; it is not enforced: rewrite it as a ClusterNetworkPolicy`;
  }
  return `${what}: not enforced (the kinds enforced are ${Object.entries(KINDS)
    .filter(([, s]) => s.group !== '')
    .map(([k, s]) => `${k} (${apiVersionOf(s)})`)
    .join(' and ')})`;
}

/**
 * Whether an apiVersion names another API that happens to have a kind of the same name
 * (Calico's `projectcalico.org/v3` NetworkPolicy, `crd.projectcalico.org/v1`): a well-formed
 * `group/version` whose group is a lower-case DNS name with a dot and is not Kubernetes' own
 * (`*.k8s.io`, `*.kubernetes.io`, or a built-in group without a dot). Anything else on a known
 * kind (`v1` for a NetworkPolicy, `networking.k8s.io` without a version, wrong case) is a
 * mistake in our kind, not another API.
 */
function isForeignApiVersion(apiVersion: unknown): boolean {
  if (typeof apiVersion !== 'string') return false;
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+)\/(v[1-9][0-9]*((alpha|beta)[1-9][0-9]*)?)$/.exec(apiVersion);
  if (!m) return false;
  const group = m[1]!;
  return !/(^|\.)(k8s\.io|kubernetes\.io)$/.test(group);
}

export function normalize(obj: unknown): NormalizeResult {
  const issues = new IssueList();
  if (!isObject(obj)) {
    issues.add('', obj, 'not a Kubernetes object: expected a mapping with apiVersion, kind and metadata');
    return { issues: issues.items, ref: '<unknown>' };
  }
  const rawKind = obj['kind'];
  const apiVersion = obj['apiVersion'];
  const meta = isObject(obj['metadata']) ? obj['metadata'] : undefined;
  const rawName = meta?.['name'];
  const rawNs = meta?.['namespace'];
  const displayName = typeof rawName === 'string' && rawName !== '' ? rawName : UNNAMED;

  if (typeof rawKind !== 'string' || rawKind === '') {
    issues.add('kind', rawKind, 'required field is missing or not a string');
    return { issues: issues.items, ref: displayName === UNNAMED ? '<unknown>' : `<unknown>/${displayName}` };
  }
  const known = knownKind(rawKind);
  const [group, version] = splitApiVersion(apiVersion);
  if (!known || isForeignApiVersion(apiVersion)) {
    // Not ours: another kind, or a same-named kind of another API group. An unknown kind of our
    // own groups is skipped too (nothing says what it would select), but never unseen.
    const ns = typeof rawNs === 'string' && rawNs !== '' ? `${rawNs}/` : '';
    const mistake = known ? undefined : unknownKindOfOurGroup(rawKind, apiVersion);
    if (mistake !== undefined) issues.add('kind', rawKind, mistake);
    return { issues: issues.items, ref: `${rawKind.toLowerCase()}/${ns}${displayName}`, skipped: known ? `${rawKind} (${String(apiVersion)})` : rawKind };
  }
  // From here the object is read as the known kind, and a wrong envelope is an issue (an
  // error: the loader never lets an object of a known kind vanish without one).
  const kind = known.kind;
  const spec = KINDS[kind]!;
  if (!known.exact) {
    const hidden = visibleKind(rawKind) !== rawKind;
    issues.add(
      'kind',
      rawKind,
      hidden
        ? `not a kind: kinds hold no spaces or invisible characters (expected ${kind}, in apiVersion ${JSON.stringify(apiVersion)}); read as ${kind}`
        : `not a kind: kinds are singular and case-sensitive (expected ${kind}); read as ${kind}`,
    );
  }
  const ourGroup = group === spec.group || (FORMER_GROUPS[kind] ?? []).includes(group);
  if (apiVersion === undefined) issues.add('apiVersion', apiVersion, `required field is missing (expected ${apiVersionOf(spec)})`);
  else if (!ourGroup) issues.add('apiVersion', apiVersion, `unknown apiVersion for ${kind}: expected ${apiVersionOf(spec)}`);
  else if (group !== spec.group || version !== spec.version) issues.add('apiVersion', apiVersion, `unsupported apiVersion for ${kind}: expected ${apiVersionOf(spec)}`);

  const m = readMetadata(obj, kind, spec, issues);
  const ref = `${kind.toLowerCase()}/${m.namespace !== undefined ? `${m.namespace}/` : ''}${m.name ?? UNNAMED}`;
  const usable = m.name !== undefined && (!spec.namespaced || m.namespace !== undefined);

  let record: ObjectRecord | undefined;
  if (kind === 'ClusterNetworkPolicy') {
    // Fail closed: even an unnamed policy is enforced (it then applies to every pod).
    const name = m.name ?? UNNAMED;
    const unsupported = new IssueList();
    const cnp = normalizeClusterPolicy(obj, { uid: m.uid ?? name, name, named: m.name !== undefined }, issues, unsupported);
    return { record: cnp, issues: [...issues.items, ...unsupported.items], ref };
  }
  if (kind === 'NetworkPolicy') {
    // Fail closed: even an unnamed policy isolates, as long as we know its namespace.
    if (m.namespace !== undefined) {
      const name = m.name ?? UNNAMED;
      record = normalizePolicy(obj, { uid: m.uid ?? `${m.namespace}/${name}`, namespace: m.namespace, name, named: m.name !== undefined }, issues);
    }
  } else if (usable) {
    const name = m.name!;
    if (kind === 'Pod') record = normalizePod(obj, m.uid ?? `${m.namespace}/${name}`, m.namespace!, name, m.labels, issues);
    else if (kind === 'Namespace') record = normalizeNamespace(m.uid ?? name, name, m.labels);
    else record = normalizeNode(obj, m.uid ?? name, name, issues);
  }
  return { ...(record && { record }), issues: issues.items, ref };
}

/** A field of a broken document that is there but cannot be trusted (a syntax error inside it). */
export const UNREADABLE: unique symbol = Symbol('unreadable');

/**
 * What a document that could not be read whole still shows of itself: each field as read when
 * it is a plain value the error did not touch, `UNREADABLE` when it is there but cannot be
 * trusted, undefined when it is absent.
 */
export interface Envelope {
  readonly kind?: unknown;
  readonly apiVersion?: unknown;
  readonly name?: unknown;
  readonly namespace?: unknown;
  readonly uid?: unknown;
  /** True when `metadata` is absent or was read whole: an absent namespace is then `default`, as kubectl applies it. */
  readonly metadataRead: boolean;
}

export interface UnreadableResult extends NormalizeResult {
  /**
   * True when what the document holds cannot be told: neither a fail-closed record stands in for
   * it nor does it show a kind the enforcer skips. A model without it may lack an object that
   * enforces something (a List, a Pod a Deny rule names, a policy of an unknown namespace).
   */
  readonly unknown: boolean;
  /** The kind of ours it shows itself as (`NetworkPolicy`, `Pod`, ...), when it does. */
  readonly kind?: string;
}

/**
 * A document that could not be read whole (`why`: a YAML syntax error, a cyclic value), read
 * from its envelope alone. Invariant fail-closed (docs/design.md): a NetworkPolicy whose
 * namespace is known yields a record with no rules isolating every pod of that namespace in both
 * directions, since neither its podSelector nor its policyTypes can be trusted. Nothing else is
 * made up from a broken document: a ClusterNetworkPolicy, Pod, Namespace or Node is left out
 * (`unknown`: the source must not take the model for complete); a kind the enforcer skips stays
 * skipped.
 */
export function normalizeUnreadable(envelope: Envelope, why: string, at: { readonly field?: string; readonly value?: string } = {}): UnreadableResult {
  const text = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
  const issue = (message: string): ValidationIssue => ({ field: at.field ?? '', value: at.value ?? '', message });
  const rawKind = text(envelope.kind);
  const name = text(envelope.name);
  const displayName = name ?? UNNAMED;
  if (rawKind === undefined) return { issues: [issue(`${why}; document skipped, its kind unknown`)], ref: `<unknown>${name ? `/${name}` : ''}`, unknown: true };
  const known = knownKind(rawKind);
  const nsText = text(envelope.namespace);
  if (/list$/i.test(rawKind)) {
    // A List holds objects of any kind: what it would have loaded is unknown.
    return { issues: [issue(`${why}; the ${JSON.stringify(rawKind)} document is skipped with every item it holds`)], ref: rawKind.toLowerCase(), unknown: true };
  }
  if (!known || isForeignApiVersion(envelope.apiVersion)) {
    return { issues: [issue(`${why}; document skipped`)], ref: `${rawKind.toLowerCase()}/${nsText ? `${nsText}/` : ''}${displayName}`, skipped: known ? `${rawKind} (${String(envelope.apiVersion)})` : rawKind, unknown: false };
  }
  const kind = known.kind;
  const spec = KINDS[kind]!;
  // As normalize reads it: kubectl apply puts an object without a namespace into `default`.
  const namespace = !spec.namespaced ? undefined : nsText ?? (envelope.metadataRead && (envelope.namespace === undefined || envelope.namespace === null || envelope.namespace === '') ? 'default' : undefined);
  const ref = `${kind.toLowerCase()}/${spec.namespaced ? `${namespace ?? '<unknown>'}/` : ''}${displayName}`;
  if (kind === 'NetworkPolicy' && namespace !== undefined) {
    const uid = text(envelope.uid) ?? `${namespace}/${displayName}`;
    const i = issue(`${why}; enforced fail-closed: isolates every pod of namespace ${JSON.stringify(namespace)} in both directions and allows nothing (the document's podSelector and policyTypes cannot be trusted)`);
    return { record: unreadablePolicy({ uid, namespace, name: displayName, named: name !== undefined }, i), issues: [i], ref, unknown: false, kind };
  }
  const left =
    kind === 'NetworkPolicy'
      ? 'not enforced: its namespace cannot be read'
      : kind === 'ClusterNetworkPolicy'
        ? 'not enforced: a ClusterNetworkPolicy is read only from a whole document'
        : 'document skipped';
  return { issues: [issue(`${why}; ${left}`)], ref, unknown: true, kind };
}

function apiVersionOf(spec: KindSpec): string {
  return spec.group === '' ? spec.version : `${spec.group}/${spec.version}`;
}

/** The apiVersion a known kind is read in (`v1`, `networking.k8s.io/v1`, ...). */
export function apiVersionOfKind(kind: string): string | undefined {
  const spec = KINDS[kind];
  return spec ? apiVersionOf(spec) : undefined;
}

function splitApiVersion(v: unknown): [group: string, version: string] {
  if (typeof v !== 'string') return ['', ''];
  const slash = v.indexOf('/');
  return slash < 0 ? ['', v] : [v.slice(0, slash), v.slice(slash + 1)];
}

interface Metadata {
  readonly uid?: string;
  readonly name?: string;
  readonly namespace?: string;
  readonly labels: Record<string, string>;
}

function readMetadata(obj: Obj, kind: string, spec: KindSpec, issues: IssueList): Metadata {
  const raw = obj['metadata'];
  if (!isObject(raw)) {
    issues.add('metadata', raw, isAbsent(raw) ? 'required field is missing' : 'must be an object');
    return { labels: {}, ...(spec.namespaced && { namespace: 'default' }) };
  }
  let name: string | undefined;
  const rawName = raw['name'];
  if (typeof rawName === 'string' && rawName !== '') {
    name = rawName;
    const errs = kind === 'Namespace' ? dns1123LabelErrors(rawName) : dns1123SubdomainErrors(rawName);
    for (const e of errs) issues.add('metadata.name', rawName, `invalid name: ${e}`);
  } else {
    issues.add('metadata.name', rawName, isAbsent(rawName) || rawName === '' ? 'required field is missing' : 'must be a string');
  }

  let namespace: string | undefined;
  if (spec.namespaced) {
    const rawNs = raw['namespace'];
    // kubectl apply puts an object without a namespace into `default` (its context's namespace).
    if (isAbsent(rawNs) || rawNs === '') namespace = 'default';
    else if (typeof rawNs !== 'string') issues.add('metadata.namespace', rawNs, 'must be a string');
    else {
      namespace = rawNs;
      for (const e of dns1123LabelErrors(rawNs)) issues.add('metadata.namespace', rawNs, `invalid namespace name: ${e}`);
    }
  }

  const rawUid = raw['uid'];
  let uid: string | undefined;
  if (typeof rawUid === 'string' && rawUid !== '') uid = rawUid;
  else if (!isAbsent(rawUid) && rawUid !== '') issues.add('metadata.uid', rawUid, 'must be a string');

  return { labels: readLabels(raw['labels'], 'metadata.labels', issues), ...(uid && { uid }), ...(name && { name }), ...(namespace && { namespace }) };
}

/**
 * Object labels. A scalar that is not a string (`tier: 1`) is kept as its text, with an issue:
 * the API server would refuse the object, but the author's intent is unambiguous.
 */
function readLabels(v: unknown, path: string, issues: IssueList): Record<string, string> {
  const out: Record<string, string> = {};
  if (isAbsent(v)) return out;
  if (!isObject(v)) {
    issues.add(path, v, 'must be a map of label keys to values');
    return out;
  }
  for (const [k, val] of Object.entries(v)) {
    for (const e of labelKeyErrors(k)) issues.add(path, k, `invalid label key: ${e}`);
    if (typeof val === 'string') {
      for (const e of labelValueErrors(val)) issues.add(keyPath(path, k), val, `invalid label value: ${e}`);
      out[k] = val;
    } else if (typeof val === 'number' || typeof val === 'boolean') {
      issues.add(keyPath(path, k), val, `label value must be a string (quote it in YAML); read as ${JSON.stringify(String(val))}`);
      out[k] = String(val);
    } else {
      issues.add(keyPath(path, k), val, 'label value must be a string; label left out');
    }
  }
  return out;
}

function normalizeNamespace(uid: string, name: string, labels: Record<string, string>): NamespaceRecord {
  // The API server always sets this label to the name, overriding whatever was written.
  return { kind: 'Namespace', uid, name, labels: { ...labels, [NAMESPACE_NAME_LABEL]: name } };
}

function normalizePod(obj: Obj, uid: string, namespace: string, name: string, labels: Record<string, string>, issues: IssueList): PodRecord {
  const spec = isObject(obj['spec']) ? obj['spec'] : {};
  const status = isObject(obj['status']) ? obj['status'] : {};

  const nodeName = optionalString(spec, 'nodeName', 'spec', issues);
  const phase = optionalString(status, 'phase', 'status', issues);
  let hostNetwork = false;
  const hn = spec['hostNetwork'];
  if (typeof hn === 'boolean') hostNetwork = hn;
  else if (!isAbsent(hn)) issues.add('spec.hostNetwork', hn, 'must be true or false; read as false');

  const ports: ContainerPort[] = [];
  readContainerPorts(spec['containers'], 'spec.containers', false, ports, issues);
  readContainerPorts(spec['initContainers'], 'spec.initContainers', true, ports, issues);

  return {
    kind: 'Pod',
    uid,
    namespace,
    name,
    labels,
    ...(nodeName !== undefined && { nodeName }),
    ips: readPodIPs(status, issues),
    hostNetwork,
    ...(phase !== undefined && { phase }),
    ports,
  };
}

function optionalString(o: Obj, field: string, path: string, issues: IssueList): string | undefined {
  const v = o[field];
  if (typeof v === 'string' && v !== '') return v;
  if (!isAbsent(v) && v !== '') issues.add(childPath(path, field), v, 'must be a string; ignored');
  return undefined;
}

/**
 * The address an IPv4 pod IP must not be, as words; undefined for a unicast address. A pod
 * address in a hash:ip set must be a unicast host address: 0.0.0.0 makes `ipset restore` fail
 * for the whole payload, and 127/8, multicast or broadcast in an allow set would match traffic
 * that is no pod's.
 */
export function nonUnicastIPv4(ip: string): string | undefined {
  const first = Number(ip.slice(0, ip.indexOf('.')));
  if (ip === '0.0.0.0') return 'the unspecified address';
  if (first === 0) return 'an address of 0.0.0.0/8 ("this network")';
  if (first === 127) return 'a loopback address';
  if (first >= 224 && first <= 239) return 'a multicast address';
  if (ip === '255.255.255.255') return 'the broadcast address';
  if (first >= 240) return 'a reserved address (240.0.0.0/4)';
  return undefined;
}

/**
 * status.podIPs (dual-stack aware) when present and non-empty, else status.podIP.
 *
 * Fail closed: when any address is malformed or not unicast, when podIPs[0] differs from
 * podIP, or when podIPs holds two IPv4 addresses (the API server refuses each of these), the
 * pod gets no address at all, so it is in no set: its claimed addresses are not to be trusted,
 * and one of them may be another pod's.
 */
function readPodIPs(status: Obj, issues: IssueList): string[] {
  const out: string[] = [];
  let bad = false;
  const reject = (path: string, v: unknown, why: string): void => {
    issues.add(path, v, `${why}; the pod gets no address (in no allow set) until it is fixed`);
    bad = true;
  };
  const add = (v: unknown, path: string): void => {
    if (typeof v !== 'string' || v === '') return reject(path, v, 'must be an IP address string');
    if (v.includes(':')) return; // IPv6: valid, not programmed
    const ip = normalizeIPv4(v);
    if (ip === undefined) return reject(path, v, 'not a valid IPv4 address');
    const special = nonUnicastIPv4(ip);
    if (special !== undefined) return reject(path, v, `${special}, not a pod address`);
    if (out.includes(ip)) return reject(path, v, 'duplicate address');
    if (out.length > 0) return reject(path, v, `a second IPv4 address (the first is ${JSON.stringify(out[0])}): at most one address per family`);
    out.push(ip);
  };
  const list = status['podIPs'];
  const podIP = status['podIP'];
  if (Array.isArray(list) && list.length > 0) {
    list.forEach((e, i) => add(isObject(e) ? e['ip'] : e, `${indexPath('status.podIPs', i)}.ip`));
    const first = isObject(list[0]) ? list[0]['ip'] : list[0];
    if (typeof podIP === 'string' && podIP !== '' && first !== podIP) {
      reject('status.podIPs[0].ip', first, `must equal status.podIP (${JSON.stringify(podIP)})`);
    }
  } else {
    if (!isAbsent(list) && !Array.isArray(list)) issues.add('status.podIPs', list, 'must be a list of {ip}; ignored');
    if (!isAbsent(podIP)) add(podIP, 'status.podIP');
  }
  return bad ? [] : out;
}

/**
 * Ports of regular containers, and of init containers with `restartPolicy: Always` (sidecars,
 * which keep running and serve like regular containers). Named ports resolve against these.
 */
function readContainerPorts(v: unknown, path: string, sidecarsOnly: boolean, out: ContainerPort[], issues: IssueList): void {
  if (isAbsent(v)) return;
  if (!Array.isArray(v)) {
    issues.add(path, v, 'must be a list of containers');
    return;
  }
  v.forEach((c, i) => {
    if (!isObject(c)) return;
    if (sidecarsOnly && c['restartPolicy'] !== 'Always') return;
    const portsPath = childPath(indexPath(path, i), 'ports');
    const ports = c['ports'];
    if (isAbsent(ports)) return;
    if (!Array.isArray(ports)) {
      issues.add(portsPath, ports, 'must be a list of container ports');
      return;
    }
    ports.forEach((p, j) => {
      const r = readContainerPort(p, indexPath(portsPath, j), issues);
      if (r) out.push(r);
    });
  });
}

function readContainerPort(p: unknown, path: string, issues: IssueList): ContainerPort | undefined {
  if (!isObject(p)) {
    issues.add(path, p, 'must be an object with containerPort; ignored');
    return undefined;
  }
  const num = p['containerPort'];
  if (typeof num !== 'number') {
    issues.add(childPath(path, 'containerPort'), num, isAbsent(num) ? 'required field is missing; port ignored' : 'must be an integer; port ignored');
    return undefined;
  }
  const numErrs = portNumberErrors(num);
  for (const e of numErrs) issues.add(childPath(path, 'containerPort'), num, `${e}; port ignored`);
  if (numErrs.length > 0) return undefined;

  let protocol: Protocol = 'TCP';
  const rawProto = p['protocol'];
  if (!isAbsent(rawProto)) {
    const found = PROTOCOLS.find((x) => x === rawProto);
    if (!found) {
      issues.add(childPath(path, 'protocol'), rawProto, `unsupported protocol: must be one of ${PROTOCOLS.join(', ')}; port ignored`);
      return undefined;
    }
    protocol = found;
  }

  // A bad name is dropped, keeping the number: named-port rules then do not match it (fail closed).
  let name: string | undefined;
  const rawName = p['name'];
  if (typeof rawName === 'string' && rawName !== '') {
    const errs = portNameErrors(rawName);
    for (const e of errs) issues.add(childPath(path, 'name'), rawName, `invalid port name: ${e}; name ignored`);
    if (errs.length === 0) name = rawName;
  } else if (!isAbsent(rawName) && rawName !== '') {
    issues.add(childPath(path, 'name'), rawName, 'must be a string; name ignored');
  }
  return { ...(name !== undefined && { name }), containerPort: num, protocol };
}

/** The widest IPv4 pod CIDR a Node may have (normalizeNode). */
export const MIN_POD_CIDR_PREFIX = 8;

function normalizeNode(obj: Obj, uid: string, name: string, issues: IssueList): NodeRecord {
  const spec = isObject(obj['spec']) ? obj['spec'] : {};
  const status = isObject(obj['status']) ? obj['status'] : {};

  const podCIDRs: string[] = [];
  const addCidr = (v: unknown, path: string): void => {
    if (typeof v !== 'string') {
      issues.add(path, v, 'must be a CIDR string; ignored');
      return;
    }
    try {
      const c = parseCidr(v);
      // A node's pod range is a slice of the cluster's (a /24 by default). One wider than
      // MIN_POD_CIDR_PREFIX would make every address in it a pod address to every node (the
      // gate, the unknown-address drops): refused rather than trusted.
      if (c.family === 4 && c.prefix < MIN_POD_CIDR_PREFIX) {
        issues.add(path, v, `a node's pod CIDR must be /${MIN_POD_CIDR_PREFIX} or narrower (this one covers ${2 ** (32 - c.prefix)} addresses); ignored`);
        return;
      }
      if (c.family === 4 && !podCIDRs.includes(c.text)) podCIDRs.push(c.text);
    } catch (e) {
      if (!(e instanceof CidrError)) throw e;
      issues.add(path, v, `not a valid CIDR: ${e.message}; ignored`);
    }
  };
  const list = spec['podCIDRs'];
  if (Array.isArray(list) && list.length > 0) list.forEach((c, i) => addCidr(c, indexPath('spec.podCIDRs', i)));
  else if (!isAbsent(spec['podCIDR']) && spec['podCIDR'] !== '') addCidr(spec['podCIDR'], 'spec.podCIDR');

  const internalIPs: string[] = [];
  const addresses = status['addresses'];
  if (Array.isArray(addresses)) {
    addresses.forEach((a, i) => {
      if (!isObject(a) || a['type'] !== 'InternalIP') return;
      const v = a['address'];
      const path = `${indexPath('status.addresses', i)}.address`;
      if (typeof v === 'string' && v.includes(':')) return; // IPv6: not programmed
      const ip = typeof v === 'string' ? normalizeIPv4(v) : undefined;
      if (ip === undefined) issues.add(path, v, 'not a valid IPv4 address; ignored');
      else if (!internalIPs.includes(ip)) internalIPs.push(ip);
    });
  } else if (!isAbsent(addresses)) {
    issues.add('status.addresses', addresses, 'must be a list of {type, address}; ignored');
  }
  return { kind: 'Node', uid, name, podCIDRs, internalIPs };
}

/** One issue as a line: `field: message (got value)`; used by sources that print issues. */
export function formatIssue(i: ValidationIssue): string {
  const got = i.value === '' ? '' : ` (got ${i.value})`;
  return `${i.field === '' ? '' : `${i.field}: `}${i.message}${got}`;
}
