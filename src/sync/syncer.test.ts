// The sync layer on the real kernel, inside a fresh network namespace per test.

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { modelOf, node, ns, nsPeer, pod, podsPeer, policy, port, ports, rule, sel, block } from '../../test/support/builders.ts';
import { FOREIGN_FILTER } from '../../test/support/dataplane.ts';
import { createNetns, kernelTestsEnabled, type TestNetns } from '../../test/support/netns.ts';
import { compile } from '../compiler/compile.ts';
import type { Ruleset } from '../compiler/ruleset.ts';
import type { Model } from '../model/store.ts';
import { NFT, detectBackend } from './backend.ts';
import { isEmpty } from './plan.ts';
import { RecordingRunner } from './runner.ts';
import { ApplyError, Syncer } from './syncer.ts';

function cluster(): Model {
  return modelOf(
    ns('x', { team: 'a' }),
    ns('y'),
    node('n1', '10.244.1.0/24', '192.168.50.11'),
    pod('x', 'a', { app: 'web' }, { ip: '10.244.1.10', node: 'n1', ports: [port(80, 'http')] }),
    pod('x', 'b', { app: 'db' }, { ip: '10.244.1.11', node: 'n1' }),
    pod('y', 'c', { app: 'web' }, { ip: '10.244.2.10', node: 'n2', ports: [port(8080, 'http')] }),
    pod('x', 'r', { app: 'other' }, { ip: '10.244.2.11', node: 'n2' }),
    policy('x', 'deny', sel(), { types: ['Ingress'], ingress: [] }),
    policy('x', 'allow', sel({ app: 'web' }), { ingress: [rule([podsPeer('x', sel({ app: 'db' })), block('0.0.0.0/0', ['10.0.0.0/8'])], ports('http', [1000, 2000]))] }),
    policy('x', 'eg', sel({ app: 'db' }), { types: ['Egress'], egress: [rule([nsPeer(sel())], ports('http'))] }),
  );
}

const writesOf = (r: RecordingRunner) => r.writes().map((c) => ({ cmd: c.cmd, input: c.input ?? '' }));

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
    desired = compile(cluster(), 'n1');
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

  it('applying the same ruleset twice writes nothing the second time', async () => {
    await syncer.sync(desired);
    rec.calls.length = 0;
    const again = await syncer.sync(desired);
    const reread = await syncer.sync(compile(cluster(), 'n1'), { readKernel: true });
    expect(again.wrote || reread.wrote).toBe(false);
    expect(writesOf(rec)).toEqual([]);
  });

  it("a peer pod's label change writes set members only", async () => {
    const m = cluster();
    await syncer.sync(compile(m, 'n1'));
    rec.calls.length = 0;
    const r = m.findPod('x', 'r')!;
    m.upsert({ ...r, labels: { app: 'db' } }); // x/r (on n2) becomes a peer of x/a's allow rule
    const res = await syncer.sync(compile(m, 'n1'));
    const written = writesOf(rec);
    expect(res.payloads.iptables).toBe('');
    expect(written).toHaveLength(1);
    expect(written[0]!.cmd).toBe('ipset');
    // The whole write: one member added to the pod set of "app=db in x".
    expect(written[0]!.input).toMatch(/^add PCTL-p-\w+ 10\.244\.2\.11\n$/);
    expect(net.sh('ipset save')).toContain('10.244.2.11');
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
