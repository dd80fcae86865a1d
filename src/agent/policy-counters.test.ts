import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createNetns, kernelTestsEnabled, type TestNetns } from '../../test/support/netns.ts';
import { chainedDrop, dropChainsOf, loggedDrop } from '../compiler/drop-log.ts';
import type { Rule } from '../compiler/ruleset.ts';
import { renderRule, ruleId } from '../sync/render.ts';
import { parseRuleCounters, readRuleCounters, type RuleCounter } from '../sync/rule-counters.ts';
import { compile } from '../compiler/compile.ts';
import { sampleCluster } from '../../test/support/clusters.ts';
import { AgentMetrics } from './metrics.ts';
import { attribute, PolicyCounters } from './policy-counters.ts';

const silent = pino({ level: 'silent' });

describe('attribute', () => {
  it('reads the compiler\'s comments: allowed by a rule, denied by a default deny or a Deny rule, nothing for the rest', () => {
    expect(attribute({ comment: 'x/allow ingress[0]', target: 'RETURN' })).toEqual({ verdict: 'allowed', tier: 'NetworkPolicy', direction: 'Ingress', policies: ['x/allow'] });
    expect(attribute({ comment: 'default deny egress: isolated by x/a,x/b', target: 'DROP' })).toEqual({ verdict: 'denied', tier: 'NetworkPolicy', direction: 'Egress', policies: ['x/a', 'x/b'] });
    // Cut short by the kernel's 255 characters: the partial last name is not a policy.
    expect(attribute({ comment: `default deny egress: isolated by x/a,x/${'b'.repeat(60)}...`, target: 'DROP' })).toEqual({ verdict: 'denied', tier: 'NetworkPolicy', direction: 'Egress', policies: ['x/a'] });
    expect(attribute({ comment: 'cnp/wall Admin Deny ingress[1]', target: 'DROP' })).toEqual({ verdict: 'denied', tier: 'Admin', direction: 'Ingress', policies: ['cnp/wall'] });
    expect(attribute({ comment: 'cnp/wall Admin Deny ingress[1]', target: 'PCTL-L-abc' })).toEqual({ verdict: 'denied', tier: 'Admin', direction: 'Ingress', policies: ['cnp/wall'] });
    expect(attribute({ comment: 'cnp/open Baseline Accept egress[0]', target: 'RETURN' })).toEqual({ verdict: 'allowed', tier: 'Baseline', direction: 'Egress', policies: ['cnp/open'] });
    expect(attribute({ comment: 'from an address of pod CIDR 10.244.1.0/24 that is not a programmed pod', target: 'DROP' })).toMatchObject({ verdict: 'denied', tier: 'none', direction: 'Egress' });
    expect(attribute({ comment: 'cnp/wall Admin Pass egress[2]: to an address no known pod has', target: 'PCTL-L-abc' })).toEqual({ verdict: 'denied', tier: 'Admin', direction: 'Egress', policies: ['cnp/wall'] });
    for (const c of [
      { comment: 'log: default deny egress: isolated by x/a', target: 'NFLOG' },
      { comment: 'cnp/wall Admin Pass ingress[0]', target: 'PCTL-I-abc' },
      { comment: 'ingress policy of the local pods in PCTL-i-abc', target: 'PCTL-I-abc' },
      { comment: 'replies of allowed connections', target: 'RETURN' },
      { comment: 'drop: PCTL I cnp Admin 1 abcdefabcdef', target: 'DROP' },
    ]) {
      expect(attribute(c), c.comment).toBeUndefined();
    }
  });
});

