// policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy -> ClusterPolicyRecord, validated as the
// CRD's schema validates it (kubernetes-sigs/network-policy-api v0.2.0: enums, 0-1000 priority,
// "exactly one field" objects, at most 25 rules per direction, 1-25 peers, protocols and
// networks per rule, start < end in a port range, rule names of at most 100 characters, no
// destinationNamedPort with a networks peer), plus the label selector and CIDR syntax the
// enforcer needs to read them.
//
// Two ways to fail closed (docs/design.md, invariant fail-closed):
// - Invalid (an issue the API server would refuse): the record keeps what it could read of tier
//   (else Admin), priority (else 0) and subject (else every pod), and each direction the policy
//   has rules for holds one rule that denies everything. An error never opens a path.
// - Unsupported (valid, but not something this agent can enforce: the experimental `nodes` and
//   `domainNames` peers; a peer or a subject with no field it knows, which the API says means a
//   newer CRD than the implementation's): the API's own fail-closed reading applies to each rule
//   concerned: an Accept rule matches nothing, a Deny or Pass rule denies everything. A subject
//   with no known field selects every pod, with every rule read that way.
// Either way the record says why (`issues`, `unsupported`, and `failClosed` on each rule).

import { CidrError, parseCidr } from './cidr.ts';
import { type IssueList, type Obj, childPath, indexPath, isAbsent, isObject } from './issues.ts';
import { parseSelector } from './parse-selector.ts';
import { EVERYTHING } from './selector.ts';
import type { Cidr, ClusterPolicyRecord, CnpAction, CnpPeer, CnpProtocolMatch, CnpRule, CnpTier, PodsPeer, Protocol, Selector } from './types.ts';
import { CNP_ACTIONS, CNP_TIERS } from './types.ts';

/** The CRD's limits. */
export const CNP_MAX_RULES = 25;
export const CNP_MAX_PEERS = 25;
export const CNP_MAX_PROTOCOLS = 25;
export const CNP_MAX_NETWORKS = 25;
export const CNP_MAX_DOMAIN_NAMES = 25;
export const CNP_MAX_RULE_NAME = 100;
export const CNP_MAX_PRIORITY = 1000;
const CIDR_MAX_LENGTH = 43;

