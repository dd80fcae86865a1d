// networking.k8s.io/v1 NetworkPolicy -> PolicyRecord: validation as the API server does it
// (pkg/apis/networking/validation ValidateNetworkPolicySpec), defaulting as it does it
// (SetDefaults_NetworkPolicy, protocol TCP), and the fail-closed shape for invalid policies.
//
// Invariant (docs/design.md, invariant fail-closed): a policy with any issue still yields a record that
// selects pods (its own podSelector when that is valid, else every pod of its namespace),
// keeps the policy types (both when unreadable) and has no rules, so it isolates and allows
// nothing. An error never removes isolation.

import { CidrError, cidrContains, parseCidr } from './cidr.ts';
import { type IssueList, type Obj, childPath, indexPath, isAbsent, isObject } from './issues.ts';
import { parseSelector } from './parse-selector.ts';
import { EVERYTHING } from './selector.ts';
import type { Cidr, Peer, PolicyRecord, PolicyRule, PolicyType, PortSpec, Protocol, Selector, ValidationIssue } from './types.ts';
import { PROTOCOLS } from './types.ts';
import { portNameErrors, portNumberErrors } from './validation.ts';
import { MAX_RULES_PER_POLICY, MULTIPORT_SLOTS, ruleExpansion } from './rule-expansion.ts';

const BOTH: readonly PolicyType[] = ['Ingress', 'Egress'];

export interface PolicyIdentity {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  /**
   * False when the object has no usable name. Several such objects can share a UID, so the
   * survivor's podSelector is unknown: the record then isolates the whole namespace.
   */
  readonly named: boolean;
}

/**
 * Build the record. `issues` may already hold issues of the envelope (apiVersion, metadata);
 * any issue at all makes the record fail closed, and the record carries all of them.
 */
export function normalizePolicy(obj: Obj, id: PolicyIdentity, issues: IssueList): PolicyRecord {
  const rawSpec = obj['spec'];
  let spec: Obj = {};
  if (isObject(rawSpec)) spec = rawSpec;
  else issues.add('spec', rawSpec, isAbsent(rawSpec) ? 'required field is missing' : 'must be an object');
  issues.unknownFields('spec', spec, ['podSelector', 'policyTypes', 'ingress', 'egress']);

  let podSelector: Selector = EVERYTHING;
  let podSelectorOk = false;
  if (isAbsent(spec['podSelector'])) {
    if (isObject(rawSpec)) issues.add('spec.podSelector', spec['podSelector'], 'required field is missing (use {} to select every pod of the namespace)');
  } else {
    const parsed = parseSelector(spec['podSelector'], 'spec.podSelector', issues);
    podSelector = parsed.selector;
    podSelectorOk = parsed.ok;
  }

  // An unreadable spec says nothing about direction: isolate both (types undefined).
  const types = isObject(rawSpec) ? parsePolicyTypes(spec, issues) : { defaulted: false };
  const ingress = parseRules(spec['ingress'], 'spec.ingress', 'from', id.namespace, issues);
  const egress = parseRules(spec['egress'], 'spec.egress', 'to', id.namespace, issues);
  checkExpansion(ingress, egress, issues);

  const ignored: string[] = [];
  const effective = types.types ?? BOTH;
  if (!effective.includes('Ingress') && nonEmptyList(spec['ingress'])) ignored.push('spec.ingress');
  if (!effective.includes('Egress') && nonEmptyList(spec['egress'])) ignored.push('spec.egress');

  const base = { kind: 'NetworkPolicy' as const, uid: id.uid, namespace: id.namespace, name: id.name, ignored };
  if (issues.count > 0) {
    return {
      ...base,
      podSelector: podSelectorOk && id.named ? podSelector : EVERYTHING,
      policyTypes: types.types ?? BOTH,
      policyTypesDefaulted: types.types ? types.defaulted : false,
      ingress: [],
      egress: [],
      issues: [...issues.items],
    };
  }
  return {
    ...base,
    podSelector,
    policyTypes: effective,
    policyTypesDefaulted: types.defaulted,
    ingress: effective.includes('Ingress') ? ingress : [],
    egress: effective.includes('Egress') ? egress : [],
    issues: [],
  };
}

