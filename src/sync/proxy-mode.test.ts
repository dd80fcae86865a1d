// kube-proxy's mode from its traces (issue 13): which trace says which mode, and, on the real
// kernel in a test namespace, that the commands find them (the interface, the ipset, the nat
// chain) and that an agent with `--service-proxy auto` programs the OUTPUT hook once kube-proxy's
// IPVS traces appear, reports it in its metrics, and takes the hook away when they go.

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { agentNode, type AgentNode } from '../../test/support/agent-node.ts';
import { kernelTestsEnabled, type TestNetns } from '../../test/support/netns.ts';
import { until } from '../../test/support/until.ts';
import { NFT } from './backend.ts';
import { detectProxyMode, proxyModeOf } from './proxy-mode.ts';
import { Syncer } from './syncer.ts';

const none = { ipvsInterface: false, clusterIpSet: false, nftTable: false, natServicesChain: false };

describe('proxyModeOf', () => {
  it.each([
    [{}, undefined],
    [{ natServicesChain: true }, 'iptables'],
    [{ nftTable: true }, 'nftables'],
    [{ nftTable: true, natServicesChain: true }, 'nftables'],
    [{ ipvsInterface: true }, 'ipvs'],
    [{ clusterIpSet: true }, 'ipvs'],
    // IPVS mode has a nat KUBE-SERVICES chain too: its own traces decide.
    [{ ipvsInterface: true, clusterIpSet: true, natServicesChain: true }, 'ipvs'],
  ])('%j -> %s', (t, mode) => {
    const d = proxyModeOf({ ...none, ...t });
    expect(d.mode).toBe(mode);
    expect(d.evidence.length > 0).toBe(mode !== undefined);
  });
});

const PODS = `
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.244.1.0/24}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: app, labels: {app: web}}
spec: {nodeName: n1}
status: {phase: Running, podIP: 10.244.1.10}
`;

describe.runIf(kernelTestsEnabled())('detecting kube-proxy on the real kernel', () => {
  let node: AgentNode;
  let net: TestNetns;
  beforeEach(() => {
    node = agentNode('pctl-proxy', { 'pods.yaml': PODS });
    net = node.net;
  });
  afterEach(() => node.remove());

  it('finds nothing in an empty namespace, the nat chain of iptables mode, then the IPVS traces', async () => {
    expect((await detectProxyMode(net.runner)).mode).toBeUndefined();
    net.sh('iptables -t nat -N KUBE-SERVICES && iptables -t nat -A KUBE-SERVICES -j RETURN');
    expect((await detectProxyMode(net.runner)).mode).toBe('iptables');
    net.sh('ipset create KUBE-CLUSTER-IP hash:ip,port');
    expect(await detectProxyMode(net.runner)).toEqual({ mode: 'ipvs', evidence: ['ipset KUBE-CLUSTER-IP'] });
    // kube-proxy's kube-ipvs0 is a dummy interface; this kernel has no dummy driver, and only
    // the name is read.
    net.sh('ip link add kube-ipvs0 type bridge');
    expect((await detectProxyMode(net.runner)).evidence).toEqual(['interface kube-ipvs0', 'ipset KUBE-CLUSTER-IP']);
  });

  it('an agent in auto mode adds the OUTPUT hook when IPVS appears, says so in /metrics, keeps it while no other mode shows, and removes it on iptables mode\'s trace', async () => {
    const agent = node.agent({ extra: { serviceProxy: 'auto', serviceCidrs: ['10.96.0.0/12'], resyncMs: 150, verifyAfterWriteMs: 100 } });
    await agent.start();
    const hooked = () => net.sh('iptables -S OUTPUT').includes('-j PCTL-OUTPUT');
    expect(hooked()).toBe(false);
    expect(await agent.metrics.registry.getSingleMetricAsString('policyctl_service_proxy')).toContain('policyctl_service_proxy{mode="iptables",how="assumed"} 1');
    net.sh('ip link add kube-ipvs0 type bridge');
    await until(hooked, 'the OUTPUT hook under IPVS', 10_000);
    expect(net.sh('iptables -S PCTL-INPUT')).toContain('-d 10.96.0.0/12');
    const metric = await agent.metrics.registry.getSingleMetricAsString('policyctl_service_proxy');
    expect(metric).toContain('policyctl_service_proxy{mode="ipvs",how="detected"} 1');
    expect(metric).not.toContain('mode="iptables"');
    net.sh('ip link del kube-ipvs0');
    // No trace of any mode (a failed read, kube-proxy restarting): the IPVS layout stays, or
    // Service traffic would reach backends unjudged (fail closed).
    const syncs = agent.status().syncs;
    await until(() => agent.status().syncs >= syncs + 3, 'three more syncs', 10_000);
    expect(hooked()).toBe(true);
    net.sh('iptables -t nat -N KUBE-SERVICES && iptables -t nat -A KUBE-SERVICES -j RETURN'); // iptables mode's own trace
    await until(() => !hooked() && !net.sh('iptables-save -t filter').includes('PCTL-OUTPUT'), 'the OUTPUT hook and chain gone', 10_000);
  });

  it('--service-proxy ipvs programs the OUTPUT hook without any trace, and --cleanup removes it with the rest (own-only-ours)', async () => {
    const agent = node.agent({ extra: { serviceProxy: 'ipvs', serviceCidrs: ['10.96.0.0/12'] } });
    await agent.start();
    expect(net.sh('iptables -S OUTPUT').split('\n')[1]).toContain('-j PCTL-OUTPUT');
    expect(agent.status().serviceProxy).toEqual({ mode: 'ipvs', how: 'flag' });
    await agent.stop();
    const before = net.sh('iptables-save -t filter').split('\n').filter((l) => l.startsWith('-A') && !l.includes('PCTL'));
    await new Syncer({ runner: net.runner, backend: { ...NFT, reason: 'test' } }).cleanup();
    const after = net.sh('iptables-save -t filter');
    expect(after).not.toContain('PCTL');
    expect(after.split('\n').filter((l) => l.startsWith('-A'))).toEqual(before);
  });
});
