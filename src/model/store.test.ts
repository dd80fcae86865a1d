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
});
