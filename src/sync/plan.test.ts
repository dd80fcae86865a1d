import { describe, expect, it } from 'vitest';
import { modelOf, node, pod, policy, sel } from '../../test/support/builders.ts';
import { compile } from '../compiler/compile.ts';
import { PROGRAMMED_SET } from '../compiler/layout.ts';
import { diff, payloads } from './plan.ts';
import { stateOf } from './syncer.ts';

describe('payloads', () => {
  it('a new local pod is programmed only after its dispatch entries and rules are in force; a leaving one first of all', () => {
    const n1 = node('n1', '10.244.1.0/24', '192.168.50.11');
    const deny = policy('x', 'deny', sel({ app: 'db' }), { types: ['Ingress'], ingress: [] });
    const old = pod('x', 'old', { app: 'db' }, { ip: '10.244.1.5', node: 'n1' });
    const before = compile(modelOf(n1, deny, old), 'n1');
    // old goes, new (isolated, in a bucket with no group yet: a new bucket rule) arrives.
    const after = compile(modelOf(n1, deny, pod('x', 'new', { app: 'db' }, { ip: '10.244.1.7', node: 'n1' })), 'n1');
    const p = payloads(diff(after, stateOf(before)));
    const first = p.ipsetBefore.split('\n')[0];
    expect(first).toBe(`del ${PROGRAMMED_SET} 10.244.1.5`);
    // The dispatch entry is added before the rules, the gate entry after everything.
    expect(p.ipsetBefore).toMatch(/add PCTL-i-\S+ 10\.244\.1\.7/);
    expect(p.ipsetBefore).not.toContain(`add ${PROGRAMMED_SET}`);
    expect(p.iptables).toContain('PCTL-IB-7');
    const afterLines = p.ipsetAfter.trim().split('\n');
    expect(afterLines[afterLines.length - 1]).toBe(`add ${PROGRAMMED_SET} 10.244.1.7`);
    expect(p.ipsetAfter).not.toContain(`del ${PROGRAMMED_SET}`);
  });
});