/** The CRD's pattern for a domain name (`*.` prefix allowed). */
const DOMAIN_NAME = /^(\*\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$/;

const PROTOCOL_FIELDS: ReadonlyArray<readonly [field: string, protocol: Protocol]> = [
  ['tcp', 'TCP'],
  ['udp', 'UDP'],
  ['sctp', 'SCTP'],
];

export interface ClusterPolicyIdentity {
  readonly uid: string;
  readonly name: string;
  /**
   * False when the object has no usable name: several such objects can share one UID, so which
   * one survives is unknown, and the record then applies to every pod.
   */
  readonly named: boolean;
}

type Direction = 'ingress' | 'egress';

/** Where a rule's fail-closed form comes from. */
interface RuleDraft {
  readonly name: string;
  /** Undefined when the action could not be read. */
  readonly action?: CnpAction;
  readonly peers: CnpPeer[];
  readonly protocols?: CnpProtocolMatch[];
  /** Unsupported constructs of this rule, as sentences. */
  readonly unsupported: string[];
}

/**
 * Build the record. `issues` may already hold issues of the envelope (apiVersion, metadata);
 * any issue makes the record fail closed. `unsupported` receives the constructs read but not
 * enforced as written.
 */
export function normalizeClusterPolicy(obj: Obj, id: ClusterPolicyIdentity, issues: IssueList, unsupported: IssueList): ClusterPolicyRecord {
  const rawSpec = obj['spec'];
  let spec: Obj = {};
  const specOk = isObject(rawSpec);
  if (specOk) spec = rawSpec;
  else issues.add('spec', rawSpec, isAbsent(rawSpec) ? 'required field is missing' : 'must be an object');
  issues.unknownFields('spec', spec, ['tier', 'priority', 'subject', 'ingress', 'egress']);

  const tier = parseTier(spec['tier'], specOk, issues);
  const priority = parsePriority(spec['priority'], specOk, issues);
  const subject = parseSubject(spec['subject'], specOk, issues, unsupported);
  const ingress = parseRules(spec['ingress'], 'spec.ingress', 'ingress', issues, unsupported);
  const egress = parseRules(spec['egress'], 'spec.egress', 'egress', issues, unsupported);

  const base = { kind: 'ClusterNetworkPolicy' as const, uid: id.uid, name: id.name, unsupported: [...unsupported.items] };
  if (issues.count > 0) {
    const why = `the policy is invalid (${issues.count === 1 ? '1 issue' : `${issues.count} issues`}): fails closed, denying all`;
    const deny = (d: Direction, v: unknown): CnpRule[] =>
      !specOk || (!isAbsent(v) && !(Array.isArray(v) && v.length === 0)) ? [{ name: '', action: 'Deny', peers: [{ kind: 'any' }], failClosed: `${why} ${d} traffic` }] : [];
    return {
      ...base,
      tier: tier ?? 'Admin',
      priority: priority ?? 0,
      subject: subject && id.named ? subject.peer : everyPod(),
      ingress: deny('ingress', spec['ingress']),
      egress: deny('egress', spec['egress']),
      issues: [...issues.items],
    };
  }
  // Valid: `tier`, `priority` and `subject` were read (each missing one is an issue).
  const subjectUnknown = subject!.unknown;
  const finish = (drafts: readonly RuleDraft[]): CnpRule[] => drafts.map((d) => finishRule(d, subjectUnknown));
  return { ...base, tier: tier!, priority: priority!, subject: subject!.peer, ingress: finish(ingress), egress: finish(egress), issues: [] };
}

/** Every pod of the cluster, as a subject. */
function everyPod(): PodsPeer {
  return { kind: 'pods', namespaces: { kind: 'selector', selector: EVERYTHING } };
}

/** A valid rule in the form it is enforced in. */
function finishRule(d: RuleDraft, subjectUnknown: string | undefined): CnpRule {
  const reasons = subjectUnknown ? [subjectUnknown, ...d.unsupported] : d.unsupported;
  const base = { name: d.name };
  if (reasons.length === 0) return { ...base, action: d.action!, peers: d.peers, ...(d.protocols && { protocols: d.protocols }) };
  const what = reasons.join('; ');
  if (d.action === 'Accept') return { ...base, action: 'Accept', peers: [], failClosed: `${what}: an Accept rule fails closed, matching nothing` };
  return { ...base, action: 'Deny', peers: [{ kind: 'any' }], failClosed: `${what}: a ${d.action} rule fails closed, denying all traffic` };
}

function parseTier(v: unknown, specOk: boolean, issues: IssueList): CnpTier | undefined {
  if (isAbsent(v)) {
    if (specOk) issues.add('spec.tier', v, `required field is missing (${CNP_TIERS.join(' or ')})`);
    return undefined;
  }
  const t = CNP_TIERS.find((x) => x === v);
  if (!t) issues.add('spec.tier', v, `unsupported value: must be ${CNP_TIERS.join(' or ')}`);
  return t;
}

function parsePriority(v: unknown, specOk: boolean, issues: IssueList): number | undefined {
  const path = 'spec.priority';
  if (isAbsent(v)) {
    if (specOk) issues.add(path, v, `required field is missing (0 to ${CNP_MAX_PRIORITY}, lower first)`);
    return undefined;
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    issues.add(path, v, `must be an integer from 0 to ${CNP_MAX_PRIORITY}${typeof v === 'string' ? ' (unquoted in YAML)' : ''}`);
    return undefined;
  }
  if (v < 0 || v > CNP_MAX_PRIORITY) {
    issues.add(path, v, `must be between 0 and ${CNP_MAX_PRIORITY}, inclusive`);
    return undefined;
  }
  return v;
}

/**
 * `{peer, unknown}`: `unknown` is set (a sentence) when the subject names no field this agent
 * knows; the peer is then every pod. Undefined when the subject is invalid.
 */
function parseSubject(v: unknown, specOk: boolean, issues: IssueList, unsupported: IssueList): { peer: PodsPeer; unknown?: string } | undefined {
  const path = 'spec.subject';
  if (isAbsent(v)) {
    if (specOk) issues.add(path, v, 'required field is missing (namespaces or pods)');
    return undefined;
  }
  if (!isObject(v)) {
    issues.add(path, v, 'must be an object with exactly one of namespaces or pods');
    return undefined;
  }
  const known = ['namespaces', 'pods'];
  const present = known.filter((k) => !isAbsent(v[k]));
  if (present.length === 0) {
    // The API: an object of this kind with none of its fields set means a newer CRD added one.
    const fields = Object.keys(v);
    const why = fields.length
      ? `subject uses ${fields.map((f) => JSON.stringify(f)).join(', ')}, which policyctl does not know (a newer API?); it is read as every pod`
      : 'subject names no pods (no namespaces or pods field; a newer API?); it is read as every pod';
    unsupported.add(path, v, why);
    return { peer: everyPod(), unknown: 'the subject names nothing policyctl understands' };
  }
  issues.unknownFields(path, v, known);
  if (present.length > 1) {
    issues.add(path, v, 'must set exactly one of namespaces or pods');
    return undefined;
  }
  const before = issues.count;
  const peer = present[0] === 'namespaces' ? namespacesPeer(v['namespaces'], childPath(path, 'namespaces'), issues) : podsPeer(v['pods'], childPath(path, 'pods'), issues);
  return peer && issues.count === before ? { peer } : undefined;
}

function namespacesPeer(v: unknown, path: string, issues: IssueList): PodsPeer | undefined {
  const sel = parseSelector(v, path, issues);
  return sel.ok ? { kind: 'pods', namespaces: { kind: 'selector', selector: sel.selector } } : undefined;
}

function podsPeer(v: unknown, path: string, issues: IssueList): PodsPeer | undefined {
  if (!isObject(v)) {
    issues.add(path, v, 'must be an object with podSelector and an optional namespaceSelector');
    return undefined;
  }
  issues.unknownFields(path, v, ['namespaceSelector', 'podSelector']);
  const before = issues.count;
  // namespaceSelector: absent or empty selects every namespace.
  let namespaces: Selector = EVERYTHING;
  if (!isAbsent(v['namespaceSelector'])) namespaces = parseSelector(v['namespaceSelector'], childPath(path, 'namespaceSelector'), issues).selector;
  let pods: Selector = EVERYTHING;
  if (isAbsent(v['podSelector'])) issues.add(childPath(path, 'podSelector'), v['podSelector'], 'required field is missing (use {} to select every pod)');
  else pods = parseSelector(v['podSelector'], childPath(path, 'podSelector'), issues).selector;
  if (issues.count !== before) return undefined;
  return { kind: 'pods', namespaces: { kind: 'selector', selector: namespaces }, pods };
}

function parseRules(v: unknown, path: string, dir: Direction, issues: IssueList, unsupported: IssueList): RuleDraft[] {
  if (isAbsent(v)) return [];
  if (!Array.isArray(v)) {
    issues.add(path, v, 'must be a list of rules');
    return [];
  }
  if (v.length > CNP_MAX_RULES) issues.add(path, v.length, `must have at most ${CNP_MAX_RULES} rules`);
  const peerField = dir === 'ingress' ? 'from' : 'to';
  const out: RuleDraft[] = [];
  v.forEach((item, i) => {
    const rulePath = indexPath(path, i);
    if (!isObject(item)) {
      issues.add(rulePath, item, `must be a rule object (action, ${peerField}, optional name and protocols)`);
      return;
    }
    issues.unknownFields(rulePath, item, ['name', 'action', peerField, 'protocols']);
    const name = parseRuleName(item['name'], childPath(rulePath, 'name'), issues);
    const action = parseAction(item['action'], childPath(rulePath, 'action'), issues);
    const ruleUnsupported: string[] = [];
    const peersPath = childPath(rulePath, peerField);
    const peers: CnpPeer[] = [];
    let hasNetworks = false;
    const rawPeers = item[peerField];
    if (isAbsent(rawPeers)) issues.add(peersPath, rawPeers, `required field is missing (at least one peer)`);
    else if (!Array.isArray(rawPeers)) issues.add(peersPath, rawPeers, 'must be a list of peers');
    else {
      if (rawPeers.length === 0) issues.add(peersPath, rawPeers, 'must have at least 1 item');
      if (rawPeers.length > CNP_MAX_PEERS) issues.add(peersPath, rawPeers.length, `must have at most ${CNP_MAX_PEERS} peers`);
      rawPeers.forEach((p, j) => {
        const r = parsePeer(p, indexPath(peersPath, j), dir, issues);
        if (!r) return;
        if (r.kind === 'unsupported') {
          unsupported.add(indexPath(peersPath, j), p, r.why);
          ruleUnsupported.push(`${peerField}[${j}] ${r.short}`);
        } else {
          if (r.kind === 'networks') hasNetworks = true;
          peers.push(r);
        }
      });
    }
    const protocols = parseProtocols(item['protocols'], childPath(rulePath, 'protocols'), issues);
    if (hasNetworks && protocols?.some((p) => p.kind === 'namedPort')) {
      issues.add(childPath(rulePath, 'protocols'), item['protocols'], 'destinationNamedPort cannot be used with a networks peer: addresses outside pods have no named ports');
    }
    out.push({ name, ...(action && { action }), peers, ...(protocols && { protocols }), unsupported: ruleUnsupported });
  });
  return out;
}

function parseRuleName(v: unknown, path: string, issues: IssueList): string {
  if (isAbsent(v)) return '';
  if (typeof v !== 'string') {
    issues.add(path, v, 'must be a string');
    return '';
  }
  if (v.length > CNP_MAX_RULE_NAME) issues.add(path, v, `must be no more than ${CNP_MAX_RULE_NAME} characters`);
  return v;
}

function parseAction(v: unknown, path: string, issues: IssueList): CnpAction | undefined {
  if (isAbsent(v)) {
    issues.add(path, v, `required field is missing (${CNP_ACTIONS.join(', ')})`);
    return undefined;
  }
  const a = CNP_ACTIONS.find((x) => x === v);
  if (!a) issues.add(path, v, `unsupported value: must be one of ${CNP_ACTIONS.join(', ')}`);
  return a;
}

type ParsedPeer = CnpPeer | { readonly kind: 'unsupported'; readonly why: string; readonly short: string };

function parsePeer(v: unknown, path: string, dir: Direction, issues: IssueList): ParsedPeer | undefined {
  const known = dir === 'ingress' ? ['namespaces', 'pods'] : ['namespaces', 'pods', 'networks', 'nodes', 'domainNames'];
  if (!isObject(v)) {
    issues.add(path, v, `must be a peer object with exactly one of ${known.join(', ')}`);
    return undefined;
  }
  const present = known.filter((k) => !isAbsent(v[k]));
  if (present.length === 0) {
    const fields = Object.keys(v);
    const why = fields.length
      ? `peer uses ${fields.map((f) => JSON.stringify(f)).join(', ')}, which policyctl does not know for ${dir} (a newer API?)`
      : 'peer sets no field (a newer API whose field was dropped?)';
    return { kind: 'unsupported', why: `${why}: its rule fails closed`, short: fields.length ? `uses ${fields.join(', ')}` : 'sets no field' };
  }
  issues.unknownFields(path, v, known);
  if (present.length > 1) {
    issues.add(path, v, `must set exactly one of ${known.join(', ')} (got ${present.join(', ')})`);
    return undefined;
  }
  const field = present[0]!;
  const fpath = childPath(path, field);
  const before = issues.count;
  switch (field) {
    case 'namespaces':
      return namespacesPeer(v[field], fpath, issues);
    case 'pods':
      return podsPeer(v[field], fpath, issues);
    case 'networks':
      return parseNetworks(v[field], fpath, issues);
    case 'nodes':
      // Experimental: validated as the experimental CRD would, then not enforced.
      parseSelector(v[field], fpath, issues);
      if (issues.count !== before) return undefined;
      return { kind: 'unsupported', why: 'nodes peers are experimental and not supported by policyctl: its rule fails closed', short: 'uses nodes (unsupported)' };
    default:
      validateDomainNames(v[field], fpath, issues);
      if (issues.count !== before) return undefined;
      return { kind: 'unsupported', why: 'domainNames peers are experimental and not supported by policyctl: its rule fails closed', short: 'uses domainNames (unsupported)' };
  }
}

function parseNetworks(v: unknown, path: string, issues: IssueList): CnpPeer | undefined {
  if (!Array.isArray(v)) {
    issues.add(path, v, 'must be a list of CIDRs');
    return undefined;
  }
  const before = issues.count;
  if (v.length === 0) issues.add(path, v, 'must have at least 1 item');
  if (v.length > CNP_MAX_NETWORKS) issues.add(path, v.length, `must have at most ${CNP_MAX_NETWORKS} CIDRs`);
  const cidrs: Cidr[] = [];
  const seen = new Set<string>();
  v.forEach((x, i) => {
    const p = indexPath(path, i);
    if (typeof x !== 'string' || x === '') {
      issues.add(p, x, 'must be a CIDR string such as 10.0.0.0/8');
      return;
    }
    if (seen.has(x)) issues.add(p, x, 'duplicate value: networks is a set');
    seen.add(x);
    if (x.length > CIDR_MAX_LENGTH) issues.add(p, x, `must be no more than ${CIDR_MAX_LENGTH} characters`);
    if (!x.includes('/')) {
      issues.add(p, x, 'invalid CIDR format: a prefix length is required (e.g. 10.0.0.1/32)');
      return;
    }
    try {
      cidrs.push(parseCidr(x));
    } catch (e) {
      if (!(e instanceof CidrError)) throw e;
      issues.add(p, x, `invalid CIDR format: ${e.message}`);
    }
  });
  return issues.count === before ? { kind: 'networks', cidrs } : undefined;
}

function validateDomainNames(v: unknown, path: string, issues: IssueList): void {
  if (!Array.isArray(v)) {
    issues.add(path, v, 'must be a list of domain names');
    return;
  }
  if (v.length === 0) issues.add(path, v, 'must have at least 1 item');
  if (v.length > CNP_MAX_DOMAIN_NAMES) issues.add(path, v.length, `must have at most ${CNP_MAX_DOMAIN_NAMES} domain names`);
  const seen = new Set<unknown>();
  v.forEach((x, i) => {
    const p = indexPath(path, i);
    if (typeof x !== 'string' || !DOMAIN_NAME.test(x)) issues.add(p, x, 'must be a domain name such as example.com or *.example.com');
    else if (seen.has(x)) issues.add(p, x, 'duplicate value: domainNames is a set');
    seen.add(x);
  });
}

/** Absent: every protocol and port (undefined). Items that fail are left out (the policy is then invalid). */
function parseProtocols(v: unknown, path: string, issues: IssueList): CnpProtocolMatch[] | undefined {
  if (isAbsent(v)) return undefined;
  if (!Array.isArray(v)) {
    issues.add(path, v, 'must be a list of protocol matches');
    return undefined;
  }
  if (v.length === 0) issues.add(path, v, 'must have at least 1 item (leave protocols out to match all traffic)');
  if (v.length > CNP_MAX_PROTOCOLS) issues.add(path, v.length, `must have at most ${CNP_MAX_PROTOCOLS} entries`);
  const out: CnpProtocolMatch[] = [];
  v.forEach((x, i) => {
    const m = parseProtocol(x, indexPath(path, i), issues);
    if (m) out.push(m);
  });
  return out;
}

function parseProtocol(v: unknown, path: string, issues: IssueList): CnpProtocolMatch | undefined {
  const known = [...PROTOCOL_FIELDS.map(([f]) => f), 'destinationNamedPort'];
  if (!isObject(v)) {
    issues.add(path, v, `must be an object with exactly one of ${known.join(', ')}`);
    return undefined;
  }
  issues.unknownFields(path, v, known);
  const present = known.filter((k) => !isAbsent(v[k]));
  if (present.length !== 1) {
    issues.add(path, v, `must set exactly one of ${known.join(', ')}${present.length ? ` (got ${present.join(', ')})` : ''}`);
    return undefined;
  }
  const field = present[0]!;
  const fpath = childPath(path, field);
  const raw = v[field];
  if (field === 'destinationNamedPort') {
    if (typeof raw !== 'string' || raw === '') {
      issues.add(fpath, raw, 'must be a non-empty container port name');
      return undefined;
    }
    return { kind: 'namedPort', name: raw };
  }
  const protocol = PROTOCOL_FIELDS.find(([f]) => f === field)![1];
  if (!isObject(raw)) {
    issues.add(fpath, raw, 'must be an object with destinationPort');
    return undefined;
  }
  issues.unknownFields(fpath, raw, ['destinationPort']);
  const dpPath = childPath(fpath, 'destinationPort');
  const dp = raw['destinationPort'];
  if (isAbsent(dp)) {
    issues.add(dpPath, dp, `required field is missing: give number or range (range 1-65535 for every ${protocol} port)`);
    return undefined;
  }
  if (!isObject(dp)) {
    issues.add(dpPath, dp, 'must be an object with exactly one of number or range');
    return undefined;
  }
  issues.unknownFields(dpPath, dp, ['number', 'range']);
  const has = ['number', 'range'].filter((k) => !isAbsent(dp[k]));
  if (has.length !== 1) {
    issues.add(dpPath, dp, `must set exactly one of number or range${has.length ? ' (got both)' : ''}`);
    return undefined;
  }
  const before = issues.count;
  if (has[0] === 'number') {
    const n = portNumber(dp['number'], childPath(dpPath, 'number'), issues);
    return n !== undefined ? { kind: 'port', protocol, port: n } : undefined;
  }
  const rPath = childPath(dpPath, 'range');
  const range = dp['range'];
  if (!isObject(range)) {
    issues.add(rPath, range, 'must be an object with start and end');
    return undefined;
  }
  issues.unknownFields(rPath, range, ['start', 'end']);
  const start = portNumber(range['start'], childPath(rPath, 'start'), issues);
  const end = portNumber(range['end'], childPath(rPath, 'end'), issues);
  if (start !== undefined && end !== undefined && !(start < end)) {
    issues.add(rPath, range, `start (${start}) must be less than end (${end})`);
  }
  if (issues.count !== before || start === undefined || end === undefined) return undefined;
  return { kind: 'port', protocol, port: start, endPort: end };
}

function portNumber(v: unknown, path: string, issues: IssueList): number | undefined {
  if (isAbsent(v)) {
    issues.add(path, v, 'required field is missing');
    return undefined;
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    issues.add(path, v, 'must be an integer port number');
    return undefined;
  }
  if (v < 1 || v > 65535) {
    issues.add(path, v, 'must be between 1 and 65535, inclusive');
    return undefined;
  }
  return v;
}
