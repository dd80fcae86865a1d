// The quarantine as a model adjuster, and the provenance of refused pieces (which objects a set
// entry, a rule or a chain comes from). No kernel here: see containment.test.ts for that.

import { describe, expect, it } from 'vitest';
import { block, modelOf, node, ns, pod, podsPeer, policy, port, ports, rule, sel } from '../../test/support/builders.ts';
import { compile } from '../compiler/compile.ts';
import { KNOWN_PODS_SPEC, POD_CIDRS_SET, PROGRAMMED_SET } from '../compiler/layout.ts';
import { renderRule } from '../sync/render.ts';
import type { Chain } from '../compiler/ruleset.ts';
import { normalize } from '../model/normalize.ts';
import type { ClusterPolicyRecord, PodRecord, PolicyRecord } from '../model/types.ts';
import { emptyState } from '../sync/kernel-state.ts';
import { planPieces, type Piece } from '../sync/pieces.ts';
import { diff } from '../sync/plan.ts';
import { Provenance, culpritKey } from './provenance.ts';
import { Quarantine, failClosed } from './quarantine.ts';

const N1 = node('n1', '10.244.1.0/24', '192.168.50.11');
const web = pod('app', 'web', { app: 'web' }, { ip: '10.244.1.10', node: 'n1', ports: [port(80, 'http')] });
const db = pod('app', 'db', { app: 'db' }, { ip: '10.244.1.11', node: 'n1' });
const client = pod('app', 'client', { app: 'client' }, { ip: '10.244.2.10', node: 'n2', ports: [port(8080, 'metrics')] });
const deny = policy('app', 'deny', sel(), { types: ['Ingress'], ingress: [] });
const allow = policy('app', 'allow', sel({ app: 'web' }), { ingress: [rule([podsPeer('app', sel({ app: 'client' }))], ports('http')), rule([block('0.0.0.0/0', ['10.0.0.0/8'])])] });
const dbEgress = policy('app', 'db-egress', sel({ app: 'db' }), { types: ['Egress'], egress: [rule([podsPeer('app', sel({ app: 'client' }))], ports('metrics'))] });

describe('Quarantine', () => {
  function setup() {
    let now = 1_000_000;
    const m = modelOf(ns('app'), N1, web, db, client, deny, allow);
    const q = new Quarantine(m, { retryMs: 1000, maxRetryMs: 3000, now: () => now });
    q.attach();
    return { m, q, tick: (ms: number) => (now += ms) };
  }
  const culprit = (r: PodRecord | PolicyRecord, field: string, value: string) => ({ kind: r.kind, uid: r.uid, ref: `${r.kind}/${r.name}`, field, value });

  it('stores a quarantined object fail-closed: a pod without address, a policy without rules; the source record stays', () => {
    const { m, q } = setup();
    q.add(culprit(client, 'status.podIP', '10.244.2.10'), 'refused');
    q.add(culprit(allow, 'spec.ingress[0]', '-A ...'), 'refused');
    expect(m.getPod(client.uid)!.ips).toEqual([]);
    expect(m.findPolicy('app', 'allow')).toMatchObject({ ingress: [], egress: [], podSelector: allow.podSelector, policyTypes: allow.policyTypes });
    expect(m.sourceRecord(client.uid, 'Pod')).toEqual(client);
    expect(q.list().map((e) => e.ref)).toEqual(['NetworkPolicy/allow', 'Pod/client']);
    expect(q.has(culpritKey(client))).toBe(true);
    // Other records are untouched (the same objects).
    expect(m.getPod(web.uid)).toBe(web);
    expect(failClosed(deny)).toBe(deny);
  });

  it('the same content stored again stays quarantined; a change lifts it and the object is tried as it is', () => {
    const { m, q } = setup();
    q.add(culprit(client, 'status.podIP', '10.244.2.10'), 'refused');
    m.upsert({ ...client }); // a resync of the same object
    expect(q.review()).toEqual([]);
    expect(m.getPod(client.uid)!.ips).toEqual([]);
    const moved = { ...client, ips: ['10.244.2.11'] };
    m.upsert(moved);
    expect(q.review().map((l) => l.why)).toEqual(['changed']);
    expect(m.getPod(client.uid)).toEqual(moved);
    expect(q.list()).toEqual([]);
  });

  it('an object that leaves the source leaves the quarantine', () => {
    const { m, q } = setup();
    q.add(culprit(allow, 'spec.ingress[0]', '-A ...'), 'refused');
    m.remove(allow.uid, 'NetworkPolicy');
    expect(q.review().map((l) => l.why)).toEqual(['deleted']);
    expect(q.add(culprit(allow, 'spec.ingress[0]', '-A ...'), 'refused')).toBeUndefined();
  });

  it('is retried after a delay that doubles with each refusal of the same content, up to a bound', () => {
    const { m, q, tick } = setup();
    const delays: number[] = [];
    for (let i = 0; i < 4; i++) {
      const e = q.add(culprit(client, 'status.podIP', '10.244.2.10'), 'refused')!;
      delays.push(e.retryAt - e.since.getTime());
      expect(e.strikes).toBe(i + 1);
      tick(e.retryAt - e.since.getTime() - 1);
      expect(q.review()).toEqual([]);
      tick(1);
      expect(q.review().map((l) => l.why)).toEqual(['retry']);
      expect(m.getPod(client.uid)).toEqual(client); // tried again as it is
    }
    expect(delays).toEqual([1000, 2000, 3000, 3000]);
  });
});

