import { describe, expect, it } from 'vitest';
import { pod } from '../../test/support/builders.ts';
import { CniOverlay } from './cni-overlay.ts';
import { Model } from './store.ts';
import type { PodRecord } from './types.ts';

function setup() {
  const model = new Model();
  const overlay = new CniOverlay('n1');
  model.addAdjuster(overlay.adjuster);
  model.subscribe((c) => {
    if (c.kind !== 'Pod') return;
    const r = (c.after ?? c.before) as PodRecord;
    overlay.sourceChanged(r.namespace, r.name, c.uid, model.sourceRecord(c.uid, 'Pod') as PodRecord | undefined);
  });
  return { model, overlay };
}

const stored = (m: Model, uid: string) => m.getPod(uid)!;

describe('CniOverlay', () => {
  it('gives a pod the address ADD reported, and this node, until the API agrees', () => {
    const { model, overlay } = setup();
    const p = pod('x', 'a', { app: 'a' }, { ip: null });
    model.upsert({ ...p, nodeName: undefined, phase: 'Pending' });
    overlay.added('x', 'a', p.uid, { containerId: 'c1', ips: ['10.244.1.5'] });
    model.readjust(p.uid, 'Pod');
    expect(stored(model, p.uid)).toMatchObject({ ips: ['10.244.1.5'], nodeName: 'n1' });
    // The source's record is untouched.
    expect(model.sourceRecord(p.uid, 'Pod')).toMatchObject({ ips: [] });
    // The API reports something else (a stale status): the plugin's address still wins.
    model.upsert({ ...p, ips: ['10.244.1.99'] });
    expect(stored(model, p.uid).ips).toEqual(['10.244.1.5']);
    expect(overlay.get('x', 'a')?.current).toBeDefined();
    // The API agrees: from then on its record is authoritative; the sandbox stays known for DEL.
    model.upsert({ ...p, ips: ['10.244.1.5'] });
    expect(stored(model, p.uid).ips).toEqual(['10.244.1.5']);
    expect(overlay.get('x', 'a')?.current).toEqual({ containerId: 'c1', ips: ['10.244.1.5'], agreed: true });
    model.upsert({ ...p, ips: ['10.244.1.7'] });
    expect(stored(model, p.uid).ips).toEqual(['10.244.1.7']);
    expect(overlay.deleted('x', 'a', 'c1', [], p.uid)).toEqual(['10.244.1.5']);
  });

  it('DEL withholds the sandbox address while the API still reports it, then forgets it', () => {
    const { model, overlay } = setup();
    const p = pod('x', 'a', {}, { ip: '10.244.1.5', node: 'n1' });
    model.upsert(p);
    overlay.added('x', 'a', p.uid, { containerId: 'c1', ips: ['10.244.1.5'] });
    model.readjust(p.uid, 'Pod');
    // No prevResult on DEL: the address ADD reported is the one that goes.
    expect(overlay.deleted('x', 'a', 'c1', [], p.uid)).toEqual(['10.244.1.5']);
    model.readjust(p.uid, 'Pod');
    expect(stored(model, p.uid).ips).toEqual([]);
    // A status update that still carries the address keeps it withheld.
    model.upsert({ ...p, labels: { v: '2' } });
    expect(stored(model, p.uid)).toMatchObject({ ips: [], labels: { v: '2' } });
    // The pod leaves the source: the entry goes with it.
    model.remove(p.uid, 'Pod');
    expect(overlay.entries()).toEqual([]);
  });

  it('a DEL of an old sandbox never strips the new sandbox address', () => {
    const { model, overlay } = setup();
    const p = pod('x', 'a', {}, { ip: null, node: 'n1' });
    model.upsert(p);
    overlay.added('x', 'a', p.uid, { containerId: 'old', ips: ['10.244.1.5'] });
    overlay.added('x', 'a', p.uid, { containerId: 'new', ips: ['10.244.1.6'] });
    expect(overlay.deleted('x', 'a', 'old', ['10.244.1.5'], p.uid)).toEqual(['10.244.1.5']);
    // DEL of the old sandbox reporting the new address (a confused runtime) strips nothing of it.
    expect(overlay.deleted('x', 'a', 'old', ['10.244.1.6'], p.uid)).toEqual([]);
    model.readjust(p.uid, 'Pod');
    expect(stored(model, p.uid).ips).toEqual(['10.244.1.6']);
    // The API reports the old address: withheld; the new one: kept.
    overlay.deleted('x', 'a', 'new', [], p.uid);
    model.upsert({ ...p, ips: ['10.244.1.5', '10.244.1.6'] });
    expect(stored(model, p.uid).ips).toEqual([]);
  });

  it('does not hand an old sandbox address to a pod recreated under the same name', () => {
    const { model, overlay } = setup();
    const old = pod('x', 'a', {}, { ip: null, node: 'n1' });
    model.upsert(old);
    overlay.added('x', 'a', old.uid, { containerId: 'c1', ips: ['10.244.1.5'] });
    model.readjust(old.uid, 'Pod');
    const fresh = { ...old, uid: 'other-uid' };
    model.upsert(fresh);
    expect(stored(model, fresh.uid).ips).toEqual([]);
    expect(stored(model, old.uid).ips).toEqual(['10.244.1.5']);
  });

  it('keeps nothing for a DEL of a pod the model does not hold, and finds sandboxes by container', () => {
    const overlay = new CniOverlay('n1');
    expect(overlay.deleted('x', 'gone', 'c9', ['10.244.1.9'], undefined)).toEqual(['10.244.1.9']);
    expect(overlay.entries()).toEqual([]);
    overlay.added('x', 'a', 'u1', { containerId: 'c1', ips: ['10.244.1.5'] });
    expect(overlay.findContainer('c1')).toEqual({ namespace: 'x', name: 'a' });
    expect(overlay.findContainer('c2')).toBeUndefined();
    overlay.forget('x', 'a', 'c2'); // another sandbox: nothing happens
    expect(overlay.get('x', 'a')?.current?.containerId).toBe('c1');
    overlay.forget('x', 'a', 'c1');
    expect(overlay.entries()).toEqual([]);
  });

  it('returns the record itself when it changes nothing (pure, no churn)', () => {
    const overlay = new CniOverlay('n1');
    const p = pod('x', 'a', {}, { ip: '10.244.1.5', node: 'n1' });
    expect(overlay.adjuster(p)).toBe(p);
    overlay.added('x', 'a', p.uid, { containerId: 'c1', ips: ['10.244.1.5'] });
    expect(overlay.adjuster(p)).toBe(p);
    expect(overlay.adjuster({ ...p, ips: [] })).toEqual(p);
  });
});
