// The compiler: model + node name -> Ruleset (ipsets and chains as data). Pure.
//
// Shape of what it produces (filter table):
//
//   FORWARD -> PCTL-FORWARD   (hook, position 1)
//     1. ctstate RELATED,ESTABLISHED -> RETURN        replies of allowed connections
//     2. src and dst both local isolated pods -> goto PCTL-SELF
//     3. -> PCTL-EGRESS, -> PCTL-INGRESS
//   PCTL-SELF: `-s IP -d IP -> RETURN` per local isolated pod (a pod may always reach itself;
//     reached by goto, so RETURN leaves our chains), then -> PCTL-EGRESS, -> PCTL-INGRESS
//   INPUT -> PCTL-INPUT: replies RETURN, then -> PCTL-EGRESS (a pod's egress to its own node)
//   PCTL-EGRESS: `src in PCTL-e-H -> PCTL-E-H` per distinct egress chain
//   PCTL-INGRESS: `dst in PCTL-i-H -> PCTL-I-H` per distinct ingress chain
//   PCTL-E-H / PCTL-I-H: the allow rules of every policy isolating the pod (RETURN), then DROP
//
// Why this shape:
// - Allow is RETURN, never ACCEPT, so the other side's chain and other agents' rules still run;
//   both the sender's egress and the receiver's ingress are evaluated in one FORWARD pass.
// - Policy chains are named by a hash of their content, and pods are dispatched to them by
//   ipset: pods under the same policies share one chain, and a local pod that joins an existing
//   group (or a peer pod that changes labels or IP) changes set members only (invariant 5).
// - No mark bits are used, so nothing collides with kube-proxy, kubelet or flannel marks.
// - Fail closed: an isolated pod's chain always ends in DROP; an invalid policy arrives from
//   the model with no rules, so it isolates and allows nothing.

import type { Model } from '../model/store.ts';
import { selectorKey } from '../model/selector.ts';
import type { IpBlockPeer, PodRecord, PodsPeer, PolicyRecord, PolicyRule, PolicyType, Protocol } from '../model/types.ts';
import { isEnforceable } from '../model/types.ts';
import { FORWARD_CHAIN, INPUT_CHAIN, PREFIX, chainName, setName } from './names.ts';
import type { Chain, IpSet, L4Protocol, Match, PortRange, Rule, Ruleset, SetMember, SetType } from './ruleset.ts';

export const EGRESS_CHAIN = `${PREFIX}-EGRESS`;
export const INGRESS_CHAIN = `${PREFIX}-INGRESS`;
export const SELF_CHAIN = `${PREFIX}-SELF`;
export const LOCAL_SET = `${PREFIX}-local`;
/** multiport takes at most 15 port slots; a range uses two. */
const MULTIPORT_SLOTS = 15;

const RETURN = { kind: 'return' } as const;
const DROP = { kind: 'drop' } as const;

interface SetBuilder {
  readonly name: string;
  readonly type: SetType;
  readonly purpose: string;
  readonly members: Map<string, boolean>; // entry -> nomatch
}

/** Per-compile state: sets are shared by key across policies and pods. */
class Context {
  readonly sets = new Map<string, SetBuilder>();
  readonly podsByPeer = new Map<string, PodRecord[]>();
  readonly model: Model;
  constructor(model: Model) {
    this.model = model;
  }

  set(name: string, type: SetType, purpose: string, fill: (s: SetBuilder) => void): string {
    if (!this.sets.has(name)) {
      const s: SetBuilder = { name, type, purpose, members: new Map() };
      fill(s);
      this.sets.set(name, s);
    }
    return name;
  }

  /** Enforceable pods a peer selects; `any` = every enforceable pod in the cluster. */
  peerPods(peer: PodsPeer | 'any'): PodRecord[] {
    const key = peerKey(peer);
    let pods = this.podsByPeer.get(key);
    if (!pods) {
      pods = peer === 'any' ? [...this.model.allPods()].filter(isEnforceable) : this.model.enforceablePodsOf(peer);
      this.podsByPeer.set(key, pods);
    }
    return pods;
  }
}

function peerKey(peer: PodsPeer | 'any'): string {
  if (peer === 'any') return 'any';
  const ns = peer.namespaces.kind === 'own' ? `own:${peer.namespaces.name}` : `nssel:${selectorKey(peer.namespaces.selector)}`;
  return `${ns}|${peer.pods ? `pods:${selectorKey(peer.pods)}` : 'allpods'}`;
}