describe('Provenance', () => {
  const model = () => modelOf(ns('app'), N1, web, db, client, deny, allow, dbEgress);
  function pieces(m = model()) {
    const rs = compile(m, 'n1');
    const pp = planPieces(diff(rs, emptyState()));
    return { m, rs, all: [...pp.sets, ...pp.rest, ...pp.programmed], prov: new Provenance(m, 'n1', rs) };
  }
  const refs = (cs: { ref: string; field: string; value: string }[]) => cs.map((c) => `${c.ref} ${c.field} ${c.value}`);

  it('a set entry comes from the pods with its address; the field is the address', () => {
    const { all, prov } = pieces();
    const entries = all.filter((p): p is Extract<Piece, { kind: 'member' }> => p.kind === 'member' && p.entry.startsWith('10.244.2.10'));
    expect(entries.map((p) => p.setType).sort()).toEqual(['hash:ip', 'hash:ip,port']); // the peer set and the named-port set
    for (const p of entries) expect(refs(prov.owners(p))).toEqual(['pod/app/client status.podIP 10.244.2.10']);
    const programmed = all.find((p) => p.kind === 'member' && p.set === PROGRAMMED_SET && p.entry === '10.244.1.11')!;
    expect(refs(prov.owners(programmed))).toEqual(['pod/app/db status.podIP 10.244.1.11']);
  });

  it('an ipBlock entry and a set come from the policies whose rules match the set', () => {
    const { all, prov } = pieces();
    const blockEntry = all.find((p) => p.kind === 'member' && p.setType === 'hash:net')!;
    expect(refs(prov.owners(blockEntry)).map((s) => s.split(' ').slice(0, 2).join(' '))).toEqual(['networkpolicy/app/allow spec.ingress[1]']);
    // The named-port sets: of the egress peer's pods, and of the node's pods for an ingress named port.
    const namedSets = all.filter((p) => p.kind === 'set' && p.setType === 'hash:ip,port');
    expect(namedSets.map((p) => prov.owners(p).map((c) => `${c.ref} ${c.field}`)).sort()).toEqual([['networkpolicy/app/allow spec.ingress[0]'], ['networkpolicy/app/db-egress spec.egress[0]']]);
    // The programmed set and the hooks are no one object's doing.
    expect(prov.owners(all.find((p) => p.kind === 'set' && p.set === PROGRAMMED_SET)!)).toEqual([]);
    expect(prov.owners(all.find((p) => p.kind === 'hooks')!)).toEqual([]);
  });

  it("a rule the kernel named comes from its policy (the field names the rule); a dispatch rule from its chain's policies", () => {
    const { all, prov, rs } = pieces();
    const chain = all.find((p): p is Extract<Piece, { kind: 'chain' }> => p.kind === 'chain' && p.chain.rules.some((r) => r.comment === 'app/allow ingress[0]'))!;
    const line = renderRule(chain.chain.name, chain.chain.rules.find((r) => r.comment === 'app/allow ingress[0]')!);
    expect(prov.owners(chain, line)).toEqual([{ kind: 'NetworkPolicy', uid: allow.uid, ref: 'networkpolicy/app/allow', field: 'spec.ingress[0]', value: line }]);
    // Refused whole (no line): the policies that put rules in it (app/deny puts none).
    expect(prov.owners(chain).map((c) => c.ref)).toEqual(['networkpolicy/app/allow']);
    // The bucket chain's rule going to it.
    const bucket = rs.chains.find((c) => c.name.startsWith('PCTL-IB-') && c.rules.some((r) => r.action.kind === 'goto' && r.action.chain === chain.chain.name))!;
    const dispatch = bucket.rules.find((r) => r.action.kind === 'goto' && r.action.chain === chain.chain.name)!;
    const bucketPiece = all.find((p): p is Extract<Piece, { kind: 'chain' }> => p.kind === 'chain' && p.chain.name === bucket.name)!;
    expect(prov.owners(bucketPiece, renderRule(bucket.name, dispatch)).map((c) => c.ref)).toEqual(['networkpolicy/app/allow']);
    // Top chains: nobody's.
    expect(prov.owners(all.find((p) => p.kind === 'chain' && p.chain.name === 'PCTL-FORWARD')!)).toEqual([]);
  });

  it('a chain still refused once its policies are quarantined falls to the local pods dispatched to it', () => {
    const { all, prov } = pieces();
    const denyOnly = all.find((p): p is Extract<Piece, { kind: 'chain' }> => p.kind === 'chain' && p.chain.rules.length === 2 && p.chain.rules[1]!.comment.includes('isolated by app/deny'))! as { chain: Chain } & Piece;
    // Only app/deny isolates app/db for ingress: it puts no rule in the chain.
    expect(prov.owners(denyOnly).map((c) => `${c.ref} ${c.field}`)).toEqual(['pod/app/db metadata.labels']);
    expect(prov.owners(denyOnly, undefined, (k) => k === culpritKey(db))).toEqual([]);
    const allowChain = all.find((p) => p.kind === 'chain' && p.chain.rules.some((r) => r.comment.startsWith('app/allow')))!;
    expect(prov.owners(allowChain, undefined, (k) => k === culpritKey(allow)).map((c) => c.ref)).toEqual(['pod/app/web']);
  });
});

