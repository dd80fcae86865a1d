import { describe, expect, it } from 'vitest';
import { EventSource, EVENT_KINDS } from '../../bench/events.ts';
import { generateCluster } from '../../bench/synthetic.ts';
import { node, ns, nsPeer, pod, policy, port, rule, sel } from '../../test/support/builders.ts';
import { sampleCluster } from '../../test/support/clusters.ts';
import { compile } from './compile.ts';
import { IncrementalCompiler } from './incremental.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../sync/render.ts';
import type { Ruleset } from './ruleset.ts';

const text = (rs: Ruleset) => renderIpsetRestore(rs.sets) + renderIptablesRestore(rs);

describe('IncrementalCompiler', () => {
  it('builds what compile builds', () => {
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1');
    expect(ic.ruleset()).toEqual(compile(m, 'n1'));
    expect(ic.stats()?.full).toBe(true);
  });

  it('returns the same Ruleset and an empty delta when nothing changed', () => {
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1');
    const a = ic.ruleset();
    m.upsert(node('n2', '10.244.2.0/24', '192.168.50.12')); // nodes do not matter to the compiler
    expect(ic.ruleset()).toBe(a);
    expect(ic.delta()).toEqual({ createdSets: [], destroyedSets: [], memberChanges: [], rebuiltSets: [], writtenChains: [], removedChains: [] });
  });

  it('a remote peer relabel changes set members only: same chain objects, no chain built', () => {
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1');
    const before = ic.ruleset();
    m.upsert({ ...m.findPod('x', 'r')!, labels: { app: 'db' } });
    const after = ic.ruleset();
    expect(text(after)).toBe(text(compile(m, 'n1')));
    expect(after.chains).toBe(before.chains);
    expect(ic.stats()?.chainsRecomputed).toBe(0);
    const d = ic.delta();
    expect(d.writtenChains).toEqual([]);
    // It joins two peer sets: app=db in its namespace (x/allow) and app=db everywhere (y/web).
    expect(d.memberChanges.map((c) => c.added)).toEqual([['10.244.2.11'], ['10.244.2.11']]);
    expect(d.memberChanges.flatMap((c) => c.removed)).toEqual([]);
    // Sets that did not change are the very same objects.
    const changed = new Set(d.memberChanges.map((c) => c.set));
    for (const s of after.sets) if (!changed.has(s.name)) expect(s).toBe(before.sets.find((b) => b.name === s.name));
  });

  it('a local pod joining an existing group with a member in its bucket changes set members only', () => {
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1');
    const before = ic.ruleset();
    m.upsert(pod('x', 'a3', { app: 'web' }, { ip: '10.244.1.74', node: 'n1', ports: [port(80, 'http'), port(53, 'dns', 'UDP')] })); // 74 & 63 = 10, as x/a
    const after = ic.ruleset();
    expect(text(after)).toBe(text(compile(m, 'n1')));
    expect(ic.stats()?.chainsRecomputed).toBe(0); // memoized: same policies, same named ports
    expect(after.chains).toBe(before.chains);
    const d = ic.delta();
    expect(d.writtenChains).toEqual([]);
    expect(d.removedChains).toEqual([]);
    expect(d.createdSets).toEqual([]);
    // Its address joins the group's dispatch set, the peer set of x/allow's namespace peer, x/eg's
    // named-port set (http on every pod), the named-port sets the ingress rules match on the
    // destination (http and dns of every pod), and the node's programmed addresses.
    expect(d.memberChanges.map((c) => [c.set.slice(0, 7), c.added, c.removed]).sort()).toEqual([
      ['PCTL-i-', ['10.244.1.74'], []],
      ['PCTL-n-', ['10.244.1.74,tcp:80'], []],
      ['PCTL-n-', ['10.244.1.74,tcp:80'], []],
      ['PCTL-n-', ['10.244.1.74,udp:53'], []],
      ['PCTL-p-', ['10.244.1.74'], []],
      ['PCTL-pr', ['10.244.1.74'], []],
    ]);
  });

  it('a local pod joining an existing group in a new bucket writes that bucket chain and the bucket list', () => {
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1');
    ic.ruleset();
    m.upsert(pod('x', 'a3', { app: 'web' }, { ip: '10.244.1.13', node: 'n1', ports: [port(80, 'http'), port(53, 'dns', 'UDP')] }));
    expect(text(ic.ruleset())).toBe(text(compile(m, 'n1')));
    // Bucket 13 is under inner chain PCTL-IS-3 (buckets 12-15), which holds x/a2's bucket 12 and
    // y/d's bucket 14 already: that chain changes, the ones above it do not.
    expect(ic.delta().writtenChains.map((c) => c.name).sort()).toEqual(['PCTL-IB-13', 'PCTL-IS-3']);
    expect(ic.delta().createdSets).toEqual([]);
    // And leaving it again removes them.
    m.remove('pod-x-a3', 'Pod');
    expect(text(ic.ruleset())).toBe(text(compile(m, 'n1')));
    expect(ic.delta().writtenChains.map((c) => c.name)).toEqual(['PCTL-IS-3']);
    expect(ic.delta().removedChains).toEqual(['PCTL-IB-13']);
  });

  it('a policy change rebuilds the chains of its namespace only', () => {
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1');
    const before = ic.ruleset();
    m.upsert(policy('y', 'web', sel({ app: 'web' }), { ingress: [rule([nsPeer(sel(), sel({ app: 'api' }))])] }));
    const after = ic.ruleset();
    expect(text(after)).toBe(text(compile(m, 'n1')));
    expect(ic.stats()?.chainsRecomputed).toBe(1);
    const d = ic.delta();
    expect(d.removedChains).toHaveLength(1);
    // The pod's new policy chain, and the bucket chain dispatching to it (y/d is 10.244.1.14).
    expect(d.writtenChains.map((c) => c.name).sort()).toEqual(['PCTL-IB-14', after.chains.find((c) => !before.chains.some((b) => b.name === c.name))!.name].sort());
    // The old peer set (app=db everywhere) went, the new one (app=api) came, empty.
    expect(d.destroyedSets).toHaveLength(2); // old peer set and old dispatch set
    expect(d.createdSets.map((s) => s.members.length).sort()).toEqual([0, 1]);
  });

  it('a namespace relabel moves its pods in and out of namespace-selector sets', () => {
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1');
    ic.ruleset();
    m.upsert(ns('y', { team: 'a' }));
    expect(text(ic.ruleset())).toBe(text(compile(m, 'n1')));
    const added = ic.delta().memberChanges.flatMap((c) => c.added).sort();
    expect(added).toEqual(['10.244.1.14', '10.244.2.10', '10.244.2.12']);
    m.remove('ns-x', 'Namespace'); // x becomes implicit: no team label
    expect(text(ic.ruleset())).toBe(text(compile(m, 'n1')));
  });

  it('stops following the model after dispose()', () => {
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1');
    const a = ic.ruleset();
    ic.dispose();
    m.remove('pol-x-deny', 'NetworkPolicy');
    expect(ic.ruleset()).toBe(a);
  });

  it('reset() rebuilds from the model, and the delta says what differs from the last Ruleset', () => {
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1');
    const a = ic.ruleset();
    m.remove('pod-y-c', 'Pod');
    ic.reset();
    const b = ic.ruleset();
    expect(text(b)).toBe(text(compile(m, 'n1')));
    const d = ic.delta();
    // Every set was rebuilt; only those whose members differ need a member change.
    expect(d.rebuiltSets.length + d.createdSets.length).toBe(b.sets.length);
    expect([...d.destroyedSets].sort()).toEqual(a.sets.map((s) => s.name).filter((n) => !b.sets.some((s) => s.name === n)).sort());
  });

  it('follows a synthetic cluster through every kind of bench event', () => {
    const c = generateCluster({ pods: 1500, policies: 300, seed: 7 });
    const ic = new IncrementalCompiler(c.model, 'node-001');
    expect(text(ic.ruleset())).toBe(text(compile(c.model, 'node-001')));
    const events = new EventSource(c, 'node-001');
    for (const kind of events.sequence(4, EVENT_KINDS)) {
      events.next(kind).apply(c.model);
      const rs = ic.ruleset();
      expect(text(rs), `after ${kind}`).toBe(text(compile(c.model, 'node-001')));
    }
  });
});