function describePeer(peer: PodsPeer | 'any'): string {
  if (peer === 'any') return 'every pod';
  const ns = peer.namespaces.kind === 'own' ? `namespace ${peer.namespaces.name}` : 'selected namespaces';
  return `${peer.pods ? 'selected pods' : 'all pods'} in ${ns}`;
}

const l4 = (p: Protocol): L4Protocol => p.toLowerCase() as L4Protocol;

function podSet(ctx: Context, peer: PodsPeer): string {
  const key = peerKey(peer);
  return ctx.set(setName('p', key), 'hash:ip', `pod IPs of ${describePeer(peer)} (${key})`, (s) => {
    for (const p of ctx.peerPods(peer)) for (const ip of p.ips) s.members.set(ip, false);
  });
}

function namedPortSet(ctx: Context, peer: PodsPeer | 'any', portName: string, protocol: Protocol): string {
  const key = `${peerKey(peer)}|${portName}/${protocol}`;
  return ctx.set(setName('n', key), 'hash:ip,port', `named port ${portName}/${protocol} on ${describePeer(peer)} (${key})`, (s) => {
    for (const p of ctx.peerPods(peer)) {
      for (const cp of p.ports) {
        if (cp.name !== portName || cp.protocol !== protocol) continue;
        for (const ip of p.ips) s.members.set(`${ip},${l4(protocol)}:${cp.containerPort}`, false);
      }
    }
  });
}

/**
 * An ipBlock with exceptions as a hash:net set: the most specific entry wins, so `except`
 * entries are `nomatch`. hash:net cannot hold a /0, so 0.0.0.0/0 is stored as two /1 halves;
 * an except equal to a half removes that half.
 */
function blockSet(ctx: Context, b: IpBlockPeer): string {
  const excepts = [...new Set(b.except.map((e) => e.text))].sort();
  const key = `${b.cidr.text}|${excepts.join(',')}`;
  return ctx.set(setName('b', key), 'hash:net', `ipBlock ${b.cidr.text} except ${excepts.join(',')}`, (s) => {
    const positive = b.cidr.prefix === 0 ? ['0.0.0.0/1', '128.0.0.0/1'] : [b.cidr.text];
    for (const p of positive) if (!excepts.includes(p)) s.members.set(p, false);
    for (const e of excepts) if (!positive.includes(e)) s.members.set(e, true);
  });
}

/** One way a rule's peer list can match, as match fields on the peer's address. */
interface PeerMatch {
  readonly match: Match;
  /** The pods it selects, for named ports on egress; undefined for ipBlocks. */
  readonly pods?: PodsPeer | 'any';
}

function peerMatches(ctx: Context, rule: PolicyRule, dir: PolicyType): PeerMatch[] {
  const side = dir === 'Ingress' ? 'src' : 'dst';
  if (!rule.peers) return [{ match: {}, pods: 'any' }];
  const out: PeerMatch[] = [];
  for (const peer of rule.peers) {
    if (peer.kind === 'pods') {
      out.push({ match: { sets: [{ set: podSet(ctx, peer), dirs: side }] }, pods: peer });
    } else if (peer.cidr.family === 4) {
      // IPv6 blocks never match IPv4 traffic; this compiler programs the IPv4 table only.
      if (peer.except.length > 0) out.push({ match: { sets: [{ set: blockSet(ctx, peer), dirs: side }] } });
      else if (peer.cidr.prefix === 0) out.push({ match: {} });
      else out.push({ match: side === 'src' ? { srcNet: peer.cidr.text } : { dstNet: peer.cidr.text } });
    }
  }
  return out;
}

/** Numeric port matches per protocol; `all` when some entry allows every port of it. */
type PortPlan = Map<Protocol, PortRange[] | 'all'>;

function addPorts(plan: PortPlan, protocol: Protocol, ranges: PortRange[] | 'all'): void {
  const cur = plan.get(protocol);
  if (cur === 'all') return;
  if (ranges === 'all') plan.set(protocol, 'all');
  else plan.set(protocol, [...(cur ?? []), ...ranges]);
}

