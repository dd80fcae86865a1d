// The sync layer on the real kernel, inside a fresh network namespace per test.

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ns, nsPeer, pod, podsPeer, policy, port, ports, rule, sel } from '../../test/support/builders.ts';
import { FOREIGN_FILTER } from '../../test/support/dataplane.ts';
import { createNetns, kernelTestsEnabled, type TestNetns } from '../../test/support/netns.ts';
import { EVENT_KINDS, EventSource } from '../../bench/events.ts';
import { generateCluster } from '../../bench/synthetic.ts';
import { compile } from '../compiler/compile.ts';
import { IncrementalCompiler, type RulesetDelta } from '../compiler/incremental.ts';
import type { Ruleset } from '../compiler/ruleset.ts';
import { sampleCluster } from '../../test/support/clusters.ts';
import { NFT, detectBackend } from './backend.ts';
import { allowed, type Flow } from '../semantics/evaluate.ts';
import { formatTrace, traceTexts } from '../../test/support/tracer.ts';
import { isEmpty } from './plan.ts';
import { renderIptablesRestore } from './render.ts';
import { RecordingRunner } from './runner.ts';
import { ApplyError, Syncer } from './syncer.ts';

const writesOf = (r: RecordingRunner) => r.writes().map((c) => ({ cmd: c.cmd, input: c.input ?? '' }));
const readsOf = (r: RecordingRunner) => r.calls.filter((c) => c.cmd.endsWith('-save') || c.args.includes('save'));