describe('ClusterNetworkPolicies in the quarantine and the provenance', () => {
  const wall: ClusterPolicyRecord = normalize({
    apiVersion: 'policy.networking.k8s.io/v1alpha2',
    kind: 'ClusterNetworkPolicy',
    metadata: { name: 'wall' },
    spec: {
      tier: 'Admin',
      priority: 5,
      subject: { namespaces: {} },
      ingress: [
        { name: 'monitoring', action: 'Accept', from: [{ namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'mon' } } }] },
        { name: 'rest', action: 'Deny', from: [{ namespaces: {} }], protocols: [{ tcp: { destinationPort: { number: 5432 } } }] },
      ],
    },
  }).record as ClusterPolicyRecord;

  it('fails closed as an invalid one does: one rule denying all in each direction it has rules for; the rest kept', () => {
    const closed = failClosed(wall) as ClusterPolicyRecord;
    expect(closed).toMatchObject({ tier: 'Admin', priority: 5, subject: wall.subject, egress: [] });
    expect(closed.ingress).toEqual([{ name: '', action: 'Deny', peers: [{ kind: 'any' }], failClosed: expect.stringContaining('quarantined') }]);
    expect(failClosed(closed)).toBe(closed); // pure: the fail-closed form is its own
    // In the model: every pod its subject selects loses ingress, NetworkPolicies or not.
    const m = modelOf(ns('app'), N1, web, db, client, deny, allow, wall);
    const q = new Quarantine(m);
    q.attach();
    q.add({ kind: 'ClusterNetworkPolicy', uid: wall.uid, ref: 'clusternetworkpolicy/wall', field: 'spec.ingress[1]', value: '-A ...' }, 'refused');
    const rs = compile(m, 'n1');
    // It selects every pod and comes first: its rules are the shared Admin prefix's (layout.ts WIDE_CHAINS).
    const admin = rs.chains.find((c) => c.name === 'PCTL-INGRESS-WIDE-R')!;
    expect(admin.rules.map((r) => r.action.kind)).toEqual(['log', 'drop']);
  });

  // Selecting every pod, its rules are in the shared prefix chain; selecting the namespace app,
  // in the pods' own Admin chains.
  const narrow: ClusterPolicyRecord = { ...wall, subject: (normalize({ apiVersion: 'policy.networking.k8s.io/v1alpha2', kind: 'ClusterNetworkPolicy', metadata: { name: 'wall' }, spec: { tier: 'Admin', priority: 5, subject: { namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'app' } } }, ingress: [] } }).record as ClusterPolicyRecord).subject };
  for (const [what, record, chainOf] of [
    ['the shared Admin prefix chain', wall, (n: string) => n === 'PCTL-INGRESS-WIDE-R'],
    ['an Admin chain of the pods', narrow, (n: string) => n.startsWith('PCTL-D-')],
  ] as const) {
    it(`a rule of ${what} comes from its ClusterNetworkPolicy (the field names the rule)`, () => {
      const m = modelOf(ns('app'), N1, web, db, client, deny, allow, record);
      const rs = compile(m, 'n1');
      const pp = planPieces(diff(rs, emptyState()));
      const prov = new Provenance(m, 'n1', rs);
      const chain = [...pp.rest].find((p): p is Extract<Piece, { kind: 'chain' }> => p.kind === 'chain' && chainOf(p.chain.name))!;
      // The Deny: a drop in place (the prefix chain) or one rule to its drop chain (a pod's chain).
      const rule = chain.chain.rules.find((r) => r.action.kind === 'drop' || r.action.kind === 'logdrop')!;
      const line = renderRule(chain.chain.name, rule);
      expect(prov.owners(chain, line)).toEqual([{ kind: 'ClusterNetworkPolicy', uid: wall.uid, ref: 'clusternetworkpolicy/wall', field: 'spec.ingress[1]', value: line }]);
    });
  }

  it("a rule of a Deny's drop chain comes from its ClusterNetworkPolicy (the field names the Deny rule)", () => {
    const m = modelOf(ns('app'), N1, web, db, client, deny, allow, narrow);
    const rs = compile(m, 'n1');
    const pp = planPieces(diff(rs, emptyState()));
    const prov = new Provenance(m, 'n1', rs);
    const drops = [...pp.rest].filter((p): p is Extract<Piece, { kind: 'chain' }> => p.kind === 'chain' && p.chain.name.startsWith('PCTL-L-'));
    const logsAs = (p: Extract<Piece, { kind: 'chain' }>, kind: string) => p.chain.rules.some((r) => r.action.kind === 'log' && r.action.prefix.split(' ')[2] === kind);
    const chain = drops.find((p) => logsAs(p, 'cnp'))!;
    expect(chain.chain.rules.map((r) => r.action.kind)).toEqual(['log', 'drop']);
    for (const rule of chain.chain.rules) {
      const line = renderRule(chain.chain.name, rule);
      expect(prov.owners(chain, line)).toEqual([{ kind: 'ClusterNetworkPolicy', uid: wall.uid, ref: 'clusternetworkpolicy/wall', field: 'spec.ingress[1]', value: line }]);
    }
    // The drop chain of addresses no known pod has serves every Deny or Pass that names pods: no one owner.
    const unknown = drops.find((p) => logsAs(p, 'unknown'))!;
    for (const rule of unknown.chain.rules) expect(prov.owners(unknown, renderRule(unknown.chain.name, rule))).toEqual([]);
    // So do the sets those rules match: refused, they quarantine no policy; an entry of PCTL-known is its pods'.
    const setPieces = [...pp.sets, ...pp.rest, ...pp.programmed].filter((p) => (p.kind === 'set' || p.kind === 'member') && (p.set === POD_CIDRS_SET || p.set === KNOWN_PODS_SPEC.name));
    expect(setPieces.length).toBeGreaterThan(0);
    for (const p of setPieces) {
      const owners = prov.owners(p);
      if (p.kind === 'member' && p.set === KNOWN_PODS_SPEC.name) expect(owners.map((o) => o.kind)).toEqual(['Pod']);
      else expect(owners).toEqual([]);
    }
  });
});