describe('PolicyCounters', () => {
  it('adds what each rule counted since the last read; a rewritten (reset) rule counts from zero', async () => {
    const metrics = new AgentMetrics();
    const registry = metrics.registry;
    // The kernel's counters as the last step left them (a scrape reads them again).
    let kernel: RuleCounter[] = [];
    const pc = new PolicyCounters(metrics, async () => kernel, silent);
    const rule = (packets: number, chain = 'PCTL-I-a') => ({ chain, id: 'a'.repeat(24), comment: 'x/allow ingress[0]', target: 'RETURN', packets });
    const step = (rules: RuleCounter[]) => pc.add((kernel = rules));
    step([rule(5)]);
    step([rule(8)]);
    step([rule(2)]); // the chain was rewritten: 2 new packets
    step([rule(2), rule(4, 'PCTL-I-b')]);
    const text = await registry.getSingleMetricAsString('policyctl_policy_packets_total');
    expect(text).toContain('policyctl_policy_packets_total{policy="x/allow",tier="NetworkPolicy",direction="Ingress",verdict="allowed"} 14');
  });

  it("counts the verdict cache's hits apart, by protocol, for no policy; its other rules count nothing", async () => {
    const metrics = new AgentMetrics();
    let kernel: RuleCounter[] = [];
    const pc = new PolicyCounters(metrics, async () => kernel, silent);
    // The comments as the layout writes them.
    const fwd = compile(sampleCluster(), 'n1', { verdictCache: true }).chains.find((c) => c.name === 'PCTL-FORWARD')!;
    const cacheRules = fwd.rules.filter((r) => r.comment.startsWith('verdict cache'));
    expect(cacheRules).toHaveLength(4);
    const counted = (packets: number) => cacheRules.map((r) => ({ chain: 'PCTL-FORWARD', id: ruleId(r), comment: r.comment, target: r.action.kind === 'return' ? 'RETURN' : 'SET', packets }));
    pc.add((kernel = counted(3)));
    pc.add((kernel = counted(10)));
    const hits = await metrics.registry.getSingleMetricAsString('policyctl_verdict_cache_hits_total');
    expect(hits).toContain('policyctl_verdict_cache_hits_total{protocol="tcp"} 10');
    expect(hits).toContain('policyctl_verdict_cache_hits_total{protocol="udp"} 10');
    expect(await metrics.registry.getSingleMetricAsString('policyctl_policy_packets_total')).not.toMatch(/^policyctl_policy_packets_total\{/m);
  });

  it('drops the series of a policy whose rules are gone: names tenants create and delete do not pile up', async () => {
    const metrics = new AgentMetrics();
    let kernel: RuleCounter[] = [];
    const pc = new PolicyCounters(metrics, async () => kernel, silent);
    const rule = (name: string) => ({ chain: 'PCTL-I-a', id: name.padEnd(24, 'x'), comment: `t/${name} ingress[0]`, target: 'RETURN', packets: 1 });
    for (let i = 0; i < 100; i++) pc.add((kernel = [rule('keep'), rule(`churn-${i}`)]));
    pc.add((kernel = [rule('keep')]));
    const text = await metrics.registry.getSingleMetricAsString('policyctl_policy_packets_total');
    expect(text.split('\n').filter((l) => l.startsWith('policyctl_policy_packets_total{'))).toEqual(['policyctl_policy_packets_total{policy="t/keep",tier="NetworkPolicy",direction="Ingress",verdict="allowed"} 1']);
  });
});

describe.runIf(kernelTestsEnabled())('policy counters on the real kernel', () => {
  let ns: TestNetns | undefined;
  afterEach(() => ns?.remove());

  it('counts the packets a policy allowed and the ones its default deny dropped', async () => {
    ns = createNetns('pctl-pcnt');
    const allow: Rule = { match: { protocol: 'udp', dports: [{ from: 7, to: 7 }] }, action: { kind: 'return' }, comment: 'x/allow ingress[0]' };
    const rules = [allow, ...loggedDrop({ protocol: 'udp' }, 'default deny ingress: isolated by x/allow,x/deny', { kind: 'np', dir: 'Ingress', policies: ['x/allow', 'x/deny'] })];
    const text = `*filter\n:PCTL-I-test - [0:0]\n-A OUTPUT -j PCTL-I-test\n${rules.map((r) => renderRule('PCTL-I-test', r)).join('\n')}\nCOMMIT\n`;
    ns.sh(`cat > /tmp/${ns.name}.rules <<'EOF_RULES'\n${text}EOF_RULES\niptables-nft-restore --noflush /tmp/${ns.name}.rules; rm -f /tmp/${ns.name}.rules`);
    ns.sh(`bash -c 'for i in 1 2 3; do echo x > /dev/udp/127.0.0.1/7; done; for i in 1 2; do echo x > /dev/udp/127.0.0.1/9; done' 2>/dev/null || true`);
    const counters = await readRuleCounters(ns.runner, 'iptables-nft-save');
    expect(counters.map((c) => [c.id, c.target, c.packets])).toEqual([
      [ruleId(rules[0]!), 'RETURN', 3],
      [ruleId(rules[1]!), 'NFLOG', 2],
      [ruleId(rules[2]!), 'DROP', 2],
    ]);
    const metrics = new AgentMetrics();
    const registry = metrics.registry;
    const pc = new PolicyCounters(metrics, () => readRuleCounters(ns!.runner, 'iptables-nft-save'), silent, 0);
    // Read at scrape time.
    const scraped = await registry.metrics();
    expect(scraped).toContain('policyctl_policy_packets_total{policy="x/allow",tier="NetworkPolicy",direction="Ingress",verdict="allowed"} 3');
    expect(scraped).toContain('policyctl_policy_packets_total{policy="x/allow",tier="NetworkPolicy",direction="Ingress",verdict="denied"} 2');
    expect(scraped).toContain('policyctl_policy_packets_total{policy="x/deny",tier="NetworkPolicy",direction="Ingress",verdict="denied"} 2');
    expect(pc.packets).toBeDefined();
    // Another unrelated line format is ignored.
    expect(parseRuleCounters('[1:2] -A FORWARD -j ACCEPT\n[3:4] -A PCTL-X -j DROP')).toEqual([]);
  });

  it("counts a Deny that drops through its drop chain once, by the rule that went there", async () => {
    ns = createNetns('pctl-pcnt');
    const deny = chainedDrop({ protocol: 'udp', dports: [{ from: 9, to: 9 }] }, 'cnp/wall Admin Deny ingress[1]', { kind: 'cnp', dir: 'Ingress', tier: 'Admin', index: 1, name: 'wall' });
    expect(deny.map((r) => r.action.kind)).toEqual(['logdrop']);
    const chains = [{ name: 'PCTL-D-test', rules: deny }, ...dropChainsOf([{ rules: deny }])];
    const text = `*filter\n${chains.map((c) => `:${c.name} - [0:0]`).join('\n')}\n-A OUTPUT -j PCTL-D-test\n${chains.flatMap((c) => c.rules.map((r) => renderRule(c.name, r))).join('\n')}\nCOMMIT\n`;
    ns.sh(`cat > /tmp/${ns.name}.rules <<'EOF_RULES'\n${text}EOF_RULES\niptables-nft-restore --noflush /tmp/${ns.name}.rules; rm -f /tmp/${ns.name}.rules`);
    ns.sh(`bash -c 'for i in 1 2 3; do echo x > /dev/udp/127.0.0.1/9; done; echo x > /dev/udp/127.0.0.1/7' 2>/dev/null || true`);
    const counters = await readRuleCounters(ns.runner, 'iptables-nft-save');
    // The Deny rule, then its drop chain's log rule and drop: three packets each.
    expect(counters.map((c) => [c.chain.slice(0, 7), c.target.slice(0, 7), c.packets])).toEqual([
      ['PCTL-D-', 'PCTL-L-', 3],
      ['PCTL-L-', 'NFLOG', 3],
      ['PCTL-L-', 'DROP', 3],
    ]);
    const metrics = new AgentMetrics();
    new PolicyCounters(metrics, () => readRuleCounters(ns!.runner, 'iptables-nft-save'), silent, 0);
    const scraped = await metrics.registry.metrics();
    expect(scraped).toContain('policyctl_policy_packets_total{policy="cnp/wall",tier="Admin",direction="Ingress",verdict="denied"} 3');
  });
});