describe.runIf(kernelTestsEnabled())('Syncer on the real kernel', () => {
  let net: TestNetns;
  let rec: RecordingRunner;
  let syncer: Syncer;
  let desired: Ruleset;

  beforeEach(() => {
    net = createNetns('pctl-sync');
    net.sh(`iptables-nft-restore <<'EOF'\n${FOREIGN_FILTER}EOF`);
    rec = new RecordingRunner(net.runner);
    syncer = new Syncer({ runner: rec, backend: { ...NFT, reason: 'test' } });
    desired = compile(sampleCluster(), 'n1');
  });
  afterEach(() => net.remove());

  it('applies the ruleset, keeps foreign rules, and puts the hooks first', async () => {
    const r = await syncer.sync(desired);
    expect(r.wrote).toBe(true);
    const save = net.sh('iptables-save -t filter');
    expect(save).toMatch(/-A FORWARD -m comment --comment "PCTL: NetworkPolicy enforcement, keep first" -j PCTL-FORWARD\n-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD/);
    expect(save).toContain('-A FLANNEL-FWD -s 10.244.0.0/16');
    expect(net.sh('ipset list -n').split('\n').filter(Boolean).sort()).toEqual(desired.sets.map((s) => s.name).sort());
    // What the kernel holds now equals what we wanted: a fresh read finds nothing to do.
    expect(isEmpty((await syncer.verify(desired)).plan)).toBe(true);
  });

  it('revoke mode: the mid-stream rule and its chain read back from iptables-nft-save as written, so nothing is rewritten', async () => {
    const revoke = compile(sampleCluster(), 'n1', { dropMidstream: true });
    expect((await syncer.sync(revoke)).wrote).toBe(true);
    const save = net.sh('iptables-nft-save -t filter');
    // Printed back exactly as rendered (render.ts writes `--syn` the way the kernel's copy prints).
    const jump = renderIptablesRestore({ chains: revoke.chains.filter((c) => c.name === 'PCTL-FORWARD'), hooks: [] })
      .split('\n')
      .find((l) => l.includes('-j PCTL-MIDSTREAM'))!;
    expect(jump).toMatch(/^-A PCTL-FORWARD -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -m comment --comment "[a-z2-7]{24} /);
    expect(save.split('\n')).toContain(jump);
    expect(save).toMatch(/^-A PCTL-MIDSTREAM -s 10\.244\.1\.0\/24 .*-j NFLOG --nflog-prefix "PCTL E midstream" /m);
    // The node's own packets too (OUTPUT): a hook to PCTL-OUTPUT, which holds the replies rule and the same jumps.
    expect(save).toMatch(/^-A OUTPUT -m comment --comment "PCTL: mid-stream TCP of the node to its pods \(--revoke-established\), keep first" -j PCTL-OUTPUT$/m);
    expect(save.split('\n').filter((l) => l.startsWith('-A PCTL-OUTPUT '))).toHaveLength(3);
    // The answer tuples of revoked UDP flows: created with its timeout; what the agent adds at
    // run time (IpSet.runtime) is never taken for drift.
    expect(net.sh('ipset list -t PCTL-revoked')).toMatch(/Type: hash:ip,port,ip\nRevision: \d+\nHeader: family inet hashsize 1024 maxelem 1048576 timeout 120/);
    net.sh('ipset add PCTL-revoked 10.244.2.10,udp:40000,10.244.1.10');
    // A fresh read of the kernel finds nothing to do, and a sync that reads it writes nothing.
    expect(isEmpty((await syncer.verify(revoke)).plan)).toBe(true);
    expect(net.sh('ipset list PCTL-revoked')).toMatch(/^10\.244\.2\.10,udp:40000,10\.244\.1\.10 timeout \d+$/m);
    rec.calls.length = 0;
    expect((await syncer.sync(compile(sampleCluster(), 'n1', { dropMidstream: true }), { readKernel: true })).wrote).toBe(false);
    expect(writesOf(rec)).toEqual([]);
    // Leaving revoke mode takes the jumps and the OUTPUT hook away at once (nothing reaches the
    // chains then), and the garbage collection the chains.
    await syncer.sync(desired, { readKernel: true });
    const left = net.sh('iptables-nft-save -t filter');
    expect(left).not.toMatch(/^-A (PCTL-FORWARD|PCTL-INPUT) .*-j PCTL-MIDSTREAM/m);
    expect(left).not.toMatch(/^-A OUTPUT .*-j PCTL-OUTPUT$/m);
    await syncer.collectGarbage();
    expect(net.sh('iptables-nft-save -t filter')).not.toMatch(/PCTL-MIDSTREAM|PCTL-OUTPUT|PCTL-revoked/);
    expect(net.sh('ipset list -n')).not.toContain('PCTL-revoked');
  });

  it("IPVS: PCTL-OUTPUT's rule for the node's own traffic (-m addrtype) reads back from iptables-nft-save as written, so nothing is rewritten", async () => {
    const ipvs = compile(sampleCluster(), 'n1', { proxy: { mode: 'ipvs', serviceCidrs: ['10.96.0.0/12'] } });
    expect((await syncer.sync(ipvs)).wrote).toBe(true);
    const own = renderIptablesRestore({ chains: ipvs.chains.filter((c) => c.name === 'PCTL-OUTPUT'), hooks: [] })
      .split('\n')
      .find((l) => l.includes('-m addrtype'))!;
    expect(own).toMatch(/^-A PCTL-OUTPUT -m addrtype --src-type LOCAL -m comment --comment "[a-z2-7]{24} from an address of this node: [^"]*" -j RETURN$/);
    const save = net.sh('iptables-nft-save -t filter');
    expect(save.split('\n')).toContain(own);
    expect(save.split('\n').filter((l) => l.startsWith('-A PCTL-OUTPUT '))).toHaveLength(5);
    expect(isEmpty((await syncer.verify(ipvs)).plan)).toBe(true);
    rec.calls.length = 0;
    expect((await syncer.sync(compile(sampleCluster(), 'n1', { proxy: { mode: 'ipvs', serviceCidrs: ['10.96.0.0/12'] } }), { readKernel: true })).wrote).toBe(false);
    expect(writesOf(rec)).toEqual([]);
  });

  it('applying the same ruleset twice writes nothing the second time', async () => {
    await syncer.sync(desired);
    rec.calls.length = 0;
    const again = await syncer.sync(desired);
    const reread = await syncer.sync(compile(sampleCluster(), 'n1'), { readKernel: true });
    expect(again.wrote || reread.wrote).toBe(false);
    expect(writesOf(rec)).toEqual([]);
  });

  it("a peer pod's label change writes set members only", async () => {
    const m = sampleCluster();
    await syncer.sync(compile(m, 'n1'));
    rec.calls.length = 0;
    const r = m.findPod('x', 'r')!;
    m.upsert({ ...r, labels: { app: 'db' } }); // x/r (on n2) becomes a peer of x/allow's and y/web's rules
    const res = await syncer.sync(compile(m, 'n1'));
    const written = writesOf(rec);
    expect(res.payloads.iptables).toBe('');
    expect(written).toHaveLength(1);
    expect(written[0]!.cmd).toBe('ipset');
    // The whole write: a member added to the pod sets of "app=db in x" and "app=db everywhere".
    expect(written[0]!.input).toMatch(/^add PCTL-p-\w+ 10\.244\.2\.11\nadd PCTL-p-\w+ 10\.244\.2\.11\n$/);
    expect(net.sh('ipset save')).toContain('10.244.2.11');
  });

  it('a failed add ends the sync before any removal, also when no rule changes (the agent\'s ipset session runs the lines after a failing one)', async () => {
    // A runner that refuses, when armed, every ipset payload adding a member (as the kernel
    // refuses an add it cannot take), and records what it is asked.
    let armed = false;
    const asked: { cmd: string; input: string }[] = [];
    const syncer2 = new Syncer({
      runner: {
        run: (cmd, args, opts) => {
          if (armed) asked.push({ cmd, input: opts?.input ?? '' });
          if (armed && cmd === 'ipset' && /^add /m.test(opts?.input ?? '')) return Promise.resolve({ exitCode: 1, stdout: '', stderr: 'ipset v7.17: Error in line 1: injected' });
          return net.runner.run(cmd, args, opts);
        },
      },
      backend: { ...NFT, reason: 'test' },
    });
    const m = sampleCluster();
    await syncer2.sync(compile(m, 'n1'));
    // x/r (n2) takes another address: added to its peer sets (first phase), the old one deleted
    // (last phase); no rule changes.
    m.upsert({ ...m.findPod('x', 'r')!, ips: ['10.244.2.99'] });
    armed = true;
    const err = await syncer2.sync(compile(m, 'n1')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplyError);
    const writes = asked.filter((c) => c.input !== '');
    expect(writes).toHaveLength(1);
    expect(writes[0]!.input).toMatch(/^add PCTL-p-\w+ 10\.244\.2\.99\n$/);
    // The old address is still in its sets: nothing after the failed add ran.
    expect(net.sh('ipset save')).toContain(' 10.244.2.11');
  });

  it('repairs drift: a flushed chain, a removed hook, a hook no longer first, a flushed set', async () => {
    await syncer.sync(desired);
    const ingress = desired.chains.find((c) => c.name.startsWith('PCTL-I-') && c.rules.length > 1)!.name;
    const peerSet = desired.sets.find((s) => s.name.startsWith('PCTL-p-') && s.members.length > 0)!.name;
    net.sh(`iptables -F ${ingress}`);
    net.sh('iptables -D INPUT -m comment --comment "PCTL: NetworkPolicy egress to this node, keep first" -j PCTL-INPUT');
    net.sh('iptables -I FORWARD 1 -m comment --comment "kube-proxy style" -j KUBE-FORWARD'); // another agent re-prepends
    net.sh(`ipset flush ${peerSet}`);
    const r = await syncer.verify(desired);
    expect(r.wrote).toBe(true);
    expect(r.plan.writeChains.map((c) => c.name)).toEqual([ingress]);
    expect(r.plan.insertHooks.map((h) => h.chain).sort()).toEqual(['FORWARD', 'INPUT']);
    const forward = net.sh('iptables -S FORWARD').split('\n');
    expect(forward[1]).toContain('-j PCTL-FORWARD');
    expect(forward.filter((l) => l.includes('PCTL-FORWARD'))).toHaveLength(1);
    expect(forward.filter((l) => l.includes('kube-proxy style'))).toHaveLength(1); // theirs stays
    expect(isEmpty((await syncer.verify(desired)).plan)).toBe(true);
  });

  it('reports as drift only what differs from the Ruleset last applied, not a model change the verification also applies', async () => {
    const m = sampleCluster();
    const first = compile(m, 'n1');
    await syncer.sync(first);
    const r = m.findPod('x', 'r')!;
    m.upsert({ ...r, labels: { app: 'db' } }); // a change not yet applied when the verification runs
    const changed = compile(m, 'n1');
    const clean = await syncer.verify(changed);
    expect(clean.plan.addMembers.length).toBeGreaterThan(0); // the change is applied ...
    expect(isEmpty(clean.drift!)).toBe(true); // ... and is not drift
    const peerSet = changed.sets.find((s) => s.name.startsWith('PCTL-p-') && s.members.length > 0)!.name;
    net.sh(`ipset flush ${peerSet}`);
    const drifted = await syncer.verify(changed);
    expect(drifted.drift!.addMembers.map((c) => c.set)).toContain(peerSet);
    expect(isEmpty((await syncer.verify(changed)).drift!)).toBe(true);
  });

  it('a failed apply names the offending line, keeps isolation, and forces a re-read', async () => {
    await syncer.sync(desired);
    const before = net.sh('iptables-save -t filter | grep -c "^-A PCTL"');
    // A rule referencing a set that does not exist: the kernel refuses the transaction.
    const broken: Ruleset = {
      ...desired,
      chains: desired.chains.map((c) =>
        c.name.startsWith('PCTL-I-') ? { ...c, rules: [{ match: { sets: [{ set: 'PCTL-p-missing', dirs: 'src' }] }, action: { kind: 'return' }, comment: 'broken' }, ...c.rules] } : c,
      ),
    };
    const err = await syncer.sync(broken).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplyError);
    expect((err as ApplyError).message).toMatch(/iptables-restore failed/);
    expect((err as ApplyError).offendingLine).toContain('PCTL-p-missing');
    // The transaction is atomic: every rule we had is still there.
    expect(net.sh('iptables-save -t filter | grep -c "^-A PCTL"')).toBe(before);
    rec.calls.length = 0;
    await syncer.sync(desired);
    expect(rec.calls[0]!.args).toContain('-t'); // the next sync starts by reading the kernel
  });

  it('syncDelta follows the incremental compiler: the plan from its delta, no kernel read, only the change written', async () => {
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1');
    let from = ic.ruleset();
    // The first sync has nothing to start from: it reads the kernel and diffs everything.
    expect((await syncer.syncDelta(from, ic.delta(), from)).planFrom).toBe('kernel');
    const step = async (change: () => void) => {
      rec.calls.length = 0;
      change();
      const rs = ic.ruleset();
      const r = await syncer.syncDelta(rs, ic.delta(), from);
      from = rs;
      expect(r.planFrom).toBe('delta');
      expect(r.readKernel).toBe(false);
      expect(readsOf(rec)).toEqual([]);
      await syncer.collectGarbage(); // as the agent does after each sync
      return r;
    };
    // A remote pod becomes a peer: set members (of two peers), nothing else.
    const relabel = await step(() => m.upsert({ ...m.findPod('x', 'r')!, labels: { app: 'db' } }));
    expect(relabel.payloads.iptables).toBe('');
    expect(writesOf(rec)).toEqual([{ cmd: 'ipset', input: expect.stringMatching(/^add PCTL-p-\w+ 10\.244\.2\.11\nadd PCTL-p-\w+ 10\.244\.2\.11\n$/) }]);
    // A local pod joins the web pods: set members, and at most dispatch chains (no policy chain).
    const local = await step(() => m.upsert(pod('x', 'a3', { app: 'web' }, { ip: '10.244.1.13', node: 'n1', ports: [port(80, 'http'), port(53, 'dns', 'UDP')] })));
    expect(local.plan.addMembers.map((a) => a.entry)).toContain('10.244.1.13');
    expect(local.plan.writeChains.filter((c) => /^PCTL-[IE]-/.test(c.name))).toEqual([]);
    expect(local.plan.createSets).toEqual([]);
    // A policy added, then deleted; a namespace relabelled; a pod deleted.
    await step(() => m.upsert(policy('x', 'eg2', sel(), { types: ['Egress'], egress: [rule([nsPeer(sel({ team: 'a' }))], ports(53))] })));
    expect(net.sh('iptables-save -t filter')).toMatch(/x\/eg2/);
    await step(() => m.upsert(ns('y', { team: 'a' })));
    const removed = await step(() => m.remove('pol-x-eg2', 'NetworkPolicy'));
    expect(removed.plan.deleteChains.length).toBeGreaterThan(0);
    expect(removed.plan.destroySets.length).toBeGreaterThan(0);
    await step(() => m.remove('pod-x-b', 'Pod'));
    // Nothing changed: nothing to do.
    const idle = await step(() => {});
    expect(idle.wrote).toBe(false);
    expect(writesOf(rec)).toEqual([]);
    // What the deltas built is what a full read and diff wants.
    expect(net.sh('iptables-save -t filter')).not.toMatch(/x\/eg2/);
    expect(isEmpty((await syncer.verify(ic.ruleset())).plan)).toBe(true);
    expect(isEmpty((await syncer.verify(compile(m, 'n1'))).plan)).toBe(true);
    ic.dispose();
  });

  it('syncDelta re-reads the kernel and diffs everything when the delta does not start from what it applied', async () => {
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1');
    const first = ic.ruleset();
    await syncer.sync(first);
    const planFrom = async (desired: Ruleset, delta: RulesetDelta, from: Ruleset) => {
      rec.calls.length = 0;
      const r = await syncer.syncDelta(desired, delta, from);
      expect(readsOf(rec).length > 0).toBe(r.planFrom === 'kernel');
      return r.planFrom;
    };
    // Lineage holds after a full sync of the same Ruleset object.
    m.upsert({ ...m.findPod('x', 'r')!, labels: { app: 'db' } });
    let rs = ic.ruleset();
    expect(await planFrom(rs, ic.delta(), first)).toBe('delta');
    // A skipped Ruleset: the delta starts from one never applied.
    m.remove('pod-x-a', 'Pod');
    const skipped = ic.ruleset();
    m.upsert(pod('x', 'a', { app: 'web' }, { ip: '10.244.1.10', node: 'n1', ports: [port(80, 'http')] }));
    const next = ic.ruleset();
    expect(await planFrom(next, ic.delta(), skipped)).toBe('kernel');
    // The last sync was of another Ruleset object (a full compile), equal in content.
    const full = compile(m, 'n1');
    await syncer.sync(full);
    m.upsert({ ...m.findPod('x', 'r')!, labels: { app: 'other' } });
    rs = ic.ruleset();
    expect(await planFrom(rs, ic.delta(), next)).toBe('kernel');
    // After a verify, the lineage continues from the verified Ruleset.
    await syncer.verify(rs);
    m.upsert({ ...m.findPod('x', 'r')!, labels: { app: 'db' } });
    const after = ic.ruleset();
    expect(await planFrom(after, ic.delta(), rs)).toBe('delta');
    rs = after;
    // A delta that does not fit what was applied (a member change of a set the kernel lacks).
    const bogus: RulesetDelta = { createdSets: [], destroyedSets: [], memberChanges: [{ set: 'PCTL-p-nosuchset', added: ['10.1.1.1'], removed: [] }], rebuiltSets: [], writtenChains: [], removedChains: [] };
    expect(await planFrom(rs, bogus, rs)).toBe('kernel');
    // After a failed apply, whatever the lineage.
    let fail = true;
    const flaky = new Syncer({
      runner: { run: (cmd, args, o) => (fail && cmd.endsWith('-restore') ? Promise.resolve({ stdout: '', stderr: 'boom', exitCode: 1 }) : rec.run(cmd, args, o)) },
      backend: { ...NFT, reason: 'test' },
    });
    await flaky.sync(rs);
    m.upsert(policy('x', 'deny-egress', sel(), { types: ['Egress'], egress: [] }));
    const broken = ic.ruleset();
    await expect(flaky.syncDelta(broken, ic.delta(), rs)).rejects.toThrow(ApplyError);
    fail = false;
    m.upsert({ ...m.findPod('x', 'r')!, labels: { app: 'web' } });
    const healed = ic.ruleset();
    rec.calls.length = 0;
    const r = await flaky.syncDelta(healed, ic.delta(), broken);
    expect(r.planFrom).toBe('kernel');
    await flaky.collectGarbage();
    expect(net.sh('iptables-save -t filter')).toMatch(/x\/deny-egress/);
    expect(isEmpty((await syncer.verify(healed)).plan)).toBe(true);
    ic.dispose();
  });

  it('syncDelta through every kind of event of a synthetic cluster leaves the kernel equal to a full compile', async () => {
    const c = generateCluster({ pods: 1500, policies: 300, seed: 11 });
    const ic = new IncrementalCompiler(c.model, 'node-001');
    let from = ic.ruleset();
    await syncer.sync(from);
    const events = new EventSource(c, 'node-001');
    const seq = events.sequence(6, EVENT_KINDS);
    for (const [i, kind] of seq.entries()) {
      events.next(kind).apply(c.model);
      const rs = ic.ruleset();
      const r = await syncer.syncDelta(rs, ic.delta(), from);
      expect(r.planFrom, `after ${kind}`).toBe('delta');
      // The main transaction deletes nothing: no -D, -X, -F, and only new chains declared
      // (declaring an existing chain flushes it).
      expect(r.payloads.iptables, `after ${kind}`).not.toMatch(/^(-D|-X|-F)/m);
      const had = new Set(from.chains.map((ch) => ch.name));
      expect([...r.payloads.iptables.matchAll(/^:(\S+)/gm)].map((x) => x[1]).filter((n) => had.has(n!)), `after ${kind}`).toEqual([]);
      await syncer.collectGarbage();
      from = rs;
      if (i % 18 === 17 || i === seq.length - 1) {
        const check = await syncer.verify(compile(c.model, 'node-001'));
        expect(isEmpty(check.plan), `kernel differs from a full compile after ${i + 1} events (last: ${kind})`).toBe(true);
        from = ic.ruleset(); // equal content; the lineage continues from the object verify saw last
        await syncer.verify(from);
      }
    }
    ic.dispose();
  });

  it('unordered chains change by edits: -A in the main transaction, -D deferred to the garbage collection', async () => {
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1');
    let from = ic.ruleset();
    await syncer.sync(from);
    const step = async (change: () => void) => {
      change();
      const rs = ic.ruleset();
      rec.calls.length = 0;
      const r = await syncer.syncDelta(rs, ic.delta(), from);
      from = rs;
      return r;
    };
    // (a) x/a3 (web) lands in bucket 11 (75 & 63), where only x/b (db) was: the web pods' ingress
    // group is new to that bucket. One set member, then one appended rule; nothing deleted.
    const join = await step(() => m.upsert(pod('x', 'a3', { app: 'web' }, { ip: '10.244.1.75', node: 'n1', ports: [port(80, 'http'), port(53, 'dns', 'UDP')] })));
    expect(join.planFrom).toBe('delta');
    // The set members: the new dispatch set entry (and the peer and named-port sets of x/a3);
    // then the rule; then, once both are in force, the address joins the programmed ones.
    expect(writesOf(rec)).toEqual([
      { cmd: 'ipset', input: expect.stringMatching(/^(add PCTL-[pni]-\w+ 10\.244\.1\.75(,(tcp|udp):\d+)?\n)+$/) },
      { cmd: 'iptables-nft-restore', input: expect.stringMatching(/^\*filter\n-A PCTL-IB-11 -m set --match-set PCTL-i-\w+ dst -m comment --comment "\w+ ingress policy of the local pods in PCTL-i-\w+" -g PCTL-I-\w+\nCOMMIT\n$/) },
      { cmd: 'ipset', input: 'add PCTL-programmed 10.244.1.75\n' },
    ]);
    expect(syncer.hasGarbage()).toBe(false);
    // It leaves: the member goes in the main apply; the stale rule waits for the collection.
    const leave = await step(() => m.remove('pod-x-a3', 'Pod'));
    expect(leave.payloads.iptables).toBe('');
    // The programmed address goes first of all.
    // (in a call of its own: the phases are never one call, Syncer.apply says why).
    expect(writesOf(rec)).toEqual([
      { cmd: 'ipset', input: 'del PCTL-programmed 10.244.1.75\n' },
      { cmd: 'ipset', input: expect.stringMatching(/^(del PCTL-[pni]-\w+ 10\.244\.1\.75(,(tcp|udp):\d+)?\n)+$/) },
    ]);
    expect(writesOf(rec)[1]!.input).toMatch(/^del PCTL-i-/m);
    expect(leave.payloads.gcIptables).toMatch(/^\*filter\n-D PCTL-IB-11 -m set --match-set PCTL-i-\w+ dst -m comment --comment "\w+ ingress policy [^"]+" -g PCTL-I-\w+\nCOMMIT\n$/);
    expect(net.sh('iptables -S PCTL-IB-11').split('\n').filter((l) => l.startsWith('-A')).length).toBe(2);
    rec.calls.length = 0;
    expect(await syncer.collectGarbage()).toBe(true);
    expect(writesOf(rec)).toEqual([{ cmd: 'iptables-nft-restore', input: leave.payloads.gcIptables }]);
    expect(net.sh('iptables -S PCTL-IB-11').split('\n').filter((l) => l.startsWith('-A')).length).toBe(1);
    // (b) After the collection the kernel is what a full compile wants: a fresh read finds nothing.
    expect(await syncer.collectGarbage()).toBe(false);
    expect(isEmpty((await syncer.verify(compile(m, 'n1'))).plan)).toBe(true);
    ic.dispose();
  });

  it('a policy change moving pods between groups never opens a closed flow before the garbage collection', async () => {
    const m = sampleCluster();
    m.upsert(pod('x', 'd', { app: 'web' }, { ip: '10.244.1.26', node: 'n1', ports: [port(80, 'http')] }));
    m.upsert(pod('x', 'e', { app: 'db' }, { ip: '10.244.1.75', node: 'n1', ports: [port(1500, 'alt')] }));
    m.upsert(pod('y', 'f', { app: 'web' }, { ip: '10.244.1.42', node: 'n1', ports: [port(80, 'http')] }));
    const ic = new IncrementalCompiler(m, 'n1');
    let from = ic.ruleset();
    await syncer.sync(from);
    const local = () => [...m.allPods()].filter((p) => p.nodeName === 'n1' && p.ips.length > 0);
    const check = async (what: string) => {
      const save = net.sh('iptables-save -t filter');
      // Creation options newer ipset prints and the tracer does not model.
      const sets = net.sh('ipset save').replace(/ (bucketsize \d+|initval 0x[0-9a-f]+)/g, '');
      for (const a of local()) {
        for (const b of local()) {
          if (a.uid === b.uid) continue;
          for (const [protocol, port] of [['TCP', 80], ['TCP', 1500], ['TCP', 3000], ['UDP', 53]] as const) {
            const flow: Flow = { src: { kind: 'pod', pod: a }, dst: { kind: 'pod', pod: b }, protocol, port };
            const want = allowed(m, flow).allowed;
            const got = traceTexts(save, sets, 'FORWARD', { src: a.ips[0]!, dst: b.ips[0]!, protocol: protocol === 'TCP' ? 'tcp' : 'udp', dport: port, sport: 40000 });
            if ((got.verdict === 'ACCEPT') !== want) throw new Error(`${what}: ${a.name} -> ${b.name} ${port}/${protocol}: the new model says ${want ? 'allowed' : 'denied'}, the kernel ${got.verdict}\n${formatTrace(got)}\n${save}\n${sets}`);
          }
        }
      }
    };
    await check('before');
    const changes: [string, () => void][] = [
      // The allow policy moves from the web pods to the db pods: web pods join the deny-only
      // group, db pods a new group; the web pods' old group goes (set flushed, chain deleted later).
      ['allow moves to db', () => m.upsert(policy('x', 'allow', sel({ app: 'db' }), { ingress: [rule([podsPeer('x', sel({ app: 'web' }))], ports('alt', [1000, 2000]))] }))],
      ['deny-egress for web', () => m.upsert(policy('x', 'deny-egress', sel({ app: 'web' }), { types: ['Egress'], egress: [rule([podsPeer('x', sel({ app: 'db' }))], ports(1500))] }))],
      ['allow moves back', () => m.upsert(policy('x', 'allow', sel({ app: 'web' }), { ingress: [rule([podsPeer('x', sel({ app: 'db' }))], ports('http'))] }))],
      ['deny-egress goes', () => m.remove('pol-x-deny-egress', 'NetworkPolicy')],
      ['eg goes', () => m.remove('pol-x-eg', 'NetworkPolicy')],
    ];
    let stale = 0;
    for (const [what, change] of changes) {
      change();
      const rs = ic.ruleset();
      const r = await syncer.syncDelta(rs, ic.delta(), from);
      from = rs;
      expect(r.planFrom).toBe('delta');
      expect(r.payloads.iptables, what).not.toMatch(/^(-D|-X|-F)/m);
      stale += r.plan.removeRules.length;
      await check(`${what}, after the main apply`); // stale rules still in place
      await syncer.collectGarbage();
      await check(`${what}, after the garbage collection`);
    }
    expect(stale).toBeGreaterThan(0); // the check did see stale rules in place
    expect(isEmpty((await syncer.verify(compile(m, 'n1'))).plan)).toBe(true);
    ic.dispose();
  });

  it('a failed garbage collection forgets the known state: the next sync re-reads the kernel', async () => {
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1');
    let failGc = true;
    const flaky = new Syncer({
      runner: { run: (cmd, args, o) => (failGc && cmd.endsWith('-restore') && o?.input?.includes('\n-D ') ? Promise.resolve({ stdout: '', stderr: 'boom', exitCode: 1 }) : rec.run(cmd, args, o)) },
      backend: { ...NFT, reason: 'test' },
    });
    let from = ic.ruleset();
    await flaky.sync(from);
    m.upsert(pod('x', 'a3', { app: 'web' }, { ip: '10.244.1.75', node: 'n1', ports: [port(80, 'http'), port(53, 'dns', 'UDP')] }));
    from = ic.ruleset();
    ic.delta();
    await flaky.sync(from);
    await flaky.collectGarbage();
    m.remove('pod-x-a3', 'Pod');
    const rs = ic.ruleset();
    const r = await flaky.syncDelta(rs, ic.delta(), from);
    expect(r.plan.removeRules.length).toBe(1);
    await expect(flaky.collectGarbage()).rejects.toThrow(ApplyError);
    expect(flaky.hasGarbage()).toBe(false);
    failGc = false;
    rec.calls.length = 0;
    m.upsert({ ...m.findPod('x', 'r')!, labels: { app: 'db' } });
    const next = ic.ruleset();
    const again = await flaky.syncDelta(next, ic.delta(), rs);
    expect(again.planFrom).toBe('kernel');
    expect(rec.calls[0]!.cmd).toBe('iptables-nft-save');
    // The stale rule found by the read is drift: its chain is written whole.
    expect(again.plan.writeChains.map((c) => c.name)).toEqual(['PCTL-IB-11']);
    await flaky.collectGarbage();
    expect(isEmpty((await syncer.verify(compile(m, 'n1'))).plan)).toBe(true);
    ic.dispose();
  });

  it('dry run writes nothing but reports the plan', async () => {
    const dry = new Syncer({ runner: rec, backend: { ...NFT, reason: 'test' }, dryRun: true });
    const r = await dry.sync(desired);
    expect(r.wrote).toBe(false);
    expect(r.payloads.iptables).toContain('-I FORWARD 1');
    expect(writesOf(rec)).toEqual([]);
    expect(net.sh('ipset list -n')).toBe('');
  });

  it('cleanup removes every chain, hook and set of ours and nothing else', async () => {
    await syncer.sync(desired);
    await syncer.cleanup();
    const save = net.sh('iptables-save -t filter');
    expect(save).not.toContain('PCTL');
    expect(net.sh('ipset list -n')).toBe('');
    expect(save).toContain('-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD');
    expect(save).toContain(':FLANNEL-FWD');
  });

  it('detects the backend: nft by default, legacy when it holds the rules, the kubelet hint first', async () => {
    expect((await detectBackend(net.runner)).name).toBe('nft'); // nft holds the foreign rules
    const other = createNetns('pctl-be');
    try {
      other.sh('iptables-legacy -N KUBE-FORWARD && iptables-legacy -A FORWARD -j KUBE-FORWARD');
      expect((await detectBackend(other.runner)).name).toBe('legacy');
      other.sh('iptables-nft -t mangle -N KUBE-IPTABLES-HINT');
      const b = await detectBackend(other.runner);
      expect(b.name).toBe('nft');
      expect(b.reason).toContain('KUBE-IPTABLES-HINT');
    } finally {
      other.sh('iptables-legacy -F FORWARD; iptables-legacy -X KUBE-FORWARD');
      other.remove();
    }
  });
});