function rulesFor(ctx: Context, pol: PolicyRecord, index: number, rule: PolicyRule, dir: PolicyType, selected: PodRecord): Rule[] {
  const comment = `${pol.namespace}/${pol.name} ${dir.toLowerCase()}[${index}]`;
  const peers = peerMatches(ctx, rule, dir);
  if (peers.length === 0) return [];
  if (!rule.ports) return peers.map((p) => ({ match: p.match, action: RETURN, comment }));

  const numeric: PortPlan = new Map();
  const named: { name: string; protocol: Protocol }[] = [];
  for (const spec of rule.ports) {
    if (spec.port === undefined) addPorts(numeric, spec.protocol, 'all');
    else if (typeof spec.port === 'number') addPorts(numeric, spec.protocol, [{ from: spec.port, to: spec.endPort ?? spec.port }]);
    else if (dir === 'Ingress') {
      // Ingress named ports resolve on the selected pod itself, so they become numbers here.
      const found = selected.ports.filter((cp) => cp.name === spec.port && cp.protocol === spec.protocol);
      if (found.length) addPorts(numeric, spec.protocol, found.map((cp) => ({ from: cp.containerPort, to: cp.containerPort })));
    } else named.push({ name: spec.port, protocol: spec.protocol });
  }

  const out: Rule[] = [];
  for (const peer of peers) {
    for (const [protocol, ranges] of [...numeric].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (ranges === 'all') {
        out.push({ match: { ...peer.match, protocol: l4(protocol) }, action: RETURN, comment });
        continue;
      }
      for (const chunk of chunkPorts(mergeRanges(ranges))) {
        out.push({ match: { ...peer.match, protocol: l4(protocol), dports: chunk }, action: RETURN, comment });
      }
    }
    // Egress named ports resolve on each destination pod: an ip,port set of the peer's pods.
    // They never match an ipBlock destination (peer.pods undefined).
    if (peer.pods) {
      for (const n of named) {
        const set = namedPortSet(ctx, peer.pods, n.name, n.protocol);
        out.push({ match: { protocol: l4(n.protocol), sets: [{ set, dirs: 'dst,dst' }] }, action: RETURN, comment });
      }
    }
  }
  return out;
}

export function mergeRanges(ranges: readonly PortRange[]): PortRange[] {
  const sorted = [...ranges].sort((a, b) => a.from - b.from || a.to - b.to);
  const out: PortRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.from <= last.to + 1) out[out.length - 1] = { from: last.from, to: Math.max(last.to, r.to) };
    else out.push(r);
  }
  return out;
}

/** Split into groups that fit multiport's 15 slots (a range takes two). */
export function chunkPorts(ranges: readonly PortRange[]): PortRange[][] {
  const out: PortRange[][] = [];
  let cur: PortRange[] = [];
  let slots = 0;
  for (const r of ranges) {
    const need = r.from === r.to ? 1 : 2;
    if (slots + need > MULTIPORT_SLOTS) {
      out.push(cur);
      cur = [];
      slots = 0;
    }
    cur.push(r);
    slots += need;
  }
  if (cur.length) out.push(cur);
  return out;
}

function isolating(model: Model, pod: PodRecord, dir: PolicyType): PolicyRecord[] {
  return model.policiesSelecting(pod).filter((p) => p.policyTypes.includes(dir));
}

/** The allow rules and final DROP of one pod in one direction. */
function podChainRules(ctx: Context, pod: PodRecord, dir: PolicyType, policies: PolicyRecord[]): Rule[] {
  const rules: Rule[] = [];
  for (const pol of policies) {
    (dir === 'Ingress' ? pol.ingress : pol.egress).forEach((r, i) => rules.push(...rulesFor(ctx, pol, i, r, dir, pod)));
  }
  const by = policies.map((p) => `${p.namespace}/${p.name}`).join(',');
  rules.push({ match: {}, action: DROP, comment: `default deny ${dir.toLowerCase()}: isolated by ${by}` });
  return rules;
}

interface Group {
  readonly chain: Chain;
  readonly ips: Set<string>;
}