/**
 * The record of a NetworkPolicy whose document could not be read whole (a YAML syntax error, a
 * cyclic value): only its identity is known. Invariant fail-closed: it isolates every pod of its
 * namespace in both directions and allows nothing, since no part of its spec can be trusted.
 */
export function unreadablePolicy(id: PolicyIdentity, issue: ValidationIssue): PolicyRecord {
  return {
    kind: 'NetworkPolicy',
    uid: id.uid,
    namespace: id.namespace,
    name: id.name,
    podSelector: EVERYTHING,
    policyTypes: BOTH,
    policyTypesDefaulted: false,
    ingress: [],
    egress: [],
    ignored: [],
    issues: [issue],
  };
}

function nonEmptyList(v: unknown): boolean {
  return Array.isArray(v) && v.length > 0;
}

/** `types` undefined when the field is unreadable. */
function parsePolicyTypes(spec: Obj, issues: IssueList): { types?: readonly PolicyType[]; defaulted: boolean } {
  const raw = spec['policyTypes'];
  const path = 'spec.policyTypes';
  // SetDefaults_NetworkPolicy: an absent or empty list means Ingress, plus Egress when there are
  // egress rules. A malformed `egress` (not a list) counts as rules: the policy is invalid and
  // fails closed, and the author evidently meant egress.
  if (isAbsent(raw) || (Array.isArray(raw) && raw.length === 0)) {
    const egress = spec['egress'];
    const hasEgress = nonEmptyList(egress) || (!isAbsent(egress) && !Array.isArray(egress));
    return { types: hasEgress ? BOTH : ['Ingress'], defaulted: true };
  }
  if (!Array.isArray(raw)) {
    issues.add(path, raw, 'must be a list of Ingress and/or Egress');
    return { defaulted: false };
  }
  if (raw.length > 2) {
    issues.add(path, raw, 'may not specify more than two policyTypes');
    return { defaulted: false };
  }
  const types: PolicyType[] = [];
  let ok = true;
  raw.forEach((t, i) => {
    if (t !== 'Ingress' && t !== 'Egress') {
      issues.add(indexPath(path, i), t, 'must be Ingress or Egress');
      ok = false;
    } else if (types.includes(t)) {
      issues.add(indexPath(path, i), t, `duplicate policy type ${t}`);
      ok = false;
    } else types.push(t);
  });
  return ok ? { types, defaulted: false } : { defaulted: false };
}

/**
 * What the API leaves unbounded, the node must not be made to write (rule-expansion.ts): a rule,
 * or the whole policy, that expands to more than MAX_RULES_PER_POLICY iptables rules is an issue
 * (on the rule that does, else on `spec`), and the policy fails closed like any invalid one.
 */
function checkExpansion(ingress: readonly PolicyRule[], egress: readonly PolicyRule[], issues: IssueList): void {
  const advice = 'split the rule or the policy, use fewer peers (a wider ipBlock) or port ranges';
  const each = [
    ...ingress.map((r, i) => ({ path: indexPath('spec.ingress', i), rule: r, e: ruleExpansion(r) })),
    ...egress.map((r, i) => ({ path: indexPath('spec.egress', i), rule: r, e: ruleExpansion(r) })),
  ];
  let over = false;
  for (const { path, rule, e } of each) {
    if (e.rules <= MAX_RULES_PER_POLICY) continue;
    over = true;
    issues.add(path, `${e.peers} peers, ${rule.ports?.length ?? 0} ports`, `expands to ${e.rules} iptables rules (${e.peers} peers x ${e.portMatches} port matches of at most ${MULTIPORT_SLOTS} ports each), more than the ${MAX_RULES_PER_POLICY} a policy may take: ${advice}`);
  }
  const total = each.reduce((n, x) => n + x.e.rules, 0);
  if (!over && total > MAX_RULES_PER_POLICY) {
    issues.add('spec', `${ingress.length} ingress and ${egress.length} egress rules`, `expand to ${total} iptables rules together, more than the ${MAX_RULES_PER_POLICY} a policy may take: ${advice}`);
  }
}

