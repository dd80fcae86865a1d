import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { policy, sel } from '../../test/support/builders.ts';
import { sampleCluster } from '../../test/support/clusters.ts';
import { FOREIGN_FILTER } from '../../test/support/dataplane.ts';
import { createNetns, kernelTestsEnabled, type TestNetns } from '../../test/support/netns.ts';
import { compile } from '../compiler/compile.ts';
import { IncrementalCompiler } from '../compiler/incremental.ts';
import { NFT } from './backend.ts';
import { isEmpty } from './plan.ts';
import { Syncer } from './syncer.ts';
import { renderIpsetRestore, renderIptablesRestore } from './render.ts';
import { normalize } from '../model/normalize.ts';
import type { ClusterPolicyRecord } from '../model/types.ts';
import { parseIpsetRestore, parseIptablesRestore, trace } from '../../test/support/tracer.ts';
import { chainWithoutLog, deltaWithoutLog, rulesetWithoutLog } from './without-log.ts';

describe('without the drop log', () => {
  it('takes out the log rules only, and gives the same object for the same input (and for its own output)', () => {
    const rs = compile(sampleCluster(), 'n1');
    const out = rulesetWithoutLog(rs);
    const rules = (r: typeof rs) => r.chains.flatMap((c) => c.rules);
    expect(rules(rs).some((r) => r.action.kind === 'log')).toBe(true);
    expect(rules(out).some((r) => r.action.kind === 'log')).toBe(false);
    expect(rules(out)).toEqual(rules(rs).filter((r) => r.action.kind !== 'log'));
    expect(rules(out).filter((r) => r.action.kind === 'drop')).toHaveLength(rules(rs).filter((r) => r.action.kind === 'drop').length);
    expect(rulesetWithoutLog(rs)).toBe(out);
    expect(rulesetWithoutLog(out)).toBe(out);
    // A chain without a log rule is itself.
    const plain = rs.chains.find((c) => !c.rules.some((r) => r.action.kind === 'log'))!;
    expect(chainWithoutLog(plain)).toBe(plain);
    const d = { createdSets: [], destroyedSets: [], memberChanges: [], rebuiltSets: [], writtenChains: rs.chains, removedChains: [] };
    expect(deltaWithoutLog(d).writtenChains).toEqual(out.chains);
    expect(deltaWithoutLog(d)).toBe(deltaWithoutLog(d));
  });

  it("keeps a ClusterNetworkPolicy Deny's drop chain, as the drop alone: the Deny still drops, nothing logs", () => {
    const m = sampleCluster();
    m.upsert(
      normalize({
        apiVersion: 'policy.networking.k8s.io/v1alpha2',
        kind: 'ClusterNetworkPolicy',
        metadata: { name: 'no-db-from-y' },
        spec: { tier: 'Admin', priority: 5, subject: { namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'x' } } }, ingress: [{ action: 'Deny', from: [{ namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'y' } } }], protocols: [{ tcp: { destinationPort: { number: 5432 } } }] }] },
      }).record as ClusterPolicyRecord,
    );
    const out = rulesetWithoutLog(compile(m, 'n1'));
    const chained = out.chains.flatMap((c) => c.rules).filter((r) => r.action.kind === 'logdrop');
    expect(chained.length).toBeGreaterThan(0);
    for (const r of chained) {
      if (r.action.kind !== 'logdrop') continue;
      const name = r.action.chain;
      expect(out.chains.find((c) => c.name === name)?.rules.map((x) => [x.action, x.match])).toEqual([[{ kind: 'drop' }, {}]]);
    }
    const text = renderIptablesRestore(out);
    expect(text).not.toContain('NFLOG');
    // y/d (n1) to x/b (n1) on 5432: dropped by the Deny's chain, with no log rule on the way.
    const t = trace(parseIptablesRestore(text, { base: parseIptablesRestore(FOREIGN_FILTER), noflush: true }), parseIpsetRestore(renderIpsetRestore(out.sets)), 'FORWARD', { src: '10.244.1.14', dst: '10.244.1.11', protocol: 'tcp', sport: 40000, dport: 5432 });
    expect(t.verdict).toBe('DROP');
    expect(t.finalRule).toMatch(/^-A PCTL-L-\S+ .*-j DROP$/);
  });
});

describe.runIf(kernelTestsEnabled())('Syncer with dropLog false on the real kernel', () => {
  let net: TestNetns | undefined;
  afterEach(() => net?.remove());

  it('programs no NFLOG rule, still drops, and follows the incremental compiler by deltas', async () => {
    net = createNetns('pctl-nolog');
    net.sh(`iptables-nft-restore <<'EOF'\n${FOREIGN_FILTER}EOF`);
    const syncer = new Syncer({ runner: net.runner, backend: { ...NFT, reason: 'test' }, dropLog: false });
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1', { podCidrs: ['10.244.1.0/24'] });
    let from = ic.ruleset();
    expect((await syncer.syncDelta(from, ic.delta(), from)).planFrom).toBe('kernel');
    const save = () => net!.sh('iptables-save -t filter');
    expect(save()).not.toContain('NFLOG');
    expect(save()).not.toContain('hashlimit');
    expect(save()).toMatch(/-A PCTL-FORWARD -s 10\.244\.1\.0\/24 -m set ! --match-set PCTL-programmed src .* -g PCTL-UNKNOWN-SRC/);
    expect(save()).toMatch(/-A PCTL-UNKNOWN-SRC -m comment --comment "[^"]*" -j DROP\n/);
    // A policy added: a delta, with its default deny and no log rule.
    m.upsert(policy('x', 'more', sel(), { types: ['Egress'], egress: [] }));
    let rs = ic.ruleset();
    const r = await syncer.syncDelta(rs, ic.delta(), from);
    from = rs;
    expect(r.planFrom).toBe('delta');
    expect(save()).toMatch(/default deny egress: isolated by x\/eg,x\/more" -j DROP/);
    expect(save()).not.toContain('NFLOG');
    // A verification finds nothing to repair (no log rule wanted, none there)...
    expect(isEmpty((await syncer.verify(rs)).plan)).toBe(true);
    // ...and the next delta still applies as a delta: the Ruleset verified is the one deltas start from.
    m.upsert(policy('x', 'more', sel(), { types: ['Ingress'], ingress: [] }));
    rs = ic.ruleset();
    expect((await syncer.syncDelta(rs, ic.delta(), from)).planFrom).toBe('delta');
    expect(save()).not.toContain('NFLOG');
  });

  it('policyctl agent --dry-run writes the log rules, and none with --no-drop-log', () => {
    net = createNetns('pctl-nolog');
    const bin = new URL('../../bin/policyctl.js', import.meta.url).pathname;
    const node = new URL('../../node_modules/.bin/node', import.meta.url).pathname;
    const examples = new URL('../../examples/', import.meta.url).pathname;
    const dryRun = (...extra: string[]) => {
      const r = spawnSync('ip', ['netns', 'exec', net!.name, node, bin, 'agent', '--node', 'node-1', '--manifests', examples, '--dry-run', ...extra], { encoding: 'utf8', timeout: 60_000 });
      expect(r.status, r.stderr).toBe(0);
      return r.stdout;
    };
    const withLog = dryRun();
    expect(withLog).toMatch(/ -j NFLOG --nflog-prefix "PCTL [EI] np \w+" /);
    const without = dryRun('--no-drop-log');
    expect(without).not.toContain('NFLOG');
    expect(without.match(/ -j DROP$/gm)?.length).toBe(withLog.match(/ -j DROP$/gm)?.length);
  });
});
