// Which writes may deny what a remembered verdict allows (verdict-bearing.ts). The property over
// random clusters is test/properties/verdict-bearing.test.ts; these pin the cases one by one.

import { describe, expect, it } from 'vitest';
import { sampleCluster } from '../../test/support/clusters.ts';
import { pod } from '../../test/support/builders.ts';
import { compile } from '../compiler/compile.ts';
import type { Chain, Rule, Ruleset, SetMatch } from '../compiler/ruleset.ts';
import { diff, type Plan } from './plan.ts';
import { stateOf } from './syncer.ts';
import { mayNarrow, setBearings } from './verdict-bearing.ts';

const rule = (sets: SetMatch[], action: Rule['action']): Rule => ({ match: { sets }, action, comment: 'test' });
/** A chain that logs and drops every packet, as the unknown-address chains do; and one that drops some. */
const DROPS_ALL: Chain = { name: 'PCTL-UNKNOWN-SRC', rules: [{ match: {}, action: { kind: 'log', prefix: 'p' }, comment: 'log' }, { match: {}, action: { kind: 'drop' }, comment: 'drop' }] };
const DROPS_SOME: Chain = { name: 'PCTL-SOME', rules: [{ match: { protocol: 'tcp' }, action: { kind: 'drop' }, comment: 'drop tcp' }] };
const ruleset = (...rules: Rule[]): Ruleset => ({ node: 'n', hooks: [], sets: [], chains: [{ name: 'PCTL-T', rules } as Chain, DROPS_ALL, DROPS_SOME] });
const EMPTY: Plan = { createSets: [], replaceSets: [], addMembers: [], delMembers: [], writeChains: [], appendRules: [], removeHooks: [], insertHooks: [], removeRules: [], deleteChains: [], destroySets: [] };

describe('set bearings', () => {
  it('an allow tested positively narrows when its set shrinks; negated, when it grows; a drop (or a goto to a chain that drops everything) the other way round; a goto elsewhere, a jump, both ways', () => {
    const b = setBearings(
      ruleset(
        rule([{ set: 'allow', dirs: 'src' }], { kind: 'return' }),
        rule([{ set: 'allowNot', dirs: 'src', negate: true }], { kind: 'return' }),
        rule([{ set: 'deny', dirs: 'src' }], { kind: 'drop' }),
        rule([{ set: 'denyChain', dirs: 'src' }], { kind: 'logdrop', chain: 'PCTL-L-x', prefix: 'p' }),
        rule([{ set: 'unknown', dirs: 'src', negate: true }], { kind: 'goto', chain: 'PCTL-UNKNOWN-SRC' }),
        rule([{ set: 'dispatch', dirs: 'src' }], { kind: 'goto', chain: 'PCTL-E-x' }),
        rule([{ set: 'some', dirs: 'src', negate: true }], { kind: 'goto', chain: 'PCTL-SOME' }),
        rule([{ set: 'pass', dirs: 'src' }], { kind: 'jump', chain: 'PCTL-MIDSTREAM' }),
        rule([{ set: 'logged', dirs: 'src' }], { kind: 'log', prefix: 'p' }),
      ),
    );
    expect(Object.fromEntries(b)).toEqual({
      allow: { growNarrows: false, shrinkNarrows: true },
      allowNot: { growNarrows: true, shrinkNarrows: false },
      deny: { growNarrows: true, shrinkNarrows: false },
      denyChain: { growNarrows: true, shrinkNarrows: false },
      unknown: { growNarrows: false, shrinkNarrows: true },
      dispatch: { growNarrows: true, shrinkNarrows: true },
      some: { growNarrows: true, shrinkNarrows: true },
      pass: { growNarrows: true, shrinkNarrows: true },
    });
  });

  it('a set used both ways narrows both ways', () => {
    const b = setBearings(ruleset(rule([{ set: 's', dirs: 'src' }], { kind: 'return' }), rule([{ set: 's', dirs: 'dst' }], { kind: 'drop' })));
    expect(b.get('s')).toEqual({ growNarrows: true, shrinkNarrows: true });
  });
});

describe('mayNarrow', () => {
  const rs = ruleset(rule([{ set: 'allow', dirs: 'src' }], { kind: 'return' }));

  it('members added to an allow set widen; removed, narrow; a set no rule tests bears on nothing', () => {
    expect(mayNarrow({ ...EMPTY, addMembers: [{ set: 'allow', entry: '10.0.0.1' }] }, rs, undefined)).toBe(false);
    expect(mayNarrow({ ...EMPTY, delMembers: [{ set: 'allow', entry: '10.0.0.1' }] }, rs, undefined)).toBe(true);
    expect(mayNarrow({ ...EMPTY, delMembers: [{ set: 'other', entry: '10.0.0.1' }] }, rs, undefined)).toBe(false);
  });

  it('a hash:net exception added shrinks the set; one removed grows it, known by what the kernel holds (unknown: narrows)', () => {
    expect(mayNarrow({ ...EMPTY, addMembers: [{ set: 'allow', entry: '10.0.0.0/24', nomatch: true }] }, rs, undefined)).toBe(true);
    const held = (nomatch: boolean) => ({ chains: new Map(), hooks: [], sets: new Map([['allow', { name: 'allow', type: 'hash:net' as const, members: new Map([['10.0.0.0/24', nomatch]]) }]]) });
    const del = { ...EMPTY, delMembers: [{ set: 'allow', entry: '10.0.0.0/24' }] };
    expect(mayNarrow(del, rs, held(true))).toBe(false);
    expect(mayNarrow(del, rs, held(false))).toBe(true);
    expect(mayNarrow(del, rs, { chains: new Map(), hooks: [], sets: new Map() })).toBe(true);
  });

  it('any change of rules, chains, hooks or sets themselves may deny', () => {
    const chain: Chain = { name: 'PCTL-T', rules: [] };
    for (const p of [{ writeChains: [chain] }, { appendRules: [{ chain: 'PCTL-T', rules: [] }] }, { destroySets: ['x'] }, { createSets: [{ name: 'x', type: 'hash:ip' as const, members: [], purpose: '' }] }]) {
      expect(mayNarrow({ ...EMPTY, ...p }, rs, undefined), JSON.stringify(p)).toBe(true);
    }
  });

  it("on a compiled node: a pod of another node that only allow rules name widens; the node's own new pod, or a pod a Deny names, may deny", () => {
    const m = sampleCluster();
    const before = compile(m, 'n1', { verdictCache: true });
    // x/e on n2, app=db: a peer of x/allow and of y/web, both allows.
    m.upsert(pod('x', 'e', { app: 'db' }, { ip: '10.244.2.20', node: 'n2' }));
    const remote = compile(m, 'n1', { verdictCache: true });
    const remotePlan = diff(remote, stateOf(before));
    expect(remotePlan.addMembers.length).toBeGreaterThan(0);
    expect(mayNarrow(remotePlan, remote, stateOf(before))).toBe(false);
    // A pod of this node: it joins a dispatch set, which sends its packets to its chains.
    m.upsert(pod('x', 'f', { app: 'web' }, { ip: '10.244.1.30', node: 'n1' }));
    const local = compile(m, 'n1', { verdictCache: true });
    expect(mayNarrow(diff(local, stateOf(remote)), local, stateOf(remote))).toBe(true);
    // The remote pod leaves: the allow sets shrink.
    m.remove('pod-x-e', 'Pod');
    const gone = compile(m, 'n1', { verdictCache: true });
    expect(mayNarrow(diff(gone, stateOf(local)), gone, stateOf(local))).toBe(true);
  });
});