function parseRules(v: unknown, path: string, peerField: 'from' | 'to', namespace: string, issues: IssueList): PolicyRule[] {
  if (isAbsent(v)) return [];
  if (!Array.isArray(v)) {
    issues.add(path, v, 'must be a list of rules');
    return [];
  }
  const rules: PolicyRule[] = [];
  v.forEach((item, i) => {
    const rulePath = indexPath(path, i);
    if (!isObject(item)) {
      issues.add(rulePath, item, `must be a rule object (with ${peerField} and/or ports)`);
      return;
    }
    issues.unknownFields(rulePath, item, [peerField, 'ports']);
    const peers = parseList(item[peerField], childPath(rulePath, peerField), issues, (p, pp) => parsePeer(p, pp, namespace, issues));
    const ports = parseList(item['ports'], childPath(rulePath, 'ports'), issues, (p, pp) => parsePort(p, pp, issues));
    rules.push({ ...(peers && { peers }), ...(ports && { ports }) });
  });
  return rules;
}

/** An absent or empty list means "every" and yields undefined; items that fail are left out. */
function parseList<T>(v: unknown, path: string, issues: IssueList, item: (x: unknown, p: string) => T | undefined): T[] | undefined {
  if (isAbsent(v)) return undefined;
  if (!Array.isArray(v)) {
    issues.add(path, v, 'must be a list');
    return undefined;
  }
  if (v.length === 0) return undefined;
  const out: T[] = [];
  v.forEach((x, i) => {
    const r = item(x, indexPath(path, i));
    if (r !== undefined) out.push(r);
  });
  return out;
}

function parsePeer(v: unknown, path: string, namespace: string, issues: IssueList): Peer | undefined {
  if (!isObject(v)) {
    issues.add(path, v, 'must be a peer object (podSelector, namespaceSelector or ipBlock)');
    return undefined;
  }
  issues.unknownFields(path, v, ['podSelector', 'namespaceSelector', 'ipBlock']);
  const has = (k: string): boolean => !isAbsent(v[k]);
  if (!has('podSelector') && !has('namespaceSelector') && !has('ipBlock')) {
    issues.add(path, v, 'must specify a peer: at least one of podSelector, namespaceSelector or ipBlock');
    return undefined;
  }
  const pods = has('podSelector') ? parseSelector(v['podSelector'], childPath(path, 'podSelector'), issues).selector : undefined;
  const nss = has('namespaceSelector') ? parseSelector(v['namespaceSelector'], childPath(path, 'namespaceSelector'), issues).selector : undefined;
  if (has('ipBlock')) {
    if (pods || nss) issues.add(path, v, 'may not specify both ipBlock and another peer (podSelector or namespaceSelector)');
    return parseIpBlock(v['ipBlock'], childPath(path, 'ipBlock'), issues);
  }
  // A podSelector alone means the policy's own namespace; with a namespaceSelector both must match.
  if (nss) return { kind: 'pods', namespaces: { kind: 'selector', selector: nss }, ...(pods && { pods }) };
  return { kind: 'pods', namespaces: { kind: 'own', name: namespace }, pods: pods! };
}

