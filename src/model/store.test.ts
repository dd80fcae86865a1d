import { describe, expect, it } from 'vitest';
import { modelOf, ns, nsPeer, pod, podsPeer, policy, sel } from '../../test/support/builders.ts';
import { Model, type ModelChange } from './store.ts';

describe('Model', () => {
  it('reports every change to subscribers, with the record replaced or removed', () => {
    const m = new Model();
    const seen: ModelChange[] = [];
    const stop = m.subscribe((c) => seen.push(c));
    const a = pod('x', 'a', { app: 'web' });
    const a2 = { ...a, labels: { app: 'db' } };
    m.upsert(a);
    m.upsert(a2);
    m.upsert(ns('x'));
    m.remove(a.uid);
    m.remove('nothing');
    expect(seen).toEqual([
      { kind: 'Pod', uid: a.uid, after: a },
      { kind: 'Pod', uid: a.uid, before: a, after: a2 },
      { kind: 'Namespace', uid: 'ns-x', after: ns('x') },
      { kind: 'Pod', uid: a.uid, before: a2 },
    ]);
    stop();
    m.upsert(a);
    expect(seen).toHaveLength(4);
  });

  it('remove without a kind removes every record with the UID, one event each', () => {
    const m = new Model();
    m.upsert({ ...ns('x'), uid: 'same' });
    m.upsert({ ...pod('x', 'a', {}), uid: 'same' });
    const seen: string[] = [];
    m.subscribe((c) => seen.push(c.kind));
    expect(m.remove('same')).toBe(true);
    expect(seen).toEqual(['Pod', 'Namespace']);
    expect(m.generation).toBeGreaterThan(0);
  });

  it('selector lookups stay inside the namespace (per-namespace label index)', () => {
    const m = modelOf(
      pod('x', 'a', { app: 'web' }, { ip: '10.0.0.1' }),
      pod('x', 'b', { app: 'db' }, { ip: '10.0.0.2' }),
      pod('y', 'c', { app: 'web' }, { ip: '10.0.0.3' }),
      pod('y', 'd', { tier: 'fe' }, { ip: '10.0.0.4' }),
      pod('y', 'e', { app: 'web' }, { ip: null }),
    );
    const names = (ps: { name: string }[]) => ps.map((p) => p.name).sort();
    expect(names(m.enforceablePodsIn('x', sel({ app: 'web' })))).toEqual(['a']);
    expect(names(m.enforceablePodsIn('y', sel({}, [{ key: 'app', operator: 'Exists', values: [] }])))).toEqual(['c']);
    expect(names(m.enforceablePodsIn('y', sel({}, [{ key: 'app', operator: 'In', values: ['web', 'db', 'web'] }])))).toEqual(['c']);
    expect(names(m.enforceablePodsIn('y', sel({}, [{ key: 'app', operator: 'NotIn', values: ['web'] }])))).toEqual(['d']);
    expect(names(m.enforceablePodsIn('x', sel({ app: 'none' })))).toEqual([]);
    expect(names(m.enforceablePodsIn('z', sel()))).toEqual([]);
    expect(names(m.enforceablePodsOf(podsPeer('y', sel({ app: 'web' }))))).toEqual(['c']);
    expect(names(m.enforceablePodsOf(nsPeer(sel(), sel({ app: 'web' }))))).toEqual(['a', 'c']);
    // Relabel and removal keep the index right.
    m.upsert({ ...m.findPod('x', 'b')!, labels: { app: 'web' } });
    m.remove('pod-x-a', 'Pod');
    expect(names(m.enforceablePodsIn('x', sel({ app: 'web' })))).toEqual(['b']);
    expect(names(m.enforceablePodsIn('x', sel({ app: 'db' })))).toEqual([]);
  });

  it('allNamespaces follows namespaces appearing and going (cached between changes)', () => {
    const m = modelOf(ns('x', { team: 'a' }), pod('y', 'p', {}));
    expect(m.allNamespaces().map((n) => n.name)).toEqual(['x', 'y']);
    m.upsert(policy('z', 'deny', sel()));
    expect(m.allNamespaces().map((n) => n.name)).toEqual(['x', 'y', 'z']);
    m.remove('ns-x', 'Namespace');
    expect(m.allNamespaces().map((n) => n.name)).toEqual(['y', 'z']);
    m.upsert(ns('y', { team: 'b' }));
    expect(m.allNamespaces().find((n) => n.name === 'y')?.labels.team).toBe('b');
    expect(m.namespacesOf(nsPeer(sel({ team: 'b' })))).toEqual(['y']);
    // A copy each time: callers may sort or change it.
    m.allNamespaces().pop();
    expect(m.allNamespaces()).toHaveLength(2);
  });

  it('lists the pods bound to a node', () => {
    const m = modelOf(pod('x', 'a', {}, { node: 'n1' }), pod('x', 'b', {}, { node: 'n2' }), pod('x', 'c', {}, { node: 'n1', ip: null }));
    expect(m.podsOnNode('n1').map((p) => p.name).sort()).toEqual(['a', 'c']);
    m.upsert({ ...m.findPod('x', 'a')!, nodeName: 'n2' });
    expect(m.podsOnNode('n1').map((p) => p.name)).toEqual(['c']);
    expect(m.podsOnNode('n3')).toEqual([]);
  });

  it('an address two enforceable pods claim belongs to neither until one goes, and is reported', () => {
    const m = new Model();
    const a = pod('x', 'a', { app: 'a' }, { ip: '10.244.1.5' });
    const b = pod('y', 'b', { app: 'b' }, { ip: '10.244.1.5' });
    m.upsert(a);
    expect(m.findPod('x', 'a')!.ips).toEqual(['10.244.1.5']);
    const seen: ModelChange[] = [];
    m.subscribe((c) => seen.push(c));
    m.upsert(b);
    expect(m.findPod('x', 'a')!.ips).toEqual([]);
    expect(m.findPod('y', 'b')!.ips).toEqual([]);
    expect(m.enforceablePodsIn('x')).toEqual([]);
    expect(m.addressConflicts()).toEqual(new Map([['10.244.1.5', [a.uid, b.uid].sort()]]));
    // Both pods changed: the compilers follow the events.
    expect(seen.map((c) => c.uid).sort()).toEqual([a.uid, b.uid].sort());
    // The source's record is kept: when the old pod goes, the new one gets the address.
    expect(m.sourceRecord(b.uid, 'Pod')).toEqual(b);
    m.remove(a.uid);
    expect(m.findPod('y', 'b')!.ips).toEqual(['10.244.1.5']);
    expect(m.addressConflicts().size).toBe(0);
  });

  it('a Succeeded pod does not claim its old address; a relabel keeps the conflict', () => {
    const m = new Model();
    m.upsert(pod('x', 'done', {}, { ip: '10.244.1.6', phase: 'Succeeded' }));
    m.upsert(pod('x', 'new', {}, { ip: '10.244.1.6' }));
    expect(m.findPod('x', 'new')!.ips).toEqual(['10.244.1.6']);
    m.upsert(pod('x', 'third', {}, { ip: '10.244.1.6' }));
    m.upsert(pod('x', 'third', { l: '1' }, { ip: '10.244.1.6' }));
    expect(m.findPod('x', 'new')!.ips).toEqual([]);
    expect(m.findPod('x', 'third')!.ips).toEqual([]);
    m.upsert(pod('x', 'third', { l: '1' }, { ip: '10.244.1.7' }));
    expect(m.findPod('x', 'new')!.ips).toEqual(['10.244.1.6']);
    expect(m.findPod('x', 'third')!.ips).toEqual(['10.244.1.7']);
  });

  it('adjusters change what is stored, re-run on readjust, and undo when removed', () => {
    const m = new Model();
    const a = pod('x', 'a', {}, { ip: null, phase: 'Pending' });
    m.upsert(a);
    const overlay = new Map<string, string[]>();
    const stop = m.addAdjuster((r) => (r.kind === 'Pod' && overlay.has(r.name) ? { ...r, ips: overlay.get(r.name)! } : r));
    expect(m.findPod('x', 'a')!.ips).toEqual([]);
    overlay.set('a', ['10.244.1.9']);
    const gen = m.generation;
    m.readjust(a.uid, 'Pod');
    expect(m.findPod('x', 'a')!.ips).toEqual(['10.244.1.9']);
    expect(m.generation).toBeGreaterThan(gen);
    // Readjusting with nothing new emits nothing.
    const g2 = m.generation;
    m.readjust(a.uid, 'Pod');
    expect(m.generation).toBe(g2);
    // A source update passes through the adjuster too; the source's record stays readable.
    m.upsert({ ...a, labels: { v: '2' } });
    expect(m.findPod('x', 'a')!).toMatchObject({ ips: ['10.244.1.9'], labels: { v: '2' } });
    expect(m.sourceRecord(a.uid, 'Pod')).toMatchObject({ ips: [] });
    // An adjusted address conflicts like a reported one.
    m.upsert(pod('y', 'b', {}, { ip: '10.244.1.9' }));
    expect(m.findPod('x', 'a')!.ips).toEqual([]);
    m.remove('pod-y-b');
    expect(m.findPod('x', 'a')!.ips).toEqual(['10.244.1.9']);
    stop();
    expect(m.findPod('x', 'a')!.ips).toEqual([]);
  });
});
