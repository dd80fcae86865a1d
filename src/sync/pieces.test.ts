// The splitting logic: the generic split (which units the kernel refuses, at what cost) and a
// plan applied piece by piece against a simulated kernel that refuses chosen lines the way the
// real tools do (ipset keeps the lines before the failing one; iptables-restore is all or
// nothing; a reference to a missing chain is reported at COMMIT, with no useful line).

import { describe, expect, it } from 'vitest';
import { block, modelOf, node, ns, nsPeer, pod, podsPeer, policy, port, ports, rule, sel } from '../../test/support/builders.ts';
import { compile } from '../compiler/compile.ts';
import { KNOWN_PODS_SPEC, PROGRAMMED_SET } from '../compiler/layout.ts';
import { normalize } from '../model/normalize.ts';
import type { ClusterPolicyRecord } from '../model/types.ts';
import { ApplyError } from './apply-error.ts';
import { emptyState } from './kernel-state.ts';
import { applyPieces, planPieces, split, type Attempt, type Piece } from './pieces.ts';
import { diff, payloads, type Plan } from './plan.ts';
import { CommandError } from './runner.ts';
import { stateOf } from './syncer.ts';

/** Units 0..n-1; the kernel refuses a group holding any of `bad`, naming the first when `hints`. */
function fakeAttempt(bad: Set<number>, hints: 'right' | 'none' | 'wrong' = 'none') {
  const calls: number[][] = [];
  const applied = new Set<number>();
  const attempt = async (units: readonly number[]): Promise<Attempt<number>> => {
    calls.push([...units]);
    const b = units.find((u) => bad.has(u));
    if (b === undefined) {
      for (const u of units) applied.add(u);
      return { ok: true };
    }
    const hint = hints === 'right' ? b : hints === 'wrong' ? units.find((u) => !bad.has(u)) : undefined;
    return { ok: false, error: new Error(`refused ${b}`), ...(hint !== undefined ? { hint } : {}) };
  };
  return { attempt, calls, applied };
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

describe('split', () => {
  it('finds the refused units by halving and applies every other one', async () => {
    const k = fakeAttempt(new Set([17, 42, 43]));
    const r = await split(range(100), { attempt: k.attempt });
    expect(r.rejected.map((x) => x.unit).sort((a, b) => a - b)).toEqual([17, 42, 43]);
    expect(r.applied).toHaveLength(97);
    expect([...k.applied].sort((a, b) => a - b)).toEqual(range(100).filter((u) => ![17, 42, 43].includes(u)));
    expect(r.complete).toBe(true);
    // About 2k·log2(n) + 1: 3 refusals among 100.
    expect(r.attempts).toBeLessThanOrEqual(2 * 3 * 7 + 1);
    expect(r.rejected[0]!.error.message).toBe('refused 17');
  });

  it('one try when nothing is refused', async () => {
    const k = fakeAttempt(new Set());
    const r = await split(range(1000), { attempt: k.attempt });
    expect(r.attempts).toBe(1);
    expect(r.rejected).toEqual([]);
  });

  it('follows the unit the kernel names: about two tries per refusal', async () => {
    const k = fakeAttempt(new Set([5, 500, 900]), 'right');
    const r = await split(range(1000), { attempt: k.attempt });
    expect(r.rejected.map((x) => x.unit)).toEqual([5, 500, 900]);
    expect(r.attempts).toBe(2 * 3 + 1);
  });

  it('a wrong hint costs a try, then hints are ignored and halving still finds the unit', async () => {
    const k = fakeAttempt(new Set([77]), 'wrong');
    const r = await split(range(200), { attempt: k.attempt });
    expect(r.rejected.map((x) => x.unit)).toEqual([77]);
    expect(r.applied).toHaveLength(199);
    expect(r.attempts).toBeLessThanOrEqual(2 * 8 + 3);
  });

  it('tries a unit with its needs, and never tries one whose need was refused', async () => {
    // 3 needs 1 (refused); 4 needs 2 (fine); 5 needs 4.
    const needs = new Map<number, number[]>([
      [3, [1]],
      [4, [2]],
      [5, [4]],
    ]);
    const k = fakeAttempt(new Set([1]));
    const r = await split([5, 4, 3, 2, 1, 0], { attempt: k.attempt, needs: (u) => needs.get(u) ?? [] });
    expect(r.rejected.map((x) => x.unit)).toEqual([1]);
    expect(r.blocked).toEqual([3]);
    expect(r.applied.slice().sort()).toEqual([0, 2, 4, 5]);
    // Every try that held a unit held what it needs, needs first.
    for (const c of k.calls) {
      for (const [u, ns] of needs) if (c.includes(u)) for (const n of ns) expect(c.indexOf(n)).toBeLessThan(c.indexOf(u));
    }
    // Once 1 is known refused (tried alone), 3 is never tried again.
    const refusedAt = k.calls.findIndex((c) => c.length === 1 && c[0] === 1);
    expect(refusedAt).toBeGreaterThan(0);
    expect(k.calls.slice(refusedAt).some((c) => c.includes(3))).toBe(false);
  });

  it('a unit alone with a pending need: the need is tried first, so the refusal lands on it', async () => {
    const k = fakeAttempt(new Set([1]));
    const r = await split([3], { attempt: k.attempt, needs: (u) => (u === 3 ? [1] : []) });
    expect(r.rejected.map((x) => x.unit)).toEqual([1]);
    expect(r.blocked).toEqual([3]);
    expect(k.calls).toEqual([[1, 3], [1]]);
  });

  it('skips units the caller already knows bad, and what needs them', async () => {
    const k = fakeAttempt(new Set([10, 11, 12]));
    const known = new Set<number>();
    const r = await split(range(30), {
      attempt: k.attempt,
      // Units 10..12 come from one object: once one is refused, the others are not tried.
      skip: (u) => u >= 10 && u <= 12 && known.size > 0,
      needs: (u) => (u === 20 ? [11] : []),
      onRejected: (u) => known.add(u),
    });
    expect(r.rejected).toHaveLength(1);
    expect(r.skipped.length + r.rejected.length).toBe(3);
    expect(r.blocked).toEqual([20]);
    expect(r.applied).toHaveLength(26);
  });

  it('stops at its bounds and says so', async () => {
    const everything = new Set(range(100));
    const r = await split(range(100), { attempt: fakeAttempt(everything).attempt, maxRejected: 5 });
    expect(r.complete).toBe(false);
    expect(r.rejected).toHaveLength(5);
    expect(r.untried.length).toBeGreaterThan(0);
    const r2 = await split(range(100), { attempt: fakeAttempt(everything).attempt, maxAttempts: 10 });
    expect(r2.complete).toBe(false);
    expect(r2.attempts).toBe(10);
  });

  it('an attempt that throws aborts the split', async () => {
    await expect(split([1, 2], { attempt: () => Promise.reject(new Error('lock held')) })).rejects.toThrow('lock held');
  });
});

// ---- a plan in pieces, on a simulated kernel -------------------------------------------------

const N1 = node('n1', '10.244.1.0/24', '192.168.50.11');
function cluster(...extra: Parameters<typeof modelOf>) {
  return modelOf(
    ns('x', { team: 'a' }),
    N1,
    pod('x', 'a', { app: 'web' }, { ip: '10.244.1.10', node: 'n1', ports: [port(80, 'http')] }),
    pod('x', 'b', { app: 'db' }, { ip: '10.244.1.11', node: 'n1' }),
    pod('x', 'c', { app: 'db' }, { ip: '10.244.2.10', node: 'n2', ports: [port(8080, 'http')] }),
    pod('x', 'r', { app: 'db' }, { ip: '10.244.2.11', node: 'n2', ports: [port(8080, 'http')] }),
    policy('x', 'deny', sel(), { types: ['Ingress'], ingress: [] }),
    policy('x', 'allow', sel({ app: 'web' }), { ingress: [rule([podsPeer('x', sel({ app: 'db' })), block('0.0.0.0/0', ['10.0.0.0/8'])], ports('http', [1000, 2000]))] }),
    policy('x', 'eg', sel({ app: 'db' }), { types: ['Egress'], egress: [rule([nsPeer(sel())], ports('http'))] }),
    ...extra,
  );
}

/**
 * A kernel that holds lines: sets and chains exist once created; `refuse` names lines it rejects
 * with its message. ipset applies line by line and stops at the first error (the lines before it
 * stay); iptables-restore applies a transaction whole or not at all, and reports a jump to a
 * chain that does not exist at COMMIT, as iptables-nft does.
 */
class FakeKernel {
  readonly lines = new Set<string>();
  readonly sets = new Set<string>();
  readonly chains = new Set<string>(['FORWARD', 'INPUT']);
  tries = 0;
  readonly refuse: (line: string) => boolean;
  constructor(refuse: (line: string) => boolean) {
    this.refuse = refuse;
  }

  apply = async (plan: Plan): Promise<void> => {
    this.tries++;
    const p = payloads(plan);
    this.ipset('ipset restore (create and add)', p.ipsetBefore);
    this.iptables(p.iptables);
    this.ipset('ipset restore (delete and destroy)', p.ipsetAfter);
  };

  private ipset(step: string, text: string): void {
    const lines = text.split('\n').filter(Boolean);
    for (let i = 0; i < lines.length; i++) {
      const l = lines[i]!;
      const w = l.split(' ');
      const missing = w[0] !== 'create' && !this.sets.has(w[1]!);
      if (this.refuse(l) || missing) {
        const msg = missing ? 'The set with the given name does not exist' : 'Null-valued element, cannot be stored in a hash type of set';
        throw new ApplyError(step, new CommandError('ipset restore -exist', 1, `ipset v7.17: Error in line ${i + 1}: ${msg}\n`), text);
      }
      if (w[0] === 'create') this.sets.add(w[1]!);
      if (w[0] === 'del') this.lines.delete(`add ${w[1]} ${w[2]}`);
      else if (w[0] === 'flush') {
        for (const x of this.lines) if (x.startsWith(`add ${w[1]} `)) this.lines.delete(x);
      } else this.lines.add(l);
    }
  }

  private iptables(text: string): void {
    if (!text) return;
    const lines = text.split('\n').filter(Boolean);
    const declared = new Set(lines.filter((l) => l.startsWith(':')).map((l) => l.slice(1).split(' ')[0]!));
    const fail = (n: number, msg: string) => {
      throw new ApplyError('iptables-restore', new CommandError('iptables-nft-restore --noflush', 2, `iptables-nft-restore v1.8.9 (nf_tables): ${msg}\nError occurred at line: ${n}\nTry \`iptables-nft-restore -h' for more information.\n`), text);
    };
    for (let i = 0; i < lines.length; i++) {
      const l = lines[i]!;
      if (this.refuse(l)) fail(i + 1, 'RULE_APPEND failed (Invalid argument): rule in chain');
      const set = /--match-set (\S+)/.exec(l)?.[1];
      if (set && !this.sets.has(set)) fail(i + 1, `Set ${set} doesn't exist.`);
    }
    for (const l of lines) {
      const target = /-[jg] (PCTL-\S+)/.exec(l)?.[1];
      if (target && !this.chains.has(target) && !declared.has(target)) fail(lines.length, `Chain '${target}' does not exist`);
    }
    for (const c of declared) this.chains.add(c);
    for (const l of lines) if (l !== '*filter' && l !== 'COMMIT') this.lines.add(l);
  }
}

/** Every line the additions of a plan write (what a kernel refusing nothing ends up holding). */
function additionLines(plan: Plan): string[] {
  const k = new FakeKernel(() => false);
  void k.apply({ ...plan, delMembers: [], destroySets: [] });
  return [...k.lines];
}

describe('applyPieces', () => {
  it('cuts a plan into pieces: empty set creations, members, chains with what they need, the programmed set last, removals withheld', () => {
    const rs = compile(cluster(), 'n1');
    const pp = planPieces(diff(rs, emptyState()));
    expect(pp.sets.map((p) => p.kind === 'set' && p.set)).toEqual(rs.sets.map((s) => s.name));
    for (const p of pp.sets) expect(p.plan.createSets.every((s) => s.members.length === 0)).toBe(true);
    const members = pp.rest.filter((p) => p.kind === 'member');
    expect(members.length + pp.programmed.length).toBe(rs.sets.reduce((n, s) => n + s.members.length, 0));
    expect(pp.programmed.map((p) => p.kind === 'member' && `${p.set} ${p.entry}`).sort()).toEqual([`${PROGRAMMED_SET} 10.244.1.10`, `${PROGRAMMED_SET} 10.244.1.11`]);
    const chain = (name: string) => pp.rest.find((p) => p.kind === 'chain' && p.chain.name === name)!;
    // A bucket chain needs the policy chains it goes to and the dispatch sets it matches.
    const bucket = pp.rest.find((p): p is Extract<Piece, { kind: 'chain' }> => p.kind === 'chain' && /^PCTL-IB-/.test(p.chain.name))!;
    const needs = pp.needs.get(bucket)!;
    expect(needs.some((n) => n.kind === 'chain' && n.chain.name.startsWith('PCTL-I-'))).toBe(true);
    expect(needs.some((n) => n.kind === 'set' && n.set.startsWith('PCTL-i-'))).toBe(true);
    expect(pp.needs.get(pp.rest.find((p) => p.kind === 'hooks')!)).toContain(chain('PCTL-FORWARD'));
    expect(pp.withheld).toBe(0);

    // From a kernel holding an extra set and an extra member: both removals are withheld.
    const state = stateOf(rs);
    state.sets.set('PCTL-p-stale', { name: 'PCTL-p-stale', type: 'hash:ip', members: new Map([['10.1.1.1', false]]) });
    state.sets.get(rs.sets.find((s) => s.name.startsWith('PCTL-p-'))!.name)!.members.set('10.9.9.9', false);
    const pp2 = planPieces(diff(rs, state));
    expect(pp2.withheld).toBe(2);
    expect(pp2.rest).toEqual([]);
  });

  it('a refused pod address: its entries are refused, everything else applied, the programmed set filled', async () => {
    const plan = diff(compile(cluster(), 'n1'), emptyState());
    const all = additionLines(plan);
    const bad = (l: string) => /\b10\.244\.2\.11\b/.test(l);
    const k = new FakeKernel(bad);
    const seen: Piece[] = [];
    const r = await applyPieces(plan, k.apply, { onRejected: (x) => seen.push(x.piece) });
    expect(r.complete).toBe(true);
    expect(r.rejected.length).toBeGreaterThan(0);
    for (const x of r.rejected) {
      expect(x.piece.kind).toBe('member');
      expect(x.line).toMatch(/10\.244\.2\.11/);
      expect(x.error.kernelMessage()).toMatch(/^ipset v7\.17: Error in line \d+: Null-valued element/);
    }
    expect(seen).toEqual(r.rejected.map((x) => x.piece));
    expect([...k.lines].sort()).toEqual(all.filter((l) => !bad(l)).sort());
    expect(r.blocked).toBe(0);
    // The kernel named each refused line: a few tries, not a bisection of ~40 pieces.
    expect(r.attempts).toBeLessThanOrEqual(2 * r.rejected.length + 3);
  });

  it('an address refused in a peer set never joins PCTL-known, the other gate set: a Deny that names pods still drops it', async () => {
    // x's pods deny every pod of the cluster on 5432: PCTL-known and PCTL-pod-cidrs are in use.
    const wall = normalize({ apiVersion: 'policy.networking.k8s.io/v1alpha2', kind: 'ClusterNetworkPolicy', metadata: { name: 'wall' }, spec: { tier: 'Admin', priority: 1, subject: { namespaces: {} }, ingress: [{ name: 'db', action: 'Deny', from: [{ namespaces: {} }], protocols: [{ tcp: { destinationPort: { number: 5432 } } }] }] } }).record as ClusterPolicyRecord;
    const m = cluster(node('n2', '10.244.2.0/24', '192.168.50.12'), wall);
    const plan = diff(compile(m, 'n1'), emptyState());
    const known = `add ${KNOWN_PODS_SPEC.name} `;
    // 10.244.2.11 is refused everywhere but in PCTL-known itself.
    const k = new FakeKernel((l) => /\b10\.244\.2\.11\b/.test(l) && !l.startsWith(known));
    const r = await applyPieces(plan, k.apply);
    expect(r.rejected.length).toBeGreaterThan(0);
    const inKnown = [...k.lines].filter((l) => l.startsWith(known)).map((l) => l.slice(known.length)).sort();
    expect(inKnown).toEqual(['10.244.1.10', '10.244.1.11', '10.244.2.10']);
  });

  it('skipping the other pieces of an object known bad: one refusal, no try for the rest', async () => {
    const plan = diff(compile(cluster(), 'n1'), emptyState());
    const bad = (l: string) => /\b10\.244\.2\.11\b/.test(l);
    let refused = false;
    const r = await applyPieces(plan, new FakeKernel(bad).apply, {
      onRejected: () => (refused = true),
      skip: (p) => refused && p.kind === 'member' && p.entry.startsWith('10.244.2.11'),
    });
    expect(r.rejected).toHaveLength(1);
    expect(r.skipped).toBeGreaterThan(0);
    expect(r.attempts).toBeLessThanOrEqual(5); // sets, all (refused), the piece alone, the rest, the programmed set
  });

  it('a refused policy chain: refused alone; what goes to it is never written, the programmed set held back', async () => {
    const rs = compile(cluster(), 'n1');
    const k = new FakeKernel((l) => l.includes('x/allow ingress[0]'));
    const r = await applyPieces(diff(rs, emptyState()), k.apply);
    expect(r.rejected).toHaveLength(1);
    const refused = r.rejected[0]!.piece;
    expect(refused.kind === 'chain' && refused.chain.rules.some((x) => x.comment.includes('x/allow'))).toBe(true);
    expect(r.rejected[0]!.line).toContain('x/allow ingress[0]');
    const name = refused.kind === 'chain' ? refused.chain.name : '';
    expect([...k.lines].some((l) => l.includes(`-g ${name}`))).toBe(false);
    // Every other policy chain is in the kernel. At start-up the bucket chain, the top chains and
    // the hooks are written whole, so they wait for the sync after the quarantine (the agent runs
    // it at once); the programmed set too.
    for (const c of rs.chains) if (c.name !== name && /^PCTL-[EI]-/.test(c.name)) expect(k.chains.has(c.name)).toBe(true);
    expect(r.blocked).toBeGreaterThan(0);
    expect([...k.lines].some((l) => l.startsWith(`add ${PROGRAMMED_SET}`))).toBe(false);
    expect(r.withheld).toBe(2);
  });

  it('in steady state a refused new chain leaves its pods where they were, and every other change is applied', async () => {
    const before = compile(cluster(), 'n1');
    const k = new FakeKernel((l) => l.includes('x/new ingress[0]'));
    await k.apply(diff(before, emptyState()));
    // x/new isolates x/b (local, 10.244.1.11) for ingress: a new chain and dispatch set; x/d is a new local pod.
    const after = compile(
      cluster(policy('x', 'new', sel({ app: 'db' }), { ingress: [rule([podsPeer('x', sel({ app: 'web' }))])] }), pod('x', 'd', { app: 'web' }, { ip: '10.244.1.20', node: 'n1' })),
      'n1',
    );
    const plan = diff(after, stateOf(before));
    const r = await applyPieces(plan, k.apply);
    expect(r.rejected.map((x) => x.piece.kind)).toEqual(['chain']);
    // x/b is still in its old dispatch set (the delete is withheld), so still isolated by the old chain.
    const oldDispatch = before.sets.find((s) => s.name.startsWith('PCTL-i-') && s.members.some((m) => m.entry === '10.244.1.11'))!;
    expect(plan.delMembers.some((d) => d.set === oldDispatch.name) || plan.destroySets.includes(oldDispatch.name)).toBe(true);
    expect(k.lines.has(`add ${oldDispatch.name} 10.244.1.11`)).toBe(true);
    expect(r.withheld).toBeGreaterThan(0);
    // x/d's entries are in (it joins x/allow's group: the peer set of app=web and the dispatch set).
    expect([...k.lines].filter((l) => l.startsWith('add ') && l.endsWith(' 10.244.1.20')).length).toBeGreaterThan(0);
    // The hooks were never touched; nothing from the refused chain's dispatch went in.
    const refused = r.rejected[0]!.piece;
    const name = refused.kind === 'chain' ? refused.chain.name : '';
    expect([...k.lines].some((l) => l.includes(`-g ${name}`))).toBe(false);
    // Programmed addresses wait for the next sync (a chain piece was refused).
    expect(k.lines.has(`add ${PROGRAMMED_SET} 10.244.1.20`)).toBe(false);
  });

  it('a refused set creation blocks its members and the rules that match it, never blames them', async () => {
    const rs = compile(cluster(), 'n1');
    const target = rs.sets.find((s) => s.name.startsWith('PCTL-b-'))!.name;
    const k = new FakeKernel((l) => l.startsWith(`create ${target} `));
    const r = await applyPieces(diff(rs, emptyState()), k.apply);
    expect(r.rejected.map((x) => x.piece.kind === 'set' && x.piece.set)).toEqual([target]);
    expect([...k.lines].some((l) => l.includes(target))).toBe(false);
    expect(r.blocked).toBeGreaterThan(0);
  });

  it('a transient failure aborts: nothing is blamed', async () => {
    const plan = diff(compile(cluster(), 'n1'), emptyState());
    const locked = async () => {
      throw new ApplyError('iptables-restore', new CommandError('iptables-nft-restore', 4, 'Another app is currently holding the xtables lock. Stopped waiting after 10s.\n'), '');
    };
    await expect(applyPieces(plan, locked)).rejects.toThrow(/xtables lock/);
  });
});