function parseIpBlock(v: unknown, path: string, issues: IssueList): Peer | undefined {
  if (!isObject(v)) {
    issues.add(path, v, 'must be an object with cidr and optional except');
    return undefined;
  }
  issues.unknownFields(path, v, ['cidr', 'except']);
  const cidrPath = childPath(path, 'cidr');
  const cidr = parseCidrField(v['cidr'], cidrPath, issues, true);
  if (!cidr) return undefined;

  const exceptPath = childPath(path, 'except');
  const raw = v['except'];
  const except: Cidr[] = [];
  if (!isAbsent(raw)) {
    if (!Array.isArray(raw)) issues.add(exceptPath, raw, 'must be a list of CIDRs');
    else raw.forEach((x, i) => {
      const p = indexPath(exceptPath, i);
      const c = parseCidrField(x, p, issues, false);
      if (!c) return;
      const why =
        c.family !== cidr.family
          ? ` (IPv${c.family} inside an IPv${cidr.family} block)`
          : !cidrContains(cidr, c)
            ? ' (it lies outside)'
            : c.prefix <= cidr.prefix
              ? ' (it is equal)'
              : undefined;
      if (why !== undefined) issues.add(p, x, `must be a strict subset of ${cidr.text}${why}`);
      else except.push(c);
    });
  }
  return { kind: 'ipBlock', cidr, except };
}

function parseCidrField(v: unknown, path: string, issues: IssueList, required: boolean): Cidr | undefined {
  if (isAbsent(v) || v === '') {
    issues.add(path, v, required ? 'required field is missing' : 'must be a CIDR');
    return undefined;
  }
  if (typeof v !== 'string') {
    issues.add(path, v, 'must be a CIDR string such as 10.0.0.0/16');
    return undefined;
  }
  try {
    return parseCidr(v);
  } catch (e) {
    if (!(e instanceof CidrError)) throw e;
    issues.add(path, v, `must be a valid CIDR such as 10.0.0.0/16: ${e.message}`);
    return undefined;
  }
}

function parsePort(v: unknown, path: string, issues: IssueList): PortSpec | undefined {
  if (!isObject(v)) {
    issues.add(path, v, 'must be a port object (protocol, port, endPort)');
    return undefined;
  }
  issues.unknownFields(path, v, ['protocol', 'port', 'endPort']);
  const before = issues.count;

  let protocol: Protocol = 'TCP'; // the API server's default
  const rawProto = v['protocol'];
  if (!isAbsent(rawProto)) {
    const p = PROTOCOLS.find((x) => x === rawProto);
    if (p) protocol = p;
    else issues.add(childPath(path, 'protocol'), rawProto, `unsupported protocol: must be one of ${PROTOCOLS.join(', ')}`);
  }

  const portPath = childPath(path, 'port');
  const port = v['port'];
  if (typeof port === 'number') {
    for (const m of portNumberErrors(port)) issues.add(portPath, port, m);
  } else if (typeof port === 'string') {
    // IntOrString: a quoted "80" is a string and must then be a port name, as the API server reads it.
    for (const m of portNameErrors(port)) issues.add(portPath, port, `invalid port name: ${m}`);
  } else if (!isAbsent(port)) {
    issues.add(portPath, port, 'must be a port number or a port name');
  }

  const endPath = childPath(path, 'endPort');
  const endPort = v['endPort'];
  if (!isAbsent(endPort)) {
    if (typeof endPort !== 'number') issues.add(endPath, endPort, 'must be an integer');
    else if (isAbsent(port)) issues.add(endPath, endPort, 'endPort requires a numeric port');
    else if (typeof port === 'string') issues.add(endPath, endPort, `endPort requires a numeric port, not the port name ${JSON.stringify(port)}`);
    else if (typeof port === 'number') {
      for (const m of portNumberErrors(endPort)) issues.add(endPath, endPort, m);
      if (endPort < port) issues.add(endPath, endPort, `must be greater than or equal to port (${port})`);
    }
  }
  if (issues.count !== before) return undefined;
  return {
    protocol,
    ...(typeof port === 'number' || typeof port === 'string' ? { port } : {}),
    ...(typeof endPort === 'number' ? { endPort } : {}),
  };
}