export function compile(model: Model, node: string): Ruleset {
  const ctx = new Context(model);
  const groups: Record<PolicyType, Map<string, Group>> = { Ingress: new Map(), Egress: new Map() };
  const localIsolated: PodRecord[] = [];

  const local = [...model.allPods()].filter((p) => p.nodeName === node && isEnforceable(p));
  local.sort((a, b) => (a.uid < b.uid ? -1 : a.uid > b.uid ? 1 : 0));
  for (const pod of local) {
    let isolated = false;
    for (const dir of ['Ingress', 'Egress'] as const) {
      const policies = isolating(model, pod, dir);
      if (policies.length === 0) continue;
      isolated = true;
      const rules = podChainRules(ctx, pod, dir, policies);
      const name = chainName(dir === 'Ingress' ? 'I' : 'E', JSON.stringify(rules));
      let g = groups[dir].get(name);
      if (!g) groups[dir].set(name, (g = { chain: { name, rules }, ips: new Set() }));
      for (const ip of pod.ips) g.ips.add(ip);
    }
    if (isolated) localIsolated.push(pod);
  }

  const chains: Chain[] = [];
  const dispatch = (dir: PolicyType): Rule[] =>
    [...groups[dir].values()]
      .sort((a, b) => (a.chain.name < b.chain.name ? -1 : 1))
      .map((g) => {
        const kind = dir === 'Ingress' ? 'i' : 'e';
        const set = ctx.set(`${PREFIX}-${kind}-${g.chain.name.slice(-13)}`, 'hash:ip', `local pods dispatched to ${g.chain.name}`, (s) => {
          for (const ip of g.ips) s.members.set(ip, false);
        });
        chains.push(g.chain);
        return {
          match: { sets: [{ set, dirs: dir === 'Ingress' ? 'dst' : 'src' }] },
          action: { kind: 'jump', chain: g.chain.name },
          // No member count in the comment: a pod joining the group must change the set only.
          comment: `${dir.toLowerCase()} policy of the local pods in ${set}`,
        } satisfies Rule;
      });

  const replies: Rule = { match: { ctstate: ['RELATED', 'ESTABLISHED'] }, action: RETURN, comment: 'replies of allowed connections' };
  const evaluate: Rule[] = [
    { match: {}, action: { kind: 'jump', chain: EGRESS_CHAIN }, comment: 'egress of local pods' },
    { match: {}, action: { kind: 'jump', chain: INGRESS_CHAIN }, comment: 'ingress of local pods' },
  ];
  const forward: Rule[] = [replies];
  const top: Chain[] = [];
  if (localIsolated.length > 0) {
    // Self traffic (a pod reaching itself through a Service hairpin) is allowed; the guard keeps
    // every other connection from walking the per-pod list.
    ctx.set(LOCAL_SET, 'hash:ip', 'local pods under some policy (guard for the self check)', (s) => {
      for (const p of localIsolated) for (const ip of p.ips) s.members.set(ip, false);
    });
    forward.push({
      match: { sets: [{ set: LOCAL_SET, dirs: 'src' }, { set: LOCAL_SET, dirs: 'dst' }] },
      action: { kind: 'goto', chain: SELF_CHAIN },
      comment: 'local pod to local pod: self check first',
    });
    const selfRules: Rule[] = [];
    for (const p of localIsolated) {
      for (const ip of p.ips) {
        selfRules.push({ match: { srcNet: `${ip}/32`, dstNet: `${ip}/32` }, action: RETURN, comment: `${p.namespace}/${p.name} to itself` });
      }
    }
    top.push({ name: SELF_CHAIN, rules: [...selfRules, ...evaluate] });
  }
  forward.push(...evaluate);
  const egressDispatch = dispatch('Egress');
  const ingressDispatch = dispatch('Ingress');
  top.unshift(
    { name: FORWARD_CHAIN, rules: forward },
    { name: INPUT_CHAIN, rules: [replies, evaluate[0]!] },
    { name: EGRESS_CHAIN, rules: egressDispatch },
    { name: INGRESS_CHAIN, rules: ingressDispatch },
  );
  chains.sort((a, b) => (a.name < b.name ? -1 : 1));

  const sets: IpSet[] = [...ctx.sets.values()]
    .map((s) => ({
      name: s.name,
      type: s.type,
      purpose: s.purpose,
      members: [...s.members]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([entry, nomatch]): SetMember => (nomatch ? { entry, nomatch: true } : { entry })),
    }))
    .sort((a, b) => (a.name < b.name ? -1 : 1));

  return {
    node,
    sets,
    chains: [...top, ...chains],
    hooks: [
      { table: 'filter', chain: 'FORWARD', target: FORWARD_CHAIN, comment: `${PREFIX}: NetworkPolicy enforcement, keep first` },
      { table: 'filter', chain: 'INPUT', target: INPUT_CHAIN, comment: `${PREFIX}: NetworkPolicy egress to this node, keep first` },
    ],
  };
}
